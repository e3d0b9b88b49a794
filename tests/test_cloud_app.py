"""The Modal App builds offline from the config; resources, pins and remote paths are checked."""

from __future__ import annotations

import importlib
import re
from datetime import timedelta
from pathlib import Path

import modal
import pytest
from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags
from modal.retries import RetryManager
from modal.types import FileEntry, FileEntryType

from tinycats.cloud import jobs, pricing
from tinycats.cloud import resources as res
from tinycats.cloud.remote_volume import RemoteVolume, validate_remote_path
from tinycats.config import TASKS, ModalConfig, RetryConfig, build_config
from tinycats.errors import ConfigError, StorageError
from tinycats.gpus import modal_gpu_argument


@pytest.fixture
def app_module(monkeypatch):
    """modal_app imported with settings from the environment; restored afterwards."""
    module = importlib.import_module("tinycats.cloud.modal_app")

    def load(modal_cfg: ModalConfig, retries: RetryConfig):
        for key, value in res.settings_env(modal_cfg, retries).items():
            monkeypatch.setenv(key, value)
        return importlib.reload(module)

    yield load
    monkeypatch.delenv(res.SETTINGS_ENV, raising=False)
    importlib.reload(module)


def test_app_builds_offline_with_defaults(app_module) -> None:
    m = app_module(ModalConfig(), RetryConfig())
    assert isinstance(m.app, modal.App) and m.app.name == "tinycats"
    assert isinstance(m.image, modal.Image)
    assert isinstance(m.Trainer, modal.Cls) and isinstance(m.evaluate, modal.Function)
    spec = m.evaluate._spec_
    assert spec.gpus == "T4" and spec.cpu == 4.0 and spec.memory == 16384
    assert set(spec.volumes) == {"/data", "/outputs"}
    assert m.trainer_options["timeout"] == 60 * 60
    assert m.trainer_options["enable_memory_snapshot"] is True
    assert m.baseline_options["enable_memory_snapshot"] is False
    assert "retries" not in m.baseline_options  # the bench baseline never retries
    retries = m.trainer_options["retries"]
    assert (retries.max_retries, retries.backoff_coefficient) == (3, 2.0)
    assert (retries.initial_delay, retries.max_delay) == (
        timedelta(seconds=10),
        timedelta(seconds=60),
    )


def test_app_follows_the_config(app_module) -> None:
    cfg = build_config(
        "dit",
        overrides=[
            "modal.gpu='H100'",
            "modal.timeout_minutes=240",
            "modal.data_volume='cats-data'",
            "modal.outputs_volume='cats-out'",
            "modal.memory_snapshot=false",
        ],
    )
    m = app_module(cfg.modal, cfg.retries)
    spec = m.Trainer._get_class_service_function()._spec_
    assert spec.gpus == "H100"
    assert m.MODAL_CONFIG.data_volume == "cats-data" and m.trainer_options["timeout"] == 240 * 60
    assert m.trainer_options["enable_memory_snapshot"] is False
    retries = m.trainer_options["retries"]  # the DiT policy of the original plan
    assert retries.max_retries == 2 and retries.initial_delay == timedelta(seconds=30)
    assert TASKS["dit"].defaults["retries"]["max_retries"] == 2


def test_snapshot_hooks_heavy_imports_before_cuda_after(app_module) -> None:
    m = app_module(ModalConfig(), RetryConfig())
    user_cls = m.Trainer._get_user_cls()
    before = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    after = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    methods = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.CALLABLE_INTERFACE)
    assert set(before) == {"import_heavy"} and set(after) == {"warm_cuda"}
    assert {"train", "ping"} <= set(methods)


def test_call_options_come_from_the_config() -> None:
    cfg = build_config("classifier", overrides=["modal.timeout_minutes=90"])
    options = res.call_options(cfg, gpu="A100")
    assert options["gpu"] == "A100" and options["timeout"] == 90 * 60
    assert options["retries"] == {
        "max_retries": 3,
        "backoff_coefficient": 2.0,
        "initial_delay": 10.0,
        "max_delay": 60.0,
    }
    modal.Retries(**options["retries"])  # the client accepts them
    with pytest.raises(ConfigError, match="unknown GPU"):
        res.call_options(cfg, gpu="K80")


def test_original_plans_max_delay_is_rejected_by_modal_and_by_the_config() -> None:
    with pytest.raises(modal.exception.InvalidError, match="1-60"):
        modal.Retries(max_retries=3, max_delay=300)
    with pytest.raises(ConfigError, match="max_delay"):
        build_config("classifier", overrides=["retries.max_delay=300"])


