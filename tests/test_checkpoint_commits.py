"""One commit per published checkpoint, and none beside the writer while it holds files.

On a Modal volume (modal 1.6.4) a commit also reloads, and a reload is refused while a
file under the mount is open: a commit from the training thread while the checkpoint
writer is mid-save fails, and three commits per checkpoint cost three round trips.
"""

from __future__ import annotations

import threading

from fake_volume import FakeVolume
from test_cloud_retries import TINY
from tinycats.config import apply_overrides, build_config
from tinycats.storage import CheckpointManager, LocalStore, VolumeStore
from tinycats.storage.metrics_log import MetricsLog
from tinycats.train import PreemptionGuard
from tinycats.train.run import build_trainer


def test_each_checkpoint_is_one_commit_by_the_writer_with_its_preview(tmp_path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("trainer")
    layer = apply_overrides(
        {"task": "dit"},
        [*TINY, "optim.max_steps=8", "retention.keep_last=1", "dit.preview_per_class=1"],
    )
    layer["data"]["dir"] = str(tmp_path / "data")  # the data volume is another volume
    config = build_config("dit", base=layer)
    commits: list[tuple[str, bool]] = []

    class Recording(VolumeStore):
        def commit(self) -> None:
            pending = trainer.writer._pending
            in_flight = pending is not None and not pending.done()
            commits.append((threading.current_thread().name, in_flight))
            super().commit()

    trainer = build_trainer(config, Recording(box, box.path), "r", progress=False)
    trainer.fit()
    by_writer = [name for name, _ in commits if name.startswith("ckpt-writer")]
    assert len(by_writer) == 2  # steps 4 and 8: save, prune, record and preview together
    beside_writer = [name for name, in_flight in commits if in_flight and name == "MainThread"]
    assert beside_writer == []
    published = vol.committed_files()
    assert "samples/r/step_00000004.png" in published
    assert "samples/r/step_00000008.png" in published
    assert not [f for f in published if "/step_00000004/" in f]  # pruned, and published so
    [log] = [f for f in published if f.endswith("/r/metrics.jsonl")]  # beside its checkpoints
    lines = MetricsLog(vol.backing / log).read()  # committed by the checkpoints' commits
    assert [(x["step"], x["kind"]) for x in lines] == [(4, "eval"), (8, "train"), (8, "eval")]


def test_a_stop_request_writes_one_checkpoint_and_nothing_else(tmp_path) -> None:
    """Modal's grace period has no time for an evaluation or a preview grid."""
    layer = apply_overrides(
        {"task": "dit"}, [*TINY, "optim.max_steps=16", "dit.preview_per_class=1"]
    )
    layer["data"]["dir"] = str(tmp_path / "data")
    config = build_config("dit", base=layer)
    guard = PreemptionGuard(signals=())
    trainer = build_trainer(config, LocalStore(tmp_path / "out"), "r", guard=guard, progress=False)
    seen: dict[str, list[int]] = {"evaluate": [], "preview": []}
    for name in seen:
        original = getattr(trainer.task, name)

        def recorded(*args, _original=original, _name=name, **kwargs):
            seen[_name].append(trainer.step)
            return _original(*args, **kwargs)

        setattr(trainer.task, name, recorded)
    original_step = trainer.train_step

    def step_then_signal():
        out = original_step()
        if trainer.step == 6:
            guard.request("SIGINT")  # mid-interval: the next boundary answers it
        return out

    trainer.train_step = step_then_signal
    result = trainer.fit()
    assert (result.status, result.step) == ("preempted", 6)
    assert seen == {"evaluate": [4], "preview": [4]}  # the scheduled ones only
    infos = CheckpointManager(LocalStore(tmp_path / "out"), "dit", "r").list()
    assert [(i.step, i.metrics == {}) for i in infos] == [(4, False), (6, True)]
