"""Every bad input of the foundation issue: a clear message, a non-zero exit, no traceback."""

import io
import tarfile

import numpy as np
import pytest

from tests.fakes import write_fake_tree, write_tiff
from tests.lmdb_util import write_lmdb
from vqae.cli import main
from vqae.config import DataConfig
from vqae.data.readers import LmdbDataset
from vqae.data.source import DataSource
from vqae.errors import DataError


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


KINDS = ("a GeoTIFF folder, a .tar/.tar.gz archive, an LMDB or a folder of `vqae encode "
         "--shard` LMDBs")


@pytest.mark.parametrize("command", ["stats", "preview", "train"])
def test_missing_data_path_names_data(capsys, tmp_path, command):
    """Commands whose data comes from --data (or the sample when none) say so."""
    missing = tmp_path / "nope"
    code, err = run_cli(capsys, command, "--data", str(missing), f"--run.dir={tmp_path / 'run'}"
                        ) if command == "train" else run_cli(capsys, command, "--data", str(missing))
    assert code == 2 and err == (f"vqae {command}: error: data path {missing} does not exist; pass "
                                 f"--data with {KINDS} (or nothing, for the sample)\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--bigearthnet-s2-root", "--bigearthnet-s1-root", "--hyspecnet"])
def test_encode_names_the_root_argument_that_is_missing(capsys, tmp_path, flag):
    missing, out = tmp_path / "nope", tmp_path / "out"
    code, err = run_cli(capsys, "encode", flag, str(missing), str(out), "--no-progress")
    assert code == 2 and err == (f"vqae encode: error: {flag} {missing} does not exist; pass the "
                                 "folder holding that dataset's patches\n")
    assert not out.exists()  # nothing half-written


def test_verify_encoded_names_against(capsys, tmp_path):
    missing = tmp_path / "nope"
    code, err = run_cli(capsys, "verify-encoded", str(tmp_path), "--against", str(missing))
    assert code == 2 and err == (f"vqae verify-encoded: error: --against {missing} does not "
                                 "exist; pass a root given to `vqae encode` (a BigEarthNet S2 or "
                                 "S1 tree, or a HySpecNet-11k folder)\n")


@pytest.mark.parametrize("split", ["tset", "Test"])
def test_an_unknown_split_lists_all_too(capsys, tmp_path, split):
    write_fake_tree(tmp_path / "data", n=2)
    code, err = run_cli(capsys, "stats", "--data", str(tmp_path / "data"), "--split", split)
    assert code == 2 and err == (f"vqae stats: error: unknown split {split!r}; choose one of "
                                 "train, validation (val), test, or all (every patch)\n")


def test_folder_without_patches(capsys, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, err = run_cli(capsys, "stats", "--data", str(tmp_path / "empty"))
    assert code == 2 and "no patches" in err


def test_missing_band_names_patch_band_and_path(tmp_path):
    written = write_fake_tree(tmp_path, n=1)
    name = next(iter(written))
    (tmp_path / name / f"{name}_B8A.tif").unlink()
    with pytest.raises(DataError) as exc:
        DataSource(DataConfig(path=str(tmp_path))).dataset().read_dn(0)
    msg = str(exc.value)
    assert name in msg and "B8A" in msg and f"{name}/{name}_B8A.tif" in msg


def test_truncated_tiff_names_the_file(capsys, tmp_path):
    written = write_fake_tree(tmp_path, n=1)
    name = next(iter(written))
    f = tmp_path / name / f"{name}_B04.tif"
    f.write_bytes(f.read_bytes()[:300])
    code, err = run_cli(capsys, "stats", "--data", str(tmp_path))
    assert code == 2 and f"{name}_B04.tif" in err


def test_band_of_unexpected_shape(tmp_path):
    written = write_fake_tree(tmp_path, n=1)
    name = next(iter(written))
    write_tiff(tmp_path / name / f"{name}_B05.tif", np.zeros((50, 50), np.uint16))
    with pytest.raises(DataError, match=r"band B05 has shape \(50, 50\).*expected \(60, 60\)"):
        DataSource(DataConfig(path=str(tmp_path))).dataset().read_dn(0)


def test_path_that_is_not_an_lmdb(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="is not an LMDB"):
        LmdbDataset(tmp_path / "x", bands=["B02"])
    with pytest.raises(DataError, match="is not an LMDB"):
        DataSource(DataConfig(path=str(tmp_path / "x"), format="lmdb")).dataset()


def test_missing_lmdb_key(tmp_path):
    written = write_fake_tree(tmp_path / "t", n=1)
    db = write_lmdb(tmp_path / "db", written)
    ds = LmdbDataset(db, names=["S2_not_there"], bands=["B02"])
    with pytest.raises(DataError, match="has no key 'S2_not_there'"):
        ds.read_dn(0)


def test_lmdb_value_missing_a_band(tmp_path):
    written = write_fake_tree(tmp_path / "t", n=1)
    name = next(iter(written))
    del written[name]["B09"]
    db = write_lmdb(tmp_path / "db", written)
    with pytest.raises(DataError, match=f"key '{name}' has no band B09"):
        LmdbDataset(db, bands=["B02", "B09"]).read_dn(0)


@pytest.mark.parametrize("member", ["../escape.tif", "/abs/escape.tif"])
def test_archive_with_unsafe_member(capsys, tmp_path, member):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    code, err = run_cli(capsys, "stage", str(archive), str(tmp_path / "dest"))
    assert code == 2 and "unsafe member" in err
    assert not (tmp_path / "dest").exists() and not (tmp_path / "escape.tif").exists()


@pytest.mark.parametrize("how", ["start", "middle", "key", "value"])
def test_damaged_lmdb_is_one_line_for_the_readers(capsys, tmp_path, how):
    from tests.data.encode_helpers import damage_lmdb

    written = write_fake_tree(tmp_path / "t", n=3)
    db = write_lmdb(tmp_path / "db", written)
    damage_lmdb(db, how, next(iter(written)))
    code, err = run_cli(capsys, "stats", "--data", str(db))
    assert code == 2 and str(db) in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1, err
