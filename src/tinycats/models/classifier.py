"""The breed classifier: a torchvision ResNet with a fresh head (a timm-style factory).

Pretrained weights are optional and never required: `imagenet` fetches torchvision's
weights once into TORCH_HOME (on Modal a volume), and when that is impossible
(offline) training starts from scratch with one warning rather than failing. A local
.safetensors/.pth file loads the backbone; the classification head is always fresh,
since its classes are ImageNet's (or another run's), not ours.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision
from torch import Tensor, nn

from tinycats.errors import ConfigError, TinycatsError
from tinycats.models import check_model_args

if TYPE_CHECKING:
    from tinycats.config import TrainConfig

log = logging.getLogger(__name__)

ARCHS = ("resnet18", "resnet34", "resnet50")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel statistics the pretrained weights expect (used from scratch too, so a
checkpoint means the same thing whichever way it started)."""

HEAD_PREFIX = "fc."
"""State-dict prefix of the ResNet classification head, never taken from pretrained weights."""


def normalize_images(x_uint8: Tensor) -> Tensor:
    """(B, 3, H, W) uint8 → float32 normalised with the ImageNet mean/std, channels-last.

    Channels-last matches the model's memory format (see create_classifier).
    """
    assert x_uint8.dtype == torch.uint8, f"expected uint8 images, got {x_uint8.dtype}"
    mean = torch.tensor(IMAGENET_MEAN, device=x_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x_uint8.device).view(1, 3, 1, 1)
    x = (x_uint8.float() / 255.0 - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


def classify(model: nn.Module, images_uint8: Tensor, *, hflip_tta: bool = False) -> Tensor:
    """Logits of a batch of uint8 images; with `hflip_tta` the mean of the logits of each
    image and its mirror (a cat breed does not change in a mirror, and averaging the two
    views removes some of the noise of a model trained on few photos)."""
    x = normalize_images(images_uint8)
    logits = model(x)
    if hflip_tta:
        logits = (logits + model(x.flip(3))) / 2
    return logits


def create_classifier(
    arch: str, num_classes: int, pretrained: str = "", *, torch_home: Path | None = None
) -> nn.Module:
    """A torchvision ResNet with a `num_classes` head.

    pretrained: "" = from scratch; "imagenet" = torchvision's weights, cached under
    `torch_home` (default: $TORCH_HOME); or a path to a .safetensors / .pth state dict
    whose backbone is loaded strictly (the head is skipped).
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes}; a classifier needs at least 2 classes")
    # Zero-init of each block's last BN gamma makes residual blocks start as identities,
    # which helps from-scratch training; pretrained weights overwrite it.
    model = torchvision.models.get_model(
        arch, weights=None, num_classes=num_classes, zero_init_residual=True
    )
    if pretrained == "imagenet":
        state = _imagenet_state(arch, torch_home)
        if state is not None:
            load_backbone(model, state, source=f"torchvision ImageNet weights for {arch}")
    elif pretrained:
        load_backbone(model, read_state_dict(Path(pretrained)), source=pretrained)
    # Channels-last convolutions run ~1.8x faster on this project's 2-core CPU
    # (oneDNN), and are the fast path for AMP on recent GPUs too; the last stage is the
    # exception on a CPU when its maps are tiny (SmallMapStage).
    model = model.to(memory_format=torch.channels_last)
    model.layer4 = SmallMapStage(*model.layer4).to(memory_format=torch.contiguous_format)
    return model


def create_model(config: TrainConfig, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The task registry's factory: a fresh classifier and the `model_args` that rebuild it.

    Pretrained weights (classifier.pretrained) are applied here, once; they are not part
    of model_args since a checkpoint holds the weights.
    """
    args = {"arch": config.classifier.arch, "num_classes": num_classes}
    return create_classifier(pretrained=config.classifier.pretrained, **args), args


def model_from_args(model_args: dict[str, Any]) -> nn.Module:
    """The classifier a checkpoint's `model_args` describe (weights not loaded)."""
    check_model_args("classifier", model_args, {"arch", "num_classes"})
    return create_classifier(model_args["arch"], int(model_args["num_classes"]))


class SmallMapStage(nn.Sequential):
    """A ResNet stage that runs in fp32 and NCHW on a CPU when its maps are tiny.

    At 64-128 px the last stage's maps are 2x2 to 4x4, so its convolutions do little
    arithmetic on large weights: oneDNN's bf16 channels-last kernels then spend their
    time casting and reordering weights: with this stage in fp32 NCHW a bf16 step of the
    whole ResNet-18 took 0.80x as long at 64 px (benchmarks/cpu_step_options.py).
    Larger maps and GPUs take the ordinary path. A subclass of nn.Sequential
    so the state-dict names (`layer4.0.conv1.weight`, ...) stay torchvision's.
    """

    MAX_INPUT_SIDE = 8
    """Largest input map (in pixels per side) run in fp32: 128 px images give 8x8 here."""

    def forward(self, x: Tensor) -> Tensor:
        # Both paths compute the same function; a traced export (ONNX) takes the plain one.
        if (
            torch.jit.is_tracing()
            or x.device.type != "cpu"
            or max(x.shape[-2:]) > self.MAX_INPUT_SIDE
        ):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return super().forward(x.float().contiguous())


def _imagenet_state(arch: str, torch_home: Path | None) -> dict[str, Tensor] | None:
    """torchvision's ImageNet weights (downloaded once), or None when they cannot be fetched."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    model_dir = str(torch_home / "hub" / "checkpoints") if torch_home is not None else None
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, model_dir=model_dir, progress=False, check_hash=True, weights_only=True
        )
    except OSError as err:  # no network (URLError is an OSError), or an unwritable cache
        log.warning(
            "could not fetch ImageNet weights for %s (%s); training from scratch", arch, err
        )
        return None


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from .safetensors (preferred) or .pth, without unpickling code."""
    if not path.is_file():
        raise TinycatsError(
            f"pretrained weights {path} not found; pass an existing .safetensors/.pth file, "
            "'imagenet', or '' to train from scratch"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".pth", ".pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unpickling refusal or corruption: one clear line
            raise TinycatsError(
                f"cannot load {path} safely ({type(err).__name__}); "
                "convert it to .safetensors or save a plain state dict"
            ) from None
        # Training checkpoints often nest the weights one level down.
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise TinycatsError(f"{path} holds no state dict; save model.state_dict() instead")
        return state
    raise ConfigError(
        f"pretrained weights {path} must be .safetensors or .pth; "
        "or use 'imagenet', or '' to train from scratch"
    )


def load_backbone(model: nn.Module, state: dict[str, Tensor], *, source: str) -> None:
    """Load every weight except the head; any other missing/unexpected key is an error."""
    backbone = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    try:
        result = model.load_state_dict(backbone, strict=False)
    except RuntimeError as err:  # shape mismatches: e.g. a resnet50 file for a resnet18
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise TinycatsError(
            f"weights in {source} do not fit this model ({first}); check classifier.arch"
        ) from None
    missing = [k for k in result.missing_keys if not k.startswith(HEAD_PREFIX)]
    if missing or result.unexpected_keys:
        raise TinycatsError(
            f"weights in {source} do not fit this model: missing keys {missing[:3]}"
            f"{'...' if len(missing) > 3 else ''} ({len(missing)}), unexpected keys "
            f"{result.unexpected_keys[:3]}{'...' if len(result.unexpected_keys) > 3 else ''} "
            f"({len(result.unexpected_keys)}); check classifier.arch"
        )
    log.info("loaded %d backbone tensors from %s", len(backbone), source)
