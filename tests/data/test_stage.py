import multiprocessing as mp
import tarfile

import pytest

from tests.fakes import write_fake_tree
from vqae.config import DataConfig
from vqae.data.source import open_dataset
from vqae.data.stage import MARKER, stage_archive


def make_archive(tmp_path, n=3):
    src = tmp_path / "src"
    written = write_fake_tree(src / "source_a", n=n)
    archive = tmp_path / "patches.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "source_a", arcname="source_a")
    return archive, written


def _stage(args):
    archive, dest = args
    import vqae.data.stage as stage

    calls = []
    real = stage._extract
    stage._extract = lambda a, d: (calls.append(1), real(a, d))
    stage_archive(archive, dest)
    return len(calls)


def test_stage_extracts_once_with_marker(tmp_path):
    archive, written = make_archive(tmp_path)
    dest = tmp_path / "scratch" / "patches"
    assert stage_archive(archive, dest) == dest
    assert (dest / MARKER).is_file()
    assert len(list(dest.glob("source_a/*/*.tif"))) == 12 * len(written)


def test_concurrent_stagers_extract_exactly_once(tmp_path):
    archive, _ = make_archive(tmp_path, n=6)
    dest = tmp_path / "scratch" / "patches"
    with mp.get_context("fork").Pool(4) as pool:
        extractions = pool.map(_stage, [(archive, dest)] * 4)
    assert sum(extractions) == 1
    assert (dest / MARKER).is_file()


def test_archive_data_path_is_staged_automatically(tmp_path):
    archive, written = make_archive(tmp_path)
    cfg = DataConfig(path=str(archive), scratch=str(tmp_path / "scratch"))
    ds = open_dataset(cfg)
    assert sorted(ds.names) == sorted(written)
    assert (tmp_path / "scratch" / "vqae-staged" / "patches" / MARKER).is_file()


def test_incomplete_staging_is_redone(tmp_path):
    archive, written = make_archive(tmp_path)
    dest = tmp_path / "d"
    (dest / "junk").mkdir(parents=True)  # a killed earlier run: no marker
    stage_archive(archive, dest)
    assert not (dest / "junk").exists() and (dest / MARKER).is_file()


def test_missing_and_corrupt_archive(tmp_path):
    from vqae.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        stage_archive(tmp_path / "none.tar.gz", tmp_path / "d")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match="cannot extract"):
        stage_archive(bad, tmp_path / "d")
    assert not (tmp_path / "d").exists()
