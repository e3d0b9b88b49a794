"""`tinycats export hf`: a Hugging Face model folder, and the push to the Hub.

The folder (layout in tinycats.train.exported) is built beside its destination and
renamed into place, so a failed export never leaves half a folder where a good one was.
The push is huggingface_hub's own `create_repo` + `upload_folder`; what can go wrong on
the way (no token, no network, a refused token) becomes one line naming the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinycats.deploy.card import default_license, matching_evaluations, model_card
from tinycats.deploy.describe import generation, preprocessing
from tinycats.deploy.folders import write_folder
from tinycats.errors import TinycatsError
from tinycats.train.exported import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    is_export_dir,
)
from tinycats.train.inference import TrainedModel

SAMPLES_FILE = "samples.png"
SAMPLES_PER_CLASS = 4
HF_INSTALL_HINT = 'pip install "tinycats[hf]"'


class HubError(TinycatsError):
    """The Hub cannot be reached, or refused the upload."""


@dataclass
class HfExport:
    folder: Path
    files: list[str]
    evaluated_splits: list[str]


def export_config(trained: TrainedModel) -> dict[str, Any]:
    """config.json: everything `load_exported_model` and other consumers need."""
    from dataclasses import asdict

    classifier = trained.config.task == "classifier"
    model_args = (
        {"arch": trained.config.classifier.arch, "num_classes": len(trained.classes)}
        if classifier
        else asdict(trained.model.args)
    )
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_name": "tinycats",
        "task": trained.config.task,
        "architecture": model_args["arch"] if classifier else "TinyDiT",
        "model_args": model_args,
        "classes": trained.classes,
        "source": {
            "run_id": trained.run_id,
            "step": trained.info.step,
            "time": trained.info.time,
            "weights": trained.weights,
        },
        "training_config": trained.config.to_dict(),
    }
    if classifier:
        doc["preprocessing"] = preprocessing(trained)
    else:
        doc["generation"] = generation(trained)
    return doc


def export_hf(
    trained: TrainedModel,
    record: dict[str, Any] | None,
    folder: Path,
    *,
    name: str | None = None,
    license_: str | None = None,
) -> HfExport:
    """Write the exported folder for `trained` (its run record supplies the card's figures)."""
    folder = Path(folder)
    write_folder(
        folder,
        lambda staging: _write_folder(trained, record, staging, name or trained.run_id, license_),
        is_ours=is_export_dir,
        kind="tinycats export",
    )
    return HfExport(
        folder=folder,
        files=sorted(p.name for p in folder.iterdir()),
        evaluated_splits=sorted(matching_evaluations(trained, record)),
    )


def _write_folder(
    trained: TrainedModel, record: dict | None, staging: Path, name: str, license_: str | None
) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in trained.model.state_dict().items()}
    save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
    (staging / CONFIG_FILE).write_text(json.dumps(export_config(trained), indent=2) + "\n")
    card = model_card(trained, record, name, license_ or default_license(trained))
    (staging / CARD_FILE).write_text(card)
    if trained.config.task == "dit":
        _sample_grid(trained).save(staging / SAMPLES_FILE)


def _sample_grid(trained: TrainedModel):
    """The card's picture: every class, fixed seed, the run's own sampling settings."""
    from tinycats.train.dit_task import every_class_grid

    return every_class_grid(trained, SAMPLES_PER_CLASS)


def hub_token() -> str:
    """The user's Hugging Face token (HF_TOKEN or `hf auth login`), or one line saying how."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        raise HubError(f"--push needs huggingface_hub; run `{HF_INSTALL_HINT}`") from None
    token = get_token()
    if not token:
        raise HubError(
            "no Hugging Face token; run `hf auth login` or set HF_TOKEN, then push again"
        )
    return token


def push_to_hub(folder: Path, repo_id: str, *, private: bool, message: str) -> str:
    """Create `repo_id` (if needed) and upload `folder` in one commit; returns the commit URL.

    huggingface_hub 2.x (read against 2.4.0): `HfApi.create_repo` POSTs /api/repos/create,
    `upload_folder` validates the card's YAML (/api/validate-yaml), asks
    /api/models/<id>/preupload/main which files are LFS, uploads those (Xet when hf_xet is
    installed, else the LFS batch API), then POSTs the ndjson commit.
    """
    token = hub_token()
    import httpx2  # huggingface_hub 2.x's HTTP client: its transport errors mean no network
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message)
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        hint = (
            "check that the token has write access to that namespace"
            if status in (401, 403)
            else "see the Hub's message"
        )
        first = str(err).strip().splitlines()[0]
        raise HubError(
            f"the Hub refused the push to {repo_id} (HTTP {status}: {first}); {hint}"
        ) from None
    except (httpx2.TransportError, OfflineModeIsEnabled) as err:
        raise HubError(
            f"cannot reach the Hugging Face Hub at {api.endpoint} ({type(err).__name__}); "
            f"check the network or HF_ENDPOINT, then push again (the export is in {folder})"
        ) from None
    return commit.commit_url


def hub_message(trained: TrainedModel) -> str:
    return f"tinycats export of run {trained.run_id}, step {trained.info.step}"
