"""Rectified flow (flow matching on straight paths): the training loss and the samplers.

Convention (SiT / Stable Diffusion 3 / minRF / JiT, with time running towards the data):

    x0 ~ N(0, s² I)            noise at t = 0 (s = the model's noise_scale, JiT's knob)
    x1                         data (images scaled to [-1, 1]), at t = 1
    x_t = (1 - t) x0 + t x1    a straight path between them
    v   = x1 - x0              its constant velocity, the field the samplers integrate

What the network outputs is the model's `prediction`:
- "v": the velocity itself (SiT, SD3);
- "x": the clean image x̂ (JiT: Li & He, "Back to Basics: Let Denoising Generative
  Models Denoise", 2025). Since x0 = (x_t - t x1) / (1 - t) on the path,
  v = x1 - x0 = (x1 - x_t) / (1 - t), so v̂ = (x̂ - x_t) / (1 - t), with 1 - t clipped
  at MIN_ONE_MINUS_T as the paper does. In pixel space with large patches a token
  (8×8×3 = 192 values) is as wide as the model; noise and velocity fill all of it,
  a clean image lies near a low-dimensional manifold, so only x-prediction fits.
Either way the loss is taken on the velocity, and `velocity_from_prediction` is the
one place that turns a network output into a velocity (training, both samplers,
guidance, and any exported copy of the network should call it).

Sampling integrates dx/dt = v(x, t, y) from pure noise at t = 0 to an image at t = 1.
Classifier-free guidance mixes the conditional and the unconditional (null class)
velocities, v = v_u + s (v_c - v_u), once per evaluation; both come from ONE forward
pass on a batch of 2B, which is what makes guidance cost about one model call per step.

Defaults come from `DiTConfig` (the one source of defaults), never restated here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinycats.config import DiTConfig

_DEFAULTS = DiTConfig()

TIME_SAMPLINGS = ("logit_normal", "uniform")
SAMPLERS = ("euler", "heun")
PREDICTIONS = ("x", "v")

MIN_ONE_MINUS_T = 0.05
"""x-prediction divides by 1 - t; JiT clips it at 0.05 (its t_eps), in the loss's target
as in its prediction, so the last 5% of the path is weighted like t = 0.95."""

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""(x (B, C, H, W), t (B,)) → velocity (B, C, H, W), with the labels and guidance bound."""

Network = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x_t (B, C, H, W), t (B,), y (B,)) → the network's prediction (B, C, H, W): a TinyDiT,
or any stand-in for it (an exported copy run by another runtime)."""


def velocity_from_prediction(pred: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> Tensor:
    """The velocity that a network output `pred` at (x_t, t) stands for.

    prediction "v": pred is the velocity. "x": pred is the clean image x̂, and
    v = (x̂ - x_t) / max(1 - t, MIN_ONE_MINUS_T). x_t (B, C, H, W), t (B,).
    """
    if prediction == "v":
        return pred
    if prediction == "x":
        one_minus_t = (1 - t).clamp_min(MIN_ONE_MINUS_T).view(-1, *[1] * (x_t.ndim - 1))
        return (pred - x_t) / one_minus_t.to(pred.dtype)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def _draw(
    fn: Callable[..., Tensor],
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """`fn` (torch.randn / torch.rand) drawn on the generator's own device, then moved:
    so one CPU generator gives the same numbers whichever device the model is on."""
    gen_device = generator.device if generator is not None else device
    return fn(shape, generator=generator, device=gen_device).to(device)


def sample_time(
    batch: int,
    *,
    time_sampling: str = _DEFAULTS.time_sampling,
    logit_mean: float = _DEFAULTS.logit_normal_mean,
    logit_std: float = _DEFAULTS.logit_normal_std,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Training times t (batch,) in (0, 1).

    logit-normal (SD3): t = sigmoid(N(mean, std)) puts most samples in the middle of the
    path, where predicting the velocity is hardest; uniform is the plain rectified flow.
    """
    device = torch.device(device)
    if time_sampling == "logit_normal":
        return torch.sigmoid(
            _draw(torch.randn, (batch,), generator, device) * logit_std + logit_mean
        )
    if time_sampling == "uniform":
        return _draw(torch.rand, (batch,), generator, device)
    raise ValueError(f"unknown time_sampling {time_sampling!r}; choose one of {TIME_SAMPLINGS}")


