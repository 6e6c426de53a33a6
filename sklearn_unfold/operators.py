"""Sensing matrices and the linear-operator layer.

Two halves:

* ``*_matrix`` generators (numpy, ``random_state``), in the style of ``sklearn.datasets``;
* :class:`LinearOperator`, the torch-side view of ``A`` that every step function uses. Batches
  are rows, so the forward map of a batch ``X (n, N)`` is ``X Aᵀ (n, M)`` and the adjoint of
  ``V (n, M)`` is ``V A (n, N)``.

The step functions only call :meth:`LinearOperator.forward`, :meth:`~LinearOperator.adjoint`
and, for VAMP, :meth:`~LinearOperator.svd`; a structured operator (no dense matrix), a
complex-valued one, or one operator per sample (a leading batch dimension on the matrix) plugs
in by implementing those methods.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.fft import dct
from scipy.stats import ortho_group
from sklearn.utils import check_random_state
from torch import Tensor


def gaussian_matrix(n_measurements: int, n_features: int, *, random_state=None) -> np.ndarray:
    """I.i.d. Gaussian sensing matrix with entries ``N(0, 1/M)`` (columns of unit norm on average).

    Parameters
    ----------
    n_measurements, n_features : int
        ``M`` and ``N``.
    random_state : int, RandomState instance or None

    Returns
    -------
    A : ndarray of shape (n_measurements, n_features)
    """
    rng = check_random_state(random_state)
    return rng.standard_normal((n_measurements, n_features)) / np.sqrt(n_measurements)


def conditioned_matrix(
    n_measurements: int, n_features: int, condition_number: float = 15.0, *, random_state=None
) -> np.ndarray:
    r"""Sensing matrix ``A = U diag(s) Vᵀ`` with a given condition number.

    ``U`` and ``V`` are Haar-distributed orthogonal matrices, the ``min(M, N)`` singular values
    form a geometric sequence from 1 down to ``1/condition_number``, and the whole matrix is
    scaled so that ``‖A‖²_F = N`` (the ``kappa`` reference problem of ALGORITHMS.md).
    """
    if condition_number < 1:
        raise ValueError(f"condition_number must be >= 1; got {condition_number}.")
    rng = check_random_state(random_state)
    rank = min(n_measurements, n_features)
    U = ortho_group.rvs(n_measurements, random_state=rng) if n_measurements > 1 else np.ones((1, 1))
    V = ortho_group.rvs(n_features, random_state=rng) if n_features > 1 else np.ones((1, 1))
    s = condition_number ** (-np.arange(rank) / max(rank - 1, 1))
    s *= np.sqrt(n_features / np.sum(s**2))
    return (U[:, :rank] * s) @ V[:, :rank].T


def partial_dct_matrix(n_measurements: int, n_features: int, *, random_state=None) -> np.ndarray:
    """``M`` random rows of the orthonormal ``N``-point DCT-II matrix, scaled by ``√(N/M)``."""
    if n_measurements > n_features:
        raise ValueError(
            f"a partial DCT needs n_measurements <= n_features; got {n_measurements} > {n_features}."
        )
    rng = check_random_state(random_state)
    rows = np.sort(rng.choice(n_features, size=n_measurements, replace=False))
    full = dct(np.eye(n_features), type=2, norm="ortho", axis=0)
    return full[rows] * np.sqrt(n_features / n_measurements)


def bernoulli_matrix(n_measurements: int, n_features: int, *, random_state=None) -> np.ndarray:
    """Random ``±1/√M`` (Rademacher) sensing matrix."""
    rng = check_random_state(random_state)
    signs = rng.randint(0, 2, size=(n_measurements, n_features)) * 2.0 - 1.0
    return signs / np.sqrt(n_measurements)


class LinearOperator:
    """Abstract linear map ``A: R^N -> R^M`` acting on row batches.

    Subclasses implement :meth:`forward` (``X -> X Aᵀ``) and :meth:`adjoint` (``V -> V A``);
    :meth:`svd` and :meth:`spectral_norm_sq` have dense fall-backs through :meth:`to_dense`.
    """

    shape: tuple[int, int]

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def adjoint(self, v: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def to_dense(self) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def residual(self, y: Tensor, x: Tensor) -> Tensor:
        """``y − A x`` on row batches (``Y − X Aᵀ``); dense operators fuse it into one GEMM."""
        return y - self.forward(x)

    @property
    def n_measurements(self) -> int:
        return self.shape[0]

    @property
    def n_features(self) -> int:
        return self.shape[1]

    def spectral_norm_sq(self) -> float:
        """``‖A‖₂²``, the Lipschitz constant of the least-squares gradient."""
        return float(torch.linalg.matrix_norm(self.to_dense(), ord=2) ** 2)

    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        """Thin SVD ``A = U diag(s) Vᵀ`` restricted to the non-zero singular values.

        Returns ``U (M, R)``, ``s (R,)``, ``V (N, R)``.
        """
        U, s, Vh = torch.linalg.svd(self.to_dense(), full_matrices=False)
        keep = s > s[0] * max(self.shape) * torch.finfo(s.dtype).eps if s.numel() else s > 0
        return U[:, keep], s[keep], Vh[keep].T


class DenseOperator(LinearOperator):
    """A dense matrix ``A`` of shape ``(M, N)`` as a :class:`LinearOperator`."""

    def __init__(self, A: Tensor):
        self.A = A
        self.shape = (int(A.shape[0]), int(A.shape[1]))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.A.T

    def adjoint(self, v: Tensor) -> Tensor:
        return v @ self.A

    def residual(self, y: Tensor, x: Tensor) -> Tensor:
        if x.ndim == 2 and y.ndim == 2:
            return torch.addmm(y, x, self.A.T, alpha=-1.0)
        return y - self.forward(x)

    def to_dense(self) -> Tensor:
        return self.A


def as_operator(A, *, dtype: torch.dtype = torch.float64, device=None) -> LinearOperator:
    """Wrap ``A`` (array, tensor or :class:`LinearOperator`) as a :class:`LinearOperator`."""
    if isinstance(A, LinearOperator):
        return A
    if isinstance(A, Tensor):
        return DenseOperator(A.to(dtype=dtype, device=device))
    return DenseOperator(torch.as_tensor(np.asarray(A), dtype=dtype, device=device))
