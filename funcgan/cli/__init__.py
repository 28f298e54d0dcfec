"""``funcgan`` command line: ``train``, ``sweep``, ``verify``, ``export``, ``report``, ``bench``.

    funcgan train                                          # seed 000's 1-D GAN, 1000 steps, summary
    funcgan train --problem mnist --scheme simultaneous --loss hinge --gp 1 --n-disc 2
    funcgan train --problem dcgan --loss wasserstein --gp 10 --n-disc 5 --out runs/wgan
    funcgan sweep --problem ring8 --seeds 0:64 --gp 1,10 --out runs/gp
    funcgan sweep --resume runs/gp                         # a killed sweep continues where it stood
    funcgan export runs/gp --seed 3 --out g.safetensors    # a seed's G as a state dict for nn.Module
    funcgan verify                                         # functional == imperative, every system

Bad input is one line on stderr and exit code 2, before anything trains.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from funcgan.cli.options import CLIError
from funcgan.cli.options import Parser as _Parser

__all__ = ["main", "console_main", "build_parser", "CLIError"]


def build_parser() -> argparse.ArgumentParser:
    from funcgan.cli import bench, export, report, run, verify

    parser = _Parser(prog="funcgan", description="Functional GAN training on torch.func")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run.add_parsers(sub)
    verify.add_parser(sub)
    export.add_parser(sub)
    report.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit code (0 ok, 1 a run diverged or a check failed, 2 bad input, 120 the
    machine stopped it: a full disk or quota, an I/O error, a read-only file system; said in one line on
    stderr). Any other ``OSError`` is a bug's or an unchecked input's, raised with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench"]:  # the benchmark has its own options (funcgan bench --help)
            from funcgan.bench import main as bench_main

            return bench_main(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return args.func(args)
    except CLIError as e:
        msg = str(e)
        print(msg if msg.startswith("funcgan") else f"funcgan: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): nothing left to say
        return 0
    except OSError as e:
        if e.errno not in _MACHINE_ERRNOS:  # not the machine's doing: a bug's traceback, as Python gives it
            raise
        _say(f"funcgan: stopped by an I/O error: {_os_error(e)}")  # a full disk, a failing device: one line
        return 120
    except KeyboardInterrupt:
        print("funcgan: interrupted (the last checkpoint stands; --resume continues from it)", file=sys.stderr)
        return 130


#: the errors of the machine, not of the program or its input: a full disk or quota, a failing device,
#: a file grown past its limit, a file system mounted read-only mid-run
_MACHINE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EIO", "EFBIG", "EROFS") if hasattr(errno, name)
)


def _os_error(e: OSError) -> str:
    """``e`` in one line: its reason, and the file when it names one."""
    what = e.strerror or str(e) or type(e).__name__
    return f"{what}: {e.filename}" if e.filename else what


def _say(line: str) -> None:
    """``line`` on stderr, written directly (stderr may be the stream that failed: then nothing more is said)."""
    try:
        os.write(2, (line + "\n").encode(errors="replace"))
    except OSError:
        pass


def console_main() -> NoReturn:
    """The ``funcgan`` command (and ``python -m funcgan``): :func:`main`, then a quick exit.

    Once :func:`main` has returned, every file the command wrote is closed (checkpoints, metrics and
    figures are written by ``with`` blocks and atomic renames), so what is left of a normal interpreter
    exit is tearing down torch's modules: ~0.3 s of a 3.5 s ``funcgan train`` on 2 cores. This does
    what a normal exit does that a finished command needs (:func:`_exit_now`: the ``atexit`` handlers,
    Python's and C's stdout and stderr flushed, exit code 120 with a message if a flush fails, as
    Python's), then ends the process with :func:`os._exit`. The exit is Python's own where it could
    matter (:func:`_quick_exit_safe`): another non-daemon thread still runs, a profiler or tracer
    (``python -m cProfile``, ``pdb``, coverage) would write its results after the command, or
    ``FUNCGAN_FULL_EXIT=1`` is set; and where ``main`` raised. ``main`` itself returns its code, for
    callers in Python (tests, notebooks)."""
    code = main()
    if _quick_exit_safe():
        _exit_now(code)
    sys.exit(code)


def _quick_exit_safe() -> bool:
    """Nothing a normal exit would still do matters: no thread but this one and daemons is alive, no
    profiler or tracer is set, and ``FUNCGAN_FULL_EXIT`` does not ask for the full exit."""
    if os.environ.get("FUNCGAN_FULL_EXIT", "") not in ("", "0") or sys.getprofile() or sys.gettrace():
        return False
    return all(t is threading.current_thread() or t.daemon for t in threading.enumerate())


def _exit_now(code: int) -> NoReturn:
    """End the process with ``code`` after what a normal exit does that matters to a finished command:
    the ``atexit`` handlers, then stdout and stderr flushed, Python's and C's. A reader that went away
    (``| head``) and a stream the program closed are no error; a flush that fails otherwise (a full
    disk) is one line on stderr and exit code 120 for a command that succeeded, as Python's own exit
    gives."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None or getattr(stream, "closed", False):  # closed by the program: nothing to flush
            continue
        try:
            stream.flush()
        except BrokenPipeError:  # the reader went away: nothing left to say
            pass
        except OSError as e:  # output lost: say so, and fail as Python would (a failing code stays)
            if code != 120:  # 120: main has said it already (the same bytes failing again)
                _say(f"funcgan: could not write the command's output ({e})")
            code = code or 120
    try:  # what C and C++ code (torch, MKL, OpenMP) printed to buffered stdio
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - no C library to call
        pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console_main()
