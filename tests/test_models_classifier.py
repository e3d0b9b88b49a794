"""Classifier factory: archs, errors, pretrained backbones (file and offline ImageNet), ONNX."""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tinycats.errors import ConfigError, TinycatsError
from tinycats.models.classifier import ARCHS, classify, create_classifier, normalize_images
from tinycats.models.export import export_onnx


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_classes", [12, 13])
def test_each_arch_builds_with_the_right_head(arch: str, num_classes: int) -> None:
    model = create_classifier(arch, num_classes).eval()
    assert model.fc.out_features == num_classes
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, num_classes)


def test_state_dict_names_are_torchvisions() -> None:
    import torchvision

    ours = create_classifier("resnet18", 12).state_dict()
    theirs = torchvision.models.resnet18(num_classes=12).state_dict()
    assert list(ours) == list(theirs)


@pytest.mark.parametrize(("size", "small"), [(64, True), (128, True), (160, False)])
def test_last_stage_runs_in_fp32_nchw_on_tiny_maps_under_cpu_autocast(
    size: int, small: bool
) -> None:
    torch.manual_seed(0)
    model = create_classifier("resnet18", 12).eval()
    seen: dict[str, torch.Tensor] = {}
    model.layer4.register_forward_hook(lambda _m, args, out: seen.update(x=args[0], out=out))
    model.layer4[0].conv1.register_forward_hook(lambda _m, _a, out: seen.update(conv=out))
    x = normalize_images(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        model(x)
    assert seen["conv"].dtype == (torch.float32 if small else torch.bfloat16)
    assert seen["conv"].is_contiguous() == small
    stage_input, stage_output = seen["x"], seen["out"]
    with torch.no_grad():  # the stage alone without autocast: fp32 NCHW throughout
        fp32 = model.layer4(stage_input.float().contiguous())
    if small:
        torch.testing.assert_close(stage_output, fp32, rtol=0, atol=0)
    else:
        assert not torch.equal(stage_output.float(), fp32)


def test_mirror_tta_averages_an_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    model = create_classifier("resnet18", 5).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        plain = classify(model, images)
        mirrored = classify(model, images.flip(3))
        tta = classify(model, images, hflip_tta=True)
        tta_of_mirror = classify(model, images.flip(3), hflip_tta=True)
    assert not torch.allclose(plain, mirrored, atol=1e-4)  # the model itself is not symmetric
    torch.testing.assert_close(tta, (plain + mirrored) / 2)
    torch.testing.assert_close(tta, tta_of_mirror)  # so the TTA prediction is


def test_unknown_arch_names_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        create_classifier("resnet19", 12)
    assert str(err.value) == "unknown arch 'resnet19'; choose one of resnet18, resnet34, resnet50"


def _donor_state(num_classes: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    donor = create_classifier("resnet18", num_classes)
    with torch.no_grad():
        for p in donor.parameters():
            p.normal_()
    return {k: v.contiguous() for k, v in donor.state_dict().items()}


def test_safetensors_backbone_loads_and_head_is_skipped(tmp_path: Path) -> None:
    state = _donor_state(1000)  # an ImageNet-shaped head that cannot fit 12 classes
    path = tmp_path / "backbone.safetensors"
    save_file(state, str(path))
    model = create_classifier("resnet18", 12, str(path))
    loaded = model.state_dict()
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])
    assert torch.equal(loaded["layer4.1.bn2.weight"], state["layer4.1.bn2.weight"])
    assert loaded["fc.weight"].shape == (12, 512)
    assert not torch.equal(loaded["fc.weight"][:, :5], state["fc.weight"][:12, :5])


def test_pth_backbone_nested_in_a_checkpoint_dict(tmp_path: Path) -> None:
    state = _donor_state(12)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = create_classifier("resnet18", 13, str(path))
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


def test_backbone_of_another_arch_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r18.safetensors"
    state = _donor_state(12)
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(path))
    with pytest.raises(TinycatsError, match=r"unexpected keys \['extra.weight'\]"):
        create_classifier("resnet18", 12, str(path))
    del state["extra.weight"], state["layer1.0.conv1.weight"]
    save_file(state, str(path))
    with pytest.raises(TinycatsError, match=r"missing keys \['layer1.0.conv1.weight'\]"):
        create_classifier("resnet18", 12, str(path))
    with pytest.raises(TinycatsError, match=r"check classifier\.arch"):
        create_classifier("resnet50", 12, str(tmp_path / "r18.safetensors"))


def test_missing_or_unsupported_weight_file(tmp_path: Path) -> None:
    with pytest.raises(TinycatsError, match="not found"):
        create_classifier("resnet18", 12, str(tmp_path / "nope.safetensors"))
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"must be \.safetensors or \.pth"):
        create_classifier("resnet18", 12, str(odd))


def test_imagenet_offline_falls_back_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with caplog.at_level(logging.WARNING, logger="tinycats.models.classifier"):
        model = create_classifier("resnet18", 12, "imagenet", torch_home=tmp_path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "training from scratch" in warnings[0].getMessage()
    assert model.fc.out_features == 12


def test_imagenet_weights_come_from_torch_home_cache(tmp_path: Path) -> None:
    """A cached file in TORCH_HOME is used without any download (Modal volume case)."""
    import torchvision

    weights = torchvision.models.ResNet18_Weights.DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = _donor_state(1000)
    torch.save(state, cache / Path(weights.url).name)  # what a first download leaves there
    model = create_classifier("resnet18", 12, "imagenet", torch_home=tmp_path)
    assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])


def test_normalize_images() -> None:
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize_images(x)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out[0, :, 0, 0], expected)
    assert out.dtype == torch.float32


def test_onnx_export_parity_and_dynamic_batch(tmp_path: Path) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_classifier("resnet18", 12)
    with torch.no_grad():  # non-trivial BN statistics, as after training
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.1)
    model.train()
    path = tmp_path / "out" / "model.onnx"
    diff = export_onnx(model, 64, path)
    assert 0 <= diff <= 1e-4
    assert model.training  # the caller's model is left as it was
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": torch.randn(5, 3, 64, 64).numpy()})
    assert out.shape == (5, 12)
    assert session.get_inputs()[0].shape[0] == "batch"


def test_onnx_missing_dependency_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name: str, *args: object, **kwargs: object) -> object:
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    model = create_classifier("resnet18", 12)
    with pytest.raises(
        TinycatsError, match=r'onnxruntime is missing.*pip install "tinycats\[onnx\]"'
    ):
        export_onnx(model, 32, Path("unused.onnx"))
