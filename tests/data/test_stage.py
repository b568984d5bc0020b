import multiprocessing as mp
import tarfile

import pytest

from tests.fakes import write_fake_tree
from vqae.cli import main
from vqae.config import DataConfig
from vqae.data import stage
from vqae.data.source import DataSource
from vqae.data.stage import MARKER, stage_archive
from vqae.errors import DataError


def make_archive(tmp_path, n=3):
    src = tmp_path / "src"
    written = write_fake_tree(src / "source_a", n=n)
    archive = tmp_path / "patches.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "source_a", arcname="source_a")
    return archive, written


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _stage(args):
    archive, dest = args
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
    with mp.get_context("spawn").Pool(4) as pool:  # no fork of a threaded pytest process
        extractions = pool.map(_stage, [(archive, dest)] * 4)
    assert sum(extractions) == 1
    assert (dest / MARKER).is_file()


def test_archive_data_path_is_staged_automatically(tmp_path):
    archive, written = make_archive(tmp_path)
    cfg = DataConfig(path=str(archive), scratch=str(tmp_path / "scratch"))
    ds = DataSource(cfg).dataset()
    assert sorted(ds.names) == sorted(written)
    assert (tmp_path / "scratch" / "vqae-staged" / "patches" / MARKER).is_file()


def test_interrupted_staging_is_redone_but_user_files_are_refused(tmp_path):
    archive, _ = make_archive(tmp_path)
    dest = tmp_path / "d"
    dest.mkdir()  # empty: a killed run leaves only its own hidden temporary folder beside it
    (tmp_path / ".d.k1lled42.partial" / "source_a").mkdir(parents=True)
    (tmp_path / "d.partial" / "notes").mkdir(parents=True)  # the user's: never touched
    stage_archive(archive, dest)
    assert (dest / MARKER).is_file() and not (tmp_path / ".d.k1lled42.partial").exists()
    assert (tmp_path / "d.partial" / "notes").is_dir()

    mine = tmp_path / "mine"
    (mine / "junk").mkdir(parents=True)
    with pytest.raises(DataError, match="not empty"):
        stage_archive(archive, mine)
    assert (mine / "junk").is_dir() and not (mine / MARKER).exists()


def test_cli_refuses_folder_holding_a_file(capsys, tmp_path):
    archive, _ = make_archive(tmp_path)
    dest = tmp_path / "results"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    code, err = run_cli(capsys, "stage", archive, dest)
    assert code == 2 and str(dest) in err and "choose another DEST" in err
    assert (dest / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("dest", [".", ".."])
def test_cli_refuses_current_and_parent_folder(capsys, tmp_path, monkeypatch, dest):
    archive, _ = make_archive(tmp_path)
    cwd = tmp_path / "work" / "here"
    cwd.mkdir(parents=True)
    (cwd / "sentinel.txt").write_text("here")
    (cwd.parent / "sentinel.txt").write_text("parent")
    monkeypatch.chdir(cwd)
    code, err = run_cli(capsys, "stage", archive, dest)
    assert code == 2 and "current folder" in err
    assert (cwd / "sentinel.txt").read_text() == "here"
    assert (cwd.parent / "sentinel.txt").read_text() == "parent"


def test_refuses_ancestor_of_cwd(tmp_path, monkeypatch):
    archive, _ = make_archive(tmp_path)
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    with pytest.raises(DataError, match="current folder or one of its parents"):
        stage_archive(archive, tmp_path / "a")
    assert cwd.is_dir() and not (tmp_path / "a" / MARKER).exists()


def test_staging_of_another_archive_is_refused_same_one_reused(tmp_path, monkeypatch):
    archive, _ = make_archive(tmp_path)
    other = tmp_path / "other" / archive.name
    other.parent.mkdir()
    other.write_bytes(archive.read_bytes())
    dest = tmp_path / "d"
    stage_archive(archive, dest)
    with pytest.raises(DataError, match="another archive") as exc:
        stage_archive(other, dest)
    assert str(dest) in str(exc.value) and str(archive.resolve()) in str(exc.value)

    def no_extract(a, d):
        raise AssertionError("re-extracted a finished staging")

    monkeypatch.setattr(stage, "_extract", no_extract)
    assert stage_archive(archive, dest) == dest


def test_dest_that_is_a_file_is_refused(tmp_path):
    archive, _ = make_archive(tmp_path)
    dest = tmp_path / "d"
    dest.write_text("a file")
    with pytest.raises(DataError, match="is a file"):
        stage_archive(archive, dest)
    assert dest.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir() if ".partial" in p.name) == []


def test_existing_lock_file_is_not_truncated(tmp_path):
    archive, _ = make_archive(tmp_path)
    (tmp_path / "d.lock").write_text("someone's")
    stage_archive(archive, tmp_path / "d")
    assert (tmp_path / "d.lock").read_text() == "someone's"


def test_missing_and_corrupt_archive(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        stage_archive(tmp_path / "none.tar.gz", tmp_path / "d")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match="cannot extract"):
        stage_archive(bad, tmp_path / "d")
    assert not (tmp_path / "d").exists()
