"""`tinycats serve` (this machine, uvicorn, 127.0.0.1 by default) and `tinycats cloud serve`
(the same app as a Modal web endpoint)."""

from __future__ import annotations

from typing import Annotated

import typer

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    JsonOption,
    OutOption,
    RefArgument,
    console,
    err_console,
    print_json,
)
from tinycats.config import SERVE_TOKEN_ENV as TOKEN_ENV
from tinycats.config import ServeConfig

SERVE_INSTALL_HINT = 'pip install "tinycats[serve]"'
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_DEFAULTS = ServeConfig()
MaxUploadOption = Annotated[
    int, typer.Option("--max-upload-bytes", min=1024, help="Largest upload accepted (413 beyond).")
]
MaxPixelsOption = Annotated[
    int, typer.Option("--max-pixels", min=4096, help="Largest image decoded, width x height.")
]


def require_serve() -> None:
    """One line naming the extra when FastAPI or uvicorn is missing."""
    from tinycats.errors import TinycatsError

    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart, for form uploads)
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise TinycatsError(f"serving needs {err.name}; run `{SERVE_INSTALL_HINT}`") from None


def serve_command(
    ref: RefArgument,
    dit: Annotated[
        str | None, typer.Option("--dit", help="Also serve GET /sample with this DiT run.")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Bind address; 0.0.0.0 exposes the server to the network.")
    ] = _DEFAULTS.host,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = _DEFAULTS.port,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=TOKEN_ENV,
            help=f"Require 'Authorization: Bearer <token>' on /predict and /sample (env {TOKEN_ENV}).",
        ),
    ] = None,
    max_upload_bytes: MaxUploadOption = _DEFAULTS.max_upload_bytes,
    max_pixels: MaxPixelsOption = _DEFAULTS.max_pixels,
    out: OutOption = DEFAULT_OUT_PATH,
) -> None:
    """Serve POST /predict, GET /sample and GET /health for a trained run (or exported folder)."""
    require_serve()
    import uvicorn

    from tinycats.cli.infer import load_pair
    from tinycats.deploy.server import create_app

    models = load_pair(out, ref, dit)
    settings = ServeConfig(
        host=host, port=port, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels
    )
    if host not in LOOPBACK and not token:
        err_console.print(
            f"[yellow]warning:[/] serving on {host} without a token: anyone who can reach "
            f"this port can use the model (set {TOKEN_ENV} or pass --token)",
            highlight=False,
        )
    app = create_app(
        models.get("classifier"), models.get("dit"), settings=settings, auth_token=token
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


def cloud_serve_command(
    run: Annotated[
        str | None,
        typer.Argument(help="A classifier (or DiT) run id on the outputs volume."),
    ] = None,
    dit: Annotated[
        str | None, typer.Option("--dit", help="A DiT run id on the outputs volume, for /sample.")
    ] = None,
    auth: Annotated[
        str,
        typer.Option(
            "--auth",
            help="proxy: Modal's proxy auth (Modal-Key/Modal-Secret headers, checked before "
            "a container starts); token: a bearer token kept in a Modal Secret.",
        ),
    ] = "proxy",
    public: Annotated[
        bool, typer.Option("--public", help="No authentication at all (warns: anyone can call it).")
    ] = False,
    gpu: Annotated[
        str | None, typer.Option("--gpu", help="GPU per container (default T4; 'none' for CPU).")
    ] = "T4",
    name: Annotated[str, typer.Option("--name", help="Modal app name.")] = "tinycats-serve",
    max_upload_bytes: MaxUploadOption = _DEFAULTS.max_upload_bytes,
    max_pixels: MaxPixelsOption = _DEFAULTS.max_pixels,
    json_: JsonOption = False,
) -> None:
    """Deploy the same server as a Modal web endpoint (memory snapshot, weights from the volume)."""
    from tinycats.cloud.serving import AUTH_MODES, PUBLIC_WARNING, build_settings, deploy
    from tinycats.errors import ConfigError

    if auth not in AUTH_MODES[:2]:
        raise ConfigError(f"--auth {auth!r}; choose proxy or token (or pass --public)")
    if public:
        err_console.print(f"[yellow]warning:[/] {PUBLIC_WARNING}", highlight=False)
    settings = build_settings(
        run=run,
        dit=dit,
        auth="public" if public else auth,
        gpu=None if (gpu or "").lower() == "none" else gpu,
        app_name=name,
        limits=ServeConfig(max_upload_bytes=max_upload_bytes, max_pixels=max_pixels),
    )
    result = deploy(settings)
    if json_:
        print_json(result)
        return
    console.print(f"serving at {result['url']} ({settings.auth} auth)", highlight=False)
    if result["new_token"]:
        console.print(
            f"bearer token (shown once; stored in Modal Secret {settings.secret_name!r}): "
            f"{result['new_token']}",
            highlight=False,
        )
    elif settings.auth == "proxy":
        console.print(
            "requests need the headers Modal-Key and Modal-Secret of a proxy auth token "
            "(Modal dashboard → Settings → Proxy Auth Tokens)",
            highlight=False,
        )
