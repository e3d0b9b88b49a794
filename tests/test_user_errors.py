"""Every user error is one stderr line, exit code 2, no traceback, and loses nothing.

Issue 22's table: bad paths, run ids, config files and values, images, options and
credentials, against one store holding a trained classifier run and a DiT run. Each
case runs in this process (typer's runner: a bug raises here with its traceback), and
afterwards every checkpoint of the store must still verify. A few cases also run as
real processes, for the exit code and stderr the shell sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tinycats.storage import verify_checkpoint

TINY_DATA = [
    "data.image_size=32",
    "data.synthetic_classes=4",
    "data.synthetic_per_class=12",
    "optim.batch_size=8",
]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def place(module_tmp: Path, cli) -> dict[str, str]:
    """A store with a classifier run `cls` and a DiT run `gen`, and the paths cases name."""
    out, data = module_tmp / "out", json.dumps(str(module_tmp / "data"))
    common = [*sets(*TINY_DATA, f"data.dir={data}"), "--out", str(out), "--no-progress"]
    trained = cli(
        "train",
        "classifier",
        "--run-id",
        "cls",
        "--max-steps",
        "2",
        "--ckpt-every",
        "1",
        *common,
    )
    assert trained.returncode == 0, trained.stderr
    dit = sets("dit.width=64", "dit.depth=2", "dit.preview_per_class=0", "data.image_size=32")
    trained = cli(
        "train", "dit", "--preset", "test", "--run-id", "gen", "--max-steps", "2", *dit, *common
    )
    assert trained.returncode == 0, trained.stderr
    (module_tmp / "file.txt").write_text("not a folder")
    (module_tmp / "folder").mkdir()
    (module_tmp / "latin1.toml").write_bytes("[optim]\nlr = 0.1 # caf\xe9\n".encode("latin-1"))
    (module_tmp / "syntax.toml").write_text("[optim\nlr = 1\n")
    (module_tmp / "a.toml").write_text('extends = "b.toml"\n')
    (module_tmp / "b.toml").write_text('extends = "a.toml"\n')
    (module_tmp / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("RGB", (16, 16)).save(module_tmp / "cat.png")
    # A decompression bomb: a PNG header claiming 30,000 x 30,000 pixels.
    Image.new("1", (30_000, 30_000)).save(module_tmp / "bomb.png")
    return {"out": str(out), "tmp": str(module_tmp), "data": data}


@contextlib.contextmanager
def read_only(root: Path) -> Iterator[None]:
    """Make a folder tree unwritable, even for root (immutable flag), for the block."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)
        undo = ["chmod", "-R", "u+w", str(root)]
    elif (
        shutil.which("chattr")
        and not subprocess.run(["chattr", "-R", "+i", str(root)], capture_output=True).returncode
    ):
        undo = ["chattr", "-R", "-i", str(root)]
    else:
        pytest.skip("cannot make a folder read-only here (root without chattr)")
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


