import pytest
import yaml

from vqae.config import Config, dump_yaml, from_dict, load_config, to_dict
from vqae.errors import ConfigError


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = load_config(overrides=["model.widths=[32, 64]", "optim.lr=1e-3", "run.dir=out"])
    path = tmp_path / "resolved.yaml"
    dump_yaml(cfg, path)
    assert from_dict(yaml.safe_load(path.read_text())) == cfg
    assert load_config([str(path)]) == cfg


def test_yaml_layers_then_overrides(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("quantizer:\n  codebook_size: 256\n  levels: 4\n")
    b.write_text("quantizer:\n  levels: 2\n")
    cfg = load_config([str(a), str(b)], ["quantizer.codebook_size=512"])
    assert (cfg.quantizer.codebook_size, cfg.quantizer.levels) == (512, 2)
    assert cfg.model == Config().model  # untouched sections keep defaults


def test_int_is_accepted_for_float_but_not_bool():
    assert load_config(overrides=["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(overrides=["optim.lr=true"])


@pytest.mark.parametrize("override, fragment", [
    ("model.bogus=1", "valid keys here: in_bands, "),
    ("nosection.x=1", "valid keys here: data, model"),
    ("model.widths=3", "expected a list"),
    ("model.widths=[1, a]", "model.widths[1]"),
    ("quantizer.codebook_size=big", "expected int"),
    ("data=3", "expected a mapping"),
])
def test_bad_keys_and_types_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_config(overrides=[override])


def test_bad_yaml_file_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model:\n  nope: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key 'model.nope'"):
        load_config([str(f)])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([str(tmp_path / "missing.yaml")])


def test_to_dict_is_plain():
    d = to_dict(Config())
    assert d["data"]["bands"][0] == "B01" and isinstance(d["quantizer"], dict)
