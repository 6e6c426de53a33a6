"""Persistence: pickle / joblib round trips, the safe save/load format, refusals, CPU mapping."""

from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sklearn_unfold
from sklearn_unfold import persistence
from sklearn_unfold.estimators._base import RecoveryEstimatorBase
from sklearn_unfold.persistence import load, save

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

M, N, N_SAMPLES = 12, 24, 96

#: Small settings that keep every estimator fast; only the parameters an estimator has are set.
FAST_PARAMS = {
    "max_iter": 8, "n_layers": 2, "max_epochs": 1, "batch_size": 32, "training": "end_to_end",
    "alpha": 0.05, "random_state": 0, "device": "cpu",
}
#: Extra configurations whose fitted state differs in kind (denoiser functions, MLPs, ...).
VARIANTS = {
    "AMPRegressor": [{"denoiser": "soft", "threshold": 1.4}],
    "VAMPRegressor": [{"denoiser": "soft", "threshold": 1.4}],
    "LISTARegressor": [{"tied": True, "variant": "lista"},
                       {"signal_prior": "bernoulli_gaussian", "variant": "alista"}],
    "LAMPRegressor": [{"denoiser": "mlp", "random_state": np.random.RandomState(3)}],
    "LDVAMPRegressor": [{"gains": True, "denoiser": "pwlin", "dtype": "float64"}],
}


def _classes() -> list[type]:
    classes = [getattr(sklearn_unfold, name) for name in sklearn_unfold.__all__]
    return [c for c in classes if isinstance(c, type) and issubclass(c, RecoveryEstimatorBase)]


def _configs() -> list[tuple[type, dict]]:
    out = []
    for cls in _classes():
        names = cls().get_params(deep=False)
        base = {k: v for k, v in FAST_PARAMS.items() if k in names}
        out.append((cls, base))
        for extra in VARIANTS.get(cls.__name__, []):
            if set(extra) <= set(names):
                out.append((cls, {**base, **extra}))
    return out


