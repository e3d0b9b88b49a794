"""Retention decision + listing over 10,000 checkpoints of one run: goal < 100 ms.

Builds a run folder with N real checkpoints (one saved by CheckpointManager, then
copied with its manifest rewritten per step, plus the run's index.json), then times:
  select_keep      the pure policy over N records
  list (index)     list_checkpoints using the index.json cache (each entry checked against
                   its folder's inode, which the directory scan reports for free)
  list (no index)  the fallback: opening N meta.json files
  plan_prune       listing + records + select_keep: what prune() decides with, by the
                   training run's manager (which remembers what it verified)
  plan_prune, new  the same by a fresh manager, as `tinycats ckpt prune` runs it: it
                   verifies the few checkpoints that count as the newest N and best k
                   (retention counts only checkpoints that verify)
All timings are medians of several repeats on a warm page cache.

    python benchmarks/retention_scale.py            # N = 10,000
    python benchmarks/retention_scale.py --smoke    # N = 1,000
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tinycats.storage import CheckpointManager, CheckpointRecord, LocalStore, select_keep
from tinycats.storage.layout import INDEX_FILE, step_dir_name
from tinycats.storage.listing import list_checkpoints, scan_run, write_index

GOAL_MS = 100.0


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) milliseconds of `repeats` calls.

    CPU time is printed too because this machine is shared: under contention wall
    time measures the neighbours, CPU time what the listing itself costs.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def build_run(root: Path, n: int, rng: random.Random) -> CheckpointManager:
    """A run with checkpoints at steps 1..n (100 steps apart in time), metrics random."""
    # A huge keep_last while building, so that nothing is pruned.
    manager = CheckpointManager(LocalStore(root), "classifier", "scale", keep_last=n + 1)
    manager.save(1, {"model": {"w": torch.zeros(4)}}, {"step": 1}, {"config": {}}, {"val_acc": 0.5})
    template = manager.run_dir / step_dir_name(1)
    doc = json.loads((template / "meta.json").read_text())
    for step in range(2, n + 1):
        folder = manager.run_dir / step_dir_name(step)
        shutil.copytree(template, folder)
        doc.update(step=step, time=1e9 + 100 * step, metrics={"val_acc": rng.random()})
        (folder / "meta.json").write_text(json.dumps(doc))
    # The index the writer keeps, as it rewrites it after finding entries missing.
    write_index(manager.run_dir, scan_run(manager.run_dir, use_index=False).index_entries())
    (manager.run_dir / "latest.json").write_text(json.dumps({"format_version": 1, "step": n}))
    return manager


def fresh(manager: CheckpointManager) -> CheckpointManager:
    """A new manager of the same run and policy: nothing verified yet."""
    copy = CheckpointManager(manager.store, manager.task, manager.run_id, keep_last=5)
    copy.keep_best, copy.keep_every = manager.keep_best, manager.keep_every
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1,000 checkpoints, fewer repeats")
    parser.add_argument("-n", type=int, default=10_000)
    args = parser.parse_args()
    n, repeats = (1_000, 3) if args.smoke else (args.n, 7)
    rng = random.Random(0)

    records = [
        CheckpointRecord(s, 1e9 + 100 * s, rng.random() if s % 3 else None) for s in range(1, n + 1)
    ]
    policy = {"keep_last": 5, "keep_best": 3, "keep_every": 1000, "latest_step": n}
    pure_ms = timed(lambda: select_keep(records, **policy), repeats)

    work = Path(tempfile.mkdtemp(prefix="tinycats-bench-"))
    try:
        start = time.perf_counter()
        manager = build_run(work, n, rng)
        build_s = time.perf_counter() - start
        manager.keep_last, manager.keep_best, manager.keep_every = 5, 3, 1000
        run_dir = manager.run_dir
        assert len(list_checkpoints(run_dir)) == n
        list_ms = timed(lambda: list_checkpoints(run_dir), repeats)
        plan_ms = timed(manager.plan_prune, repeats)
        fresh_ms = timed(lambda: fresh(manager).plan_prune(), repeats)
        kept, doomed = manager.plan_prune()
        index = run_dir / INDEX_FILE
        index.rename(run_dir / "index.off")
        no_index_ms = timed(lambda: list_checkpoints(run_dir), repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    verdict = "PASS" if max(plan_ms[0], fresh_ms[0]) < GOAL_MS else "MISS"
    print(f"retention at scale: {n:,} checkpoints (built in {build_s:.1f} s), medians of {repeats}")
    print(f"  {'':32s}{'wall':>10s}{'cpu':>10s}")
    rows = [
        ("select_keep (pure)", pure_ms),
        ("list_checkpoints (index.json)", list_ms),
        ("list_checkpoints (no index)", no_index_ms),
        ("plan_prune = list + decide", plan_ms),
        ("plan_prune, new manager", fresh_ms),
    ]
    for name, (wall, cpu) in rows:
        print(f"  {name:32s}{wall:7.2f} ms{cpu:7.2f} ms")
    print(
        f"  index speed-up: {no_index_ms[0] / list_ms[0]:.1f}x; decision: keep {len(kept)}, "
        f"delete {len(doomed)}"
    )
    print(
        f"  plan_prune wall {plan_ms[0]:.1f} ms ({fresh_ms[0]:.1f} ms new manager) "
        f"vs goal < {GOAL_MS:.0f} ms: {verdict}"
    )


if __name__ == "__main__":
    main()
