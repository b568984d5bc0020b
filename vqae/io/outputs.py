"""The one policy for the folders that commands write (compress, decompress, encode).

- OUT must not be, contain or lie inside an input (IN == OUT through a symlink or `..` too).
- Every OUT holds `manifest.json` with `"writer": "vqae"`, written when the folder is created
  (`complete: false`) and again at the end (`complete: true`). It proves that vqae wrote the
  folder: `--overwrite` replaces only such a folder, `--resume` completes only such a folder.
- A replacement is built in a fresh `mkdtemp` folder beside OUT and swapped in at the end
  (one atomic exchange where the filesystem has one), so a failed or interrupted run leaves
  the old OUT as it was. A new OUT is written in place, so an interrupted run can resume.
Stdlib only.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from vqae.errors import DataError, one_line
from vqae.io.atomic import write_atomic

MANIFEST = "manifest.json"
WRITER = "vqae"
MAX_MANIFEST_BYTES = 1 << 20  # ours are a few hundred bytes
RENAME_EXCHANGE = 2  # linux/fs.h


# ---- manifest ---------------------------------------------------------------------------

def read_manifest(folder: Path, fix: str = "pass --ckpt CKPT instead") -> dict | None:
    """`folder/manifest.json` as a dict, None if absent; a one-line DataError naming the file
    when it is not a small regular file holding a JSON object."""
    file = folder / MANIFEST
    try:
        st = os.stat(file)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DataError(f"{file} is unreadable ({err.strerror}); {fix}") from err
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{file} is not a regular file; {fix}")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise DataError(f"{file} is {st.st_size:,} bytes, not a vqae manifest (at most "
                        f"{MAX_MANIFEST_BYTES:,}); {fix}")
    try:
        found = json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: nested too deep
        reason = one_line(err, 120)
        raise DataError(f"{file} is not a valid manifest ({reason}); {fix}") from err
    if not isinstance(found, dict):
        raise DataError(f"{file} holds a JSON {type(found).__name__}, not an object; {fix}")
    return found


def written_by_vqae(manifest: dict | None) -> bool:
    # "format": "vqz" alone marks a compress output of vqae before the writer field existed
    return bool(manifest) and (manifest.get("writer") == WRITER or manifest.get("format") == "vqz")


def output_kind(manifest: dict, folder: Path) -> str:
    """What an output of vqae in `folder` holds; a compress output from before `kind` was
    recorded is a folder of .vqz files or an LMDB of them."""
    kind = manifest.get("kind")
    if isinstance(kind, str):
        return kind
    return "vqz-lmdb" if (folder / "data.mdb").exists() else "vqz"


def write_manifest(folder: Path, fields: dict) -> None:
    write_atomic(folder / MANIFEST, json.dumps({"writer": WRITER, **fields}, indent=2) + "\n")


# ---- where OUT may be -------------------------------------------------------------------

def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _above(path: Path) -> list[tuple[int, int]]:
    """(device, inode) of every existing folder above `path`: the same folder reached by
    another name (a bind mount, a symlink) has the same identity."""
    return [i for p in path.absolute().parents if (i := _identity(p)) is not None]


def check_apart(out: Path, inputs: Iterable[str | os.PathLike | None], flag: str = "-o") -> None:
    """Refuse an OUT that is an input, lies inside one or holds one (symlinks, `..` and bind
    mounts seen through): replacing or filling it would destroy what is being read."""
    o, out_id, out_above = out.resolve(), _identity(out), _above(out)
    for given in inputs:
        if not given:
            continue
        i, in_id = Path(given).resolve(), _identity(Path(given))
        if o == i or (out_id is not None and out_id == in_id):
            raise DataError(f"OUT {out} is the input {given}; write to another folder")
        inside_input = i in o.parents or (in_id is not None and in_id in out_above)
        holds_input = o in i.parents or (out_id is not None and out_id in _above(Path(given)))
        if inside_input or holds_input:
            inner, outer = (out, given) if inside_input else (given, out)
            raise DataError(f"{inner} lies inside {outer}: OUT and the input must be separate "
                            f"folders; choose another {flag}")


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:  # a hard link or another mount of the same file
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_out_file(out: str, inputs: Iterable[str | os.PathLike | None],
                   ours: Callable[[Path], bool], what: str, flag: str = "--out") -> None:
    """The policy for an output that is one file: refuse a folder, an input (or a file inside
    or holding one) and an existing file unless `ours(path)` says this command wrote it (`what`
    names such a file in the error): only such a file is replaced."""
    path = Path(out)
    if path.is_dir():
        raise DataError(f"{flag} {out} is a folder; {flag} names the file to write, "
                        f"e.g. {flag} {path / 'metrics.json'}")
    for given in inputs:
        if given and _same(path, given):
            raise DataError(f"{flag} {out} is the input {given}: the output would replace it; "
                            f"choose another {flag}")
    check_apart(path, inputs, flag=flag)
    if os.path.lexists(path) and not ours(path):
        raise DataError(f"{flag} {out} already exists and is not {what}, so it is not "
                        f"replaced; choose another {flag}")


def _entries(out: Path) -> list[Path]:
    return sorted(out.iterdir()) if out.is_dir() else []


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the folder {path} ({err.strerror}); choose an OUT on a "
                        "writable disk") from err


class Output:
    """A folder being written: `target` is OUT itself (new, or resumed) or a temporary sibling
    that `commit` swaps in. `kind` names what it holds (vqz, vqz-lmdb, tiff, lmdb)."""

    def __init__(self, out: Path, target: Path, kind: str, previous: dict | None,
                 created: bool = False):
        self.out, self.target, self.kind = out, target, kind
        self.previous = previous  # the manifest OUT held before (resume), else None
        self.created = created  # OUT did not exist before this run

    @property
    def replacing(self) -> bool:
        return self.target != self.out

    @classmethod
    def open(cls, out: str | os.PathLike, kind: str, *, inputs: Iterable = (),
             overwrite: bool = False, resume: bool = False,
             ours: Callable[[Path], bool] = lambda p: False, fields: dict | None = None,
             rerun: str = "--overwrite",
             resumable: Callable[[dict], None] = lambda manifest: None) -> Output:
        """Check OUT against the policy and prepare it; `ours(entry)` says whether a top-level
        entry of an earlier output is one this kind writes (anything else is never deleted);
        `resumable(manifest)` raises when an OUT to resume was written with other settings.
        `fields` go into the incomplete manifest written at once into a new or resumed OUT."""
        out = Path(os.path.realpath(out)) if Path(out).is_symlink() else Path(out)
        if resume and overwrite:
            raise DataError("--resume and --overwrite contradict each other; pass one of them")
        if out.exists() and not out.is_dir():
            raise DataError(f"OUT {out} is a file; OUT must be a folder")
        check_apart(out, inputs)
        entries = _entries(out)
        if not entries:
            if resume:
                raise DataError(f"OUT {out} holds nothing to resume; run without --resume")
            created = not out.exists()
            _mkdir(out)
            return cls._start(out, out, kind, None, fields, created)
        found = read_manifest(out, fix="it was not written by vqae; choose another OUT")
        if not (resume or overwrite):
            again = "--resume to complete it, " if rerun == "--resume" else ""
            raise DataError(f"OUT {out} already exists and is not empty; pass {again}"
                            "--overwrite to replace it or choose another OUT")
        others = [p.name for p in entries if p.name != MANIFEST and not ours(p)]
        if others:
            raise DataError(f"OUT {out} holds files that this command does not write "
                            f"({', '.join(others[:3])}); --overwrite and --resume never delete "
                            "or mix with other files: choose an empty or new OUT")
        if found is not None and not written_by_vqae(found):
            raise DataError(f"OUT {out} has a {MANIFEST} that vqae did not write; choose "
                            "another OUT")
        if overwrite and found is None:
            raise DataError(f"OUT {out} has no {MANIFEST} from vqae, so nothing proves that "
                            "vqae wrote it; --overwrite replaces only vqae's outputs: delete "
                            "it yourself or choose another OUT")
        held = None if found is None else output_kind(found, out)
        if held is not None and held != kind:
            raise DataError(f"OUT {out} holds another kind of output ({held}; this command "
                            f"writes {kind}): it may be your data; choose another OUT")
        if resume:
            resumable(found or {})
            return cls._start(out, out, kind, found or {}, fields)
        remove_leftovers(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        os.chmod(tmp, stat.S_IMODE(os.stat(out).st_mode))  # mkdtemp's 0700 would hide it
        return cls._start(out, tmp, kind, None, fields)

    @classmethod
    def _start(cls, out: Path, target: Path, kind: str, previous: dict | None,
               fields: dict | None, created: bool = False) -> Output:
        output = cls(out, target, kind, previous, created)
        output.mark(fields or {}, complete=False)
        return output

    def mark(self, fields: dict, complete: bool) -> None:
        try:
            write_manifest(self.target, {"kind": self.kind, **fields, "complete": complete})
        except OSError as err:
            again = "--resume" if self.previous is not None else "the same command"
            raise DataError(f"cannot write {self.target / MANIFEST} ({err.strerror}) in OUT "
                            f"{self.out}: is its disk full or read-only? Free space or make it "
                            f"writable, then run {again} again") from err

    def commit(self, fields: dict) -> None:
        """Mark the output complete and, when replacing, swap it in for the old OUT."""
        self.mark(fields, complete=True)
        if self.replacing:
            swap_in(self.target, self.out)

    def abort(self, written: int | None = None) -> None:
        """After a failure or a stop: a replacement is removed (OUT stays as it was), so is an
        OUT this run created and wrote nothing into (`written` == 0); otherwise OUT keeps what
        was written, marked incomplete by the caller."""
        if self.replacing or (self.created and written == 0):
            shutil.rmtree(self.target, ignore_errors=True)


def remove_leftovers(out: Path) -> None:
    """Temporary folders that an earlier replacement of OUT left when it was killed (SIGKILL,
    a power cut): mkdtemp's names beside OUT, `.<OUT>.<8 characters>.tmp` or `.old`."""
    ours = re.compile(rf"\.{re.escape(out.name)}\.[a-z0-9_]{{8}}\.(tmp|old)")
    for entry in out.parent.iterdir():
        if ours.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(new: Path, out: Path) -> None:
    """Put the folder `new` at `out` and delete the old `out`: an atomic exchange where
    possible, else two renames through a fresh temporary name."""
    if _exchange(new, out):
        shutil.rmtree(new)  # now the old OUT
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rename(out, trash / "old")
    os.rename(new, out)
    shutil.rmtree(trash)
