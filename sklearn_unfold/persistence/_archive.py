"""The container: a zip archive of ``params.json`` and ``tensors.safetensors``, read with bounds.

Nothing here trusts a size the file declares: every member is read incrementally up to a bound
derived from the bytes actually present (its compressed size times :data:`MAX_EXPANSION`), the
safetensors header is checked entry by entry (dtype, shape, offsets: in the data, contiguous and
non-overlapping) before any tensor is built, and writing goes through a private temporary file
created next to the target and renamed onto it.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable
from typing import IO

import torch

PARAMS, TENSORS = "params.json", "tensors.safetensors"
#: Tensor members that hold pickles (``torch.save``); never read.
PICKLE_MEMBERS = ("tensors.pt", "tensors.pth", "tensors.bin", "data.pkl")
#: A compressed member may expand to at most this many times its compressed size ...
MAX_EXPANSION = 200
#: ... or to this many bytes, whichever is larger (tiny members compress by large factors).
MIN_EXPANSION_BOUND = 1 << 20
#: The description of a model is small: its arrays are in the tensor member.
MAX_PARAMS_BYTES = 64 << 20
#: The safetensors header (the JSON table of tensors).
MAX_SAFETENSORS_HEADER = 16 << 20
MAX_NDIM = 32
_CHUNK = 1 << 20

#: safetensors dtype codes this format writes, with their item sizes.
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                      "I8": 1, "U8": 1, "BOOL": 1}


def check_shape(shape, what: str) -> tuple[int, ...]:
    """A list of non-negative ints of at most :data:`MAX_NDIM` entries, else ValueError."""
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise ValueError(f"{what}: invalid shape {str(shape)[:200]} (a list of at most {MAX_NDIM} "
                         "non-negative integers is expected)")
    return tuple(shape)


def read_members(zf: zipfile.ZipFile) -> tuple[bytes, bytes]:
    """The bytes of ``params.json`` and ``tensors.safetensors``; refuse anything else."""
    names = zf.namelist()
    if len(set(names)) != len(names):
        raise ValueError(f"the archive lists a member twice ({sorted(names)})")
    pickled = [n for n in names if n in PICKLE_MEMBERS or n.endswith((".pt", ".pth", ".pkl"))]
    if pickled:
        raise ValueError(f"the archive holds a torch-pickle tensor member {pickled[0]!r}; pickles can "
                         "run code when they are read, so this format refuses them (its tensors "
                         f"are in {TENSORS!r})")
    if sorted(names) != sorted([PARAMS, TENSORS]):
        raise ValueError(f"the archive holds {sorted(names)}, not [{PARAMS!r}, {TENSORS!r}]")
    params = _read_bounded(zf, zf.getinfo(PARAMS), MAX_PARAMS_BYTES)
    tensors = _read_bounded(zf, zf.getinfo(TENSORS), None)
    return params, tensors


def _read_bounded(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int | None) -> bytes:
    """Read a member in chunks, stopping as soon as it passes its bound."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"member {info.filename!r} uses compression method {info.compress_type}; "
                         "only stored and deflated members are read")
    bound = info.compress_size if info.compress_type == zipfile.ZIP_STORED else max(
        MIN_EXPANSION_BOUND, MAX_EXPANSION * info.compress_size)
    if limit is not None:
        bound = min(bound, limit)
    if info.file_size > bound:
        raise ValueError(f"member {info.filename!r} declares {info.file_size} bytes from "
                         f"{info.compress_size} compressed bytes, past the bound of {bound} bytes "
                         f"(expansion at most {MAX_EXPANSION}x)")
    chunks, total = [], 0
    with zf.open(info) as fh:
        while chunk := fh.read(_CHUNK):
            total += len(chunk)
            if total > bound:
                raise ValueError(f"member {info.filename!r} expands past {bound} bytes "
                                 f"(expansion at most {MAX_EXPANSION}x)")
            chunks.append(chunk)
    return b"".join(chunks)


def check_safetensors(data: bytes) -> dict:
    """Validate a safetensors buffer's header against the bytes present; return the header."""
    if len(data) < 8:
        raise ValueError(f"{TENSORS} is {len(data)} bytes long, shorter than its 8-byte header size")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(len(data) - 8, MAX_SAFETENSORS_HEADER):
        raise ValueError(f"{TENSORS} declares a {n}-byte header in a {len(data)}-byte member")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{TENSORS} has an unreadable header ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{TENSORS} has a header that is not a JSON object")
    body = len(data) - 8 - n
    spans = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(entry, dict) or sorted(entry) != ["data_offsets", "dtype", "shape"]:
            raise ValueError(f"{TENSORS}: tensor {key!r} is not described by dtype, shape and "
                             "data_offsets alone")
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{TENSORS}: tensor {key!r} has dtype {str(entry['dtype'])[:40]!r}, not "
                             f"one of {sorted(SAFETENSORS_DTYPES)}")
        shape = check_shape(entry["shape"], f"{TENSORS}: tensor {key!r}")
        offsets = entry["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= body):
            raise ValueError(f"{TENSORS}: tensor {key!r} has data offsets {str(offsets)[:80]} outside "
                             f"the {body} bytes of data")
        need = math.prod(shape) * SAFETENSORS_DTYPES[entry["dtype"]]
        if need != offsets[1] - offsets[0]:
            raise ValueError(f"{TENSORS}: tensor {key!r} declares shape {list(shape)[:8]} of "
                             f"{entry['dtype']} ({need} bytes) over {offsets[1] - offsets[0]} bytes")
        spans.append((offsets[0], offsets[1], key))
    end = 0
    for start, stop, key in sorted(spans):
        if start != end:
            raise ValueError(f"{TENSORS}: tensor {key!r} starts at byte {start}, not {end}: tensors "
                             "overlap (alias) or leave gaps")
        end = stop
    if end != body:
        raise ValueError(f"{TENSORS}: the tensors cover {end} of its {body} data bytes")
    return header


def tensors_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a validated safetensors buffer (each one a fresh, contiguous CPU tensor)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    check_safetensors(data)
    try:
        return st_load(data)
    except SafetensorError as exc:
        raise ValueError(f"{TENSORS} could not be read ({exc})") from None


def tensors_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save as st_save

    return st_save(tensors)


def write_archive(fileobj: IO[bytes], params_text: str, tensor_bytes: bytes) -> None:
    with zipfile.ZipFile(fileobj, "w") as zf:  # a fixed date: the same model, the same bytes
        for name, data, method in ((PARAMS, params_text, zipfile.ZIP_DEFLATED),
                                   (TENSORS, tensor_bytes, zipfile.ZIP_STORED)):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a fresh private temporary file in the target's folder, then rename it.

    ``mkstemp`` creates the file exclusively (``O_EXCL``, never through an existing name or
    symlink); ``os.replace`` swaps it in atomically and, when ``path`` is a symlink, replaces the
    link itself, never the file it points to.
    """
    target = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (best effort: not every platform opens folders)
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
