"""`tinycats cloud ...`: the same training on Modal GPUs, and files on Modal volumes.

Modal is imported only inside the commands (through tinycats.cloud), so `--help` stays
fast and the package works without a Modal account. The `volume_*` functions are
plain typer commands so the `ckpt` group can register them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tinycats.cli.common import (
    BreedOption,
    ConfigOption,
    GuidanceOption,
    JsonOption,
    MaxStepsOption,
    PerClassOption,
    RunIdArgument,
    SampleOutputOption,
    SeedOption,
    SetOption,
    SplitOption,
    StepsOption,
    TaskArgument,
    TaskOption,
    console,
    print_json,
    print_table,
)

app = typer.Typer(
    help="Run on Modal GPUs: prepare data, train (resumable, retried), evaluate, sample, bench.",
    no_args_is_help=True,
)
volume_app = typer.Typer(
    help="List, download, upload and remove files on a Modal volume (no mount needed).",
    no_args_is_help=True,
)
app.add_typer(volume_app, name="volume")

GpuOption = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        help="T4, L4, A10, L40S, A100-80GB, H100, H200, B200...; H100:4 for four; "
        "H100,A100-80GB for a fallback list (modal.gpu).",
    ),
]
NodesOption = Annotated[
    int | None,
    typer.Option(
        "--nodes",
        help="Containers training the run together (a Modal cluster), each with every GPU "
        "of its host: --gpu H100:8 --nodes 2 is 16 ranks (modal.nodes).",
    ),
]
TargetArgument = Annotated[
    str, typer.Argument(help="A call id (fc-..., printed by `cloud train`) or a run id.")
]
CloudDataOption = Annotated[
    str | None, typer.Option("--data", help="synthetic | oxford (data.source; prepared on CPUs).")
]
VolumeOption = Annotated[
    str | None,
    typer.Option("--volume", help="Volume name (default: modal.outputs_volume)."),
]


@app.command("prepare")
def prepare_command(
    task: TaskOption = "classifier",
    data: CloudDataOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Build datasets on the data volume, on CPUs, once (later calls return at once).

    With no --config, --data or --set: the shards every shipped GPU config needs
    (configs/*-gpu.toml), so no GPU call ever prepares data.
    """
    from tinycats.cloud import client
    from tinycats.config import build_config

    if config is None and data is None and not set_:
        configs = [build_config(_task_of(path), path) for path in client.shipped_gpu_configs()]
    else:
        configs = [build_config(task, config, set_, flags={"data.source": data})]
    results = [client.prepare(cfg) for cfg in configs]
    if json_:
        print_json(results)
        return
    for cfg, result in zip(configs, results, strict=True):
        state = "cached" if result["cached"] else "prepared"
        console.print(
            f"{state}: {result['prepared']} ({result['files']} files) on volume "
            f"{cfg.modal.data_volume}",
            highlight=False,
        )


def _task_of(path: Path) -> str:
    from tinycats.config import read_config_file

    return read_config_file(path).get("task", "classifier")


