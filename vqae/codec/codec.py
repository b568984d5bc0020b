"""A trained model as a compressor: patches <-> `.vqz` bytes.

    codec = Codec.from_checkpoint("best.pt")
    data = codec.compress(patch)      # {band: native array} or (C, 120, 120) DN -> bytes
    bands = codec.decompress(data)    # -> {band: uint16 (120, 120)}

Only the encoder's nearest-code search may run on a GPU; entropy coding runs on the CPU from the
prior's integer tables, so a file decodes to the same indices on every machine. Pixels are
`model.decode` of each file alone, its band filter applied, rounded half to even and clamped
to uint16 (S1 bands stay float32); docs/format.md has the promises.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from vqae.codec import bandfilter, bitstream, enhancement, inputs
from vqae.codec.enhancement import coding_order
from vqae.config import DEVICES, check_depth
from vqae.data.bands import NATIVE_SIZE, PATCH_SIZE, is_s1, to_uint16
from vqae.data.resample import interpolation_flag
from vqae.entropy import coder
from vqae.entropy.prior import UP
from vqae.entropy.residual_model import ResidualModel
from vqae.errors import ConfigError, DataError
from vqae.models.normalize import SCALE_CODES

Patch = Mapping[str, np.ndarray] | np.ndarray | torch.Tensor


def fingerprint(model: torch.nn.Module) -> bytes:
    """Hash of every tensor of the state_dict (weights, codebooks, prior, normalization)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{t.numel()}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.digest()[: bitstream.FINGERPRINT_BYTES]


@dataclass(frozen=True)
class Compressed:
    """One patch's `.vqz` file and what it spent."""

    data: bytes
    ideal_bits: float  # -log2 P(indices) under the prior: what an ideal coder spends
    header_bytes: int
    depth: int  # RVQ stages it stores
    band_filter: str = "none"  # the filter its header carries (vqae.codec.bandfilter.KINDS)
    # (C, H, W) float32: what decompress gives for this file, when asked for
    # (compress_images(pixels=True)); of an enhanced file, its native bands upsampled as the
    # reader upsamples
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)
    max_error: int | None = None  # the enhancement layer's bound (None: no layer)
    # the largest |decoded - original| over every native pixel, when the encoder measured it
    max_abs_error: int | None = None


@dataclass(frozen=True)
class Parsed:
    """A file read back: its indices (n, h, w), header and enhancement layer payload; unpacks
    as (indices, header), as before the layer."""

    indices: np.ndarray
    header: bitstream.Header
    layer: bytes | None = None

    def __iter__(self):
        return iter((self.indices, self.header))

    @property
    def layer_cut(self) -> bool:
        """The file promises a layer that is not there (cut just before it): lossy only."""
        return self.header.max_error is not None and self.layer is None


