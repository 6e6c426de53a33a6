"""Sensing-matrix generators (numpy, ``random_state``), in the style of ``sklearn.datasets``.

Each returns a dense float64 ``(M, N)`` array. For operators that are never formed as a dense
matrix (fast transforms, per-sample batches, ensembles) see :mod:`sklearn_unfold.operators`.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct
from scipy.stats import ortho_group, unitary_group
from sklearn.utils import check_random_state


def gaussian_matrix(n_measurements: int, n_features: int, *, random_state=None,
                    complex_valued: bool = False) -> np.ndarray:
    """I.i.d. Gaussian sensing matrix with entries ``N(0, 1/M)`` (columns of unit norm on average).

    Parameters
    ----------
    n_measurements, n_features : int
        ``M`` and ``N``.
    random_state : int, RandomState instance or None
    complex_valued : bool, default=False
        Circularly-symmetric complex entries ``CN(0, 1/M)`` (``E|a_ij|² = 1/M``) instead.

    Returns
    -------
    A : ndarray of shape (n_measurements, n_features), float64 (complex128 if complex_valued)
    """
    rng = check_random_state(random_state)
    shape = (n_measurements, n_features)
    if complex_valued:
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(
            2.0 * n_measurements)
    return rng.standard_normal(shape) / np.sqrt(n_measurements)


def conditioned_matrix(
    n_measurements: int, n_features: int, condition_number: float = 15.0, *, random_state=None,
    complex_valued: bool = False,
) -> np.ndarray:
    r"""Sensing matrix ``A = U diag(s) Vᵀ`` with a given condition number.

    ``U`` and ``V`` are Haar-distributed orthogonal matrices, the ``min(M, N)`` singular values
    form a geometric sequence from 1 down to ``1/condition_number``, and the whole matrix is
    scaled so that ``‖A‖²_F = N`` (the ``kappa15`` reference problem of
    :func:`~sklearn_unfold.datasets.make_compressed_sensing` has ``condition_number=15``).
    With ``complex_valued=True``, ``U`` and ``V`` are Haar-distributed unitary matrices and
    ``A = U diag(s) Vᴴ``.
    """
    if condition_number < 1:
        raise ValueError(f"condition_number must be >= 1; got {condition_number}.")
    rng = check_random_state(random_state)
    rank = min(n_measurements, n_features)
    group = unitary_group if complex_valued else ortho_group
    U = group.rvs(n_measurements, random_state=rng) if n_measurements > 1 else np.ones((1, 1))
    V = group.rvs(n_features, random_state=rng) if n_features > 1 else np.ones((1, 1))
    s = condition_number ** (-np.arange(rank) / max(rank - 1, 1))
    s *= np.sqrt(n_features / np.sum(s**2))
    return (U[:, :rank] * s) @ V[:, :rank].conj().T


def partial_dct_matrix(n_measurements: int, n_features: int, *, random_state=None) -> np.ndarray:
    """``M`` random rows of the orthonormal ``N``-point DCT-II matrix, scaled by ``√(N/M)``."""
    if n_measurements > n_features:
        raise ValueError(
            f"a partial DCT needs n_measurements <= n_features; got {n_measurements} > {n_features}."
        )
    rows = random_rows(n_measurements, n_features, random_state=random_state)
    full = dct(np.eye(n_features), type=2, norm="ortho", axis=0)
    return full[rows] * np.sqrt(n_features / n_measurements)


def random_rows(n_measurements: int, n_features: int, *, random_state=None) -> np.ndarray:
    """``M`` distinct row indices out of ``N``, sorted: the rows a partial transform keeps.

    :func:`partial_dct_matrix` and the matrix-free
    :class:`~sklearn_unfold.operators.PartialDCT` draw the same rows from the same
    ``random_state``.
    """
    if n_measurements > n_features:
        raise ValueError(
            f"a partial transform needs n_measurements <= n_features; got {n_measurements} > "
            f"{n_features}."
        )
    rng = check_random_state(random_state)
    return np.sort(rng.choice(n_features, size=n_measurements, replace=False))


def bernoulli_matrix(n_measurements: int, n_features: int, *, random_state=None) -> np.ndarray:
    """Random ``±1/√M`` (Rademacher) sensing matrix."""
    rng = check_random_state(random_state)
    signs = rng.randint(0, 2, size=(n_measurements, n_features)) * 2.0 - 1.0
    return signs / np.sqrt(n_measurements)
