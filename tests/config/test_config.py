import pytest
import yaml

from vqae.config import Config, absolute_paths, dump_yaml, from_dict, load_config, to_dict
from vqae.errors import ConfigError


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = load_config(overrides=["model.widths=[32, 64]", "optim.lr=1e-3", "run.dir=out"])
    path = tmp_path / "resolved.yaml"
    dump_yaml(cfg, path)
    assert from_dict(yaml.safe_load(path.read_text())) == cfg
    assert load_config([str(path)]) == cfg


def test_yaml_layers_then_overrides(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("quantizer:\n  name: rvq\n  codebook_size: 256\n  depth: 4\n")
    b.write_text("quantizer:\n  depth: 2\n")
    cfg = load_config([str(a), str(b)], ["quantizer.codebook_size=512"])
    assert (cfg.quantizer.codebook_size, cfg.quantizer.depth) == (512, 2)
    assert cfg.model == Config().model  # untouched sections keep defaults


def test_int_is_accepted_for_float_but_not_bool():
    assert load_config(overrides=["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(overrides=["optim.lr=true"])


@pytest.mark.parametrize("override, fragment", [
    ("model.bogus=1", "valid keys here: image_size, "),
    ("model.in_bands=5", "unknown key 'model.in_bands'"),  # derived from data.bands
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


@pytest.mark.parametrize("override, fragment", [
    ("train.log_every=0", "train.log_every=0 is out of range: it must be >= 1"),
    ("train.eval_every=0", "must be >= 1"),
    ("train.checkpoint_every=0", "must be >= 1"),
    ("train.keep_last=0", "train.keep_last=0 is out of range"),
    ("train.steps=-5", "train.steps=-5 is out of range: it must be >= 1"),
    ("data.batch_size=0", "data.batch_size=0 is out of range"),
    ("data.num_workers=-1", "it must be >= 0"),
    ("optim.lr=-1", "optim.lr=-1.0 is out of range: it must be > 0"),
    ("optim.lr=.nan", "optim.lr=nan is out of range"),
    ("optim.betas=[0.9, 1.0]", "each value must be >= 0 and < 1"),
    ("quantizer.codebook_size=0", "must be >= 2"),
    ("quantizer.decay=1", "must be > 0 and < 1"),
    ("quantizer.levels=[1,2]", "quantizer.levels=[1, 2] is out of range: each value must be >= 2"),
    ("quantizer.levels=[]", "quantizer.levels is empty"),
    ("quantizer.depth=0", "quantizer.depth=0 is out of range"),
    ("quantizer.depth=3", "need quantizer.name=rvq"),
    ("quantizer.name=lfq", "choose one of: vq, rvq, fsq"),
    ("quantizer.rate_weight=-1", "quantizer.rate_weight=-1.0 is out of range"),
    ("model.downsample=3", "choose one of: 2, 4, 8, 16"),
    ("model.activation=tanh", "choose one of: silu, gelu, relu"),
    ("train.amp=fp8", "choose one of: auto, bf16, fp16, none"),
    ("data.split_ratios=[1,1]", "give three non-negative"),
    ("data.bands=[B10]", "unknown S2 band"),
    ("train.mse_weight=0", "give at least one a positive weight"),
])
def test_values_out_of_range_are_one_line_config_errors(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_rate_weight_needs_an_l2_codebook():
    with pytest.raises(ConfigError, match="rate_weight=0.01 needs name=vq or rvq"):
        load_config(overrides=["quantizer.rate_weight=0.01", "quantizer.distance=cosine"])
    with pytest.raises(ConfigError, match="got fsq, l2"):
        load_config(overrides=["quantizer.rate_weight=0.01", "quantizer.name=fsq"])


def test_patch_means_refuses_s1_bands():
    with pytest.raises(ConfigError, match="model.patch_means"):
        load_config(None, ["model.patch_means=true", "data.s1=true"])
    assert load_config(None, ["model.patch_means=true"]).model.patch_means


def test_rvq_rules_span_fields():
    cfg = load_config(overrides=["quantizer.name=rvq", "quantizer.depth=4",
                                 "train.eval_depths=[1,2]"])
    assert cfg.quantizer.depth == 4
    with pytest.raises(ConfigError, match=r"train.eval_depths entry 5 is outside 1..4"):
        load_config(overrides=["quantizer.name=rvq", "quantizer.depth=4",
                               "train.eval_depths=[5]"])


@pytest.mark.parametrize("raw", ["010", "a #b", "2024-05-01", "true", "[x]", "1e3", ""])
def test_string_fields_keep_the_text_as_given(raw):
    cfg = load_config(overrides=[f"data.path={raw}", f"run.dir={raw or 'runs/x'}"])
    assert cfg.data.path == raw and cfg.run.dir == (raw or "runs/x")


def test_non_string_fields_still_parse_yaml():
    cfg = load_config(overrides=["optim.lr=1e-3", "train.augment=false", "model.widths=[8, 16]"])
    assert (cfg.optim.lr, cfg.train.augment, cfg.model.widths) == (1e-3, False, [8, 16])


def test_data_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = absolute_paths(load_config(overrides=["data.path=data/lmdb", "data.stats=s.json"]))
    assert cfg.data.path == str(tmp_path / "data" / "lmdb")
    assert cfg.data.stats == str(tmp_path / "s.json") and cfg.data.splits == ""


@pytest.mark.parametrize("override, fragment", [
    ("run.seed=99999999999999999999999", "it must be >= 0 and <= 2147483647 (numpy takes 32-bit"),
    ("quantizer.codebook_size=1099511627776", "must be >= 2 and <= 65536 (the .vqz coder"),
    ("quantizer.depth=256", "<= 255 (a .vqz header stores the stages in one byte)"),
    ("model.image_size=128", "model.image_size=128 is not valid; choose one of: 120 (every"),
    ("model.image_size=64", "choose one of: 120"),
    ("data.num_workers=100000", "data.num_workers=100000 is out of range: it must be >= 0"),
    ("data.batch_size=10000000", "<= 65536"),
    ("model.widths=[64, 1000000]", "each value must be >= 1 and <= 4096"),
    ("train.steps=99999999999", "it must be >= 1 and <= 2147483647"),
    ("optim.warmup_steps=99999999999", "optim.warmup_steps=99999999999 is out of range"),
])
def test_integers_are_bounded_by_what_they_reach(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_integer_bounds_are_inclusive():
    cfg = load_config(overrides=["run.seed=2147483647", "quantizer.codebook_size=65536",
                                 "quantizer.name=rvq", "quantizer.depth=255"])
    assert (cfg.run.seed, cfg.quantizer.codebook_size, cfg.quantizer.depth) == (2**31 - 1,
                                                                                2**16, 255)


def test_fsq_levels_product_is_a_codebook_size():
    assert load_config(overrides=["quantizer.name=fsq", "quantizer.levels=[8,8,8,5,5,5]"])
    with pytest.raises(ConfigError, match="make 1,048,576 FSQ codes, more than 65536"):
        load_config(overrides=["quantizer.name=fsq", "quantizer.levels=[16,16,16,16,16]"])
