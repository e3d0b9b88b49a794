"""Classifier evaluation: top-1, top-3, per-class accuracy and a confusion matrix.

Results are written next to the run (reports/<run_id>/eval_<split>.json and
confusion_<split>.png) and into the run record, then committed, so a second
container (or a later `runs show`) sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from tinycats.config import DataConfig
from tinycats.data import (
    ShardDataset,
    SkippedImage,
    central_box,
    decode_image,
    prepare_dataset,
    resize_crop,
    resolve_data_root,
)
from tinycats.errors import DataError, ImageTooLargeError, TinycatsError
from tinycats.storage import RunRegistry, Store
from tinycats.storage.atomic import write_json_atomic
from tinycats.train.classifier_task import predict_logits
from tinycats.train.inference import TrainedModel
from tinycats.train.tracking import log_evaluation


@dataclass
class EvalReport:
    run_id: str
    checkpoint: str
    split: str
    data: str
    image_size: int
    crop: float
    tta_hflip: bool
    n: int
    top1: float
    top3: float
    per_class: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    classes: list[str]
    confusion_png: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[float, float, list[float], list[list[int]]]:
    """(top-1, top-3, per-class accuracy, confusion matrix) of logits against labels."""
    top1 = (logits.argmax(1) == labels).float().mean().item()
    k = min(3, logits.shape[1])
    top3 = (logits.topk(k, dim=1).indices == labels[:, None]).any(1).float().mean().item()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, logits.argmax(1)), torch.ones_like(labels), accumulate=True)
    totals = confusion.sum(1).clamp(min=1)
    per_class = (confusion.diag().float() / totals).tolist()
    return top1, top3, per_class, confusion.tolist()


def confusion_image(confusion: list[list[int]], classes: list[str], cell: int = 28) -> Image.Image:
    """A confusion matrix as a picture: rows are true classes, shade = row-normalised count."""
    n = len(classes)
    label_width = 8 + 7 * max(len(c) for c in classes)
    size = (label_width + n * cell + 8, label_width + n * cell + 8)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for i, row in enumerate(confusion):
        total = max(1, sum(row))
        y = label_width + i * cell
        draw.text((4, y + cell // 3), classes[i], fill="black")
        for j, count in enumerate(row):
            x = label_width + j * cell
            shade = 255 - int(215 * count / total)
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(220, 220, 220))
            if count:
                draw.text((x + 4, y + cell // 3), str(count), fill="black")
    for j, name in enumerate(classes):
        # Column labels, written vertically: render horizontally then rotate.
        text = Image.new("RGB", (label_width, cell), "white")
        ImageDraw.Draw(text).text((4, cell // 3), name, fill="black")
        image.paste(text.rotate(90, expand=True), (label_width + j * cell, 0))
    return image


def eval_dataset(
    trained: TrainedModel,
    store: Store,
    split: str,
    *,
    data: str | None = None,
    image_size: int | None = None,
    crop: float | None = None,
) -> tuple[ShardDataset, str]:
    """A split of the run's dataset (or `data`: synthetic|oxford|PATH), seen exactly as
    evaluation sees it (the run's eval size and central crop unless overridden), and the
    data source it came from."""
    data_config = trained.config.data.model_copy(update={"source": data} if data else {})
    prepared = prepare_dataset(data_config, resolve_data_root(data_config, store.root))
    dataset = ShardDataset(
        prepared,
        split,
        image_size or trained.config.eval_image_size,
        train=False,
        breeds=trained.classes,
        eval_crop=crop or trained.config.eval_crop,
    )
    if len(dataset) == 0:
        raise DataError(f"split {split!r} of {prepared} has no images; choose --split val or test")
    return dataset, data_config.source


def evaluate_classifier(
    trained: TrainedModel,
    store: Store,
    *,
    data: str | None = None,
    split: str = "test",
    image_size: int | None = None,
    crop: float | None = None,
    hflip_tta: bool | None = None,
) -> EvalReport:
    """Evaluate on a prepared dataset (the run's own, or `data`: synthetic|oxford|PATH).

    `image_size`, `crop` (the central fraction of each photo) and `hflip_tta` (mirror
    test-time augmentation) override the run's classifier.eval_image_size, eval_crop and
    tta_hflip.
    """
    dataset, source = eval_dataset(
        trained, store, split, data=data, image_size=image_size, crop=crop
    )
    size, crop = dataset.image_size, dataset.eval_crop
    loader = DataLoader(dataset, batch_size=64, shuffle=False)
    if hflip_tta is None:
        hflip_tta = trained.config.classifier.tta_hflip
    logits, labels = predict_logits(trained.model, loader, trained.device, hflip_tta=hflip_tta)
    top1, top3, per_class, confusion = classification_metrics(logits, labels, len(trained.classes))

    report_dir = store.root / "reports" / trained.run_id
    report_dir.mkdir(parents=True, exist_ok=True)
    png = report_dir / f"confusion_{split}.png"
    confusion_image(confusion, trained.classes).save(png)
    report = EvalReport(
        run_id=trained.run_id,
        checkpoint=str(trained.info.path),
        split=split,
        data=source,
        image_size=size,
        crop=crop,
        tta_hflip=hflip_tta,
        n=len(labels),
        top1=top1,
        top3=top3,
        per_class=dict(zip(trained.classes, per_class, strict=True)),
        confusion=confusion,
        classes=trained.classes,
        confusion_png=str(png),
    )
    write_json_atomic(report_dir / f"eval_{split}.json", report.to_dict())
    registry = RunRegistry(store)
    try:
        record = registry.get(trained.run_id)
    except TinycatsError:  # a checkpoint copied here without its run record: report only
        record = None
    if record is not None:
        result = {
            "top1": top1,
            "top3": top3,
            "n": len(labels),
            "data": source,
            "image_size": size,
            "crop": crop,
            "tta_hflip": hflip_tta,
            "step": trained.info.step,  # which checkpoint these figures describe
        }
        registry.update(trained.run_id, eval={**(record.get("eval") or {}), split: result})
        figures = {"top1": top1, "top3": top3, "step": trained.info.step}
        log_evaluation(trained.config, store, trained.run_id, split, figures, png)
    store.commit()
    return report


def load_image_uint8(
    source: Path | BinaryIO,
    data: DataConfig,
    size: int,
    crop: float,
    *,
    max_pixels: int | None = None,
) -> torch.Tensor:
    """Any image PIL reads (a path or an uploaded stream) → (3, S, S) uint8, as evaluation
    sees a stored image (its central `crop`, resized to `size`). Decoded at full size, as a
    browser decodes it, so the web page gets these very pixels; the stored images of a
    JPEG over twice the stored size were decoded at a reduced scale (`decode_image`)."""
    if isinstance(source, Path) and source.is_dir():
        raise DataError(f"image {source} is a folder; pass image files (e.g. {source}/*.jpg)")
    if isinstance(source, Path) and not source.is_file():
        raise DataError(f"image {source} not found; check the path")
    try:
        square = decode_image(source, data.stored_size, max_pixels=max_pixels, draft=False)
    except SkippedImage as err:  # (stored, stored, 3) RGB centre square above, else:
        name = f"image {source}" if isinstance(source, Path) else "the uploaded image"
        if err.reason == "unreadable":
            raise DataError(
                f"cannot read {name} ({err.reason}); pass a JPEG, PNG or WebP"
            ) from None
        raise ImageTooLargeError(f"refusing {name}: {err.reason}; send a smaller picture") from None
    return resize_crop(square, central_box(*square.shape[:2], crop), size)


@torch.no_grad()
def top_k_breeds(
    trained: TrainedModel, images_uint8: torch.Tensor, top_k: int = 3
) -> list[list[dict[str, Any]]]:
    """For each (3, S, S) uint8 image of the batch, its top-k breeds with probabilities,
    judged as the run's evaluation judges (mirror TTA when the run uses it)."""
    from tinycats.models.classifier import classify

    logits = classify(
        trained.model,
        images_uint8.to(trained.device),
        hflip_tta=trained.config.classifier.tta_hflip,
    )
    probs = logits.float().softmax(dim=1).cpu()
    values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
    return [
        [
            {"breed": trained.classes[i], "probability": round(v, 4)}
            for v, i in zip(vals.tolist(), idx.tolist(), strict=True)
        ]
        for vals, idx in zip(values, indices, strict=True)
    ]


def predict_images(
    trained: TrainedModel, paths: list[Path], top_k: int = 3
) -> list[dict[str, Any]]:
    """Top-k breeds with probabilities for each image file."""
    config = trained.config
    size, crop = config.eval_image_size, config.eval_crop
    batch = torch.stack([load_image_uint8(p, config.data, size, crop) for p in paths])
    ranked = top_k_breeds(trained, batch, top_k)
    return [{"image": str(p), "top": top} for p, top in zip(paths, ranked, strict=True)]
