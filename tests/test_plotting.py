"""The Display classes: their lines hold the numbers they claim, and they draw on a given ax."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sklearn_unfold import AMPRegressor, VAMPRegressor, nmse_db  # noqa: E402
from sklearn_unfold.cli import _thread_limit  # noqa: E402
from sklearn_unfold.datasets import make_compressed_sensing  # noqa: E402
from sklearn_unfold.plotting import (  # noqa: E402
    NMSECurveDisplay,
    TrainingHistoryDisplay,
    staged_nmse_db,
)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small problems run fastest, and disturb other processes least, on one thread."""
    with _thread_limit(1):
        yield


@pytest.fixture(scope="module")
def fitted():
    Y, X, A = make_compressed_sensing("giid", 60, n_features=120, n_measurements=60,
                                      random_state=0)
    Yt, Xt, _ = make_compressed_sensing("giid", 40, A=A, random_state=1)
    ests = [AMPRegressor(A=A, max_iter=12).fit(Y, X), VAMPRegressor(A=A, max_iter=8).fit(Y, X)]
    return ests, Yt, Xt


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_nmse_curve_lines_equal_staged_predict(fitted):
    ests, Y, X = fitted
    disp = NMSECurveDisplay.from_estimators(ests, Y, X)
    assert len(disp.lines_) == 2
    assert [line.get_label() for line in disp.lines_] == ["AMP-bg", "VAMP-bg"]
    for est, line in zip(ests, disp.lines_, strict=True):
        expected = [nmse_db(X, Xt) for Xt in est.staged_predict(Y)]
        np.testing.assert_allclose(line.get_ydata(), expected)
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, len(expected) + 1))
    assert disp.ax_.get_ylabel() == "NMSE (dB)"
    assert disp.figure_ is disp.ax_.figure


def test_nmse_curve_accepts_ax_mapping_and_references(fitted):
    ests, Y, X = fitted
    fig, ax = plt.subplots()
    disp = NMSECurveDisplay.from_estimators({"amp": ests[0], "vamp": ests[1]}, Y, X, ax=ax,
                                            references={"oracle": -30.0}, max_stages=5,
                                            xscale="log")
    assert disp.ax_ is ax and disp.figure_ is fig
    assert [line.get_label() for line in disp.lines_] == ["amp", "vamp"]
    assert all(len(line.get_ydata()) == 5 for line in disp.lines_)
    (ref,) = disp.reference_lines_
    np.testing.assert_allclose(ref.get_ydata(), [-30.0, -30.0])
    assert ax.get_xscale() == "log"


def test_nmse_curve_from_curves_and_errors(fitted):
    ests, Y, X = fitted
    curve = staged_nmse_db(ests[0], Y, X)
    disp = NMSECurveDisplay(nmse_db=[curve], names=["AMP"]).plot()
    np.testing.assert_allclose(disp.lines_[0].get_ydata(), curve)
    assert curve[-1] == pytest.approx(nmse_db(X, ests[0].predict(Y)))
    with pytest.raises(ValueError, match="names"):
        NMSECurveDisplay(nmse_db=[curve], names=["a", "b"])
    with pytest.raises(ValueError, match="xscale"):
        disp.plot(xscale="cubic")


HISTORY = [
    {"stage": "layer", "layer": 1, "steps": 30, "train_loss": 0.3, "val_nmse_db": -5.0,
     "learning_rate": 1e-3, "stop": "no_change"},
    {"stage": "refine", "layer": 1, "steps": 20, "train_loss": 0.25, "val_nmse_db": -6.0,
     "learning_rate": 5e-4, "stop": "max_steps"},
    {"stage": "layer", "layer": 2, "steps": 40, "train_loss": 0.1, "val_nmse_db": -10.0,
     "learning_rate": 1e-3, "stop": "no_change"},
    {"stage": "refine", "layer": 2, "steps": 10, "train_loss": 0.09, "val_nmse_db": -11.5,
     "learning_rate": 5e-4, "stop": "no_change"},
]


class _Fitted:
    history_ = HISTORY


