"""The inference server: one FastAPI app behind `tinycats serve` and `tinycats cloud serve`.

    POST /predict            an image (the request body, or multipart field "file") → top-k JSON
    GET  /sample?breed=...   a PNG grid of generated cats (seed, n, steps, cfg optional)
    GET  /health             which models are loaded (never touches one)

A photo is prepared by the very functions `tinycats predict` uses, so both give the same
answer. Bad requests get a 4xx with one sentence naming the problem and the fix, and
cost nothing: an upload is capped in bytes while it streams in (413 before the cap is
passed, whatever Content-Length claimed), and in pixels before any pixel is decoded (a
decompression bomb is refused from its header). With a bearer token, every model
endpoint checks it first: a request without it never reaches a model.
"""

from __future__ import annotations

import hmac
import io
import threading
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from tinycats.config import ServeConfig
from tinycats.errors import ImageTooLargeError, TinycatsError
from tinycats.train.inference import TrainedModel

MULTIPART = "multipart/form-data"
UPLOAD_FIELD = "file"


class UploadTooLarge(Exception):
    """The request body passed the byte cap while streaming in."""


class BodyCap:
    """ASGI middleware: refuse a body over `max_bytes`, by Content-Length or while reading.

    A client may send no Content-Length (chunked) or a false one, so the bytes are also
    counted as they arrive; the count raising inside `receive` stops the read there.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode() or "0"
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, _too_large(self.max_bytes))
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise UploadTooLarge
            return message

        await self.app(scope, counted, send)


def _too_large(max_bytes: int) -> str:
    return f"upload over {max_bytes:,} bytes; send a smaller image"


async def _send_json(send: Any, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    classifier: TrainedModel | None,
    dit: TrainedModel | None,
    *,
    settings: ServeConfig | None = None,
    auth_token: str | None = None,
) -> Any:
    """The ASGI app serving the given models; `auth_token` requires `Bearer <token>`.

    FastAPI reads the endpoints' annotations, so its names are imported at module level
    (this module is imported only by the serve commands, inside them).
    """
    settings = settings or ServeConfig()
    locks = {"classifier": threading.Lock(), "dit": threading.Lock()}
    app = FastAPI(
        title="tinycats",
        description="Cat breeds from photos, and cats of a breed from noise.",
        docs_url=None,  # no CDN-hosted Swagger page; the schema stays at /openapi.json
        redoc_url=None,
    )

    def authorised(request: Request) -> None:
        if auth_token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise HTTPException(
                401,
                "missing credentials; send the header 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.encode(), auth_token.encode()
        ):
            raise HTTPException(403, "wrong token; use the token the server was started with")

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, exc: UploadTooLarge) -> JSONResponse:
        return JSONResponse({"detail": _too_large(settings.max_upload_bytes)}, status_code=413)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "models": [m.config.task for m in (classifier, dit) if m]}

    @app.post("/predict", dependencies=[Depends(authorised)])
    async def predict(request: Request, top_k: int = settings.top_k) -> dict[str, Any]:
        if classifier is None:
            raise HTTPException(
                404, "this server has no classifier; start it with a classifier run"
            )
        if top_k < 1:
            raise HTTPException(422, f"top_k={top_k}; ask for at least 1 breed")
        if request.headers.get("content-type", "").startswith(MULTIPART):
            form = await request.form(max_files=1, max_fields=4)
            upload = form.get(UPLOAD_FIELD)
            if not isinstance(upload, UploadFile):
                raise HTTPException(
                    422, f"no file in the form; send the image as field '{UPLOAD_FIELD}'"
                )
            data = await upload.read()
        else:
            data = await request.body()
        if not data:
            raise HTTPException(
                400,
                f"empty body; send a JPEG, PNG or WebP as the body or as form field '{UPLOAD_FIELD}'",
            )
        top = await run_in_threadpool(
            _classify, classifier, data, top_k, settings, locks["classifier"]
        )
        return {"top": top, "run_id": classifier.run_id, "step": classifier.info.step}

    @app.get("/sample", dependencies=[Depends(authorised)])
    async def sample(
        breed: str,
        seed: int = 0,
        n: int = 4,
        steps: int | None = None,
        cfg: float | None = None,
    ) -> Response:
        if dit is None:
            raise HTTPException(404, "this server has no generator; start it with --dit RUN")
        if breed not in dit.classes:
            raise HTTPException(
                422, f"unknown breed {breed!r}; choose one of {', '.join(dit.classes)}"
            )
        if not 1 <= n <= settings.max_samples:
            raise HTTPException(422, f"n={n}; ask for 1 to {settings.max_samples} samples")
        steps = dit.config.dit.sample_steps if steps is None else steps
        if not 1 <= steps <= settings.max_sample_steps:
            raise HTTPException(422, f"steps={steps}; ask for 1 to {settings.max_sample_steps}")
        if seed < 0:
            raise HTTPException(422, f"seed={seed}; use a seed >= 0")
        cfg = dit.config.dit.cfg_scale if cfg is None else cfg
        png = await run_in_threadpool(_sample_png, dit, breed, seed, n, steps, cfg, locks["dit"])
        return Response(png, media_type="image/png")

    return BodyCap(app, settings.max_upload_bytes)


def _classify(
    trained: TrainedModel, data: bytes, top_k: int, settings: ServeConfig, lock: threading.Lock
) -> list[dict[str, Any]]:
    """The uploaded bytes through predict's own preparation and ranking."""
    from tinycats.train.evaluation import load_image_uint8, top_k_breeds

    config = trained.config
    try:
        image = load_image_uint8(
            io.BytesIO(data),
            config.data,
            config.eval_image_size,
            config.eval_crop,
            max_pixels=settings.max_pixels,
        )
    except ImageTooLargeError as err:
        raise HTTPException(413, str(err)) from None
    except TinycatsError as err:
        raise HTTPException(415, str(err)) from None
    with lock:
        return top_k_breeds(trained, image[None], top_k)[0]


def _sample_png(
    trained: TrainedModel,
    breed: str,
    seed: int,
    n: int,
    steps: int,
    cfg: float,
    lock: threading.Lock,
) -> bytes:
    from tinycats.train.dit_task import sample_grid

    with lock:
        grid = sample_grid(
            trained.model,
            trained.classes,
            [trained.classes.index(breed)],
            per_class=n,
            steps=steps,
            cfg_scale=cfg,
            sampler=trained.config.dit.sampler,
            seed=seed,
            device=trained.device,
        )
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()
