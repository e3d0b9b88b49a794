"""ONNX of both models, the onnxruntime sampling loop, int8, latency and portable noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from node_js import SITE, run_node

from tinycats.deploy.noise import portable_normal
from tinycats.deploy.onnx_export import export_dit_network_onnx
from tinycats.deploy.onnx_run import OrtDiT
from tinycats.models.export import read_metadata
from tinycats.models.flow import MIN_ONE_MINUS_T, sample_from_noise
from tinycats.storage import RunRegistry

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def dit_onnx(generator, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "dit.onnx"
    assert export_dit_network_onnx(generator, path) <= 1e-4
    return path


def test_dit_export_describes_its_network(dit_onnx, generator) -> None:
    meta = read_metadata(dit_onnx)
    assert meta["image_shape"] == [3, 32, 32] and meta["null_class"] == 4
    assert meta["prediction"] == generator.model.prediction == "x"  # the config's default
    assert meta["noise_scale"] == generator.model.noise_scale
    assert meta["min_one_minus_t"] == MIN_ONE_MINUS_T
    assert meta["classes"] == generator.classes and meta["generation"]["sample_steps"] == 8


@pytest.mark.parametrize(("sampler", "cfg"), [("euler", 3.0), ("heun", 1.0)])
def test_a_sampling_loop_in_onnxruntime_draws_the_pytorch_grid(
    dit_onnx, generator, sampler, cfg
) -> None:
    """The same noise through the same loop, the network in PyTorch or onnxruntime."""
    y = torch.tensor([0, 1, 2, 3])
    noise = torch.from_numpy(portable_normal(11, (4, 3, 32, 32)))
    options = dict(steps=6, cfg_scale=cfg, sampler=sampler)
    expected = sample_from_noise(generator.model, y, noise, **options)
    got = sample_from_noise(OrtDiT(dit_onnx), y, noise, **options)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4
    # the network moved the noise by far more than the tolerance: the check is not vacuous
    assert (expected - noise.clamp(-1, 1)).abs().mean() > 0.01


def test_int8_is_calibrated_measured_and_recorded(classifier, store, tmp_path) -> None:
    from tinycats.config import Int8Config
    from tinycats.deploy.quantize import export_int8

    output = tmp_path / "clf.int8.onnx"
    settings = Int8Config(calibration_images=32, calibration_method="percentile")
    report = export_int8(classifier, store, output, settings=settings)
    assert report.n == 40 and report.split == "test" and report.calibration_images == 32
    assert report.scheme == settings.model_dump(mode="json")
    assert report.step == classifier.info.step
    assert report.size_ratio < 0.35  # int8 weights: about a quarter of fp32
    assert abs(report.delta_points) <= 5.0 and report.agreement >= 0.9
    assert report.delta_points == pytest.approx(
        100 * (report.top1_int8 - report.top1_fp32), abs=0.01
    )
    assert json.loads(output.with_suffix(".json").read_text()) == report.to_dict()
    assert RunRegistry(store).get("clf")["exports"]["onnx_int8"] == report.to_dict()
    assert read_metadata(output)["classes"] == classifier.classes  # the int8 file describes itself


def float_weighted(path: Path) -> set[str]:
    """Names of the Conv/Gemm nodes of an ONNX file whose weights are float initialisers
    (a quantised one reads them through DequantizeLinear, or is a QLinear* node)."""
    import onnx

    graph = onnx.load(str(path)).graph
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return {n.name for n in graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in floats}


@pytest.mark.parametrize("quant_format", ["qdq", "qoperator"])
def test_layers_kept_float_stay_float_in_the_int8_graph(classifier, tmp_path, quant_format) -> None:
    from tinycats.config import Int8Config
    from tinycats.deploy.onnx_export import export_classifier_onnx
    from tinycats.deploy.onnx_run import OrtClassifier
    from tinycats.deploy.quantize import quantize_int8

    fp32 = tmp_path / "fp32.onnx"
    export_classifier_onnx(classifier, fp32)
    assert {"/conv1/Conv", "/fc/Gemm"} <= float_weighted(fp32)  # the names the exporter gives
    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    for keep, expected in (([], set()), (["stem", "head"], {"/conv1/Conv", "/fc/Gemm"})):
        settings = Int8Config(quant_format=quant_format, keep_float=keep, calibration_images=16)
        int8 = tmp_path / f"int8-{len(keep)}.onnx"
        quantize_int8(fp32, int8, images, settings)
        assert float_weighted(int8) == expected
        logits = OrtClassifier(int8).logits(images)
        assert np.abs(logits - OrtClassifier(fp32).logits(images)).max() < 1.0  # still the model


def test_export_int8_writes_the_chosen_scheme_unless_told(store_root, cli, tmp_path) -> None:
    """`--int8` alone quantises with Int8Config's defaults (the fc kept float, uint8
    activations); `--keep-float ''` quantises every layer."""
    from tinycats.config import Int8Config

    args = ("export", "onnx", "clf", "--int8", "--out", str(store_root), "--json")
    default, every = tmp_path / "default.onnx", tmp_path / "every.onnx"
    result = cli(*args, "-o", str(default))
    assert result.returncode == 0, result.stderr
    scheme = json.loads(result.stdout)["scheme"]
    assert scheme == Int8Config().model_dump(mode="json")
    assert scheme["keep_float"] == ["head"] and scheme["activations"] == "uint8"
    assert float_weighted(default) == {"/fc/Gemm"}
    result = cli(*args, "--keep-float", "", "-o", str(every))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scheme"]["keep_float"] == []
    assert float_weighted(every) == set()


def test_latency_rows_cover_every_variant_and_batch(classifier, store) -> None:
    from tinycats.deploy.latency import bench_trained

    rows = bench_trained(classifier, None, store, rounds=2, batches=(1, 3))
    assert [(r.variant, r.batch) for r in rows] == [
        (v, b)
        for b in (1, 3)
        for v in (
            "pytorch eager",
            "pytorch channels-last",
            "onnxruntime fp32",
            "onnxruntime int8",
        )
    ]
    for row in rows:
        assert 0 < row.p50_ms <= row.p95_ms <= row.p99_ms and row.calls == 2
        assert row.items_per_s == pytest.approx(row.batch / (row.p50_ms / 1e3), rel=1e-3)


def test_alternating_timer_rotates_the_order() -> None:
    from tinycats.deploy.latency import time_alternating

    order: list[str] = []
    variants = {name: (lambda n=name: order.append(n)) for name in "abc"}
    times = time_alternating(variants, rounds=3, warmup=0)
    assert order == list("abcbcacab")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_portable_noise_is_standard_normal_and_the_same_in_javascript() -> None:
    values = portable_normal(3, (200_000,))
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01
    assert not np.array_equal(values[:100], portable_normal(4, (100,)))
    assert np.array_equal(portable_normal(3, (2, 5)).ravel(), values[:10])
    script = (
        f"import('{SITE / 'noise.mjs'}').then(m => "
        "console.log(JSON.stringify(Array.from(m.portableNormal(3, 1000)))))"
    )
    assert np.array_equal(np.asarray(run_node(script), dtype=np.float32), values[:1000])


class ToyNetwork:
    """A smooth stand-in network, written the same way in JavaScript below."""

    null_class, noise_scale = 3, 1.5

    def __init__(self, prediction: str) -> None:
        self.prediction = prediction

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bias = 0.3 * t.view(-1, 1, 1, 1) + 0.1 * y.view(-1, 1, 1, 1).float()
        return torch.tanh(0.7 * x + bias)


TOY_JS = """
import('{flow}').then(async (flow) => {{
  const [n, size] = [2, 12];
  const network = async (x, t, labels) => Float32Array.from(x, (v, j) =>
    Math.tanh(0.7 * v + 0.3 * t + 0.1 * labels[Math.floor(j / size)]));
  const noise = Float32Array.from({{ length: n * size }}, (_, i) => Math.sin(i + 1));
  const out = await flow.sample(network, {{
    noise, labels: [0, 2], cfg: {cfg}, steps: 25, sampler: '{sampler}', nullClass: 3,
    prediction: '{prediction}', noiseScale: 1.5, minOneMinusT: {clip} }});
  console.log(JSON.stringify(Array.from(out)));
}});
"""


@pytest.mark.parametrize(
    ("sampler", "prediction", "cfg"),
    [("euler", "x", 3.0), ("heun", "x", 2.0), ("heun", "v", 1.0), ("euler", "v", 4.0)],
)
def test_javascript_sampling_loop_matches_flow_py(sampler, prediction, cfg) -> None:
    """site/flow.mjs against flow.sample_from_noise: conversion (25 steps reach t = 0.96,
    where 1 - t is clipped), guidance, both samplers."""
    script = TOY_JS.format(
        flow=SITE / "flow.mjs",
        cfg=cfg,
        sampler=sampler,
        prediction=prediction,
        clip=MIN_ONE_MINUS_T,
    )
    got = np.asarray(run_node(script), dtype=np.float32).reshape(2, 3, 2, 2)
    noise = torch.sin(torch.arange(1, 25, dtype=torch.float32)).reshape(2, 3, 2, 2)
    expected = sample_from_noise(
        ToyNetwork(prediction),
        torch.tensor([0, 2]),
        noise,
        steps=25,
        cfg_scale=cfg,
        sampler=sampler,
    )
    assert np.abs(got - expected.numpy()).max() < 1e-5
    assert np.abs(expected.numpy() - noise.clamp(-1, 1).numpy()).mean() > 0.05  # not vacuous