@pytest.mark.parametrize(
    "policy",
    [RetryConfig(), RetryConfig(max_retries=2, initial_delay=30.0), RetryConfig(initial_delay=0.2)],
)
def test_retry_delays_match_modals_retry_manager(policy: RetryConfig) -> None:
    proto = modal.Retries(**res.retry_kwargs(policy))._to_proto()
    for n, delay in enumerate(res.retry_delays(policy), 1):
        modal_delay = min(RetryManager._retry_delay_ms(n, proto), proto.max_delay_ms) / 1000
        assert delay == pytest.approx(modal_delay)


def test_attempt_budget_leaves_time_to_checkpoint() -> None:
    assert res.attempt_budget_seconds(3600) == 3600 - 180
    assert res.attempt_budget_seconds(600) == 540
    assert res.attempt_budget_seconds(60) == 30


def test_requirements_are_pinned_and_torch_pair_matches() -> None:
    pins = res.read_requirements()
    assert {"torch", "torchvision", "numpy", "safetensors", "pydantic", "pillow"} <= set(pins)
    res.check_torch_pair(pins)
    for line in res.REQUIREMENTS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "==" in line, line


def test_requirement_checks_catch_mistakes(tmp_path: Path) -> None:
    loose = tmp_path / "req.txt"
    loose.write_text("torch>=2.5\n")
    with pytest.raises(ConfigError, match="not pinned"):
        res.read_requirements(loose)
    with pytest.raises(ConfigError, match=r"needs torchvision 0\.20"):
        res.check_torch_pair({"torch": "2.5.1", "torchvision": "0.19.1"})
    res.check_torch_pair({"torch": "2.5.1", "torchvision": "0.20.1"})


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", ""),
        ("checkpoints/dit", "checkpoints/dit"),
        ("/runs/a.json", "runs/a.json"),
        ("./a//b/", "a/b"),
    ],
)
def test_remote_paths_normalise(path: str, expected: str) -> None:
    assert validate_remote_path(path) == expected


@pytest.mark.parametrize(
    "path", ["../etc", "/../../etc/passwd", "a/../../b", "a/..", "a\\b", "a\x00"]
)
def test_remote_paths_that_escape_are_rejected(path: str) -> None:
    with pytest.raises(StorageError, match=r"\.\.|NUL or backslash"):
        validate_remote_path(path)


