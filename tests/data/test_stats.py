import json

import numpy as np

from vqae.cli import main
from vqae.config import DataConfig
from vqae.data.source import open_dataset
from vqae.data.stats import compute_stats


def test_streaming_stats_match_numpy(fake_tree):
    root, _ = fake_tree
    ds = open_dataset(DataConfig(path=str(root)), normalize=False)
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
    x = open_dataset(DataConfig(path=str(root), stats=str(out)))[0]["image"]
    assert abs(float(x.mean())) < 1.0  # normalized with the data's own stats
