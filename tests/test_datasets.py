import numpy as np
import pytest

from sklearn_unfold.datasets import (
    BernoulliGaussianPrior,
    make_compressed_sensing,
    make_sparse_signals,
    noise_variance_for_snr,
)


@pytest.mark.parametrize("problem", ["giid", "kappa15", "noiseless", "dct", "bernoulli"])
def test_shapes_and_reproducibility(problem):
    Y, X, A = make_compressed_sensing(problem, 20, random_state=3)
    assert Y.shape == (20, 250) and X.shape == (20, 500) and A.shape == (250, 500)
    Y2, X2, A2 = make_compressed_sensing(problem, 20, random_state=3)
    np.testing.assert_array_equal(Y, Y2)
    np.testing.assert_array_equal(A, A2)


def test_noise_variance_is_the_reference_one():
    assert noise_variance_for_snr(40, 0.1, 1.0, 500, 250) == pytest.approx(2e-5)
    Y, X, A, nv = make_compressed_sensing("giid", 2000, random_state=0, return_noise_var=True)
    assert nv == pytest.approx(2e-5)
    resid = Y - X @ A.T
    assert np.var(resid) == pytest.approx(2e-5, rel=0.02)
    snr = np.sum((X @ A.T) ** 2) / np.sum(resid**2)
    assert 10 * np.log10(snr) == pytest.approx(40.0, abs=0.2)
    Y, X, A = make_compressed_sensing("noiseless", 5, random_state=0)
    np.testing.assert_allclose(Y, X @ A.T, atol=1e-12)


def test_reuse_matrix_for_test_set():
    _, _, A = make_compressed_sensing("giid", 5, random_state=0)
    Yt, Xt, At = make_compressed_sensing("giid", 7, A=A, random_state=1)
    np.testing.assert_array_equal(At, A)
    np.testing.assert_allclose(Yt - Xt @ A.T, Yt - Xt @ At.T)


def test_prior_fit_and_sample():
    X = make_sparse_signals(4000, 100, sparsity=0.2, var=2.0, random_state=0)
    prior = BernoulliGaussianPrior().fit(X)
    assert prior.sparsity == pytest.approx(0.2, rel=0.03)
    assert prior.var == pytest.approx(2.0, rel=0.03)
    S = prior.sample(10, random_state=0)
    assert S.shape == (10, 100)
    with pytest.raises(ValueError, match="n_features is not set"):
        BernoulliGaussianPrior().sample(3)


def test_unknown_problem():
    with pytest.raises(ValueError, match="problem must be one of .* got 'nope'"):
        make_compressed_sensing("nope")
