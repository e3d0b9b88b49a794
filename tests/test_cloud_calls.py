"""Calls already made: a run followed across its calls, and every remote failure as one line.

`modal.FunctionCall.from_id` is replaced by calls that behave as the 1.6.4 client's do:
`get` raises the builtin TimeoutError while the call runs (`_Invocation.poll_function`),
OutputExpiredError once its output is gone, and the remote exception when it failed.
"""

from __future__ import annotations

from typing import Any

import modal
import pytest

from tinycats.cloud import calls, client
from tinycats.config import build_config
from tinycats.errors import ConfigError


class FakeLogs:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def tail(self, entries: int):
        for line in self.lines[-entries:]:
            yield type("Entry", (), {"message": line})()

    def stream(self):
        yield from self.tail(len(self.lines))


class FakeCall:
    def __init__(self, outcome: Any, logs: list[str] | None = None) -> None:
        self.outcome, self.logs, self.cancelled = outcome, FakeLogs(logs or []), False

    def get(self, timeout: float | None = None) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self, terminate_containers: bool = False) -> None:
        self.cancelled = True


@pytest.fixture
def modal_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeCall]:
    table: dict[str, FakeCall] = {}

    def from_id(call_id: str) -> FakeCall:
        if call_id not in table:
            raise modal.exception.NotFoundError(f"function call {call_id} not found")
        return table[call_id]

    monkeypatch.setattr(modal.FunctionCall, "from_id", from_id)
    return table


def done(step: int, status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {"run_id": "r", "status": status, "step": step, "max_steps": 30, "metrics": {}, **extra}


def test_a_run_is_followed_across_its_calls(modal_calls) -> None:
    modal_calls["fc-1"] = FakeCall(done(10, "continued", next_call_id="fc-2"))
    modal_calls["fc-2"] = FakeCall(done(20, "continued", next_call_id="fc-3"))
    modal_calls["fc-3"] = FakeCall(done(30, checkpoint="c"))
    seen: list[str] = []
    finished, value = calls.follow("fc-1", on_next=lambda v, call_id: seen.append(call_id))
    assert finished and value["step"] == 30 and seen == ["fc-2", "fc-3"]


def test_a_running_call_is_not_done(modal_calls) -> None:
    modal_calls["fc-1"] = FakeCall(done(10, "continued", next_call_id="fc-2"))
    modal_calls["fc-2"] = FakeCall(TimeoutError())
    assert calls.follow("fc-1", timeout=0) == (False, "fc-2")


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (modal.exception.OutputExpiredError(), "has expired"),
        (RuntimeError("CUDA error: out of memory\nmore"), "failed: RuntimeError: more"),
        ({"status": "error", "error": "unknown breed 'Lion'"}, "unknown breed 'Lion'"),
    ],
)
def test_remote_failures_are_one_line_errors(modal_calls, outcome, message) -> None:
    modal_calls["fc-1"] = FakeCall(outcome)
    with pytest.raises(calls.CloudError, match=message) as info:
        calls.follow("fc-1")
    assert "\n" not in str(info.value)


def test_a_run_id_resolves_to_its_newest_call(monkeypatch, modal_calls) -> None:
    ledger = {"run_id": "r", "calls": [{"call_id": "fc-1"}, {"call_id": "fc-2"}]}
    monkeypatch.setattr(calls, "read_remote_json", lambda volume, path: ledger)
    assert calls.resolve_call("r", "vol") == "fc-2"
    assert calls.resolve_call("fc-9", "vol") == "fc-9"
    monkeypatch.setattr(calls, "read_remote_json", lambda volume, path: None)
    with pytest.raises(calls.CloudError, match="no cloud call recorded for run 'r'"):
        calls.resolve_call("r", "vol")


def test_logs_and_cancel_through_the_cli(monkeypatch, modal_calls, cli) -> None:
    modal_calls["fc-1"] = FakeCall(TimeoutError(), logs=["step 1/30\n", "step 2/30\n"])
    monkeypatch.setattr(calls, "read_remote_json", lambda v, p: {"calls": [{"call_id": "fc-1"}]})
    out = cli("cloud", "logs", "my-run", "-n", "1")
    assert out.returncode == 0 and out.stdout == "step 2/30\n"
    out = cli("cloud", "cancel", "my-run")
    assert out.returncode == 0 and modal_calls["fc-1"].cancelled
    out = cli("cloud", "result", "fc-1")
    assert out.returncode == 1 and "still running" in out.stdout


def test_cloud_result_of_an_expired_output_is_one_line_exit_2(modal_calls, cli) -> None:
    modal_calls["fc-old"] = FakeCall(modal.exception.OutputExpiredError())
    result = cli("cloud", "result", "fc-old")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "fc-old has expired" in result.stderr


def test_the_client_refuses_a_run_of_another_task_before_launch(monkeypatch) -> None:
    record = {"run_id": "r", "task": "classifier", "config": {"data": {"source": "synthetic"}}}
    monkeypatch.setattr(calls, "read_remote_json", lambda volume, path: record)
    config = build_config("dit")
    with pytest.raises(ConfigError, match="is a classifier run, not dit"):
        client.check_run(config, "r", "dit")
    with pytest.raises(ConfigError, match="is a classifier run, not dit"):
        client.sample(config, "r", {"breed": "all"}, gpu=None)


