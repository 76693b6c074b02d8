from pathlib import Path

import pytest

from coldstart.config import ConfigError, load_config, parse_overrides
from coldstart.pipeline import PipelineConfig


def test_parse_overrides_types_and_nesting():
    assert parse_overrides(["--a.b-c", "64", "--x=0.5", "--flag", "--name", "ml-1m", "--ks", "[5, 10]"]) == {
        "a": {"b_c": 64}, "x": 0.5, "flag": True, "name": "ml-1m", "ks": [5, 10]}


def test_yaml_then_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("dataset: ml-1m\nseed: 1\n")
    cfg = load_config(PipelineConfig, tmp_path / "c.yaml", ["--seed", "7", "--out", "x"])
    assert (cfg.dataset, cfg.seed, cfg.out) == ("ml-1m", 7, Path("x").resolve())


def test_unknown_key_and_bad_value_name_the_field():
    with pytest.raises(ConfigError, match="sed"):
        load_config(PipelineConfig, None, ["--sed", "7"])
    with pytest.raises(ConfigError, match=r"cold.*'sideways'"):
        load_config(PipelineConfig, None, ["--cold", "sideways"])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(PipelineConfig, "nope.yaml")


def test_round_trip_through_dump():
    cfg = load_config(PipelineConfig, None, ["--seed", "3"])
    assert PipelineConfig.model_validate(cfg.model_dump()) == cfg


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    """Ray workers run elsewhere: a relative --out from the command line must not reach them as is."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(PipelineConfig, None, ["--out", "out/demo", "--split", "splits/a"])
    assert cfg.out == tmp_path / "out" / "demo" and cfg.split == tmp_path / "splits" / "a"
    assert PipelineConfig.model_validate(cfg.model_dump()).out == cfg.out
