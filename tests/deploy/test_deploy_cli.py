"""The share-and-serve commands as a user runs them: `bench inference`, `serve`'s bind
address, and `export hf --push` through HF_ENDPOINT in a fresh process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tinycats.deploy.latency import LatencyRow, format_rows

pytest.importorskip("onnxruntime")

CLASSIFIER_VARIANTS = (
    "pytorch eager",
    "pytorch channels-last",
    "onnxruntime fp32",
    "onnxruntime int8",
)


def test_bench_inference_times_every_runtime_at_batch_1_and_32_and_the_dit(store_root, cli) -> None:
    result = cli(
        *("bench", "inference", "clf", "--dit", "gen", "--rounds", "3", "--dit-rounds", "1"),
        *("--out", str(store_root), "--json"),
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["model"], r["variant"], r["batch"]) for r in rows] == [
        *(("classifier", v, b) for b in (1, 32) for v in CLASSIFIER_VARIANTS),
        ("dit 50-step guided sample", "pytorch", 1),
        ("dit 50-step guided sample", "onnxruntime", 1),
    ]
    for row in rows:
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["calls"] == (3 if row["model"] == "classifier" else 1)
    assert [r["max_abs_diff"] for r in rows[:9]] == [None] * 9
    assert 0 < rows[9]["max_abs_diff"] < 1e-3  # onnxruntime's sample is PyTorch's
    table = format_rows([LatencyRow(**row) for row in rows]).splitlines()
    assert table[0].split()[:3] == ["model", "variant", "batch"] and len(table) == 11
    assert table[1].endswith(" 1.00x") and table[5].endswith(" 1.00x")  # eager is the base
    slower = rows[9]["p50_ms"] / rows[8]["p50_ms"]  # onnxruntime's sample vs PyTorch's
    assert table[-1].split()[-2:] == [f"{slower:.2f}x", f"{rows[9]['max_abs_diff']:.1e}"]


@pytest.mark.parametrize(
    ("args", "host", "warned"),
    [
        ((), "127.0.0.1", False),
        (("--host", "0.0.0.0"), "0.0.0.0", True),
        (("--host", "0.0.0.0", "--token", "t0ken"), "0.0.0.0", False),
    ],
)
def test_serve_binds_to_loopback_unless_told_and_warns_without_a_token(
    store_root, monkeypatch, cli, args, host, warned
) -> None:
    pytest.importorskip("fastapi")
    import uvicorn
    from fastapi.testclient import TestClient

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    monkeypatch.delenv("TINYCATS_SERVE_TOKEN", raising=False)
    result = cli("serve", "clf", *args, "--out", str(store_root))
    assert result.returncode == 0, result.stderr
    assert started["host"] == host and started["port"] == 8000
    assert ("anyone who can reach this port" in result.stderr) is warned
    client = TestClient(started["app"])
    assert client.get("/health").json() == {"status": "ok", "models": ["classifier"]}
    unauthorised = client.post("/predict", content=b"x").status_code
    assert unauthorised == (401 if "--token" in args else 415)


def test_export_hf_push_through_hf_endpoint_sends_the_folder(store_root, tmp_path) -> None:
    import fake_hub

    hub, server = fake_hub.start(token="hf_cli_token")
    target = tmp_path / "cats-clf"
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": hub.token,
        "HF_HUB_DISABLE_XET": "1",  # the fake speaks LFS, not Xet (fake_hub's docstring)
        "HF_HOME": str(tmp_path / "hf-home"),  # no saved token, no cache of the user's
    }
    try:
        args = ["export", "hf", "clf", "-o", str(target), "--push", "bob/cats"]
        result = subprocess.run(
            [sys.executable, "-m", "tinycats", *args, "--out", str(store_root), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pushed"].startswith(f"{hub.url}/bob/cats/commit/")
    sent = hub.repos["bob/cats"]["files"]
    assert sorted(sent) == sorted(report["files"]) == sorted(p.name for p in target.iterdir())
    for name, data in sent.items():
        assert (
            hashlib.sha256(data).digest() == hashlib.sha256((target / name).read_bytes()).digest()
        )
    assert hub.repos["bob/cats"]["private"] is False
