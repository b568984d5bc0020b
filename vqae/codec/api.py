"""A trained model as a codec: index grids <-> `.vqz` bytes, and indices <-> digital numbers.

Only the encoder's nearest-code search may run on a GPU: it moves rate and quality, never
decodability. Entropy coding runs on the CPU from the prior's integer tables, so a file decodes
to the same indices on every machine. A per-patch model's side information (its band means,
integers) travels in the header, and so does the band filter the encoder fitted
(`bandfilter.py`). Pixels: `model.decode(indices, centres)` of the patch alone (batch of one,
fp32), the file's band filter applied (float64 on the CPU), rounded half to even and clamped
to [0, 65535] for S2 bands (uint16, as stored); S1 bands stay float32. The indices are the same
on every machine; the network's float output is the same on one machine and device, and may
differ in the last DN across devices.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from vqae.codec import bandfilter, bitstream, entropy
from vqae.codec.prior import UP
from vqae.data.bands import NATIVE_SIZE, PATCH_SIZE, is_s1, to_uint16
from vqae.errors import DataError


def fingerprint(model: torch.nn.Module) -> bytes:
    """Hash of every tensor of the state_dict (weights, codebooks, prior, normalization)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{t.numel()}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.digest()[: bitstream.FINGERPRINT_BYTES]


@dataclass(frozen=True)
class Encoded:
    data: bytes  # the whole .vqz file
    ideal_bits: float  # information content of the indices under the prior
    header_bytes: int