CONFIGS = _configs()
IDS = [f"{c.__name__}-{i}" for i, (c, _) in enumerate(CONFIGS)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((M, N)) / np.sqrt(M)
    X = rng.standard_normal((N_SAMPLES, N)) * (rng.random((N_SAMPLES, N)) < 0.2)
    Y = X @ A.T + 0.01 * rng.standard_normal((N_SAMPLES, M))
    return Y, X, A


_FITTED: dict[int, object] = {}


@pytest.fixture(params=range(len(CONFIGS)), ids=IDS)
def fitted(request, data):
    """(fitted estimator, its predictions on the training measurements); fitted once."""
    i = request.param
    if i not in _FITTED:
        cls, params = CONFIGS[i]
        Y, X, A = data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = cls(A=A, **params).fit(Y, X)
            _FITTED[i] = (est, est.predict(Y))
    return _FITTED[i]


def _predict(est, Y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.predict(Y)


def _all_tensors(obj, seen=None):
    """Every tensor reachable from an estimator's attributes (modules, operators, tuples)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.state_dict(keep_vars=True).values()
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _all_tensors(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _all_tensors(v, seen)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("sklearn_unfold"):
        yield from _all_tensors(vars(obj), seen)


def _assert_same_state(a, b):
    """Same public attribute names and types; arrays and tensors bitwise equal. Private state is
    recomputed on loading, not stored: the loaded model has no private name the original lacks."""
    assert type(a) is type(b)
    public = lambda obj: sorted(k for k in vars(obj) if not k.startswith("_"))  # noqa: E731
    assert public(a) == public(b)
    assert set(vars(b)) <= set(vars(a))
    for key, va in vars(a).items():
        vb = vars(b)[key]
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and va.shape == vb.shape, key
            np.testing.assert_array_equal(va, vb, err_msg=key)
        elif isinstance(va, torch.nn.Module):
            sa, sb = va.state_dict(), vb.state_dict()
            assert list(sa) == list(sb), key
            for name in sa:
                assert torch.equal(sa[name], sb[name]), f"{key}.{name}"
            assert vb.training == va.training
            assert getattr(vb, "n_active", None) == getattr(va, "n_active", None)
        elif isinstance(va, RecoveryEstimatorBase):
            _assert_same_state(va, vb)
        elif isinstance(va, (bool, int, str, type(None))):
            assert va == vb, key


def _assert_same_params(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key, va in a.items():
        vb = b[key]
        assert type(va) is type(vb), key
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb, err_msg=key)
        elif hasattr(va, "get_params") and not isinstance(va, type):  # an optimiser spec, ...
            _assert_same_params(va.get_params(deep=False), vb.get_params(deep=False))
        elif isinstance(va, np.random.RandomState):
            for x, y in zip(va.get_state(), vb.get_state(), strict=True):
                np.testing.assert_array_equal(x, y, err_msg=key)
        else:
            assert va == vb, key


# --------------------------------------------------------------------------- pickle / joblib
def test_pickle_round_trip(fitted, data):
    est, pred = fitted
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(_predict(clone, data[0]), pred)


def test_joblib_round_trip(fitted, data, tmp_path):
    est, pred = fitted
    joblib.dump(est, tmp_path / "model.joblib")
    np.testing.assert_array_equal(_predict(joblib.load(tmp_path / "model.joblib"), data[0]), pred)


# --------------------------------------------------------------------------- safe format
def test_safe_round_trip_is_exact(fitted, data, tmp_path):
    est, pred = fitted
    path = tmp_path / "model.sfu"
    save(est, path)
    loaded = load(path)
    np.testing.assert_array_equal(_predict(loaded, data[0]), pred)
    _assert_same_state(est, loaded)
    _assert_same_params(est.get_params(deep=False), loaded.get_params(deep=False))
    # staged predictions (every iteration / layer) match too
    # (consumed one after the other: a suspended classical staged_predict disables autograd)
    staged, staged_loaded = list(est.staged_predict(data[0][:5])), list(
        loaded.staged_predict(data[0][:5]))
    for a, b in zip(staged, staged_loaded, strict=True):
        np.testing.assert_array_equal(a, b)
    # saving the loaded model gives the same description
    again = tmp_path / "again.sfu"
    save(loaded, again)
    with zipfile.ZipFile(path) as z1, zipfile.ZipFile(again) as z2:
        assert z1.read("params.json") == z2.read("params.json")


def test_file_layout_is_json_plus_tensors(fitted, tmp_path):
    est, _ = fitted
    save(est, tmp_path / "m.sfu")
    with zipfile.ZipFile(tmp_path / "m.sfu") as zf:
        assert sorted(zf.namelist()) == ["params.json", "tensors.safetensors"]
        header = json.loads(zf.read("params.json"))
    assert header["format"] == "sklearn-unfold-model"
    # a model without complex tensors is still written as format version 2 (the newest version,
    # 3, only for models that hold complex tensors or Python complex numbers)
    assert header["format_version"] == 2 and persistence.FORMAT_VERSION == 3
    assert header["class"] == type(est).__name__
    params = header["estimator"]["params"]
    assert params["A"]["__type__"] == "ndarray"  # A is a tensor reference, not JSON numbers
    assert set(params) == set(est.get_params(deep=False))


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__name__)
def test_unfitted_round_trip(cls, tmp_path, data):
    est = cls(A=data[2], batch_size=7)
    save(est, tmp_path / "u.sfu")
    loaded = load(tmp_path / "u.sfu")
    assert type(loaded) is cls and loaded.batch_size == 7
    np.testing.assert_array_equal(loaded.A, data[2])
    with pytest.raises(NotFittedError):
        loaded.predict(data[0])


def test_numpy_scalars_and_0d_arrays_keep_their_shape(tmp_path, data):
    """A numpy scalar nested in a fitted attribute comes back a numpy scalar of its dtype (it
    came back a 1-element array, so a second save described the model differently)."""
    est = sklearn_unfold.ISTARegressor(A=data[2], max_iter=5).fit(data[0], data[1])
    est.extra_ = [{"f64": np.float64(1.5), "f32": np.float32(-2.0)}, np.array(3.0), 4.0]
    save(est, tmp_path / "a.sfu")
    loaded = load(tmp_path / "a.sfu")
    rec, zero_d, plain = loaded.extra_
    assert type(rec["f64"]) is np.float64 and rec["f64"] == 1.5
    assert type(rec["f32"]) is np.float32 and rec["f32"] == -2.0
    assert isinstance(zero_d, np.ndarray) and zero_d.shape == () and zero_d == 3.0
    assert type(plain) is float
    save(loaded, tmp_path / "b.sfu")
    with zipfile.ZipFile(tmp_path / "a.sfu") as z1, zipfile.ZipFile(tmp_path / "b.sfu") as z2:
        assert z1.read("params.json") == z2.read("params.json")


# --------------------------------------------------------------------------- refusals
def _rewrite(src: Path, dst: Path, edit_header=None, edit_member=None) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "params.json" and edit_header is not None:
                header = json.loads(data)
                edit_header(header)
                data = json.dumps(header).encode()
            elif name != "params.json" and edit_member is not None:
                data = edit_member(data)
            zout.writestr(name, data)


@pytest.fixture(scope="module")
def amp_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("amp") / "amp.sfu"
    est = sklearn_unfold.AMPRegressor(A=data[2], max_iter=5).fit(data[0], data[1])
    save(est, path)
    return path


def test_unknown_estimator_class_is_refused(amp_file, tmp_path):
    def edit(header):
        header["estimator"]["class"] = "Pipeline"

    bad = tmp_path / "bad.sfu"
    _rewrite(amp_file, bad, edit_header=edit)
    with pytest.raises(ValueError, match=r"refusing to load an estimator of class 'Pipeline'"):
        load(bad)


@pytest.mark.parametrize("ref, kind", [
    ("subprocess:Popen", "object"), ("os:system", "function"),
    ("builtins:eval", "function"), ("sklearn_unfold.cli:main", "function"),
    ("torch.nn.modules.linear:Linear.__init__", "object"), ("sklearn.pipeline:Pipeline", "object"),
])
def test_unknown_nested_class_or_function_is_refused(amp_file, tmp_path, ref, kind):
    def edit(header):
        state = header["estimator"]["attributes"]
        if kind == "object":
            state["operator_"]["class"] = ref
        else:
            state["denoiser_"]["ref"] = ref

    bad = tmp_path / "bad.sfu"
    _rewrite(amp_file, bad, edit_header=edit)
    with pytest.raises(ValueError, match=rf"refusing to load (an object of class|function) "
                                         rf"'{ref}'"):
        load(bad)


_CALLED: list[str] = []


def _payload() -> None:  # pragma: no cover - must never run
    _CALLED.append("ran")


class _Evil:
    def __reduce__(self):
        return (_payload, ())


def test_pickled_payload_in_tensor_file_is_not_run(amp_file, tmp_path, monkeypatch):
    buf = io.BytesIO()
    torch.save({"t0": _Evil()}, buf)
    bad = tmp_path / "evil.sfu"
    with zipfile.ZipFile(amp_file) as zin, zipfile.ZipFile(bad, "w") as zout:
        header = json.loads(zin.read("params.json"))
        header["tensor_file"] = "tensors.pt"
        zout.writestr("params.json", json.dumps(header))
        zout.writestr("tensors.pt", buf.getvalue())
    with pytest.raises(ValueError, match="not a readable sklearn-unfold model file"):
        load(bad)
    assert _CALLED == []


def test_save_refuses_what_it_cannot_store(data, tmp_path):
    with pytest.raises(TypeError, match="save expects an sklearn_unfold estimator"):
        save(object(), tmp_path / "x.sfu")
    with pytest.raises(TypeError, match=r"Pipeline.*not one of the estimators exported"):
        save(make_pipeline(StandardScaler()), tmp_path / "x.sfu")
    est = sklearn_unfold.AMPRegressor(A=data[2], max_iter=5).fit(data[0], data[1])
    est.custom_ = StandardScaler()
    with pytest.raises(TypeError, match=r"estimator\.custom_ is a .*StandardScaler"):
        save(est, tmp_path / "x.sfu")
    learned = [c for c in _classes() if "signal_prior" in c().get_params()]
    for cls in learned:
        with pytest.raises(TypeError, match=r"params\['signal_prior'\] is a .*_UserPrior"):
            save(cls(signal_prior=_UserPrior()), tmp_path / "x.sfu")
    assert not (tmp_path / "x.sfu").exists()


class _UserPrior:
    """A user-defined prior: fine to pickle, not describable by the safe format."""

    def sample(self, n_samples, random_state=None):
        return np.zeros((n_samples, N))


# --------------------------------------------------------------------------- damaged files
def _corrupt_stored_bytes(raw: bytes, member: str) -> bytes:
    """Flip one byte inside ``member``'s data, as disk or transfer damage would."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        info = zf.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    pos = start + info.compress_size // 2
    return raw[:pos] + bytes([raw[pos] ^ 0x55]) + raw[pos + 1:]


def _damage(amp_file: Path, bad: Path, damage: str) -> None:
    raw = amp_file.read_bytes()
    if damage == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "not-a-zip":
        bad.write_bytes(b"\x80\x04\x95 a pickle, not a model")
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "flipped-tensor-byte":
        bad.write_bytes(_corrupt_stored_bytes(raw, "tensors.safetensors"))
    elif damage == "wrong-format-name":
        _rewrite(amp_file, bad, edit_header=lambda h: h.update(format="other"))
    elif damage == "newer-version":
        _rewrite(amp_file, bad, edit_header=lambda h: h.update(format_version=99))
    elif damage == "missing-tensor":
        _rewrite(amp_file, bad, edit_header=lambda h: h["tensor_keys"].append("t999"))
    elif damage == "bad-json":
        with zipfile.ZipFile(amp_file) as zin, zipfile.ZipFile(bad, "w") as zout:
            zout.writestr("params.json", zin.read("params.json")[:-20])
            zout.writestr("tensors.safetensors", zin.read("tensors.safetensors"))
    elif damage == "no-estimator":
        _rewrite(amp_file, bad, edit_header=lambda h: h.pop("estimator"))
    elif damage == "bad-array-size":
        _rewrite(amp_file, bad, edit_header=lambda h: h["estimator"]["params"]["A"].update(
            shape=[M, N + 1]))


_UNREADABLE = "is not a readable sklearn-unfold model file"
DAMAGES = {
    "truncated": _UNREADABLE, "not-a-zip": _UNREADABLE, "empty": _UNREADABLE,
    "flipped-tensor-byte": _UNREADABLE + r".*Bad CRC-32",
    "bad-json": _UNREADABLE,
    "wrong-format-name": "params.json does not describe an sklearn-unfold model",
    "newer-version": r"format version 99 is newer than this sklearn_unfold reads \(3\)",
    "missing-tensor": r"is damaged: its tensor file holds \d+ tensors, its params.json lists",
    "no-estimator": "is damaged: params.json has no estimator entry",
    "bad-array-size": r"damaged: array t0 holds 2304 bytes, not the 2400 of a float64 array",
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_file_is_a_clear_value_error(amp_file, tmp_path, damage):
    bad = tmp_path / "bad.sfu"
    _damage(amp_file, bad, damage)
    with pytest.raises(ValueError, match=rf"(?s)bad\.sfu.*{DAMAGES[damage]}"):
        load(bad)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nowhere.sfu")


# --------------------------------------------------------------------------- CUDA -> CPU
def _as_if_saved_on_cuda(src: Path, dst: Path) -> None:
    text = json.dumps(json.loads(zipfile.ZipFile(src).read("params.json")))
    assert '"device": "cpu"' in text
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        zout.writestr("params.json", text.replace('"device": "cpu"', '"device": "cuda:0"'))
        for name in zin.namelist():
            if name != "params.json":
                zout.writestr(name, zin.read(name))


def test_model_saved_on_cuda_loads_on_cpu(fitted, data, tmp_path, monkeypatch):
    est, pred = fitted
    save(est, tmp_path / "cpu.sfu")
    _as_if_saved_on_cuda(tmp_path / "cpu.sfu", tmp_path / "cuda.sfu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match=r"tensors saved on \['cuda:0'\] were loaded on the CPU"):
        loaded = load(tmp_path / "cuda.sfu")
    tensors = list(_all_tensors(loaded))
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    np.testing.assert_array_equal(_predict(loaded, data[0]), pred)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit map_location maps silently
        explicit = load(tmp_path / "cuda.sfu", map_location="cpu")
    np.testing.assert_array_equal(_predict(explicit, data[0]), pred)


def test_pickled_learned_model_asking_for_cuda_predicts_on_cpu(data, monkeypatch):
    """A pickle of a model whose ``device`` is CUDA unpickles onto the CPU when CUDA is absent."""
    learned = [c for c in _classes() if "n_layers" in c().get_params()]
    if not learned:
        pytest.skip("no learned estimator exported yet")
    cls = learned[0]
    params = {k: v for k, v in FAST_PARAMS.items() if k in cls().get_params()}
    est = cls(A=data[2], **params).fit(data[0], data[1])
    pred = _predict(est, data[0])
    est.set_params(device="cuda")
    blob = pickle.dumps(est)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(blob)
    assert all(t.device.type == "cpu" for t in _all_tensors(loaded))
    np.testing.assert_array_equal(_predict(loaded, data[0]), pred)


def test_file_objects_work(data):
    est = sklearn_unfold.ISTARegressor(A=data[2], alpha=0.05, max_iter=20).fit(data[0], data[1])
    buf = io.BytesIO()
    save(est, buf)
    buf.seek(0)
    np.testing.assert_array_equal(_predict(load(buf), data[0]), _predict(est, data[0]))


# --------------------------------------------------------------------------- stored model files
MODEL_DIR = Path(__file__).parent / "data" / "models"


@pytest.mark.parametrize("name", ["vamp", "lista", "lamp", "ldvamp"])
def test_stored_model_files_predict_as_recorded(name):
    """Files of the current format (``tests/data/make_model_files.py``) load and predict what
    they predicted when saved."""
    expected = np.load(MODEL_DIR / "expected.npz")
    est = load(MODEL_DIR / f"{name}.sfu")
    np.testing.assert_allclose(_predict(est, expected["Y"]), expected[name], rtol=1e-5, atol=1e-7)


def test_file_holds_public_state_only(data, tmp_path):
    """Parameters, public fitted attributes and the network's state_dict: no private names, no
    pickled modules; private state (the warm-start architecture) is recomputed on loading."""
    i = next(i for i, (cls, _) in enumerate(CONFIGS) if cls.__name__ == "LAMPRegressor")
    if i not in _FITTED:  # (fitted once per session: shared with the round-trip tests)
        cls, params = CONFIGS[i]
        est = cls(A=data[2], **params).fit(data[0], data[1])
        _FITTED[i] = (est, est.predict(data[0]))
    est = _FITTED[i][0]
    save(est, tmp_path / "m.sfu")
    body = json.loads(zipfile.ZipFile(tmp_path / "m.sfu").read("params.json"))["estimator"]
    assert not [k for k in list(body["params"]) + list(body["attributes"]) if k.startswith("_")]
    assert set(body["attributes"]) == {k for k in vars(est) if k.endswith("_") and not k.startswith("_")}
    network = body["attributes"]["module_"]
    assert network["__type__"] == "module"
    assert set(network["state_dict"]) == set(est.module_.state_dict())
    assert "_architecture_" not in json.dumps(body)
    loaded = load(tmp_path / "m.sfu")
    assert loaded._architecture_ == est._architecture_


# --------------------------------------------------------------------------- complex values
def _bits(value, layout: bool = True) -> tuple:
    """What must survive a round trip bit for bit: type, dtype, shape, raw bytes (NaN payloads
    and signed zeros included, which ``==`` would not see) and the axis order of a dense layout
    (a transposed tensor stays transposed; a strided slice is stored, and loads, contiguous)."""
    from sklearn_unfold.persistence._codec import dense_permutation

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().resolve_conj()
        order = dense_permutation(t.shape, t.stride()) if layout else None
        t = t.contiguous()
        raw = (torch.view_as_real(t) if t.is_complex() else t).numpy().tobytes()
        return (type(value), t.dtype, tuple(t.shape), order, bool(value.requires_grad), raw)
    if isinstance(value, np.ndarray):
        return (type(value), value.dtype.str, value.shape, value.flags.f_contiguous and value.ndim > 1,
                np.ascontiguousarray(value).tobytes())
    if isinstance(value, (complex, np.generic)):
        return (type(value), np.asarray(value).tobytes())
    raise AssertionError(type(value))


def _save_extra(est, extra, path):
    est.extra_ = extra
    save(est, path)
    with zipfile.ZipFile(path) as zf:
        version = json.loads(zf.read("params.json"))["format_version"]
    return load(path).extra_, version


@pytest.fixture(scope="module")
def ista(data):
    return sklearn_unfold.ISTARegressor(A=data[2], max_iter=5).fit(data[0], data[1])


def test_complex_numpy_arrays_round_trip_bit_exact_as_version_2(ista, tmp_path):
    """Complex numpy arrays and numpy complex scalars are raw bytes: format version 2 stores them,
    so such a file stays readable by releases that read version 2."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3))
    z[0, 0] = complex(np.nan, -0.0)
    z[1, 1] = complex(np.inf, -np.inf)
    extra = {"c16": z, "c8": z.astype(np.complex64), "fortran": np.asfortranarray(z), "T": z.T,
             "0d": np.array(1 - 2j), "empty": np.zeros((0, 3), dtype=np.complex64),
             "scalars": [np.complex128(3 + 4j), np.complex64(-1j)]}
    loaded, version = _save_extra(ista, extra, tmp_path / "m.sfu")
    assert version == 2
    for key in ("c16", "c8", "fortran", "T", "0d", "empty"):
        assert _bits(loaded[key]) == _bits(extra[key]), key
    assert [_bits(v) for v in loaded["scalars"]] == [_bits(v) for v in extra["scalars"]]


def test_complex_tensors_round_trip_bit_exact_as_version_3(ista, tmp_path):
    rng = torch.Generator().manual_seed(0)
    c = torch.randn(5, 4, dtype=torch.complex128, generator=rng)
    c[0, 0] = complex(float("nan"), -0.0)
    c[1, 1] = complex(float("-inf"), float("inf"))
    weight = torch.nn.Parameter(torch.randn(3, 3, dtype=torch.complex64, generator=rng))
    frozen = torch.nn.Parameter(torch.randn(2, dtype=torch.complex128, generator=rng),
                                requires_grad=False)
    extra = {"c128": c, "c64": c.to(torch.complex64), "transposed": c.T, "conj_view": c.conj(),
             "neg_conj": c.conj().neg(), "0d": torch.tensor(1 - 2j), "param": weight,
             "frozen": frozen, "grad": torch.ones(3, dtype=torch.complex64, requires_grad=True),
             "empty": torch.zeros(0, 4, dtype=torch.complex64), "again": c,
             "real": torch.arange(4.0)}
    loaded, version = _save_extra(ista, extra, tmp_path / "m.sfu")
    assert version == 3
    for key, value in extra.items():
        assert _bits(loaded[key]) == _bits(value), key
    assert loaded["again"] is loaded["c128"]  # one tensor stored once, one object when loaded
    assert type(loaded["param"]) is torch.nn.Parameter and loaded["param"].requires_grad
    assert type(loaded["frozen"]) is torch.nn.Parameter and not loaded["frozen"].requires_grad
    assert loaded["transposed"].stride() == (1, 4)  # the transposed layout is kept


def test_complex_tensor_storage_in_the_file(ista, tmp_path):
    """A complex tensor is its real view (a float tensor of (real, imaginary) pairs) in the
    safetensors member, flagged ``"complex": true``; real tensors are written as before."""
    from safetensors.torch import load as st_load

    c = torch.tensor([[1 + 2j, 3 - 4j]], dtype=torch.complex64)
    ista.extra_ = {"c": c, "r": torch.ones(2)}
    save(ista, tmp_path / "m.sfu")
    with zipfile.ZipFile(tmp_path / "m.sfu") as zf:
        header = json.loads(zf.read("params.json"))
        tensors = st_load(zf.read("tensors.safetensors"))
    entry, real = header["estimator"]["attributes"]["extra_"]["c"], \
        header["estimator"]["attributes"]["extra_"]["r"]
    assert entry["complex"] is True and "complex" not in real
    stored = tensors[entry["key"]]
    assert stored.dtype == torch.float32 and stored.shape == (1, 2, 2)
    assert stored.tolist() == [[[1.0, 2.0], [3.0, -4.0]]]


def test_python_complex_numbers_round_trip(ista, tmp_path):
    extra = {"z": 1.5 - 2j, "special": complex(float("nan"), float("-inf")), "zero": -0.0 + 0j,
             "nested": (2j, [complex(1e308, -1e-308)]), "keyed": {1j: "a"}}
    loaded, version = _save_extra(ista, extra, tmp_path / "m.sfu")
    assert version == 3
    assert type(loaded["z"]) is complex and loaded["z"] == 1.5 - 2j
    for key in ("special", "zero"):
        assert _bits(loaded[key]) == _bits(extra[key])
    assert loaded["nested"] == extra["nested"] and type(loaded["nested"]) is tuple
    assert loaded["keyed"] == {1j: "a"}


def test_complex32_and_sparse_complex_tensors_are_refused(ista, tmp_path):
    for value in (torch.zeros(2, dtype=torch.complex32),
                  torch.zeros(2, 2, dtype=torch.complex64).to_sparse()):
        ista.extra_ = {"t": value}
        with pytest.raises(TypeError, match=r"extra_.*cannot store a .* tensor of dtype"):
            save(ista, tmp_path / "x.sfu")
    assert not (tmp_path / "x.sfu").exists()


def _complex_operators() -> dict:
    from sklearn_unfold.operators import (
        DenseBatchOperator,
        DenseOperator,
        KroneckerOperator,
        PartialDFT,
        RealView,
        SVDOperator,
    )

    g = torch.Generator().manual_seed(1)
    C = torch.randn(6, 10, dtype=torch.complex128, generator=g)
    with_svd = DenseOperator(C.clone())
    with_svd.svd()
    with_svd.norm_sq()  # cached values are attributes too
    batch = DenseBatchOperator(torch.randn(3, 4, 5, dtype=torch.complex64, generator=g), repeats=2)
    batch.svd()
    U, s, Vh = torch.linalg.svd(C, full_matrices=False)
    return {
        "dense": DenseOperator(C),
        "dense-svd": with_svd,
        "dense-c64": DenseOperator(C.to(torch.complex64).T),
        "batch": batch,
        "dft": PartialDFT.random(5, 16, random_state=0),
        "dft-c64": PartialDFT.random(5, 16, random_state=0, dtype=torch.complex64),
        "dft-per-sample": PartialDFT(np.stack([np.arange(5), np.arange(5, 10), np.arange(3, 8)]), 16),
        "kron": KroneckerOperator(C[:3, :4], PartialDFT.random(3, 8, random_state=1)),
        "svd": SVDOperator(U, s, Vh.mH.resolve_conj()),
        "real-view": RealView(PartialDFT.random(5, 16, random_state=2)),
    }


COMPLEX_OPERATORS = list(_complex_operators())


@pytest.mark.parametrize("name", COMPLEX_OPERATORS)
def test_complex_operators_round_trip_bit_exact(ista, tmp_path, name):
    op = _complex_operators()[name]
    loaded, _ = _save_extra(ista, {"op": op}, tmp_path / "m.sfu")
    loaded = loaded["op"]
    assert type(loaded) is type(op) and loaded.shape == op.shape
    assert loaded.dtype == op.dtype and loaded.fingerprint() == op.fingerprint()
    before, after = list(_all_tensors(op)), list(_all_tensors(loaded))
    assert [_bits(t) for t in after] == [_bits(t) for t in before]
    n = op.shape[0] if op.per_sample else 3
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, op.n_features, dtype=torch.float64, generator=g)
    v = torch.randn(n, op.n_measurements, dtype=torch.float64, generator=g)
    if op.is_complex:
        x, v = torch.complex(x, torch.randn_like(x)), torch.complex(v, torch.randn_like(v))
    x, v = x.to(op.dtype), v.to(op.dtype)
    assert _bits(loaded.forward(x)) == _bits(op.forward(x))
    assert _bits(loaded.adjoint(v)) == _bits(op.adjoint(v))


def test_complex_operator_as_a_parameter_round_trips(tmp_path):
    op = _complex_operators()["dense-svd"]
    est = sklearn_unfold.AMPRegressor(A=op, max_iter=3)
    save(est, tmp_path / "u.sfu")
    loaded = load(tmp_path / "u.sfu")
    assert type(loaded.A) is type(op) and _bits(loaded.A.A) == _bits(op.A)
    assert [_bits(t) for t in loaded.A._svd] == [_bits(t) for t in op._svd]


@pytest.fixture(scope="module")
def complex_data():
    rng = np.random.default_rng(7)
    m, n, k = 12, 24, 96
    A = (rng.standard_normal((m, n)) + 1j * rng.standard_normal((m, n))) / np.sqrt(2 * m)
    X = (rng.standard_normal((k, n)) + 1j * rng.standard_normal((k, n))) * (rng.random((k, n)) < 0.2)
    Y = X @ A.T + 0.01 * (rng.standard_normal((k, m)) + 1j * rng.standard_normal((k, m)))
    return Y, X, A


@pytest.mark.parametrize("cls, params", CONFIGS, ids=IDS)
def test_complex_estimator_round_trip_is_exact(cls, params, complex_data, tmp_path):
    """An estimator fitted on complex measurements and signals (complex operator, complex
    weights in a learned network) saves and loads exactly; configurations that do not fit
    complex data are skipped until they do."""
    Y, X, A = complex_data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = cls(A=A, **params).fit(Y, X)
            pred = est.predict(Y)
    except (TypeError, ValueError, RuntimeError) as exc:  # pragma: no cover - not yet complex
        pytest.skip(f"{cls.__name__} does not fit complex data yet: {exc}")
    assert np.iscomplexobj(pred)
    save(est, tmp_path / "c.sfu")
    with zipfile.ZipFile(tmp_path / "c.sfu") as zf:
        assert json.loads(zf.read("params.json"))["format_version"] in (2, 3)
    loaded = load(tmp_path / "c.sfu")
    assert _bits(_predict(loaded, Y)) == _bits(pred)
    _assert_same_state(est, loaded)
    _assert_same_params(est.get_params(deep=False), loaded.get_params(deep=False))
    assert [_bits(t) for t in _all_tensors(loaded)] == [_bits(t) for t in _all_tensors(est)]
    for a, b in zip(list(est.staged_predict(Y[:5])), list(loaded.staged_predict(Y[:5])), strict=True):
        np.testing.assert_array_equal(a, b)
    save(loaded, tmp_path / "again.sfu")
    with zipfile.ZipFile(tmp_path / "c.sfu") as z1, zipfile.ZipFile(tmp_path / "again.sfu") as z2:
        assert z1.read("params.json") == z2.read("params.json")


def _learned_with_complex_weight(data, monkeypatch):
    """A fitted learned estimator whose network also holds a complex parameter and buffer, as a
    network for complex signals will (its ``_build_module`` patched to add them)."""
    learned = [c for c in _classes() if "n_layers" in c().get_params()]
    if not learned:  # pragma: no cover
        pytest.skip("no learned estimator exported yet")
    cls = learned[0]
    params = {k: v for k, v in FAST_PARAMS.items() if k in cls().get_params()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = cls(A=data[2], **params).fit(data[0], data[1])
    build = cls._build_module

    def build_with_complex(self, device, dtype, fit_op):
        module = build(self, device, dtype, fit_op)
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        module.register_parameter("phase", torch.nn.Parameter(torch.zeros(4, dtype=cdtype, device=device)))
        module.register_buffer("pilots", torch.zeros(2, 3, dtype=cdtype, device=device))
        return module

    monkeypatch.setattr(cls, "_build_module", build_with_complex)
    real = next(p for p in est.module_.parameters() if p.is_floating_point())
    cdtype = torch.complex128 if real.dtype == torch.float64 else torch.complex64
    g = torch.Generator().manual_seed(3)
    est.module_.register_parameter("phase", torch.nn.Parameter(torch.randn(4, dtype=cdtype, generator=g)))
    est.module_.register_buffer("pilots", torch.randn(3, 2, dtype=cdtype, generator=g).T)
    return est, cls


def test_learned_network_with_complex_weights_round_trips(data, tmp_path, monkeypatch):
    est, _ = _learned_with_complex_weight(data, monkeypatch)
    save(est, tmp_path / "m.sfu")
    loaded = load(tmp_path / "m.sfu")
    a, b = est.module_.state_dict(), loaded.module_.state_dict()
    assert list(a) == list(b)  # (the rebuilt network has its own layout: values are compared)
    assert [_bits(t, layout=False) for t in b.values()] == [_bits(t, layout=False) for t in a.values()]
    assert type(loaded.module_.phase) is torch.nn.Parameter and loaded.module_.phase.requires_grad
    np.testing.assert_array_equal(_predict(loaded, data[0]), _predict(est, data[0]))


def test_complex_weights_into_a_real_network_are_refused(data, tmp_path, monkeypatch):
    """Loading complex weights into a rebuilt real parameter would drop their imaginary parts
    (``load_state_dict`` casts); the file is refused instead."""
    est, cls = _learned_with_complex_weight(data, monkeypatch)
    save(est, tmp_path / "m.sfu")
    build = cls._build_module

    def build_real(self, device, dtype, fit_op):
        module = build(self, device, dtype, fit_op)
        module.phase = torch.nn.Parameter(torch.zeros(4, dtype=dtype, device=device))
        return module

    monkeypatch.setattr(cls, "_build_module", build_real)
    with pytest.raises(ValueError, match=r"m\.sfu: the stored weights do not fit .*'phase' is stored "
                                         r"as torch\.complex\d+ but built as torch\.float\d+"):
        load(tmp_path / "m.sfu")


# --------------------------------------------------------------------------- OFDM pilots
def _pilot_dft_class():
    ofdm = pytest.importorskip("sklearn_unfold.operators.ofdm",
                               reason="sklearn_unfold.operators.ofdm (PilotDFT) is not there")
    if not hasattr(ofdm, "PilotDFT"):  # pragma: no cover
        pytest.skip("sklearn_unfold.operators.ofdm has no PilotDFT")
    return ofdm.PilotDFT


def _pilot_dft():
    return _pilot_dft_class()(np.array([0, 3, 7, 10, 14, 17, 21, 28]), 32, 6)


def test_pilot_dft_is_allowed_and_round_trips(ista, tmp_path):
    from sklearn_unfold.persistence import _allowed

    op = _pilot_dft()
    ref = _allowed.data_class_ref(op)
    assert ref == "sklearn_unfold.operators.ofdm:PilotDFT"
    assert _allowed.resolve_data_class(ref) is type(op)
    for probe in ("svd", "norm_sq"):  # whatever it caches is stored with it
        try:
            getattr(op, probe)()
        except (NotImplementedError, RuntimeError, AttributeError, TypeError):  # pragma: no cover
            pass
    loaded, _ = _save_extra(ista, {"op": op}, tmp_path / "m.sfu")
    loaded = loaded["op"]
    assert type(loaded) is type(op) and loaded.shape == op.shape and loaded.dtype == op.dtype
    assert [_bits(t) for t in _all_tensors(loaded)] == [_bits(t) for t in _all_tensors(op)]
    g = torch.Generator().manual_seed(4)
    x = torch.complex(torch.randn(3, op.n_features, dtype=torch.float64, generator=g),
                      torch.randn(3, op.n_features, dtype=torch.float64, generator=g))
    v = torch.complex(torch.randn(3, op.n_measurements, dtype=torch.float64, generator=g),
                      torch.randn(3, op.n_measurements, dtype=torch.float64, generator=g))
    assert _bits(loaded.forward(x)) == _bits(op.forward(x))
    assert _bits(loaded.adjoint(v)) == _bits(op.adjoint(v))


def test_data_modules_are_a_fixed_list(monkeypatch):
    """A file may make load import a package module only from the fixed list of modules that
    define operators, ensembles and priors (``operators.ofdm`` among them, whether or not the
    package imports it eagerly); other names are refused without importing anything."""
    import sys
    import types

    from sklearn_unfold.persistence import _allowed

    assert "sklearn_unfold.operators.ofdm" in _allowed.DATA_MODULES
    for ref in ("sklearn_unfold.__main__:main", "sklearn_unfold.operators.nowhere:X", "os:system",
                "sklearn_unfold.operators.ofdm:__builtins__"):
        module = ref.partition(":")[0]
        was_loaded = module in sys.modules
        with pytest.raises(ValueError, match="refusing to load an object of class"):
            _allowed.resolve_data_class(ref)
        if not was_loaded and module != "sklearn_unfold.operators.ofdm":
            assert module not in sys.modules, ref
    # a listed module that the package has not imported is imported on demand (simulated: the
    # module is taken out of sys.modules and the import puts the same one back)
    name = "sklearn_unfold.operators.transforms"
    module, imported = sys.modules[name], []

    def import_module(wanted):
        imported.append(wanted)
        sys.modules[wanted] = module
        return module

    monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(_allowed, "importlib", types.SimpleNamespace(import_module=import_module))
    assert _allowed.resolve_data_class(f"{name}:PartialDFT") is module.PartialDFT
    assert imported == [name]
    with pytest.raises(ValueError, match="refusing to load an object of class"):
        _allowed.resolve_data_class("sklearn_unfold.cli:main")
    assert imported == [name]


@pytest.mark.parametrize("name", ["ISTARegressor", "AMPRegressor", "VAMPRegressor"])
def test_estimator_fitted_on_pilot_dft_round_trips(tmp_path, name):
    """OFDM channel estimation end to end: a classical estimator fitted on complex pilot
    observations through a PilotDFT operator loads with that operator and predicts the same."""
    op = _pilot_dft_class().random(16, 64, 24, random_state=0)
    rng = np.random.default_rng(2)
    X = (rng.standard_normal((60, 24)) + 1j * rng.standard_normal((60, 24))) * (rng.random((60, 24)) < 0.2)
    Y = X @ op.to_dense().numpy().T + 0.01 * rng.standard_normal((60, 16))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = getattr(sklearn_unfold, name)(A=op, max_iter=5).fit(Y, X)
            pred = est.predict(Y)
    except (TypeError, ValueError, RuntimeError) as exc:  # pragma: no cover - not yet complex
        pytest.skip(f"{name} does not fit complex data through a PilotDFT yet: {exc}")
    save(est, tmp_path / "ofdm.sfu")
    loaded = load(tmp_path / "ofdm.sfu")
    assert type(loaded.operator_) is type(op)
    np.testing.assert_array_equal(loaded.operator_.pilots, op.pilots)
    assert _bits(_predict(loaded, Y)) == _bits(pred)
    assert [_bits(t) for t in _all_tensors(loaded)] == [_bits(t) for t in _all_tensors(est)]


def test_channel_priors_are_allowed_and_round_trip(ista, tmp_path):
    channels = pytest.importorskip("sklearn_unfold.channels", reason="sklearn_unfold.channels is not there")
    from sklearn_unfold.persistence import _allowed

    priors = [getattr(channels, name)(16) for name in ("ClusteredChannelPrior", "ClusteredAngleDelayPrior")
              if hasattr(channels, name)]
    if not priors:  # pragma: no cover
        pytest.skip("sklearn_unfold.channels defines no clustered channel prior")
    for prior in priors:
        assert _allowed.resolve_data_class(_allowed.data_class_ref(prior)) is type(prior)
    loaded, _ = _save_extra(ista, {"priors": priors}, tmp_path / "m.sfu")
    for before, after in zip(priors, loaded["priors"], strict=True):
        assert type(after) is type(before) and vars(after) == vars(before)
        np.testing.assert_array_equal(after.sample(5, random_state=0), before.sample(5, random_state=0))


def test_learned_estimator_with_a_channel_prior_round_trips(tmp_path):
    """A learned network trained on complex OFDM channels drawn from a channel prior (the
    ``signal_prior`` parameter) through a PilotDFT saves and loads exactly."""
    channels = pytest.importorskip("sklearn_unfold.channels", reason="sklearn_unfold.channels is not there")
    if not hasattr(channels, "make_ofdm_channel_estimation"):  # pragma: no cover
        pytest.skip("sklearn_unfold.channels has no make_ofdm_channel_estimation")
    Y, X, A = channels.make_ofdm_channel_estimation(120, n_subcarriers=64, n_taps=16, n_pilots=12,
                                                    random_state=0)
    learned = [c for c in _classes() if "signal_prior" in c().get_params()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = learned[0](A=A, n_layers=2, max_epochs=1, batch_size=32, random_state=0,
                             signal_prior=channels.ClusteredChannelPrior(16)).fit(Y, X)
            pred = est.predict(Y)
    except (TypeError, ValueError, RuntimeError) as exc:  # pragma: no cover - not yet complex
        pytest.skip(f"{learned[0].__name__} does not train on channel priors yet: {exc}")
    save(est, tmp_path / "ofdm.sfu")
    loaded = load(tmp_path / "ofdm.sfu")
    assert type(loaded.signal_prior) is channels.ClusteredChannelPrior
    assert vars(loaded.signal_prior) == vars(est.signal_prior)
    assert _bits(_predict(loaded, Y)) == _bits(pred)
