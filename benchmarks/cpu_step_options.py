"""Three ways to speed up a CPU training step, side by side: one tinycats takes, two not.

A bare bf16 ResNet-18 training step (channels-last, fused AdamW, batch 32: the CPU
recipe's step without the engine around it), timed
  1. with the last stage in fp32 NCHW on tiny maps (SmallMapStage, what
     create_classifier builds) against every stage in bf16 channels-last;
  2. eager against `torch.compile` (inductor), in one process with all threads;
  3. one process with all T threads against T single-thread processes in DDP (gloo),
     each on 32/T of the batch, so both sides train the same images per step; the
     gradient all-reduce is also timed alone.
Both sides of a comparison run in the same invocation, best of `--rounds`, because a
shared host's speed drifts by tens of percent within minutes.

    python benchmarks/cpu_step_options.py            # 64 and 128 px, 10 steps per side
    python benchmarks/cpu_step_options.py --smoke    # 2 steps at 32 px, to check it runs
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tinycats.models.classifier import create_classifier

BATCH = 32


def training_step(model: nn.Module, forward: Callable, size: int, batch: int) -> Callable:
    """A closure running one bf16 forward/backward/AdamW step on fixed random data."""
    torch.manual_seed(0)
    images = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 12, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), 2e-3, fused=True)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16):
            loss = nn.functional.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def new_model() -> nn.Module:
    torch.manual_seed(0)
    return create_classifier("resnet18", 12)


def step_ms(step: Callable, steps: int) -> float:
    step()  # warm-up: allocations, oneDNN primitive caches, compilation
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1000


def one_step_ms(step: Callable) -> float:
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1000


def all_channels_last(model: nn.Module) -> nn.Module:
    """The same weights with the last stage as a plain channels-last nn.Sequential."""
    model.layer4 = nn.Sequential(*model.layer4)
    return model.to(memory_format=torch.channels_last)


def small_map_stage_vs_channels_last(size: int, steps: int, rounds: int) -> None:
    """Single steps of the two sides alternated, so a slow spell of the host hits both:
    the figure is the median of the per-pair ratios."""
    ours, plain = new_model(), all_channels_last(new_model())
    ours_step = training_step(ours, ours, size, BATCH)
    plain_step = training_step(plain, plain, size, BATCH)
    ours_step(), plain_step()  # warm-up of both
    pairs = [(one_step_ms(ours_step), one_step_ms(plain_step)) for _ in range(steps * rounds)]
    ratio = statistics.median(o / p for o, p in pairs)
    print(
        f"{size:>3}px  last stage bf16 channels-last "
        f"{statistics.median(p for _, p in pairs):6.0f} ms/step   SmallMapStage "
        f"{statistics.median(o for o, _ in pairs):6.0f} ms/step   "
        f"ours/all-bf16 = {ratio:.2f}x (median of {len(pairs)} alternated pairs)",
        flush=True,
    )


def compile_vs_eager(size: int, steps: int, rounds: int) -> None:
    model = new_model()
    eager = training_step(model, model, size, BATCH)
    start = time.perf_counter()
    try:
        compiled = training_step(model, torch.compile(model, dynamic=False), size, BATCH)
        compiled()
    except Exception as err:  # no C++ compiler, unsupported platform: say so, go on
        print(f"torch.compile unavailable here: {type(err).__name__}: {err}".splitlines()[0])
        return
    compile_s = time.perf_counter() - start
    best = {"eager": float("inf"), "compiled": float("inf")}
    for _ in range(rounds):
        best["eager"] = min(best["eager"], step_ms(eager, steps))
        best["compiled"] = min(best["compiled"], step_ms(compiled, steps))
    print(
        f"{size:>3}px  eager {best['eager']:6.0f} ms/step   torch.compile "
        f"{best['compiled']:6.0f} ms/step (first step {compile_s:.0f} s)   "
        f"compiled/eager = {best['compiled'] / best['eager']:.2f}x",
        flush=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, size: int, steps: int, out: dict) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = new_model()
        step = training_step(model, DistributedDataParallel(model), size, BATCH // world)
        ms = step_ms(step, steps)
        grads = torch.zeros(sum(p.numel() for p in model.parameters()))
        dist.all_reduce(grads)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            dist.all_reduce(grads)
        if rank == 0:
            out["step"], out["all_reduce"] = ms, (time.perf_counter() - start) / steps * 1000
            out["megabytes"] = grads.numel() * 4 / 1e6
    finally:
        dist.destroy_process_group()


def ddp_vs_one_process(size: int, steps: int, rounds: int) -> None:
    threads = torch.get_num_threads()
    if threads < 2:
        print("DDP comparison needs at least 2 threads; skipped")
        return
    best = {"one": float("inf"), "ddp": float("inf")}
    all_reduce, megabytes = float("inf"), 0.0
    for _ in range(rounds):
        model = new_model()
        best["one"] = min(best["one"], step_ms(training_step(model, model, size, BATCH), steps))
        with mp.Manager() as manager:
            out = manager.dict()
            mp.spawn(_ddp_worker, args=(threads, _free_port(), size, steps, out), nprocs=threads)
            best["ddp"] = min(best["ddp"], out["step"])
            all_reduce, megabytes = min(all_reduce, out["all_reduce"]), out["megabytes"]
    print(
        f"{size:>3}px  one process x {threads} threads {best['one']:6.0f} ms/step   "
        f"{threads} DDP processes x 1 thread {best['ddp']:6.0f} ms/step   "
        f"ddp/one = {best['ddp'] / best['one']:.2f}x   "
        f"(all-reduce of {megabytes:.0f} MB: {all_reduce:.0f} ms)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="2 steps at 32 px")
    args = parser.parse_args()
    steps, rounds = (2, 1) if args.smoke else (args.steps, args.rounds)
    sizes = (32,) if args.smoke else (64, 128)
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads, batch {BATCH}")
    for size in (32,) if args.smoke else (64, 96, 128, 160):
        small_map_stage_vs_channels_last(size, steps, rounds)
    for size in sizes:
        compile_vs_eager(size, steps, rounds)
    for size in sizes:
        ddp_vs_one_process(size, steps, rounds)


if __name__ == "__main__":
    main()
