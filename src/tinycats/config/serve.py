"""The inference server's config: set when a server starts, never part of a run's config."""

from __future__ import annotations

from pydantic import Field

from tinycats.config.schema import Section

SERVE_TOKEN_ENV = "TINYCATS_SERVE_TOKEN"
"""The server's bearer token: `tinycats serve --token`'s variable, and the key of the Modal
Secret that `tinycats cloud serve --auth token` creates."""


class ServeConfig(Section):
    """The inference server (`tinycats serve`, `tinycats cloud serve`): what one request may
    ask for. Not part of a run's config: a server is configured when it starts."""

    host: str = Field("127.0.0.1", description="local bind address; 0.0.0.0 exposes it")
    port: int = Field(8000, ge=1, le=65535)
    max_upload_bytes: int = Field(
        10 * 2**20, ge=1024, description="largest accepted upload (413 beyond)"
    )
    max_pixels: int = Field(
        40_000_000, ge=64 * 64, description="largest image (width x height) decoded (413 beyond)"
    )
    max_samples: int = Field(16, ge=1, le=256, description="most images one /sample draws")
    max_sample_steps: int = Field(200, ge=1, le=1000, description="most ODE steps one /sample runs")
    top_k: int = Field(3, ge=1, description="breeds /predict returns unless asked")
