"""Operator ensembles: random families of sensing operators.

An ensemble draws operators; ``sample(n, random_state)`` returns one per sample (a per-sample
operator of shape ``(n, M, N)``), which is how a network is trained to serve every matrix of a
family rather than one fixed matrix (as in the matrix-agnostic training of unfolded networks,
e.g. Schnoor, Behboodi & Rauhut, "Generalization error bounds for iterative recovery
algorithms unfolded as neural networks", Inf. Inference 12, 2023). Draws use a numpy
``RandomState`` (``sklearn.utils.check_random_state``), so they are reproducible on any device.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch
from sklearn.utils import check_random_state

from ._base import LinearOperator
from .dense import DenseBatchOperator, DenseOperator, SVDOperator
from .matrices import random_rows
from .transforms import FourierMask2D, PartialDCT, PartialDFT

__all__ = [
    "ConditionedEnsemble",
    "FourierMask2DEnsemble",
    "GaussianEnsemble",
    "OperatorEnsemble",
    "PartialDCTEnsemble",
    "PartialDFTEnsemble",
    "is_ensemble",
    "random_fourier_mask",
]


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value}.")
    return int(value)


def _count(n_measurements, N: int) -> int:
    if isinstance(n_measurements, (bool, np.bool_)):
        raise TypeError("n_measurements must be an int or a fraction in (0, 1]; got a bool.")
    if isinstance(n_measurements, (float, np.floating)):
        if not 0 < n_measurements <= 1:
            raise ValueError(f"a fraction of measurements must lie in (0, 1]; got {n_measurements}.")
        return max(1, int(round(n_measurements * N)))
    M = int(n_measurements)
    if not 1 <= M <= N:
        raise ValueError(f"n_measurements must lie in [1, {N}] for {N} coefficients; got {M}.")
    return M


def random_fourier_mask(image_shape: tuple[int, int], n_measurements, rng: np.random.RandomState,
                        center: int | float = 0) -> np.ndarray:
    """A boolean ``(H, W)`` mask with ``M`` True entries: the ``center`` block of lowest
    frequencies (a side in pixels, or a fraction of each side when a float < 1; in the
    unshifted ``fft2`` layout, so it wraps around index 0) plus uniformly drawn others."""
    H, W = (int(s) for s in image_shape)
    M = _count(n_measurements, H * W)
    if isinstance(center, (float, np.floating)) and 0 < center < 1:
        ch, cw = max(1, round(center * H)), max(1, round(center * W))
    elif center >= 0 and float(center) == int(center):
        ch, cw = min(int(center), H), min(int(center), W)
    else:
        raise ValueError(f"center must be a side in pixels (int >= 0) or a fraction in (0, 1); "
                         f"got {center}.")
    mask = np.zeros((H, W), dtype=bool)
    mask[np.ix_((np.arange(ch) - ch // 2) % H, (np.arange(cw) - cw // 2) % W)] = True
    n_center = int(mask.sum())
    if n_center > M:
        raise ValueError(f"the {ch}x{cw} low-frequency centre holds {n_center} coefficients, more "
                         f"than n_measurements={M}; use a smaller center.")
    free = np.flatnonzero(~mask.ravel())
    mask.flat[rng.choice(free, size=M - n_center, replace=False)] = True
    return mask



class OperatorEnsemble:
    """A random family of ``(M, N)`` operators.

    Subclasses implement ``_draw(n_draws, rng)`` (the random data of ``n_draws`` operators, as
    numpy arrays) and ``_build(data, repeats, dtype, device)`` (the operator; ``repeats=None``
    builds the shared operator of a single draw).
    """

    #: ``(M, N)``, the shape of every operator drawn.
    shape: tuple[int, int]
    #: Whether the operators drawn are complex (their measurements and signals are then complex).
    is_complex: bool = False

    @property
    def n_measurements(self) -> int:
        return int(self.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.shape[1])

    def sample(self, n_samples: int, random_state=None, *, repeats: int = 1,
               dtype: torch.dtype = torch.float64, device=None) -> LinearOperator:
        """One operator per sample: a per-sample operator of shape ``(n_samples, M, N)``.

        Parameters
        ----------
        n_samples : int
        random_state : int, RandomState instance or None
        repeats : int, default=1
            Each of the ``n_samples / repeats`` distinct operators drawn serves ``repeats``
            consecutive samples (cheaper draws for large batches); must divide ``n_samples``.
        dtype : torch.dtype, default=torch.float64
            Precision of the operator's data (complex families keep a complex dtype).
        device : str or torch.device, optional

        Returns
        -------
        LinearOperator
        """
        n_samples = _positive_int(n_samples, "n_samples")
        repeats = _positive_int(repeats, "repeats")
        if n_samples % repeats:
            raise ValueError(f"repeats={repeats} must divide n_samples={n_samples} (each drawn "
                             "operator serves `repeats` consecutive samples).")
        rng = check_random_state(random_state)
        return self._build(self._draw(n_samples // repeats, rng), repeats, dtype, device)

    def sample_one(self, random_state=None, *, dtype: torch.dtype = torch.float64,
                   device=None) -> LinearOperator:
        """One draw, as a shared operator of shape ``(M, N)`` (the first operator that
        :meth:`sample` draws from the same ``random_state``)."""
        rng = check_random_state(random_state)
        return self._build(self._draw(1, rng), None, dtype, device)

    def _draw(self, n_draws: int, rng: np.random.RandomState):  # pragma: no cover - interface
        raise NotImplementedError

    def _build(self, data, repeats: int | None, dtype, device
               ) -> LinearOperator:  # pragma: no cover - interface
        raise NotImplementedError

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters (scikit-learn style)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def fingerprint(self) -> str:
        """A string that changes when the family does."""
        return repr(self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def is_ensemble(obj) -> bool:
    """Whether ``obj`` is an :class:`OperatorEnsemble` (it draws operators: ``sample``, ``shape``)."""
    return isinstance(obj, OperatorEnsemble) and hasattr(obj, "sample") and hasattr(obj, "shape")


def _tensor(a: np.ndarray, dtype, device) -> torch.Tensor:
    return torch.as_tensor(a).to(dtype=dtype, device=device)


class GaussianEnsemble(OperatorEnsemble):
    """I.i.d. Gaussian matrices with entries ``N(0, 1/M)`` (columns of unit norm on average),
    as :func:`~sklearn_unfold.operators.gaussian_matrix`; drawn as dense (batched) matrices.

    Parameters
    ----------
    n_measurements, n_features : int
        ``M`` and ``N``.
    """

    def __init__(self, n_measurements: int, n_features: int):
        self.shape = (_positive_int(n_measurements, "n_measurements"),
                      _positive_int(n_features, "n_features"))

    def get_params(self, deep: bool = True) -> dict:
        return {"n_measurements": self.shape[0], "n_features": self.shape[1]}

    def _draw(self, n_draws, rng):
        M, N = self.shape
        return rng.standard_normal((n_draws, M, N)) / math.sqrt(M)

    def _build(self, data, repeats, dtype, device):
        A = _tensor(data, dtype, device)
        return DenseOperator(A[0]) if repeats is None else DenseBatchOperator(A, repeats)


class ConditionedEnsemble(OperatorEnsemble):
    r"""Matrices ``A = U diag(s) Vᵀ`` with Haar-distributed ``U``, ``V`` and a fixed spectrum.

    The ``R = min(M, N)`` singular values form a geometric sequence from 1 to ``1/κ``, scaled
    so that ``‖A‖²_F = N`` (as :func:`~sklearn_unfold.operators.conditioned_matrix`); ``U``
    and ``V`` are the ``Q`` factors of Gaussian matrices with signs fixed by ``diag(R)``
    (Mezzadri, "How to generate random matrices from the classical compact groups", Notices
    AMS 54, 2007). Drawn as :class:`~sklearn_unfold.operators.SVDOperator` factors, so VAMP's
    LMMSE stage never computes an SVD.

    Parameters
    ----------
    n_measurements, n_features : int
    condition_number : float, default=15.0
        ``κ >= 1``.
    """

    def __init__(self, n_measurements: int, n_features: int, condition_number: float = 15.0):
        self.shape = (_positive_int(n_measurements, "n_measurements"),
                      _positive_int(n_features, "n_features"))
        if not float(condition_number) >= 1:
            raise ValueError(f"condition_number must be >= 1; got {condition_number}.")
        self.condition_number = float(condition_number)

    def get_params(self, deep: bool = True) -> dict:
        return {"n_measurements": self.shape[0], "n_features": self.shape[1],
                "condition_number": self.condition_number}

    def singular_values(self) -> np.ndarray:
        """The common spectrum ``s`` (``R`` values, decreasing, ``Σ s² = N``)."""
        R = min(self.shape)
        s = self.condition_number ** (-np.arange(R) / max(R - 1, 1))
        return s * np.sqrt(self.shape[1] / np.sum(s**2))

    def _draw(self, n_draws, rng):
        M, N = self.shape
        R = min(M, N)
        draws = [(rng.standard_normal((M, R)), rng.standard_normal((N, R))) for _ in range(n_draws)]
        return tuple(np.stack(G) for G in zip(*draws, strict=True))  # draw k alone is sample_one

    @staticmethod
    def _haar(G: np.ndarray) -> torch.Tensor:
        Q, Rm = torch.linalg.qr(torch.as_tensor(G, dtype=torch.float64))
        sign = torch.sign(torch.diagonal(Rm, dim1=-2, dim2=-1))
        return Q * torch.where(sign == 0, torch.ones_like(sign), sign).unsqueeze(-2)

    def _build(self, data, repeats, dtype, device):
        U, V = (self._haar(G).to(dtype=dtype, device=device) for G in data)
        s = _tensor(self.singular_values(), dtype, device).expand(U.shape[0], -1).contiguous()
        if repeats is None:
            return SVDOperator(U[0], s[0], V[0])
        return SVDOperator(U, s, V, repeats)


class PartialDCTEnsemble(OperatorEnsemble):
    """Random rows of the orthonormal DCT (scaled by ``√(N/M)``): one row set per draw, each
    drawn as :func:`~sklearn_unfold.operators.random_rows` (so ``sample_one(seed)`` is
    ``PartialDCT.random(M, N, seed)``).

    Parameters
    ----------
    n_measurements, n_features : int
        ``M <= N``.
    """

    _op = PartialDCT

    def __init__(self, n_measurements: int, n_features: int):
        M, N = _positive_int(n_measurements, "n_measurements"), _positive_int(n_features,
                                                                               "n_features")
        if M > N:
            raise ValueError(f"a partial transform needs n_measurements <= n_features; got {M} > "
                             f"{N}.")
        self.shape = (M, N)

    def get_params(self, deep: bool = True) -> dict:
        return {"n_measurements": self.shape[0], "n_features": self.shape[1]}

    def _draw(self, n_draws, rng):
        return np.stack([random_rows(*self.shape, random_state=rng) for _ in range(n_draws)])

    def _build(self, data, repeats, dtype, device):
        if repeats is None:
            return self._op(data[0], self.shape[1], dtype=dtype, device=device)
        return self._op(np.repeat(data, repeats, axis=0), self.shape[1], dtype=dtype,
                        device=device)


class PartialDFTEnsemble(PartialDCTEnsemble):
    """Random rows of the unitary DFT (scaled by ``√(N/M)``): complex operators
    (:class:`~sklearn_unfold.operators.PartialDFT`); otherwise as :class:`PartialDCTEnsemble`."""

    _op = PartialDFT
    is_complex = True


class FourierMask2DEnsemble(OperatorEnsemble):
    """Random 2-D k-space masks of ``n_measurements`` coefficients each, always keeping the
    ``center`` block of lowest frequencies (:class:`~sklearn_unfold.operators.FourierMask2D`,
    complex; drawn as :meth:`FourierMask2D.random`).

    Parameters
    ----------
    image_shape : (int, int)
    n_measurements : int or float
        A count, or a fraction of ``H·W`` when a float.
    center : int or float, default=0
        Side of the always-kept low-frequency block in pixels, or a fraction of each side.
    """

    is_complex = True

    def __init__(self, image_shape: tuple[int, int], n_measurements: int | float,
                 center: int | float = 0):
        H, W = (_positive_int(s, "image_shape entries") for s in image_shape)
        self.image_shape = (H, W)
        self.n_measurements_arg = n_measurements
        self.center = center
        mask = random_fourier_mask(self.image_shape, n_measurements, np.random.RandomState(0),
                                   center)  # validates the arguments
        self.shape = (int(mask.sum()), H * W)

    def get_params(self, deep: bool = True) -> dict:
        return {"image_shape": self.image_shape, "n_measurements": self.n_measurements_arg,
                "center": self.center}

    def _draw(self, n_draws, rng):
        return np.stack([random_fourier_mask(self.image_shape, self.n_measurements_arg, rng,
                                             self.center) for _ in range(n_draws)])

    def _build(self, data, repeats, dtype, device):
        masks = data[0] if repeats is None else np.repeat(data, repeats, axis=0)
        return FourierMask2D(masks, self.image_shape, dtype=dtype, device=device)
