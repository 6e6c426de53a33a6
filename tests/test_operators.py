import numpy as np
import pytest
import torch

from sklearn_unfold.operators import (
    DenseOperator,
    LinearOperator,
    as_operator,
    bernoulli_matrix,
    conditioned_matrix,
    gaussian_matrix,
    partial_dct_matrix,
)


def test_gaussian_matrix_scaling():
    A = gaussian_matrix(250, 500, random_state=0)
    assert A.shape == (250, 500)
    assert np.mean(np.sum(A**2, axis=0)) == pytest.approx(1.0, rel=0.02)
    np.testing.assert_array_equal(A, gaussian_matrix(250, 500, random_state=0))


def test_conditioned_matrix_spectrum():
    A = conditioned_matrix(100, 200, 15.0, random_state=0)
    s = np.linalg.svd(A, compute_uv=False)
    assert s[0] / s[-1] == pytest.approx(15.0, rel=1e-8)
    assert np.sum(A**2) == pytest.approx(200.0, rel=1e-10)
    with pytest.raises(ValueError, match="condition_number"):
        conditioned_matrix(10, 20, 0.5)


def test_partial_dct_rows_are_orthogonal():
    A = partial_dct_matrix(64, 128, random_state=0)
    np.testing.assert_allclose(A @ A.T, (128 / 64) * np.eye(64), atol=1e-10)
    with pytest.raises(ValueError, match="n_measurements <= n_features"):
        partial_dct_matrix(10, 5)


def test_bernoulli_matrix_entries():
    A = bernoulli_matrix(16, 32, random_state=0)
    np.testing.assert_allclose(np.abs(A), 1 / 4)


def test_dense_operator_adjoint_and_svd():
    A = gaussian_matrix(20, 30, random_state=1)
    op = as_operator(A)
    assert isinstance(op, DenseOperator) and op.shape == (20, 30)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 30, generator=g, dtype=torch.float64)
    v = torch.randn(5, 20, generator=g, dtype=torch.float64)
    lhs = (op.forward(x) * v).sum()
    rhs = (x * op.adjoint(v)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)
    U, s, V = op.svd()
    np.testing.assert_allclose(((U * s) @ V.T).numpy(), A, atol=1e-12)
    assert float(op.norm_sq()) == pytest.approx(np.linalg.norm(A, 2) ** 2, rel=1e-10)
    assert as_operator(op) is op


def test_svd_drops_null_singular_values():
    A = gaussian_matrix(10, 20, random_state=2)
    A = np.vstack([A, A[:2]])  # rank 10, 12 rows
    U, s, V = as_operator(A).svd()
    assert s.numel() == 10


def test_residual_matches_its_definition_for_dense_and_generic_operators():
    """``residual(y, x) = y − A x``: fused for dense matrices, composed for any other operator."""
    rng = np.random.default_rng(0)
    A = torch.as_tensor(gaussian_matrix(20, 40, random_state=0))
    X = torch.as_tensor(rng.standard_normal((5, 40)))
    Y = torch.as_tensor(rng.standard_normal((5, 20)))
    expected = Y - X @ A.T

    class Wrapped(LinearOperator):  # only forward/adjoint: uses the generic residual
        shape = (20, 40)

        def forward(self, x):
            return x @ A.T

        def adjoint(self, v):
            return v @ A

    for op in (DenseOperator(A), Wrapped()):
        torch.testing.assert_close(op.residual(Y, X), expected)
    # a single sample (1-D) falls back to the composed form
    torch.testing.assert_close(DenseOperator(A).residual(Y[0], X[0]), expected[0])
