import json

import numpy as np
import pytest
import torch

from vqae.cli import main
from vqae.config import Config, DataConfig
from vqae.data.source import DataSource
from vqae.data.stats import compute_stats, load_stats
from vqae.models import build_model


def test_streaming_stats_match_numpy(fake_tree):
    root, _ = fake_tree
    ds = DataSource(DataConfig(path=str(root))).dataset()
    stats = compute_stats(ds, progress=False)
    stack = np.stack([ds.read_dn(i) for i in range(len(ds))])  # (N, C, H, W)
    for c, band in enumerate(ds.bands):
        s = stats["bands"][band]
        values = stack[:, c].ravel()
        assert np.isclose(s["mean"], values.mean(), rtol=1e-6)
        assert np.isclose(s["std"], values.std(), rtol=1e-4)
        assert s["p50"] == np.percentile(values, 50, method="inverted_cdf")
        assert s["min"] == values.min() and s["max"] == values.max()


def test_stats_command_writes_json_usable_for_normalization(fake_tree, tmp_path, capsys):
    root, _ = fake_tree
    out = tmp_path / "stats.json"
    assert main(["stats", "--data", str(root), "--out", str(out)]) == 0
    stats = json.loads(out.read_text())
    assert stats["patches"] == 4 and set(stats["bands"]) >= {"B01", "B12"}
    cfg = Config()
    cfg.data = DataConfig(path=str(root), stats=str(out))
    source = DataSource(cfg.data)
    model = build_model(cfg, *load_stats(cfg.data.stats, source.all_bands))
    x = torch.stack([source.dataset()[i]["image"] for i in range(4)])
    target = model(x).target  # normalized with the data's own stats
    assert abs(float(target.mean())) < 0.05 and abs(float(target.std()) - 1) < 0.05


def test_stats_of_offset_data_describe_the_model_input(fake_tree):
    root, _ = fake_tree
    ds = DataSource(DataConfig(path=str(root))).dataset()
    plain = compute_stats(ds, progress=False)["bands"]["B02"]["mean"]
    shifted = compute_stats(ds, [1000.0] * 12, progress=False)["bands"]["B02"]["mean"]
    assert shifted == pytest.approx(plain - 1000)
