"""The static site in headless Chromium: same answers as Python, no console errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

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
        # the browser's resampling is not PIL's, so the probabilities differ a little
        for mine, theirs in zip(top, expected["top"], strict=True):
            assert mine["probability"] == pytest.approx(theirs["probability"], abs=0.03)
    page.set_input_files(
        "#picker", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}
    )
    assert wait_state(page, "done") == "error"
    assert "Cannot read notes.txt as an image" in page.inner_text("#status")
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
