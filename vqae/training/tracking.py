"""Experiment tracking behind one small interface, so the training loop has no `if wandb:`.

`make_tracker` gives rank 0 a local JSONL/PNG tracker (always) plus wandb (optional), and every
other rank a no-op. Metric keys use slash names: `train/loss`, `val/psnr`, `codebook/usage/0`.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import cv2
import numpy as np
from tabulate import tabulate

from vqae.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

log = logging.getLogger(__name__)

TRACKER_KINDS = ("wandb", "none")
RUN_ID_FILE = "wandb_run_id.txt"


class Tracker(ABC):
    """Where metrics, images and the final summary go. Usable as a context manager."""

    @abstractmethod
    def log(self, metrics: Mapping[str, Any], step: int) -> None: ...

    @abstractmethod
    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        """images: name -> uint8 RGB array (H, W, 3)."""

    @abstractmethod
    def summary(self, values: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullTracker(Tracker):
    """Drops everything (non-zero ranks, or tests)."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        pass

    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        pass

    def summary(self, values: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def to_scalar(value: Any) -> Any:
    """Plain Python number for one-element tensors / numpy values; other values unchanged."""
    if isinstance(value, (np.generic, np.ndarray)) and value.size == 1:
        return value.item()
    if hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1:  # torch
        return value.item()
    return value


def _json_safe(value: Any) -> Any:
    value = to_scalar(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; "nan"/"inf" keep the line parseable
    return value


def _check_image(name: str, image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {name!r} must be uint8 (H, W, 3) RGB, got "
                         f"{image.dtype} {image.shape}")


class JsonlTracker(Tracker):
    """`<run_dir>/metrics.jsonl` (one line per log call), `images/*.png`, `summary.json`."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.image_dir = self.run_dir / "images"
        self.summary_path = self.run_dir / "summary.json"
        # Line-buffered append, open for the tracker's life (closed in close()): a crash loses
        # at most the line being written.
        self._file = open(self.metrics_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        record = {"step": step, **{k: _json_safe(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")

    def image_path(self, name: str, step: int) -> Path:
        return self.image_dir / f"{name.replace('/', '_')}_step{step}.png"

    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        self.image_dir.mkdir(exist_ok=True)
        for name, image in images.items():
            _check_image(name, image)
            path = self.image_path(name, step)
            if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write image {path}")

    def summary(self, values: Mapping[str, Any]) -> None:
        current = json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else {}
        current.update({k: _json_safe(v) for k, v in values.items()})
        self.summary_path.write_text(json.dumps(current, indent=2) + "\n")

    def close(self) -> None:
        self._file.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in order (a torn last line is ignored)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping unparseable line in %s: %.60s", path, line)
    return records


def wandb_logged_in() -> bool:
    """True if an API key is available via WANDB_API_KEY or ~/.netrc (as `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _wandb_mode() -> str | None:
    """None lets WANDB_MODE decide; otherwise online when logged in, else offline."""
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if wandb_logged_in() else "offline"


class WandbTracker(Tracker):
    """A wandb run in `<run_dir>/wandb`, resumed when `<run_dir>/wandb_run_id.txt` exists."""

    def __init__(self, run_dir: str | os.PathLike, config: Mapping[str, Any], project: str,
                 name: str | None = None, **init_kwargs: Any):
        import wandb  # optional dependency: only needed when this tracker is chosen

        self._wandb = wandb
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / RUN_ID_FILE
        resuming = id_file.is_file()
        run_id = id_file.read_text().strip() if resuming else uuid.uuid4().hex[:8]
        if not resuming:
            id_file.write_text(run_id + "\n")
        # quiet: no history and summary printed at the end (our final table is the result);
        # its start lines, warnings and errors stay
        init_kwargs.setdefault("settings", wandb.Settings(quiet=True))
        self.run = wandb.init(
            project=project, name=name or run_dir.name, config=dict(config), dir=str(run_dir),
            id=run_id, resume="allow", mode=_wandb_mode(), **init_kwargs)
        log.info("wandb run %s (%s) in %s", run_id, "resumed" if resuming else "new", run_dir)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log({k: to_scalar(v) for k, v in metrics.items()}, step=step)

    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        for name, image in images.items():
            _check_image(name, image)
        self.run.log({k: self._wandb.Image(v) for k, v in images.items()}, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        self.run.summary.update({k: to_scalar(v) for k, v in values.items()})

    def close(self) -> None:
        self.run.finish()


class MultiTracker(Tracker):
    """Fans every call out to several trackers, in order."""

    def __init__(self, *trackers: Tracker):
        self.trackers = list(trackers)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        for t in self.trackers:
            t.log_images(images, step)

    def summary(self, values: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.summary(values)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def make_tracker(kind: str, run_dir: str | os.PathLike, config: Mapping[str, Any],
                 project: str = "vqae", rank: int = 0, name: str | None = None) -> Tracker:
    """Rank 0: JSONL always, plus wandb when kind == "wandb". Other ranks: NullTracker."""
    if kind not in TRACKER_KINDS:
        raise ConfigError(f"unknown tracker {kind!r}; valid: {', '.join(TRACKER_KINDS)}")
    if rank != 0:
        return NullTracker()
    local = JsonlTracker(run_dir)
    if kind == "none":
        return local
    return MultiTracker(local, WandbTracker(run_dir, config, project, name=name))


def _format_value(value: Any) -> str:
    value = to_scalar(value)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.1f}"
    return str(value)


def format_table(metrics: Mapping[str, Any], title: str | None = None) -> str:
    """Two-column console table of metrics, in the given order."""
    rows = [(key, _format_value(value)) for key, value in metrics.items()]
    table = tabulate(rows, headers=["metric", "value"], tablefmt="simple", disable_numparse=True,
                     colalign=("left", "right"))
    return f"{title}\n{table}" if title else table