def test_training_history_stages():
    fig, ax = plt.subplots()
    disp = TrainingHistoryDisplay.from_estimator(_Fitted(), ax=ax, name="LAMP")
    assert disp.ax_ is ax and disp.figure_ is fig
    np.testing.assert_allclose(disp.line_.get_xdata(), [30, 50, 90, 100])
    np.testing.assert_allclose(disp.line_.get_ydata(), [-5.0, -6.0, -10.0, -11.5])
    assert set(disp.markers_) == {"layer", "refine"}
    assert len(disp.layer_lines_) == 2
    assert disp.layer_nmse_db == {1: -6.0, 2: -11.5}


CHECKS = [  # one record per validation check, as history_ holds them
    {"step": 0, "stage": "layer", "stage_index": 0, "layer": 1, "val_nmse_db": -3.0,
     "best_val_nmse_db": -3.0},
    {"step": 10, "stage": "layer", "stage_index": 0, "layer": 1, "val_nmse_db": -5.0,
     "best_val_nmse_db": -5.0},
    {"step": 10, "stage": "refine", "stage_index": 1, "layer": 1, "val_nmse_db": -5.0,
     "best_val_nmse_db": -5.0},
    {"step": 20, "stage": "refine", "stage_index": 1, "layer": 1, "val_nmse_db": -4.9,
     "best_val_nmse_db": -5.0},
    {"step": 20, "stage": "layer", "stage_index": 2, "layer": 2, "val_nmse_db": -6.0,
     "best_val_nmse_db": -6.0},
    {"step": 30, "stage": "layer", "stage_index": 2, "layer": 2, "val_nmse_db": -9.0,
     "best_val_nmse_db": -9.0},
]


def test_training_history_draws_a_learning_curve():
    disp = TrainingHistoryDisplay.from_history(CHECKS)
    np.testing.assert_allclose(disp.line_.get_xdata(), [0, 10, 10, 20, 20, 30])
    np.testing.assert_allclose(disp.line_.get_ydata(), [-3, -5, -5, -4.9, -6, -9])
    assert disp.ax_.get_xlabel() == "optimiser steps"
    # a new layer starts where its opening check is, at step 0 and step 20
    assert [line.get_xdata()[0] for line in disp.layer_lines_] == [0, 20]
    # each depth ends on its last stage's best checkpoint, not on its last check
    assert disp.layer_nmse_db == {1: -5.0, 2: -9.0}


def test_training_history_of_a_fitted_estimator():
    from sklearn_unfold import LAMPRegressor
    from sklearn_unfold.datasets import make_compressed_sensing

    Y, X, A = make_compressed_sensing("giid", 300, n_features=32, n_measurements=16,
                                      random_state=0)
    est = LAMPRegressor(A=A, n_layers=2, max_epochs=1, batch_size=50, random_state=0,
                        device="cpu").fit(Y, X)
    disp = TrainingHistoryDisplay.from_estimator(est)
    assert len(disp.line_.get_xdata()) == len(est.history_) > len(est.stages_)
    np.testing.assert_array_equal(disp.line_.get_xdata(), [h["step"] for h in est.history_])
    assert disp.layer_nmse_db[2] == est.stages_[-1]["val_nmse_db"]


def test_training_history_layers_and_tolerance():
    disp = TrainingHistoryDisplay.from_history(HISTORY, kind="layers")
    np.testing.assert_allclose(disp.line_.get_xdata(), [1, 2])
    np.testing.assert_allclose(disp.line_.get_ydata(), [-6.0, -11.5])
    # Only the validation NMSE is required: no steps, no layers, no stage kinds.
    sparse = [{"val_nmse_db": v} for v in (-3.0, -4.0, -4.5)]
    disp = TrainingHistoryDisplay(history=sparse).plot()
    np.testing.assert_allclose(disp.line_.get_xdata(), [1, 2, 3])
    assert disp.layer_lines_ == []
    with pytest.raises(ValueError, match="empty"):
        TrainingHistoryDisplay(history=[])
    with pytest.raises(ValueError, match="val_nmse_db"):
        TrainingHistoryDisplay(history=[{"layer": 1}])
    with pytest.raises(ValueError, match="history_"):
        TrainingHistoryDisplay.from_estimator(object())
