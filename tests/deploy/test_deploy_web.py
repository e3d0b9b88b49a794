"""The static site in headless Chromium: same answers as Python, no console errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from node_js import SITE, run_node

from tinycats.deploy.noise import portable_normal
from tinycats.deploy.onnx_run import OrtDiT
from tinycats.deploy.web import VENDOR_ENV, export_web, find_vendor, preview_server
from tinycats.errors import TinycatsError
from tinycats.models.flow import sample_from_noise
from tinycats.train.evaluation import predict_images

pytest.importorskip("onnxruntime")
PAGE_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def site(classifier, generator, tmp_path_factory):
    try:
        find_vendor()
    except TinycatsError as err:
        pytest.skip(str(err))
    folder = tmp_path_factory.mktemp("web") / "site"
    export_web(classifier, generator, folder)
    url, server = preview_server(folder)
    yield folder, url
    server.shutdown()


@pytest.fixture
def page(browser):
    """A fresh page that records every console error and uncaught exception."""
    context = browser.new_context()
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def wait_state(page, *states: str) -> str:
    condition = " || ".join(f"document.body.dataset.state === '{s}'" for s in (*states, "error"))
    page.wait_for_function(condition, timeout=PAGE_TIMEOUT_MS)
    return page.evaluate("document.body.dataset.state")


def test_classify_page_gives_predicts_top_breeds(site, page, classifier, photos) -> None:
    _, url = site
    page.goto(url + "index.html")
    assert wait_state(page, "ready") == "ready", page.inner_text("#status")
    assert page.is_hidden("#nav-generate") is False  # the site has a generator page
    for path, expected in zip(photos, predict_images(classifier, photos), strict=True):
        page.set_input_files("#picker", str(path))
        assert wait_state(page, "done") == "done", page.inner_text("#status")
        top = json.loads(page.get_attribute("#results", "data-top"))
        assert [t["breed"] for t in top] == [t["breed"] for t in expected["top"]]
        # the same pixels (resample.mjs) through two runtimes; predict rounds to 4 decimals
        for mine, theirs in zip(top, expected["top"], strict=True):
            assert mine["probability"] == pytest.approx(theirs["probability"], abs=2e-4)
    page.set_input_files(
        "#picker", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}
    )
    assert wait_state(page, "done") == "error"
    assert "Cannot read notes.txt as an image" in page.inner_text("#status")
    assert page.errors == []


PREPARED_JS = """async (name) => {
  const { prepareImage } = await import('./preprocess.mjs');
  const { loadManifest } = await import('./common.mjs');
  const pre = (await loadManifest()).classifier.preprocessing;
  const blob = await (await fetch(name)).blob();
  return Array.from(await prepareImage(blob, pre));
}"""


def test_a_large_jpeg_gets_predicts_pixels_and_answer_in_the_browser(
    site, page, classifier
) -> None:
    """A JPEG 20x the stored size, which PIL's draft would decode at 1/8 scale: predict
    decodes it at full size, as Chromium does, so the page's input is predict's."""
    import io

    from PIL import Image

    from tinycats.data.images import decode_image
    from tinycats.deploy.onnx_run import normalize_uint8
    from tinycats.train.evaluation import load_image_uint8

    folder, url = site
    height, width = 720, 960
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:height, 0:width]
    stripes = 127 + 90 * np.sin(x / 7.0)[..., None] * np.cos(y / 11.0)[..., None]
    rgb = np.clip(stripes * [1.0, 0.8, 0.5] + rng.normal(0, 25, (height, width, 3)), 0, 255)
    photo = folder / "large.jpg"
    Image.fromarray(rgb.astype(np.uint8)).save(photo, quality=90)

    config, size, crop = classifier.config, classifier.config.eval_image_size, 1.0
    expected = normalize_uint8(load_image_uint8(photo, config.data, size, crop)[None].numpy())
    page.goto(url + "index.html")
    assert wait_state(page, "ready") == "ready", page.inner_text("#status")
    got = np.asarray(page.evaluate(PREPARED_JS, "large.jpg"), dtype=np.float32)
    assert np.abs(got - expected.ravel()).max() < 1e-5  # the same uint8 pixels

    # not vacuous: PIL's reduced-scale decoding gives visibly other pixels here
    drafted = decode_image(io.BytesIO(photo.read_bytes()), config.data.stored_size, draft=True)
    full = decode_image(io.BytesIO(photo.read_bytes()), config.data.stored_size, draft=False)
    assert np.abs(drafted.astype(int) - full.astype(int)).max() >= 3
    assert (drafted != full).mean() > 0.2

    page.set_input_files("#picker", str(photo))
    assert wait_state(page, "done") == "done", page.inner_text("#status")
    top = json.loads(page.get_attribute("#results", "data-top"))
    [answer] = predict_images(classifier, [photo])
    assert [t["breed"] for t in top] == [t["breed"] for t in answer["top"]]
    for mine, theirs in zip(top, answer["top"], strict=True):
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=2e-4)
    assert page.errors == []


def test_generate_page_draws_the_python_onnx_grid_for_a_seed(site, page, generator) -> None:
    folder, url = site
    page.goto(url + "generate.html")
    assert wait_state(page, "ready") == "ready", page.inner_text("#status")
    page.select_option("#breed", "2")
    page.fill("#steps", "4")
    page.fill("#cfg", "2.5")
    page.fill("#seed", "7")
    page.fill("#n", "2")
    page.click("#go")
    assert wait_state(page, "done") == "done", page.inner_text("#status")
    last = page.evaluate("window.tinycatsLast")
    assert last["n"] == 2 and last["shape"] == [3, 32, 32] and last["backend"] == "wasm"
    browser_images = np.asarray(last["images"], dtype=np.float32).reshape(2, 3, 32, 32)

    network = OrtDiT(folder / "models" / "dit.onnx")
    noise = torch.from_numpy(portable_normal(7, (2, 3, 32, 32)))
    python = sample_from_noise(
        network,
        torch.tensor([2, 2]),
        noise,
        steps=4,
        cfg_scale=2.5,
        sampler=generator.config.dit.sampler,
    ).numpy()
    assert np.abs(browser_images - python).max() < 1e-3
    assert np.abs(python - noise.clamp(-1, 1).numpy()).mean() > 0.01  # not vacuous
    assert page.locator("#grid canvas").count() == 2
    assert page.errors == []


def test_export_without_vendored_onnxruntime_web_says_how_to_build_it(
    classifier, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv(VENDOR_ENV, str(tmp_path / "empty"))
    with pytest.raises(TinycatsError, match=r"npm ci && npm run vendor"):
        export_web(classifier, None, tmp_path / "site")
    assert not (tmp_path / "site").exists()


PIXELS_JS = """
import('{module}').then((m) => {{
  const raw = require('node:fs').readFileSync('{path}');
  const rgba = new Uint8ClampedArray(raw.buffer, raw.byteOffset, raw.length);
  const out = m.predictPixels(rgba, {width}, {height}, {stored}, {crop}, {size});
  console.log(JSON.stringify(Array.from(out)));
}});
"""


@pytest.mark.parametrize(
    ("width", "height", "stored", "crop", "size"),
    [
        (97, 61, 40, 0.75, 24),  # landscape, both resizes shrink
        (50, 83, 40, 1.0, 40),  # portrait: Pillow 13 resizes vertically first; no torch resize
        (64, 82, 46, 0.875, 40),  # portrait, but Pillow resizes horizontally first
        (37, 29, 48, 0.875, 32),  # PIL enlarges, torch shrinks
        (64, 64, 32, 0.7, 32),  # a square already at size: torch enlarges the crop
    ],
)
def test_the_pages_pixels_are_predicts_to_the_pixel(
    tmp_path, width, height, stored, crop, size
) -> None:
    """site/resample.mjs against decode_image + central_box + resize_crop on a PNG (the
    decoding itself: test_a_large_jpeg_gets_predicts_pixels_and_answer_in_the_browser)."""
    import io

    from PIL import Image

    from tinycats.data.dataset import central_box, resize_crop
    from tinycats.data.images import decode_image

    rng = np.random.default_rng(width * height)
    smooth = np.linspace(0, 255, width)[None, :, None] * np.linspace(0.2, 1, height)[:, None, None]
    rgb = np.clip(smooth + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    png.seek(0)
    square = decode_image(png, stored)
    expected = resize_crop(square, central_box(stored, stored, crop), size).permute(1, 2, 0)

    raw = tmp_path / "rgba.bin"
    raw.write_bytes(np.concatenate([rgb, np.full((height, width, 1), 255, np.uint8)], 2).tobytes())
    script = PIXELS_JS.format(
        module=SITE / "resample.mjs",
        path=raw,
        width=width,
        height=height,
        stored=stored,
        crop=crop,
        size=size,
    )
    got = np.asarray(run_node(script), dtype=np.int16).reshape(size, size, 4)[..., :3]
    assert np.array_equal(got, expected.numpy().astype(np.int16))
    assert expected.float().std() > 10  # a textured image: the filters' taps matter
