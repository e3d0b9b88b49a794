"""The model card of an exported folder: YAML metadata for the Hub, then text for people.

Every figure in it comes from the run record's evaluation of the very checkpoint that
was exported (its step is recorded with the evaluation); where there is none, the card
says "not evaluated" and tells how to measure it. Nothing is typed by hand.
"""

from __future__ import annotations

from typing import Any

from tinycats.models.flow import MIN_ONE_MINUS_T
from tinycats.train.inference import TrainedModel

OXFORD_HUB_DATASET = "timm/oxford-iiit-pet"
"""The Oxford-IIIT Pet dataset on the Hub (CC BY-SA 4.0), for the card's `datasets`."""

NOT_EVALUATED = "not evaluated"
CONFIG_FIELDS = ("n", "data", "image_size", "crop", "tta_hflip", "step")
"""Fields of a recorded evaluation that describe it rather than measure the model."""


def default_license(trained: TrainedModel) -> str:
    """Weights trained on Oxford-IIIT Pet photos inherit the dataset's CC BY-SA 4.0;
    weights trained on synthetic images carry the code's MIT licence."""
    return "mit" if trained.config.data.source == "synthetic" else "cc-by-sa-4.0"


def matching_evaluations(trained: TrainedModel, record: dict[str, Any] | None) -> dict[str, dict]:
    """The recorded evaluations (by split) that measured the exported checkpoint.

    An evaluation of another step (the run trained on after it) does not describe these
    weights and is left out; one recorded before steps were recorded is kept.
    """
    evaluations = (record or {}).get("eval") or {}
    return {
        split: result
        for split, result in sorted(evaluations.items())
        if isinstance(result, dict) and result.get("step", trained.info.step) == trained.info.step
    }


def _measured(result: dict[str, Any]) -> dict[str, float]:
    return {
        key: value
        for key, value in result.items()
        if key not in CONFIG_FIELDS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    }


def _dataset(trained: TrainedModel) -> tuple[list[str], str]:
    """(Hub dataset ids, a readable name) of the run's training data."""
    source = trained.config.data.source
    if source == "synthetic":
        return [], "synthetic shapes (tinycats' procedural test data)"
    if source == "oxford":
        return [OXFORD_HUB_DATASET], "Oxford-IIIT Pet, cat breeds"
    return [OXFORD_HUB_DATASET], f"Oxford-IIIT Pet cat photos ({source.rstrip('/').split('/')[-1]})"


def card_metadata(trained: TrainedModel, record: dict | None, name: str, license_: str) -> str:
    """The YAML block (without the --- fences), built with huggingface_hub's own classes."""
    from huggingface_hub import EvalResult, ModelCardData

    datasets, dataset_name = _dataset(trained)
    classifier = trained.config.task == "classifier"
    results = []
    test = matching_evaluations(trained, record).get("test")
    if test is not None:
        task_type = "image-classification" if classifier else "image-generation"
        for metric, value in _measured(test).items():
            results.append(
                EvalResult(
                    task_type=task_type,
                    dataset_type=datasets[0] if datasets else "synthetic",
                    dataset_name=dataset_name,
                    dataset_split="test",
                    metric_type="accuracy" if metric == "top1" else metric,
                    metric_name=metric,
                    metric_value=round(float(value), 4),
                )
            )
    tags = ["tinycats", "pytorch", "safetensors", "cats"]
    tags += (
        ["image-classification", "resnet"]
        if classifier
        else ["image-generation", "diffusion-transformer", "flow-matching", "class-conditional"]
    )
    data = ModelCardData(
        license=license_,
        library_name="tinycats",
        pipeline_tag="image-classification" if classifier else None,
        tags=tags,
        datasets=datasets or None,
        model_name=name if results else None,
        eval_results=results or None,
    )
    return data.to_yaml()


