"""Tagged JSON for the values a model holds, plus a flat ``{key: tensor}`` dict for its arrays.

Plain JSON stands for itself; everything else is an object with a ``"__type__"`` tag. Arrays and
tensors are references into the tensor member. Decoding checks every field before it allocates
anything, bounds the nesting depth and rebuilds only what :mod:`._allowed` lists.

Complex values: a numpy array of dtype ``complex64``/``complex128`` is stored as its raw bytes like
every numpy array (format version 2). A complex torch tensor, which safetensors has no dtype for, is
stored as its real view (``torch.view_as_real``: a float tensor with a last axis of 2, real and
imaginary parts) with ``"complex": true`` on its entry, and a Python ``complex`` as a ``"complex"``
entry of two floats; a file holding either is written as format version
:data:`COMPLEX_VERSION`, which earlier readers refuse as newer than they read.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from . import _allowed
from ._archive import check_shape

TAG = "__type__"
#: The format version every file is at least; files without complex tensors or Python complex
#: numbers are written with it (byte for byte as before complex support).
BASE_VERSION = 2
#: The first format version with complex torch tensors and Python complex numbers.
COMPLEX_VERSION = 3
#: The first format version that holds denoiser modules (their settings and weights).
DENOISER_VERSION = 4
#: How deeply values may nest (an estimator inside an estimator counts a few levels).
MAX_DEPTH = 64
#: numpy dtypes an array may declare: booleans, integers, floats and complex numbers, no
#: sub-array, structured or object dtypes.
_NUMERIC_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|c(8|16))")
_PLAIN = (bool, int, float, str, type(None))


def numeric_dtype(text) -> np.dtype:
    if not isinstance(text, str) or not _NUMERIC_DTYPE.fullmatch(text):
        raise ValueError(f"refusing array dtype {str(text)[:80]!r}: only boolean, integer, float and "
                         "complex dtypes are stored (no sub-array, structured or object dtypes)")
    dtype = np.dtype(text)
    assert dtype.fields is None and dtype.subdtype is None and not dtype.hasobject
    return dtype


def fields(obj: dict, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Refuse a tagged entry with missing or unexpected fields (``strides``, say)."""
    keys = set(obj) - {TAG}
    missing, extra = set(required) - keys, keys - set(required) - set(optional)
    if missing or extra:
        raise ValueError(f"a {obj.get(TAG)!r} entry has fields {sorted(keys)}; expected "
                         f"{sorted(required)}" + (f" and optionally {sorted(optional)}" if optional else ""))


def dense_permutation(shape, strides) -> list[int]:
    """The axis order in which an array is C-contiguous (``[1, 0]`` for a transpose), else the
    identity: a transposed view (an SVD's ``V``) keeps its layout, and its round-off."""
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


def inverse_permutation(perm, ndim: int) -> list[int]:
    if not isinstance(perm, list) or sorted(p for p in perm if type(p) is int) != list(range(ndim)):
        raise ValueError(f"invalid axis order {str(perm)[:80]} for {ndim} axes")
    return np.argsort(perm).tolist()