class SdkVolume:
    """The four volume SDK calls RemoteVolume uses, over a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def listdir(self, path: str, *, recursive: bool = False) -> list[FileEntry]:
        base = self.root / path.strip("/")
        if not base.exists():
            raise FileNotFoundError(path)
        items = [base] if base.is_file() else base.rglob("*") if recursive else base.iterdir()
        return [
            FileEntry(
                path=str(p.relative_to(self.root)),
                type=FileEntryType.DIRECTORY if p.is_dir() else FileEntryType.FILE,
                mtime=int(p.stat().st_mtime),
                size=p.stat().st_size if p.is_file() else 0,
            )
            for p in items
        ]

    def read_file(self, path: str):
        yield from [(self.root / path).read_bytes()]

    def remove_file(self, path: str, recursive: bool = False) -> None:
        target = self.root / path
        if target.is_dir():
            assert recursive
            import shutil

            shutil.rmtree(target)
        else:
            target.unlink()

    def batch_upload(self, force: bool = False):
        volume = self

        class Batch:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def put_file(self, local, remote):
                dest = volume.root / str(remote).lstrip("/")
                if dest.exists() and not force:
                    raise FileExistsError(str(remote))
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(Path(local).read_bytes())

            def put_directory(self, local, remote):
                for p in Path(local).rglob("*"):
                    if p.is_file():
                        self.put_file(p, f"{remote}/{p.relative_to(local)}")

        return Batch()


def test_remote_volume_put_ls_get_rm(tmp_path: Path) -> None:
    vol = RemoteVolume(SdkVolume(tmp_path / "vol"), "test-vol")
    (tmp_path / "vol").mkdir()
    step = tmp_path / "step_00000004"
    step.mkdir()
    (step / "meta.json").write_text("{}")
    (step / "model.safetensors").write_bytes(b"w" * 10)
    assert vol.put(step, "/checkpoints/x/step_00000004") == "/checkpoints/x/step_00000004"
    with pytest.raises(StorageError, match="--force"):
        vol.put(step / "meta.json", "checkpoints/x/step_00000004/meta.json")
    listed = vol.ls("checkpoints/x/step_00000004")
    assert [(e.path.split("/")[-1], e.size) for e in listed] == [
        ("meta.json", 2),
        ("model.safetensors", 10),
    ]
    assert vol.read_bytes("/checkpoints/x/step_00000004/meta.json") == b"{}"
    with pytest.raises(StorageError, match="only after it commits"):
        vol.read_bytes("checkpoints/x/missing.json")
    written = vol.get("checkpoints/x", tmp_path / "back")
    assert sorted(p.name for p in written) == ["meta.json", "model.safetensors"]
    assert (tmp_path / "back" / "step_00000004" / "model.safetensors").read_bytes() == b"w" * 10
    [single] = vol.get("checkpoints/x/step_00000004/meta.json", tmp_path / "back")
    assert single == tmp_path / "back" / "meta.json"
    with pytest.raises(StorageError, match="volume root"):
        vol.rm("/")
    with pytest.raises(StorageError, match=r"\.\."):
        vol.rm("checkpoints/../..", recursive=True)
    vol.rm("checkpoints/x", recursive=True)
    with pytest.raises(StorageError, match="only after it commits"):
        vol.ls("checkpoints/x")


@pytest.mark.parametrize(
    ("spec", "argument"),
    [
        ("t4", "T4"),
        ("H200", "H200"),
        ("B200", "B200"),
        ("h100:4", "H100:4"),
        ("H100, A100-80GB", ["H100", "A100-80GB"]),
    ],
)
def test_gpu_requests_as_modal_takes_them(spec: str, argument) -> None:
    assert modal_gpu_argument(spec) == argument
    cfg = build_config("classifier", overrides=[f"modal.gpu={spec!r}"])
    options = res.call_options(cfg)
    # with_options takes one string (modal 1.6.4 _Function.with_options): a fallback list
    # is left to the deployed class, which takes the list.
    assert options.get("gpu") == (argument if isinstance(argument, str) else None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("V100", "unknown GPU 'V100'"),
        ("H100:9", "1 to 8 per container"),
        ("A10:5", "1 to 4 per container"),
        ("H100:x", "whole number"),
        ("H100,,T4", "empty entry"),
        ("T4,t4", "names a type twice"),
    ],
)
def test_bad_gpu_requests_are_one_line_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config("classifier", overrides=[f"modal.gpu={spec!r}"])


def test_a_fallback_list_is_deployed_on_the_class(app_module) -> None:
    cfg = build_config("dit", overrides=["modal.gpu='H100,A100-80GB'"])
    m = app_module(cfg.modal, cfg.retries)
    assert m.Trainer._get_class_service_function()._spec_.gpus == ["H100", "A100-80GB"]
    assert m.evaluate._spec_.gpus == ["H100", "A100-80GB"]


def test_idle_gpus_scale_down_and_preparation_gets_no_gpu(app_module) -> None:
    m = app_module(ModalConfig(scaledown_window_s=15), RetryConfig())
    assert m.trainer_options["scaledown_window"] == 15 == m.gpu_function_options["scaledown_window"]
    modal.App().function(scaledown_window=15)  # within the client's 2-3600 s
    assert m.prepare_data._spec_.gpus is None and m.prepare_data._spec_.cpu == res.PREPARE_CPU
    with pytest.raises(ConfigError, match="scaledown_window_s"):
        build_config("classifier", overrides=["modal.scaledown_window_s=1"])


def test_modal_run_has_a_local_entrypoint(app_module) -> None:
    m = app_module(ModalConfig(), RetryConfig())
    assert type(m.main).__name__ == "LocalEntrypoint" and m.main.app is m.app
    assert m.main.info.raw_f.__name__ == "main"


def test_the_image_installs_a_complete_lock_with_a_pinned_uv() -> None:
    lock = {}
    for line in res.LOCK_FILE.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            lock[name.lower().replace("_", "-")] = version
    assert res.read_requirements().items() <= lock.items()  # every direct pin, unchanged
    assert {"nvidia-cudnn-cu13", "triton", "sympy", "jinja2"} <= lock.keys()  # torch's deps
    assert f"uv {res.UV_VERSION}" in res.LOCK_FILE.read_text().splitlines()[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+", res.UV_VERSION)


def test_cost_estimate_prices_the_dearest_fallback_and_the_host() -> None:
    one_hour = pricing.estimate("T4", cpu=4.0, memory_mb=16384, seconds=3600)
    assert one_hour.gpu_usd == pytest.approx(0.5904)
    assert one_hour.host_usd == pytest.approx(4 * 0.0000131 * 3600 + 16 * 0.00000222 * 3600)
    listed = pricing.estimate("A100-80GB,H100:2", cpu=1.0, memory_mb=1024, seconds=1800)
    assert listed.gpu == "H100:2" and listed.gpu_usd == pytest.approx(3.9492)
    assert pricing.estimate("RTX-PRO-6000", 1.0, 1024, 60).total_usd is None
    assert pricing.gpu_type_of_device("NVIDIA A100-SXM4-80GB") == "A100-80GB"
    assert pricing.gpu_type_of_device("NVIDIA A100-SXM4-40GB") == "A100-40GB"
    assert pricing.gpu_type_of_device("NVIDIA A10G") == "A10G"
    assert pricing.gpu_type_of_device("NVIDIA H200") == "H200"
    assert pricing.gpu_type_of_device("Tesla T4") == "T4"


def test_a_gpu_function_without_cuda_stops_at_once() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the check passes here by design")
    with pytest.raises(jobs.GpuUnavailable, match="sees no CUDA device"):
        jobs.require_cuda()


def test_a_continuation_is_spawned_with_the_runs_own_settings(app_module, monkeypatch) -> None:
    """The App deployed now may carry other defaults: the next slice takes the run's."""
    m = app_module(ModalConfig(gpu="T4", timeout_minutes=10), RetryConfig(max_retries=5))
    seen: dict[str, object] = {}

    class FakeTrainer:
        def with_options(self, **options):
            seen.update(options)
            return self

        def __call__(self):
            return self

        @property
        def train(self):
            return self

        def spawn(self, *args):
            seen["args"] = args
            return type("Call", (), {"object_id": "fc-next"})()

    monkeypatch.setattr(m, "Trainer", FakeTrainer())
    run_config = build_config(
        "dit", overrides=["modal.gpu='H100'", "modal.timeout_minutes=90", "retries.max_retries=1"]
    )
    assert m.spawn_continuation(m.Trainer, "dit", "r", run_config) == "fc-next"
    assert seen["gpu"] == "H100" and seen["timeout"] == 90 * 60
    assert seen["retries"].max_retries == 1 and seen["args"] == ("dit", {}, "r")


