import numpy as np
import pytest

from sklearn_unfold import AMPRegressor, nmse_db, nmse_scorer
from sklearn_unfold.metrics import nmse


def test_nmse_values():
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert nmse(X, np.zeros_like(X)) == pytest.approx(1.0)
    assert nmse_db(X, 1.1 * X) == pytest.approx(-20.0)


def test_nmse_errors():
    with pytest.raises(ValueError, match=r"same shape; got \(2,\) and \(3,\)"):
        nmse_db(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="all zeros"):
        nmse_db(np.zeros(3), np.ones(3))


def test_scorer_is_negated_nmse_db(giid):
    est = AMPRegressor(A=giid["A"], tol=1e-5).fit(giid["Y"], giid["X"])
    score = nmse_scorer(est, giid["Yt"], giid["Xt"])
    assert score == pytest.approx(-nmse_db(giid["Xt"], est.predict(giid["Yt"])))
    assert score > 40
