"""Save and load fitted estimators in a format that runs no code when loading.

.. warning::

   ``pickle`` and ``joblib`` files can run arbitrary code when they are loaded: unpickling a
   file from an untrusted source is unsafe. They are fine for your own models on your own
   machines (and round-trip every estimator exactly); to share models, use :func:`save` and
   :func:`load`.

The file is a zip archive: ``params.json`` holds the format name and version, the class name,
the constructor parameters and the fitted attributes as tagged JSON, in which arrays and
tensors are references into ``tensors.safetensors`` (``tensors.pt``, read with
``torch.load(weights_only=True)``, when safetensors is not installed).

Loading never unpickles and never calls anything the file names. Estimators (top level, or
nested like a learned estimator's ``init_estimator_``) must be classes exported by
:mod:`sklearn_unfold`; torch modules, linear operators and signal priors must subclass an
allowed base and be defined in ``sklearn_unfold`` or ``torch.nn``; functions must be the
denoisers of :mod:`sklearn_unfold.denoisers`. Objects are rebuilt from their stored
attributes without calling their constructors, so a learned network round-trips exactly
(even one a ``KeyboardInterrupt`` left part-grown). :func:`save` refuses, with a
``TypeError`` naming it, any other attribute (a user-defined ``signal_prior`` object, say).

Tensors record their device; :func:`load` puts them back there when it exists and on the CPU
otherwise (with a warning), so a GPU-trained model predicts on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
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
_PARAMS, _SAFETENSORS, _TORCH = "params.json", "tensors.safetensors", "tensors.pt"
_TAG = "__type__"

__all__ = ["FORMAT_VERSION", "load", "save"]

PathOrFile = str | os.PathLike | IO[bytes]


def _estimator_classes() -> dict[str, type]:
    """The classes :func:`load` may instantiate at the top level: the exported estimators."""
    import sklearn_unfold

    found = {name: getattr(sklearn_unfold, name, None) for name in sklearn_unfold.__all__}
    return {k: v for k, v in found.items() if isinstance(v, type) and issubclass(v, BaseEstimator)}


def _allowed_object_bases() -> tuple[type, ...]:
    from .datasets import BernoulliGaussianPrior
    from .operators import LinearOperator
    from .operators.ensembles import OperatorEnsemble

    return (nn.Module, LinearOperator, OperatorEnsemble, BernoulliGaussianPrior)


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
        with contextlib.suppress(ImportError):
            module = importlib.import_module(module_name)  # the package's own code
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    defined_there = (isinstance(obj, type) and obj.__module__ == module_name
                     and obj.__qualname__ == qualname)
    base = nn.Module if module_name.startswith("torch.nn.") else _allowed_object_bases()
    if not (defined_there and issubclass(obj, base)):
        raise ValueError(f"refusing to load an object of class {ref!r}: it is not a torch module, "
                         "linear operator or signal prior of sklearn_unfold / torch.nn.")
    return obj


def _function_ref(fn) -> str | None:
    from . import denoisers

    name = getattr(fn, "__name__", "")
    return f"sklearn_unfold.denoisers:{name}" if getattr(denoisers, name, None) is fn else None


def _resolve_function(ref: str):
    from . import denoisers

    module_name, _, name = str(ref).partition(":")
    fn = getattr(denoisers, name, None) if module_name == "sklearn_unfold.denoisers" else None
    if fn is None or not callable(fn) or isinstance(fn, type) or name.startswith("_"):
        raise ValueError(f"refusing to load function {ref!r}: only the denoisers of "
                         "sklearn_unfold.denoisers can be loaded.")
    return fn


class _Encoder:
    """Turn an object graph into tagged JSON plus a flat ``{key: tensor}`` dict."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._memo: dict[int, dict] = {}

    def _store(self, flat: torch.Tensor) -> str:
        self.tensors[key := f"t{len(self.tensors)}"] = flat
        return key

    def encode(self, obj, where: str):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and not isinstance(obj, np.generic):
            return int(obj)
        if isinstance(obj, float) and not isinstance(obj, np.generic):
            return obj if math.isfinite(obj) else {_TAG: "float", "value": repr(obj)}
        if isinstance(obj, np.generic):  # (the array branch refuses non-numeric dtypes)
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
        perm = _dense_permutation(t.shape, t.stride())
        flat = t.detach().permute(perm).to("cpu").contiguous().clone()
        ref = {_TAG: "parameter" if isinstance(t, nn.Parameter) else "tensor",
               "key": self._store(flat), "device": str(t.device),
               "requires_grad": bool(t.requires_grad), "memo": len(self._memo)}
        if perm != list(range(t.ndim)):
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
        stored = arr.transpose(perm).copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        raw = torch.from_numpy(np.frombuffer(stored.tobytes(), dtype=np.uint8).copy())
        ref = {_TAG: "ndarray", "key": self._store(raw), "dtype": arr.dtype.str,
               "shape": list(stored.shape)}
        if perm != list(range(arr.ndim)):
            ref["permutation"] = perm
        return ref


