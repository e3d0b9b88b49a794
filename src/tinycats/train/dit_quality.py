"""Sample quality of a DiT run, measured by a judge: a trained breed classifier.

Two figures, each printed beside reference rows measured in exactly the same way:

- class consistency: the judge's top-1 on N generated samples against the breed each
  was asked for (chance is 1/K), per breed and overall;
- Fréchet distance in the judge's penultimate features between a set of N images and
  the real test photos, computed by torchmetrics' FrechetInceptionDistance with
  `JudgeFeatures` as its `feature` module.

The reference rows are real train photos against the test photos (the floor: what a
generator that reproduces the data scores with N images) and a trivial generator, each
breed's mean training photo blurred plus noise (the ceiling: colour and layout by breed,
no cat). The Fréchet distance's bias grows as N shrinks, so rows compare only at equal N
against the same test photos, as they are here. Where torch-fidelity can load its
Inception weights, the standard FID (2048 features) of the samples is added; elsewhere
one line says why it was skipped. Results go to reports/<run_id>/quality.json and into
the run record under eval.quality.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from tinycats.errors import ConfigError, TinycatsError
from tinycats.models.flow import sample, to_uint8
from tinycats.storage import RunRegistry, Store
from tinycats.storage.atomic import write_json_atomic
from tinycats.train.evaluation import eval_dataset
from tinycats.train.inference import TrainedModel
from tinycats.train.judge import JudgeFeatures, class_map

log = logging.getLogger(__name__)

TRIVIAL_BLUR = 1 / 16
"""Blur of the trivial generator's mean photos: Gaussian sigma as a fraction of the side
(4 px at 64 px), enough to wash out the few sharp edges an average of ~80 photos keeps."""

TRIVIAL_NOISE = 0.1
"""Std of the Gaussian noise added to each trivial sample, as a fraction of full scale."""

BATCH = 64
"""Images per batch through the DiT and the judge (bounds memory at 128 px)."""


@dataclass
class QualityReport:
    run_id: str
    step: int
    judge: str
    judge_step: int
    data: str
    n: int  # samples (and images per reference row)
    n_test: int
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    image_size: int
    consistency: float
    per_breed: dict[str, float]
    frechet: float
    rows: dict[str, dict[str, float]]  # real_test / real_train / trivial: consistency, frechet
    inception_fid: float | None
    inception_skipped: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_sample_count(n: int) -> None:
    """A Fréchet distance needs two samples at least."""
    if n < 2:
        raise ConfigError(f"--n {n}: the samples to judge must be at least 2; try --n 240")


def load_split(trained: TrainedModel, store: Store, split: str, data: str | None):
    """(uint8 images (M, 3, S, S), labels (M,), source) of a split, as the DiT saw them."""
    dataset, source = eval_dataset(trained, store, split, data=data)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return images, dataset.targets.clone(), source


def generate(
    dit: TrainedModel, labels: Tensor, *, steps: int, sampler: str, cfg_scale: float, seed: int
) -> Tensor:
    """uint8 samples (N, 3, S, S) of the DiT for `labels`, from one seeded generator."""
    args = dit.model.args
    generator = torch.Generator().manual_seed(seed)
    batches = [
        to_uint8(
            sample(
                dit.model,
                labels[i : i + BATCH],
                steps=steps,
                cfg_scale=cfg_scale,
                sampler=sampler,
                generator=generator,
                image_shape=(args.in_channels, args.image_size, args.image_size),
            )
        ).cpu()
        for i in range(0, len(labels), BATCH)
    ]
    return torch.cat(batches)


def trivial_samples(train: Tensor, train_labels: Tensor, labels: Tensor, seed: int) -> Tensor:
    """The ceiling's generator: each breed's mean photo, blurred, plus fresh noise per sample."""
    side = train.shape[-1]
    sigma = TRIVIAL_BLUR * side
    kernel = 2 * round(3 * sigma) + 1
    means = torch.stack(
        [train[train_labels == c].float().mean(0) for c in range(int(labels.max()) + 1)]
    )
    means = gaussian_blur(means, [kernel, kernel], [sigma, sigma])
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(labels), *train.shape[1:]), generator=generator)
    return (means[labels] + TRIVIAL_NOISE * 255 * noise).round().clamp(0, 255).to(torch.uint8)


def judge_accuracy(features: JudgeFeatures, images: Tensor, labels: Tensor) -> Tensor:
    """Per image, whether the judge's top-1 is `labels` (in the judge's own indices)."""
    logits = torch.cat(
        [features.judge(images[i : i + BATCH])[1] for i in range(0, len(images), BATCH)]
    )
    return logits.argmax(1) == labels


def frechet_distances(
    features: JudgeFeatures, real: Tensor, fakes: dict[str, Tensor]
) -> dict[str, float]:
    """Fréchet distance of each set in `fakes` to `real`, in the judge's features, through
    torchmetrics (the real statistics are gathered once and kept across resets)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=features, reset_real_features=False).eval()
    for i in range(0, len(real), BATCH):
        metric.update(real[i : i + BATCH], real=True)
    distances = {}
    for name, images in fakes.items():
        metric.reset()
        for i in range(0, len(images), BATCH):
            metric.update(images[i : i + BATCH], real=False)
        distances[name] = float(metric.compute())
    return distances


