"""`tinycats bench inference`: latency of a trained model in every runtime, side by side."""

from __future__ import annotations

from typing import Annotated

import typer

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    JsonOption,
    OutOption,
    RefArgument,
    console,
    print_json,
)

app = typer.Typer(help="Measure trained models on this machine.", no_args_is_help=True)


@app.command("inference")
def inference_command(
    ref: RefArgument,
    dit: Annotated[
        str | None, typer.Option("--dit", help="Also time a guided sample of this DiT run.")
    ] = None,
    rounds: Annotated[
        int, typer.Option("--rounds", min=3, help="Timed calls per classifier variant.")
    ] = 30,
    dit_rounds: Annotated[
        int, typer.Option("--dit-rounds", min=1, help="Timed samples per DiT variant.")
    ] = 5,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="Threads for every runtime (default: torch's)."),
    ] = None,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """p50/p95/p99 and throughput at batch 1 and 32: PyTorch eager, channels-last,
    onnxruntime fp32 and int8; with a DiT, one 50-step guided sample in PyTorch and ORT."""
    from tinycats.cli.infer import load_pair
    from tinycats.deploy.latency import bench_trained, format_rows
    from tinycats.storage import LocalStore

    if threads is not None:
        import torch

        torch.set_num_threads(threads)  # onnxruntime sessions take torch's count
    models = load_pair(out, ref, dit)
    rows = bench_trained(
        models.get("classifier"),
        models.get("dit"),
        LocalStore(out),
        rounds=rounds,
        dit_rounds=dit_rounds,
    )
    if json_:
        print_json([row.to_dict() for row in rows])
    else:
        console.print(format_rows(rows), highlight=False, soft_wrap=True)