def _dense_permutation(shape, strides) -> list[int]:
    """The axis order in which an array is C-contiguous (``[1, 0]`` for a transpose), else
    the identity: a transposed view (an SVD's ``V``) keeps its layout, and its round-off."""
    identity = list(range(len(shape)))
    if len(shape) < 2 or 0 in shape:
        return identity
    perm = sorted(identity, key=lambda i: (-strides[i], i))
    expected = 1
    for axis in reversed(perm):
        if shape[axis] != 1 and strides[axis] != expected:
            return identity
        expected *= shape[axis]
    return perm


class _Decoder:
    """Rebuild the object graph from tagged JSON and the tensors; refuse unknown classes."""

    def __init__(self, tensors: dict[str, torch.Tensor], map_location) -> None:
        self.tensors, self._memo, self.remapped = tensors, {}, set()
        self.map_location = None if map_location is None else torch.device(map_location)

    def device(self, name: str) -> torch.device:
        if self.map_location is not None:
            return self.map_location
        dev = torch.device(name)
        usable = dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available()
                                       and (dev.index or 0) < torch.cuda.device_count())
        if not usable:
            self.remapped.add(name)
        return dev if usable else torch.device("cpu")

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
            return self.decode(obj["array"]).reshape(())[()].astype(np.dtype(obj["dtype"]))
        if tag == "torch.dtype" and isinstance(getattr(torch, str(obj["name"]), None),
                                               torch.dtype):
            return getattr(torch, str(obj["name"]))
        if tag == "torch.device":
            return torch.device(str(obj["name"]))
        if tag == "RandomState":  # set_state takes the arrays and numbers get_state gave
            (rs := np.random.RandomState()).set_state(tuple(self.decode(obj["state"])))
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
        try:
            est = classes[name](**self.decode(obj["params"]))
        except TypeError as exc:
            raise ValueError(f"the stored parameters do not fit {name}: {exc}") from None
        vars(est).update(self.decode(obj["state"]))
        return est

    def _object(self, obj: dict):
        cls = _resolve_class(obj["class"])
        state, new = self.decode(obj["state"]), cls.__new__(cls)
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
    if sorted(int(p) for p in perm) != list(range(len(perm))):
        raise ValueError(f"invalid axis permutation {perm}")
    return np.argsort([int(p) for p in perm]).tolist()


try:
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # pragma: no cover - safetensors is optional
    _SafetensorError = RuntimeError


def _have_safetensors() -> bool:
    return importlib.util.find_spec("safetensors") is not None


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
    if isinstance(out, dict) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return out
    raise ValueError(f"{_TORCH} does not hold a dict of tensors")


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
    from . import __version__

    if not isinstance(estimator, BaseEstimator):
        raise TypeError(f"save expects an sklearn_unfold estimator; got {type(estimator)!r}.")
    body = (enc := _Encoder()).estimator(estimator, "estimator")
    member, blob = _tensors_to_bytes(enc.tensors)

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
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
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
        Device for every tensor. ``None``: the one each tensor was saved from when it exists
        here, else the CPU, with a ``UserWarning`` (a GPU model loads on a CPU-only machine).

    Returns
    -------
    estimator
        Equal to the saved one: same parameters, same fitted attributes, identical predictions.

    Raises
    ------
    ValueError
        If the file is damaged, truncated or foreign, has a newer format version, or names
        a class or function that may not be loaded.
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
    if sorted(tensors) != sorted(keys := header.get("tensor_keys", [])):
        raise ValueError(f"{name!s} is damaged: its tensor file holds {len(tensors)} tensors, "
                         f"its params.json lists {len(keys)}.")
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