class Codec:
    """A model's codec: CPU prior tables and fingerprint, built once. `source` names the model
    (its checkpoint) in errors."""

    def __init__(self, model, source: str = "the model"):
        self.model, self.source = model, source
        self.tables = model.prior.tables()
        self.fingerprint = fingerprint(model)
        self.depth, self.h, self.w = model.latent_shape()
        self.bands = tuple(model.bands)

    def require_fitted(self) -> None:
        if not bool(self.model.prior.fitted):
            raise DataError(f"{self.source} has no fitted prior; run `vqae fit-prior "
                            f"{self.source}` first (or train it with this vqae version)")

    def header(self, depth: int, centres: tuple[int, ...] = (), filter_kind: str = "none",
               filter_codes: tuple[int, ...] = ()) -> bitstream.Header:
        size = self.model.image_size
        return bitstream.Header(self.fingerprint, size, size, self.depth, depth, self.bands,
                                centres, filter_kind, filter_codes)

    @property
    def side_values(self) -> int:
        """Side information values per patch: one centre per band for a per-patch model."""
        return len(self.bands) if self.model.normalize.per_patch else 0

    def side_bits(self, filter_kind: str) -> int:
        """Header bits per patch besides the indices: the centres and the band filter's codes."""
        return self.model.side_bits() + bandfilter.bits(filter_kind, len(self.bands))

    # ---- indices <-> bytes ---------------------------------------------------------------
    def encode_indices(self, indices: np.ndarray, centres=(), filter_kind: str = "none",
                       filter_codes=()) -> Encoded:
        """indices (depth, h, w) of one patch, depth <= the model's, its side information
        (encode_images' centres row) and its band filter (fit_filter's row) -> the .vqz file."""
        indices = np.asarray(indices, dtype=np.int64)
        centres = tuple(int(c) for c in np.asarray(centres).ravel())
        filter_codes = tuple(int(g) for g in np.asarray(filter_codes).ravel())
        assert indices.shape[1:] == (self.h, self.w) and 1 <= len(indices) <= self.depth
        assert len(centres) == self.side_values, "pass the centres encode_images returned"
        payloads, bits = [], 0.0
        for s in range(len(indices)):
            rows = self.tables.row_ids(indices, s).ravel()  # (h*w,) table row per position
            probs = self.tables.probs[s][rows]  # (h*w, K)
            payloads.append(entropy.encode(indices[s].ravel(), probs))
            bits += entropy.ideal_bits(indices[s].ravel(), probs)
        header = self.header(len(indices), centres, filter_kind, filter_codes)
        data = bitstream.write(header, payloads)
        return Encoded(data, bits, len(header.pack()))

    def decode_indices(self, data: bytes, name: str, depth: int | None = None) -> np.ndarray:
        """A file's bytes -> indices (n, h, w): its first `depth` stages (all by default), or
        fewer where the file was cut between chunks."""
        return self.decode_file(data, name, depth)[0]

    def decode_file(self, data: bytes, name: str,
                    depth: int | None = None) -> tuple[np.ndarray, bitstream.Header]:
        """(indices (n, h, w), the file's header); see decode_indices."""
        parsed = bitstream.read(data, name, depth, check=lambda h: self.check_header(h, name))
        out = np.zeros((len(parsed.payloads), self.h, self.w), dtype=np.int64)
        for s, payload in enumerate(parsed.payloads):
            self._decode_stage(out, s, payload, name)
        return out, parsed.header

    def check_header(self, header: bitstream.Header, name: str) -> None:
        """Refuse a file of another model, or one whose header does not describe this model
        (a damaged or crafted file whose CRC still holds)."""
        if header.fingerprint != self.fingerprint:
            raise DataError(f"{name} was compressed with another model (fingerprint "
                            f"{header.fingerprint.hex()}, {self.source} has "
                            f"{self.fingerprint.hex()}); decompress it with the checkpoint "
                            "that compressed it (--ckpt)")
        size = self.model.image_size
        expected = {"bands": (header.bands, self.bands),
                    "size": ((header.height, header.width), (size, size)),
                    "model depth": (header.model_depth, self.depth),
                    "band means": (len(header.centres), self.side_values)}
        for field, (got, want) in expected.items():
            if got != want:
                raise DataError(f"{name}: its header gives {field} {got}, {self.source} has "
                                f"{want}; the file is damaged")

    def _decode_stage(self, out: np.ndarray, s: int, payload: bytes, name: str) -> None:
        """Decode stage s into out[s]; the coder must end exactly where the encoder began."""
        try:
            dec = entropy.Decoder(payload)
            if self.tables.context[s] == UP:  # each row's context is the row above: row by row
                for y in range(self.h):
                    rows = self.tables.row_ids(out, s)[y]  # (w,)
                    out[s, y] = dec.decode(self.tables.probs[s][rows])
            else:
                rows = self.tables.row_ids(out, s).ravel()  # (h*w,)
                out[s] = dec.decode(self.tables.probs[s][rows]).reshape(self.h, self.w)
            intact = dec.exhausted()
        except (ValueError, RuntimeError, AssertionError) as err:
            raise DataError(f"{name}: RVQ stage {s} does not decode ({err}); the file is "
                            "damaged") from err
        if not intact:
            raise DataError(f"{name}: RVQ stage {s} decodes with data left over; the file is "
                            "damaged or was written by another coder")

    # ---- pixels <-> indices --------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, x: torch.Tensor,
                      depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(B, C, H, W) digital numbers on the model's device -> indices (B, depth, h, w) and
        side information (B, side_values) int64 (band means; (B, 0) when the model has none)."""
        centres = self.model.side_info(x)
        indices = self.model.encode(x, depth, centres).cpu().numpy()
        if centres is None:
            return indices, np.zeros((len(x), 0), np.int64)
        return indices, centres.cpu().numpy().astype(np.int64)

    def fit_filter(self, kind: str, x: torch.Tensor, indices: np.ndarray, centres: np.ndarray,
                   device: torch.device) -> np.ndarray:
        """The band filter codes (B, n) of `kind` for patches x (B, C, H, W) digital numbers
        coded as `indices` (B, d, h, w) with `centres`: the encoder decodes what the decoder
        will see and fits. The batch decodes in one call (a GPU's speed); a last-bit difference
        from the decoder's own output moves the fit far less than a code step, and the
        decoder applies the stored codes to its own output either way."""
        if kind == "none":
            return np.zeros((len(x), 0), np.int64)
        decoded = self.network_decode(indices, device, centres, batched=True)
        return bandfilter.fit(kind, x.float().cpu().numpy(), decoded, self.pivot(centres))

    def pivot(self, centres: np.ndarray | None) -> np.ndarray | None:
        """The band filter's pivot source: the centres of a per-patch model, else None (the
        decoded bands' own means)."""
        return centres if self.side_values else None

    @torch.no_grad()
    def decode_images(self, indices: np.ndarray, device: torch.device,
                      centres: np.ndarray | None = None, filter_kind: str = "none",
                      filter_codes: np.ndarray | None = None) -> np.ndarray:
        """indices (B, n, h, w), side information (B, side_values) and band filter codes
        (B, m) of `filter_kind` -> model.decode in digital numbers (B, C, H, W) float32 with
        the filter applied."""
        dn = self.network_decode(indices, device, centres)
        return bandfilter.apply(dn, self.pivot(centres), filter_kind, filter_codes)

    @torch.no_grad()
    def network_decode(self, indices: np.ndarray, device: torch.device,
                       centres: np.ndarray | None, batched: bool = False) -> np.ndarray:
        """model.decode of (B, n, h, w) indices -> (B, C, H, W) float32 DN, one patch at a time
        unless `batched`: convolution kernels pick their algorithm by batch size, and a file
        must decode to the same pixels whichever files share its batch."""
        idx = torch.from_numpy(np.ascontiguousarray(indices)).to(device)  # (B, n, h, w)
        side = None
        if self.side_values:
            side = torch.as_tensor(np.asarray(centres, np.float32).reshape(len(idx), -1),
                                   device=device)  # (B, C)
        step = len(idx) if batched else 1
        return np.concatenate([
            self.model.decode(idx[i : i + step], None if side is None else side[i : i + step])
            .float().cpu().numpy() for i in range(0, len(idx), step)])

    def decode_patch(self, grid: np.ndarray, header: bitstream.Header,
                     device: torch.device) -> np.ndarray:
        """One decoded file (decode_file's indices (n, h, w) and header) -> (C, H, W) DN."""
        return self.decode_images(grid[None], device, np.array([header.centres]),
                                  header.filter_kind, np.array([header.filter_codes]))[0]


def band_arrays(dn: np.ndarray, bands: tuple[str, ...] | list[str],
                native: bool = False) -> dict[str, np.ndarray]:
    """One patch's decoded (C, H, W) float32 -> {band: array as stored}: S2 bands rounded half
    to even and clamped to uint16; with `native`, area-averaged to each band's native size."""
    out = {}
    for band, plane in zip(bands, dn):
        if is_s1(band):
            out[band] = plane.astype(np.float32)
            continue
        plane = to_uint16(plane)  # (H, W)
        out[band] = to_uint16(area_downsample(plane, NATIVE_SIZE[band])) if native else plane
    return out


def area_downsample(plane: np.ndarray, size: int) -> np.ndarray:
    """(H, W) -> (size, size) block means, H a multiple of size (a 10 m grid to 20 m or 60 m)."""
    if plane.shape[0] != PATCH_SIZE or plane.shape[0] % size:
        raise DataError(f"native band sizes need {PATCH_SIZE}x{PATCH_SIZE} patches, the model "
                        f"decodes {plane.shape[0]}x{plane.shape[1]}; drop --native")
    f = plane.shape[0] // size
    return plane.astype(np.float64).reshape(size, f, size, f).mean(axis=(1, 3))
