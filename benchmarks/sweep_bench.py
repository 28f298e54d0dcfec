"""Side-by-side sweep benchmark; the code lives in :mod:`funcgan.bench` (also ``funcgan bench``).

Run from the repository root:

    python benchmarks/sweep_bench.py                       # CPU, both problems, S in 1..4096
    python benchmarks/sweep_bench.py --problems gaussian1d --sizes 1,256,1024 --json out.json
    python benchmarks/sweep_bench.py --device cuda --sizes 1,1024,16384 --mode reduce-overhead

See ``funcgan bench --help`` for what each competitor is and how rounds are timed.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from funcgan.bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
