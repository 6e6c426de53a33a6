"""scikit-learn's own estimator checks on every estimator of the package."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_unfold import (
    AMPRegressor,
    FISTARegressor,
    ISTARegressor,
    LinearMMSERegressor,
    OMPRegressor,
    VAMPRegressor,
)


def _estimators():
    ests = [
        ISTARegressor(max_iter=300),
        FISTARegressor(max_iter=300),
        AMPRegressor(max_iter=50),
        AMPRegressor(denoiser="soft", max_iter=50),
        VAMPRegressor(max_iter=50),
        LinearMMSERegressor(),
        LinearMMSERegressor(covariance="full"),
        OMPRegressor(),
    ]
    return ests


@parametrize_with_checks(_estimators())
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_every_classical_estimator_is_checked():
    """The learned estimators run the same checks in tests/test_learned_estimators.py."""
    import sklearn_unfold

    classical = {"ISTARegressor", "FISTARegressor", "AMPRegressor", "VAMPRegressor",
                 "LinearMMSERegressor", "OMPRegressor"}
    assert classical <= set(sklearn_unfold.__all__)
    assert {type(est).__name__ for est in _estimators()} == classical
    learned = {"LISTARegressor", "LAMPRegressor", "LDVAMPRegressor"}
    assert learned <= set(sklearn_unfold.__all__)
