"""LISTARegressor, LAMPRegressor and LDVAMPRegressor as scikit-learn estimators."""

import pickle
import warnings
from itertools import islice

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_unfold import (
    LAMPRegressor,
    LDVAMPRegressor,
    LISTARegressor,
    nmse_db,
    nmse_scorer,
)
from sklearn_unfold.datasets import BernoulliGaussianPrior, make_compressed_sensing
from sklearn_unfold.estimators._learned_base import resolve_device
from sklearn_unfold.training import Trainer

# LISTA's ℓ1 weight is given below: its "auto" calibration is a state-evolution search, and a
# larger weight lets the ISTA that LISTA starts from converge quickly; both keep the tests fast.
FAST = {"batch_size": 100, "random_state": 0, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small():
    Y, X, A = make_compressed_sensing("giid", 1000, n_features=64, n_measurements=32,
                                      random_state=0)
    Yt, Xt, _ = make_compressed_sensing("giid", 500, A=A, n_features=64, n_measurements=32,
                                        random_state=1)
    return {"Y": Y, "X": X, "A": A, "Yt": Yt, "Xt": Xt}


@pytest.fixture(scope="module")
def fitted(small):
    """One default-trained estimator of each kind, shared by the read-only tests."""
    d = small
    return {
        "lamp": LAMPRegressor(A=d["A"], n_layers=4, **FAST).fit(d["Y"], d["X"]),
        "lista": LISTARegressor(A=d["A"], n_layers=4, alpha=0.1, **FAST).fit(d["Y"], d["X"]),
        "ldvamp": LDVAMPRegressor(A=d["A"], n_layers=4, **FAST).fit(d["Y"], d["X"]),
    }


@pytest.mark.parametrize("kind, margin", [("lamp", 2.0), ("lista", 3.0), ("ldvamp", 0.3)])
def test_learned_beats_its_initialisation(small, fitted, kind, margin):
    est = fitted[kind]
    init = list(islice(est.init_estimator_.staged_predict(small["Yt"]), est.n_layers_))
    learned = nmse_db(small["Xt"], est.predict(small["Yt"]))
    assert learned < nmse_db(small["Xt"], init[-1]) - margin


@pytest.mark.parametrize("kind", ["lamp", "lista", "ldvamp"])
def test_staged_predict_ends_at_predict(small, fitted, kind):
    est = fitted[kind]
    staged = list(est.staged_predict(small["Yt"]))
    assert len(staged) == est.n_layers_ == 4
    pred = est.predict(small["Yt"])
    assert pred.dtype == np.float64 and np.isfinite(pred).all()
    np.testing.assert_array_equal(staged[-1], pred)
    # chunked prediction (batch_size=100 < 500 rows) equals one pass
    assert np.allclose(est.predict(small["Yt"][:100]), pred[:100], rtol=1e-6, atol=1e-8)


def test_fitted_attributes_are_readable(fitted):
    lamp, lista, ldvamp = fitted["lamp"], fitted["lista"], fitted["ldvamp"]
    assert lamp.onsager_scale_.shape == (4,) and lamp.theta_.shape == (4, 2)
    assert not np.allclose(lamp.onsager_scale_, 1.0)  # the Onsager scales were learned
    assert lista.thresholds_.shape == (4,) and lista.steps_.shape == (4,)
    assert ldvamp.noise_precision_.shape == (4,) and ldvamp.gamma1_scale_.shape == (4,)
    for est in fitted.values():
        rec = est.history_[-1]
        assert {"stage", "layer", "steps", "train_loss", "val_nmse_db", "learning_rate"} <= set(rec)
        assert np.isfinite(rec["val_nmse_db"])
    # layer-wise growth (the default): new layer, one refinement per intermediate depth, two
    # refinements at the final depth
    stages = [(h["stage"], h["layer"]) for h in lamp.history_]
    assert stages == [("layer", 1), ("refine", 1), ("layer", 2), ("refine", 2), ("layer", 3),
                      ("refine", 3), ("layer", 4), ("refine", 4), ("refine", 4)]
    assert lista.history_[0]["stage"] == "layer"
    # LISTA fitted each layer's step and threshold before training it; the others do not
    assert [c["layer"] for c in lista.calibration_] == [1, 2, 3, 4]
    assert all(c["nmse_db_after"] <= c["nmse_db_before"] for c in lista.calibration_)
    assert not hasattr(lamp, "calibration_") and not hasattr(ldvamp, "calibration_")


def test_lista_warm_start_calibrates_only_the_added_layers(small):
    est = LISTARegressor(A=small["A"], n_layers=2, alpha=0.1, max_epochs=0.2, warm_start=True,
                         **FAST).fit(small["Y"], small["X"])
    assert [c["layer"] for c in est.calibration_] == [1, 2]
    est.set_params(n_layers=3).fit(small["Y"], small["X"])
    assert [c["layer"] for c in est.calibration_] == [3]


@pytest.mark.parametrize("cls, kw", [(LAMPRegressor, {}), (LISTARegressor, {"alpha": 0.1}),
                                     (LDVAMPRegressor, {"gains": True})])
def test_tied_has_fewer_parameters(small, cls, kw):
    count = {}
    for tied in (False, True):
        est = cls(A=small["A"], n_layers=3, tied=tied, max_epochs=0.1, **kw, **FAST)
        est.fit(small["Y"], small["X"])
        count[tied] = sum(p.numel() for p in est.module_.parameters())
    assert count[True] < count[False]


def test_grid_search_picks_and_refits(small):
    grid = GridSearchCV(LAMPRegressor(A=small["A"], max_epochs=1, **FAST),
                        {"n_layers": [1, 3], "tied": [True, False]}, scoring=nmse_scorer, cv=2)
    grid.fit(small["Y"], small["X"])
    assert grid.best_params_["n_layers"] == 3
    assert grid.best_estimator_.n_layers_ == 3
    one_layer = [-s for s, p in zip(grid.cv_results_["mean_test_score"], grid.cv_results_["params"],
                                    strict=True) if p["n_layers"] == 1]
    assert nmse_db(small["Xt"], grid.predict(small["Yt"])) < min(one_layer) - 3


def test_works_in_a_pipeline(small):
    pipe = make_pipeline(FunctionTransformer(lambda Y: Y),
                         LAMPRegressor(A=small["A"], n_layers=2, max_epochs=0.5, **FAST))
    pipe.fit(small["Y"], small["X"])
    assert pipe.predict(small["Yt"]).shape == small["Xt"].shape


def test_clone_and_pickle_round_trips(small, fitted):
    est = fitted["lamp"]
    fresh = clone(est)
    assert fresh.get_params().keys() == est.get_params().keys()
    assert np.array_equal(fresh.get_params()["A"], est.A) and not hasattr(fresh, "module_")
    pred = est.predict(small["Yt"])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(small["Yt"]), pred)
    for kind in ("lista", "ldvamp"):
        other = fitted[kind]
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(other)).predict(small["Yt"]),
                                      other.predict(small["Yt"]))


