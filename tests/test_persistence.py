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
    # a model without complex tensors or denoiser modules is still written as format version 2;
    # a fixed denoiser (AMP's, VAMP's) makes it version 4, the newest
    holds_denoiser = hasattr(est, "denoiser")  # AMP, VAMP and the networks that start from them
    assert header["format_version"] == (4 if holds_denoiser else 2)
    assert persistence.FORMAT_VERSION == 4
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
            state["denoiser_"] = {"__type__": "function", "ref": ref}

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
    "newer-version": r"format version 99 is newer than this sklearn_unfold reads \(4\)",
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