LONG_ID = "r" * 300
CASES: list[tuple[str, list[str], str]] = [
    # -- where outputs go ------------------------------------------------------------------------
    ("out-is-a-file", ["train", "classifier", "--out", "{tmp}/file.txt"], "is a file"),
    ("out-under-a-file", ["train", "classifier", "--out", "{tmp}/file.txt/out"], "--out"),
    ("out-read-only", ["train", "classifier", "--run-id", "new", "RO"], "--out"),
    ("eval-read-only", ["eval", "cls", "RO"], "--out"),
    ("onnx-to-a-folder", ["export", "onnx", "cls", "-o", "{tmp}/folder"], "is a folder"),
    ("onnx-under-a-file", ["export", "onnx", "cls", "-o", "{tmp}/file.txt/m.onnx"], "-o"),
    (
        "int8-unknown-float-layer",
        ["export", "onnx", "cls", "--int8", "--keep-float", "tail", "-o", "{tmp}/m.onnx"],
        "keep_float",
    ),
    ("sample-to-a-folder", ["sample", "gen", "-o", "{tmp}/folder"], "is a folder"),
    ("sample-under-a-file", ["sample", "gen", "-o", "{tmp}/file.txt/g.png"], "-o"),
    # -- run ids and run folders -----------------------------------------------------------------
    ("run-id-300-chars", ["train", "classifier", "--run-id", LONG_ID], "invalid run id"),
    ("run-id-empty", ["train", "classifier", "--run-id", ""], "invalid run id"),
    ("run-id-a-path", ["train", "classifier", "--run-id", "../x"], "invalid run id"),
    ("run-id-of-another-task", ["train", "dit", "--run-id", "cls"], "is a classifier run"),
    ("predict-300-chars", ["predict", LONG_ID, "{tmp}/cat.png"], "no run or checkpoint"),
    ("ckpt-ls-dotdot", ["ckpt", "ls", "../../.."], "not a run folder"),
    ("ckpt-prune-not-a-run", ["ckpt", "prune", "{tmp}/folder"], "not a run folder"),
    ("ckpt-verify-not-a-run", ["ckpt", "verify", "{tmp}/folder"], "not a run folder"),
    ("ckpt-ls-unknown", ["ckpt", "ls", "nope"], "no checkpoints of run 'nope'"),
    ("runs-show-unknown", ["runs", "show", "nope"], "unknown run 'nope'"),
    (
        "resume-never-existing",
        ["train", "classifier", "--run-id", "cls", "--resume", "never"],
        "already exists",
    ),
    ("resume-unknown", ["train", "classifier", "--resume", "nope"], "no run 'nope'"),
    (
        "run-id-and-resume-differ",
        ["train", "classifier", "--run-id", "a", "--resume", "b"],
        "name different runs",
    ),
    # -- config files and values -----------------------------------------------------------------
    ("config-not-utf8", ["train", "classifier", "--config", "{tmp}/latin1.toml"], "UTF-8"),
    ("config-a-folder", ["train", "classifier", "--config", "{tmp}/folder"], "is a folder"),
    ("config-missing", ["train", "classifier", "--config", "{tmp}/none.toml"], "none.toml"),
    ("config-syntax", ["train", "classifier", "--config", "{tmp}/syntax.toml"], "syntax.toml"),
    ("config-extends-cycle", ["train", "classifier", "--config", "{tmp}/a.toml"], "cycle"),
    ("set-newline", ["train", "classifier", "--set", "optim.lr=0.1\noptim.max_steps=3"], "newline"),
    ("set-bad-value", ["train", "classifier", "--set", "optim.lr=-1"], "optim.lr"),
    ("set-unknown-key", ["train", "classifier", "--set", "optim.nope=1"], "optim.nope"),
    ("set-no-equals", ["train", "classifier", "--set", "optim.lr"], "optim.lr"),
    ("unknown-task", ["train", "cats"], "cats"),
    ("preset-for-classifier", ["train", "classifier", "--preset", "test"], "--preset"),
    ("unknown-preset", ["train", "dit", "--preset", "huge"], "huge"),
    # -- data --------------------------------------------------------------------------------------
    ("data-is-a-file", ["train", "classifier", "--data", "{tmp}/file.txt"], "is a file"),
    ("data-missing", ["train", "classifier", "--data", "{tmp}/nowhere"], "--data"),
    ("eval-bad-split", ["eval", "cls", "--split", "nope"], "nope"),
    # -- images ------------------------------------------------------------------------------------
    ("predict-a-folder", ["predict", "cls", "{tmp}/folder"], "is a folder"),
    ("predict-missing", ["predict", "cls", "{tmp}/missing.png"], "missing.png"),
    ("predict-corrupt", ["predict", "cls", "{tmp}/corrupt.jpg"], "corrupt.jpg"),
    ("predict-bomb", ["predict", "cls", "{tmp}/bomb.png"], "pixels"),
    ("predict-with-a-dit", ["predict", "gen", "{tmp}/cat.png"], "dit"),
    ("eval-unknown-run", ["eval", "nope"], "nope"),
    # -- sampling options --------------------------------------------------------------------------
    ("sample-cfg-nan", ["sample", "gen", "--cfg", "nan"], "--cfg"),
    ("sample-cfg-inf", ["sample", "gen", "--cfg", "inf"], "--cfg"),
    ("sample-n-zero", ["sample", "gen", "--n", "0"], "--n"),
    ("sample-steps-zero", ["sample", "gen", "--steps", "0"], "--steps"),
    ("sample-with-a-classifier", ["sample", "cls"], "dit"),
    ("sample-unknown-breed", ["sample", "gen", "--breed", "Lion"], "Lion"),
    ("sample-unknown-sampler", ["sample", "gen", "--sampler", "rk4"], "rk4"),
    ("max-steps-not-a-number", ["train", "classifier", "--max-steps", "abc"], "--max-steps"),
    ("unknown-option", ["train", "classifier", "--bogus"], "--bogus"),
    ("export-unknown-run", ["export", "onnx", "nope", "-o", "{tmp}/m.onnx"], "nope"),
    # -- the cloud without credentials -------------------------------------------------------------
    ("cloud-result-no-credentials", ["cloud", "result", "fc-123"], "modal token"),
]


def expand(args: list[str], place: dict[str, str]) -> list[str]:
    expanded = [a.replace("{tmp}", place["tmp"]) for a in args if a != "RO"]
    if args[0] != "cloud" and "--out" not in expanded:
        expanded += ["--out", place["out"]]
    return expanded


def no_credentials(tmp: str) -> dict[str, str]:
    """An environment where the Modal client finds no token (no config file, no env)."""
    env = {k: "" for k in os.environ if k.startswith("MODAL_")}
    return {**env, "HOME": tmp, "MODAL_CONFIG_PATH": f"{tmp}/no-modal.toml"}


def all_checkpoints_verify(out: str) -> None:
    steps = sorted(Path(out).glob("checkpoints/*/*/*/step_*"))
    assert len(steps) >= 3
    for step in steps:
        assert verify_checkpoint(step) == [], step


@pytest.mark.parametrize(("args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_user_error_is_one_line_exit_2_and_loses_nothing(place, cli, args, expected) -> None:
    env = no_credentials(place["tmp"]) if args[0] == "cloud" else None
    with read_only(Path(place["out"])) if "RO" in args else contextlib.nullcontext():
        result = cli(*expand(args, place), env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    if "--run-id" in args:  # a refused run id is refused before anything is said of it
        assert "new run" not in result.stdout
    all_checkpoints_verify(place["out"])


def test_the_table_covers_the_issue(place) -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "classifier", "--run-id", LONG_ID],
        ["sample", "gen", "--n", "0"],
        ["ckpt", "verify", "{tmp}/folder"],
    ],
    ids=["run-id-300-chars", "usage-error", "not-a-run-folder"],
)
def test_a_real_process_exits_2_with_one_line(place, args) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tinycats", *expand(args, place)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in proc.stderr
    all_checkpoints_verify(place["out"])
