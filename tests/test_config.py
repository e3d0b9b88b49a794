"""Config files: `extends` merges a base recipe beneath a variant, and its mistakes are clear."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinycats.config import build_config, layered_config, read_config_file, resolve_config
from tinycats.errors import ConfigError


def test_extends_merges_base_beneath_the_variant(tmp_path: Path, write) -> None:
    write(
        tmp_path / "base.toml",
        'task = "classifier"\n[optim]\nlr = 0.01\nmax_steps = 500\n[classifier]\nmixup_alpha = 0.2\n',
    )
    variant = write(tmp_path / "variant.toml", 'extends = "base.toml"\n[optim]\nmax_steps = 100\n')
    config = build_config("classifier", variant)
    assert config.optim.max_steps == 100  # the variant wins
    assert config.optim.lr == 0.01  # the base fills in the rest, section by section
    assert config.classifier.mixup_alpha == 0.2
    assert "extends" not in read_config_file(variant)  # consumed, never validated as a key


def test_extends_is_relative_to_the_file_and_chains(tmp_path: Path, write) -> None:
    write(tmp_path / "recipes" / "root.toml", "[optim]\nlr = 0.5\nwarmup_steps = 7\n")
    write(tmp_path / "recipes" / "mid.toml", 'extends = "root.toml"\n[optim]\nlr = 0.25\n')
    leaf = write(tmp_path / "leaf.toml", 'extends = "recipes/mid.toml"\nseed = 3\n')
    config = build_config("classifier", leaf)
    assert (config.optim.lr, config.optim.warmup_steps, config.seed) == (0.25, 7, 3)


def test_overrides_still_win_over_every_file(tmp_path: Path, write) -> None:
    write(tmp_path / "base.toml", "[optim]\nlr = 0.5\n")
    variant = write(tmp_path / "variant.toml", 'extends = "base.toml"\n')
    assert build_config("classifier", variant, ["optim.lr=0.125"]).optim.lr == 0.125


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a.toml": 'extends = "missing.toml"\n'}, "extends 'missing.toml'"),
        (
            {"a.toml": 'extends = "b.toml"\n', "b.toml": 'extends = "a.toml"\n'},
            "a.toml -> b.toml -> a.toml",
        ),
        ({"a.toml": 'extends = "a.toml"\n'}, "extends itself"),
        ({"a.toml": "extends = 3\n"}, "must be a file name"),
        (
            {"a.toml": 'task = "classifier"\nextends = "d.toml"\n', "d.toml": 'task = "dit"\n'},
            "task 'dit'",
        ),
        ({"a.toml": 'extends = "b.toml"\n', "b.toml": "[optim\n"}, "not valid TOML"),
    ],
)
def test_bad_extends_is_a_config_error(
    tmp_path: Path, files: dict[str, str], expected: str, write
) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError) as err:
        build_config("classifier", tmp_path / "a.toml")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_fp32_recipe_is_the_bf16_recipe_with_six_values_changed(configs_dir) -> None:
    bf16 = build_config("classifier", configs_dir / "classifier-cpu.toml").to_dict()
    fp32 = build_config("classifier", configs_dir / "classifier-cpu-fp32.toml").to_dict()
    changed = {
        (section, key)
        for section, values in bf16.items()
        if isinstance(values, dict)
        for key in values
        if values[key] != fp32[section][key]
    }
    assert changed == {
        ("classifier", "cutmix_alpha"),
        ("classifier", "mixup_alpha"),
        ("optim", "amp"),
        ("optim", "max_steps"),
        ("optim", "warmup_steps"),
        ("optim", "ema_decay"),
    }


def test_cloud_layer_carries_the_base_recipe(tmp_path: Path, write) -> None:
    """`tinycats cloud train` sends the file as a layer that a resumed run re-applies in the
    container: it must hold the base's values, and no `extends` the container cannot read."""
    write(
        tmp_path / "base.toml",
        "[optim]\nlr = 0.5\nmax_steps = 40\n[classifier]\nmixup_alpha = 0.2\n",
    )
    variant = write(tmp_path / "variant.toml", 'extends = "base.toml"\n[optim]\nmax_steps = 8\n')
    resolved, layer = layered_config("classifier", variant, ["optim.lr=0.125"])
    assert "extends" not in layer
    assert layer["optim"] == {"lr": 0.125, "max_steps": 8}
    assert layer["classifier"] == {"mixup_alpha": 0.2}
    assert build_config("classifier", base=layer) == resolved


def test_the_container_applies_the_layer_over_the_saved_run(tmp_path: Path, write) -> None:
    """A resumed cloud run: saved config beneath, the client's layer (file, --set, flags) on top."""
    saved = build_config("dit", overrides=["optim.lr=0.5", "optim.max_steps=40"]).to_dict()
    config_file = write(tmp_path / "more.toml", "[optim]\nmax_steps = 80\n")
    _, layer = layered_config("dit", config_file, ["seed=4"], {"modal.gpu": "H100", "x": None})
    config = resolve_config("dit", layer, saved)
    assert (config.optim.lr, config.optim.max_steps, config.seed) == (0.5, 80, 4)
    assert config.modal.gpu == "H100"


def test_flags_go_over_set_and_share_its_key_check(tmp_path: Path) -> None:
    config = build_config("classifier", None, ["optim.lr=0.5"], flags={"optim.lr": 0.25})
    assert config.optim.lr == 0.25
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.speed'"):
        build_config("classifier", flags={"optim.speed": 3})
    with pytest.raises(ConfigError, match="is for task 'dit', not 'classifier'"):
        build_config("classifier", overrides=["task='dit'"])


def test_a_relative_data_source_is_relative_to_its_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write
) -> None:
    (tmp_path / "photos").mkdir()
    write(tmp_path / "recipes" / "base.toml", '[data]\nsource = "../photos"\n')
    variant = write(tmp_path / "recipes" / "deep" / "variant.toml", 'extends = "../base.toml"\n')
    monkeypatch.chdir(tmp_path / "recipes" / "deep")  # neither the file's folder nor the root
    assert build_config("classifier", variant).data.source == str(tmp_path / "photos")
    named = write(tmp_path / "named.toml", '[data]\nsource = "oxford"\n')
    assert build_config("classifier", named).data.source == "oxford"
    # A --set value is the user's own typing: relative to where they typed it, untouched here.
    assert build_config("classifier", variant, ["data.source='x'"]).data.source == "x"


@pytest.mark.parametrize(
    "name", ["classifier-cpu.toml", "classifier-judge-64px.toml", "dit-cpu.toml"]
)
def test_shipped_configs_find_the_photos_from_any_directory(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configs_dir
) -> None:
    monkeypatch.chdir(tmp_path)
    task = "dit" if name.startswith("dit") else "classifier"
    source = Path(build_config(task, configs_dir / name).data.source)
    # Resolved on both sides: ../shared may be a symlink beside the clone (it is one on CI).
    assert source == (configs_dir.parent.parent / "shared" / "data" / "oxford-cats-mini").resolve()