def test_joblib_round_trip(small, fitted, tmp_path):
    est = fitted["ldvamp"]
    joblib.dump(est, tmp_path / "est.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "est.joblib").predict(small["Yt"]),
                                  est.predict(small["Yt"]))


@pytest.mark.parametrize("cls, kw", [(LAMPRegressor, {"denoiser": "mlp"}),
                                     (LISTARegressor, {"alpha": 0.1})])
def test_same_random_state_gives_bitwise_equal_predictions(small, cls, kw):
    preds = [cls(A=small["A"], n_layers=2, max_epochs=0.5, **kw, **FAST)
             .fit(small["Y"], small["X"]).predict(small["Yt"]) for _ in range(2)]
    np.testing.assert_array_equal(preds[0], preds[1])


@pytest.mark.parametrize("lr, message", [(1e12, "rolled back"), (1e20, "did not recover")])
def test_huge_learning_rate_rolls_back_and_warns(small, lr, message):
    est = LAMPRegressor(A=small["A"], n_layers=3, learning_rate=lr, max_epochs=1, **FAST)
    with pytest.warns(ConvergenceWarning, match=message):
        est.fit(small["Y"], small["X"])
    assert all(torch.isfinite(p).all() for p in est.module_.parameters())
    pred = est.predict(small["Yt"])
    assert np.isfinite(pred).all() and nmse_db(small["Xt"], pred) < -5


def test_keyboard_interrupt_leaves_a_usable_estimator(small, monkeypatch):
    real = Trainer._train_step
    calls = []

    def interrupting(self, *args):
        calls.append(1)
        if len(calls) == 15:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(Trainer, "_train_step", interrupting)
    est = LAMPRegressor(A=small["A"], n_layers=3, **FAST)
    with pytest.warns(UserWarning, match="interrupted"):
        est.fit(small["Y"], small["X"])
    assert est.history_[-1]["stop"] == "interrupted" and est.n_layers_ == 3
    pred = est.predict(small["Yt"])
    assert np.isfinite(pred).all() and nmse_db(small["Xt"], pred) < -5


def test_signal_prior_draws_fresh_signals(small):
    class CountingPrior(BernoulliGaussianPrior):
        draws = 0

        def sample(self, n_samples, random_state=None):
            type(self).draws += 1
            return super().sample(n_samples, random_state)

    prior = CountingPrior()
    est = LAMPRegressor(A=small["A"], n_layers=2, max_epochs=0.5, signal_prior=prior, **FAST)
    est.fit(small["Y"], small["X"])
    assert CountingPrior.draws == sum(h["steps"] for h in est.history_) > 0
    assert prior.n_features is None  # the user's object is copied, not fitted in place
    assert est.signal_prior_.n_features == 64
    named = LAMPRegressor(A=small["A"], n_layers=2, max_epochs=0.5,
                          signal_prior="bernoulli_gaussian", **FAST).fit(small["Y"], small["X"])
    assert named.signal_prior_.sparsity == pytest.approx(0.1, abs=0.01)


