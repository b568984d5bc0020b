"""`vqae encode --shard $SLURM_ARRAY_TASK_ID/2` as a 2-task job array on the real test cluster:
each task writes its LMDB, and the folder of both reads as the whole dataset (docs/scale.md)."""

import sys

import pytest

from tests.fakes import write_fake_tree
from tests.launchers.conftest import SMALL_JOB
from vqae.config import DataConfig
from vqae.data.source import DataSource

SCRIPT = """#!/bin/bash
set -euo pipefail
exec {python} -m vqae encode --bigearthnet-s2-root {root} --shard "$SLURM_ARRAY_TASK_ID/2" \\
    --workers 1 --no-progress {out}/part-"$SLURM_ARRAY_TASK_ID"
"""


@pytest.mark.slow
def test_a_two_task_array_encodes_two_shards_read_as_one(cluster, tmp_path):
    written = write_fake_tree(tmp_path / "tiffs", n=10, seed=9)
    script = tmp_path / "encode-shard.sh"
    script.write_text(SCRIPT.format(python=sys.executable, root=tmp_path / "tiffs",
                                    out=tmp_path / "set"))
    array = cluster.submit(tmp_path, ["--array=1-2", *SMALL_JOB,
                                      f"--output={tmp_path}/task-%a.log"], script=script)
    for task in (1, 2):
        info = cluster.wait_state(f"{array}_{task}", "COMPLETED", timeout=180)
        assert info.get("ArrayJobId") == array
    parts = []
    for task in (1, 2):
        with DataSource(DataConfig(path=str(tmp_path / "set" / f"part-{task}"))) as source:
            parts.append(source.dataset("all").names)
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    with DataSource(DataConfig(path=str(tmp_path / "set"))) as whole:
        ds = whole.dataset("all")
        assert ds.names == sorted(written)
        assert ds[len(ds) - 1]["image"].shape == (12, 120, 120)