def inception_fid(real: Tensor, fake: Tensor) -> tuple[float | None, str | None]:
    """(standard FID, None) through torchmetrics and torch-fidelity's Inception weights,
    or (None, why it was skipped): the weights come from a download that an offline
    machine cannot make, and without them there is no standard FID to report."""
    try:
        import torch_fidelity  # noqa: F401  (torchmetrics' Inception needs it)
    except ModuleNotFoundError:
        return None, (
            "standard Inception FID skipped: torch-fidelity is not installed "
            "(pip install torch-fidelity where its Inception weights can be downloaded)"
        )
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        metric = FrechetInceptionDistance(feature=2048)
    except (OSError, RuntimeError) as err:  # no network (URLError is an OSError), bad cache
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return None, f"standard Inception FID skipped: its weights could not be loaded ({reason})"
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), BATCH):
            metric.update(images[i : i + BATCH], real=is_real)
    return float(metric.compute()), None


def evaluate_dit(
    dit: TrainedModel,
    judge: TrainedModel,
    store: Store,
    *,
    n: int = 240,
    steps: int | None = None,
    sampler: str | None = None,
    cfg_scale: float | None = None,
    seed: int = 0,
    data: str | None = None,
    record: bool = True,
) -> QualityReport:
    """Judge `n` samples of `dit` (classes in turn) against its dataset's test photos.

    Sampling settings default to the run's dit.sample_steps / sampler / cfg_scale. With
    `record` the report is written next to the run and into its record, then committed.
    """
    check_sample_count(n)
    if dit.config.task != "dit" or judge.config.task != "classifier":
        raise TinycatsError(
            f"{judge.run_id} is a {judge.config.task} run; --judge needs a classifier run"
        )
    to_judge = class_map(judge, dit)  # generator's class index → judge's
    config = dit.config.dit
    steps, sampler = steps or config.sample_steps, sampler or config.sampler
    cfg_scale = config.cfg_scale if cfg_scale is None else cfg_scale
    test, test_labels, source = load_split(dit, store, "test", data)
    train, train_labels, _ = load_split(dit, store, "train", data)
    labels = torch.arange(n) % len(dit.classes)
    picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    sets = {
        "generated": (
            generate(dit, labels, steps=steps, sampler=sampler, cfg_scale=cfg_scale, seed=seed),
            labels,
        ),
        "real_train": (train[picked], train_labels[picked]),
        "trivial": (trivial_samples(train, train_labels, labels, seed), labels),
    }
    features = JudgeFeatures(judge)
    frechet = frechet_distances(features, test, {k: images for k, (images, _) in sets.items()})
    rows: dict[str, dict[str, float]] = {}
    correct: dict[str, Tensor] = {}
    for name, (images, truth) in {**sets, "real_test": (test, test_labels)}.items():
        correct[name] = judge_accuracy(features, images, to_judge[truth])
        rows[name] = {"consistency": correct[name].float().mean().item(), "n": len(images)}
        if name in frechet:
            rows[name]["frechet"] = frechet[name]
    per_breed = {
        c: correct["generated"][labels == i].float().mean().item()
        for i, c in enumerate(dit.classes)
        if (labels == i).any()
    }
    fid, skipped = inception_fid(test, sets["generated"][0])
    if skipped:
        log.info(skipped)
    report = QualityReport(
        run_id=dit.run_id,
        step=dit.info.step,
        judge=judge.run_id,
        judge_step=judge.info.step,
        data=source,
        n=n,
        n_test=len(test),
        steps=steps,
        sampler=sampler,
        cfg_scale=cfg_scale,
        seed=seed,
        image_size=int(test.shape[-1]),
        consistency=rows.pop("generated")["consistency"],
        per_breed=per_breed,
        frechet=frechet["generated"],
        rows=rows,
        inception_fid=fid,
        inception_skipped=skipped,
    )
    if record:
        save_report(report, store)
    return report


def save_report(report: QualityReport, store: Store) -> None:
    """reports/<run_id>/quality.json and the run record's eval.quality, committed."""
    report_dir = store.root / "reports" / report.run_id
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report_dir / "quality.json", report.to_dict())
    registry = RunRegistry(store)
    try:
        registry.get(report.run_id)
    except TinycatsError:  # a checkpoint copied here without its run record: report only
        store.commit()
        return
    summary = {k: v for k, v in report.to_dict().items() if k != "run_id"}
    registry.update(report.run_id, eval={"quality": summary})
