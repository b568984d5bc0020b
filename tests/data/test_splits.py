import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fakes import patch_names, write_fake_tree
from vqae.config import DataConfig
from vqae.data.source import DataSource
from vqae.data.splits import SNOW_CLOUD_FILE, hash_split, read_split_table
from vqae.errors import ConfigError


def write_parquet(path, names, splits):
    pq.write_table(pa.table({"patch_id": names, "split": splits,
                             "s1_name": [n.replace("S2", "S1") for n in names]}), path)


def test_hash_split_is_stable_and_follows_ratios():
    names = [f"patch_{i}" for i in range(3000)]
    a = [hash_split(n, [0.8, 0.1, 0.1]) for n in names]
    assert a == [hash_split(n, [8, 1, 1]) for n in names]  # ratios are relative
    assert abs(a.count("train") / 3000 - 0.8) < 0.03
    # the same patch lands in the same split whatever else is in the dataset
    assert hash_split("patch_7", [0.8, 0.1, 0.1]) == a[7]
    with pytest.raises(ConfigError):
        hash_split("x", [1, 1])


# Pinned (name -> split): a change of hash function, byte order or Python's hash seed would move
# patches between splits of existing runs, and this test is what notices.
PINNED = {
    ("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_0_0", (0.8, 0.1, 0.1)): "train",
    ("patch_7", (0.8, 0.1, 0.1)): "validation",
    ("b", (0.8, 0.1, 0.1)): "test",
    ("patch_7", (1, 1, 1)): "test",
    ("a", (1, 1, 1)): "validation",
    ("d", (1, 1, 1)): "train",
}


@pytest.mark.parametrize("name, ratios", list(PINNED))
def test_hash_split_values_are_pinned(name, ratios):
    assert hash_split(name, list(ratios)) == PINNED[(name, ratios)]


def test_hash_split_is_the_same_in_another_process():
    import subprocess
    import sys

    code = ("from vqae.data.splits import hash_split; "
            "print(hash_split('patch_7', [1, 1, 1]), hash_split('a', [1, 1, 1]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert out.stdout.split() == ["test", "validation"]


def test_v2_parquet_with_and_without_snow_cloud(tmp_path):
    names = patch_names(6)
    write_parquet(tmp_path / "metadata.parquet", names[:4], ["train", "train", "validation", "test"])
    write_parquet(tmp_path / SNOW_CLOUD_FILE, names[4:], ["train", "test"])
    table = read_split_table(str(tmp_path / "metadata.parquet"))
    assert table.split[names[4]] == "train" and len(table.split) == 6
    assert table.s1_name[names[0]] == names[0].replace("S2", "S1")
    excluded = read_split_table(str(tmp_path), exclude_snow_cloud=True)
    assert set(excluded.split) == set(names[:4])


def test_dataset_split_from_parquet(tmp_path):
    write_fake_tree(tmp_path / "t", n=5)
    names = patch_names(5)
    write_parquet(tmp_path / "metadata.parquet", names[:4], ["train", "train", "validation", "test"])
    cfg = DataConfig(path=str(tmp_path / "t"), splits=str(tmp_path / "metadata.parquet"))
    assert DataSource(cfg).dataset("train").names == names[:2]
    assert DataSource(cfg).dataset("val").names == [names[2]]
    assert len(DataSource(cfg).dataset()) == 4  # patches absent from the metadata are left out


def test_v1_csv_splits(tmp_path):
    write_fake_tree(tmp_path / "t", n=4)
    names = patch_names(4)
    (tmp_path / "train.csv").write_text("\n".join(names[:2]) + "\n")
    (tmp_path / "val.csv").write_text(names[2] + "\n")
    (tmp_path / "test.csv").write_text(names[3] + "\n")
    cfg = DataConfig(path=str(tmp_path / "t"), splits=str(tmp_path))
    assert DataSource(cfg).dataset("test").names == [names[3]]


def test_real_sample_splits(sample_dir):
    sizes = {s: len(DataSource(DataConfig()).dataset(s)) for s in ("train", "validation", "test")}
    assert sum(sizes.values()) == 24 and min(sizes.values()) > 0
    no_snow = DataSource(DataConfig(exclude_snow_cloud=True)).dataset()
    assert len(no_snow) == 18


def write_bomb(path, rows, value="S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88"):
    """A small dictionary-encoded parquet of `rows` copies of one patch_id/split row."""
    import numpy as np

    def repeated(text):
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int8)), pa.array([text]))

    pq.write_table(pa.table({"patch_id": repeated(value), "split": repeated("train")}), path)


def test_parquet_bomb_is_refused_from_its_footer(tmp_path):
    from vqae.data import splits
    from vqae.errors import DataError

    bomb = tmp_path / "bomb.parquet"
    write_bomb(bomb, splits.PARQUET_MAX_ROWS + 1)  # ~100 KB; GBs once decoded
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(DataError, match="rows") as err:
        DataSource(DataConfig(path=str(tmp_path), splits=str(bomb)))
    assert str(bomb) in str(err.value) and "\n" not in str(err.value)


def test_parquet_columns_too_large_uncompressed_are_refused(tmp_path, monkeypatch):
    from vqae.data import splits
    from vqae.errors import DataError

    write_bomb(tmp_path / "metadata.parquet", 1000, value="S2" + "x" * 5000)
    monkeypatch.setattr(splits, "PARQUET_MAX_BYTES", 4000)
    with pytest.raises(DataError, match="uncompressed bytes") as err:
        read_split_table(str(tmp_path))
    assert str(tmp_path / "metadata.parquet") in str(err.value)


def test_repeated_long_values_are_shared_not_copied(tmp_path):
    write_bomb(tmp_path / "metadata.parquet", 200_000, value="S2" + "x" * 10_000)  # 2 GB decoded
    table = read_split_table(str(tmp_path / "metadata.parquet"))
    assert list(table.split.values()) == ["train"] and len(next(iter(table.split))) == 10_002


@pytest.mark.parametrize("exclude", [False, True])
def test_split_parquets_must_be_regular_parquet_files(tmp_path, exclude):
    import os

    from vqae.errors import DataError

    names = patch_names(2)
    write_parquet(tmp_path / "metadata.parquet", names, ["train", "test"])
    os.mkfifo(tmp_path / SNOW_CLOUD_FILE)  # was silently skipped: snow/cloud patches kept
    with pytest.raises(DataError, match="FIFO"):
        read_split_table(str(tmp_path), exclude_snow_cloud=exclude)
    (tmp_path / SNOW_CLOUD_FILE).unlink()
    write_bomb(tmp_path / SNOW_CLOUD_FILE, 10_000_001)
    with pytest.raises(DataError, match=SNOW_CLOUD_FILE):
        read_split_table(str(tmp_path), exclude_snow_cloud=exclude)
    (tmp_path / "text.parquet").write_text("patch_id,split\n")
    with pytest.raises(DataError, match="PAR1"):
        read_split_table(str(tmp_path / "text.parquet"))


def test_unknown_split_value_names_the_file_and_row(tmp_path):
    from vqae.errors import DataError

    write_parquet(tmp_path / "metadata.parquet", patch_names(2), ["train", "x" * 10_000])
    with pytest.raises(DataError, match="row 1") as err:
        read_split_table(str(tmp_path / "metadata.parquet"))
    assert str(tmp_path / "metadata.parquet") in str(err.value) and len(str(err.value)) < 400
