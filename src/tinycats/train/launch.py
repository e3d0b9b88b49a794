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

Several hosts (a Modal cluster, cloud/cluster.py) run one launcher each, told where they
stand by `Nodes`: K launchers meet at node 0's address in torch's static rendezvous
(a TCPStore there; group rank = node rank, so global rank 0, the only writer, is always
on node 0: torch's c10d rendezvous would rank the nodes by host name and process id
instead), and the ranks of every node take rank 0's config (`main_config`).
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

from tinycats.config import TrainConfig, validate_config
from tinycats.errors import TinycatsError
from tinycats.storage import Store
from tinycats.train.distributed import Distributed, distributed_from_env, error_class
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
RENDEZVOUS_PORT = 29500
"""Node 0's rendezvous port in a multi-node job (torchrun's default master port)."""
RENDEZVOUS_TIMEOUT_S = 300
"""How long a node waits for the others to join: they start together, but node 0 may
first wait out a run lease (cloud/lease.py: 90 s) or refuse the call (a user error,
which leaves the others waiting this long)."""


class RankFailed(RuntimeError):
    """A rank died or raised: not a user error (a cloud call retries it), but the CLI
    says it in one line, since the run resumes from its checkpoint."""


@dataclass
class RankJob:
    """What every rank trains: picklable, handed to each spawned rank as it starts.
    `follow_main`: take rank 0's config (another node's), keeping this node's data folder."""

    config: TrainConfig
    store: Store
    run_id: str
    progress: bool | None
    follow_main: bool = False


@dataclass(frozen=True)
class Nodes:
    """Where this launcher stands: one of `count` hosts, number `rank`, the rendezvous at
    node 0's address `leader` on `port`. The default is one host, rendezvous on a free
    local port."""

    count: int = 1
    rank: int = 0
    leader: str = "localhost"
    port: int = RENDEZVOUS_PORT


def launch_training(
    nproc: int,
    job: RankJob,
    guard: Any,
    *,
    threads_per_rank: int | None = None,
    nodes: Nodes | None = None,
) -> TrainResult:
    """Train `job` in `nproc` ranks on this host (of `nodes.count`) and return the result of
    this host's first rank: rank 0's, the run's, on node 0.

    `guard` is polled while the ranks run (it may be a cloud SliceGuard whose deadline
    is checked when polled); a request is passed on to this host's ranks, and their
    per-step agreement stops every rank of every host. A user error in the ranks is
    raised here once; a rank that dies or fails (here, or on another host: its peers'
    collectives fail) raises RankFailed.
    """
    import multiprocessing

    nodes = nodes or Nodes()
    context = multiprocessing.get_context("spawn")
    stop, reason = context.Event(), context.Array("c", 200)
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(guard, stop, reason, done), daemon=True, name="stop-watcher"
    )
    watcher.start()
    threads = threads_per_rank or max(1, (os.cpu_count() or 1) // nproc)
    try:
        launch = elastic_launch(_launch_config(nproc, nodes, job.run_id), run_rank)
        results = launch(job, stop, reason, threads)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        how = failure.signal_name() if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        raise RankFailed(
            f"rank {rank} of {nproc * nodes.count} failed ({how}) and the launcher stopped "
            f"the others; run {job.run_id} resumes from its last committed checkpoint when "
            "trained again"
        ) from err
    finally:
        done.set()
        watcher.join()
    outcome = results[min(results)]  # keyed by global rank: this host's first
    if "error" in outcome:
        raise error_class(outcome["error_type"])(outcome["error"])
    return TrainResult(**outcome)


def _launch_config(nproc: int, nodes: Nodes, run_id: str) -> LaunchConfig:
    """`nproc` ranks per node, no restarts: a failed rank fails the launch (the run resumes
    from its checkpoint on the next launch, as after any interruption). One node meets
    itself on a free local port; K nodes meet at node 0 (static: node rank = group rank)."""
    if nodes.count == 1:
        rendezvous: dict[str, Any] = {
            "run_id": f"tinycats-{uuid.uuid4().hex[:12]}",
            "rdzv_backend": "c10d",
            "rdzv_endpoint": "localhost:0",
        }
    else:
        rendezvous = {
            "run_id": f"tinycats-{run_id}",  # the same on every node: the store's prefix
            "rdzv_backend": "static",
            "rdzv_endpoint": f"{nodes.leader}:{nodes.port}",
            "rdzv_configs": {"rank": nodes.rank, "timeout": RENDEZVOUS_TIMEOUT_S},
        }
    return LaunchConfig(
        min_nodes=nodes.count,
        max_nodes=nodes.count,
        nproc_per_node=nproc,
        **rendezvous,
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
                config = main_config(dist, job.config) if job.follow_main else job.config
                result = run_training(
                    config,
                    job.store,
                    job.run_id,
                    guard=guard,
                    progress=job.progress,
                    dist=dist,
                )
        except TinycatsError as err:
            return {"error": str(err), "error_type": type(err).__name__}
    return asdict(result)


def main_config(dist: Distributed, config: TrainConfig) -> TrainConfig:
    """Rank 0's config on every rank, each keeping its own `data.dir` (a host's mount of the
    data volume): rank 0 resolved the run (its checkpoint's config), the others follow."""
    shared = dist.broadcast_json(config.to_dict())
    return validate_config({**shared, "data": {**shared["data"], "dir": config.data.dir}})


def _relay(stop: Any, reason: Any, guard: PreemptionGuard) -> None:
    stop.wait()
    guard.request(reason.value.decode() or "stop")
