"""Calls already made: follow a run across its calls, fetch results, logs, cancel.

A run is a chain of calls (training.py): each call returns its result or
`{"status": "continued", "next_call_id": ...}`. Every command here takes a call id
(`fc-...`, printed by `cloud train`) or a run id, which is resolved to the run's
newest call through the ledger `cloud/calls/<run_id>.json` on the outputs volume
(each call appends itself when it starts, and commits).

Whatever goes wrong remotely becomes one `CloudError` line (exit 2 in the CLI): an
output that expired (modal 1.6.4 `_functions._Invocation.poll_function` raises
OutputExpiredError once no input is unfinished and no output is left), a call that
failed (the remote exception is re-raised by `FunctionCall.get`), a user error
returned as a value.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from tinycats.errors import TinycatsError

LEDGER_DIR = "cloud/calls"


class CloudError(TinycatsError):
    """Modal is not set up, a remote call could not be made, or it failed."""


def ledger_path(run_id: str) -> str:
    return f"{LEDGER_DIR}/{run_id}.json"


def read_remote_json(volume_name: str, path: str) -> dict[str, Any] | None:
    """A JSON file on a volume through the SDK, or None when the volume or file is missing."""
    from tinycats.cloud.remote_volume import open_remote_volume
    from tinycats.errors import StorageError

    try:
        raw = open_remote_volume(volume_name).read_bytes(path)
    except StorageError:  # no such volume or file (other SDK failures keep their type)
        return None
    try:
        return json.loads(raw)
    except ValueError as err:
        raise CloudError(f"{path} on volume {volume_name} is not valid JSON ({err})") from None


def resolve_call(target: str, outputs_volume: str) -> str:
    """A call id as it is, or a run id → its newest call (from the run's ledger)."""
    if target.startswith("fc-"):
        return target
    ledger = read_remote_json(outputs_volume, ledger_path(target))
    if not ledger or not ledger.get("calls"):
        raise CloudError(
            f"no cloud call recorded for run {target!r} on volume {outputs_volume}; pass the "
            "call id printed by `tinycats cloud train` (fc-...) or check --volume"
        )
    return ledger["calls"][-1]["call_id"]


def outcome_of(value: Any) -> Any:
    """A call's value, or a CloudError for a user error the container returned."""
    if isinstance(value, dict) and value.get("status") == "error":
        raise CloudError(value["error"])
    return value


def get(call_id: str, timeout: float | None) -> tuple[bool, Any]:
    """(done, value) of one call; remote failures as one-line CloudErrors."""
    import modal

    call = modal.FunctionCall.from_id(call_id)
    try:
        return True, outcome_of(call.get(timeout=timeout))
    except TimeoutError:  # poll_function's builtin TimeoutError: still running
        return False, None
    except modal.exception.OutputExpiredError:
        raise CloudError(
            f"the result of {call_id} has expired (Modal keeps outputs for a limited time); "
            "the run's record and checkpoints are on the outputs volume: `tinycats cloud volume "
            "ls runs`"
        ) from None
    except modal.exception.NotFoundError:
        raise CloudError(f"no call {call_id!r}; check the id printed by `cloud train`") from None
    except modal.exception.AuthError as err:
        raise CloudError(f"Modal rejected the credentials ({err}); run `modal token new`") from None
    except CloudError:
        raise
    except Exception as err:
        raise CloudError(f"call {call_id} failed: {_one_line(err)}") from None


def follow(
    call_id: str, timeout: float | None = None, *, on_next=None, clock=time.monotonic
) -> tuple[bool, Any]:
    """(done, value) of the run a call belongs to, following its continuations; `timeout`
    bounds the whole wait (None: until the run ends)."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - clock())
        done, value = get(call_id, left)
        if not done:
            return False, call_id
        if not (isinstance(value, dict) and value.get("status") == "continued"):
            return True, value
        call_id = value["next_call_id"]
        if on_next is not None:
            on_next(value, call_id)


def logs(call_id: str, *, follow_stream: bool = False, entries: int = 200) -> Iterator[str]:
    """The call's log lines: the newest `entries`, or a live stream until it ends
    (modal 1.6.4 `FunctionCall.logs.tail` / `.stream`)."""
    import modal

    call = modal.FunctionCall.from_id(call_id)
    manager = call.logs
    try:
        stream = manager.stream() if follow_stream else manager.tail(entries)
        for entry in stream:
            yield entry.message
    except modal.exception.NotFoundError:
        raise CloudError(f"no call {call_id!r}; check the id printed by `cloud train`") from None


def cancel(call_id: str) -> None:
    """Cancel a call without retrying it (`FunctionCall.cancel`): the container gets
    SIGUSR1, checkpoints and commits; `cloud train --run-id RUN` resumes the run."""
    import modal

    try:
        modal.FunctionCall.from_id(call_id).cancel()
    except modal.exception.NotFoundError:
        raise CloudError(f"no call {call_id!r}; check the id printed by `cloud train`") from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}".strip().rstrip(":")
