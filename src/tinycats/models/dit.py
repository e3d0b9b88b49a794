"""TinyDiT: a small class-conditional Diffusion Transformer (Peebles & Xie, "DiT").

Read top to bottom: the architecture arguments and presets, then the pieces in the
order the forward pass uses them (patchify → patch embedding + fixed 2D sin-cos
position embedding → timestep and class embeddings → adaLN-zero blocks → final
adaLN layer → unpatchify).

The network is trained with flow matching (see `tinycats.models.flow`): input x_t
(B, C, H, W) on the path from noise to an image in [-1, 1], time t (B,) in [0, 1],
class y (B,); output has x's shape and is the clean image (`prediction` "x", JiT) or
the velocity ("v"), which `flow.velocity_from_prediction` turns into the velocity that
the loss and the samplers use. The class table has num_classes + 1 rows: the last row
is the "null" class that classifier-free guidance uses as the unconditional prompt.

Every residual branch is gated by an adaLN output that starts at exactly zero, and the
final projection starts at zero too: at step 0 each block is the identity and the model
outputs zeros. That is DiT's adaLN-zero initialisation, which is what lets deep
transformers of this kind train stably from the first step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinycats.config import DiTConfig, TrainConfig
from tinycats.errors import CheckpointError, ConfigError
from tinycats.models import check_model_args

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiTArgs:
    """Everything needed to rebuild a TinyDiT and read its output (saved in checkpoints as
    `model_args`). `prediction` and `noise_scale` default to what checkpoints written
    before they existed meant: a velocity, from unit noise."""

    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    num_classes: int
    in_channels: int = 3
    mlp_ratio: float = 4.0
    prediction: str = "v"
    noise_scale: float = 1.0


PRESETS: dict[str, dict[str, int]] = {
    # issue 6's default: DiT-S sized (~33M parameters), 8×8 = 64 tokens at 128 px.
    "tiny": {"image_size": 128, "patch_size": 16, "width": 384, "depth": 12, "heads": 6},
    # a CPU-trainable model: 8×8 tokens at 64 px.
    "small": {"image_size": 64, "patch_size": 8, "width": 192, "depth": 6, "heads": 6},
    # tests and the quick start: under a million parameters, 8×8 tokens at 32 px.
    "test": {"image_size": 32, "patch_size": 4, "width": 128, "depth": 4, "heads": 4},
}
"""Architecture presets. `image_size` is the resolution each was designed for; the run's
data.image_size decides the actual one (the token count follows)."""


def dit_args_from_config(cfg: DiTConfig, image_size: int, num_classes: int) -> DiTArgs:
    """Preset values, overridden by cfg's non-zero fields and by the data's image_size.

    Validates the shapes here so a bad combination fails before any work starts, with
    the config keys to change.
    """
    values = dict(PRESETS[cfg.preset])
    for key in ("patch_size", "width", "depth", "heads"):
        if getattr(cfg, key):
            values[key] = getattr(cfg, key)
    values["image_size"] = image_size
    patch, width, heads = values["patch_size"], values["width"], values["heads"]
    if image_size % patch:
        raise ConfigError(
            f"data.image_size={image_size} is not divisible by dit.patch_size={patch}; "
            "pick an image size that is a multiple of the patch size"
        )
    if width % heads:
        raise ConfigError(
            f"dit.width={width} is not divisible by dit.heads={heads}; "
            "pick a width that is a multiple of the number of heads"
        )
    if width % 4:
        raise ConfigError(
            f"dit.width={width} is not a multiple of 4 (the 2D sin-cos position embedding "
            "needs it); pick e.g. 128, 192 or 384"
        )
    if num_classes < 1:
        raise ConfigError(f"num_classes={num_classes}; the DiT needs at least one class")
    return DiTArgs(
        num_classes=num_classes,
        prediction=cfg.prediction,
        noise_scale=cfg.noise_scale,
        **values,
    )


# ---------------------------------------------------------------------------------------
# Patches


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, H, W) → (B, T, p*p*C) with T = (H/p)*(W/p), tokens in row-major patch order.

    Within a token the values are ordered (row in patch, column in patch, channel), as in
    DiT's unpatchify, so `unpatchify(patchify(x, p), p, C, H, W)` is exactly `x`.
    """
    B, C, H, W = x.shape
    assert H % p == 0 and W % p == 0, f"image {H}x{W} is not divisible by patch size {p}"
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    return x.reshape(B, h * w, p * p * C)


def unpatchify(tokens: Tensor, p: int, c: int, h: int, w: int) -> Tensor:
    """(B, T, p*p*c) → (B, c, h, w), the inverse of `patchify`; h, w are in pixels."""
    B, T, D = tokens.shape
    gh, gw = h // p, w // p
    assert gh * gw == T and p * p * c == D, (
        f"tokens {tuple(tokens.shape)} do not fit an image of {c}x{h}x{w} with patch {p}"
    )
    x = tokens.reshape(B, gh, gw, p, p, c)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, c, gh, p, gw, p)
    return x.reshape(B, c, h, w)


# ---------------------------------------------------------------------------------------
# Embeddings


def sincos_pos_embed_2d(width: int, grid: int) -> Tensor:
    """Fixed 2D sin-cos position embedding (MAE/DiT): (grid*grid, width).

    Half of the channels encode the row, half the column; fixed so the model has no
    position parameters to learn on tiny datasets.
    """
    assert width % 4 == 0, f"width {width} must be a multiple of 4 for a 2D sin-cos embedding"
    omega = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (grid, grid) each

    def embed(pos: Tensor) -> Tensor:  # (T,) → (T, width/2)
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([embed(rows), embed(cols)], dim=1).float()  # (T, width)


