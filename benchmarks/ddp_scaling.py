"""Data-parallel scaling: one process against two (DDP over gloo), same per-rank batch.

For the classifier (ResNet-18) and the DiT, with the tasks' own losses on random images:

- img/s of one process with all cores, of one process with half of them, and of two
  ranks with half each (batch b each): two ranks against all cores is what `--nproc 2`
  buys on this machine; against half the cores, the scaling efficiency (1.0 = two ranks
  do twice the work of one in the same time, so DDP costs nothing);
- the share of a DDP step spent in the gradient all-reduce, two ways: exposed (the DDP
  step against the same step under `no_sync()`, which skips the all-reduce) and alone
  (an all-reduce of a flat tensor of the gradients' size, timed by itself);
- the gradient size, and what a ring all-reduce of it costs on 8 GPUs at NVLink and at
  PCIe bandwidth: 2(N-1)/N × bytes / bus bandwidth (the formula nccl-tests reports
  bus bandwidth by), the floor on the step time below which data parallelism stops paying.

    python benchmarks/ddp_scaling.py            # 64 px classifier, DiT test preset at 32 px
    python benchmarks/ddp_scaling.py --smoke    # a few steps at tiny sizes
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tinycats.config import build_config
from tinycats.models import create_model
from tinycats.train.distributed import DataParallel
from tinycats.train.task import make_task

NVLINK_BUS_GB_S = 360.0
"""8×H100 SXM, NCCL all-reduce bus bandwidth (nccl-tests on NVLink 4 / NVSwitch reach
~360-480 GB/s of the 450 GB/s per direction; the low end)."""
PCIE_BUS_GB_S = 20.0
"""GPUs talking over PCIe Gen4 x16 (~25 GB/s peak, ~20 effective), e.g. a multi-GPU
container without NVLink."""
GPUS = 8


def cases(smoke: bool) -> dict[str, dict[str, Any]]:
    size = 32 if smoke else 64
    return {
        f"classifier resnet18 {size}px": {
            "config": build_config("classifier", overrides=[f"data.image_size={size}"]),
            "batch": 8 if smoke else 32,
            "image_size": size,
        },
        "dit test 32px": {
            "config": build_config("dit", overrides=["dit.preset=test", "data.image_size=32"]),
            "batch": 8 if smoke else 64,
            "image_size": 32,
        },
    }


def make_batch(batch: int, size: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen)
    return images, torch.randint(0, classes, (batch,), generator=gen)


def time_steps(step: Any, warmup: int, steps: int) -> float:
    """Mean seconds of one call of `step` after `warmup` calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def trainable(case: dict[str, Any], classes: int = 12) -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(0)
    model, _ = create_model(case["config"], classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return (
        model,
        make_task(case["config"]),
        optimizer,
        make_batch(case["batch"], case["image_size"], classes),
    )


def single(case: dict[str, Any], warmup: int, steps: int, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    model, task, optimizer, (images, labels) = trainable(case)

    def step() -> None:
        loss, _ = task.loss(model, images, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    grads = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"step_s": time_steps(step, warmup, steps), "grad_bytes": 4.0 * grads}


def rank_main(rank: int, world: int, port: int, case: dict, warmup: int, steps: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(minutes=5))
    model, task, optimizer, (images, labels) = trainable(case)
    ddp = DataParallel(model)  # DDP that passes the DiT's attributes through, as the engine's

    def step() -> None:
        loss, _ = task.loss(ddp, images, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step_without_allreduce() -> None:
        with ddp.no_sync():
            step()

    flat = torch.zeros(sum(p.numel() for p in model.parameters() if p.requires_grad))

    def allreduce() -> None:
        dist.all_reduce(flat)

    times = torch.tensor(
        [
            time_steps(step, warmup, steps),
            time_steps(step_without_allreduce, warmup, steps),
            time_steps(allreduce, warmup, steps),
        ],
        dtype=torch.float64,
    )
    dist.all_reduce(times, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
    if rank == 0:
        out.put(dict(zip(("step_s", "nosync_s", "allreduce_s"), times.tolist(), strict=True)))
    dist.destroy_process_group()


def two_ranks(case: dict[str, Any], warmup: int, steps: int) -> dict[str, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    out = context.SimpleQueue()
    mp.start_processes(
        rank_main, args=(2, port, case, warmup, steps, out), nprocs=2, start_method="spawn"
    )
    return out.get()


def ring_allreduce_s(grad_bytes: float, bus_gb_s: float, gpus: int = GPUS) -> float:
    return 2 * (gpus - 1) / gpus * grad_bytes / (bus_gb_s * 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="a few steps at tiny sizes")
    args = parser.parse_args()
    steps, warmup = (2, 1) if args.smoke else (args.steps, 3)
    cores = os.cpu_count() or 1
    print(
        f"torch {torch.__version__}, {cores} cores; one process {cores} threads, two ranks "
        f"{max(1, cores // 2)} each; {steps} timed steps after {warmup}"
    )
    half = max(1, cores // 2)
    for name, case in cases(args.smoke).items():
        one = single(case, warmup, steps, cores)
        one_half = single(case, warmup, steps, half)
        two = two_ranks(case, warmup, steps)
        batch = case["batch"]
        one_img_s, two_img_s = batch / one["step_s"], 2 * batch / two["step_s"]
        efficiency = two_img_s / (2 * batch / one_half["step_s"])
        exposed = max(0.0, two["step_s"] - two["nosync_s"]) / two["step_s"]
        alone = two["allreduce_s"] / two["step_s"]
        mb = one["grad_bytes"] / 1e6
        nvlink, pcie = (
            ring_allreduce_s(one["grad_bytes"], bw) for bw in (NVLINK_BUS_GB_S, PCIE_BUS_GB_S)
        )
        print(
            f"{name:<28} batch {batch}/rank  1 proc {one_img_s:6.1f} img/s ({cores} threads), "
            f"{batch / one_half['step_s']:6.1f} ({half})  2 ranks {two_img_s:6.1f} img/s = "
            f"{two_img_s / one_img_s:.2f}x, efficiency {efficiency:.2f}  all-reduce share "
            f"{exposed:.0%} exposed, {alone:.0%} alone ({two['allreduce_s'] * 1e3:.1f} ms)\n"
            f"{'':<28} gradients {mb:.1f} MB fp32: ring all-reduce on {GPUS} GPUs "
            f"{nvlink * 1e3:.2f} ms at NVLink ({NVLINK_BUS_GB_S:.0f} GB/s), "
            f"{pcie * 1e3:.1f} ms at PCIe ({PCIE_BUS_GB_S:.0f} GB/s): under 10% of a step "
            f"when the step takes over {10 * nvlink * 1e3:.1f} / {10 * pcie * 1e3:.0f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