def flow_matching_loss(
    model: nn.Module,
    x1: Tensor,
    y: Tensor,
    *,
    class_dropout: float,
    null_class: int,
    time_sampling: str = _DEFAULTS.time_sampling,
    logit_mean: float = _DEFAULTS.logit_normal_mean,
    logit_std: float = _DEFAULTS.logit_normal_std,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mean squared error between the model's velocity at x_t and the true one.

    x1 (B, C, H, W) are data images in [-1, 1], y (B,) their classes. The model says
    what it predicts (`model.prediction`) and how loud its noise is (`model.noise_scale`),
    so a run can never train one way and sample another. The target is the truth put
    through the same conversion as the prediction: x1 - x0 for "v", and for "x"
    (x1 - x_t) / max(1 - t, MIN_ONE_MINUS_T), which equals x1 - x0 except on the clipped
    last 5% of the path (JiT's loss). Each label is replaced by `null_class` with
    probability `class_dropout`, so the same model also learns the unconditional
    velocity that guidance needs. All randomness (noise, times, dropout) comes from
    `generator` (else torch's global RNG), so a restored RNG state reproduces the loss.
    """
    B = x1.shape[0]
    noise = _draw(torch.randn, tuple(x1.shape), generator, x1.device)  # (B, C, H, W)
    x0 = model.noise_scale * noise
    t = sample_time(
        B,
        time_sampling=time_sampling,
        logit_mean=logit_mean,
        logit_std=logit_std,
        generator=generator,
        device=x1.device,
    )  # (B,)
    drop = _draw(torch.rand, (B,), generator, x1.device) < class_dropout
    y = torch.where(drop, torch.full_like(y, null_class), y)
    tb = t.view(B, 1, 1, 1).to(x1.dtype)
    x_t = (1 - tb) * x0 + tb * x1
    truth = x1 if model.prediction == "x" else x1 - x0
    v_pred = velocity_from_prediction(model(x_t, t, y).float(), x_t.float(), t, model.prediction)
    v_true = velocity_from_prediction(truth.float(), x_t.float(), t, model.prediction)
    return F.mse_loss(v_pred, v_true)


def guided_velocity(
    net: Network, y: Tensor, cfg_scale: float, *, null_class: int, prediction: str
) -> VelocityFn:
    """The velocity field to integrate, with classifier-free guidance at `cfg_scale`.

    `net` outputs `prediction` ("x" or "v"); each output becomes a velocity first, then
    guidance mixes the velocities, once. cfg_scale == 1 is the plain conditional
    prediction, so the unconditional half is skipped. Otherwise conditional and
    unconditional inputs go through the network as ONE batch of 2B (one call per step
    instead of two; larger matmuls use the device better).
    """
    if cfg_scale == 1.0:
        return lambda x, t: velocity_from_prediction(net(x, t, y), x, t, prediction)
    y_both = torch.cat([y, torch.full_like(y, null_class)])  # (2B,)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        x2, t2 = torch.cat([x, x]), torch.cat([t, t])  # (2B, C, H, W), (2B,)
        v = velocity_from_prediction(net(x2, t2, y_both), x2, t2, prediction)
        v_cond, v_uncond = v.chunk(2)
        return v_uncond + cfg_scale * (v_cond - v_uncond)

    return velocity


def integrate(
    velocity: VelocityFn, x0: Tensor, *, steps: int, sampler: str = _DEFAULTS.sampler
) -> Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 0 to 1 in `steps` equal steps.

    euler: one velocity evaluation per step. heun: Euler predictor, then the average of
    the slopes at both ends (2nd order, two evaluations per step), which needs about half
    the steps for the same quality on curved (guided) trajectories. Its last step is a
    plain Euler step (as in EDM and JiT): the corrector would evaluate the field at
    t = 1, where an x-prediction's velocity divides by the clipped 1 - t.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    assert steps >= 1, f"steps={steps}"
    B = x0.shape[0]
    times = torch.linspace(0.0, 1.0, steps + 1, device=x0.device)
    x = x0
    for i in range(steps):
        t, t_next = times[i].expand(B), times[i + 1].expand(B)
        dt = times[i + 1] - times[i]
        v = velocity(x, t)
        if sampler == "euler" or i == steps - 1:
            x = x + dt * v
        else:
            x_pred = x + dt * v
            x = x + dt * 0.5 * (v + velocity(x_pred, t_next))
    return x


@torch.no_grad()
def sample(
    model: nn.Module,
    y: Tensor,
    *,
    steps: int = _DEFAULTS.sample_steps,
    cfg_scale: float = _DEFAULTS.cfg_scale,
    sampler: str = _DEFAULTS.sampler,
    generator: torch.Generator | None = None,
    image_shape: tuple[int, int, int],
) -> Tensor:
    """Images (B, C, H, W) in [-1, 1] for classes y (B,), from noise drawn with `generator`.

    Deterministic for a given generator state. The model says how to read it (TinyDiT
    does): `null_class` for guidance, `prediction` and `noise_scale`. The model's
    train/eval mode is left alone: TinyDiT has no dropout or batch norm, so both modes
    compute the same thing.
    """
    device = next(model.parameters()).device
    y = y.to(device)
    noise = _draw(torch.randn, (y.shape[0], *image_shape), generator, device)  # (B, C, H, W)
    return sample_from_noise(model, y, noise, steps=steps, cfg_scale=cfg_scale, sampler=sampler)


@torch.no_grad()
def sample_from_noise(
    net: Network, y: Tensor, noise: Tensor, *, steps: int, cfg_scale: float, sampler: str
) -> Tensor:
    """Images (B, C, H, W) in [-1, 1] for classes y (B,) from standard normal `noise`.

    `net` is a TinyDiT or a stand-in with its attributes (`null_class`, `prediction`,
    `noise_scale`), such as an exported copy run by onnxruntime: the same loop samples
    both, so their grids can be compared for the same noise.
    """
    x0 = net.noise_scale * noise
    velocity = guided_velocity(
        net, y, cfg_scale, null_class=net.null_class, prediction=net.prediction
    )
    return integrate(velocity, x0, steps=steps, sampler=sampler).clamp(-1.0, 1.0)


def to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] float images → uint8 in [0, 255] (values outside are clamped)."""
    return ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
