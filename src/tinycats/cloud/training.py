"""One call of a cloud training run, and how it ends the way Modal's runtime expects.

`train_call` is what `Trainer.train` runs in a container (tests run it on fake volumes).
A run is a chain of calls, each one slice of at most `modal.timeout_minutes`:

- **completed**: the run reached `optim.max_steps`; the call returns its result.
- **continued**: the slice's time ran out. The engine checkpoints and commits, the call
  spawns its own continuation (a new call with the same run id and a fresh retry
  budget) and returns `{"status": "continued", "next_call_id": ...}`. Time is not a
  failure, so a long run never spends a retry on it; retries stay for real failures.
- **interrupted**: the platform preempts the container with SIGINT (or SIGTERM). The
  engine checkpoints and commits within the grace period, then `InputInterrupted` (a
  KeyboardInterrupt) propagates: modal 1.6.4's runtime re-raises KeyboardInterrupt out
  of `container_io_manager.handle_input_exception` and sends no output for the input
  ("the status of the input should have been handled externally",
  task_lifecycle_manager.py `handle_task_lifecycle_exception`), so the input is
  restarted elsewhere as an internal failure, without using a retry. Raising an
  ordinary exception instead would be reported as the input's failure and retried
  with backoff.
- **cancelled**: the user cancelled the call (SIGUSR1, `_container_entrypoint.py
  call_function`); the engine checkpoints, the call returns status "cancelled" and
  the app raises `modal.exception.InputCancellation`, which the runtime turns into a
  TERMINATED output.
- **user error**: a problem only the container can see (an unknown run, the wrong task
  for a run, a class mismatch, a bad saved config) is deterministic: it is returned as
  `{"status": "error", "error": one line}`, which the client prints with exit 2,
  instead of raising and being retried with backoff on a GPU.

The slice's clock starts when the input starts (`started`, taken before the data is
checked), because Modal's timeout counts the whole execution, not only training.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from tinycats.cloud import pricing
from tinycats.cloud.calls import ledger_path
from tinycats.cloud.jobs import require_prepared, returns_user_errors
from tinycats.cloud.lease import RunLease
from tinycats.cloud.resources import MINUTES, attempt_budget_seconds, with_data_dir
from tinycats.errors import ConfigError, TinycatsError
from tinycats.storage import RunRegistry, Store, write_json_atomic
from tinycats.storage.atomic import read_json
from tinycats.storage.run_lock import FencedStore

if TYPE_CHECKING:
    from tinycats.train.launch import Nodes

TIME_BUDGET_REASON = "slice time budget"
CANCEL_REASON = "SIGUSR1"


class InputInterrupted(KeyboardInterrupt):
    """The platform stopped this container; the checkpoint is committed. A KeyboardInterrupt,
    so Modal's runtime restarts the input instead of recording a failure."""


class SliceGuard:
    """The attempt's PreemptionGuard, plus the slice's deadline on an injectable clock: the
    engine polls `requested` once per step, so the deadline is checked there."""

    def __init__(self, guard: Any, deadline: float, clock: Callable[[], float]) -> None:
        self.guard, self.deadline, self.clock = guard, deadline, clock
        self.seen_at: float | None = None  # when the engine first saw the stop (monotonic)

    @property
    def requested(self) -> bool:
        stop = self.guard.requested  # read once: a poll is one step
        if not stop and self.clock() >= self.deadline:
            self.guard.request(TIME_BUDGET_REASON)
            stop = True
        if stop and self.seen_at is None:
            self.seen_at = time.monotonic()
        return stop

    def stop_seconds(self) -> float | None:
        """Seconds from the step boundary that saw the stop until now (None: no stop)."""
        return None if self.seen_at is None else time.monotonic() - self.seen_at

    @property
    def reason(self) -> str | None:
        return self.guard.reason

    def request(self, reason: str) -> None:
        self.guard.request(reason)


def saved_run(outputs: Store, task: str, run_id: str) -> dict[str, Any] | None:
    """The run's record, if it exists; a record of another task is a user error."""
    registry = RunRegistry(outputs)
    if not (outputs.root / "runs" / f"{run_id}.json").is_file():
        return None
    record = registry.get(run_id)
    if record.get("task") != task:
        raise ConfigError(
            f"run {run_id!r} is a {record.get('task')} run, not {task}; use `tinycats cloud "
            f"train {record.get('task')} --run-id {run_id}` or a new run id"
        )
    return record


