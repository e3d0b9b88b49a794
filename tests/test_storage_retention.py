"""Retention: the pure policy (examples + hypothesis properties) and crash-safe pruning on disk."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycats.storage import CheckpointManager, CheckpointRecord, LocalStore, select_keep
from tinycats.storage.retention import counted_steps


def records_of(steps, metrics=None, committed_upto=None) -> list[CheckpointRecord]:
    metrics = metrics or {}
    return [
        CheckpointRecord(s, float(s), metrics.get(s), committed_upto is None or s <= committed_upto)
        for s in steps
    ]


# -- examples -------------------------------------------------------------------------------------


def test_keep_last_only() -> None:
    assert select_keep(records_of(range(1, 11)), keep_last=3) == {8, 9, 10}


def test_best_by_max_and_min() -> None:
    recs = records_of(range(1, 8), {2: 0.9, 3: 0.1, 5: 0.5})
    assert select_keep(recs, keep_last=1, keep_best=1) == {7, 2}
    assert select_keep(recs, keep_last=1, keep_best=2, best_mode="min") == {7, 3, 5}


def test_missing_or_nan_metric_is_never_best() -> None:
    recs = records_of([1, 2, 3], {1: float("nan"), 2: 0.1})
    assert select_keep(recs, keep_last=1, keep_best=1) == {3, 2}


def test_every_kth_latest_and_uncommitted() -> None:
    recs = records_of(range(1, 21), committed_upto=15)
    keep = select_keep(recs, keep_last=2, keep_every=5, latest_step=4)
    assert keep == {14, 15, 5, 10, 4, 16, 17, 18, 19, 20}


def test_nothing_committed_keeps_everything() -> None:
    recs = records_of([1, 2, 3], committed_upto=0)
    assert select_keep(recs, keep_last=1) == {1, 2, 3}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="keep_last=-1"):
        select_keep([], keep_last=-1)
    with pytest.raises(ValueError, match="best_mode"):
        select_keep(records_of([1]), keep_last=1, keep_best=1, best_mode="median")


# -- properties -----------------------------------------------------------------------------------

metric_values = st.one_of(st.none(), st.just(float("nan")), st.floats(-10, 10, allow_nan=False))


@st.composite
def histories(draw):
    steps = sorted(draw(st.sets(st.integers(0, 400), max_size=40)))
    metrics = {s: draw(metric_values) for s in steps}
    committed_upto = draw(st.one_of(st.none(), st.integers(-1, 401)))
    latest = draw(st.one_of(st.none(), st.sampled_from(steps) if steps else st.none()))
    policy = {
        "keep_last": draw(st.integers(0, 6)),
        "keep_best": draw(st.integers(0, 3)),
        "best_mode": draw(st.sampled_from(["max", "min"])),
        "keep_every": draw(st.integers(0, 50)),
    }
    return records_of(steps, metrics, committed_upto), latest, policy


def required(records: list[CheckpointRecord], latest: int | None, policy: dict) -> set[int]:
    """The policy restated naively, rule by rule."""
    committed = [r for r in records if r.committed]
    need = {r.step for r in sorted(committed, key=lambda r: r.step)[::-1][: policy["keep_last"]]}
    if policy["keep_every"]:
        need |= {r.step for r in committed if r.step % policy["keep_every"] == 0}
    need |= {r.step for r in records if r.step == latest}
    newest = max((r.step for r in committed), default=None)
    need |= {r.step for r in records if newest is None or r.step > newest}
    scored = [r for r in committed if r.metric is not None and not math.isnan(r.metric)]
    sign = 1 if policy["best_mode"] == "max" else -1
    values = sorted((sign * r.metric for r in scored), reverse=True)
    if policy["keep_best"] and values:
        kth = values[min(policy["keep_best"], len(values)) - 1]
        need |= {r.step for r in scored if sign * r.metric > kth}  # strictly better than k-th
    return need


@settings(max_examples=300, deadline=None)
@given(histories())
def test_kept_contains_required_and_only_known_steps(history) -> None:
    records, latest, policy = history
    keep = select_keep(records, latest_step=latest, **policy)
    assert keep >= required(records, latest, policy)
    assert keep <= {r.step for r in records}
    if policy["keep_best"]:
        scored = [r for r in records if r.committed and r.metric is not None]
        scored = [r for r in scored if not math.isnan(r.metric)]
        if scored:
            best = (max if policy["best_mode"] == "max" else min)(r.metric for r in scored)
            assert any(r.step in keep and r.metric == best for r in scored)
        n_best = min(policy["keep_best"], len(scored))
        assert len([r for r in scored if r.step in keep]) >= n_best


@settings(max_examples=300, deadline=None)
@given(histories())
def test_selection_is_idempotent(history) -> None:
    records, latest, policy = history
    keep = select_keep(records, latest_step=latest, **policy)
    survivors = [r for r in records if r.step in keep]
    assert select_keep(survivors, latest_step=latest, **policy) == keep


# -- pruning on disk ------------------------------------------------------------------------------


def tiny_save(manager: CheckpointManager, step: int, metric: float | None) -> None:
    metrics = {} if metric is None else {"val_acc": metric}
    manager.save(step, {"model": {"w": torch.full((2,), float(step))}}, {"step": step}, {}, metrics)


@settings(max_examples=12, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=1, max_size=10),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(0, 4),
)
def test_prune_keeps_latest_and_best_and_is_idempotent(metrics, keep_last, keep_best, every):
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp))
        writer = CheckpointManager(store, "classifier", "r", keep_last=1000)
        for step, metric in enumerate(metrics, start=1):
            tiny_save(writer, step, metric)
        best_before = writer.best()
        pruner = CheckpointManager(
            store, "classifier", "r", keep_last=keep_last, keep_best=keep_best, keep_every=every
        )
        deleted = pruner.prune()
        left = {i.step for i in pruner.list()}
        assert len(metrics) in left  # latest
        assert best_before is None or best_before.step in left
        assert left | {int(p.name[5:]) for p in deleted} == set(range(1, len(metrics) + 1))
        assert pruner.prune() == []
        assert not [p for p in pruner.run_dir.iterdir() if ".trash-" in p.name]
        loaded = pruner.load_latest()
        assert loaded is not None and loaded.info.step == len(metrics)


def test_prune_sweeps_crash_leftovers_but_not_young_tmp(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    manager = CheckpointManager(store, "classifier", "r", keep_last=1)
    tiny_save(manager, 1, None)
    trash = manager.run_dir / "step_00000000.trash-abc"  # a prune killed mid-delete
    (trash / "sub").mkdir(parents=True)
    young_tmp = manager.run_dir / "step_00000002.tmp-abc"  # maybe another writer's save
    young_tmp.mkdir()
    manager.prune()
    assert not trash.exists() and young_tmp.exists()


def test_failed_delete_is_logged_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tinycats.storage import checkpoint as checkpoint_module

    store = LocalStore(tmp_path)
    manager = CheckpointManager(store, "classifier", "r", keep_last=1000)
    for step in (1, 2, 3):
        tiny_save(manager, step, None)

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", refuse)
    manager.keep_last = 1
    deleted = manager.prune()
    assert [p.name for p in deleted] == ["step_00000001", "step_00000002"]
    assert [i.step for i in manager.list()] == [3]  # moved aside: no longer checkpoints
    assert "a later prune will retry" in caplog.text
    monkeypatch.undo()
    manager.prune()
    assert not [p for p in manager.run_dir.iterdir() if ".trash-" in p.name]


# -- only checkpoints that verify count -----------------------------------------------------------


@st.composite
def histories_with_damage(draw):
    records, latest, policy = draw(histories())
    bad = draw(st.sets(st.sampled_from([r.step for r in records]))) if records else set()
    return [dataclasses.replace(r, verified=r.step not in bad) for r in records], latest, policy


@settings(max_examples=300, deadline=None)
@given(histories_with_damage())
def test_damaged_checkpoints_never_count_and_the_newest_good_one_stays(history) -> None:
    records, latest, policy = history
    keep = select_keep(records, latest_step=latest, **policy)
    good = sorted(r.step for r in records if r.committed and r.verified)
    if not good:
        assert keep == {r.step for r in records}  # nothing known good: nothing deleted
        return
    assert good[-1] in keep
    assert set(good[-policy["keep_last"] :] if policy["keep_last"] else []) <= keep
    # Verifying only the counted steps, as prune does, decides as knowing every record.
    truly_bad = {r.step for r in records if not r.verified}
    counting = {k: policy[k] for k in ("keep_last", "keep_best", "best_mode")}
    known_bad: set[int] = set()
    checked: set[int] = set()
    while True:
        view = [dataclasses.replace(r, verified=r.step not in known_bad) for r in records]
        unchecked = counted_steps(view, **counting) - checked
        if not unchecked:
            break
        checked |= unchecked
        known_bad |= unchecked & truly_bad
    assert select_keep(view, latest_step=latest, **policy) == keep


def test_a_damaged_newest_checkpoint_does_not_count_as_the_last_one() -> None:
    records = [dataclasses.replace(r, verified=r.step != 3) for r in records_of([1, 2, 3])]
    assert select_keep(records, keep_last=1, latest_step=3) == {2, 3}  # 3: latest.json's
    assert select_keep(records, keep_last=1) == {2}
