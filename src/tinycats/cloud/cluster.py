"""Several containers training one run: a Modal cluster (`modal.nodes` = K > 1).

modal 1.6.4's `@modal.clustered(size=K, rdma=...)` starts K containers together, each
with every GPU of its host (`H100:8`), gives the call's input to every one of them and
returns container 0's output. In a container, `modal.Cluster.from_context()` says which
one it is (`container_rank()`) and where the others are (`container_ips()`, in rank
order), from what the runtime got at start-up (`_cluster.py`, `TaskClusterHello`).

Each container runs the same launcher (train/launch.py) as node `container_rank()` of K,
with the rendezvous at container 0's address; the ranks then form one job of K × GPUs.
The roles differ only around the launcher:

- **container 0** is the call as in a single container (training.py): it holds the run's
  lease, resumes the run, relays rank 0's commits, bills the call (K containers) and,
  when the slice's time is up, spawns the continuation. Its launcher is node 0, so the
  job's rank 0, the only rank that writes, is on it;
- **container r > 0** (`follow_call`) never takes the lease and never commits: its ranks
  get an outputs store whose commits this container refuses (they are not rank 0, so
  they never try) and whose reloads it serves, the config rank 0 resolved
  (launch.main_config) and the checkpoint rank 0 picked (Distributed.same_checkpoint,
  named relative to the mount, reloaded if this container's view predates it). Its guard hears Modal's
  signals for this container only; the slice's deadline is container 0's alone, so
  only container 0 decides that a slice ended and continues the run.

A stop on any container reaches its launcher's guard and its ranks, and the per-step
agreement (an all-reduce over every rank of every node) stops them all at one step. A
container that dies closes its ranks' sockets: the others' next collective fails, their
launchers fail, and the call fails and is retried like any failed call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tinycats.cloud.jobs import returns_user_errors
from tinycats.cloud.resources import with_data_dir
from tinycats.cloud.training import InputInterrupted, outcome_of
from tinycats.storage import Store
from tinycats.train.launch import RENDEZVOUS_PORT, Nodes


def this_node(port: int = RENDEZVOUS_PORT) -> Nodes:
    """This container's place in its cluster, from the Modal client's cluster context
    (raises modal's InvalidError outside a clustered call)."""
    import modal

    cluster = modal.Cluster.from_context()
    addresses = cluster.container_ips("ipv4")
    return Nodes(len(addresses), cluster.container_rank(), addresses[0], port)


@dataclass
class FollowerOutputs:
    """The outputs volume as a follower container serves it to its ranks (through a
    CommitRelay): reloaded when a rank asks (to see a checkpoint committed after this
    container mounted), never published. Only container 0 commits: a second writer of
    the run would race its checkpoints (a volume is last-writer-wins per file)."""

    store: Store
    node: int

    @property
    def root(self) -> Path:
        return self.store.root

    def commit(self) -> None:
        raise RuntimeError(
            f"container {self.node} of the cluster may not commit the outputs volume; "
            "container 0 alone publishes the run"
        )

    def reload(self) -> None:
        self.store.reload()


@returns_user_errors
def follow_call(
    data: Store,
    outputs: Store,
    task: str,
    config_layer: dict[str, Any],
    run_id: str,
    guard: Any,
    nodes: Nodes,
    nproc: int,
) -> dict[str, Any]:
    """Container `nodes.rank` > 0 of a cluster call: launch this host's `nproc` ranks as
    node `nodes.rank` and say how the job ended here (Modal returns container 0's result,
    not this one)."""
    from tinycats.cloud.ranks import CommitRelay
    from tinycats.config import resolve_config
    from tinycats.train.launch import RankJob, launch_training

    data.reload()
    outputs.reload()
    # A carrier for this host's data folder: the ranks take rank 0's config (main_config).
    config = with_data_dir(resolve_config(task, config_layer, None), data.root)
    with CommitRelay(FollowerOutputs(outputs, nodes.rank)) as relayed:
        job = RankJob(config, relayed, run_id, False, follow_main=True)
        result = asdict(launch_training(nproc, job, guard, nodes=nodes))
    outcome = outcome_of(result, guard.reason)
    if outcome == "interrupted":
        raise InputInterrupted(
            f"container {nodes.rank} of run {run_id}'s cluster stopped at step "
            f"{result['step']} ({guard.reason}); container 0 committed the checkpoint"
        )
    return {**result, "status": outcome, "node": nodes.rank}
