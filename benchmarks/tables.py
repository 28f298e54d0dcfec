"""README benchmark tables, regenerated from the JSON files ``funcgan bench --json`` writes.

    python benchmarks/tables.py benchmarks/results/cpu_*.json            # print the tables
    python benchmarks/tables.py --write README.md benchmarks/results/*.json

``--write`` replaces what lies between the ``<!-- bench:begin -->`` and ``<!-- bench:end -->``
markers of the file, so the README's figures are always the committed JSON's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
RATE = "rate"  # seed-steps per second: three significant figures below 100, whole numbers above
COLUMNS = [  # (key in a row, header, format)
    ("S", "S", "{:,}"),
    ("imperative", "imperative", RATE),
    ("eager", "eager", RATE),
    ("compiled", "compiled", RATE),
    ("jax", "JAX", RATE),
    ("compiled_over_imperative", "compiled / imperative", "{:.2f}x"),
    ("compiled_over_jax", "compiled / JAX", "{:.2f}x"),
    ("compile_s", "first call (s)", "{:.1f}"),
    ("chunk", "runs a call", "{:,}"),
]


def _cell(value: float, fmt: str) -> str:
    if fmt == RATE:
        return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    return fmt.format(value)


def is_bench_json(path: Path) -> bool:
    """Whether ``path`` holds what ``funcgan bench --json`` writes (results/ also holds other benchmarks')."""
    data = json.loads(path.read_text())
    return isinstance(data, dict) and isinstance(data.get("problems"), dict)


def table(path: Path) -> str:
    """One markdown table per problem of one results file (figures: seed-steps per second)."""
    data = json.loads(path.read_text())
    conv = [p for p in data["problems"] if p in ("dcgan", "sngan", "cgan")]
    widths = f"; {', '.join(conv)} at width 16 (bench.SMALL)" if conv else ""
    head = (
        f"**{path.name}** ({data.get('device', '?')}, torch {data.get('torch', '?')}, {data.get('threads', '?')} "
        f"threads, {data.get('steps_per_call', 1)} step(s) per call{widths}); seed-steps per second:"
    )
    out = [head] + ([f"({data['notes']})"] if data.get("notes") else [])
    for problem, rows in data["problems"].items():
        if not isinstance(rows, list):  # profiles and other extras
            continue
        cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
        out += ["", f"{problem}:", "", "| " + " | ".join(h for _, h, _ in cols) + " |"]
        out.append("|" + "---|" * len(cols))
        for r in rows:
            cells = [_cell(r[k], fmt) if r.get(k) is not None else "-" for k, _, fmt in cols]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--write", type=Path, default=None, help="replace the marked section of this file")
    args = ap.parse_args(argv)
    files = [f for f in args.files if is_bench_json(f)]
    for f in args.files:
        if f not in files:
            print(f"{f}: not a funcgan bench JSON (no 'problems'); left out", file=sys.stderr)
    if not files:
        print("no funcgan bench JSON among the files", file=sys.stderr)
        return 2
    text = "\n\n".join(table(f) for f in files)
    if args.write is None:
        print(text)
        return 0
    doc = args.write.read_text()
    if BEGIN not in doc or END not in doc:
        print(f"{args.write}: no {BEGIN} ... {END} section to replace", file=sys.stderr)
        return 2
    pre, rest = doc.split(BEGIN, 1)
    _, post = rest.split(END, 1)
    args.write.write_text(f"{pre}{BEGIN}\n{text}\n{END}{post}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
