"""Batches onto the training device: the host-to-device copy, 20/60 m upsampling of whole batches,
and prefetching that overlaps the next batch's copy with the current step.

With data.resample=device the loader workers only read and collate the native uint16 bands (10 m
120x120, 20 m 60x60, 60 m 20x20: 160 KB a patch instead of 691 KB of float32), and the per-patch
OpenCV upsampling, the dominant cost of a worker (DESIGN.md, GPU facts), runs here on the batch.
It reproduces the CPU path (`vqae.data.resample`: OpenCV resizing the uint16 arrays):

  * bicubic: torch and INTER_CUBIC share the a=-0.75 kernel, half-pixel centres
    (align_corners=False) and replicated borders;
  * bilinear: INTER_LINEAR likewise (half-pixel centres, replicated borders);
  * nearest: INTER_NEAREST takes source pixel floor(i * in / out), as torch's "nearest" does;
  * area: INTER_AREA enlarging by an integer factor (2 and 6 here) repeats pixels, as torch's
    "area" (adaptive average pooling) does;

then rounds half to even and saturates to [0, 65535], as OpenCV's cast back to uint16 does. On
the real sample (tests/data/test_device_input.py) nearest and area agree exactly, bilinear and
bicubic within 1 DN (float32 rounding ties, well under 1% of the pixels).

S1 bands (data.s1, float32 dB) are not resampled here: with data.s1 `auto` takes the CPU path
and `device` is a configuration error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from vqae.config import DataConfig
from vqae.data.bands import PATCH_SIZE, UINT16_MAX
from vqae.data.resample import native_groups
from vqae.errors import ConfigError

log = logging.getLogger(__name__)
TORCH_MODES = {  # data.interpolation -> the F.interpolate arguments that match OpenCV's flag
    "nearest": {"mode": "nearest"},
    "bilinear": {"mode": "bilinear", "align_corners": False},
    "bicubic": {"mode": "bicubic", "align_corners": False},
    "area": {"mode": "area"},
}


def resample_mode(cfg: DataConfig, device: torch.device) -> str:
    """Where data.resample upsamples on `device`: "cpu" or "device"."""
    if cfg.resample == "device" and cfg.s1:
        raise ConfigError("data.resample=device reads S2 bands only; with data.s1=true use "
                          "--data.resample=cpu (or auto)")
    if cfg.resample == "auto":
        return "device" if device.type == "cuda" and not cfg.s1 else "cpu"
    return cfg.resample


def upsample(native: dict[int, torch.Tensor], groups: dict[int, list[int]], interpolation: str,
             size: int = PATCH_SIZE) -> torch.Tensor:
    """{side: (B, n, side, side) uint16} -> (B, C, size, size) float32 DN, channels in the order
    `groups` (from `native_groups`) gives."""
    channels: dict[int, torch.Tensor] = {}
    for side, idx in groups.items():
        x = native[side].float()  # (B, n, side, side)
        if side != size:
            x = F.interpolate(x, size=(size, size), **TORCH_MODES[interpolation])
            x = x.round_().clamp_(0, UINT16_MAX)  # as OpenCV's resize of the uint16 arrays
        channels.update({c: x[:, j] for j, c in enumerate(idx)})
    # one stack of views restores band order: no index tensor to copy to the device
    return torch.stack([channels[c] for c in range(len(channels))], dim=1)


class DeviceInput:
    """A loader batch -> (B, C, 120, 120) float32 digital numbers on `device`: float images are
    moved as they are, native uint16 stacks are moved and then upsampled. `native` says which
    kind the datasets should hand out (`DataSource.dataset(split, native=...)`)."""

    def __init__(self, device: torch.device | str, bands: list[str],
                 interpolation: str = "bicubic", native: bool = False):
        self.device, self.native = torch.device(device), native
        self.groups, self.interpolation = native_groups(bands), interpolation

    @classmethod
    def for_config(cls, cfg: DataConfig, device: torch.device) -> DeviceInput:
        mode = resample_mode(cfg, device)
        log.info("20/60 m bands upsampled on the %s (data.resample=%s, %s)",
                 "training device" if mode == "device" else "CPU", cfg.resample,
                 cfg.interpolation)
        return cls(device, list(cfg.bands), cfg.interpolation, native=mode == "device")

    def __call__(self, batch: dict) -> torch.Tensor:
        if "image" in batch:
            return batch["image"].to(self.device, non_blocking=True)  # (B, C, H, W)
        native = {side: t.to(self.device, non_blocking=True) for side, t in batch["native"].items()}
        return upsample(native, self.groups, self.interpolation)


def with_image(batch: dict, image: torch.Tensor) -> dict:
    """`batch` with its pixels replaced by the prepared device tensor (names etc. kept)."""
    return {**{k: v for k, v in batch.items() if k != "native"}, "image": image}


class Prefetcher:
    """Iterates `loader`, yielding its batches with "image" prepared on the device.

    On CUDA batch i+1 is copied (from pinned memory) and upsampled on a side stream while the
    caller computes on batch i; an event orders the hand-over. On the CPU there is nothing to
    overlap: each batch is prepared when it is taken.
    """

    def __init__(self, loader: Iterable[dict], prepare: DeviceInput):
        self.loader, self.prepare = loader, prepare

    def __iter__(self) -> Iterator[dict]:
        if self.prepare.device.type != "cuda":
            return (with_image(b, self.prepare(b)) for b in self.loader)
        return self._overlapped()

    def _overlapped(self) -> Iterator[dict]:
        stream = torch.cuda.Stream(self.prepare.device)
        pending = None
        for batch in self.loader:
            with torch.cuda.stream(stream):
                image, event = self.prepare(batch), torch.cuda.Event()
                event.record(stream)
            if pending is not None:
                yield self._hand_over(*pending)
            pending = batch, image, event
        if pending is not None:
            yield self._hand_over(*pending)

    def _hand_over(self, batch: dict, image: torch.Tensor, event: torch.cuda.Event) -> dict:
        current = torch.cuda.current_stream(self.prepare.device)
        current.wait_event(event)
        image.record_stream(current)  # allocated on the side stream: not reused while in use here
        return with_image(batch, image)
