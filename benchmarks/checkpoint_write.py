"""Checkpoint write throughput: CheckpointManager.save vs a raw write+fsync of the same bytes.

Goal (issue 3): save() reaches at least 0.7x the throughput of simply writing and
fsyncing the serialised files, although it also serialises, hashes (sha256),
writes the manifest, renames, replaces latest.json and fsyncs directories.
Workload: ResNet-18 (12 classes) weights + AdamW state after one step.

    python benchmarks/checkpoint_write.py            # 5 interleaved repeats, medians
    python benchmarks/checkpoint_write.py --smoke    # 1 repeat, quick check that it runs
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_save
from torchvision.models import resnet18

from tinycats.storage import CheckpointManager, LocalStore
from tinycats.storage.atomic import write_file_synced

GOAL = 0.7


def training_state() -> tuple[dict, dict]:
    """ResNet-18 weights and an AdamW state with its moments (after one step)."""
    torch.manual_seed(0)
    model = resnet18(num_classes=12)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(torch.randn(2, 3, 64, 64)).logsumexp(dim=1).mean()
    loss.backward()
    optimizer.step()
    weights = {"model": model.state_dict()}
    train_state = {"optimizer": optimizer.state_dict(), "step": 1, "epoch": 0}
    return weights, train_state


def serialised(weights: dict, state: dict) -> dict[str, bytes]:
    """The bytes of each file a checkpoint holds, for the raw baseline to write."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files = {f"{key}.safetensors": safetensors_save(sd) for key, sd in weights.items()}
    return {**files, "train_state.pt": buffer.getvalue()}


def raw_write(folder: Path, blobs: dict) -> float:
    """Seconds to write and fsync each already-serialised file (the lower bound)."""
    folder.mkdir()
    start = time.perf_counter()
    for name, blob in blobs.items():
        write_file_synced(folder / name, blob)
    return time.perf_counter() - start


def managed_save(manager: CheckpointManager, step: int, weights: dict, state: dict) -> float:
    start = time.perf_counter()
    manager.save(step, weights, state, {"config": {"bench": True}}, {"val_acc": 0.5})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a tmp dir)"
    )
    args = parser.parse_args()
    repeats = 1 if args.smoke else args.repeats

    weights, state = training_state()
    blobs = serialised(weights, state)
    total = sum(memoryview(b).nbytes for b in blobs.values())
    work = Path(tempfile.mkdtemp(prefix="tinycats-bench-", dir=args.dir))
    try:
        # keep_last >= repeats: no prune deletes inside the timed saves.
        manager = CheckpointManager(
            LocalStore(work / "store"), "classifier", "bench", keep_last=repeats + 1
        )
        raw_times, save_times = [], []
        managed_save(manager, 0, weights, state)  # warm-up: imports, allocator, directories
        for i in range(repeats):  # interleaved, so both see the same disk and cache state
            raw_times.append(raw_write(work / f"raw-{i}", blobs))
            save_times.append(managed_save(manager, i + 1, weights, state))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    raw, save = statistics.median(raw_times), statistics.median(save_times)
    mb = total / 1e6
    ratio = raw / save
    print(
        f"checkpoint: ResNet-18 + AdamW, {len(blobs)} files, {mb:.1f} MB, {repeats} repeat(s), medians"
    )
    print(f"  raw write+fsync       {raw * 1e3:8.1f} ms  {mb / raw:8.1f} MB/s")
    print(f"  CheckpointManager.save {save * 1e3:7.1f} ms  {mb / save:8.1f} MB/s")
    print(
        f"  throughput ratio save/raw = {ratio:.2f}x (goal >= {GOAL}x): {'PASS' if ratio >= GOAL else 'MISS'}"
    )


if __name__ == "__main__":
    main()