@returns_user_errors
def train_call(
    data: Store,
    outputs: Store,
    task: str,
    config_layer: dict[str, Any],
    run_id: str,
    guard: Any,
    *,
    started: float,
    clock: Callable[[], float] = time.monotonic,
    continue_run: Callable[[Any], str] | None = None,
    call_id: str | None = None,
    gpu: str | None = None,
    require_gpu: Callable[[], None] | None = None,
    lease: Callable[[str], RunLease] | None = None,
    nproc: int = 1,
    nodes: Nodes | None = None,
) -> dict[str, Any]:
    """One call (slice) of run `run_id`: resume it from its last committed checkpoint, train
    until it completes or the slice ends, and say how it ended (see the module docstring).

    The run's settings (slice length, GPU, grace) come from its own record, with
    `config_layer` (the caller's file and --set choices) on top: redeploying the App for
    another command never changes a live run. `continue_run(config)` spawns the next
    call and returns its id; `require_gpu` raises when a GPU function sees no GPU;
    `lease(run_id)` makes this container the run's only writer (lease.py) for the call.
    `nproc` > 1 trains data-parallel, one rank per GPU of the container (ranks.py);
    `nodes` makes this container node 0 of a cluster (cluster.py), whose rank 0 it hosts.
    """
    from tinycats.config import resolve_config
    from tinycats.storage import CheckpointManager
    from tinycats.train.preemption import stop_budget_seconds
    from tinycats.train.resume import checkpoint_config

    if require_gpu is not None:  # before anything is billed as GPU time
        require_gpu()
    if not run_id:
        raise ConfigError("a cloud run needs its run_id fixed by the caller before the first try")
    data.reload()
    outputs.reload()
    with holding(lease, run_id, outputs) as outputs:
        record = saved_run(outputs, task, run_id)
        resume = CheckpointManager(outputs, task, run_id).load_latest()
        # The checkpoint's own config is the truth for resuming it; the record's serves a
        # run that stopped before its first checkpoint.
        saved = checkpoint_config(resume) if resume else (record or {}).get("config")
        config = resolve_config(task, config_layer, saved)
        config = with_data_dir(config, data.root)
        require_prepared(data, config)
        deadline = started + attempt_budget_seconds(config.modal.timeout_minutes * MINUTES)
        record_call(outputs, run_id, task, call_id)
        print(f"{run_id}: {'resuming' if saved else 'new run'} (call {call_id})", flush=True)
        slice_guard = SliceGuard(guard, deadline, clock)
        try:
            trained = train_slice(config, outputs, run_id, slice_guard, nproc, resume, nodes)
        except BaseException:
            with contextlib.suppress(Exception):  # the failure matters more than its bill
                _bill(outputs, run_id, config, call_id, gpu, clock() - started, "failed", nodes)
            raise
        result = asdict(trained)
        outcome = outcome_of(result, guard.reason)
        stop_seconds = slice_guard.stop_seconds()
        if stop_seconds is not None and stop_seconds > stop_budget_seconds(config):
            print(
                f"{run_id}: the stop took {stop_seconds:.1f} s, over the "
                f"{stop_budget_seconds(config):.0f} s budget below Modal's grace "
                "(modal.preemption_grace_s); a slower stop may be killed before its commit",
                flush=True,
            )
        _bill(
            outputs, run_id, config, call_id, gpu, clock() - started, outcome, nodes, stop_seconds
        )
    # The lease is released here: a restart or a continuation need not wait for it.
    if outcome == "interrupted":
        raise InputInterrupted(
            f"run {run_id} stopped at step {result['step']} ({guard.reason}); its checkpoint "
            "is committed and the restarted input resumes from it"
        )
    if outcome == "continued":
        if result["resumed_from"] == result["step"]:
            raise ConfigError(
                f"run {run_id} made no progress in a {config.modal.timeout_minutes}-minute "
                "slice; raise modal.timeout_minutes"
            )
        if continue_run is None:
            raise RuntimeError("the slice ended but this call cannot spawn its continuation")
        result["next_call_id"] = continue_run(config)
    return {**result, "status": outcome}


