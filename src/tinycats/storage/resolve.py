"""Turning what a user typed (a run id, a run folder, a step folder) into a verified checkpoint.

`predict`, `eval`, `sample` and `export` read one checkpoint once, so this path
reads every candidate's own manifest rather than the listing cache: a wrong or
stale `index.json` cannot change which checkpoint is "best" here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tinycats.errors import CheckpointError
from tinycats.storage.layout import CHECKPOINTS_DIR, find_run_dir, is_dir, parse_step, read_pointer
from tinycats.storage.listing import list_checkpoints
from tinycats.storage.manifest import META_FILE, CheckpointInfo, read_meta, verify_checkpoint
from tinycats.storage.retention import CheckpointRecord, best_steps
from tinycats.storage.store import Store

log = logging.getLogger(__name__)


def resolve_checkpoint(store: Store, ref: str, which: str = "latest") -> Path:
    """A verified step folder from a run id, a run folder or a step folder.

    `which` ("latest" or "best") applies to runs; a step folder is taken as given.
    A candidate counts when it verifies as a resume would load it (manifest, hashes and
    safe decoding), so every reader passes over the same damaged checkpoints.
    """
    if which not in ("latest", "best"):
        raise CheckpointError(f"which={which!r}; choose latest or best")
    path = Path(ref)
    if is_dir(path) and ((path / META_FILE).exists() or parse_step(path.name) is not None):
        candidates = [path]
    else:
        run_dir = path if is_dir(path) else find_run_dir(store, ref)
        if run_dir is None:
            raise CheckpointError(
                f"no run or checkpoint folder {ref!r} in {store.root / CHECKPOINTS_DIR}; "
                "see `tinycats ckpt ls` or pass --out"
            )
        infos = list_checkpoints(run_dir, use_index=False)
        if not infos:
            raise CheckpointError(f"run folder {run_dir} has no completed checkpoint")
        if which == "best":
            candidates = [i.path for i in best_first(infos)]
        else:
            pointer = read_pointer(run_dir)
            newest = sorted(infos, key=lambda i: (i.step == pointer, i.step), reverse=True)
            candidates = [i.path for i in newest]
    problems: list[str] = []
    for candidate in candidates:
        found = verify_checkpoint(candidate)  # the rule resume and retention apply too
        if not found:
            return candidate
        log.warning("skipping checkpoint %s: %s", candidate, found[0])
        problems.append(found[0])
    raise CheckpointError(
        f"no checkpoint of {ref!r} verifies ({problems[0]}); "
        "run `tinycats ckpt verify` to see every problem"
    )


def best_first(infos: list[CheckpointInfo]) -> list[CheckpointInfo]:
    """Checkpoints best first, by the metric policy recorded in the newest manifest.

    A run without the metric at all (e.g. trained with no validation split) has no
    "best": its checkpoints come newest first, so `best` then means the final weights.
    """
    policy = read_meta(infos[-1].path)
    metric, mode = policy.get("best_metric", "val_acc"), policy.get("best_mode", "max")
    records = [CheckpointRecord(i.step, i.time, i.metrics.get(metric)) for i in infos]
    order = best_steps(records, len(records), mode)
    if not order:
        log.info("no checkpoint of %s has %r; using the newest", infos[-1].path.parent, metric)
        return sorted(infos, key=lambda i: i.step, reverse=True)
    by_step = {i.step: i for i in infos}
    return [by_step[s] for s in order]