def test_bad_parameters_are_named(small):
    with pytest.raises(ValueError, match="signal_prior"):
        LAMPRegressor(signal_prior=object()).fit(small["Y"], small["X"])
    with pytest.raises(ValueError, match="n_layers"):
        LISTARegressor(n_layers=0).fit(small["Y"], small["X"])
    with pytest.raises(ValueError, match="denoiser"):
        LAMPRegressor(denoiser="nope").fit(small["Y"], small["X"])
    with pytest.raises(ValueError, match="device"):
        LAMPRegressor(A=small["A"], device="nonsense").fit(small["Y"], small["X"])
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_warm_start_grows_the_network(small):
    est = LAMPRegressor(A=small["A"], n_layers=2, training="layerwise", max_epochs=0.5,
                        warm_start=True, **FAST).fit(small["Y"], small["X"])
    n_records = len(est.history_)
    trained_B0 = est.module_.B[0].detach().clone()
    est.set_params(n_layers=4).fit(small["Y"], small["X"])
    assert est.n_layers_ == 4 and len(est.history_) > n_records
    new = est.history_[n_records:]
    assert new[0]["stage"] == "layer" and new[0]["layer"] == 3  # growth resumed at layer 3
    assert not torch.equal(est.module_.B[0], torch.as_tensor(small["A"].T, dtype=torch.float32))
    assert est.module_.B[0].shape == trained_B0.shape


def test_random_init_starts_elsewhere(small):
    kw = dict(A=small["A"], n_layers=2, max_epochs=0.1, **FAST)
    analytic = LAMPRegressor(**kw).fit(small["Y"], small["X"])
    random = LAMPRegressor(init="random", **kw).fit(small["Y"], small["X"])
    norms = [float(e.module_.B[0].detach().norm()) for e in (random, analytic)]
    assert norms[0] == pytest.approx(norms[1], rel=0.05)
    assert not np.allclose(random.module_.B[0].detach(), analytic.module_.B[0].detach(),
                           atol=1e-2)


@parametrize_with_checks([
    LAMPRegressor(n_layers=2, max_epochs=2),
    LISTARegressor(n_layers=2, max_epochs=2, alpha=0.1),
    LDVAMPRegressor(n_layers=2, max_epochs=2),
])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def _has_cxx_compiler() -> bool:
    import shutil
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _has_cxx_compiler(), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_predict_equals_eager(small, fitted):
    est = clone(fitted["lamp"]).set_params(batch_size=300)  # 500 test rows: chunks of 300 and 200
    est.fit(small["Y"], small["X"])
    eager = est.predict(small["Yt"])
    est.set_params(compile=True)
    before = set(vars(est))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a failed compilation would warn
        compiled = est.predict(small["Yt"])
        staged = list(est.staged_predict(small["Yt"][:7]))
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(staged[-1], eager[:7], rtol=1e-4, atol=1e-5)
    assert len(staged) == est.n_layers_
    assert set(vars(est)) == before  # nothing cached on the estimator: it still pickles
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(small["Yt"][:7]),
                                  compiled[:7])


def test_failed_compilation_warns_and_predicts_eagerly(small, fitted, monkeypatch):
    est = fitted["ldvamp"]
    eager = est.predict(small["Yt"])

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("Compiler: cc not found\nmore details")

    monkeypatch.setattr(torch, "compile", broken)
    compiled_est = pickle.loads(pickle.dumps(est)).set_params(compile=True)  # a fitted copy
    with pytest.warns(UserWarning, match=r"compile=True.*RuntimeError: Compiler: cc not found\)"):
        np.testing.assert_array_equal(compiled_est.predict(small["Yt"]), eager)
    # 500 rows in chunks of batch_size=100: one failed attempt for the call, not one per chunk
    assert compiled_est.batch_size < len(small["Yt"]) and len(calls) == 1


def test_lista_does_not_amplify_the_error_of_denser_signals():
    """Signals twice as dense as the training prior: the NMSE still falls layer after layer
    (a per-layer gain fitted before training once made the last layers amplify such errors),
    and every layer picks its starting direction among the two documented ones."""
    Y, X, A = make_compressed_sensing("giid", 2000, n_features=64, n_measurements=32,
                                      random_state=0)
    est = LISTARegressor(A=A, n_layers=6, alpha=0.05, max_epochs=2,
                         signal_prior="bernoulli_gaussian", **FAST).fit(Y, X)
    assert {c["direction"] for c in est.calibration_} <= {"matched", "pseudo_inverse"}
    Yd, Xd, _ = make_compressed_sensing("giid", 2000, A=A, sparsity=0.2, random_state=5)
    curve = [nmse_db(Xd, Xh) for Xh in est.staged_predict(Yd)]
    assert all(b < a + 0.05 for a, b in zip(curve, curve[1:], strict=False)), curve
    assert curve[-1] < curve[0] - 3.0, curve