@app.command("train")
def train_command(
    task: TaskArgument,
    gpu: GpuOption = None,
    nodes: NodesOption = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Continue this run (default: a new one).")
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Spawn and return; the run survives this client.")
    ] = False,
    max_steps: MaxStepsOption = None,
    data: CloudDataOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Train on a Modal GPU; retries and preemptions resume the run from its last checkpoint."""
    from tinycats.cloud import client
    from tinycats.config import layered_config
    from tinycats.storage import new_run_id

    # The layer travels to the container, where a resumed run applies it over its record.
    flags = {
        "modal.gpu": gpu,
        "modal.nodes": nodes,
        "optim.max_steps": max_steps,
        "data.source": data,
    }
    cfg, layer = layered_config(task, config, set_, flags)
    run_id = run_id or new_run_id(cfg.task)  # fixed before the first attempt
    if not json_:
        where = cfg.modal.gpu if cfg.modal.nodes == 1 else f"{cfg.modal.nodes} × {cfg.modal.gpu}"
        console.print(
            f"[bold]{run_id}[/] on {where}: {cfg.modal.timeout_minutes}-minute slices "
            f"(a longer run continues in a new call), {cfg.retries.max_retries} retries for "
            f"failures\nestimate: {client.estimate_line(cfg)}",
            highlight=False,
        )

    def on_next(value: dict[str, Any], call_id: str) -> None:
        if not json_:
            console.print(f"step {value['step']}/{value['max_steps']}: continuing in {call_id}")

    result = client.train(cfg, layer, run_id, detach=detach, on_next=on_next)
    if json_:
        print_json(result)
        return
    if detach:
        console.print(
            f"spawned call {result['call_id']}\n"
            f"  follow logs:   tinycats cloud logs {run_id} --follow\n"
            f"  cancel:        tinycats cloud cancel {run_id}\n"
            f"  dashboard:     {result['dashboard'] or 'https://modal.com/apps'}\n"
            f"  wait/result:   tinycats cloud result {result['call_id']} --wait 3600\n"
            f"  checkpoints:   tinycats cloud volume ls checkpoints/{cfg.task} --recursive "
            f"--volume {cfg.modal.outputs_volume}\n"
            f"  resume later:  tinycats cloud train {cfg.task} --run-id {run_id}",
            highlight=False,
        )
        return
    _print_train_result(result)


def _print_train_result(result: dict[str, Any]) -> None:
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in result.get("metrics", {}).items())
    console.print(
        f"[bold]{result['status']}[/] {result['run_id']} at step {result['step']}/"
        f"{result['max_steps']}  {metrics}\ncheckpoint (on the outputs volume): "
        f"{result['checkpoint']}",
        highlight=False,
    )


@app.command("result")
def result_command(
    target: TargetArgument,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for it.")] = 0.0,
    volume: VolumeOption = None,
    json_: JsonOption = False,
) -> None:
    """The result of a run (followed across its calls), or that it is still running (exit 1)."""
    from tinycats.cloud import calls

    call_id = calls.resolve_call(target, _outputs_volume(volume))
    done, value = calls.follow(call_id, timeout=wait)
    if not done:
        console.print(f"{value} is still running; try again with --wait SECONDS")
        raise typer.Exit(1)
    if json_:
        print_json(value)
    else:
        _print_train_result(value)


@app.command("logs")
def logs_command(
    target: TargetArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until it ends.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="How many, newest.")] = 200,
    volume: VolumeOption = None,
) -> None:
    """A call's log lines (a run id means its newest call)."""
    from tinycats.cloud import calls

    call_id = calls.resolve_call(target, _outputs_volume(volume))
    for message in calls.logs(call_id, follow_stream=follow, entries=lines):
        console.out(message, end="" if message.endswith("\n") else "\n", highlight=False)


@app.command("cancel")
def cancel_command(target: TargetArgument, volume: VolumeOption = None) -> None:
    """Cancel a call (a run id means its live call): it checkpoints, commits and stops, and
    is not retried; `cloud train TASK --run-id RUN` resumes the run."""
    from tinycats.cloud import calls

    call_id = calls.resolve_call(target, _outputs_volume(volume))
    calls.cancel(call_id)
    console.print(f"cancelled {call_id}; resume with `tinycats cloud train TASK --run-id RUN`")


def _outputs_volume(name: str | None) -> str:
    from tinycats.config import ModalConfig

    return name or ModalConfig().outputs_volume


