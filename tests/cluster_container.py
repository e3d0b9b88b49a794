"""One container of a fake Modal cluster, as a process of its own (test_cloud_cluster.py).

`python tests/cluster_container.py SPEC.json` sets the Modal client's cluster context the
way modal 1.6.4's runtime does at start-up (`modal._cluster.current_cluster_context`, a
`ClusterContext` from `TaskClusterHello`; every container of the cluster on 127.0.0.1
here), mounts the fake volumes, and runs what `ClusterTrainer.train` runs in that
container: `train_call` as node 0 (lease, relay, commits) or `follow_call` as node r > 0.
It writes what the test checks to SPEC's "report": the result (or the error), and what
the container committed or would publish at its exit.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from modal import _cluster

from fake_volume import FakeDict, FakeVolume
from tinycats.cloud import cluster, jobs, training
from tinycats.cloud.lease import RunLease
from tinycats.storage import VolumeStore
from tinycats.train import PreemptionGuard


def main(spec: dict) -> dict:
    rank, count = spec["rank"], spec["count"]
    _cluster.current_cluster_context = _cluster.ClusterContext(
        rank=rank,
        cluster_id="cu-fake",
        container_ips=["::1"] * count,
        container_ipv4_ips=["127.0.0.1"] * count,
        fabric_ids=[],
    )
    nodes = cluster.this_node(port=spec["port"])
    name = f"{spec['call']}-node{rank}"
    data_vol, out_vol = FakeVolume(Path(spec["data"])), FakeVolume(Path(spec["outputs"]))
    report: dict = {"node": [nodes.count, nodes.rank, nodes.leader]}
    with data_vol.container(name) as data, out_vol.container(name) as box:
        stores = VolumeStore(data, data.path), VolumeStore(box, box.path)
        leases = FakeDict()  # container 0's view of the App's lease Dict
        with PreemptionGuard(signals=jobs.GUARD_SIGNALS) as guard:
            try:
                if nodes.rank == 0:
                    report["result"] = training.train_call(
                        *stores,
                        "classifier",
                        spec["layer"],
                        spec["run"],
                        guard,
                        started=time.monotonic(),
                        continue_run=lambda config: f"{spec['call']}-next",
                        call_id=spec["call"],
                        lease=lambda run: RunLease(leases, run, spec["call"]),
                        nproc=1,
                        nodes=nodes,
                    )
                else:
                    report["result"] = cluster.follow_call(
                        *stores, "classifier", spec["layer"], spec["run"], guard, nodes, 1
                    )
            except BaseException as err:  # the test reads it from the report
                report["error"] = [type(err).__name__, str(err)]
        report["lease"] = RunLease(leases, spec["run"], "reader").head()
        report["commits"], report["unpublished"] = box.commits, box.unpublished()
    return report


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["report"]).write_text(json.dumps(main(spec)))