def test_a_cluster_costs_its_containers() -> None:
    one = pricing.estimate("H100:8", cpu=8.0, memory_mb=65536, seconds=3600)
    two = pricing.estimate("H100:8", cpu=8.0, memory_mb=65536, seconds=3600, nodes=2)
    assert one.gpu_usd == pytest.approx(8 * 3.9492) and two.nodes == 2
    assert two.gpu_usd == pytest.approx(2 * one.gpu_usd)
    assert two.host_usd == pytest.approx(2 * one.host_usd)
    assert two.total_usd == pytest.approx(2 * one.total_usd)


def test_nodes_build_a_clustered_trainer_of_whole_hosts(app_module, monkeypatch) -> None:
    """`modal.nodes=2` adds ClusterTrainer: `@modal.clustered(size=2, rdma=...)` under
    `@app.cls(gpu="H100:8")`, one method; the App without nodes has none."""
    built: dict[str, dict] = {}
    from_local = modal._functions._Function._from_local

    def spy(info, *args, **kwargs):
        built[info.function_name] = kwargs
        return from_local(info, *args, **kwargs)

    monkeypatch.setattr(modal._functions._Function, "_from_local", staticmethod(spy))
    cfg = build_config("dit", overrides=["modal.gpu='H100:8'", "modal.nodes=2", "modal.rdma=false"])
    m = app_module(cfg.modal, cfg.retries)
    assert built["ClusterTrainer.*"]["cluster_size"] == 2
    assert built["ClusterTrainer.*"]["rdma"] is False
    assert built["Trainer.*"]["cluster_size"] is None
    spec = m.ClusterTrainer._get_class_service_function()._spec_
    assert spec.gpus == "H100:8"
    methods = _find_partial_methods_for_user_cls(
        m.ClusterTrainer._get_user_cls(), _PartialFunctionFlags.CALLABLE_INTERFACE
    )
    assert set(methods) == {"train"}
    assert m.trainer_class(2) is m.ClusterTrainer and m.trainer_class(1) is m.Trainer
    with pytest.raises(ConfigError, match=r"built for modal\.nodes=2, not 3"):
        m.trainer_class(3)
    assert app_module(ModalConfig(), RetryConfig()).ClusterTrainer is None


@pytest.mark.parametrize("gpu", ["T4", "H100:4", "H100:8,A100-80GB:8"])
def test_a_cluster_refuses_containers_of_part_of_a_host(gpu: str) -> None:
    with pytest.raises(ConfigError, match=r"every GPU of a host; set modal\.gpu to one type"):
        build_config("dit", overrides=[f"modal.gpu='{gpu}'", "modal.nodes=2"])
    with pytest.raises(ConfigError, match=r"modal\.nodes=0: Input should be greater than"):
        build_config("dit", overrides=["modal.nodes=0"])
    assert build_config("dit", overrides=["modal.gpu='A10:4'", "modal.nodes=3"]).modal.nodes == 3