def train_slice(
    config: Any,
    outputs: Store,
    run_id: str,
    guard: Any,
    nproc: int,
    resume: Any = None,
    nodes: Nodes | None = None,
) -> Any:
    """The engine in this process (continuing from `resume`, already loaded), or `nproc`
    ranks launched from it (ranks.py) as node 0 of `nodes` (cluster.py), which load it
    themselves: the same result either way (rank 0's)."""
    from tinycats.train import run_training

    clustered = nodes is not None and nodes.count > 1
    if nproc <= 1 and not clustered:
        return run_training(config, outputs, run_id, resume=resume, guard=guard, progress=False)
    from tinycats.cloud.ranks import CommitRelay
    from tinycats.train.launch import RankJob, launch_training

    with CommitRelay(outputs) as relayed:
        job = RankJob(config, relayed, run_id, False, follow_main=clustered)
        return launch_training(nproc, job, guard, nodes=nodes)


@contextlib.contextmanager
def holding(
    lease: Callable[[str], RunLease] | None, run_id: str, outputs: Store
) -> Iterator[Store]:
    """Hold the run's lease for the block (None: no lease); yields the outputs Store with
    its commits fenced by the lease."""
    if lease is None:
        yield outputs
        return
    held = lease(run_id)
    held.acquire()  # RunBusy (another live call has the run) is a user error
    held.start_heartbeat()
    try:
        yield FencedStore(outputs, held)
    finally:
        held.release()


def record_call(outputs: Store, run_id: str, task: str, call_id: str | None) -> None:
    """Append this call to the run's ledger and commit, so `cloud logs|cancel RUN` find the
    live call (the run record itself is the engine's, written once training starts)."""
    path = outputs.root / ledger_path(run_id)
    ledger = read_json(path) if path.is_file() else {"run_id": run_id, "task": task, "calls": []}
    if call_id is not None and all(c["call_id"] != call_id for c in ledger["calls"]):
        ledger["calls"].append({"call_id": call_id, "started_at": time.time()})
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, ledger)
        outputs.commit()


def outcome_of(result: dict[str, Any], reason: str | None) -> str:
    if result["status"] == "completed":
        return "completed"
    if reason == TIME_BUDGET_REASON:
        return "continued"
    if reason == CANCEL_REASON:
        return "cancelled"
    return "interrupted"


def _bill(
    outputs: Store,
    run_id: str,
    config: Any,
    call_id: str | None,
    gpu: str | None,
    seconds: float,
    outcome: str,
    nodes: Nodes | None = None,
    stop_seconds: float | None = None,
) -> None:
    """Add this call's GPU-seconds and estimated cost to the run record (committed); a
    cluster's call bills every container alike."""
    registry = RunRegistry(outputs)
    try:
        record = registry.get(run_id)
    except TinycatsError:  # the run never started (e.g. its data is missing)
        return
    request = gpu or config.modal.gpu.split(",")[0]
    containers = 1 if nodes is None else nodes.count
    cost = pricing.estimate(request, config.modal.cpu, config.modal.memory_mb, seconds, containers)
    count = int(request.split(":")[1]) if ":" in request else 1
    call = {
        "call_id": call_id,
        "gpu": request,
        "nodes": containers,
        "seconds": round(seconds, 3),
        "gpu_seconds": round(seconds * count * containers, 3),
        "estimated_usd": None if cost.total_usd is None else round(cost.total_usd, 4),
        "outcome": outcome,
        "stop_seconds": None if stop_seconds is None else round(stop_seconds, 3),
    }
    calls = [*record.get("cloud", {}).get("calls", []), call]
    known = [c["estimated_usd"] for c in calls if c["estimated_usd"] is not None]
    registry.update(
        run_id,
        cloud={
            "calls": calls,
            "gpu_seconds": round(sum(c["gpu_seconds"] for c in calls), 3),
            "estimated_usd": round(sum(known), 4) if len(known) == len(calls) else None,
            "prices_as_of": pricing.PRICES_AS_OF,
        },
    )