def test_the_client_refuses_an_unknown_breed_or_run_before_launch(monkeypatch) -> None:
    record = {"task": "dit", "config": {"data": {"source": "synthetic", "synthetic_classes": 2}}}
    monkeypatch.setattr(calls, "read_remote_json", lambda volume, path: record)
    config = build_config("dit")
    with pytest.raises(ConfigError, match=r"unknown breed 'Lion'; choose one of 00_"):
        client.sample(config, "r", {"breed": "Lion"}, gpu=None)
    monkeypatch.setattr(calls, "read_remote_json", lambda volume, path: None)
    with pytest.raises(ConfigError, match="no run 'r' on volume tinycats-outputs"):
        client.evaluate(build_config("classifier"), "r", split="test", which="best", gpu=None)


def test_the_estimate_before_launch_names_the_slice_price() -> None:
    line = client.estimate_line(build_config("classifier", overrides=["modal.gpu='H100:2'"]))
    assert line.startswith("at most $") and "per 60-minute slice on H100:2" in line
    assert line.endswith("(every GPU of the container trains: one data-parallel rank each)")
    single = client.estimate_line(build_config("classifier", overrides=["modal.gpu='H100'"]))
    assert "rank" not in single


def test_a_global_batch_the_gpus_cannot_share_is_refused_before_launch(monkeypatch) -> None:
    monkeypatch.setattr(calls, "read_remote_json", lambda volume, path: None)
    odd = build_config("classifier", overrides=["modal.gpu='H100:4'", "optim.batch_size=30"])
    with pytest.raises(ConfigError, match=r"batch_size=30 does not split over the 4 GPUs"):
        client.check_run(odd, "r", "classifier")
    even = build_config("classifier", overrides=["modal.gpu='H100:4'", "optim.batch_size=32"])
    assert client.check_run(even, "r", "classifier") is None
    cluster = ["modal.gpu='H100:8'", "modal.nodes=3", "optim.batch_size=64"]
    with pytest.raises(ConfigError, match=r"64 does not split over the 24 GPUs of 3 containers"):
        client.check_run(build_config("classifier", overrides=cluster), "r", "classifier")


def test_the_estimate_of_a_cluster_counts_every_container() -> None:
    one = client.estimate_line(build_config("dit", overrides=["modal.gpu='H100:8'"]))
    line = client.estimate_line(
        build_config("dit", overrides=["modal.gpu='H100:8'", "modal.nodes=2"])
    )
    assert "slice on a cluster of 2 × H100:8" in line
    price = [float(text.split()[2].lstrip("$")) for text in (one, line)]
    assert price[1] == pytest.approx(2 * price[0], abs=0.01)


def test_cloud_train_nodes_is_validated_before_anything_starts(cli) -> None:
    result = cli("cloud", "train", "dit", "--nodes", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid config value modal.nodes=0: Input should be greater than or equal to 1"
    ]
    result = cli("cloud", "train", "dit", "--nodes", "2", "--gpu", "H100:4")
    assert result.returncode == 2 and "every GPU of a host" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cloud_prepare_builds_what_the_shipped_gpu_configs_need(monkeypatch, cli) -> None:
    prepared: list[Any] = []

    def prepare(config):
        prepared.append(config)
        return {"prepared": "x", "cached": False, "files": 3}

    monkeypatch.setattr(client, "prepare", prepare)
    out = cli("cloud", "prepare")
    assert out.returncode == 0, out.stderr
    assert [p.name for p in client.shipped_gpu_configs()] == [
        "classifier-gpu.toml",
        "dit-gpu.toml",
    ]
    assert [(c.data.source, c.data.image_size, c.data.stored_size) for c in prepared] == [
        ("oxford", 224, 256),
        ("oxford", 128, 128),
    ]


def test_cloud_train_spawns_the_clustered_trainer_for_several_nodes(monkeypatch) -> None:
    """`--nodes 2` deploys the App built for two nodes and spawns its ClusterTrainer; one
    node spawns the Trainer, with the same per-call options."""
    import contextlib
    from types import SimpleNamespace

    spawned: list[tuple[str, dict, tuple]] = []

    class FakeClass:
        def __init__(self, name: str) -> None:
            self.name, self.options = name, {}

        def with_options(self, **options):
            self.options = options
            return self

        def __call__(self):
            return SimpleNamespace(train=SimpleNamespace(spawn=self.spawn))

        def spawn(self, *args):
            spawned.append((self.name, self.options, args))
            return SimpleNamespace(object_id="fc-1", get_dashboard_url=lambda: None)

    def fake_deployed(config):
        prepare = SimpleNamespace(remote=lambda cfg: {"status": "ok", "cached": True})

        def trainer_class(nodes: int) -> FakeClass:  # the App is built with config's nodes
            assert nodes in (1, config.modal.nodes)
            return FakeClass("ClusterTrainer" if nodes > 1 else "Trainer")

        module = SimpleNamespace(prepare_data=prepare, trainer_class=trainer_class)
        return contextlib.nullcontext(module)

    monkeypatch.setattr(calls, "read_remote_json", lambda volume, path: None)
    monkeypatch.setattr(client, "deployed", fake_deployed)
    for nodes in (2, 1):
        cfg = build_config("dit", overrides=["modal.gpu='H100:8'", f"modal.nodes={nodes}"])
        launched = client.train(cfg, {"task": "dit"}, "r", detach=True)
        assert launched["call_id"] == "fc-1"
    [(cluster, options, args), (single, _, _)] = spawned
    assert (cluster, single) == ("ClusterTrainer", "Trainer")
    assert options["gpu"] == "H100:8" and args == ("dit", {"task": "dit"}, "r")