def _evaluation_section(trained: TrainedModel, record: dict | None) -> list[str]:
    evaluations = matching_evaluations(trained, record)
    command = (
        "tinycats eval "
        + trained.run_id
        + (" --split test" if trained.config.task == "classifier" else " --judge CLASSIFIER_RUN")
    )
    if not evaluations:
        return [
            f"**{NOT_EVALUATED}**: the run record holds no evaluation of step "
            f"{trained.info.step}, the checkpoint exported here. Measure it with "
            f"`{command}` and export again.",
        ]
    lines = [
        f"Recorded by `tinycats eval` on step {trained.info.step}, the checkpoint exported here:",
        "",
        "| split | images | metric | value | size | central crop | mirror TTA |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, result in evaluations.items():
        for metric, value in _measured(result).items():
            lines.append(
                f"| {split} | {result.get('n', '?')} | {metric} | {value:.4f} | "
                f"{result.get('image_size', '?')} px | {result.get('crop', 1.0):.0%} | "
                f"{'yes' if result.get('tta_hflip') else 'no'} |"
            )
    return lines


def model_card(trained: TrainedModel, record: dict | None, name: str, license_: str) -> str:
    """The whole README.md: YAML front matter, then what the model is and how to use it."""
    config, args = trained.config, trained.model
    classifier = config.task == "classifier"
    _, dataset_name = _dataset(trained)
    what = (
        f"A {config.classifier.arch} breed classifier for {len(trained.classes)} classes"
        if classifier
        else f"A class-conditional TinyDiT generator (flow matching) for {len(trained.classes)} classes"
    )
    lines = [
        "---",
        card_metadata(trained, record, name, license_).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"{what}, trained with tinycats on {dataset_name}: "
        f"run `{trained.run_id}`, step {trained.info.step}, {trained.weights} weights.",
        "",
        "## Evaluation",
        "",
        *_evaluation_section(trained, record),
        "",
        "## Classes",
        "",
        ", ".join(f"{i} {c}" for i, c in enumerate(trained.classes)),
        "",
    ]
    if classifier:
        size, crop = config.eval_image_size, config.eval_crop
        lines += [
            "## Preprocessing (config.json `preprocessing`)",
            "",
            f"The central square of the photo, resized to {config.data.stored_size} px; its "
            f"central {crop:.0%}, resized to {size}×{size} px (bilinear, antialiased); RGB "
            "scaled to [0, 1] and normalised with the ImageNet mean and std"
            + (
                "; logits averaged with the mirrored image's."
                if config.classifier.tta_hflip
                else "."
            ),
            "",
            "## Use",
            "",
            "```bash",
            'pip install "tinycats"',
            "tinycats predict ./this-folder photo.jpg",
            "```",
        ]
    else:
        a = args.args
        lines += [
            "## Samples",
            "",
            "![samples](samples.png)",
            "",
            f"One row per class, seed 0, {config.dit.sample_steps} {config.dit.sampler} steps, "
            f"guidance {config.dit.cfg_scale}.",
            "",
            "## Architecture",
            "",
            f"{a.image_size}×{a.image_size} px, patch {a.patch_size}, width {a.width}, "
            f"depth {a.depth}, {a.heads} heads (config.json `model_args`). The network "
            + (
                "predicts the clean image x̂; a sampler turns it into the velocity "
                f"(x̂ - x_t) / max(1 - t, {MIN_ONE_MINUS_T})"
                if a.prediction == "x"
                else "predicts the velocity"
            )
            + f"; noise at t = 0 has standard deviation {a.noise_scale:g}.",
            "",
            "## Use",
            "",
            "```bash",
            'pip install "tinycats"',
            "tinycats sample ./this-folder --breed all -o grid.png",
            "```",
        ]
    lines += [
        "",
        "## Training",
        "",
        f"{config.optim.max_steps} steps of batch {config.optim.batch_size}, "
        f"{config.optim.optimizer} lr {config.optim.lr:g}, amp {config.optim.amp}, seed {config.seed}; "
        "the full resolved config is `training_config` in config.json.",
        "",
    ]
    return "\n".join(lines)
