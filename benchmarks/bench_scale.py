"""How time, memory and disk grow with the number of patches (issue 19), side by side.

For each N it runs every command on a scale corpus (benchmarks/make_scale_corpus.py: the 480
real patches under N new names, each a dihedral map plus a grid-aligned shift; real pixels,
synthetic in their number) and records wall seconds per patch, the peak anonymous memory of
the process tree (RssAnon summed over the process and its children from /proc, sampled every
20 ms: an LMDB reader's mapped pages are page cache, not the process's memory) and the bytes
written. Rows:

    encode, verify-encoded   GeoTIFF tree -> LMDB with 2 workers, and the check (N <= 10k)
    stats                    streaming band statistics of the LMDB
    splits                   open the data source, build train/validation/test by name hash
    train start-up           `vqae train` objects built and the first step taken (debug model)
    train loading            patches/s the loader feeds over --steps batches after the first step
    evaluate                 `vqae evaluate --split all` of a small checkpoint
    compress, decompress     `vqae compress --lmdb` of every patch, and back into an LMDB
    rd                       `vqae rd --max-patches 1000` (the model, JPEG 2000 at 4 qualities)
    spawner status, dry-run  a sweep of N/100... jobs: --status and --dry-run expansion

    python benchmarks/bench_scale.py --work /tmp/scale --sizes 1000 10000 100000

Corpora are made in --work when missing (GeoTIFF trees only up to --geotiff-max) and removed
at the end unless --keep. Results: a table on stdout and --csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tabulate import tabulate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
POLL = 0.02
MAX_SWEEP = 10_000  # vqae.sweeps.jobs_file.MAX_JOBS
# The codec rows' model: the smallest of the debug family, so that the rows time the pipeline
# (reading, metrics, entropy coding, writing) more than convolutions on 2 CPU cores.
TINY = ["--model.widths=[8,16]", "--model.latent_dim=8", "--model.groups=4",
        "--quantizer.codebook_size=32"]
RD_QUALITIES = ["40", "50", "60", "70"]  # JPEG 2000 points of the rd row (default: 12)


@dataclass
class Row:
    command: str
    n: int  # patches (jobs for the spawner rows)
    seconds: float
    per_patch_ms: float
    peak_anon_mb: float  # RssAnon summed over the tree
    out_bytes: int
    peak_pss_anon_mb: float = 0.0  # Pss_Anon summed: shared pages counted once


def tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def anon_kb(pid: int) -> tuple[int, int]:
    """(RssAnon, Pss_Anon) of a process in KB. Forked workers share the parent's pages
    copy-on-write: RssAnon counts them in each process, Pss_Anon divides them among the
    sharers, so the tree's Pss_Anon sum is the memory it really holds."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(x.split()[1]) for x in f if x.startswith("RssAnon:")), 0)
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next((int(x.split()[1]) for x in f if x.startswith("Pss_Anon:")), 0)
    except OSError:
        pass
    return rss, pss


