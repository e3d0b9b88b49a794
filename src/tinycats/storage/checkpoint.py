"""Crash-safe checkpoints of one run: save, list, load with fallback, and prune.

The save protocol's order is the guarantee (see DESIGN.md): write everything into
`step_X.tmp-<uuid>/`, fsync, write `meta.json` (the manifest) last, rename the
folder to `step_X/`, fsync the parent, replace `latest.json`, `store.commit()`,
and only then prune. A crash at any instant leaves either a stray `.tmp-` folder
(never listed) or a complete step folder; `latest.json` never points at a partial
one. Deletion renames a folder to `step_X.trash-<uuid>` before removing it, so a
crash mid-delete never leaves a half-deleted folder that still looks complete.

The folder layout is in `storage.layout`, the listing and its cache in
`storage.listing`, the file writing in `storage.checkpoint_files`, deletion in
`storage.trash`. Callers that
read what another container wrote call `store.reload()` first.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tinycats.errors import CheckpointError, StorageError
from tinycats.storage.atomic import (
    TMP_MARK,
    disk_full_as_storage_error,
    fsync_dir,
    write_file_synced,
    write_json_atomic,
)
from tinycats.storage.checkpoint_files import write_checkpoint_files
from tinycats.storage.layout import (
    LATEST_FILE,
    check_name,
    find_run_dir,
    read_pointer,
    run_dir_path,
    step_dir_name,
    utc_date,
)
from tinycats.storage.listing import (
    RunListing,
    disagreeing,
    gc_paused,
    index_entry,
    manifest_stamp,
    read_index,
    scan_run,
    write_index,
)
from tinycats.storage.manifest import (
    FORMAT_VERSION,
    META_FILE,
    CheckpointInfo,
    LoadedCheckpoint,
    load_checkpoint,
    verify_checkpoint,
)
from tinycats.storage.retention import (
    CheckpointRecord,
    best_steps,
    counted_steps,
    keep_reasons,
    select_keep,
)
from tinycats.storage.store import Store
from tinycats.storage.trash import move_aside, remove_tree, sweep_leftovers

if TYPE_CHECKING:
    from tinycats.config import TrainConfig

log = logging.getLogger(__name__)


def _files_key(
    step_dir: Path, step: int
) -> tuple[int, frozenset[tuple[str, int, int, int]]] | None:
    """(step, each file's name, inode, change time and size): what any rewrite, copy or
    restore of a checkpoint's files changes. None when the folder cannot be read."""
    try:
        with os.scandir(step_dir) as entries:
            stamps = []
            for entry in entries:
                st = entry.stat()
                stamps.append((entry.name, st.st_ino, st.st_ctime_ns, st.st_size))
    except OSError:
        return None
    return step, frozenset(stamps)


class CheckpointManager:
    """Saves, lists, loads and prunes the checkpoints of one run in a Store."""

    def __init__(
        self,
        store: Store,
        task: str,
        run_id: str,
        *,
        keep_last: int = 5,
        keep_best: int = 1,
        keep_every: int = 0,
        best_metric: str = "val_acc",
        best_mode: str = "max",
        run_date: str | None = None,
    ) -> None:
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode={best_mode!r}; choose max or min")
        self.store = store
        self.task = check_name("task", task)
        self.run_id = check_name("run id", run_id)
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.keep_every = keep_every
        self.best_metric = best_metric
        self.best_mode = best_mode
        date = check_name("run date", run_date or utc_date())
        self._run_dir = run_dir_path(store, task, date, run_id)
        self._verified: dict[tuple[int, frozenset[tuple[str, int, int, int]]], bool] = {}

    @property
    def run_dir(self) -> Path:
        """`checkpoints/<task>/<date>/<run_id>/`; an existing folder of the run wins over `run_date`.

        Looked up again while ours does not exist, because the run may appear later
        (a resume on another day, or another container's commit seen after a reload).
        """
        if not self._run_dir.is_dir():
            self._run_dir = find_run_dir(self.store, self.run_id, self.task) or self._run_dir
        return self._run_dir

    @classmethod
    def from_config(
        cls, store: Store, task: str, run_id: str, config: TrainConfig
    ) -> CheckpointManager:
        """A manager with the retention and best-metric policy of a resolved TrainConfig."""
        return cls(
            store,
            task,
            run_id,
            keep_last=config.retention.keep_last,
            keep_best=config.retention.keep_best,
            keep_every=config.retention.keep_every,
            best_metric=config.checkpoint.best_metric,
            best_mode=config.checkpoint.best_mode,
        )

    def __repr__(self) -> str:
        return f"CheckpointManager({self.run_dir})"

    # -- save -----------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        weights: dict[str, dict[str, torch.Tensor]],
        train_state: dict[str, Any],
        meta: dict[str, Any],
        metrics: dict[str, float] | None = None,
        *,
        publish: bool = True,
    ) -> CheckpointInfo:
        """Write a checkpoint by the crash-safe protocol, publish it, then prune.

        Saving a step that already exists replaces it; the old folder is moved aside
        first and deleted only after the new one is in place. With `publish=False` the
        caller commits once for the checkpoint, its pruning and whatever it writes beside
        them (the engine: the run record and a preview grid), so a Modal volume sees one
        commit per checkpoint instead of three.
        """
        if step < 0:
            raise ValueError(f"step={step} must be >= 0")
        name = step_dir_name(step)
        final = self.run_dir / name
        tmp = self.run_dir / f"{name}{TMP_MARK}{uuid.uuid4().hex}"
        now = time.time()
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        with disk_full_as_storage_error(final):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            try:
                doc = {
                    "format_version": FORMAT_VERSION,
                    "task": self.task,
                    "run_id": self.run_id,
                    "step": step,
                    "time": now,
                    "metrics": metrics,
                    "best_metric": self.best_metric,
                    "best_mode": self.best_mode,
                    "files": write_checkpoint_files(tmp, weights, train_state),
                    "meta": meta,
                }
                write_file_synced(tmp / META_FILE, json.dumps(doc, indent=2).encode())
                fsync_dir(tmp)
                replaced = move_aside(final)
                try:
                    os.rename(tmp, final)
                except BaseException:
                    if replaced is not None:  # put the old checkpoint back
                        os.rename(replaced, final)
                    raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(self.run_dir)
            write_json_atomic(
                self.run_dir / LATEST_FILE,
                {"format_version": FORMAT_VERSION, "step": step, "dir": name, "time": now},
            )
            entries = read_index(self.run_dir)
            entries[str(step)] = index_entry(now, metrics, manifest_stamp(final))
            write_index(self.run_dir, entries)
        # Verified as written: the weights' hashes were read back from the disk after their
        # fsync, the train state's taken from the very bytes written. A later change to any
        # file changes its stamp, and the next prune verifies it again.
        if (key := _files_key(final, step)) is not None:
            self._verified[key] = True
        if replaced is not None:
            remove_tree(replaced)
        if publish:
            self.store.commit()
        self.prune(publish=publish)
        return CheckpointInfo(final, self.run_id, self.task, step, now, metrics)

    # -- read -----------------------------------------------------------------------------------

    def list(self) -> list[CheckpointInfo]:
        """Completed checkpoints, sorted by parsed step (never by name or mtime)."""
        return scan_run(self.run_dir).infos

    def _relist_from_manifests(self) -> RunListing:
        """The listing from every step's own manifest, after the index disagreed with one;
        the index is rewritten to match (best effort: it is only a cache)."""
        log.warning("index.json of %s disagreed with a manifest; rebuilding it", self.run_dir)
        listing = scan_run(self.run_dir, use_index=False)
        self._rewrite_index(listing)
        return listing

    def _rewrite_index(self, listing: RunListing) -> None:
        try:
            write_index(self.run_dir, listing.index_entries())
        except (OSError, StorageError) as err:  # e.g. a read-only store: read around it
            log.info("could not rewrite %s/index.json (%s)", self.run_dir, err)

    def latest_step(self) -> int | None:
        """The step `latest.json` points to (the newest published checkpoint)."""
        return read_pointer(self.run_dir)

    def latest(self) -> CheckpointInfo | None:
        """The checkpoint `latest.json` points to, else the newest complete one."""
        infos = self.list()
        pointer = self.latest_step()
        by_pointer = [i for i in infos if i.step == pointer]
        return by_pointer[0] if by_pointer else (infos[-1] if infos else None)

    def records(self, infos: Sequence[CheckpointInfo] | None = None) -> list[CheckpointRecord]:
        """Retention's view of the checkpoints: published = at or before `latest.json`'s step."""
        infos = self.list() if infos is None else infos
        pointer = self.latest_step()
        return [
            CheckpointRecord(
                step=i.step,
                time=i.time,
                metric=i.metrics.get(self.best_metric),
                committed=pointer is not None and i.step <= pointer,
            )
            for i in infos
        ]

    def verified_records(self, infos: Sequence[CheckpointInfo]) -> list[CheckpointRecord]:
        """`records` with the checkpoints that count as good (the newest N, the best k)
        verified, again and again until none counted is bad: retention then decides as if
        it had verified every checkpoint, having read only the few it counts."""
        records = self.records(infos)
        by_step = {i.step: i for i in infos}
        counting = {"keep_last": self.keep_last, "keep_best": self.keep_best}
        checked: set[int] = set()
        while unchecked := counted_steps(records, **counting, best_mode=self.best_mode) - checked:
            checked |= unchecked
            bad = {step for step in unchecked if not self.verifies(by_step[step])}
            if not bad:  # what counts is unchanged, and all of it verifies
                break
            records = [replace(r, verified=False) if r.step in bad else r for r in records]
        return records

    def verifies(self, info: CheckpointInfo) -> bool:
        """Whether a checkpoint verifies (manifest, hashes, safe decoding: the rule every
        reader applies). Remembered while none of its files changes (see `_files_key`):
        a training run reads none of its own checkpoints back, and each other one once."""
        key = _files_key(info.path, info.step)
        if key is None or key not in self._verified:
            problems = verify_checkpoint(info.path)
            if problems:
                log.warning("checkpoint %s does not verify: %s", info.path, problems[0])
            if key is None:
                return not problems
            self._verified[key] = not problems
        return self._verified[key]

    def best(self) -> CheckpointInfo | None:
        """The published checkpoint with the best `best_metric` (None if none has it).

        The pick is confirmed against its own manifest before it is returned.
        """
        infos = self.list()
        pick = self._best_of(infos)
        if pick is not None and disagreeing([pick]):
            pick = self._best_of(self._relist_from_manifests().infos)
        return pick

    def _best_of(self, infos: list[CheckpointInfo]) -> CheckpointInfo | None:
        steps = best_steps(self.records(infos), 1, self.best_mode)
        return next((i for i in infos if steps and i.step == steps[0]), None)

    def load_latest(self, map_location: str = "cpu") -> LoadedCheckpoint | None:
        """Load `latest.json`'s checkpoint, else the newest that verifies; None if the run has none.

        Every checkpoint passed over is recorded in `skipped` with the reason.
        """
        infos = self.list()
        if not infos:
            return None
        pointer = self.latest_step()
        order = sorted(infos, key=lambda i: (i.step == pointer, i.step), reverse=True)
        skipped: list[tuple[Path, str]] = []
        for info in order:
            try:
                loaded = load_checkpoint(info.path, map_location)
            except CheckpointError as err:
                log.warning("skipping checkpoint %s: %s", info.path, err)
                skipped.append((info.path, str(err)))
                continue
            loaded.skipped = skipped
            return loaded
        raise CheckpointError(
            f"none of the {len(infos)} checkpoints of run {self.run_id} verifies "
            f"(newest: {skipped[0][1]}); start a new run or restore {self.run_dir} from a backup"
        )

    # -- prune ----------------------------------------------------------------------------------

    def _policy(self) -> dict[str, Any]:
        return {
            "keep_last": self.keep_last,
            "keep_best": self.keep_best,
            "best_mode": self.best_mode,
            "keep_every": self.keep_every,
            "latest_step": self.latest_step(),
        }

    def keep_reasons(self, infos: Sequence[CheckpointInfo] | None = None) -> dict[int, list[str]]:
        """Which retention rules keep each step (see retention.keep_reasons)."""
        infos = self.list() if infos is None else infos
        return keep_reasons(self.verified_records(infos), **self._policy())

    def plan_prune(self) -> tuple[list[CheckpointInfo], list[CheckpointInfo]]:
        """(kept, to delete) under the retention policy, without touching anything.

        The best checkpoints kept are confirmed against their manifests (prune also
        confirms the ones it deletes), so a wrong index entry cannot change the plan.
        """
        kept, doomed, _ = self._plan()
        return kept, doomed

    def _plan(
        self, listing: RunListing | None = None
    ) -> tuple[list[CheckpointInfo], list[CheckpointInfo], RunListing]:
        """(kept, doomed, the listing decided on); `listing` given = already from manifests."""
        with gc_paused():  # one record per checkpoint, no cycles (see gc_paused)
            confirmed = listing is not None
            listing = listing or scan_run(self.run_dir)
            records = self.verified_records(listing.infos)
            keep = select_keep(records, **self._policy())
            kept = [i for i in listing.infos if i.step in keep]
            doomed = [i for i in listing.infos if i.step not in keep]
        # The best k are always among the kept: rank those few, not all the records again.
        kept_records = [r for r in records if r.step in keep]
        best = set(best_steps(kept_records, self.keep_best, self.best_mode))
        if not confirmed and disagreeing(i for i in kept if i.step in best):
            return self._plan(self._relist_from_manifests())
        return kept, doomed, listing

    def prune(self, *, publish: bool = True) -> list[Path]:
        """Delete what retention does not keep; returns the deleted step folders.

        Never deletes `latest`, the best k, or anything newer than the newest
        published step. Each folder is renamed to a trash name first, so a crash
        leaves only trash that the next prune sweeps. A failed delete is logged.
        `publish=False` leaves the commit to the caller.
        """
        _, doomed, listing = self._plan()
        if disagreeing(doomed):  # the index misled the plan: decide from the manifests
            _, doomed, listing = self._plan(self._relist_from_manifests())
        moved: list[tuple[CheckpointInfo, Path]] = []
        for info in doomed:
            try:
                trash = move_aside(info.path)
            except OSError as err:
                log.warning("could not delete %s (%s); a later prune will retry", info.path, err)
                continue
            if trash is not None:
                moved.append((info, trash))
        if moved:
            fsync_dir(self.run_dir)
        if moved or listing.stale:
            gone = {info.step for info, _ in moved}
            self._rewrite_index(
                RunListing([i for i in listing.infos if i.step not in gone], listing.stamps)
            )
        for _, trash in moved:
            remove_tree(trash)
        swept = sweep_leftovers(self.run_dir)
        if publish and (moved or swept):
            self.store.commit()
        return [info.path for info, _ in moved]
