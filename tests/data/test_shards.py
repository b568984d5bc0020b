"""`--shard i/n`: encode (and compress, in tests/codec) a part of the patches by name hash, and
read the n LMDBs of `vqae encode --shard` as one dataset; hostile sets are refused by name."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from tests.data.encode_helpers import one_line_error
from tests.fakes import write_fake_tree
from vqae.cli import main
from vqae.config import DataConfig
from vqae.data.shards import ShardedStore, parse_shard, shard_of
from vqae.data.source import DataSource
from vqae.errors import DataError


def encode(*args) -> int:
    return main(["encode", "--workers", "1", "--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """12 fake patches encoded whole, and as shards 1/3, 2/3, 3/3 into one set folder."""
    tmp = tmp_path_factory.mktemp("shards")
    written = write_fake_tree(tmp / "tiffs", n=12, seed=5)
    assert encode("--bigearthnet-s2-root", tmp / "tiffs", tmp / "whole.lmdb") == 0
    for i in (1, 2, 3):
        assert encode("--bigearthnet-s2-root", tmp / "tiffs", "--shard", f"{i}/3",
                      tmp / "set" / f"part-{i}") == 0
    return tmp, written


def cli_error(capsys, *args) -> str:
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    return one_line_error(capsys.readouterr().err, str(args[0]))


def names_of(path) -> list[str]:
    with DataSource(DataConfig(path=str(path))) as source:
        return source.dataset("all").names


def test_parts_are_disjoint_and_together_are_the_whole(sharded):
    tmp, written = sharded
    parts = [names_of(tmp / "set" / f"part-{i}") for i in (1, 2, 3)]
    assert sorted(n for part in parts for n in part) == sorted(written) and all(parts)
    for i, part in enumerate(parts, 1):
        assert all(shard_of(n, 3) == i for n in part)
        manifest = json.loads((tmp / "set" / f"part-{i}" / "manifest.json").read_text())
        assert manifest["shard"] == [i, 3] and manifest["patches"] == len(part)


def test_the_set_folder_reads_as_one_dataset_equal_to_the_whole(sharded):
    tmp, written = sharded
    with DataSource(DataConfig(path=str(tmp / "set"))) as a, \
            DataSource(DataConfig(path=str(tmp / "whole.lmdb"))) as b:
        sa, sb = a.dataset("all"), b.dataset("all")
        assert sa.names == sb.names == sorted(written)
        for i in (0, 5, 11):
            assert np.array_equal(sa[i]["image"], sb[i]["image"])
        assert a.split_names("train") == b.split_names("train")  # same hash split


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "a/b", "1/2/3", "", "-1/2", "1/5000",
                                  "1", "1 /2x", "1/1_0", "\u0661/\u0662", " 1/2", "+1/+2"])
def test_bad_shard_options_are_refused(text, capsys):
    with pytest.raises(ValueError, match="i/n with 1 <= i <= n"):
        parse_shard(text)
    with pytest.raises(SystemExit) as exit_:
        encode("--bigearthnet-s2-root", ".", "--shard", text, "x")
    assert exit_.value.code == 2 and "--shard" in capsys.readouterr().err


def broken_set(sharded, tmp_path, how: str):
    tmp, _ = sharded
    folder = tmp_path / "set"
    shutil.copytree(tmp / "set", folder)
    manifest = folder / "part-2" / "manifest.json"
    fields = json.loads(manifest.read_text())
    if how == "missing":
        shutil.rmtree(folder / "part-3")
    elif how == "twice":
        shutil.copytree(folder / "part-2", folder / "part-2b")
    elif how == "mixed":
        manifest.write_text(json.dumps(fields | {"shard": [2, 4]}))
    elif how == "incomplete":
        manifest.write_text(json.dumps(fields | {"complete": False}))
    elif how == "no-shard":
        manifest.write_text(json.dumps({k: v for k, v in fields.items() if k != "shard"}))
    elif how == "hostile":
        manifest.write_text(json.dumps(fields | {"shard": ["__import__('os')", 3]}))
    elif how == "swapped":  # part 1's records labelled as part 2 and the other way round
        (folder / "part-1").rename(folder / "tmp")
        (folder / "part-2").rename(folder / "part-1")
        (folder / "tmp").rename(folder / "part-2")
        for i in (1, 2):
            m = folder / f"part-{i}" / "manifest.json"
            m.write_text(json.dumps(json.loads(m.read_text()) | {"shard": [i, 3]}))
    return folder


@pytest.mark.parametrize("how, words", [
    ("missing", "lacks shard(s) 3 of 3"), ("twice", "holds shard 2/3 twice"),
    ("mixed", "mixes shards"), ("incomplete", "is incomplete"),
    ("no-shard", "names no shard"), ("hostile", "names no shard"),
    ("swapped", "which belongs to shard")])
def test_a_broken_set_is_refused_naming_what_is_wrong(sharded, tmp_path, capsys, how, words):
    folder = broken_set(sharded, tmp_path, how)
    with pytest.raises(DataError, match=re.escape(words)):
        names_of(folder)
    err = cli_error(capsys, "stats", "--data", folder)
    assert words.split()[0] in err and str(folder) in err


def test_resume_continues_only_the_same_shard(sharded, tmp_path, capsys):
    tmp, _ = sharded
    out = tmp_path / "part"
    shutil.copytree(tmp / "set" / "part-1", out)
    err = cli_error(capsys, "encode", "--bigearthnet-s2-root", tmp / "tiffs", "--shard", "2/3",
                    "--resume", "--workers", "1", "--no-progress", out)
    assert "--shard 1/3" in err and "--shard 2/3" in err
    assert encode("--bigearthnet-s2-root", tmp / "tiffs", "--shard", "1/3", "--resume",
                  out) == 0
    assert names_of(out) == names_of(tmp / "set" / "part-1")


def test_a_sharded_store_pickles_for_loader_workers(sharded):
    import pickle

    tmp, _ = sharded
    with ShardedStore(tmp / "set") as store:
        copy = pickle.loads(pickle.dumps(store))
        key = names_of(tmp / "set")[3]
        assert copy.get(key) == store.get(key)
        copy.close()


def test_hidden_folders_and_a_killed_overwrite_leave_the_set_readable(sharded, tmp_path):
    tmp, written = sharded
    folder = tmp_path / "set"
    shutil.copytree(tmp / "set", folder)
    shutil.copytree(folder / "part-1", folder / ".part-1.abcd1234.tmp")  # --overwrite killed
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / "part-1.skipped.tsv").write_text("patch\treason\n")  # encode writes it beside
    assert names_of(folder) == sorted(written)


def test_parts_of_two_different_encodes_are_refused(sharded, tmp_path):
    tmp, _ = sharded
    folder = tmp_path / "set"
    shutil.copytree(tmp / "set", folder)
    write_fake_tree(tmp_path / "more", n=14, seed=5)  # 12 of the same names and 2 more
    shutil.rmtree(folder / "part-2")
    assert encode("--bigearthnet-s2-root", tmp_path / "more", "--shard", "2/3",
                  folder / "part-2") == 0
    with pytest.raises(DataError, match="parts of different encodes"):
        names_of(folder)


def test_the_sample_folder_is_not_taken_for_a_shard_set(tmp_path):
    """A folder holding a plain LMDB (the sample's layout) is no set: data paths keep their
    meaning."""
    from vqae.data.shards import is_shard_set

    (tmp_path / "x" / "db").mkdir(parents=True)
    (tmp_path / "x" / "db" / "data.mdb").write_bytes(b"")
    assert not is_shard_set(tmp_path / "x")


def test_verify_encoded_checks_one_part_against_the_whole_tree(sharded, capsys):
    tmp, _ = sharded
    assert main(["verify-encoded", str(tmp / "set" / "part-2"), "--against", str(tmp / "tiffs"),
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "part 2/3 of a sharded encode" in out and "OK: identical" in out


def test_a_set_of_many_parts_raises_the_open_file_limit(sharded, tmp_path):
    import resource

    tmp, written = sharded
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (now + 8, hard))  # 3 parts need 6 + 64 more
    try:
        assert names_of(tmp / "set") == sorted(written)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= now + 6 + 64
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
