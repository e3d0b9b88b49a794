"""tinycats as a Modal web endpoint: the FastAPI app of `tinycats serve`, on a GPU.

Read top to bottom:

1. the image: the training image's locked layers (the same, so cached and shared), then
   the server's few packages (requirements-serve.lock), then our code;
2. the outputs volume, where the runs' checkpoints are: the weights are read from it,
   never baked into the image;
3. `Server`: a class whose container loads torch and the models on the CPU before its
   memory snapshot is taken, so a cold start restores them instead of loading them;
   after the restore the models move to the GPU; then `web` hands Modal the ASGI app,
   behind Modal's proxy auth unless the deployment chose a token or --public.

Deployed by `tinycats cloud serve` (settings from cloud/serving.py, in one env var).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import modal

from tinycats.cloud import resources as res
from tinycats.cloud import serving
from tinycats.gpus import modal_gpu_argument

SETTINGS = serving.settings_from_env()
SERVE_LOCK = res.REQUIREMENTS_FILE.with_name("requirements-serve.lock")
"""FastAPI, uvicorn, python-multipart and what they need, resolved under the training lock."""
OUTPUTS_MOUNT = res.OUTPUTS_MOUNT

app = modal.App(SETTINGS.app_name)

# -- 1. the image: modal_app.py's locked layers (cached), the server's, then our code ---------

image = (
    modal.Image.debian_slim(python_version=res.PYTHON_VERSION)
    .uv_pip_install(
        requirements=[str(res.LOCK_FILE)], uv_version=res.UV_VERSION, extra_options="--no-deps"
    )
    .uv_pip_install(
        requirements=[str(SERVE_LOCK)], uv_version=res.UV_VERSION, extra_options="--no-deps"
    )
    .env(res.image_env())
    .add_local_python_source("tinycats")
)

# -- 2. the volume holding the runs ---------------------------------------------------------

outputs_volume = modal.Volume.from_name(
    SETTINGS.outputs_volume, create_if_missing=True, version=SETTINGS.volume_version
)
token_secrets = (
    [modal.Secret.from_name(SETTINGS.secret_name, required_keys=[serving.TOKEN_ENV])]
    if SETTINGS.auth == "token"
    else []
)
server_options: dict[str, Any] = {
    "image": image,
    "volumes": {OUTPUTS_MOUNT: outputs_volume},
    "env": serving.settings_env(SETTINGS),  # the container rebuilds this same App
    "secrets": token_secrets,
    "gpu": modal_gpu_argument(SETTINGS.gpu) if SETTINGS.gpu else None,
    "enable_memory_snapshot": SETTINGS.memory_snapshot,
    "scaledown_window": SETTINGS.scaledown_seconds,
}

# -- 3. the server ----------------------------------------------------------------------------


@app.cls(**server_options)
class Server:
    @modal.enter(snap=True)
    def load(self) -> None:
        """Before the snapshot: torch, the models' weights from the volume, on the CPU."""
        import torch

        from tinycats.storage import VolumeStore
        from tinycats.train.inference import load_trained_model

        store = VolumeStore(outputs_volume, Path(OUTPUTS_MOUNT))
        store.reload()  # see runs committed since this container's volume was mounted
        cpu = torch.device("cpu")
        loaded = [
            load_trained_model(store, ref, device=cpu)
            for ref in (SETTINGS.run, SETTINGS.dit)
            if ref is not None
        ]
        self.models = {trained.config.task: trained for trained in loaded}

    @modal.enter(snap=False)
    def to_gpu(self) -> None:
        """After every restore: a CPU snapshot holds no GPU state, so move the models now."""
        import torch

        if torch.cuda.is_available():
            for trained in self.models.values():
                trained.device = torch.device("cuda")
                trained.model.to(trained.device)

    @modal.asgi_app(requires_proxy_auth=SETTINGS.auth == "proxy")
    def web(self) -> Any:
        from tinycats.deploy.server import create_app

        token = os.environ[serving.TOKEN_ENV] if SETTINGS.auth == "token" else None
        return create_app(
            self.models.get("classifier"),
            self.models.get("dit"),
            settings=SETTINGS.limits,
            auth_token=token,
        )
