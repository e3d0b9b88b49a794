"""Classifier top-1 by evaluation crop: the central fraction of each photo a model is judged on.

Random-resized training crops show a cat larger than a whole photo does, so a model may
score better on the photo's centre (`classifier.eval_crop`, timm's crop_pct). This
evaluates finished runs at several crops side by side, on each run's last checkpoint
(its "best" one was picked on validation, the split a crop is chosen on), with the
run's eval size and mirror TTA unless told otherwise. It prints one row per run, the
mean over the runs and the best crop, and writes nothing (`tinycats eval --crop F`
records a result).

    python benchmarks/eval_crop_sweep.py --out ~/.tinycats --split val --image-size 128 RUN...
    python benchmarks/eval_crop_sweep.py --split test --crops 1.0,0.75 --no-tta RUN...
    python benchmarks/eval_crop_sweep.py --smoke   # a tiny synthetic run, seconds
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from torch.utils.data import DataLoader

from tinycats.config import build_config
from tinycats.data import ShardDataset, prepare_dataset, resolve_data_root
from tinycats.storage import LocalStore
from tinycats.train import run_training
from tinycats.train.classifier_task import predict_logits
from tinycats.train.evaluation import classification_metrics
from tinycats.train.inference import TrainedModel, load_trained_model

CROPS = (1.0, 0.95, 0.9, 0.875, 0.85, 0.8, 0.75, 0.7)


def top1_by_crop(
    trained: TrainedModel,
    store: LocalStore,
    split: str,
    crops: list[float],
    size: int | None,
    hflip_tta: bool | None,
) -> list[float]:
    """Top-1 of one run on `split` at each crop; `size` and `hflip_tta` default to the run's."""
    config = trained.config
    prepared = prepare_dataset(config.data, resolve_data_root(config.data, store.root))
    scores = []
    for crop in crops:
        dataset = ShardDataset(
            prepared,
            split,
            size or config.eval_image_size,
            train=False,
            breeds=trained.classes,
            eval_crop=crop,
        )
        logits, labels = predict_logits(
            trained.model,
            DataLoader(dataset, batch_size=64),
            trained.device,
            hflip_tta=config.classifier.tta_hflip if hflip_tta is None else hflip_tta,
        )
        scores.append(classification_metrics(logits, labels, len(trained.classes))[0])
    return scores


def train_smoke_run(out: Path) -> str:
    """A tiny classifier on synthetic images, for the smoke pass."""
    overrides = [
        "data.image_size=32",
        "data.synthetic_classes=3",
        "data.synthetic_per_class=16",
        "optim.batch_size=16",
        "optim.max_steps=6",
        "optim.warmup_steps=1",
    ]
    run_training(
        build_config("classifier", overrides=overrides), LocalStore(out), "smoke", progress=False
    )
    return "smoke"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run ids or checkpoint paths")
    parser.add_argument("--out", type=Path, default=Path.home() / ".tinycats", help="tinycats home")
    parser.add_argument(
        "--split", default="val", help="choose the crop on val, then check it on test"
    )
    parser.add_argument("--crops", type=lambda v: [float(c) for c in v.split(",")], default=CROPS)
    parser.add_argument("--image-size", type=int, help="default: each run's eval_image_size")
    parser.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, help="mirror TTA (default: each run's)"
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny synthetic run, two crops")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out, runs, crops, split = args.out, args.runs, args.crops, args.split
        if args.smoke:
            out, crops, split = Path(tmp), [1.0, 0.75], "test"
            runs = [train_smoke_run(out)]
        if not runs:
            parser.error("name at least one run (or pass --smoke)")
        store = LocalStore(out)
        table = {
            run: top1_by_crop(
                load_trained_model(store, run, which="latest"),
                store,
                split,
                crops,
                args.image_size,
                args.tta,
            )
            for run in runs
        }
    print(f"{split} top-1 by crop: " + "  ".join(f"{c:>6}" for c in crops))
    for run, scores in table.items():
        print(f"{run:>20}: " + "  ".join(f"{s:6.1%}" for s in scores))
    means = [statistics.fmean(column) for column in zip(*table.values(), strict=True)]
    print(f"{'mean':>20}: " + "  ".join(f"{m:6.1%}" for m in means))
    best = max(range(len(crops)), key=means.__getitem__)
    print(
        f"best crop on {split}: {crops[best]} ({means[best]:.1%} against {means[0]:.1%} at {crops[0]})"
    )


if __name__ == "__main__":
    main()
