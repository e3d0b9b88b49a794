"""`tinycats export web`: a static site that runs the models in the browser.

    index.html, classify.mjs, preprocess.mjs, resample.mjs   classify a photo (top-3 breeds)
    generate.html, generate.mjs, dit-worker.mjs, flow.mjs, noise.mjs   draw cats (with --dit)
    common.mjs, style.css                      shared by both pages
    models/classifier.onnx, models/dit.onnx    the exported networks
    models/manifest.json                       what the pages need: classes, preprocessing,
                                               prediction type, sampling defaults
    vendor/                                    onnxruntime-web, copied from web/vendor

No server code and no CDN: any static host serves it (the pages load ES modules and a
worker, so open them over http, not file://). onnxruntime-web comes from the npm
registry, pinned by web/package-lock.json and copied into web/vendor by `npm run vendor`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tinycats.deploy.folders import write_folder
from tinycats.deploy.onnx_export import export_classifier_onnx, export_dit_network_onnx
from tinycats.errors import TinycatsError
from tinycats.models.export import read_metadata
from tinycats.train.inference import TrainedModel

SITE_DIR = Path(__file__).resolve().parent / "site"
SHARED_FILES = ("common.mjs", "style.css")
CLASSIFY_FILES = ("index.html", "classify.mjs", "preprocess.mjs", "resample.mjs")
GENERATE_FILES = ("generate.html", "generate.mjs", "dit-worker.mjs", "flow.mjs", "noise.mjs")
VENDOR_ENV = "TINYCATS_ORT_WEB"
REPO_VENDOR = Path(__file__).resolve().parents[3] / "web" / "vendor"
"""Where `npm run vendor` puts onnxruntime-web in a source checkout (editable install)."""
VENDOR_MANIFEST = "vendor.json"
CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium, which the tests and benchmarks/web_demo.py drive with playwright."""
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless on a machine without a display or network: without the background-networking
flags Chromium keeps trying Google's hosts, and the connections are refused."""


@dataclass
class WebExport:
    folder: Path
    files: list[str]
    ort_web_version: str
    bytes: int


def find_vendor() -> Path:
    """The folder holding the vendored onnxruntime-web files, checked against vendor.json."""
    folder = Path(os.environ.get(VENDOR_ENV) or REPO_VENDOR)
    how = (
        "run `npm ci && npm run vendor` in the repository's web/ folder "
        f"(or set {VENDOR_ENV} to a folder it wrote)"
    )
    manifest = folder / VENDOR_MANIFEST
    if not manifest.is_file():
        raise TinycatsError(f"onnxruntime-web is not vendored ({manifest} is missing); {how}")
    files = json.loads(manifest.read_text())["files"]
    for name, info in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != info["bytes"]:
            raise TinycatsError(f"vendored {path} is missing or incomplete; {how}")
    return folder


def export_web(classifier: TrainedModel, dit: TrainedModel | None, folder: Path) -> WebExport:
    """Write the site for `classifier` (and `dit`) into `folder`, replacing an older site."""
    vendor = find_vendor()
    folder = Path(folder)
    write_folder(
        folder,
        lambda staging: _write_site(classifier, dit, vendor, staging),
        is_ours=lambda f: (f / "models" / "manifest.json").is_file(),
        kind="tinycats site",
    )
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    version = json.loads((vendor / VENDOR_MANIFEST).read_text())["version"]
    size = sum((folder / f).stat().st_size for f in files)
    return WebExport(folder=folder, files=files, ort_web_version=version, bytes=size)


def _write_site(
    classifier: TrainedModel, dit: TrainedModel | None, vendor: Path, staging: Path
) -> None:
    models = staging / "models"
    models.mkdir()
    pages = SHARED_FILES + CLASSIFY_FILES + (GENERATE_FILES if dit is not None else ())
    for name in pages:
        shutil.copyfile(SITE_DIR / name, staging / name)
    shutil.copytree(vendor, staging / "vendor")
    manifest: dict = {"classifier": _export(classifier, models / "classifier.onnx")}
    if dit is not None:
        manifest["dit"] = _export(dit, models / "dit.onnx")
    manifest["onnxruntime_web"] = json.loads((vendor / VENDOR_MANIFEST).read_text())["version"]
    (models / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _export(trained: TrainedModel, path: Path) -> dict:
    """The ONNX file of a model and its description (the file's own metadata)."""
    if trained.config.task == "classifier":
        export_classifier_onnx(trained, path)
    else:
        export_dit_network_onnx(trained, path)
    return {"file": path.name, **read_metadata(path)}


def preview_server(folder: Path, port: int = 0) -> tuple[str, ThreadingHTTPServer]:
    """Serve `folder` on 127.0.0.1 from a background thread (port 0: any free one); returns
    the base URL and the server (call `shutdown()` when done). For tests, benchmarks and a
    quick look: any static host serves the site the same way."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(Quiet, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/", server
