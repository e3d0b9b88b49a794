"""The FastAPI server, in-process with TestClient: answers, refusals, and authentication."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tinycats.config import ServeConfig
from tinycats.train.evaluation import predict_images

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient

from tinycats.deploy.server import create_app

LIMITS = ServeConfig(max_upload_bytes=300_000, max_pixels=4_000_000)
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Counter:
    """Counts forward calls of a model (a hook, so the model itself is untouched)."""

    def __init__(self, model) -> None:
        self.calls = 0
        self.handle = model.register_forward_hook(self._count)

    def _count(self, *args) -> None:
        self.calls += 1


@pytest.fixture(scope="module")
def client(classifier, generator):
    return TestClient(create_app(classifier, generator, settings=LIMITS, auth_token=TOKEN))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_photo_gets_the_same_answer_as_predict(client, classifier, photos) -> None:
    expected = predict_images(classifier, photos)
    for path, answer in zip(photos, expected, strict=True):
        raw = client.post("/predict", content=path.read_bytes(), headers=AUTH)
        form = client.post("/predict", files={"file": (path.name, path.read_bytes())}, headers=AUTH)
        assert raw.status_code == form.status_code == 200, raw.text
        assert raw.json()["top"] == form.json()["top"] == answer["top"]
    assert raw.json()["run_id"] == "clf"
    top5 = client.post("/predict?top_k=5", content=photos[0].read_bytes(), headers=AUTH).json()
    assert len(top5["top"]) == 4  # every class, no more


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"GIF89a but not really an image", 415, "cannot read the uploaded image"),
        (b"", 400, "empty body"),
        (b"\xff" * 400_000, 413, "upload over 300,000 bytes"),
        # 20000 x 20000 one-bit pixels: ~50 kB of PNG claiming 400 million pixels (PIL's
        # own bomb check fires), and 3000 x 3000: under PIL's, over the server's 4 million
        ("bomb", 413, "pixels"),
        ("large", 413, "3000x3000 pixels, over the limit of 4,000,000"),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_clear_message_and_the_server_keeps_serving(
    client, photos, body, status, message
) -> None:
    if body == "bomb":
        body = png_bytes(Image.new("1", (20_000, 20_000)))
    elif body == "large":
        body = png_bytes(Image.new("1", (3000, 3000)))
    assert len(body) < LIMITS.max_upload_bytes or status == 413
    response = client.post("/predict", content=body, headers=AUTH)
    assert response.status_code == status and message in response.json()["detail"]
    assert client.post("/predict", content=photos[0].read_bytes(), headers=AUTH).status_code == 200


def test_a_streamed_upload_is_cut_off_at_the_cap(client) -> None:
    def chunks():  # no Content-Length: the server counts the bytes as they arrive
        for _ in range(10):
            yield b"\x00" * 50_000

    response = client.post("/predict", content=chunks(), headers=AUTH)
    assert response.status_code == 413 and "300,000 bytes" in response.json()["detail"]


def test_requests_without_the_token_get_401_or_403_and_never_reach_a_model(
    client, classifier, generator, photos
) -> None:
    counters = [Counter(classifier.model), Counter(generator.model)]
    try:
        cases = [
            ({}, 401),
            ({"Authorization": "Bearer wrong"}, 403),
            ({"Authorization": f"Basic {TOKEN}"}, 403),
        ]
        for headers, status in cases:
            predict = client.post("/predict", content=photos[0].read_bytes(), headers=headers)
            sample = client.get("/sample?breed=00_circle_plain", headers=headers)
            assert predict.status_code == sample.status_code == status
        assert predict.headers.get("www-authenticate") is None  # only on the missing case
        assert [c.calls for c in counters] == [0, 0]
        assert client.get("/health").json() == {"status": "ok", "models": ["classifier", "dit"]}
        assert (
            client.post("/predict", content=photos[0].read_bytes(), headers=AUTH).status_code == 200
        )
        assert counters[0].calls == 1
    finally:
        for counter in counters:
            counter.handle.remove()


def test_sample_returns_the_png_grid_of_sample(client, generator) -> None:
    from tinycats.train.dit_task import sample_grid

    response = client.get("/sample?breed=01_square_plain&seed=5&n=2&steps=3&cfg=2", headers=AUTH)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    expected = sample_grid(
        generator.model,
        generator.classes,
        [1],
        per_class=2,
        steps=3,
        cfg_scale=2.0,
        sampler=generator.config.dit.sampler,
        seed=5,
        device=generator.device,
    )
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(response.content))), np.asarray(expected)
    )
    for query, text in [
        ("breed=Tabby", "unknown breed 'Tabby'; choose one of 00_circle_plain"),
        ("breed=01_square_plain&n=99", "ask for 1 to 16 samples"),
        ("breed=01_square_plain&steps=0", "ask for 1 to 200"),
        ("breed=01_square_plain&seed=-1", "use a seed >= 0"),
    ]:
        bad = client.get(f"/sample?{query}", headers=AUTH)
        assert bad.status_code == 422 and text in bad.json()["detail"]


def test_a_server_without_a_generator_says_how_to_add_one(classifier) -> None:
    client = TestClient(create_app(classifier, None))  # no token: local use
    response = client.get("/sample?breed=x")
    assert response.status_code == 404 and "--dit RUN" in response.json()["detail"]
