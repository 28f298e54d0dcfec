"""Sharding a sweep over processes (torchrun, or any launcher that sets the env:// variables).

Each rank trains a contiguous slice of the runs on its own device and checkpoints it
in its own directory (``OUT/rank<r>``). Seeds are independent, so the ranks exchange
no tensors: no process group and no collective, only torch.distributed's rendezvous
store, through which rank 0 collects the per-seed rows and writes the same table and
summary one process would.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["dist_info", "rendezvous", "gather_rows", "shard"]


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` from the environment (``(0, 1)`` when not launched as a job)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def rendezvous():
    """The job's key-value store (``torch.distributed``'s env:// rendezvous; torchrun's own store)."""
    import torch.distributed as dist

    store, _, _ = next(dist.rendezvous("env://"))
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"funcgan-sweep/{run_id}/{restart}", store)


def gather_rows(store, rows: list[dict[str, Any]], rank: int, world: int) -> list[dict[str, Any]]:
    """Rank 0 gets every rank's rows in rank order (the order one process writes); others get ``[]``.

    Rank 0 waits as long as the slowest rank trains; if a rank dies, the launcher stops the job.
    """
    from datetime import timedelta

    store.set(f"rows/{rank}", json.dumps(rows, default=float))
    if rank != 0:
        return []
    store.set_timeout(timedelta(days=365))
    return [r for i in range(world) for r in json.loads(store.get(f"rows/{i}"))]


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous slice ``[lo, hi)`` of ``n`` runs that ``rank`` of ``world`` trains."""
    per = math.ceil(n / world)
    return min(n, rank * per), min(n, (rank + 1) * per)
