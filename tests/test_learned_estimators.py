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
        rec = est.stages_[-1]
        assert {"stage", "layer", "steps", "train_loss", "val_nmse_db", "learning_rate"} <= set(rec)
        assert np.isfinite(rec["val_nmse_db"])
        assert not est.interrupted_
    # the defaults: LAMP and LDVAMP end to end, then one refinement; LISTA grows layer-wise
    # (new layer, then one refinement of all layers so far, at every depth)
    for est in (lamp, ldvamp):
        assert [(h["stage"], h["layer"]) for h in est.stages_] == [("end_to_end", 4),
                                                                   ("refine", 4)]
    stages = [(h["stage"], h["layer"]) for h in lista.stages_]
    assert stages == [("layer", 1), ("refine", 1), ("layer", 2), ("refine", 2), ("layer", 3),
                      ("refine", 3), ("layer", 4), ("refine", 4)]
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
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="interrupted"):
        est.fit(small["Y"], small["X"])  # a lone fit keeps its best checkpoint, then re-raises
    assert est.interrupted_ and len(calls) == 15  # no step after the interrupt
    assert est.stages_[-1]["stop"] == "interrupted" and est.n_layers_ == 3
    pred = est.predict(small["Yt"])
    assert np.isfinite(pred).all() and nmse_db(small["Xt"], pred) < -5


