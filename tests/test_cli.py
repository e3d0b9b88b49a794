"""The command line: errors are one line with exit code 2, help stays light, doctor reports.

Commands run in this process (the `cli` fixture, typer's runner); the first test runs
the real `python -m tinycats` once, so the exit code a shell sees is checked too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tinycats.config import build_config


def test_a_user_error_is_one_stderr_line_and_exit_2_in_a_real_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tinycats", "config", "show", "--set", "optim.lr=[oops]"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: invalid config value optim.lr='[oops]': Input should be a valid number, "
        "unable to parse string as a number\n"
    )  # one line, the brackets printed as typed (not read as markup), no traceback
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "optim.max_steps=-5"], "optim.max_steps=-5"),
        (["--set", "optim.nope=1"], "unknown config key 'optim.nope'"),
        (["--set", "retries.max_delay=300"], "retries.max_delay=300"),
        (["--set", 'data.breeds=["Tabby"]'], "unknown breed 'Tabby'"),
        (["--set", "modal.gpu=V100"], "unknown GPU 'V100'"),
        (["--set", "optim.lr"], "--set expects key=value"),
        (["--config", "/nonexistent.toml"], "not found"),
    ],
)
def test_bad_config_is_one_line_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli("config", "show", "classifier", *args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_rejects_bad_value_before_any_work(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("train", "classifier", "--out", str(out), "--set", "optim.batch_size=0")
    assert result.returncode == 2 and "optim.batch_size=0" in result.stderr
    assert not out.exists()


def test_train_takes_any_registered_task_and_names_the_others(cli, tmp_path: Path) -> None:
    result = cli("train", "gan", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown task 'gan'; choose one of classifier, dit" in result.stderr
    preset = cli("train", "classifier", "--preset", "test", "--out", str(tmp_path))
    assert preset.returncode == 2 and "--preset applies to the dit task" in preset.stderr


def test_help_does_not_import_torch() -> None:
    code = "import sys, tinycats.cli; print('torch' in sys.modules, 'modal' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"]


def test_every_local_command_takes_out() -> None:
    from typer.main import get_command

    from tinycats.cli import app

    def leaves(command, path=()):
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            yield path, command
            return
        for name, sub in subcommands.items():
            yield from leaves(sub, (*path, name))

    def options(command) -> set[str]:
        return {opt for p in command.params for opt in p.opts}

    # Local commands work on the Store under --out; remote ones (cloud, and ckpt
    # get|put|rm) address a Modal volume instead.
    commands = list(leaves(get_command(app)))
    remote = {("ckpt", "get"), ("ckpt", "put"), ("ckpt", "rm")}
    missing = [
        " ".join(path)
        for path, command in commands
        if path[0] != "cloud" and path not in remote and "--out" not in options(command)
    ]
    assert missing == []
    assert all("--volume" in options(command) for path, command in commands if path in remote)
    assert len(commands) > 25


def test_doctor_json_reports_versions_device_and_space(cli, tmp_path: Path) -> None:
    result = cli("doctor", "--json", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"] in {"cpu", "cuda", "mps"}
    assert report["versions"]["torch"] != "not installed"
    assert report["out"]["free_gb"] > 0
    assert "modal_credentials" in report
    cpuinfo = Path("/proc/cpuinfo")
    if report["device"] == "cpu" and cpuinfo.exists():  # the kernel's view of the same units
        flags = set(cpuinfo.read_text().split())
        assert report["cpu_bf16"] == bool(flags & {"amx_tile", "avx512_bf16"})


def test_config_show_round_trips_through_toml(cli, tmp_path: Path) -> None:
    result = cli("config", "show", "dit", "--set", "optim.lr=0.0002")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "dit.toml"
    path.write_text(result.stdout)
    again = cli("config", "show", "dit", "--config", str(path), "--json")
    resolved = json.loads(again.stdout)
    assert resolved["optim"]["lr"] == 0.0002 and resolved["task"] == "dit"
    assert resolved["checkpoint"]["best_metric"] == "val_loss"


def test_shipped_configs_are_valid(configs_dir: Path) -> None:
    paths = sorted(configs_dir.glob("*.toml"))
    assert len(paths) >= 4
    for path in paths:
        task = tomllib.loads(path.read_text())["task"]
        config = build_config(task, file=path)
        assert config.task == task and config.optim.max_steps > 0, path.name
