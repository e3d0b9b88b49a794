"""`--nproc N`: one data-parallel run in N processes on this machine, with torch's own launcher.

The ranks are started by torch's elastic launcher (`torch.distributed.launcher`, what
`torchrun --standalone` runs): it picks the rendezvous port, sets RANK/WORLD_SIZE/
LOCAL_RANK for each rank, and watches them: when one dies, it stops the others
(SIGTERM, then SIGKILL after `SHUTDOWN_GRACE_S`) and the launch fails, so a dead rank
ends the job instead of leaving the others waiting in a collective. The run then
resumes from its last committed checkpoint like any interrupted run.

Stops go through this process: its PreemptionGuard keeps SIGINT and SIGTERM (the
launcher is told to leave them alone), and a watcher thread passes a stop on to the
ranks through a shared event, with its reason. The ranks also hear a terminal's Ctrl-C
themselves (they share its process group); either way each rank sees one request, and
the ranks agree on the step to stop at (engine.py).
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from tinycats.config import TrainConfig
from tinycats.errors import TinycatsError
from tinycats.storage import Store
from tinycats.train.distributed import distributed_from_env, error_class
from tinycats.train.engine import TrainResult
from tinycats.train.preemption import PreemptionGuard
from tinycats.train.run import run_training

SHUTDOWN_GRACE_S = 30
"""From the launcher's SIGTERM to a surviving rank until its SIGKILL: the time a rank
has to notice the failure and exit (torchrun's default)."""
WATCH_INTERVAL_S = 0.1
LAUNCHER_SIGNALS = "SIGHUP,SIGQUIT"
"""Signals the launcher itself turns into a shutdown; SIGINT and SIGTERM stay with the
guard, which stops the ranks with a checkpoint instead."""


class RankFailed(RuntimeError):
    """A rank died or raised: not a user error (a cloud call retries it), but the CLI
    says it in one line, since the run resumes from its checkpoint."""


@dataclass
class RankJob:
    """What every rank trains: picklable, handed to each spawned rank as it starts."""

    config: TrainConfig
    store: Store
    run_id: str
    progress: bool | None


def launch_training(
    nproc: int, job: RankJob, guard: Any, *, threads_per_rank: int | None = None
) -> TrainResult:
    """Train `job` in `nproc` ranks and return rank 0's result.

    `guard` is polled while the ranks run (it may be a cloud SliceGuard whose deadline
    is checked when polled); a request is passed on to every rank. A user error in the
    ranks is raised here once; a rank that dies or fails raises RankFailed.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    stop, reason = context.Event(), context.Array("c", 200)
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(guard, stop, reason, done), daemon=True, name="stop-watcher"
    )
    watcher.start()
    threads = threads_per_rank or max(1, (os.cpu_count() or 1) // nproc)
    try:
        results = elastic_launch(_launch_config(nproc), run_rank)(job, stop, reason, threads)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        how = failure.signal_name() if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        raise RankFailed(
            f"rank {rank} of {nproc} failed ({how}) and the launcher stopped the others; "
            f"run {job.run_id} resumes from its last committed checkpoint when trained again"
        ) from err
    finally:
        done.set()
        watcher.join()
    outcome = results[0]
    if "error" in outcome:
        raise error_class(outcome["error_type"])(outcome["error"])
    return TrainResult(**outcome)


def _launch_config(nproc: int) -> LaunchConfig:
    """One node, `nproc` ranks, no restarts: a failed rank fails the launch (the run
    resumes from its checkpoint on the next launch, as after any interruption)."""
    return LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"tinycats-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=WATCH_INTERVAL_S,
        start_method="spawn",
        signals_to_handle=LAUNCHER_SIGNALS,
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )


def _watch(guard: Any, stop: Any, reason: Any, done: threading.Event) -> None:
    """Pass the launcher's stop request on to the ranks (polling also ticks a deadline)."""
    while not done.wait(WATCH_INTERVAL_S):
        if guard.requested:
            reason.value = (guard.reason or "stop").encode()[:199]
            stop.set()
            return


def run_rank(job: RankJob, stop: Any, reason: Any, threads: int) -> dict[str, Any]:
    """One rank (a spawned process): join the job, train, and return the result as a dict
    (rank 0's is the run's); a user error comes back as a value, the same on every rank."""
    if "OMP_NUM_THREADS" not in os.environ:  # N ranks must not each take every core
        torch.set_num_threads(threads)
    with PreemptionGuard() as guard:
        relay = threading.Thread(target=_relay, args=(stop, reason, guard), daemon=True)
        relay.start()
        try:
            with distributed_from_env() as dist:
                result = run_training(
                    job.config,
                    job.store,
                    job.run_id,
                    guard=guard,
                    progress=job.progress,
                    dist=dist,
                )
        except TinycatsError as err:
            return {"error": str(err), "error_type": type(err).__name__}
    return asdict(result)


def _relay(stop: Any, reason: Any, guard: PreemptionGuard) -> None:
    stop.wait()
    guard.request(reason.value.decode() or "stop")