def measure(cmd: list[str], log: Path, env: dict | None = None) -> tuple[float, float, float]:
    """(seconds, peak RssAnon MB, peak Pss_Anon MB of the process tree) of `cmd`; a failure
    stops the bench."""
    start = time.perf_counter()
    with open(log, "ab") as out:
        out.write(("\n$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        peak = peak_pss = 0
        while proc.poll() is None:
            sizes = [anon_kb(p) for p in tree(proc.pid)]
            peak = max(peak, sum(r for r, _ in sizes))
            peak_pss = max(peak_pss, sum(p for _, p in sizes))
            time.sleep(POLL)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return seconds, peak / 1024, peak_pss / 1024


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def vqae(*args: str) -> list[str]:
    return [sys.executable, "-m", "vqae", *args]


def probe(*args: str) -> list[str]:
    return [sys.executable, str(HERE / "bench_scale.py"), "--probe", *args]


# ---- probes: run in a child process of their own, so their memory is measured alone -------
def probe_splits(lmdb: str) -> None:
    from vqae.config import DataConfig
    from vqae.data.source import DataSource

    with DataSource(DataConfig(path=lmdb)) as source:
        sizes = [len(source.dataset(s)) for s in ("train", "validation", "test")]
    print("splits", sizes)


def probe_train(lmdb: str, run_dir: str, steps: str, result: str) -> None:
    """Trainer built and one step taken (start-up), then `steps` more batches drawn from the
    loader without training on them: the rate it can feed (the CPU model's step is far slower
    than any loader, so timing steps would time the model)."""
    from vqae.config import load_config
    from vqae.io.stops import StopFlag
    from vqae.training.trainer import Trainer

    start = time.perf_counter()
    cfg = load_config([str(REPO / "configs/debug.yaml")],
                      [f"data.path={lmdb}", f"run.dir={run_dir}", "run.tracker=none",
                       "data.num_workers=2", "data.batch_size=16"])
    trainer = Trainer(cfg)
    with StopFlag("stopping") as stop:
        trainer.stop = stop
        batches = trainer.batches()
        trainer.train_step(next(batches), False)
        first = time.perf_counter()
        for _ in range(int(steps)):
            next(batches)
    end = time.perf_counter()
    trainer.close()
    rate = int(steps) * cfg.data.batch_size / (end - first)
    Path(result).write_text(json.dumps({"startup": first - start, "rate": rate}))


def probe_statuses(spec: str) -> None:
    """A finished job's status.json in every run folder of the sweep."""
    from vqae.sweeps.job_status import write_status
    from vqae.sweeps.spec import expand, load_sweep

    for job in expand(load_sweep(spec)):
        write_status(job.run_dir, "running", job=job.name)
        write_status(job.run_dir, "done", exit_code=0)


PROBES = {"splits": probe_splits, "train": probe_train, "statuses": probe_statuses}



# ---- the rows ------------------------------------------------------------------------------
class Bench:
    def __init__(self, work: Path, log: Path, steps: int):
        self.work, self.log, self.steps = work, log, steps
        self.rows: list[Row] = []

    def run(self, name: str, n: int, cmd: list[str], out: Path | None = None,
            env: dict | None = None) -> float:
        seconds, peak, pss = measure(cmd, self.log, env)
        size = size_of(out) if out is not None and out.exists() else 0
        self.rows.append(Row(name, n, round(seconds, 2), round(1000 * seconds / n, 4),
                             round(peak, 1), size, round(pss, 1)))
        print(f"{name:18s} N={n:>7} {seconds:8.1f} s {1000 * seconds / n:8.3f} ms/patch "
              f"{peak:8.1f} MB anon {pss:8.1f} MB pss {size:>14,} B", flush=True)
        return seconds

    def corpus(self, n: int, fmt: str) -> Path:
        path = self.work / f"{'l' if fmt == 'lmdb' else 'g'}{n}"
        if not path.exists():
            subprocess.run([sys.executable, str(HERE / "make_scale_corpus.py"), "--n", str(n),
                            "--format", fmt, str(path)], check=True)
        return path

    def checkpoint(self, lmdb: Path) -> Path:
        """A debug model trained briefly on the smallest corpus, prior fitted."""
        run = self.work / "ckpt-run"
        best = run / "checkpoints" / "best.pt"
        if not best.exists():
            subprocess.run(vqae("train", "--config", str(REPO / "configs/debug.yaml"),
                                f"--data.path={lmdb}", f"--run.dir={run}",
                                "--run.tracker=none", "--train.steps=30",
                                "--train.eval_batches=2", *TINY),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return best

    def data_rows(self, n: int, geotiff_max: int, baseline: Path | None = None) -> Path:
        """The data rows; with `baseline` (another checkout, e.g. before issue 19), each row
        runs with that checkout too, right after, labelled "(before)"."""
        lmdb = self.corpus(n, "lmdb")
        tmp = self.work / f"out{n}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        runs = [("", None)] + ([(" (before)", {"PYTHONPATH": str(baseline)})] if baseline else [])
        for label, env in runs:
            if n <= geotiff_max:
                tree_ = self.corpus(n, "geotiff")
                enc = tmp / "enc.lmdb"
                self.run("encode" + label, n, vqae(
                    "encode", "--bigearthnet-s2-root", str(tree_), "--workers", "2",
                    "--no-progress", str(enc)), enc, env)
                self.run("verify-encoded" + label, n, vqae(
                    "verify-encoded", str(enc), "--against", str(tree_), "--workers", "2"),
                    env=env)
                shutil.rmtree(enc)
        for label, env in runs if n <= geotiff_max else runs[:1]:  # stats reads every byte
            self.run("stats" + label, n, vqae("stats", "--data", str(lmdb), "--out",
                                              str(tmp / "s.json")), tmp / "s.json", env)
        for label, env in runs:
            self.run("splits" + label, n, probe("splits", str(lmdb)), env=env)
        return lmdb

    def train_rows(self, n: int, lmdb: Path) -> None:
        res = self.work / f"train{n}.json"
        _, peak, pss = measure(probe("train", str(lmdb), str(self.work / f"trun{n}"),
                                      str(self.steps), str(res)), self.log)
        got = json.loads(res.read_text())
        shutil.rmtree(self.work / f"trun{n}", ignore_errors=True)
        self.rows.append(Row("train start-up", n, round(got["startup"], 2),
                             round(1000 * got["startup"] / n, 4), round(peak, 1), 0, round(pss, 1)))
        self.rows.append(Row("train loading", n, round(self.steps * 16 / got["rate"], 2),
                             round(1000 / got["rate"], 4), round(peak, 1), 0, round(pss, 1)))
        print(f"train: start-up {got['startup']:.1f} s, {got['rate']:.1f} patches/s, "
              f"{peak:.1f} MB anon", flush=True)

    def codec_rows(self, n: int, lmdb: Path, ckpt: Path, every: bool, rd: bool) -> None:
        tmp = self.work / f"out{n}"
        tmp.mkdir(exist_ok=True)
        if rd:
            self.run("rd --max-patches 1000", n, vqae(
                "rd", "--ckpt", str(ckpt), "--data", str(lmdb), "--out", str(tmp / "rd"),
                "--device", "cpu", "--max-patches", "1000", "--no-progress",
                "--jpeg2000-quality", *RD_QUALITIES), tmp / "rd")
        if not every:
            return
        self.run("evaluate", n, vqae("evaluate", str(ckpt), "--data", str(lmdb), "--split",
                                     "all", "--device", "cpu", "--out", str(tmp / "e.json")))
        comp, back = tmp / "c.lmdb", tmp / "d.lmdb"
        self.run("compress", n, vqae("compress", str(ckpt), str(lmdb), "--lmdb", "-o",
                                     str(comp), "--device", "cpu", "--no-progress"), comp)
        self.run("decompress", n, vqae("decompress", str(comp), "-o", str(back), "--device",
                                       "cpu", "--no-progress"), back)
        shutil.rmtree(back)

    def spawner_rows(self, jobs: int) -> None:
        """A sweep of `jobs` seeds of the debug config: --dry-run (expand, write the jobs file
        and script), then --status over a status.json per job."""
        folder = self.work / f"sweep{jobs}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        spec = folder / "sweep.yaml"
        spec.write_text(json.dumps({"name": "scale", "folder": str(folder / "runs"),
                                    "base": [str(REPO / "configs/debug.yaml")],
                                    "overrides": {"run.tracker": "none"}, "seeds": jobs}))
        spawner = [sys.executable, str(REPO / "spawner.py"), str(spec)]
        self.run("spawner --dry-run", jobs, spawner + ["--deploy", "slurm", "--dry-run"])
        subprocess.run(probe("statuses", str(spec)), check=True)
        self.run("spawner --status", jobs, spawner + ["--status"])
        shutil.rmtree(folder)


def _growth(first: dict, last: dict, key: str) -> str:
    """Bytes of peak memory added per extra patch from the first row to the last."""
    dn = int(last["n"]) - int(first["n"])
    a, b = float(first.get(key) or 0), float(last.get(key) or 0)
    return f"{(b - a) * 2**20 / dn:.0f}" if dn and a and b else "-"


def report(path: Path) -> str:
    """BENCHMARKS.md's table from a results CSV: per row and N, ms per patch processed, peak
    anonymous MB and output bytes; then per command the ratio of ms per patch at the largest N
    to the smallest, and the memory added per extra patch."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["command"], []).append(r)
    table, summary = [], []
    for command, runs in by.items():
        runs.sort(key=lambda r: int(r["n"]))
        per = []
        for r in runs:
            n = int(r["n"])
            done = min(n, 1000) if command.startswith("rd") else n  # rd: --max-patches 1000
            ms = float(r["seconds"]) * 1000 / done if command != "train loading" else \
                float(r["per_patch_ms"])
            per.append(ms)
            pss = float(r.get("peak_pss_anon_mb") or 0)
            table.append([command, f"{n:,}", f"{float(r['seconds']):.1f}", f"{ms:.3f}",
                          f"{float(r['peak_anon_mb']):.0f}", f"{pss:.0f}" if pss else "-",
                          f"{int(r['out_bytes']):,}"])
        first, last = runs[0], runs[-1]
        summary.append([command, f"{first['n']} -> {last['n']}", f"{per[-1] / per[0]:.2f}x",
                        _growth(first, last, "peak_anon_mb"),
                        _growth(first, last, "peak_pss_anon_mb")])
    return (tabulate(table, headers=["command", "N", "s", "ms/patch", "peak RssAnon MB",
                                     "peak Pss_Anon MB", "output B"], tablefmt="github")
            + "\n\n" + tabulate(summary, headers=[
                "command", "N", "ms/patch, last/first", "RssAnon B per extra patch",
                "Pss_Anon B per extra patch"], tablefmt="github"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--report", type=Path, help="print the tables of a results CSV and exit")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vqae-scale"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--geotiff-max", type=int, default=10000)
    ap.add_argument("--rd-min", type=int, default=100000, help="rd rows from this N on")
    ap.add_argument("--codec-max", type=int, default=100000,
                    help="evaluate/compress/decompress of every patch up to this N")
    ap.add_argument("--steps", type=int, default=100, help="loader batches timed after the first step")
    ap.add_argument("--skip", nargs="*", default=[], choices=("data", "train", "codec", "spawner"))
    ap.add_argument("--csv", type=Path, default=Path("scale.csv"))
    ap.add_argument("--keep", action="store_true", help="keep the corpora in --work")
    ap.add_argument("--baseline", type=Path,
                    help="another checkout whose data rows run side by side (PYTHONPATH)")
    args = ap.parse_args(argv)
    if args.probe:
        return PROBES[args.probe[0]](*args.probe[1:])
    if args.report:
        return print(report(args.report))
    args.work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.work, args.work / "bench.log", args.steps)
    print(f"{platform.node()}, {os.cpu_count()} cores, {datetime.date.today()}", flush=True)
    try:
        ckpt = None
        for n in sorted(args.sizes):
            lmdb = bench.data_rows(n, args.geotiff_max, args.baseline) \
                if "data" not in args.skip else bench.corpus(n, "lmdb")
            if "train" not in args.skip:
                bench.train_rows(n, lmdb)
            if "codec" not in args.skip:
                ckpt = ckpt or bench.checkpoint(bench.corpus(min(args.sizes), "lmdb"))
                bench.codec_rows(n, lmdb, ckpt, n <= args.codec_max, n >= args.rd_min)
            if "spawner" not in args.skip and n <= MAX_SWEEP:
                bench.spawner_rows(n)
            shutil.rmtree(args.work / f"out{n}", ignore_errors=True)
    finally:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(asdict(bench.rows[0]) if bench.rows else []))
            w.writeheader()
            w.writerows(asdict(r) for r in bench.rows)
        if not args.keep:
            for p in args.work.glob("[lg][0-9]*"):
                shutil.rmtree(p, ignore_errors=True)
    print(tabulate([asdict(r) for r in bench.rows], headers="keys", tablefmt="github"))


if __name__ == "__main__":
    main()
