"""Save and load fitted estimators in a format that runs no code when loading.

.. warning::

   ``pickle`` and ``joblib`` files can run arbitrary code when they are loaded: unpickling a
   file from an untrusted source is unsafe. They are fine for your own models on your own
   machines (and round-trip every estimator exactly); to share models, use :func:`save` and
   :func:`load`.

The file written by :func:`save` is a zip archive with two members:

* ``params.json``: the format name and version, the estimator's class name, its constructor
  parameters and its fitted attributes as tagged JSON (numbers, strings, lists, dicts, tuples);
  arrays and tensors appear there as references into
* ``tensors.safetensors``: every array and tensor, in the `safetensors
  <https://huggingface.co/docs/safetensors>`_ format (``tensors.pt``, read with
  ``torch.load(weights_only=True)``, when safetensors is not installed).

Loading never unpickles and never calls anything the file names: the top-level class and any
nested estimator (e.g. a learned estimator's ``init_estimator_``) must be one of the classes
exported by :mod:`sklearn_unfold`; torch modules (the trained network), linear operators and
signal priors must be subclasses of an allowed base class defined in ``sklearn_unfold`` or
``torch.nn``; functions (the denoisers) must be members of :mod:`sklearn_unfold.denoisers`.
Such objects are rebuilt from their stored attributes without calling their constructors,
so a learned estimator round-trips exactly, including a network that a ``KeyboardInterrupt``
left part-grown. An attribute of any other type (a user-defined ``signal_prior`` object,
say) is refused by :func:`save` with a ``TypeError`` naming it; pickle such models instead.

Tensors are stored on the CPU with the device they were on. :func:`load` puts them back there
when that device exists, and on the CPU otherwise (with a warning), so a model trained on a GPU
loads and predicts on a CPU-only machine; ``map_location`` forces a device.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import pickle
import sys
import warnings
import zipfile
import zlib
from collections import OrderedDict
from typing import IO, Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

FORMAT_NAME = "sklearn-unfold-model"
FORMAT_VERSION = 1
_PARAMS = "params.json"
_SAFETENSORS = "tensors.safetensors"
_TORCH = "tensors.pt"
_TAG = "__type__"

__all__ = ["FORMAT_VERSION", "load", "save"]

PathOrFile = str | os.PathLike | IO[bytes]


# ============================================================================ what may be loaded
def _estimator_classes() -> dict[str, type]:
    """The classes :func:`load` may instantiate at the top level: the exported estimators."""
    import sklearn_unfold

    out = {}
    for name in sklearn_unfold.__all__:
        obj = getattr(sklearn_unfold, name, None)
        if isinstance(obj, type) and issubclass(obj, BaseEstimator):
            out[name] = obj
    return out


def _allowed_object_bases() -> tuple[type, ...]:
    from .datasets import BernoulliGaussianPrior
    from .operators import LinearOperator

    return (nn.Module, LinearOperator, BernoulliGaussianPrior)


def _class_ref(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve_class(ref: str) -> type:
    """Find an allowed class from ``"module:QualName"`` without running anything from the file."""
    module_name, _, qualname = str(ref).partition(":")
    ok_module = module_name == "sklearn_unfold" or module_name.startswith(
        ("sklearn_unfold.", "torch.nn."))
    if not ok_module or not qualname or "<" in qualname:
        raise ValueError(f"refusing to load an object of class {ref!r}: only classes defined in "
                         "sklearn_unfold or torch.nn can be loaded.")
    module = sys.modules.get(module_name)
    if module is None and module_name.startswith("sklearn_unfold."):
        try:
            module = importlib.import_module(module_name)  # the package's own code
        except ImportError:
            module = None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    torch_ok = isinstance(obj, type) and module_name.startswith("torch.nn.") and issubclass(
        obj, nn.Module)
    own_ok = isinstance(obj, type) and module_name.startswith("sklearn_unfold") and issubclass(
        obj, _allowed_object_bases())
    if not (torch_ok or own_ok):
        raise ValueError(f"refusing to load an object of class {ref!r}: it is not a torch module, "
                         "linear operator or signal prior of sklearn_unfold / torch.nn.")
    return obj


def _function_ref(fn) -> str | None:
    from . import denoisers

    name = getattr(fn, "__name__", None)
    if name and getattr(denoisers, name, None) is fn:
        return f"sklearn_unfold.denoisers:{name}"
    return None


def _resolve_function(ref: str):
    from . import denoisers

    module_name, _, name = str(ref).partition(":")
    fn = getattr(denoisers, name, None) if module_name == "sklearn_unfold.denoisers" else None
    if fn is None or not callable(fn) or isinstance(fn, type) or name.startswith("_"):
        raise ValueError(f"refusing to load function {ref!r}: only the denoisers of "
                         "sklearn_unfold.denoisers can be loaded.")
    return fn


# ============================================================================ encoding
class _Encoder:
    """Turn an object graph into tagged JSON plus a flat ``{key: tensor}`` dict."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._memo: dict[int, dict] = {}

    def _store(self, flat: torch.Tensor) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = flat
        return key

    def encode(self, obj, where: str):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and not isinstance(obj, np.generic):
            return int(obj)
        if isinstance(obj, float) and not isinstance(obj, np.generic):
            return obj if math.isfinite(obj) else {_TAG: "float", "value": repr(obj)}
        if isinstance(obj, np.generic):
            if obj.dtype.kind not in "biufc":
                raise TypeError(f"{where}: cannot store a numpy scalar of dtype {obj.dtype}.")
            return {_TAG: "npscalar", "dtype": obj.dtype.str,
                    "array": self.encode(np.asarray(obj), where)}
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj, where)
        if isinstance(obj, np.ndarray):
            return self._ndarray(obj, where)
        if isinstance(obj, torch.dtype):
            return {_TAG: "torch.dtype", "name": str(obj).removeprefix("torch.")}
        if isinstance(obj, torch.device):
            return {_TAG: "torch.device", "name": str(obj)}
        if isinstance(obj, np.random.RandomState):
            kind, keys, pos, has_gauss, cached = obj.get_state()
            return {_TAG: "RandomState", "state": self.encode(
                [kind, keys, int(pos), int(has_gauss), float(cached)], where)}
        if isinstance(obj, tuple):
            return {_TAG: "tuple", "items": [self.encode(v, f"{where}[{i}]")
                                             for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, (set, frozenset)):
            return {_TAG: "set", "items": [self.encode(v, where) for v in sorted(obj, key=repr)]}
        if isinstance(obj, dict):
            return self._dict(obj, where)
        if _function_ref(obj) is not None:
            return {_TAG: "function", "ref": _function_ref(obj)}
        if isinstance(obj, BaseEstimator):
            return self.estimator(obj, where)
        if isinstance(obj, _allowed_object_bases()) and type(obj).__module__.startswith(
                ("sklearn_unfold", "torch.nn.")):
            return {_TAG: "object", "class": _class_ref(type(obj)),
                    "state": self._dict(vars(obj), where)}
        raise TypeError(
            f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which the safe "
            "format cannot store (it holds only numbers, strings, arrays, tensors and "
            "sklearn_unfold's own objects); use pickle/joblib for such a model, and only "
            "load those from trusted sources.")

    def _dict(self, obj: dict, where: str):
        items = [(k, self.encode(v, f"{where}[{k!r}]")) for k, v in obj.items()]
        plain = all(isinstance(k, str) for k, _ in items) and _TAG not in obj
        if plain and type(obj) is dict:
            return dict(items)
        return {_TAG: "odict" if isinstance(obj, OrderedDict) else "dict",
                "items": [[self.encode(k, where), v] for k, v in items]}

    def estimator(self, est: BaseEstimator, where: str) -> dict:
        name = type(est).__name__
        if _estimator_classes().get(name) is not type(est):
            raise TypeError(f"{where} is a {type(est).__qualname__}, not one of the estimators "
                            f"exported by sklearn_unfold ({sorted(_estimator_classes())}).")
        params = est.get_params(deep=False)
        state = {k: v for k, v in vars(est).items() if k not in params}
        return {_TAG: "estimator", "class": name,
                "params": self._dict(params, f"{where}.params"),
                "state": self._dict(state, where)}

    def _tensor(self, t: torch.Tensor, where: str) -> dict:
        if id(t) in self._memo:  # the same tensor twice (tied weights): one copy, same object
            return self._memo[id(t)]
        if t.is_complex() or t.is_sparse or t.layout != torch.strided:
            raise TypeError(f"{where}: cannot store a {t.layout} {t.dtype} tensor.")
        data = t.detach()
        perm = _dense_permutation(data.shape, data.stride())
        stored = data.permute(perm) if perm is not None else data
        flat = stored.to("cpu").contiguous().clone()
        ref = {_TAG: "parameter" if isinstance(t, nn.Parameter) else "tensor",
               "key": self._store(flat), "device": str(t.device),
               "requires_grad": bool(t.requires_grad), "memo": len(self._memo)}
        if perm is not None and perm != list(range(t.ndim)):
            ref["permutation"] = perm
        self._memo[id(t)] = ref
        return ref

    def _ndarray(self, arr: np.ndarray, where: str) -> dict:
        if arr.dtype.kind in "OUS" and all(isinstance(v, str) for v in arr.ravel().tolist()):
            return {_TAG: "ndarray_str", "dtype": arr.dtype.str, "shape": list(arr.shape),
                    "values": arr.ravel().tolist()}
        if arr.dtype.kind not in "biufc" or arr.dtype.fields is not None:
            raise TypeError(f"{where}: cannot store an array of dtype {arr.dtype}.")
        perm = _dense_permutation(arr.shape, [s // max(arr.itemsize, 1) for s in arr.strides])
        stored = np.ascontiguousarray(arr.transpose(perm) if perm is not None else arr)
        raw = torch.from_numpy(np.frombuffer(stored.tobytes(), dtype=np.uint8).copy())
        ref = {_TAG: "ndarray", "key": self._store(raw), "dtype": arr.dtype.str,
               "shape": list(stored.shape)}
        if perm is not None and perm != list(range(arr.ndim)):
            ref["permutation"] = perm
        return ref


def _dense_permutation(shape, strides) -> list[int] | None:
    """The axis order in which an array is C-contiguous (``[1, 0]`` for a transpose), or None."""
    if len(shape) < 2 or 0 in shape:
        return None
    perm = sorted(range(len(shape)), key=lambda i: (-strides[i], i))
    expected = 1
    for axis in reversed(perm):
        if shape[axis] != 1 and strides[axis] != expected:
            return None
        expected *= shape[axis]
    return perm


# ============================================================================ decoding
class _Decoder:
    def __init__(self, tensors: dict[str, torch.Tensor], map_location) -> None:
        self.tensors = tensors
        self.map_location = None if map_location is None else torch.device(map_location)
        self._memo: dict[int, torch.Tensor] = {}
        self.remapped: set[str] = set()

    def device(self, name: str) -> torch.device:
        if self.map_location is not None:
            return self.map_location
        dev = torch.device(name)
        if dev.type == "cpu":
            return dev
        usable = (dev.type == "cuda" and torch.cuda.is_available()
                  and (dev.index or 0) < torch.cuda.device_count())
        if not usable and dev.type != "cuda":
            try:
                torch.empty(0, device=dev)
                usable = True
            except (RuntimeError, AssertionError):
                usable = False
        if not usable:
            self.remapped.add(name)
            return torch.device("cpu")
        return dev

    def decode(self, obj):
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, list):
            return [self.decode(v) for v in obj]
        if not isinstance(obj, dict):
            raise ValueError(f"unexpected JSON value {obj!r}")
        tag = obj.get(_TAG)
        if tag is None:
            return {k: self.decode(v) for k, v in obj.items()}
        if tag == "float":
            return float(obj["value"])
        if tag == "tuple":
            return tuple(self.decode(v) for v in obj["items"])
        if tag == "set":
            return {self.decode(v) for v in obj["items"]}
        if tag in ("dict", "odict"):
            pairs = [(self.decode(k), self.decode(v)) for k, v in obj["items"]]
            return OrderedDict(pairs) if tag == "odict" else dict(pairs)
        if tag in ("tensor", "parameter"):
            return self._tensor(obj)
        if tag == "ndarray":
            return self._ndarray(obj)
        if tag == "ndarray_str":
            return np.array(obj["values"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
        if tag == "npscalar":
            return self.decode(obj["array"])[()].astype(np.dtype(obj["dtype"]))
        if tag == "torch.dtype":
            dtype = getattr(torch, str(obj["name"]), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown torch dtype {obj['name']!r}")
            return dtype
        if tag == "torch.device":
            return torch.device(str(obj["name"]))
        if tag == "RandomState":
            rs = np.random.RandomState()
            rs.set_state(tuple(self.decode(obj["state"])))
            return rs
        if tag == "function":
            return _resolve_function(obj["ref"])
        if tag == "estimator":
            return self.estimator(obj)
        if tag == "object":
            return self._object(obj)
        raise ValueError(f"unknown entry type {tag!r}")

    def estimator(self, obj: dict) -> BaseEstimator:
        classes = _estimator_classes()
        name = obj.get("class")
        if name not in classes:
            raise ValueError(f"refusing to load an estimator of class {name!r}: only the "
                             f"estimators exported by sklearn_unfold can be loaded "
                             f"({sorted(classes)}).")
        params = self.decode(obj["params"])
        try:
            est = classes[name](**params)
        except TypeError as exc:
            raise ValueError(f"the stored parameters do not fit {name}: {exc}") from None
        vars(est).update(self.decode(obj["state"]))
        return est

    def _object(self, obj: dict):
        cls = _resolve_class(obj["class"])
        state = self.decode(obj["state"])
        new = cls.__new__(cls)
        if isinstance(new, nn.Module):
            nn.Module.__setstate__(new, state)
        else:
            vars(new).update(state)
        return new

    def _tensor(self, ref: dict) -> torch.Tensor:
        memo = int(ref["memo"])
        if memo in self._memo:
            return self._memo[memo]
        t = self.tensors[ref["key"]]
        if "permutation" in ref:
            t = t.permute(_inverse(ref["permutation"]))
        t = t.to(self.device(str(ref["device"])))
        if ref[_TAG] == "parameter":
            t = nn.Parameter(t, requires_grad=bool(ref["requires_grad"]))
        else:
            t.requires_grad_(bool(ref["requires_grad"]))
        self._memo[memo] = t
        return t

    def _ndarray(self, ref: dict) -> np.ndarray:
        dtype = np.dtype(ref["dtype"])
        if dtype.kind not in "biufc":
            raise ValueError(f"unsupported array dtype {dtype}")
        raw = self.tensors[ref["key"]].numpy()
        shape = tuple(int(s) for s in ref["shape"])
        if raw.dtype != np.uint8 or raw.size != dtype.itemsize * math.prod(shape):
            raise ValueError(f"damaged: array {ref['key']} holds {raw.size} bytes, not the "
                             f"{dtype.itemsize * math.prod(shape)} of a {dtype} array {shape}")
        arr = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape).copy()
        return arr.transpose(_inverse(ref["permutation"])) if "permutation" in ref else arr


def _inverse(perm) -> list[int]:
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(len(perm))):
        raise ValueError(f"invalid axis permutation {perm}")
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


# ============================================================================ tensor files
try:
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # pragma: no cover - safetensors is optional
    class _SafetensorError(Exception):  # noqa: N818 - stands in for safetensors' class
        """Never raised: safetensors is not installed."""


def _have_safetensors() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def _tensors_to_bytes(tensors: dict[str, torch.Tensor]) -> tuple[str, bytes]:
    if _have_safetensors():
        from safetensors.torch import save as st_save

        return _SAFETENSORS, st_save(tensors)
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return _TORCH, buf.getvalue()


def _tensors_from_bytes(member: str, data: bytes) -> dict[str, torch.Tensor]:
    if member == _SAFETENSORS:
        if not _have_safetensors():
            raise ImportError("this model file stores its tensors with safetensors; "
                              "install it (pip install safetensors) to load it.")
        from safetensors.torch import load as st_load

        return st_load(data)
    out = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(out, dict) or not all(isinstance(v, torch.Tensor) for v in out.values()):
        raise ValueError(f"{_TORCH} does not hold a dict of tensors")
    return out


# ============================================================================ public API
def save(estimator: BaseEstimator, path: PathOrFile) -> None:
    """Write ``estimator`` (fitted or not) to ``path`` in the safe format.

    Parameters
    ----------
    estimator : estimator
        One of the estimators exported by :mod:`sklearn_unfold`.
    path : str, path-like or binary file object
        Where to write; a file is written to a temporary name and renamed, so an interrupted
        save never leaves a half-written model at ``path``.

    Raises
    ------
    TypeError
        If ``estimator`` is not an sklearn_unfold estimator, or holds a parameter or attribute
        the format cannot store (the message names it).
    """
    enc = _Encoder()
    body = enc.estimator(estimator, "estimator") if isinstance(estimator, BaseEstimator) else None
    if body is None:
        raise TypeError(f"save expects an sklearn_unfold estimator; got {type(estimator)!r}.")
    member, blob = _tensors_to_bytes(enc.tensors)
    from . import __version__

    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "sklearn_unfold_version": __version__, "class": type(estimator).__name__,
              "tensor_file": member, "tensor_keys": sorted(enc.tensors), "estimator": body}
    text = json.dumps(header, indent=1, allow_nan=False, sort_keys=False)

    def write(fileobj) -> None:
        with zipfile.ZipFile(fileobj, "w") as zf:
            zf.writestr(_PARAMS, text, compress_type=zipfile.ZIP_DEFLATED)
            zf.writestr(member, blob, compress_type=zipfile.ZIP_STORED)

    if hasattr(path, "write"):
        write(path)
        return
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: PathOrFile, *, map_location=None) -> BaseEstimator:
    """Read an estimator written by :func:`save`; runs no code from the file.

    Parameters
    ----------
    path : str, path-like or binary file object
    map_location : str, torch.device or None, default=None
        Device for every tensor. ``None``: the device each tensor was saved from when it
        exists here, else the CPU (a model trained on a GPU loads on a CPU-only machine, with
        a ``UserWarning``).

    Returns
    -------
    estimator
        Equal to the saved one: same parameters, same fitted attributes, identical predictions.

    Raises
    ------
    ValueError
        If the file is damaged or truncated, is not in this format, has a newer format
        version, or names a class that is not an sklearn_unfold estimator (or an allowed
        module / operator / prior class).
    """
    name = getattr(path, "name", path)
    try:
        with zipfile.ZipFile(path) as zf:
            header = json.loads(zf.read(_PARAMS).decode("utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
                raise ValueError("params.json does not describe an sklearn-unfold model")
            version = header.get("format_version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise ValueError(f"format version {version!r} is newer than this sklearn_unfold "
                                 f"reads ({FORMAT_VERSION}); upgrade sklearn_unfold")
            member = header["tensor_file"]
            if member not in (_SAFETENSORS, _TORCH):
                raise ValueError(f"unknown tensor file {member!r}")
            tensors = _tensors_from_bytes(member, zf.read(member))
    except (FileNotFoundError, IsADirectoryError, PermissionError, ImportError):
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, KeyError, EOFError, OSError,
            ValueError, RuntimeError, pickle.UnpicklingError, _SafetensorError) as exc:
        raise ValueError(f"{name!s} is not a readable sklearn-unfold model file (damaged, "
                         f"truncated or another format): {exc}") from exc
    if sorted(tensors) != sorted(header.get("tensor_keys", [])):
        raise ValueError(f"{name!s} is damaged: its tensor file holds {len(tensors)} tensors, "
                         f"its params.json lists {len(header.get('tensor_keys', []))}.")
    body = header.get("estimator")
    if not isinstance(body, dict) or body.get(_TAG) != "estimator":
        raise ValueError(f"{name!s} is damaged: params.json has no estimator entry.")
    dec = _Decoder(tensors, map_location)
    try:
        est = dec.estimator(body)
    except ValueError as exc:  # a refused class or function, or damaged content
        raise ValueError(f"{name!s}: {exc}") from exc
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{name!s} is damaged: its params.json could not be decoded "
                         f"({type(exc).__name__}: {exc}).") from exc
    if dec.remapped:
        warnings.warn(f"{name!s}: tensors saved on {sorted(dec.remapped)} were loaded on the "
                      "CPU, as that device is not available here.", UserWarning, stacklevel=2)
    return est
