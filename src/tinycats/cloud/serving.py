"""`tinycats cloud serve`: what the Modal web endpoint is built from, and its deployment.

The settings (runs, authentication, limits, GPU) travel to the container in one
environment variable, as the training App's do, so the container rebuilds the very App
that was deployed. Authentication, by default, is Modal's proxy auth: the endpoint is
created with `requires_proxy_auth=True` (modal 1.6.4 `_partial_function._asgi_app`), so
Modal's edge refuses any request without the workspace's `Modal-Key`/`Modal-Secret`
headers before a container (or a GPU) is touched. `--auth token` instead checks a bearer
token held in a Modal Secret inside the app; `--public` serves anyone, on request only.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tinycats.config import SERVE_TOKEN_ENV as TOKEN_ENV
from tinycats.config import ModalConfig, ServeConfig
from tinycats.errors import ConfigError
from tinycats.gpus import parse_gpu_spec

SETTINGS_ENV = "TINYCATS_SERVE_SETTINGS"
AUTH_MODES = ("proxy", "token", "public")
PUBLIC_WARNING = (
    "--public: anyone with the URL can call this endpoint, and each call runs on a GPU "
    "billed to your workspace; prefer the default proxy auth or --auth token"
)


class CloudServeSettings(BaseModel):
    """Everything the endpoint's container needs to rebuild the deployed App."""

    model_config = ConfigDict(extra="forbid")

    run: str | None = None  # a classifier run (or a DiT run, when it is the only model)
    dit: str | None = None
    auth: Literal["proxy", "token", "public"] = "proxy"
    secret_name: str = "tinycats-serve-token"
    gpu: str | None = "T4"
    app_name: str = "tinycats-serve"
    outputs_volume: str = ModalConfig().outputs_volume
    volume_version: Literal[1, 2] = 1
    memory_snapshot: bool = True
    scaledown_seconds: int = Field(300, ge=2, le=3600)
    limits: ServeConfig = Field(default_factory=ServeConfig)

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, gpu: str | None) -> str | None:
        """Checked as `modal.gpu` is (tinycats.gpus), fallback lists included."""
        return ",".join(str(r) for r in parse_gpu_spec(gpu)) if gpu else None


def build_settings(**values: object) -> CloudServeSettings:
    """Validated settings, with one line per problem (as config errors are)."""
    try:
        settings = CloudServeSettings(**values)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid serve setting {key}: {message}") from None
    if settings.run is None and settings.dit is None:
        raise ConfigError("nothing to serve; pass a classifier run and/or --dit RUN")
    return settings


def settings_env(settings: CloudServeSettings) -> dict[str, str]:
    return {SETTINGS_ENV: settings.model_dump_json()}


def settings_from_env(environ: Mapping[str, str] | None = None) -> CloudServeSettings:
    """The deployed settings in the container (the defaults when the module is imported
    elsewhere, e.g. to build the App offline in a test)."""
    raw = (os.environ if environ is None else environ).get(SETTINGS_ENV)
    if not raw:
        return CloudServeSettings()
    try:
        return CloudServeSettings.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as err:
        raise ConfigError(f"{SETTINGS_ENV} is not valid ({err}); unset it and retry") from None


def ensure_token_secret(name: str) -> str | None:
    """Create the Modal Secret holding a fresh bearer token if it does not exist yet.

    Returns the new token (to print once: a Secret's values cannot be read back), or None
    when the Secret already existed (modal 1.6.4 `Secret.from_name(...).hydrate()` raises
    NotFoundError for a missing one; `Secret.objects.create` makes it).
    """
    import modal

    try:
        modal.Secret.from_name(name, required_keys=[TOKEN_ENV]).hydrate()
        return None
    except modal.exception.NotFoundError:
        token = secrets.token_urlsafe(32)
        modal.Secret.objects.create(name, {TOKEN_ENV: token})
        return token


def deploy(settings: CloudServeSettings) -> dict[str, str | None]:
    """Deploy the endpoint App with these settings; returns its URL (and a new token)."""
    import importlib

    import modal

    from tinycats.cloud.client import CloudError

    os.environ.update(settings_env(settings))
    token = ensure_token_secret(settings.secret_name) if settings.auth == "token" else None
    module = importlib.import_module("tinycats.cloud.serve_app")
    if settings != module.SETTINGS:
        module = importlib.reload(module)
    try:
        with modal.enable_output():
            module.app.deploy(name=settings.app_name)
    except modal.exception.AuthError as err:
        raise CloudError(f"Modal rejected the credentials ({err}); run `modal token new`") from None
    url = module.Server().web.get_web_url()
    return {"url": url, "auth": settings.auth, "new_token": token}