class TimestepEmbedder(nn.Module):
    """t in [0, 1] → (B, width): sinusoidal features, then a 2-layer MLP (DiT)."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: Tensor) -> Tensor:
        # Scale t to DiT's 0..1000 range: the sinusoid frequencies were chosen for it, and
        # on [0, 1] the low frequencies would barely change across the whole trajectory.
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
        args = 1000 * t.float()[:, None] * freqs[None, :]  # (B, half)
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, freq_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))  # (B, width)


# ---------------------------------------------------------------------------------------
# Transformer blocks


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: per-sample shift/scale (B, C) applied to every token of x (B, T, C)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 × (B, T, C)
        q, k, v = (z.view(B, T, self.heads, C // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hs), no mask: images
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, width: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms and residual gates come from the condition c."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(width, mlp_ratio)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        # x (B, T, C), c (B, C)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c).chunk(6, dim=1)  # 6 × (B, C)
        x = x + gate1[:, None, :] * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + gate2[:, None, :] * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x


class FinalLayer(nn.Module):
    """adaLN, then a linear map from each token to its patch of output values."""

    def __init__(self, width: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, patch_size * patch_size * out_channels)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN(c).chunk(2, dim=1)  # 2 × (B, C)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, T, p*p*out)


# ---------------------------------------------------------------------------------------
# The model


class TinyDiT(nn.Module):
    def __init__(self, args: DiTArgs):
        super().__init__()
        assert args.image_size % args.patch_size == 0, (
            f"image_size {args.image_size} not divisible by patch_size {args.patch_size}"
        )
        assert args.width % args.heads == 0, f"width {args.width} not divisible by {args.heads}"
        assert args.prediction in ("x", "v"), f"prediction {args.prediction!r}"
        self.args = args
        self.null_class = args.num_classes
        self.prediction = args.prediction  # what forward() returns: "x" (clean image) or "v"
        self.noise_scale = args.noise_scale  # std of the noise at t = 0
        grid = args.image_size // args.patch_size
        patch_dim = args.patch_size * args.patch_size * args.in_channels

        self.patch_embed = nn.Linear(patch_dim, args.width)
        # Fixed, rebuilt from args: kept out of the state dict (nothing to save or average).
        self.register_buffer(
            "pos_embed", sincos_pos_embed_2d(args.width, grid)[None], persistent=False
        )  # (1, T, C)
        self.t_embed = TimestepEmbedder(args.width)
        self.y_embed = nn.Embedding(args.num_classes + 1, args.width)  # last row = null class
        self.blocks = nn.ModuleList(
            DiTBlock(args.width, args.heads, args.mlp_ratio) for _ in range(args.depth)
        )
        self.final = FinalLayer(args.width, args.patch_size, args.in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's initialisation: xavier linears, small embeddings, adaLN-zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.y_embed.weight, std=0.02)
        for layer in (self.t_embed.mlp[0], self.t_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        # Zero gates and shifts/scales: every block starts as the identity, the output as 0.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN[-1].weight)
            nn.init.zeros_(block.adaLN[-1].bias)
        for layer in (self.final.adaLN[-1], self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        a = self.args
        B, C, H, W = x.shape
        assert (a.in_channels, a.image_size, a.image_size) == (C, H, W), (
            f"input {tuple(x.shape)} does not match the model's "
            f"{a.in_channels}x{a.image_size}x{a.image_size}"
        )
        assert t.shape == (B,) and y.shape == (B,), f"t {tuple(t.shape)}, y {tuple(y.shape)}"
        h = self.patch_embed(patchify(x, a.patch_size)) + self.pos_embed  # (B, T, width)
        c = self.t_embed(t) + self.y_embed(y)  # (B, width)
        for block in self.blocks:
            h = block(h, c)  # (B, T, width)
        out = self.final(h, c)  # (B, T, p*p*C)
        return unpatchify(out, a.patch_size, C, H, W)  # (B, C, H, W)


# -- the task registry's factory (tinycats.config.TASKS) -----------------------------------------


def create_model(config: TrainConfig, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh TinyDiT for the config's preset and resolution, and its `model_args`."""
    args = dit_args_from_config(config.dit, config.data.image_size, num_classes)
    return TinyDiT(args), asdict(args)


def model_from_args(model_args: dict[str, Any]) -> nn.Module:
    """The TinyDiT a checkpoint's `model_args` describe (weights not loaded)."""
    required = {f.name for f in fields(DiTArgs) if f.default is MISSING}
    optional = {f.name for f in fields(DiTArgs)} - required
    check_model_args("dit", model_args, required, optional)
    if model_args.get("prediction", "v") not in ("x", "v"):
        raise CheckpointError(
            f"dit checkpoint has prediction={model_args['prediction']!r} (expected 'x' "
            "or 'v'); the checkpoint is damaged or from another program"
        )
    return TinyDiT(DiTArgs(**model_args))


def config_of_resumed_run(config: TrainConfig, model_args: dict[str, Any]) -> TrainConfig:
    """A DiT keeps the prediction type and noise scale it started with (checkpoints written
    before these existed are "v" and 1.0), whatever today's defaults or a --set say: a
    model trained to output velocities cannot continue as an image predictor.
    """
    saved = {
        "prediction": model_args.get("prediction", "v"),
        "noise_scale": model_args.get("noise_scale", 1.0),
    }
    changed = {k: v for k, v in saved.items() if getattr(config.dit, k) != v}
    if not changed:
        return config
    log.warning(
        "the run resumes with %s as it started; the config's %s applies to new runs only",
        ", ".join(f"dit.{k}={v!r}" for k, v in changed.items()),
        ", ".join(f"dit.{k}={getattr(config.dit, k)!r}" for k in changed),
    )
    return config.model_copy(update={"dit": config.dit.model_copy(update=changed)})
