"""Mutation testing: plant small bugs in the core, one at a time, and count how many the tests catch.

    python benchmarks/mutation.py                       # a sample of mutants in every target module
    python benchmarks/mutation.py --modules losses,penalties --per-module 30 --json out.json
    python benchmarks/mutation.py --list                # the mutation sites, nothing run

Each mutant is one edit of one module's syntax tree: an arithmetic operator swapped (``+``/``-``,
``*``/``/``, ``**``/``*``), a comparison flipped or made strict (``<``/``<=``, ``==``/``!=``), a
boolean ``and``/``or`` swapped, a negation dropped, a numeric constant nudged, a ``.detach()``
dropped, ``True``/``False`` swapped. The mutant is written into a scratch copy of the repository
and the module's own tests run there (``-x``, fast tests only, the CI hypothesis profile); the
mutant is *killed* when they fail (or time out), and *survives* when they pass. The mutation score
is killed / total; the survivors are listed with their line so a reader can tell a gap in the tests
from an equivalent mutant (an edit that cannot change behaviour, such as nudging an ``eps`` that a
test never reaches).

The sample is drawn with a fixed seed, so two runs of the same command test the same mutants.
One mutant costs one pytest start (~5 s of imports) plus its tests: budget a few minutes per module.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# module -> the tests that own it (fast ones; ``-m "not slow"`` is added)
TARGETS: dict[str, list[str]] = {
    "losses": ["tests/test_losses.py", "tests/test_known_answers.py"],
    "penalties": ["tests/test_penalties.py", "tests/test_known_answers.py"],
    "random": ["tests/test_random.py", "tests/test_known_answers.py"],
    "optim/transforms": ["tests/test_optim.py", "tests/test_known_answers.py"],
    "optim/schedules": ["tests/test_optim.py", "tests/test_known_answers.py"],
    "step": ["tests/test_loops.py", "tests/test_negative_controls.py", "tests/test_step.py"],
    "loops/base": ["tests/test_loops.py", "tests/test_negative_controls.py"],
    "loops/alternating": ["tests/test_loops.py", "tests/test_negative_controls.py", "tests/test_known_answers.py"],
    "loops/reuse": ["tests/test_loops.py", "tests/test_negative_controls.py"],
    "loops/adaptive": ["tests/test_loops.py", "tests/test_negative_controls.py"],
    "loops/simultaneous": ["tests/test_loops.py", "tests/test_negative_controls.py", "tests/test_dynamics.py"],
    "loops/unrolled": ["tests/test_loops.py", "tests/test_negative_controls.py"],
    "nets/functional": ["tests/test_nets.py"],
    "nets/parametrize": ["tests/test_nets.py"],
    "nets/stochastic": ["tests/test_nets.py"],
    "guard": ["tests/test_sweep.py", "tests/test_known_answers.py"],
    "sweep": ["tests/test_sweep.py", "tests/test_known_answers.py"],
    "metrics": ["tests/test_systems.py", "tests/test_dynamics.py", "tests/test_known_answers.py"],
    "checkpoint": ["tests/test_cli.py", "tests/test_known_answers.py"],
}

# mutants judged equivalent (no input the library accepts can tell them from the original), with why;
# keyed by (module, line, what). Listed beside the score, never silently dropped from it.
EQUIVALENT: dict[tuple[str, int, str], str] = {
    (
        "checkpoint",
        88,
        "drop .detach()",
    ): "safetensors writes a tensor's values whether or not it requires grad (tested)",
    (
        "losses",
        121,
        "Gt -> GtE",
    ): "_flat of a 1-D tensor: reshape(B, -1) gives (B, 1); every caller reduces it to the same mean",
    (
        "random",
        81,
        "constant 2 -> 3",
    ): "k[..., 1:3] of a key is k[..., 1:2]: every key's last axis is 2 (checked first)",
    ("random", 117, "IsNot -> Is"): "seed.to(device=None) keeps the seed's device, which is the default it replaces",
    (
        "checkpoint",
        113,
        "constant 1 -> 2",
    ): "split('-', 2)[0] is split('-', 1)[0]: only the first field (the pid) is read",
    (
        "checkpoint",
        117,
        "True -> False",
    ): "unlink(missing_ok=False) of a file just globbed: differs only if another process removes it in between",
    (
        "checkpoint",
        187,
        "Lt -> LtE",
    ): "a history tensor is (logged steps, runs), never 1-D, so dim() < 1 and <= 1 agree",
    (
        "step",
        148,
        "False -> True",
    ): "GAN's dataclass eq=True only adds field-wise == and a hash; nothing compares or hashes GANs",
    (
        "loops/unrolled",
        62,
        "constant 1 -> 2",
    ): "draws a second G batch that nothing reads: the same distribution, another stream; every proof "
    "feeds both sides the loop's own draw, and no published stream is pinned for this loop",
}

_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.Pow: ast.Mult,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.And: ast.Or,
    ast.Or: ast.And,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass
class Site:
    module: str
    index: int  # the n-th mutable node in ast.walk order
    line: int
    what: str


@dataclass
class Outcome:
    module: str
    line: int
    what: str
    status: str  # killed | survived | timeout | invalid
    seconds: float


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of constants that are docstrings: nudging those is not a mutation of behaviour."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _annotation_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        anns = []
        if isinstance(node, (ast.AnnAssign, ast.arg)):
            anns.append(node.annotation)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            anns.append(node.returns)
        for a in anns:
            if a is not None:
                out.update(id(n) for n in ast.walk(a))
    return out


def _mutation(node: ast.AST, skip: set[int]) -> str | None:
    """What mutating ``node`` would do, or None when it is not a site."""
    if id(node) in skip:
        return None
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _SWAPS:
        return f"{type(node.op).__name__} -> {_SWAPS[type(node.op)].__name__}"
    if isinstance(node, ast.BoolOp) and type(node.op) in _SWAPS:
        return f"{type(node.op).__name__} -> {_SWAPS[type(node.op)].__name__}"
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _SWAPS:
        return f"{type(node.ops[0]).__name__} -> {_SWAPS[type(node.ops[0])].__name__}"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
        return f"drop {type(node.op).__name__}"
    if isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
        return f"constant {node.value!r} -> {_nudge(node.value)!r}"
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return f"{node.value} -> {not node.value}"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "detach"
        and not node.args
    ):
        return "drop .detach()"
    return None


def _nudge(v: int | float) -> int | float:
    if isinstance(v, int):
        return v + 1
    return 1.0 if v == 0 else v * 1.5


class _Apply(ast.NodeTransformer):
    def __init__(self, target: ast.AST):
        self.target = target

    def generic_visit(self, node):
        node = super().generic_visit(node)
        if node is not self.target:
            return node
        if isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp)):
            node.op = _SWAPS[type(node.op)]()
        elif isinstance(node, ast.Compare):
            node.ops = [_SWAPS[type(node.ops[0])]()]
        elif isinstance(node, ast.UnaryOp):
            return node.operand
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            node.value = not node.value
        elif isinstance(node, ast.Constant):
            node.value = _nudge(node.value)
        elif isinstance(node, ast.Call):
            return node.func.value
        return node


def _path(module: str) -> str:
    return os.path.join("funcgan", module + ".py")


def sites(module: str) -> list[Site]:
    src = open(os.path.join(ROOT, _path(module))).read()
    tree = ast.parse(src)
    skip = _docstring_nodes(tree) | _annotation_nodes(tree)
    out = []
    for i, node in enumerate(ast.walk(tree)):
        what = _mutation(node, skip)
        if what is not None:
            out.append(Site(module, i, getattr(node, "lineno", 0), what))
    return out


def mutant_source(site: Site) -> str:
    tree = ast.parse(open(os.path.join(ROOT, _path(site.module))).read())
    target = list(ast.walk(tree))[site.index]
    tree = _Apply(target).visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def _pytest(tree_dir: str, tests: list[str], timeout: float, workers: int = 1) -> tuple[str, float]:
    env = dict(os.environ, HYPOTHESIS_PROFILE="ci", PYTHONPATH=tree_dir, PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider", *tests]
    if workers > 1:
        cmd += ["-n", str(workers)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=tree_dir, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0
    dt = time.perf_counter() - t0
    if p.returncode == 0:
        return "survived", dt
    if p.returncode in (1, 2, 3, 4):  # failures, interruption (collection error), internal error, usage
        return "killed", dt
    return f"exit {p.returncode}", dt


def scratch_copy() -> str:
    d = tempfile.mkdtemp(prefix="funcgan-mutation-")
    for name in ("funcgan", "tests"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(d, name), ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "examples", "docs"):
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(d, name))
        elif os.path.exists(src):
            shutil.copy(src, d)
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modules", default=",".join(TARGETS), help="comma-separated, from: " + ", ".join(TARGETS))
    ap.add_argument("--per-module", type=int, default=12, help="mutants sampled per module (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-factor", type=float, default=3.0, help="a mutant's tests time out at this x baseline")
    ap.add_argument("--workers", type=int, default=1, help="pytest-xdist workers per mutant's tests")
    ap.add_argument(
        "--sites",
        default="",
        help="only these mutants: comma-separated module:line[:what] (e.g. guard:113 or 'guard:113:Eq -> NotEq')",
    )
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    modules = [m for m in args.modules.split(",") if m]
    unknown = [m for m in modules if m not in TARGETS]
    if unknown:
        ap.error(f"unknown module(s) {unknown}; choose from {list(TARGETS)}")

    rng = random.Random(args.seed)
    plan: dict[str, list[Site]] = {}
    only: set[tuple] = set()
    for x in filter(None, args.sites.split(",")):
        m, line, *what = x.split(":", 2)
        only.add((m, int(line), *what))
    for m in modules:
        all_sites = sites(m)
        if only:
            all_sites = [s for s in all_sites if (m, s.line) in only or (m, s.line, s.what) in only]
            plan[m] = all_sites
            continue
        k = len(all_sites) if args.per_module <= 0 else min(args.per_module, len(all_sites))
        plan[m] = sorted(rng.sample(all_sites, k), key=lambda s: s.line)
    if args.list:
        for m, ss in plan.items():
            for s in ss:
                print(f"{_path(m)}:{s.line}: {s.what}")
        return 0

    tree_dir = scratch_copy()
    outcomes: list[Outcome] = []
    try:
        for m, ss in plan.items():
            tests = TARGETS[m]
            status, base = _pytest(tree_dir, tests, timeout=1800, workers=args.workers)
            if status != "survived":
                print(f"{m}: its tests fail unmutated ({status}); skipped", file=sys.stderr)
                continue
            path = os.path.join(tree_dir, _path(m))
            original = open(path).read()
            for s in ss:
                try:
                    src = mutant_source(s)
                    compile(src, path, "exec")
                except (SyntaxError, ValueError):
                    outcomes.append(Outcome(m, s.line, s.what, "invalid", 0.0))
                    continue
                with open(path, "w") as f:
                    f.write(src)
                try:
                    status, dt = _pytest(
                        tree_dir, tests, timeout=max(60.0, args.timeout_factor * base), workers=args.workers
                    )
                finally:
                    with open(path, "w") as f:
                        f.write(original)
                outcomes.append(Outcome(m, s.line, s.what, status, round(dt, 1)))
                print(f"{_path(m)}:{s.line}: {s.what}: {status} ({dt:.0f} s)", flush=True)
    finally:
        shutil.rmtree(tree_dir, ignore_errors=True)

    print("\nmodule                 killed / mutants   score   (judged equivalent: excluded)")
    scores = {}
    for m in modules:
        mine = [o for o in outcomes if o.module == m and o.status != "invalid"]
        if not mine:
            continue
        killed = sum(o.status in ("killed", "timeout") for o in mine)
        equivalent = sum(o.status == "survived" and (o.module, o.line, o.what) in EQUIVALENT for o in mine)
        scores[m] = {"killed": killed, "mutants": len(mine), "equivalent": equivalent}
        rest = len(mine) - equivalent
        print(
            f"{m:22s} {killed:6d} / {len(mine):<7d}   {killed / len(mine):5.0%}   "
            f"({killed / rest if rest else 1.0:.0%} of {rest})"
        )
    total = sum(v["mutants"] for v in scores.values())
    killed = sum(v["killed"] for v in scores.values())
    equivalent = sum(v["equivalent"] for v in scores.values())
    if total:
        rest = total - equivalent
        print(
            f"{'all':22s} {killed:6d} / {total:<7d}   {killed / total:5.0%}   ({killed / max(rest, 1):.0%} of {rest})"
        )
    survivors = [o for o in outcomes if o.status == "survived"]
    if survivors:
        print("\nsurvivors:")
        for o in survivors:
            why = EQUIVALENT.get((o.module, o.line, o.what))
            print(
                f"  {_path(o.module)}:{o.line}: {o.what}: " + (f"equivalent ({why})" if why else "A GAP IN THE TESTS")
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scores": scores, "outcomes": [asdict(o) for o in outcomes]}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
