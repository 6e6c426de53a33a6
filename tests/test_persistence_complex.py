"""Safe model files with complex values: arrays, tensors, operators, estimators, OFDM pilots."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from test_persistence import (
    CONFIGS,
    FAST_PARAMS,
    IDS,
    N_SAMPLES,
    M,
    N,
    _all_tensors,
    _assert_same_params,
    _assert_same_state,
    _classes,
    _predict,
)

import sklearn_unfold
from sklearn_unfold.persistence import load, save

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def data():
    """The real test problem of tests/test_persistence.py (the same draw)."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((M, N)) / np.sqrt(M)
    X = rng.standard_normal((N_SAMPLES, N)) * (rng.random((N_SAMPLES, N)) < 0.2)
    Y = X @ A.T + 0.01 * rng.standard_normal((N_SAMPLES, M))
    return Y, X, A


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
        assert json.loads(zf.read("params.json"))["format_version"] in (2, 3, 4)
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
