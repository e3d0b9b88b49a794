"""The web demo in headless Chromium: how long the browser takes, and the docs' screenshots.

Exports the site (`tinycats export web`), serves it on 127.0.0.1, and drives Debian's
Chromium with playwright: the time until each page is ready, the in-browser time to
classify each photo (onnxruntime-web, WebAssembly, one thread) and to draw a grid with
the generator (in its worker), then screenshots of both pages with `--screenshots DIR`.

    python benchmarks/web_demo.py --run CLF_RUN --dit DIT_RUN --photos DIR --screenshots docs
    python benchmarks/web_demo.py --smoke   # untrained tiny models (seconds)

Without Chromium or the vendored onnxruntime-web it says what is missing and exits 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tinycats.config import build_config
from tinycats.data.synthetic import render_synthetic
from tinycats.deploy.web import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    export_web,
    find_vendor,
    preview_server,
)
from tinycats.errors import TinycatsError
from tinycats.train.evaluation import predict_images
from tinycats.train.inference import untrained_model


def ready(page, timeout_ms: int = 300_000) -> float:
    started = time.perf_counter()
    page.wait_for_function(
        "['ready', 'done', 'error'].includes(document.body.dataset.state)", timeout=timeout_ms
    )
    state = page.evaluate("document.body.dataset.state")
    if state == "error":
        raise RuntimeError(page.inner_text("#status"))
    return time.perf_counter() - started


def top_line(top: list[dict]) -> str:
    return ", ".join(f"{t['breed']} {t['probability']:.1%}" for t in top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained classifier run")
    parser.add_argument("--dit", help="a trained DiT run")
    parser.add_argument("--out", default="tinycats-out", help="store root of the runs")
    parser.add_argument("--photos", help="a folder of photos to classify")
    parser.add_argument("--breed", type=int, default=0, help="class index to generate")
    parser.add_argument("--n", type=int, default=4, help="samples to generate")
    parser.add_argument("--screenshots", help="write web-classify.png and web-generate.png here")
    parser.add_argument("--smoke", action="store_true", help="untrained tiny models")
    args = parser.parse_args()
    try:
        find_vendor()
        from playwright.sync_api import sync_playwright
    except (TinycatsError, ImportError) as err:
        print(f"skipped: {err}")
        return
    if shutil.which("chromium") is None:
        print(f"skipped: no Chromium at {CHROMIUM} (apt-get install -y chromium)")
        return

    if args.run:
        from tinycats.cli.infer import load_pair

        models = load_pair(Path(args.out), args.run, args.dit)
        classifier, dit = models["classifier"], models.get("dit")
    else:
        classes = [f"breed_{i}" for i in range(12)]
        size = 32 if args.smoke else 128
        classifier = untrained_model(
            build_config("classifier", overrides=[f"data.image_size={size}"]), classes
        )
        dit = untrained_model(build_config("dit", overrides=["dit.sample_steps=4"]), classes)
    with tempfile.TemporaryDirectory() as scratch:
        if args.photos:
            photos = sorted(p for p in Path(args.photos).iterdir() if p.is_file())[:12]
        else:
            photos = []
            for i in range(4):
                photos.append(Path(scratch) / f"photo{i}.png")
                Image.fromarray(render_synthetic(i, i, 96, seed=0)).save(photos[-1])
        site = Path(scratch) / "site"
        exported = export_web(classifier, dit, site)
        print(f"site: {exported.bytes / 1e6:.1f} MB, onnxruntime-web {exported.ort_web_version}")
        url, server = preview_server(site)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS))
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            errors: list[str] = []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(url + "index.html")
            print(f"classify page ready in {ready(page):.2f} s")
            times, browser_top = [], []
            for photo in photos:
                page.set_input_files("#picker", str(photo))
                page.wait_for_function("document.body.dataset.state !== 'busy'")
                ready(page)
                times.append(float(page.get_attribute("#results", "data-ms")))
                browser_top.append(json.loads(page.get_attribute("#results", "data-top")))
                print(f"  {page.inner_text('#status')}")
            print(
                f"classify in the browser: p50 {np.median(times):.1f} ms over {len(times)} photos"
            )
            python_top = [answer["top"] for answer in predict_images(classifier, photos)]
            same, moved = 0, 0.0
            for photo, mine, theirs in zip(photos, browser_top, python_top, strict=True):
                same += mine[0]["breed"] == theirs[0]["breed"]
                if mine[0]["breed"] != theirs[0]["breed"]:
                    print(f"  {photo.name}: browser {top_line(mine)}; predict {top_line(theirs)}")
                python_p = {t["breed"]: t["probability"] for t in theirs}
                moved = max(
                    [moved]
                    + [
                        abs(t["probability"] - python_p[t["breed"]])
                        for t in mine
                        if t["breed"] in python_p
                    ]
                )
            print(
                f"browser top-1 = `tinycats predict` top-1 on {same} of {len(photos)} photos; "
                f"top-3 probabilities within {100 * moved:.2f} points"
            )
            if args.screenshots:
                page.screenshot(
                    path=str(Path(args.screenshots) / "web-classify.png"), full_page=True
                )
            if dit is not None:
                page.goto(url + "generate.html")
                print(f"generate page ready in {ready(page):.2f} s")
                page.select_option("#breed", str(args.breed))
                page.fill("#n", str(args.n))
                page.click("#go")
                page.wait_for_function("document.body.dataset.state !== 'busy'", timeout=600_000)
                ready(page)
                last = page.evaluate("window.tinycatsLast")
                steps = page.input_value("#steps")
                print(
                    f"generate {last['n']} samples, {steps} steps, guidance "
                    f"{page.input_value('#cfg')}: {last['ms'] / 1000:.1f} s ({last['backend']})"
                )
                if args.screenshots:
                    page.screenshot(
                        path=str(Path(args.screenshots) / "web-generate.png"), full_page=True
                    )
            print(f"console errors: {len(errors)}")
            browser.close()
        server.shutdown()


if __name__ == "__main__":
    main()
