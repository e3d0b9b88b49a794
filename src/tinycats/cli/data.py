"""`tinycats data prepare | info`: build the packed dataset once, then look inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    ConfigOption,
    JsonOption,
    OutOption,
    SetOption,
    TaskOption,
    console,
    err_console,
    print_json,
    print_table,
)

app = typer.Typer(
    help="Prepare datasets (download, verify, pack into shards) and inspect them.",
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where prepared datasets live. Default: data.dir, else <out>/data."
    ),
]


@app.command("prepare")
def prepare(
    source: Annotated[
        str | None, typer.Option("--source", help="synthetic | oxford | PATH (Oxford layout).")
    ] = None,
    size: Annotated[
        int | None,
        typer.Option("--size", help="Train image size; shards store it × data.stored_scale."),
    ] = None,
    include_other: Annotated[
        bool, typer.Option("--include-other", help="Add a 13th class 'other' from the dog images.")
    ] = False,
    data_dir: DataDirOption = None,
    out: OutOption = DEFAULT_OUT_PATH,
    task: TaskOption = "classifier",
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Download/verify (oxford), decode once and pack into shards; a prepared dataset is reused."""
    from tinycats.config import build_config
    from tinycats.data import load_manifest, prepare_dataset, resolve_data_root

    flags = {
        "data.source": source,
        "data.image_size": size,
        "data.include_other": include_other or None,
        "data.dir": data_dir,
    }
    cfg = build_config(task, config, set_, flags=flags).data
    prepared = prepare_dataset(cfg, resolve_data_root(cfg, out), progress=err_console.is_terminal)
    manifest = load_manifest(prepared)
    if json_:
        print_json({"path": str(prepared), **manifest.to_dict(labels=False)})
    else:
        _print_manifest(prepared, manifest)


@app.command("info")
def info(
    dataset: Annotated[
        str | None,
        typer.Argument(
            help="A prepared dir (path or name under the data dir). Default: all of them."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """Print the manifest of prepared datasets: classes × splits, skips, shards, checksums."""
    from tinycats.data import load_manifest
    from tinycats.data.shards import MANIFEST
    from tinycats.errors import DataError

    root = data_dir if data_dir is not None else out / "data"
    if dataset is not None:
        path = Path(dataset)
        dirs = [path if path.is_dir() or path.is_absolute() else root / dataset]
    else:
        dirs = sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
        if not dirs:
            raise DataError(f"no prepared datasets in {root}; run `tinycats data prepare` first")
    manifests = [(d, load_manifest(d)) for d in dirs]
    if json_:
        print_json([{"path": str(d), **m.to_dict(labels=False)} for d, m in manifests])
        return
    for d, m in manifests:
        _print_manifest(d, m)


def _print_manifest(path: Path, manifest: Any) -> None:
    from rich.text import Text

    splits = list(manifest.counts)
    rows: list[list[object]] = []
    for name in manifest.classes:
        counts = [manifest.counts[s][name] for s in splits]
        rows.append([name, *counts, sum(counts)])
    totals = [manifest.total(s) for s in splits]
    rows.append([Text(str(c), style="bold") for c in ("all", *totals, sum(totals))])
    print_table(("class", *splits, "total"), rows, title=path.name, right=(*splits, "total"))
    size_mb = sum(s.bytes for s in manifest.shards) / 2**20
    skipped = ", ".join(f"{k} {v}" for k, v in manifest.skipped.items()) or "none"
    console.print(f"path      {path}", highlight=False)
    console.print(f"source    {manifest.source}", highlight=False)
    console.print(
        f"stored    {manifest.stored_size}×{manifest.stored_size} px, {len(manifest.shards)} shards, "
        f"{size_mb:.1f} MiB, format v{manifest.version}, val {manifest.val_fraction:g}, seed {manifest.seed}",
        highlight=False,
    )
    console.print(f"skipped   {skipped}", highlight=False)
    for name, digest in manifest.source_checksums.items():
        console.print(f"checksum  {name} {digest}", highlight=False)
