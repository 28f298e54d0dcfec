"""``funcgan`` command line: ``train``, ``verify`` and ``sweep``.

    funcgan train                      # seed 000's 1-D GAN, 1000 steps, summary
    funcgan train --problem mnist --data-dir ~/mnist --steps 3000 --out runs/mnist
    funcgan verify                     # functional == imperative, every seed system
    funcgan sweep --seeds 0:256        # 256 seeds of the 1-D GAN in one compiled program
    funcgan report                     # update schemes x seeds on ring8/grid25, Dirac-GAN outcomes
"""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any, Sequence

import torch

from funcgan import systems

__all__ = ["main", "build_parser"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: options of the game problems (dirac, ring8, grid25), see funcgan.dynamics
GAME_OPTIONS = ("scheme", "loss", "r1", "r2", "gp", "penalty_every", "unroll", "unroll_stop_opt_grad", "consensus",
                "ema")


def _device(name: str) -> str:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"funcgan: --device {name} requested but CUDA is not available on this machine")
    try:
        torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"funcgan: bad --device '{name}': {e}")
    return name


def _system_kwargs(problem: str, args: argparse.Namespace) -> dict[str, Any]:
    """The overrides the user gave that this problem's builder accepts."""
    accepted = inspect.signature(systems.PROBLEMS[problem]).parameters
    kwargs: dict[str, Any] = {}
    for name in ("batch_size", "lr", "gen_lr", "disc_lr", "n_disc", "data_dir", "max_gen_steps", "l1_weight",
                 *GAME_OPTIONS):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in accepted:
            raise SystemExit(f"funcgan: --{name.replace('_', '-')} does not apply to problem '{problem}'")
        kwargs[name] = value
    return kwargs


def _make_system(problem: str, args: argparse.Namespace) -> systems.System:
    if problem not in systems.PROBLEMS:
        raise SystemExit(f"funcgan: unknown problem '{problem}'; choose one of {', '.join(systems.PROBLEMS)}")
    try:
        return systems.make_system(problem, **_system_kwargs(problem, args))
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise SystemExit(f"funcgan: {e}")


def add_game_options(p: argparse.ArgumentParser) -> None:
    """Objective, penalties and update scheme (problems dirac, ring8, grid25)."""
    g = p.add_argument_group("game dynamics (dirac, ring8, grid25)")
    g.add_argument("--scheme", default=None,
                   help="alternating, simultaneous, extragradient, optimistic, consensus or unrolled")
    g.add_argument("--loss", default=None, help="minimax, nonsaturating, lsgan, hinge or wasserstein")
    g.add_argument("--r1", type=float, default=None, help="R1 penalty gamma (real data)")
    g.add_argument("--r2", type=float, default=None, help="R2 penalty gamma (generated data)")
    g.add_argument("--gp", type=float, default=None, help="WGAN-GP penalty weight")
    g.add_argument("--penalty-every", type=int, default=None, help="apply penalties every n steps")
    g.add_argument("--unroll", type=int, default=None, help="D steps G looks through (scheme unrolled)")
    g.add_argument("--unroll-stop-opt-grad", action="store_const", const=True, default=None,
                   help="stop gradients through D's optimizer state while unrolling")
    g.add_argument("--consensus", type=float, default=None, help="gamma of consensus optimization")
    g.add_argument("--ema", type=float, default=None, help="generator EMA decay (e.g. 0.999)")


