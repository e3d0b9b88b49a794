"""`tinycats export onnx|hf|web`: ship a trained model as ONNX, a Hugging Face folder or a site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    JsonOption,
    OutOption,
    RefArgument,
    checked_output_file,
    console,
    print_json,
)
from tinycats.cli.infer import load_for
from tinycats.config import Int8Config

_INT8 = Int8Config()

app = typer.Typer(
    help="Export a trained model: ONNX (int8), Hugging Face, a web demo.", no_args_is_help=True
)


@app.command("onnx")
def onnx_command(
    ref: RefArgument,
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="ONNX file to write.", callback=checked_output_file),
    ] = Path("model.onnx"),
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Classifier: static int8 quantisation calibrated on training photos; prints "
            "the top-1 change on the test split and the size ratio.",
        ),
    ] = False,
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", min=1, help="Training photos to calibrate on.")
    ] = _INT8.calibration_images,
    calibration_method: Annotated[
        Literal["minmax", "entropy", "percentile"],
        typer.Option("--calibration-method", help="How activation ranges are chosen."),
    ] = _INT8.calibration_method,
    keep_float: Annotated[
        str,
        typer.Option(
            "--keep-float",
            help="Comma-separated layers left in float: stem (first conv), head (fc); '' = none.",
        ),
    ] = ",".join(_INT8.keep_float),
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """Export a classifier or the DiT network to ONNX (dynamic batch), checked with onnxruntime."""
    from tinycats.config import int8_config
    from tinycats.deploy.onnx_export import export_trained_onnx
    from tinycats.errors import ConfigError
    from tinycats.storage import LocalStore
    from tinycats.train.inference import load_trained_model

    settings = int8_config(  # a bad value fails before the model loads
        calibration_images=calibration_images,
        calibration_method=calibration_method,
        keep_float=[layer.strip() for layer in keep_float.split(",") if layer.strip()],
    )
    trained = load_trained_model(LocalStore(out), ref)
    if int8:
        if trained.config.task != "classifier":
            raise ConfigError("--int8 quantises the classifier; export the DiT without --int8")
        from tinycats.deploy.quantize import export_int8

        report = export_int8(trained, LocalStore(out), output, settings=settings)
        if json_:
            print_json({"output": str(output), **report.to_dict()})
            return
        console.print(
            f"wrote {output}: int8 top-1 {report.top1_int8:.2%} vs fp32 {report.top1_fp32:.2%} "
            f"on {report.n} {report.split} photos, step {report.step} "
            f"({report.delta_points:+.2f} points, "
            f"{report.agreement:.1%} same top-1); size {report.bytes_int8 / 1e6:.1f} MB vs "
            f"{report.bytes_fp32 / 1e6:.1f} MB (×{report.size_ratio:.2f}); "
            f"figures in {output.with_suffix('.json')}",
            highlight=False,
        )
        return
    max_diff = export_trained_onnx(trained, output)
    if json_:
        from tinycats.models.export import read_metadata

        print_json({"output": str(output), "max_abs_diff": max_diff, **read_metadata(output)})
        return
    console.print(
        f"wrote {output} ({trained.config.task}); max abs diff vs PyTorch {max_diff:.2e}",
        highlight=False,
    )


@app.command("hf")
def hf_command(
    ref: RefArgument,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write.")],
    push: Annotated[
        str | None,
        typer.Option("--push", help="Also upload to this Hugging Face repo (user/name)."),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create the pushed repo private.")
    ] = False,
    license_: Annotated[
        str | None,
        typer.Option(
            "--license",
            help="Card licence (default: cc-by-sa-4.0 for Oxford photos, as the dataset; "
            "mit for synthetic data).",
        ),
    ] = None,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """A Hugging Face folder: safetensors, config.json, model card (recorded figures only)."""
    from tinycats.deploy.hf import export_hf, hub_message, hub_token, push_to_hub
    from tinycats.errors import TinycatsError
    from tinycats.storage import LocalStore, RunRegistry
    from tinycats.train.inference import load_trained_model

    if push:
        hub_token()  # no token: say so before any work
    store = LocalStore(out)
    trained = load_trained_model(store, ref)
    try:
        record = RunRegistry(store).get(trained.run_id)
    except TinycatsError:  # a checkpoint copied here without its run record
        record = None
    name = push.split("/")[-1] if push else None
    result = export_hf(trained, record, output, name=name, license_=license_)
    url = None
    if push:
        url = push_to_hub(output, push, private=private, message=hub_message(trained))
    if json_:
        print_json(
            {
                "output": str(result.folder),
                "files": result.files,
                "evaluated_splits": result.evaluated_splits,
                "pushed": url,
            }
        )
        return
    evaluated = ", ".join(result.evaluated_splits) or "not evaluated"
    console.print(
        f"wrote {result.folder} ({', '.join(result.files)}); card figures: {evaluated}",
        highlight=False,
    )
    if url:
        console.print(f"pushed to {url}", highlight=False)


@app.command("web")
def web_command(
    ref: RefArgument,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write the site into.")],
    dit: Annotated[
        str | None, typer.Option("--dit", help="A DiT run for the generate page.")
    ] = None,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """A static site (no server code, no CDN) classifying photos and drawing cats in the browser."""
    from tinycats.deploy.web import export_web

    classifier = load_for(out, ref, "classifier")
    generator = load_for(out, dit, "dit") if dit is not None else None
    result = export_web(classifier, generator, output)
    if json_:
        print_json(
            {
                "output": str(result.folder),
                "files": result.files,
                "bytes": result.bytes,
                "onnxruntime_web": result.ort_web_version,
            }
        )
        return
    pages = "index.html" + (", generate.html" if generator else "")
    console.print(
        f"wrote {result.folder} ({pages}; {result.bytes / 1e6:.1f} MB with onnxruntime-web "
        f"{result.ort_web_version}); serve it over http, e.g. "
        f"`python -m http.server -d {result.folder}`",
        highlight=False,
    )