class ValueEncoder:
    """Values to tagged JSON; subclasses add estimators and modules."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        #: The lowest format version that can describe what was encoded so far.
        self.version = BASE_VERSION
        self._memo: dict[int, dict] = {}
        self._keep: list = []  # keeps memoised objects alive, so their ids stay unique

    def _store(self, flat: torch.Tensor) -> str:
        self.tensors[key := f"t{len(self.tensors)}"] = flat
        return key

    def encode(self, obj, where: str):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and not isinstance(obj, np.generic):
            return int(obj)
        if isinstance(obj, float) and not isinstance(obj, np.generic):
            return float(obj) if math.isfinite(obj) else {TAG: "float", "value": repr(float(obj))}
        if isinstance(obj, complex) and not isinstance(obj, np.generic):
            self.version = max(self.version, COMPLEX_VERSION)
            return {TAG: "complex", "real": self.encode(float(obj.real), where),
                    "imag": self.encode(float(obj.imag), where)}
        if isinstance(obj, np.generic):
            return {TAG: "npscalar", "array": self.encode(np.asarray(obj), where)}
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj, where)
        if isinstance(obj, np.ndarray):
            return self._ndarray(obj, where)
        if isinstance(obj, torch.dtype):
            return {TAG: "torch.dtype", "name": str(obj).removeprefix("torch.")}
        if isinstance(obj, torch.device):
            return {TAG: "torch.device", "name": str(obj)}
        if isinstance(obj, np.random.RandomState):
            kind, keys, pos, has_gauss, cached = obj.get_state()
            return {TAG: "RandomState", "keys": self.encode(keys, where), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": self.encode(float(cached), where)}
        if isinstance(obj, tuple):
            return {TAG: "tuple", "items": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, (set, frozenset)):
            return {TAG: "set", "items": [self.encode(v, where) for v in sorted(obj, key=repr)]}
        if isinstance(obj, dict):
            return self.dict(obj, where)
        if isinstance(obj, BaseEstimator):
            return self.estimator(obj, where)
        if (ref := _allowed.loss_class_ref(obj)) is not None:
            return self._loss(obj, ref, where)
        if (ref := _allowed.denoiser_class_ref(obj)) is not None:
            return self._denoiser(obj, ref, where)
        if isinstance(obj, nn.Module):
            return self.module(obj, where)
        if (ref := _allowed.callable_ref(obj)) is not None:
            return {TAG: "class" if isinstance(obj, type) else "function", "ref": ref}
        if (ref := _allowed.spec_class_ref(obj)) is not None:
            return {TAG: "spec", "class": ref,
                    "params": self.dict(obj.get_params(deep=False), f"{where}.params")}
        if (ref := _allowed.data_class_ref(obj)) is not None:
            return {TAG: "object", "class": ref, "state": self.dict(vars(obj), where)}
        kind = "callable" if callable(obj) else "object"
        raise TypeError(
            f"{where} is a {kind} of type {type(obj).__module__}.{type(obj).__qualname__}, which the "
            "safe format cannot store: it holds numbers, strings, arrays, tensors, sklearn_unfold's "
            "own estimators, operators, priors and denoisers, and torch.optim optimisers and "
            "schedulers and torch.nn losses. Save such a model with pickle or joblib instead, and "
            "load those only from trusted sources.")

    def estimator(self, est, where: str) -> dict:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def module(self, module, where: str) -> dict:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def dict(self, obj: dict, where: str):
        items = [(k, self.encode(v, f"{where}[{k!r}]")) for k, v in obj.items()]
        if type(obj) is dict and all(isinstance(k, str) for k in obj) and TAG not in obj:
            return dict(items)
        return {TAG: "odict" if isinstance(obj, OrderedDict) else "dict",
                "items": [[self.encode(k, where), v] for k, v in items]}

    def _loss(self, obj: nn.Module, ref: str, where: str) -> dict:
        attrs = {k: v for k, v in vars(obj).items() if not k.startswith("_") and k != "training"}
        bad = [k for k, v in attrs.items() if not isinstance(v, _PLAIN)]
        if bad or list(obj.parameters()) or list(obj.children()):
            raise TypeError(f"{where}: this {type(obj).__name__} holds {bad or 'parameters'}, which "
                            "the safe format does not store; use pickle or joblib for it.")
        buffers = {k: self.encode(v, f"{where}.{k}") for k, v in obj._buffers.items() if v is not None}
        return {TAG: "loss", "class": ref, "attributes": attrs, "buffers": buffers}

    def _denoiser(self, obj: nn.Module, ref: str, where: str) -> dict:
        """A denoiser of the package: its constructor settings, weights and mode (format 4)."""
        self.version = max(self.version, DENOISER_VERSION)
        state = {k: self._tensor(v.detach(), f"{where}.{k}") for k, v in obj.state_dict().items()}
        return {TAG: "denoiser", "class": ref, "config": self.dict(obj.config(), where),
                "state_dict": state, "training": bool(obj.training),
                "frozen": not any(p.requires_grad for p in obj.parameters())}

    def _tensor(self, t: torch.Tensor, where: str) -> dict:
        if id(t) in self._memo:  # the same tensor twice: one copy, the same object on loading
            return self._memo[id(t)]
        if t.layout != torch.strided or (t.dtype not in _TENSOR_DTYPES
                                         and t.dtype not in _COMPLEX_TENSOR_DTYPES):
            raise TypeError(f"{where}: cannot store a {t.layout} tensor of dtype {t.dtype}.")
        perm = dense_permutation(t.shape, t.stride())
        flat = t.detach().permute(perm).to("cpu")
        if t.is_complex():  # real and imaginary parts, interleaved: the same bytes, a float dtype
            flat = torch.view_as_real(flat.resolve_conj().resolve_neg().contiguous()).clone()
            self.version = max(self.version, COMPLEX_VERSION)
        else:
            flat = flat.contiguous().clone()
        ref = {TAG: "parameter" if isinstance(t, nn.Parameter) else "tensor",
               "key": self._store(flat), "device": str(t.device), "requires_grad": bool(t.requires_grad)}
        if t.is_complex():
            ref["complex"] = True
        if perm != list(range(t.ndim)):
            ref["order"] = perm
        self._memo[id(t)] = ref
        self._keep.append(t)
        return ref

    def _ndarray(self, arr: np.ndarray, where: str) -> dict:
        if id(arr) in self._memo:
            return self._memo[id(arr)]
        if arr.dtype.kind in "OUS" and all(isinstance(v, str) for v in arr.ravel().tolist()):
            ref = {TAG: "ndarray_str", "object": arr.dtype.kind == "O", "shape": list(arr.shape),
                   "values": arr.ravel().tolist()}
        else:
            if not _NUMERIC_DTYPE.fullmatch(arr.dtype.str):
                raise TypeError(f"{where}: cannot store an array of dtype {arr.dtype} (numeric "
                                "dtypes and arrays of strings only).")
            perm = dense_permutation(arr.shape, [s // max(arr.itemsize, 1) for s in arr.strides])
            stored = arr.transpose(perm).copy(order="C")
            raw = torch.from_numpy(np.frombuffer(stored.tobytes(), dtype=np.uint8).copy())
            ref = {TAG: "ndarray", "key": self._store(raw), "dtype": arr.dtype.str,
                   "shape": list(stored.shape)}
            if perm != list(range(arr.ndim)):
                ref["order"] = perm
        self._memo[id(arr)] = ref
        self._keep.append(arr)
        return ref


_TENSOR_DTYPES = {torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
                  torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool}
#: Complex tensor dtypes, stored as real views of the float dtype of their parts.
_COMPLEX_TENSOR_DTYPES = {torch.complex64: torch.float32, torch.complex128: torch.float64}
_COMPLEX_PARTS = {v: k for k, v in _COMPLEX_TENSOR_DTYPES.items()}


class ValueDecoder:
    """Tagged JSON back to values; subclasses add estimators and modules."""

    def __init__(self, tensors: dict[str, torch.Tensor], map_location,
                 format_version: int = COMPLEX_VERSION) -> None:
        self.tensors, self._cache, self.remapped = tensors, {}, set()
        self.format_version = format_version
        self.used: set[str] = set()
        self.map_location = None if map_location is None else torch.device(map_location)

    def device(self, name) -> torch.device:
        if self.map_location is not None:
            return self.map_location
        try:
            dev = torch.device(str(name))
        except RuntimeError:
            raise ValueError(f"invalid device {str(name)[:40]!r}") from None
        usable = dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available()
                                       and (dev.index or 0) < torch.cuda.device_count())
        if not usable:
            self.remapped.add(str(name))
        return dev if usable else torch.device("cpu")

    def decode(self, obj, depth: int = 0):
        if depth > MAX_DEPTH:
            raise ValueError(f"values nest more than {MAX_DEPTH} levels deep")
        if isinstance(obj, _PLAIN):
            return obj
        if isinstance(obj, list):
            return [self.decode(v, depth + 1) for v in obj]
        if not isinstance(obj, dict):
            raise ValueError(f"unexpected JSON value of type {type(obj).__name__}")
        tag = obj.get(TAG)
        if tag is None:
            return {k: self.decode(v, depth + 1) for k, v in obj.items()}
        handler = self._handlers().get(tag) if isinstance(tag, str) else None
        if handler is None:
            raise ValueError(f"unknown entry type {str(tag)[:60]!r}")
        return handler(obj, depth + 1)

    def _handlers(self) -> dict:
        return {"float": self._float, "complex": self._complex, "tuple": self._items(tuple),
                "set": self._items(set), "dict": self._dict, "odict": self._dict, "tensor": self._tensor,
                "parameter": self._tensor, "ndarray": self._ndarray, "ndarray_str": self._ndarray_str,
                "npscalar": self._npscalar, "torch.dtype": self._dtype, "torch.device": self._device,
                "RandomState": self._random_state, "function": self._callable,
                "class": self._callable, "loss": self._loss, "object": self._object, "spec": self._spec,
                "estimator": self.estimator, "module": self._bare_module,
                "denoiser": self._denoiser}

    def estimator(self, obj: dict, depth: int):  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def _denoiser(self, obj: dict, depth: int) -> nn.Module:
        fields(obj, ("class", "config", "state_dict", "training", "frozen"))
        if self.format_version < DENOISER_VERSION:
            raise ValueError(f"damaged: a file of format version {self.format_version} holds a "
                             f"denoiser module, which only format version {DENOISER_VERSION} and "
                             "later describe")
        cls = _allowed.resolve_denoiser_class(obj["class"])
        config = self.decode(obj["config"], depth)
        state = obj["state_dict"]
        if not isinstance(config, dict) or not isinstance(state, dict):
            raise ValueError(f"a {cls.__name__} entry without its settings and weights tables")
        if not all(isinstance(v, (bool, int, float, str, tuple)) or v is None
                   for v in config.values()):
            raise ValueError(f"the settings of a {cls.__name__} hold something other than plain "
                             "values")
        try:
            module = cls(**config)
            tensors = {k: self.decode(v, depth) for k, v in state.items()}
            module.load_state_dict(tensors, strict=True)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"the stored {cls.__name__} does not fit its class: "
                             f"{str(exc)[:300]}") from None
        module.train(bool(obj["training"]))
        if obj["frozen"] is True:
            module.requires_grad_(False)
        return module

    def _bare_module(self, obj: dict, depth: int):
        raise ValueError("a network's weights may only appear as a fitted attribute of a learned "
                         "estimator, which rebuilds the network")

    def _float(self, obj, depth):
        fields(obj, ("value",))
        if obj["value"] not in ("nan", "inf", "-inf"):
            raise ValueError(f"invalid float {str(obj['value'])[:40]!r}")
        return float(obj["value"])

    def _needs_complex_version(self, what: str) -> None:
        if self.format_version < COMPLEX_VERSION:
            raise ValueError(f"damaged: a file of format version {self.format_version} holds {what}, "
                             f"which only format version {COMPLEX_VERSION} and later describe")

    def _complex(self, obj, depth):
        fields(obj, ("real", "imag"))
        self._needs_complex_version("a complex number")
        parts = [self.decode(obj[k], depth) for k in ("real", "imag")]
        if not all(type(p) is float for p in parts):
            raise ValueError(f"invalid complex number with parts {str(parts)[:80]} (two floats "
                             "are expected)")
        return complex(*parts)

    def _items(self, kind):
        def build(obj, depth):
            fields(obj, ("items",))
            if not isinstance(obj["items"], list):
                raise ValueError(f"a {kind.__name__} entry without a list of items")
            return kind(self.decode(v, depth) for v in obj["items"])
        return build

    def _dict(self, obj, depth):
        fields(obj, ("items",))
        pairs = obj["items"]
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ValueError("a dict entry whose items are not [key, value] pairs")
        out = [(self.decode(k, depth), self.decode(v, depth)) for k, v in pairs]
        return OrderedDict(out) if obj[TAG] == "odict" else dict(out)

    def _raw(self, key) -> torch.Tensor:
        if not isinstance(key, str) or key not in self.tensors:
            raise ValueError(f"reference to a tensor {str(key)[:40]!r} that the tensor member lacks")
        self.used.add(key)
        return self.tensors[key]

    def _tensor(self, obj, depth):
        fields(obj, ("key", "device", "requires_grad"), ("order", "complex"))
        is_complex = "complex" in obj
        if is_complex:
            if obj["complex"] is not True:
                raise ValueError(f"invalid 'complex' field {str(obj['complex'])[:40]!r} of tensor "
                                 f"{str(obj['key'])[:40]!r} (true or absent)")
            self._needs_complex_version("a complex tensor")
        cache_key = (obj[TAG], obj["key"], is_complex)
        if cache_key in self._cache:
            return self._cache[cache_key]
        t = self._raw(obj["key"])
        if is_complex:
            if t.dtype not in _COMPLEX_PARTS or t.ndim < 1 or t.shape[-1] != 2:
                raise ValueError(f"damaged: complex tensor {obj['key']} is stored as a {t.dtype} tensor "
                                 f"of shape {list(t.shape)[:8]}, not as float32 or float64 (real, "
                                 "imaginary) pairs")
            t = torch.view_as_complex(t if t.is_contiguous() and t.storage_offset() % 2 == 0
                                      else t.contiguous().clone())
        if "order" in obj:
            t = t.permute(inverse_permutation(obj["order"], t.ndim))
        t = t.to(self.device(obj["device"]))
        if obj[TAG] == "parameter":
            t = nn.Parameter(t, requires_grad=bool(obj["requires_grad"]))
        elif t.is_floating_point() or t.is_complex():
            t.requires_grad_(bool(obj["requires_grad"]))
        self._cache[cache_key] = t
        return t

    def _ndarray(self, obj, depth):
        fields(obj, ("key", "dtype", "shape"), ("order",))
        if ("ndarray", obj["key"]) in self._cache:
            return self._cache[("ndarray", obj["key"])]
        dtype = numeric_dtype(obj["dtype"])
        shape = check_shape(obj["shape"], f"array {obj['key']}")
        raw = self._raw(obj["key"])
        need = dtype.itemsize * math.prod(shape)  # Python ints: no overflow, nothing allocated
        if raw.dtype != torch.uint8 or raw.ndim != 1 or raw.numel() != need:
            raise ValueError(f"damaged: array {obj['key']} holds {raw.numel()} bytes, not the "
                             f"{need} of a {dtype} array {list(shape)[:8]}")
        arr = np.frombuffer(raw.numpy().tobytes(), dtype=dtype).reshape(shape).copy()
        if "order" in obj:
            arr = arr.transpose(inverse_permutation(obj["order"], arr.ndim))
        self._cache[("ndarray", obj["key"])] = arr
        return arr

    def _ndarray_str(self, obj, depth):
        fields(obj, ("object", "shape", "values"))
        shape = check_shape(obj["shape"], "string array")
        values = obj["values"]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values) \
                or len(values) != math.prod(shape):
            raise ValueError(f"a string array of shape {list(shape)[:8]} without as many strings")
        return np.array(values, dtype=object if obj["object"] else str).reshape(shape)

    def _npscalar(self, obj, depth):
        fields(obj, ("array",))
        arr = self.decode(obj["array"], depth)
        if not isinstance(arr, np.ndarray) or arr.shape != ():
            raise ValueError("a numpy scalar entry that does not hold a 0-d array")
        return arr[()]

    def _dtype(self, obj, depth):
        fields(obj, ("name",))
        value = getattr(torch, str(obj["name"]), None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown torch dtype {str(obj['name'])[:40]!r}")
        return value

    def _device(self, obj, depth):
        fields(obj, ("name",))
        try:
            return torch.device(str(obj["name"]))
        except RuntimeError:
            raise ValueError(f"invalid device {str(obj['name'])[:40]!r}") from None

    def _random_state(self, obj, depth):
        fields(obj, ("keys", "pos", "has_gauss", "cached_gaussian"))
        keys = self.decode(obj["keys"], depth)
        if not isinstance(keys, np.ndarray) or keys.shape != (624,) or keys.dtype.kind not in "iu":
            raise ValueError("a RandomState entry whose key is not 624 integers")
        rs = np.random.RandomState()
        rs.set_state(("MT19937", keys, int(obj["pos"]), int(obj["has_gauss"]),
                      float(self.decode(obj["cached_gaussian"], depth))))
        return rs

    def _callable(self, obj, depth):
        fields(obj, ("ref",))
        return _allowed.resolve_callable(obj["ref"], kind=obj[TAG])

    def _loss(self, obj, depth):
        fields(obj, ("class", "attributes", "buffers"))
        loss = _allowed.resolve_loss(obj["class"])()
        attrs, buffers = obj["attributes"], obj["buffers"]
        if not isinstance(attrs, dict) or not isinstance(buffers, dict):
            raise ValueError("a loss entry without attribute and buffer tables")
        for name, value in attrs.items():
            if not isinstance(value, _PLAIN) or name.startswith("_") or not hasattr(loss, name):
                raise ValueError(f"a {type(loss).__name__} has no setting {name!r} of that kind")
            setattr(loss, name, value)
        for name, value in buffers.items():
            tensor = self.decode(value, depth)
            if name not in loss._buffers or not isinstance(tensor, torch.Tensor):
                raise ValueError(f"a {type(loss).__name__} has no buffer {name!r}")
            loss._buffers[name] = tensor
        return loss

    def _spec(self, obj, depth):
        fields(obj, ("class", "params"))
        cls = _allowed.resolve_spec_class(obj["class"])
        params = self.decode(obj["params"], depth)
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise ValueError(f"the parameters of a {cls.__name__} are not a table of names")
        try:
            return cls(**params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the stored parameters do not fit {cls.__name__}: {exc}") from None

    def _object(self, obj, depth):
        fields(obj, ("class", "state"))
        cls = _allowed.resolve_data_class(obj["class"])
        state = self.decode(obj["state"], depth)
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise ValueError(f"an object of class {obj['class']!r} without an attribute table")
        new = cls.__new__(cls)
        vars(new).update(state)
        return new