def _add_problem_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem", default="gaussian1d", help=f"seed system: {', '.join(systems.PROBLEMS)} (default gaussian1d)")
    p.add_argument("--data-dir", default=None, help="directory with MNIST IDX files (problem mnist)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate of both players")
    p.add_argument("--gen-lr", type=float, default=None)
    p.add_argument("--disc-lr", type=float, default=None)
    p.add_argument("--n-disc", type=int, default=None, help="D steps per G step (gaussian1d)")
    p.add_argument("--max-gen-steps", type=int, default=None, help="bound on seed 003's inner G loop (mnist)")
    p.add_argument("--l1-weight", type=float, default=None, help="L1 weight (pix2pix)")
    add_game_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funcgan", description="Functional GAN training on torch.func")
    sub = parser.add_subparsers(dest="command")

    t = sub.add_parser("train", help="train one run of a seed system and print a summary")
    _add_problem_options(t)
    t.add_argument("--steps", type=int, default=None, help="training steps (default: the problem's)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--dtype", choices=list(_DTYPES), default="float32")
    t.add_argument("--compile", action="store_true", help="torch.compile the step")
    t.add_argument("--out", default=None, help="write metrics.json, PNG plots and state.safetensors here")
    t.add_argument("--resume", default=None, help="continue from a state.safetensors written by --out")
    t.add_argument("--no-progress", action="store_true")

    v = sub.add_parser("verify", help="check functional == imperative for every seed system")
    v.add_argument("--problems", default=",".join(systems.PROBLEMS))
    v.add_argument("--steps", type=int, default=20)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--dtypes", default="float64,float32")

    from funcgan import report, sweep_cli

    sweep_cli.add_parser(sub)
    report.add_parser(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from funcgan import runner

    device = _device(args.device)
    system = _make_system(args.problem, args)
    steps = args.steps if args.steps is not None else system.default_steps
    if steps < 1:
        raise SystemExit(f"funcgan: --steps must be >= 1, got {steps}")
    print(f"funcgan train: {system.description}; data: {system.data_source}; {steps} steps on {device}")
    start = None
    if args.resume:
        from funcgan import checkpoint
        from funcgan import random as fr
        from funcgan.train import init_state

        template = init_state(system.gan, fr.key(args.seed), dtype=_DTYPES[args.dtype], device=device)
        try:
            start = checkpoint.load(args.resume, template, device)
        except (OSError, ValueError) as e:
            raise SystemExit(f"funcgan: cannot resume from {args.resume}: {e}")
        print(f"resumed from {args.resume} at step {int(start.step)}")
    state, history, seconds = runner.train(system, steps, args.seed, device, _DTYPES[args.dtype],
                                           compile=args.compile, show_progress=not args.no_progress, state=start)
    summary = runner.summarize(system, state, history, seed=args.seed)
    print(f"done in {seconds:.2f} s ({steps / seconds:.0f} steps/s)")
    print(f"final D loss {summary['disc/loss']:.4f} (mean of last 10%: {summary['disc/loss_tail_mean']:.4f})")
    print(f"final G loss {summary['gen/loss']:.4f} (mean of last 10%: {summary['gen/loss_tail_mean']:.4f})")
    if system.kind == "1d" and "generated_mean" in summary:
        print(f"generated: mean {summary['generated_mean']:+.4f}  std {summary['generated_std']:.4f}")
        print(f"data:      mean {summary['real_mean']:+.4f}  std {summary['real_std']:.4f}")
    elif "l1_to_target" in summary:
        print(f"mean |G(a) - b| on training pairs: {summary['l1_to_target']:.4f}")
    elif system.kind == "mixture":
        print(f"modes covered {summary['modes']} of {len(system.mixture[0])}, high-quality fraction "
              f"{summary['hq_fraction']:.3f}, reverse KL {summary['reverse_kl']:.3f}")
    elif system.kind == "dirac":
        print(f"theta {summary['theta']:+.4g}  psi {summary['psi']:+.4g}  distance to equilibrium {summary['radius']:.4g}")
    else:
        print(f"mean pixel: generated {summary['generated_pixel_mean']:.4f}, data {summary['real_pixel_mean']:.4f}")
    if not summary["finite"]:
        print("WARNING: the run diverged (non-finite losses or samples)")
    if args.out:
        for path in runner.write_outputs(args.out, system, history, summary, args.seed):
            print(f"wrote {path}")
        try:
            from funcgan import checkpoint

            path = f"{args.out}/state.safetensors"
            checkpoint.save(state, path, {"problem": args.problem, "seed": args.seed, "step": int(state.step)})
            print(f"wrote {path}")
        except ImportError:
            print("(state not saved: install funcgan[checkpoint] for safetensors checkpoints)")
    return 0 if summary["finite"] else 2


def cmd_verify(args: argparse.Namespace) -> int:
    from funcgan import testing

    problems = [p for p in args.problems.split(",") if p]
    dtypes = []
    for name in args.dtypes.split(","):
        if name not in _DTYPES:
            raise SystemExit(f"funcgan: unknown dtype '{name}'; choose from {', '.join(_DTYPES)}")
        dtypes.append(_DTYPES[name])
    print(f"functional step vs imperative reference, {args.steps} steps, same keys (max abs differences)")
    print(f"{'problem':<12}{'dtype':<9}{'params':>11}{'moments':>11}{'losses':>11}  result")
    failed = False
    for problem in problems:
        system = _make_system(problem, argparse.Namespace())
        for dtype in dtypes:
            report = testing.compare(system, seed=args.seed, steps=args.steps, dtype=dtype)
            bad = report.exceeds(testing.DEFAULT_TOLERANCES[dtype])
            failed |= bool(bad)
            tol = testing.DEFAULT_TOLERANCES[dtype]["params"]
            print(f"{problem:<12}{str(dtype).replace('torch.', ''):<9}{report.params:>11.2e}{report.moments:>11.2e}"
                  f"{report.losses:>11.2e}  {'FAIL ' + ','.join(bad) if bad else 'ok'} (tol {tol:.0e})")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "train":
        return cmd_train(args)
    if args.command == "verify":
        return cmd_verify(args)
    if args.command == "report":
        from funcgan import report

        return report.run(args)
    from funcgan import sweep_cli

    return sweep_cli.run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