class Codec:
    """A model's codec: its prior's CPU tables and fingerprint, built once. `source` names the
    model (its checkpoint) in errors; `interpolation` upsamples 20/60 m bands as its reader did."""

    def __init__(self, model, source: str = "the model", interpolation: str = "bicubic"):
        self.model, self.source = model.eval(), source
        self.device = next(model.parameters()).device
        self.tables = model.prior.tables()
        self.fitted = bool(model.prior.fitted)
        self.fingerprint = fingerprint(model)
        self.depth, self.h, self.w = model.latent_shape()
        self.bands = tuple(model.bands)
        self.flag = interpolation_flag(interpolation)
        self.config = None  # the checkpoint's Config, from from_checkpoint
        self._residual = None  # its ResidualModel (`vqae fit-residual`), for --max-error
        self._residual_state = None  # the checkpoint's entry, checked when first needed
        self._model64 = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Codec:
        """The codec of a checkpoint whose prior is fitted (`vqae fit-prior`); `device`: auto,
        cpu or cuda, where the networks run."""
        from vqae.checkpoint.manager import model_from_state, read_checkpoint
        from vqae.distributed import single_device

        if device not in DEVICES:
            raise DataError(f"device {device!r}; valid: {', '.join(DEVICES)}")
        try:
            where = single_device(device)
        except ConfigError as err:
            raise DataError(f"device={device!r}: no CUDA GPU is visible here; pass "
                            "device=\"cpu\" (or \"auto\")") from err
        state = read_checkpoint(str(path), where)
        model, cfg = model_from_state(str(path), state, where)
        codec = cls(model, str(path), cfg.data.interpolation)
        codec.config = cfg
        codec._require_fitted()
        if "residual" in state:  # lossy work never needs it: a bad one fails only its users
            codec._residual_state = state["residual"]
        return codec

    @property
    def residual(self) -> ResidualModel | None:
        """The checkpoint's residual model (None: none), checked against this model."""
        if self._residual is None and self._residual_state is not None:
            self._residual = ResidualModel.from_state(self._residual_state, self.source,
                                                      len(self.bands))
            self._residual_state = None
        return self._residual

    @residual.setter
    def residual(self, model: ResidualModel | None) -> None:
        self._residual, self._residual_state = model, None

    def _require_fitted(self) -> None:
        """A uniform, unfitted prior codes nothing well: refuse it in one line."""
        if not self.fitted:
            raise DataError(f"{self.source} has no fitted prior; run `vqae fit-prior "
                            f"{self.source}` first (or train it with this vqae version)")

    def check_depth(self, depth: int | None, what: str = "depth") -> int:
        """`depth` stages (None: all) of this model, else a DataError naming `what`."""
        return check_depth(depth, self.depth, what, DataError)

    @property
    def format_version(self) -> int:
        """The .vqz version this model's files are written in (5 only with patch scales)."""
        scaled = self.model.patch_mean_count > len(self.bands)
        return bitstream.VERSION if scaled else bitstream.UNSCALED

    def side_bits(self, band_filter: str) -> int:
        """Header bits per patch besides the indices: the patch means and the filter codes."""
        return self.model.side_bits() + bandfilter.bits(band_filter, len(self.bands))

    # ---- the public round trip ------------------------------------------------------------
    def compress(self, patch: Patch, depth: int | None = None, band_filter: str = "gain",
                 max_error: int | None = None) -> bytes:
        """One patch -> its `.vqz` bytes: the first `depth` RVQ stages (all by default) and a
        band filter of `band_filter` (bandfilter.KINDS); with `max_error` E, an enhancement
        layer that brings every native pixel within E DN (0: lossless; the patch must be a
        {band: native uint16 array} dict)."""
        return self.compress_batch([patch], depth, band_filter, max_error)[0]

    def compress_batch(self, patches: Sequence[Patch], depth: int | None = None,
                       band_filter: str = "gain", max_error: int | None = None) -> list[bytes]:
        """Several patches in one network pass; see `compress`."""
        patches = inputs.patch_list(patches)
        if not patches:
            return []
        natives = None
        if max_error is not None:
            max_error = self.check_max_error(max_error)
            natives = [inputs.native_bands(p, self.bands, self.source) for p in patches]
        x = torch.stack([self.image(p) for p in patches]).to(self.device)  # (B, C, H, W)
        return [c.data for c in self.compress_ways(x, depth, (band_filter,), natives=natives,
                                                   max_error=max_error)[band_filter]]

    def decompress(self, data: bytes, depth: int | None = None, native: bool = False,
                   source: str = "the data", lossy: bool = False) -> dict[str, np.ndarray]:
        """`.vqz` bytes -> {band: array as stored}: uint16 S2 bands at 120x120, or at each
        band's native size with `native`. A file with an enhancement layer decodes to its
        native bands, each within the header's max_error (exact for 0), unless `lossy` (or a
        `depth` below the stored one) reads the stages alone. `source` names the data in
        errors."""
        parsed = self.parse(data, depth, source, layer=not lossy)
        if parsed.layer is not None:
            return self.enhanced_bands(parsed, source)
        if not lossy:
            self.refuse_cut_layer(parsed, source)
        return self.band_arrays(self.pixels(parsed), native)

    def decompress_batch(self, files: Sequence[bytes], depth: int | None = None,
                         native: bool = False) -> list[dict[str, np.ndarray]]:
        """Several files; each decodes alone, so its pixels never depend on its batch."""
        return [self.decompress(data, depth, native, f"file {i}")
                for i, data in enumerate(inputs.file_list(files))]

    # ---- patches -> files ----------------------------------------------------------------
    def image(self, patch: Patch) -> torch.Tensor:
        """A reader's patch -> (C, H, W) float32 digital numbers in the model's band order:
        a {band: native array} dict is upsampled as the model's reader did; an array passes."""
        return inputs.patch_image(patch, self.bands, self.model.image_size, self.flag,
                                  self.source)

    @torch.no_grad()
    def compress_images(self, x: torch.Tensor, depth: int | None = None,
                        band_filter: str = "gain",
                        analysed: tuple[np.ndarray, np.ndarray] | None = None,
                        pixels: bool = False) -> list[Compressed]:
        """(B, C, H, W) digital numbers on the model's device -> one file per patch: the one
        compress path of the API, `vqae compress` and `vqae rd`. `analysed` (analyse(x) at
        full depth) spares the encoder pass when one batch is coded at several depths;
        `pixels` also gives each file's decoded patch (Compressed.pixels)."""
        return self.compress_ways(x, depth, (band_filter,), analysed, pixels)[band_filter]

    def check_s2_only(self) -> None:
        """The enhancement layer keeps uint16 S2 bands; S1's float32 dB has no max error."""
        if any(is_s1(b) for b in self.bands):
            raise DataError(f"{self.source} codes S1 bands (float32 dB), which have no "
                            "max-error mode; the enhancement layer needs an S2-only model")

    def check_max_error(self, max_error) -> int:
        """The bound as a Python int, if the layer can keep it (a whole number of DN from 0 to
        65535, a residual model to code it, S2 bands only)."""
        if isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)) \
                or not 0 <= int(max_error) <= 0xFFFF:
            raise DataError(f"max error {max_error!r}: give a whole number of DN from 0 "
                            "(lossless) to 65535")
        max_error = int(max_error)  # numpy integers would wrap in 2 E + 1
        self.check_s2_only()
        if self.residual is None:
            raise DataError(f"{self.source} has no residual model for --max-error; run "
                            f"`vqae fit-residual {self.source} --data DATA` first")
        return max_error

    @torch.no_grad()
    def compress_ways(self, x: torch.Tensor, depth: int | None, kinds: Sequence[str],
                      analysed: tuple[np.ndarray, np.ndarray] | None = None,
                      pixels: bool = False, stages: list | None = None,
                      natives: Sequence[Mapping[str, np.ndarray]] | None = None,
                      max_error: int | None = None) -> dict[str, list[Compressed]]:
        """compress_images for several band filters at one depth, sharing the encoder pass,
        the decoder pass and the entropy-coded stages (`stages`: code_stages of each patch's
        analysed indices, from an earlier call): {kind: one file per patch}. The decoder runs
        patch by patch, as decompress does: a filter is fitted to, and `pixels` are, exactly
        what the file decodes to, whichever patches share the batch. With `max_error`, each
        file also carries an enhancement layer coded against `natives` (each patch's
        {band: native uint16}), and `pixels` are its native bands upsampled."""
        depth = self.check_depth(depth)
        for kind in kinds:
            if kind not in bandfilter.KINDS:
                raise DataError(f"band filter {kind!r}; valid: {', '.join(bandfilter.KINDS)}")
        indices, means = analysed if analysed is not None else self.analyse(x, depth)
        indices = indices[:, :depth]  # stages are greedy: a prefix is the shallower code
        decoded = None
        if pixels or any(kind != "none" for kind in kinds):
            decoded = self._network_decode(indices, means)  # (B, C, H, W), patch by patch
        if stages is None:
            stages = [self.code_stages(g) for g in indices]
        out = {}
        for kind in kinds:
            codes = self.fit_band_filter(kind, x, indices, means, decoded)  # (B, n)
            dn = (self._stored(bandfilter.apply(decoded, self._pivot(means), kind, codes))
                  if pixels else [None] * len(indices))
            out[kind] = [self.pack(g, m, kind, c, coded, p)
                         for g, m, c, coded, p in zip(indices, means, codes, stages, dn)]
            if max_error is not None:
                out[kind] = [self.enhance(g, m, kind, c, coded, nat, max_error)
                             for g, m, c, coded, nat in zip(indices, means, codes, stages,
                                                            natives)]
        return out

    def enhance(self, indices: np.ndarray, means, kind: str, codes, stages,
                native: Mapping[str, np.ndarray], max_error: int,
                values: list[np.ndarray] | None = None) -> Compressed:
        """One patch's file with an enhancement layer against its native bands `native`;
        `values`: base_values of these stages and filter, when already computed."""
        max_error = self.check_max_error(max_error)
        order = coding_order(self.bands)
        originals = [np.asarray(native[self.bands[c]], np.int64) for c in order]
        if values is None:
            values = self.base_values(indices, means, kind, codes)
        layer = enhancement.encode_layer(self.residual, values, originals, max_error)
        file = self.pack(indices, means, kind, codes, stages, max_error=max_error,
                         layer=layer.payload)
        recon = {self.bands[c]: r.astype(np.uint16) for c, r in zip(order, layer.recon)}
        worst = max(int(np.abs(r - o).max()) for r, o in zip(layer.recon, originals))
        return replace(file, ideal_bits=file.ideal_bits + layer.ideal_bits,
                       pixels=self.image(recon).numpy(), max_abs_error=worst)

    @torch.no_grad()
    def base_values(self, indices: np.ndarray, means, kind: str, codes) -> list[np.ndarray]:
        """One file's stages (n, h, w), side values and filter -> the enhancement layer's base
        before rounding: float64 native bands in coding order, computed on the CPU in float64
        (network, band filter, block means), so machines agree far within the layer's margin."""
        if self._model64 is None:
            self._model64 = copy.deepcopy(self.model).cpu().double().eval()
        idx = torch.from_numpy(np.ascontiguousarray(indices, np.int64)[None])
        side = np.asarray(means, np.float64).reshape(1, -1)
        mean_t = torch.from_numpy(side) if self.model.patch_mean_count else None
        dn = self._model64.decode(idx, mean_t).numpy()  # (1, C, H, W) float64
        dn = bandfilter.apply(dn, self._pivot(side), kind,
                              np.asarray(codes, np.int64).reshape(1, -1), np.float64)[0]
        return [block_mean(dn[c], NATIVE_SIZE[self.bands[c]]) for c in coding_order(self.bands)]

    def refuse_cut_layer(self, parsed: Parsed, source: str) -> None:
        """A file that promises a layer and ends right before it cannot give what it promises
        (exact or bounded pixels): an error, unless the lossy stages are asked for."""
        if parsed.layer_cut and len(parsed.indices) == parsed.header.depth:
            raise DataError(f"{source} ends where its enhancement layer (max error "
                            f"{parsed.header.max_error} DN) should start: the file was cut; "
                            "re-copy it, or decode its lossy stages alone with --lossy")

    def enhanced_bands(self, parsed: Parsed, source: str) -> dict[str, np.ndarray]:
        """A parsed file with its layer -> {band: native uint16}, proven by the layer's CRC."""
        if self.residual is None:
            raise DataError(f"{source} has an enhancement layer and {self.source} has no "
                            "residual model; decompress it with the checkpoint that compressed "
                            "it, or read its lossy stages alone with --lossy")
        h = parsed.header
        values = self.base_values(parsed.indices, h.patch_means + h.patch_scales,
                                  h.filter_kind, h.filter_codes)
        recon = enhancement.decode_layer(self.residual, values, parsed.layer, h.max_error,
                                         source)
        by_band = dict(zip(coding_order(self.bands), recon))
        return {b: by_band[c].astype(np.uint16) for c, b in enumerate(self.bands)}

    @torch.no_grad()
    def analyse(self, x: torch.Tensor, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(B, C, H, W) digital numbers -> indices (B, depth, h, w) and patch means (B, M)
        int64 (M = 0 for a model without them)."""
        means = self.model.patch_means(x)
        indices = self.model.encode(x, depth, means).cpu().numpy()
        if means is None:
            return indices, np.zeros((len(x), 0), np.int64)
        return indices, means.cpu().numpy().astype(np.int64)

    def fit_band_filter(self, kind: str, x: torch.Tensor, indices: np.ndarray,
                        means: np.ndarray, decoded: np.ndarray | None = None) -> np.ndarray:
        """(B, n) codes of `kind` for patches x coded as `indices`: the encoder decodes what
        the decoder will see (unless `decoded` holds it) and fits the filter to the original."""
        if kind == "none":
            return np.zeros((len(x), 0), np.int64)
        if decoded is None:
            decoded = self._network_decode(indices, means)
        return bandfilter.fit(kind, x.float().cpu().numpy(), decoded, self._pivot(means))

    def _stored(self, dn: np.ndarray) -> np.ndarray:
        """(B, C, H, W) decoded digital numbers -> what decompress stores, as float32: S2 bands
        rounded half to even and clamped to uint16, S1 bands as they are."""
        out = dn.astype(np.float32)
        for c, band in enumerate(self.bands):
            if not is_s1(band):
                out[:, c] = to_uint16(dn[:, c])
        return out

    def code_stages(self, indices: np.ndarray) -> tuple[list[bytes], list[float]]:
        """One patch's indices (depth, h, w) -> each stage's payload and ideal bits. A stage's
        payload is the same whatever depth its file stores: a prefix serves a shallower file."""
        indices = np.asarray(indices, dtype=np.int64)
        payloads, bits = [], []
        for s in range(len(indices)):
            rows = self.tables.row_ids(indices, s).ravel()  # (h*w,) table row per position
            probs = self.tables.probs[s][rows]  # (h*w, K)
            payloads.append(coder.encode(indices[s].ravel(), probs))
            bits.append(coder.ideal_bits(indices[s].ravel(), probs))
        return payloads, bits

    def pack(self, indices: np.ndarray, means=(), band_filter: str = "none", codes=(),
             stages: tuple[list[bytes], list[float]] | None = None,
             pixels: np.ndarray | None = None, max_error: int | None = None,
             layer: bytes | None = None) -> Compressed:
        """One patch's indices (depth, h, w), patch means and filter codes -> its file;
        `stages`: code_stages of these indices (or of deeper ones: a prefix is taken)."""
        self._require_fitted()  # a Codec built by hand from an unfitted model too
        indices = np.asarray(indices, dtype=np.int64)
        means = tuple(int(c) for c in np.asarray(means).ravel())
        codes = tuple(int(g) for g in np.asarray(codes).ravel())
        assert indices.shape[1:] == (self.h, self.w) and 1 <= len(indices) <= self.depth
        assert len(means) == self.model.patch_mean_count, "pass the patch means analyse returned"
        payloads, bits = stages if stages is not None else self.code_stages(indices)
        n = len(indices)
        size, c = self.model.image_size, len(self.bands)
        header = bitstream.Header(self.fingerprint, size, size, self.depth, n, self.bands,
                                  means[:c], band_filter, codes, patch_scales=means[c:],
                                  max_error=max_error)
        return Compressed(bitstream.write(header, payloads[:n], layer), float(sum(bits[:n])),
                          len(header.pack()), n, band_filter, pixels, max_error)

    # ---- files -> patches ----------------------------------------------------------------
    def parse(self, data: bytes, depth: int | None = None, source: str = "the data",
              layer: bool = True) -> Parsed:
        """A file's bytes -> its first `depth` stages (all by default; fewer where it was cut
        between chunks), header and (with `layer`, at full depth) enhancement layer, checked
        against this model."""
        data = inputs.file_bytes(data, source)
        depth = None if depth is None else self.check_depth(depth)
        parsed = bitstream.read(data, source, depth, check=lambda h: self.check_header(h, source),
                                layer=layer)
        out = np.zeros((len(parsed.payloads), self.h, self.w), dtype=np.int64)
        for s, payload in enumerate(parsed.payloads):
            self._decode_stage(out, s, payload, source)
        return Parsed(out, parsed.header, parsed.layer)

    def check_header(self, header: bitstream.Header, source: str) -> None:
        """Refuse a file of another model, or one whose header does not describe this model
        (a damaged or crafted file whose CRC still holds)."""
        if header.fingerprint != self.fingerprint:
            raise DataError(f"{source} was compressed with another model (fingerprint "
                            f"{header.fingerprint.hex()}, {self.source} has "
                            f"{self.fingerprint.hex()}); decompress it with the checkpoint "
                            "that compressed it (--ckpt)")
        size = self.model.image_size
        means = len(self.bands) if self.model.patch_mean_count else 0
        expected = {"bands": (header.bands, self.bands),
                    "size": ((header.height, header.width), (size, size)),
                    "model depth": (header.model_depth, self.depth),
                    "patch means": (len(header.patch_means), means),
                    "patch scales": (len(header.patch_scales),
                                     self.model.patch_mean_count - means)}
        for what, (got, want) in expected.items():
            if got != want:
                raise DataError(f"{source}: its header gives {what} {got}, {self.source} has "
                                f"{want}; the file is damaged")
        low, high = SCALE_CODES
        if any(not low <= code <= high for code in header.patch_scales):
            raise DataError(f"{source}: its header gives patch scale codes "
                            f"{list(header.patch_scales)} outside {low}..{high}, which no "
                            "encoder writes; the file is damaged")

    def _decode_stage(self, out: np.ndarray, s: int, payload: bytes, source: str) -> None:
        """Decode stage s into out[s]; the coder must end exactly where the encoder began."""
        try:
            dec = coder.AnsDecoder(payload)
            if self.tables.context[s] == UP:  # each row's context is the row above: row by row
                for y in range(self.h):
                    rows = self.tables.row_ids(out, s)[y]  # (w,)
                    out[s, y] = dec.decode(self.tables.probs[s][rows])
            else:
                rows = self.tables.row_ids(out, s).ravel()  # (h*w,)
                out[s] = dec.decode(self.tables.probs[s][rows]).reshape(self.h, self.w)
            intact = dec.exhausted()
        except (ValueError, RuntimeError, AssertionError) as err:
            raise DataError(f"{source}: RVQ stage {s} does not decode ({err}); the file is "
                            "damaged") from err
        if not intact:
            raise DataError(f"{source}: RVQ stage {s} decodes with data left over; the file is "
                            "damaged or was written by another coder")

    def pixels(self, parsed: Parsed) -> np.ndarray:
        """A parsed file -> (C, H, W) float32 digital numbers, its band filter applied."""
        h = parsed.header
        side = np.array([h.patch_means + h.patch_scales])  # (1, M): what analyse gave
        return self.decode_images(parsed.indices[None], side, h.filter_kind,
                                  np.array([h.filter_codes]))[0]

    @torch.no_grad()
    def decode_images(self, indices: np.ndarray, means: np.ndarray | None = None,
                      band_filter: str = "none", codes: np.ndarray | None = None) -> np.ndarray:
        """indices (B, n, h, w), patch means (B, M) and filter codes (B, m) -> (B, C, H, W)
        float32 digital numbers, each patch decoded alone."""
        dn = self._network_decode(indices, means)
        return bandfilter.apply(dn, self._pivot(means), band_filter, codes)

    @torch.no_grad()
    def _network_decode(self, indices: np.ndarray, means: np.ndarray | None) -> np.ndarray:
        """model.decode of (B, n, h, w) indices -> (B, C, H, W) float32, one patch at a time:
        convolution kernels pick their algorithm by batch size, and a file must decode to the
        same pixels whichever files share its batch (the encoder's filter fit included)."""
        idx = torch.from_numpy(np.ascontiguousarray(indices)).to(self.device)  # (B, n, h, w)
        mean_t = None
        if self.model.patch_mean_count:
            mean_t = torch.as_tensor(np.asarray(means, np.float32).reshape(len(idx), -1),
                                     device=self.device)  # (B, C)
        return np.concatenate([
            self.model.decode(idx[i : i + 1], None if mean_t is None else mean_t[i : i + 1])
            .float().cpu().numpy() for i in range(len(idx))])

    def _pivot(self, means: np.ndarray | None) -> np.ndarray | None:
        """The band filter's pivot: the patch means of a per-patch model, else None (the
        decoded bands' own means)."""
        return np.asarray(means)[:, : len(self.bands)] if self.model.patch_mean_count else None

    def band_arrays(self, dn: np.ndarray, native: bool = False) -> dict[str, np.ndarray]:
        return band_arrays(dn, self.bands, native)


def band_arrays(dn: np.ndarray, bands: Sequence[str],
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


def block_mean(plane: np.ndarray, size: int) -> np.ndarray:
    """(H, W) float64 -> (size, size) block means (the native grid of a 20 m or 60 m band)."""
    f = plane.shape[0] // size
    return plane.reshape(size, f, size, f).mean(axis=(1, 3)) if f > 1 else plane


def area_downsample(plane: np.ndarray, size: int) -> np.ndarray:
    """(H, W) -> (size, size) block means, H a multiple of size (a 10 m grid to 20 m or 60 m)."""
    if plane.shape[0] != PATCH_SIZE or plane.shape[0] % size:
        raise DataError(f"native band sizes need {PATCH_SIZE}x{PATCH_SIZE} patches, the model "
                        f"decodes {plane.shape[0]}x{plane.shape[1]}; drop --native")
    return block_mean(plane.astype(np.float64), size)
