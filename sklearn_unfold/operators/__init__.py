"""Sensing operators: the map ``A`` as an argument that every solver and network takes at call time.

* dense numpy generators (``gaussian_matrix``, …);
* :class:`LinearOperator` and its implementations: dense matrices, per-sample batches of
  matrices, SVD factors, ``scipy.sparse`` matrices, wrapped ``scipy.sparse.linalg``
  operators, and matrix-free transforms (random rows of the orthonormal DCT and DFT, 2-D
  partial Fourier masks, Kronecker products) that never form a matrix;
* operator ensembles, whose ``sample(n, random_state)`` draws one operator per sample, for
  training networks that must serve every matrix of a random family.

Batches are rows: the forward map of ``X (n, N)`` is ``X Aᵀ (n, M)``, the adjoint of
``V (n, M)`` is ``V conj(A) (n, N)``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from ._base import LinearOperator, conjugate_gradient
from .dense import DenseBatchOperator, DenseOperator, ScipyOperator, SparseOperator, SVDOperator
from .ensembles import (
    ConditionedEnsemble,
    FourierMask2DEnsemble,
    GaussianEnsemble,
    OperatorEnsemble,
    PartialDCTEnsemble,
    PartialDFTEnsemble,
    is_ensemble,
)
from .matrices import (
    bernoulli_matrix,
    conditioned_matrix,
    gaussian_matrix,
    partial_dct_matrix,
    random_rows,
)
from .ofdm import PilotDFT
from .transforms import FourierMask2D, KroneckerOperator, PartialDCT, PartialDFT, RealView

__all__ = [
    "ConditionedEnsemble",
    "DenseBatchOperator",
    "DenseOperator",
    "FourierMask2D",
    "FourierMask2DEnsemble",
    "GaussianEnsemble",
    "KroneckerOperator",
    "LinearOperator",
    "OperatorEnsemble",
    "PartialDCT",
    "PartialDCTEnsemble",
    "PartialDFT",
    "PartialDFTEnsemble",
    "PilotDFT",
    "RealView",
    "SVDOperator",
    "ScipyOperator",
    "SparseOperator",
    "as_operator",
    "bernoulli_matrix",
    "conditioned_matrix",
    "conjugate_gradient",
    "gaussian_matrix",
    "is_ensemble",
    "partial_dct_matrix",
    "random_rows",
]


def as_operator(A, *, dtype: torch.dtype | None = torch.float64, device=None,
                name: str = "A") -> LinearOperator:
    """Wrap ``A`` as a :class:`LinearOperator` with data of ``dtype`` on ``device``.

    Parameters
    ----------
    A : LinearOperator, array-like, tensor, scipy sparse matrix or scipy LinearOperator
        A 2-D array or tensor is one matrix shared by every sample; a 3-D one ``(n, M, N)``
        holds one matrix per sample.
    dtype : torch.dtype or None, default=torch.float64
        Precision of the operator's data (a complex operator keeps a complex dtype of that
        precision); ``None`` keeps what it has.
    device : str or torch.device, optional
    name : str, default="A"
        How error messages name the argument.

    Returns
    -------
    LinearOperator
    """
    if isinstance(A, LinearOperator):
        return A.to(dtype=dtype, device=device)
    if sp.issparse(A):
        return SparseOperator(A, dtype=dtype or torch.float64, device=device)
    if isinstance(A, spla.LinearOperator):
        return ScipyOperator(A, dtype=dtype).to(device=device)
    if isinstance(A, torch.Tensor):
        t = A.detach()
    else:
        try:
            arr = np.asarray(A)
        except Exception as exc:  # an object numpy cannot read
            raise TypeError(f"{name} must be an array, a tensor, a scipy sparse matrix, a scipy "
                            f"LinearOperator or a sklearn_unfold LinearOperator; got "
                            f"{type(A).__name__}.") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == bool):
            raise TypeError(f"{name} must be numeric (an array, a tensor, a sparse matrix or an "
                            f"operator); got an object of type {type(A).__name__} "
                            f"(numpy dtype {arr.dtype}).")
        t = torch.as_tensor(arr)
    if t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex()):
        t = t.to(torch.float64)
    if dtype is not None:
        t = t.to(dtype=torch.complex128 if t.is_complex() and dtype == torch.float64 else
                 (torch.complex64 if t.is_complex() and dtype == torch.float32 else dtype))
    if device is not None:
        t = t.to(device)
    if t.ndim == 2:
        return DenseOperator(t)
    if t.ndim == 3:
        return DenseBatchOperator(t)
    raise ValueError(f"{name} must be a 2-D matrix (n_measurements, n_features) or a 3-D batch of "
                     f"per-sample matrices (n_samples, n_measurements, n_features); got "
                     f"{t.ndim}-D input of shape {tuple(t.shape)}.")
