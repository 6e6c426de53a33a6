"""The classical estimators inside scikit-learn's model-selection and pipeline machinery."""

import pickle
import warnings

import joblib
import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sklearn_unfold import AMPRegressor, VAMPRegressor, nmse_db, nmse_scorer


def test_grid_search_over_max_iter_and_denoiser(giid):
    Y, X = giid["Y"][:120], giid["X"][:120]
    search = GridSearchCV(AMPRegressor(A=giid["A"], tol=0),
                          {"max_iter": [3, 15], "denoiser": ["soft", "bg"]},
                          scoring=nmse_scorer, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(Y, X)
    assert search.best_params_ == {"max_iter": 15, "denoiser": "bg"}
    assert search.best_estimator_.max_iter == 15
    assert search.cv_results_["mean_test_score"].shape == (4,)


def test_pipeline_and_cross_val_score(giid):
    Y, X = giid["Y"][:90], giid["X"][:90]
    # a measurement-side preprocessing step: a known gain that the pipeline undoes
    pipe = make_pipeline(FunctionTransformer(lambda Z: Z / 2.0),
                         VAMPRegressor(A=giid["A"], tol=1e-5))
    scores = cross_val_score(pipe, 2.0 * Y, X, scoring=nmse_scorer, cv=3)
    assert scores.shape == (3,) and np.all(scores > 40)


def test_clone_pickle_joblib_roundtrip(giid, tmp_path):
    est = AMPRegressor(A=giid["A"], tol=1e-5).fit(giid["Y"][:50], giid["X"][:50])
    fresh = clone(est)
    assert not hasattr(fresh, "A_") and fresh.get_params()["tol"] == 1e-5
    expected = est.predict(giid["Yt"][:10])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(giid["Yt"][:10]),
                                  expected)
    joblib.dump(est, tmp_path / "amp.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "amp.joblib").predict(giid["Yt"][:10]),
                                  expected)
    assert nmse_db(giid["Xt"][:10], expected) < -40


def test_estimating_the_matrix_from_pairs(giid):
    """With A=None the operator is estimated from the pairs (needs n_samples > N)."""
    est = AMPRegressor(tol=1e-5).fit(np.vstack([giid["Y"], giid["Yt"]]),
                                     np.vstack([giid["X"], giid["Xt"]]))
    rel = np.linalg.norm(est.A_ - giid["A"]) / np.linalg.norm(giid["A"])
    assert rel < 0.05