def test_interrupt_inside_a_grid_search_stops_the_search(small, monkeypatch):
    """One Ctrl-C ends the search: no half-trained fold is scored, no further fit starts."""
    real = Trainer._train_step
    calls = []

    def interrupting(self, *args):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(Trainer, "_train_step", interrupting)
    grid = GridSearchCV(LAMPRegressor(A=small["A"], n_layers=2, max_epochs=0.5, **FAST),
                        {"tied": [True, False]}, scoring=nmse_scorer, cv=2, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(KeyboardInterrupt):
            grid.fit(small["Y"], small["X"])
    assert len(calls) == 8 and not hasattr(grid, "cv_results_")


def test_interrupt_while_a_refit_is_set_up_keeps_the_previous_fit(small, monkeypatch):
    """fit is atomic: the validation of the new data has already replaced A_, operator_,
    n_features_in_, noise_var_ ... when the interrupt comes; they are all put back."""
    est = LAMPRegressor(A=small["A"], n_layers=2, max_epochs=0.5, **FAST).fit(small["Y"],
                                                                              small["X"])
    before = est.predict(small["Yt"])
    state = dict(vars(est))
    Y2, X2, A2 = make_compressed_sensing("giid", 200, n_features=64, n_measurements=16,
                                         random_state=3)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(LAMPRegressor, "_build_module", interrupted)
    est.set_params(A=A2)
    with pytest.raises(KeyboardInterrupt):
        est.fit(Y2, X2)
    assert vars(est).keys() == state.keys()
    assert all(vars(est)[k] is v for k, v in state.items() if k != "A")
    assert est.A_ is state["A_"] and est.n_features_in_ == 32
    np.testing.assert_array_equal(est.predict(small["Yt"]), before)
    # a bad refit (an error, not an interrupt) leaves it as it was as well
    with pytest.raises(ValueError, match="A has shape"):
        est.set_params(A=small["A"]).fit(Y2, X2)
    np.testing.assert_array_equal(est.predict(small["Yt"]), before)


@pytest.mark.parametrize("cls, kw", [(LAMPRegressor, {}), (LISTARegressor, {"alpha": 0.1}),
                                     (LDVAMPRegressor, {})])
def test_training_without_progress_warns_at_the_callers_line(small, cls, kw):
    """learning_rate=1e3: every stage ends on its starting checkpoint; all three networks say
    so, naming themselves and the rate, at the line that called fit."""
    est = cls(A=small["A"], n_layers=2, learning_rate=1e3, max_epochs=0.5, **kw, **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(small["Y"], small["X"])
    no_progress = [w for w in caught if "made no progress" in str(w.message)]
    assert len(no_progress) == 1 and no_progress[0].category is ConvergenceWarning
    message = str(no_progress[0].message)
    assert message.startswith(f"{cls.__name__}: ") and "(1000)" in message
    assert "lower learning_rate" in message
    assert all(w.filename == __file__ for w in caught), [(w.filename, w.message) for w in caught]
    if cls is LISTARegressor:  # its layers were fitted (calibrated) before training
        return
    # the untrained start is what it predicts
    init = list(islice(est.init_estimator_.staged_predict(small["Yt"]), 2))[-1]
    assert abs(nmse_db(small["Xt"], est.predict(small["Yt"])) - nmse_db(small["Xt"], init)) < 1.0


def test_history_records_every_validation_check(small):
    est = LAMPRegressor(A=small["A"], n_layers=2, max_epochs=1, eval_every=3, **FAST)
    est.fit(small["Y"], small["X"])
    hist, stages = est.history_, est.stages_
    assert {"step", "stage", "stage_index", "layer", "stage_step", "train_loss", "val_nmse_db",
            "best_val_nmse_db", "learning_rate"} <= set(hist[0])
    steps = [h["step"] for h in hist]
    assert steps == sorted(steps) and steps[-1] == sum(s["steps"] for s in stages)
    for i, stage in enumerate(stages):
        recs = [h for h in hist if h["stage_index"] == i]
        assert recs[0]["stage_step"] == 0 and np.isnan(recs[0]["train_loss"])  # the opening
        assert all(h["stage_step"] % 3 == 0 or h["stage_step"] == stage["steps"] for h in recs)
        assert (recs[-1]["stage"], recs[-1]["layer"]) == (stage["stage"], stage["layer"])
        assert recs[-1]["best_val_nmse_db"] == stage["val_nmse_db"]
        last = stage["steps"] if stage["stop"] == "max_steps" else None
        assert len(recs) == 1 + sum(k % 3 == 0 or k == last for k in range(1, stage["steps"] + 1))
    assert len(hist) > 2 * len(stages)


def test_optimizer_and_schedule_are_nested_parameters(small):
    from sklearn_unfold.estimators._learned_base import DEFAULT_OPTIMIZER
    from sklearn_unfold.training import LRSchedule, Optimizer

    est = LAMPRegressor(A=small["A"], n_layers=2, max_epochs=0.5, training="layerwise", **FAST)
    assert est.get_params()["optimizer__optimizer_class"] is torch.optim.Adam
    est.set_params(optimizer__lr=1e-2, lr_schedule__refine_factors=(0.25,),
                   lr_schedule__growth_factors=())
    assert DEFAULT_OPTIMIZER.get_params() == {"optimizer_class": torch.optim.Adam}  # a copy
    assert clone(est).get_params()["optimizer__lr"] == 1e-2
    est.fit(small["Y"], small["X"])
    # optimizer__lr replaced learning_rate; the schedule's factors set the refinements
    assert [(h["stage"], h["layer"], h["learning_rate"]) for h in est.stages_] == pytest.approx(
        [("layer", 1, 1e-2), ("layer", 2, 1e-2), ("refine", 2, 2.5e-3)])
    with pytest.raises(ValueError, match=r"no argument\(s\) \['lrr'\]"):
        est.set_params(optimizer__lrr=1.0)
    with pytest.raises(ValueError, match="refine_factors must be positive"):
        LRSchedule(refine_factors=(0.5, -1))
    # another optimiser, and a scheduler within each stage
    sgd = LAMPRegressor(A=small["A"], n_layers=1, max_epochs=1, eval_every=3,
                        optimizer=Optimizer(torch.optim.SGD, lr=1e-2, momentum=0.9),
                        lr_schedule=LRSchedule(refine_factors=(), growth_factors=(),
                                               scheduler=torch.optim.lr_scheduler.StepLR,
                                               step_size=1, gamma=0.5), **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sgd.fit(small["Y"], small["X"])
    assert sgd.optimizer_state_["optimizer"] == "torch.optim.sgd.SGD"
    assert all(h["learning_rate"] == pytest.approx(1e-2 * 0.5 ** h["stage_step"])
               for h in sgd.history_)


def test_nested_parameters_in_a_grid_search(small):
    grid = GridSearchCV(LAMPRegressor(A=small["A"], n_layers=1, max_epochs=0.5, **FAST),
                        {"optimizer__lr": [1e-3, 1e-2]}, scoring=nmse_scorer, cv=2)
    grid.fit(small["Y"], small["X"])
    assert list(grid.cv_results_["param_optimizer__lr"]) == [1e-3, 1e-2]
    best = grid.best_params_["optimizer__lr"]
    assert grid.best_estimator_.stages_[0]["learning_rate"] == best


def test_callbacks_see_every_check_and_can_stop_training(small):
    seen = []

    def stop_after_three(trainer, history):
        seen.append((trainer.estimator, len(history), history[-1]["val_nmse_db"]))
        return len(history) >= 3

    est = LAMPRegressor(A=small["A"], n_layers=3, callbacks=[stop_after_three], **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a requested stop does not warn
        est.fit(small["Y"], small["X"])
    assert [n for _, n, _ in seen] == [1, 2, 3] and all(e is est for e, _, _ in seen)
    assert len(est.history_) == 3 and est.stages_[-1]["stop"] == "callback"
    assert len(est.stages_) == 1 and est.n_layers_ == 3  # it stopped in the first stage
    assert np.isfinite(est.predict(small["Yt"])).all()


def test_custom_loss_is_trained_on(small):
    calls = []

    def scaled_nmse(X_hat, X):
        calls.append(1)
        return 1e4 * ((X_hat - X) ** 2).sum() / (X**2).sum()

    est = LAMPRegressor(A=small["A"], n_layers=1, max_epochs=0.5, loss=scaled_nmse, **FAST)
    est.fit(small["Y"], small["X"])
    trained = [h["train_loss"] for h in est.history_ if np.isfinite(h["train_loss"])]
    assert calls and trained and min(trained) > 10  # NMSE in this problem is below 0.1
    assert est.history_[-1]["val_nmse_db"] < 0  # validation stays the NMSE, in dB


def test_warm_start_continues_the_optimiser_state(small):
    from sklearn_unfold.training import LRSchedule

    est = LAMPRegressor(A=small["A"], n_layers=2, training="end_to_end", max_epochs=0.5,
                        n_iter_no_change=1000, lr_schedule=LRSchedule(refine_factors=()),
                        warm_start=True, **FAST).fit(small["Y"], small["X"])
    state = est.optimizer_state_["state"]
    assert {"B.0", "B.1", "denoisers.1.theta"} <= set(state) <= {n for n, _ in est.module_.named_parameters()}
    assert all(isinstance(v, torch.Tensor) for st in state.values() for v in st.values())
    assert float(state["B.0"]["step"]) == 5 and est.history_[-1]["step"] == 5
    est.fit(small["Y"], small["X"])
    assert float(est.optimizer_state_["state"]["B.0"]["step"]) == 10  # Adam's count went on
    assert est.history_[-1]["step"] == 10 and [s["stage_index"] for s in est.stages_] == [0, 1]


def test_signal_prior_draws_fresh_signals(small):
    class CountingPrior(BernoulliGaussianPrior):
        draws = 0

        def sample(self, n_samples, random_state=None):
            type(self).draws += 1
            return super().sample(n_samples, random_state)

    prior = CountingPrior()
    est = LAMPRegressor(A=small["A"], n_layers=2, max_epochs=0.5, signal_prior=prior, **FAST)
    est.fit(small["Y"], small["X"])
    assert CountingPrior.draws == sum(h["steps"] for h in est.stages_) > 0
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
    n_records = len(est.stages_)
    trained_B0 = est.module_.B[0].detach().clone()
    est.set_params(n_layers=4).fit(small["Y"], small["X"])
    assert est.n_layers_ == 4 and len(est.stages_) > n_records
    new = est.stages_[n_records:]
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