@app.command("eval")
def eval_command(
    run_id: RunIdArgument,
    split: SplitOption = "test",
    which: Annotated[str, typer.Option("--which", help="best | latest")] = "best",
    gpu: GpuOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Evaluate a classifier run on Modal; the report is written to the outputs volume."""
    from tinycats.cloud import client
    from tinycats.config import build_config

    cfg = build_config("classifier", config, set_)
    report = client.evaluate(cfg, run_id, split=split, which=which, gpu=gpu)
    if json_:
        print_json(report)
        return
    console.print(
        f"{report['run_id']} · {report['split']} · {report['n']} images: top-1 "
        f"{report['top1']:.4f}  top-3 {report['top3']:.4f}\nreport: reports/{report['run_id']}/ "
        f"on volume {cfg.modal.outputs_volume}",
        highlight=False,
    )


@app.command("sample")
def sample_command(
    run_id: RunIdArgument,
    output: SampleOutputOption = Path("grid.png"),
    breed: BreedOption = "all",
    n: PerClassOption = 8,
    seed: SeedOption = 0,
    cfg_scale: GuidanceOption = None,
    steps: StepsOption = None,
    gpu: GpuOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Draw cats with a DiT run on Modal; the grid is saved on the volume and here."""
    from tinycats.cloud import client
    from tinycats.config import build_config
    from tinycats.storage.atomic import write_bytes_atomic

    cfg = build_config("dit", config, set_)
    options = {"breed": breed, "n": n, "seed": seed, "cfg_scale": cfg_scale, "steps": steps}
    result = client.sample(cfg, run_id, options, gpu=gpu)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(output, result["png"])
    console.print(
        f"wrote {output} (step {result['step']}); on the volume: {result['path']}",
        highlight=False,
    )


@app.command("bench")
def bench_command(
    gpu: GpuOption = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Force a full image build to time it.")
    ] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Measure image build, cold start (with/without snapshot) and warm start on your account."""
    from tinycats.cloud import client
    from tinycats.config import build_config

    rows = client.bench(build_config("classifier", config, set_), gpu=gpu, rebuild=rebuild)
    if json_:
        print_json(rows)
        return
    print_table(
        ("measure", "seconds", "target", "ok"),
        [
            (
                row["what"],
                f"{row['seconds']:.2f}",
                "" if row["target"] is None else f"< {row['target']:g}",
                ""
                if row["target"] is None
                else ("yes" if row["seconds"] < row["target"] else "NO"),
            )
            for row in rows
        ],
        title="Modal start-up (seconds; targets from the original plan)",
        right=("seconds", "target", "ok"),
    )


# -- files on a volume ------------------------------------------------------------------------


def _volume(name: str | None):
    from tinycats.cloud.remote_volume import open_remote_volume
    from tinycats.config import ModalConfig

    return open_remote_volume(name or ModalConfig().outputs_volume)


@volume_app.command("ls")
def volume_ls(
    path: Annotated[str, typer.Argument(help="Path inside the volume.")] = "/",
    volume: VolumeOption = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r")] = False,
    json_: JsonOption = False,
) -> None:
    """List a folder of the volume (committed files only)."""
    entries = _volume(volume).ls(path, recursive=recursive)
    if json_:
        print_json([e.__dict__ for e in entries])
        return
    for entry in entries:
        kind = "dir " if entry.is_dir else f"{entry.size:>12,d}"
        console.print(f"{kind}  {entry.path}{'/' if entry.is_dir else ''}", highlight=False)


@volume_app.command("get")
def volume_get(
    path: Annotated[str, typer.Argument(help="File or folder inside the volume.")],
    dest: Annotated[Path, typer.Argument(help="Local file or folder.")] = Path("."),
    volume: VolumeOption = None,
) -> None:
    """Download a file or a folder (e.g. a checkpoint step folder) from the volume."""
    written = _volume(volume).get(path, dest)
    console.print(f"downloaded {len(written)} file(s) to {dest}", highlight=False)


@volume_app.command("put")
def volume_put(
    local: Annotated[Path, typer.Argument(help="Local file or folder.")],
    path: Annotated[str, typer.Argument(help="Destination inside the volume.")],
    volume: VolumeOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Upload a file or folder to the volume (batch upload; committed when it returns)."""
    remote = _volume(volume).put(local, path, force=force)
    console.print(f"uploaded {local} to {remote}", highlight=False)


@volume_app.command("rm")
def volume_rm(
    path: Annotated[str, typer.Argument(help="File or folder inside the volume.")],
    volume: VolumeOption = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Remove a folder.")] = False,
) -> None:
    """Remove a file (or a folder with -r) from the volume."""
    remote = _volume(volume).rm(path, recursive=recursive)
    console.print(f"removed {remote}", highlight=False)


def ckpt_ls_remote(volume: str, run: str | None, json_: bool) -> None:
    """`tinycats ckpt ls [RUN] --volume NAME`: the committed step folders on a volume."""
    from tinycats.storage.layout import parse_step

    entries = _volume(volume).ls("checkpoints", recursive=True)
    steps = [
        e
        for e in entries
        if e.is_dir
        and parse_step(e.path.rsplit("/", 1)[-1]) is not None
        and (run is None or f"/{run}/" in f"/{e.path}")
    ]
    if json_:
        print_json([e.__dict__ for e in steps])
        return
    if not steps:
        console.print(f"no checkpoints on volume {volume}" + (f" for run {run}" if run else ""))
        return
    for entry in steps:
        console.print(entry.path, highlight=False)
