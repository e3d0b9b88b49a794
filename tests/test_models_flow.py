"""Flow matching: the loss learns, samplers are deterministic, CFG is exact and batched."""

from __future__ import annotations

import pytest
import torch

from tinycats.models.dit import DiTArgs, TinyDiT
from tinycats.models.flow import (
    MIN_ONE_MINUS_T,
    flow_matching_loss,
    sample,
    sample_time,
    to_uint8,
    velocity_from_prediction,
)

ARGS = DiTArgs(image_size=16, patch_size=4, width=32, depth=2, heads=4, num_classes=2)


def _trained_looking_model() -> TinyDiT:
    """A model with non-zero output (zero-init would make every sampler trivially equal)."""
    torch.manual_seed(0)
    model = TinyDiT(ARGS)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.05)
    return model


def _two_colour_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 = reddish, class 1 = bluish constant images in [-1, 1]."""
    y = torch.randint(0, 2, (n,), generator=gen)
    colours = torch.tensor([[0.8, -0.6, -0.6], [-0.6, -0.6, 0.8]])
    return colours[y].view(n, 3, 1, 1).expand(n, 3, 16, 16).contiguous(), y


@pytest.fixture(scope="module")
def trained() -> tuple[TinyDiT, list[float]]:
    """100 AdamW steps of flow matching on two constant-colour classes (~2 s on CPU)."""
    torch.manual_seed(0)
    model = TinyDiT(ARGS)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(100):
        x1, y = _two_colour_data(32, gen)
        loss = flow_matching_loss(
            model, x1, y, class_dropout=0.1, null_class=model.null_class, generator=gen
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def test_loss_decreases_on_two_constant_colour_classes(
    trained: tuple[TinyDiT, list[float]],
) -> None:
    _, losses = trained
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    # At init the prediction is 0, so the loss is E|x1 - x0|^2 ≈ 1 + mean(x1^2) ≈ 1.5.
    assert first > 1.0
    assert last < 0.6 * first, (first, last)


def test_guided_samples_have_the_requested_colour(trained: tuple[TinyDiT, list[float]]) -> None:
    """End to end: time direction, labels and guidance sign all agree with the training."""
    model, _ = trained
    y = torch.tensor([0] * 4 + [1] * 4)
    gen = torch.Generator().manual_seed(0)
    out = sample(model, y, steps=10, cfg_scale=3.0, generator=gen, image_shape=(3, 16, 16))
    red, blue = out[:, 0].mean(dim=(1, 2)), out[:, 2].mean(dim=(1, 2))
    # class 0 is red (0.8, -0.6, -0.6), class 1 blue (-0.6, -0.6, 0.8); after 100 steps
    # with guidance every sample leans to its colour (measured here: every margin >= 0.35)
    assert (red[:4] > blue[:4]).all() and (blue[4:] > red[4:]).all(), (red, blue)
    assert out[:, 1].mean() < -0.3  # green is off in both classes


def test_loss_is_reproducible_with_a_generator_and_drops_labels() -> None:
    model = _trained_looking_model()
    x1 = torch.rand(8, 3, 16, 16) * 2 - 1
    y = torch.zeros(8, dtype=torch.long)
    kwargs = {"class_dropout": 0.5, "null_class": 2}
    a = flow_matching_loss(model, x1, y, generator=torch.Generator().manual_seed(3), **kwargs)
    b = flow_matching_loss(model, x1, y, generator=torch.Generator().manual_seed(3), **kwargs)
    assert torch.equal(a, b)

    seen: list[torch.Tensor] = []
    model.register_forward_hook(lambda m, inp, out: seen.append(inp[2]))
    flow_matching_loss(model, x1, y, generator=torch.Generator().manual_seed(0), **kwargs)
    flow_matching_loss(model, x1, y, class_dropout=0.0, null_class=2)
    assert set(seen[0].tolist()) == {0, 2}  # half dropped to the null class (seed 0)
    assert set(seen[1].tolist()) == {0}


def test_time_sampling_ranges() -> None:
    gen = torch.Generator().manual_seed(0)
    t_ln = sample_time(20_000, logit_mean=0.0, logit_std=1.0, generator=gen)  # SD3's
    t_u = sample_time(20_000, time_sampling="uniform", generator=gen)
    for t in (t_ln, t_u):
        assert t.min() > 0.0 and t.max() < 1.0
    assert abs(t_u.mean() - 0.5) < 0.01 and abs(t_ln.mean() - 0.5) < 0.01
    # logit-normal concentrates in the middle: fewer samples at the ends than uniform
    assert ((t_ln < 0.1) | (t_ln > 0.9)).float().mean() < 0.5 * (
        (t_u < 0.1) | (t_u > 0.9)
    ).float().mean()
    shifted = sample_time(20_000, logit_mean=1.0, generator=gen)
    assert shifted.mean() > 0.6
    jit = sample_time(20_000, generator=gen)  # the defaults: JiT's N(-0.8, 0.8), noisier
    assert 0.3 < jit.mean() < 0.34 and (jit < 0.5).float().mean() > 0.8


def test_sampling_is_deterministic_for_a_seed() -> None:
    model = _trained_looking_model()
    y = torch.tensor([0, 1, 2])

    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return sample(model, y, steps=4, cfg_scale=3.0, generator=gen, image_shape=(3, 16, 16))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (3, 3, 16, 16)
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_one_euler_step_without_guidance_is_noise_plus_velocity() -> None:
    model = _trained_looking_model()
    y = torch.tensor([1, 0])
    out = sample(
        model,
        y,
        steps=1,
        cfg_scale=1.0,
        generator=torch.Generator().manual_seed(5),
        image_shape=(3, 16, 16),
    )
    x0 = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = (x0 + model(x0, torch.zeros(2), y)).clamp(-1, 1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_cfg_scale_one_equals_conditional_and_skips_uncond() -> None:
    model = _trained_looking_model()
    calls: list[torch.Tensor] = []
    model.register_forward_hook(lambda m, inp, out: calls.append(inp[2].clone()))
    y = torch.tensor([0, 1])
    out = sample(
        model,
        y,
        steps=3,
        cfg_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        image_shape=(3, 16, 16),
    )
    # the same integration by hand with the plain conditional velocity
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i in range(3):
            x = x + (1 / 3) * model(x, torch.full((2,), i / 3), y)
    assert torch.allclose(out, x.clamp(-1, 1), atol=1e-5)
    assert all(torch.equal(c, y) for c in calls[:3])  # never the null class


def test_cfg_is_one_forward_per_step_on_a_batch_of_2b() -> None:
    model = _trained_looking_model()
    calls: list[tuple[int, list[int]]] = []
    model.register_forward_hook(
        lambda m, inp, out: calls.append((inp[0].shape[0], inp[2].tolist()))
    )
    y = torch.tensor([0, 1, 1])
    sample(
        model,
        y,
        steps=5,
        cfg_scale=4.0,
        generator=torch.Generator().manual_seed(0),
        image_shape=(3, 16, 16),
    )
    assert len(calls) == 5
    assert all(batch == 6 for batch, _ in calls)
    assert calls[0][1] == [0, 1, 1, 2, 2, 2]


def test_cfg_combines_cond_and_uncond() -> None:
    model = _trained_looking_model()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    shape = (3, 16, 16)
    y = torch.tensor([1])
    null = torch.tensor([model.null_class])
    cond = sample(model, y, steps=1, cfg_scale=1.0, generator=gen(), image_shape=shape)
    uncond = sample(model, null, steps=1, cfg_scale=1.0, generator=gen(), image_shape=shape)
    zero = sample(model, y, steps=1, cfg_scale=0.0, generator=gen(), image_shape=shape)
    assert torch.allclose(zero, uncond, atol=1e-6)  # s = 0 is the unconditional model
    assert not torch.allclose(cond, uncond)


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_heun_and_euler_both_run_and_differ(cfg_scale: float) -> None:
    model = _trained_looking_model()
    calls: list[int] = []
    model.register_forward_hook(lambda m, inp, out: calls.append(1))
    y = torch.tensor([0, 1])
    outs = {}
    for sampler in ("euler", "heun"):
        calls.clear()
        outs[sampler] = sample(
            model,
            y,
            steps=4,
            cfg_scale=cfg_scale,
            sampler=sampler,
            generator=torch.Generator().manual_seed(0),
            image_shape=(3, 16, 16),
        )
        assert len(calls) == (4 if sampler == "euler" else 7)  # heun: last step is Euler
    assert outs["euler"].shape == outs["heun"].shape
    assert not torch.allclose(outs["euler"], outs["heun"])


def test_unknown_sampler_is_rejected() -> None:
    model = _trained_looking_model()
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        sample(model, torch.tensor([0]), steps=1, sampler="ddim", image_shape=(3, 16, 16))


def test_to_uint8_maps_the_range() -> None:
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255]
    assert to_uint8(x).dtype == torch.uint8


# ---- x-prediction: the conversion, checked against oracles that know the answer ------


class _Oracle(torch.nn.Module):
    """A stand-in network that outputs the exact answer for a known image per class:
    the image itself ("x") or the true velocity towards it ("v")."""

    def __init__(self, images: torch.Tensor, prediction: str):
        super().__init__()
        self.images = images  # (classes + 1, C, H, W): the last row is the null class's
        self.prediction, self.noise_scale, self.null_class = prediction, 1.0, len(images) - 1
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # so sample() finds a device

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = self.images[y]
        if self.prediction == "x":
            return target
        return (target - x) / (1 - t).view(-1, 1, 1, 1)  # x1 - x0, without any clipping


def test_velocity_from_x_prediction_is_the_path_velocity_and_clips_near_the_end() -> None:
    gen = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(3, 3, 4, 4, generator=gen), torch.randn(3, 3, 4, 4, generator=gen)
    t = torch.tensor([0.0, 0.5, 0.9])
    x_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1
    v = velocity_from_prediction(x1, x_t, t, "x")
    assert torch.allclose(v, x1 - x0, atol=1e-5)  # x̂ = x1 gives the path's own velocity
    assert torch.equal(velocity_from_prediction(x0, x_t, t, "v"), x0)
    near_end = torch.tensor([0.99, 0.99, 0.99])
    clipped = velocity_from_prediction(x1, x_t, near_end, "x")
    assert torch.allclose(clipped, (x1 - x_t) / MIN_ONE_MINUS_T)  # 1 - t = 0.01 → 0.05
    with pytest.raises(ValueError, match="unknown prediction 'eps'"):
        velocity_from_prediction(x1, x_t, t, "eps")


@pytest.mark.parametrize("prediction", ["x", "v"])
def test_the_exact_answer_has_zero_loss(prediction: str) -> None:
    """A wrong sign, time direction or noise scale in the loss makes the oracle's loss > 0."""
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    oracle = _Oracle(images, prediction)
    oracle.noise_scale = 2.0  # the noise the loss draws must be the noise the model reads
    y = torch.tensor([0, 1, 0, 1])
    loss = flow_matching_loss(
        oracle,
        images[y],
        y,
        class_dropout=0.0,
        null_class=2,
        time_sampling="uniform",
        generator=torch.Generator().manual_seed(0),
    )
    assert loss.item() < 1e-8, loss
    wrong = _Oracle(images.flip(0), prediction)  # answers with another class's image
    wrong.noise_scale = 2.0
    loss = flow_matching_loss(
        wrong, images[y], y, class_dropout=0.0, null_class=2, time_sampling="uniform"
    )
    assert loss.item() > 0.1


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_x_prediction_samplers_land_on_the_guided_image(sampler: str, cfg_scale: float) -> None:
    """With x̂ fixed, each Euler step moves dt/(1-t) of the way to x̂, so the last step (at
    1 - t = dt) lands on it exactly; guidance extrapolates from the null image."""
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1  # classes 0, 1 and the null
    oracle = _Oracle(images, "x")
    out = sample(
        oracle,
        torch.tensor([1, 0]),
        steps=10,
        cfg_scale=cfg_scale,
        sampler=sampler,
        generator=gen,
        image_shape=(3, 8, 8),
    )
    null = images[2]
    expected = (null + cfg_scale * (images[[1, 0]] - null)).clamp(-1, 1)
    assert torch.allclose(out, expected, atol=1e-5)
