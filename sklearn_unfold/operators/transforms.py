"""Matrix-free operators: partial orthonormal transforms, Kronecker products and real views.

None of them forms a matrix: the maps are ``torch.fft`` calls, gathers and scatters (so they
run on any device, in single or double precision, and are differentiable in the signal).
Partial orthonormal transforms are the structured sensing operators of compressed sensing
(Candès, Romberg & Tao, "Robust uncertainty principles", IEEE Trans. Inf. Theory 52, 2006;
Lustig, Donoho & Pauly, "Sparse MRI", Magn. Reson. Med. 58, 2007). Their rows are orthonormal,
so ``A Aᴴ = c I`` and VAMP's LMMSE stage is closed form (Rangan, Schniter & Fletcher, "Vector
approximate message passing", IEEE Trans. Inf. Theory 65, 2019).
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from ._base import LinearOperator, _real_dtype
from .dense import _digest, _index_tensor, _target_dtype
from .matrices import random_rows

__all__ = ["FourierMask2D", "KroneckerOperator", "PartialDCT", "PartialDFT", "RealView"]


# ---------------------------------------------------------------------- DCT through the FFT
@lru_cache(maxsize=32)
def _dct_tables(N: int, dtype: torch.dtype, device: torch.device):
    """Makhoul's reordering, its inverse, and the scaled twiddles ``s_k cos θ_k``, ``s_k sin θ_k``."""
    perm = np.concatenate([np.arange(0, N, 2), np.arange(1, N, 2)[::-1]])
    theta = np.arange(N) * (math.pi / (2 * N))
    s = np.where(np.arange(N) == 0, math.sqrt(1.0 / N), math.sqrt(2.0 / N))
    as_t = lambda a, dt: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
    return (as_t(perm, torch.int64), as_t(np.argsort(perm), torch.int64),
            as_t(s * np.cos(theta), dtype), as_t(s * np.sin(theta), dtype))


def dct_ortho(x: Tensor) -> Tensor:
    r"""Orthonormal DCT-II along the last axis (``scipy.fft.dct(x, type=2, norm="ortho")``).

    .. math:: X_k = s_k \sum_{n=0}^{N-1} x_n \cos\frac{\pi k (2n+1)}{2N},\quad
              s_0 = \sqrt{1/N},\ s_k = \sqrt{2/N}

    computed with one ``N``-point FFT (Makhoul, "A fast cosine transform in one and two
    dimensions", IEEE Trans. ASSP 28, 1980). Complex input is transformed part by part.
    """
    if x.is_complex():
        return torch.complex(dct_ortho(x.real), dct_ortho(x.imag))
    perm, _, c, s = _dct_tables(x.shape[-1], x.dtype, x.device)
    V = torch.fft.fft(x.index_select(-1, perm))
    return V.real * c + V.imag * s


def idct_ortho(X: Tensor) -> Tensor:
    """Inverse (and transpose) of :func:`dct_ortho`: the orthonormal DCT-III along the last axis."""
    if X.is_complex():
        return torch.complex(idct_ortho(X.real), idct_ortho(X.imag))
    _, inv, c, s = _dct_tables(X.shape[-1], X.dtype, X.device)
    w = torch.fft.ifft(torch.complex(X * c, X * s), norm="forward").real
    return w.index_select(-1, inv)


def _check_rows(rows, n_features: int, what: str) -> np.ndarray:
    """Integer row sets, 1-D (shared) or 2-D (one per sample), in range and distinct."""
    arr = np.asarray(rows.detach().cpu() if isinstance(rows, Tensor) else rows)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} rows must be integer indices; got an array of dtype {arr.dtype}.")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{what} rows must be 1-D (M,) for a shared operator or 2-D (n, M) for "
                         f"one row set per sample; got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{what} needs at least one row and one sample; got shape {arr.shape}.")
    if arr.shape[-1] > n_features:
        raise ValueError(f"a {what} needs n_measurements <= n_features; got {arr.shape[-1]} rows of an "
                         f"{n_features}-point transform.")
    if arr.min() < 0 or arr.max() >= n_features:
        raise ValueError(f"{what} rows must lie in [0, {n_features}); got values from "
                         f"{arr.min()} to {arr.max()}.")
    srt = np.sort(arr, axis=-1)
    if np.any(srt[..., 1:] == srt[..., :-1]):
        raise ValueError(f"{what} rows must be distinct within each row set.")
    return arr.astype(np.int64)


def _check_scale(scale, M: int, N: int) -> float:
    value = math.sqrt(N / M) if isinstance(scale, str) and scale == "auto" else scale
    if isinstance(value, str) or not (float(value) > 0 and math.isfinite(float(value))):
        raise ValueError(f"scale must be 'auto' or a positive number; got {scale!r}.")
    return float(value)


def _per_sample_constant(value: float, op: LinearOperator) -> Tensor:
    return torch.full((op.shape[0], 1) if op.per_sample else (), value, dtype=torch.float64)


# ---------------------------------------------------------------------- partial transforms
class _PartialTransform(LinearOperator):
    """``A x = scale · (T x)[rows]`` for an orthonormal (unitary) transform ``T``.

    Subclasses define ``_transform`` / ``_inverse`` (``T`` and ``T⁻¹ = Tᴴ`` on rows of length N),
    ``_complex`` and ``_name``.
    """

    _complex = False
    _name = "transform"

    def _init_rows(self, rows, n_features: int, scale, dtype, device) -> None:
        n_features = int(n_features)
        if n_features < 1:
            raise ValueError(f"n_features must be a positive integer; got {n_features}.")
        arr = _check_rows(rows, n_features, self._name)
        device = torch.device("cpu" if device is None else device)
        self.rows = torch.as_tensor(arr, device=device)
        M = arr.shape[-1]
        self.scale = _check_scale(scale, M, n_features)
        self.shape = (M, n_features) if arr.ndim == 1 else (arr.shape[0], M, n_features)
        self._dtype = self._cast(torch.float64, dtype)
        #: ``A Aᴴ = scale² I``: the rows of an orthonormal transform are orthonormal.
        self.row_orthogonal_scale = self.scale**2

    @classmethod
    def random(cls, n_measurements: int, n_features: int, random_state=None, **kwargs):
        """``M`` random distinct rows, drawn by :func:`~sklearn_unfold.operators.random_rows`
        (for the DCT: the matrix of :func:`~sklearn_unfold.operators.partial_dct_matrix` with the
        same ``random_state``); ``kwargs`` go to the constructor."""
        return cls(random_rows(n_measurements, n_features, random_state=random_state),
                   n_features, **kwargs)

    def _cast(self, current: torch.dtype, dtype: torch.dtype | None) -> torch.dtype:
        out = current if dtype is None else dtype
        out = _target_dtype(torch.complex128, out) if self._complex else _real_dtype(out)
        if out not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
            raise TypeError(f"{type(self).__name__} supports float32/float64 (complex64/128) "
                            f"data; got {out}.")
        return out

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self.rows.device

    def _prepare(self, x: Tensor) -> Tensor:
        if self.per_sample:
            self.check_batch(x.shape[0])
        return x.to(device=self.device, dtype=torch.promote_types(x.dtype, self._dtype))

    def forward(self, x: Tensor) -> Tensor:
        z = self._transform(self._prepare(x))
        z = z.gather(-1, self.rows) if self.per_sample else z.index_select(-1, self.rows)
        return z * self.scale

    def adjoint(self, v: Tensor) -> Tensor:
        v = self._prepare(v)
        z = v.new_zeros((v.shape[0], self.n_features))
        z = z.scatter(-1, self.rows, v) if self.per_sample else z.index_copy(-1, self.rows, v)
        return self._inverse(z) * self.scale

    def take(self, index) -> LinearOperator:
        if not self.per_sample:
            return self
        out = copy.copy(self)
        out.__dict__.pop("_memo_values", None)  # values of this operator, not of the copy
        out.rows = self.rows[_index_tensor(index, self.shape[0], self.device)]
        out.shape = (int(out.rows.shape[0]),) + self.shape[1:]
        return out

    def to(self, dtype=None, device=None) -> LinearOperator:
        new_dtype = self._cast(self._dtype, dtype)
        device = self.device if device is None else torch.device(device)
        if new_dtype == self._dtype and device == self.device:
            return self
        out = copy.copy(self)
        out.__dict__.pop("_memo_values", None)  # values of this operator, not of the copy
        out._dtype, out.rows = new_dtype, self.rows.to(device)
        return out

    def _norm_sq(self) -> Tensor:
        return _per_sample_constant(self.scale**2, self)

    def _frobenius_sq(self) -> Tensor:
        return _per_sample_constant(self.n_measurements * self.scale**2, self)

    def fingerprint(self) -> str:
        return f"{self._name}{self.shape}:{self.scale!r}:{_digest(self.rows)}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(shape={self.shape}, scale={self.scale:.4g}, "
                f"dtype={self._dtype})")


class PartialDCT(_PartialTransform):
    r"""``M`` rows of the orthonormal ``N``-point DCT-II, scaled: a real matrix-free operator.

    .. math:: A x = c\,(C x)_{\mathcal R}, \qquad Aᵀ v = c\,Cᵀ P_{\mathcal R}ᵀ v, \qquad
              A Aᵀ = c^2 I

    with ``C`` the orthonormal DCT-II matrix (``scipy.fft.dct(type=2, norm="ortho")``),
    ``𝓡`` the kept rows and ``P_𝓡ᵀ`` the zero-filling scatter. With ``c = √(N/M)`` (the
    default) the matrix equals :func:`~sklearn_unfold.operators.partial_dct_matrix`.

    Parameters
    ----------
    rows : array-like of int, shape (M,) or (n, M)
        The kept rows: one set shared by every sample, or one distinct set per sample.
    n_features : int
        ``N``, the transform length.
    scale : "auto" or float, default="auto"
        ``c``; ``"auto"`` is ``√(N/M)``.
    dtype : torch.dtype, default=torch.float64
        float32 or float64.
    device : str or torch.device, optional
    """

    _name = "partial-DCT"

    def __init__(self, rows, n_features: int, scale: str | float = "auto", *,
                 dtype: torch.dtype = torch.float64, device=None):
        self._init_rows(rows, n_features, scale, dtype, device)

    def _transform(self, x: Tensor) -> Tensor:
        return dct_ortho(x)

    def _inverse(self, z: Tensor) -> Tensor:
        return idct_ortho(z)


class PartialDFT(_PartialTransform):
    r"""``M`` rows of the unitary ``N``-point DFT, scaled: a complex matrix-free operator.

    .. math:: A x = c\,(F x)_{\mathcal R}, \quad F_{kn} = \frac{e^{-2\pi i kn/N}}{\sqrt N},
              \qquad Aᴴ v = c\,Fᴴ P_{\mathcal R}ᵀ v, \qquad A Aᴴ = c^2 I

    A real signal gives complex measurements; wrap in :class:`RealView` for the real-valued
    solvers. Parameters as :class:`PartialDCT` (``dtype`` complex64 or complex128; a real dtype
    is taken as its precision).
    """

    _complex = True
    _name = "partial-DFT"

    def __init__(self, rows, n_features: int, scale: str | float = "auto", *,
                 dtype: torch.dtype = torch.complex128, device=None):
        self._init_rows(rows, n_features, scale, dtype, device)

    def _transform(self, x: Tensor) -> Tensor:
        return torch.fft.fft(x, norm="ortho")

    def _inverse(self, z: Tensor) -> Tensor:
        return torch.fft.ifft(z, norm="ortho")


class FourierMask2D(_PartialTransform):
    r"""2-D partial Fourier sampling (MRI k-space masks): a complex matrix-free operator.

    The signal is an image ``X (H, W)`` flattened row-major to ``N = H·W``;

    .. math:: A x = c\,\big(\mathrm{vec}(F_H X F_Wᵀ)\big)_{\Omega}, \qquad
              Aᴴ v = c\,\mathrm{vec}\big(F_Hᴴ\,\mathrm{unvec}(P_\Omegaᵀ v)\,\bar F_W\big),
              \qquad A Aᴴ = c^2 I

    with ``F`` the unitary DFT (``torch.fft.fft2(norm="ortho")``) and ``Ω`` the True entries of
    the mask in row-major order (Lustig, Donoho & Pauly, "Sparse MRI", 2007).

    Parameters
    ----------
    mask : array-like of bool, shape (H, W) or (n, H, W)
        Shared, or one mask per sample with the same number ``M`` of True entries. With
        ``image_shape`` given, masks may also be flattened: ``(N,)`` or ``(n, N)``.
    image_shape : (int, int), optional
    scale : "auto" or float, default="auto"
        ``c``; ``"auto"`` is ``√(N/M)``.
    dtype : torch.dtype, default=torch.complex128
    device : str or torch.device, optional
    """

    _complex = True
    _name = "Fourier-mask"

    def __init__(self, mask, image_shape: tuple[int, int] | None = None,
                 scale: str | float = "auto", *, dtype: torch.dtype = torch.complex128,
                 device=None):
        m = np.asarray(mask.detach().cpu() if isinstance(mask, Tensor) else mask)
        if m.dtype != bool:
            raise TypeError(f"mask must be boolean; got dtype {m.dtype}.")
        if image_shape is None and m.ndim not in (2, 3):
            raise ValueError(f"mask must be (H, W) or (n, H, W); got shape {m.shape} (pass "
                             "image_shape for flattened masks).")
        H, W = (int(s) for s in (m.shape[-2:] if image_shape is None else image_shape))
        if m.shape[-2:] == (H, W) and m.ndim in (2, 3):
            m = m.reshape(m.shape[:-2] + (H * W,))
        elif not (m.ndim in (1, 2) and m.shape[-1] == H * W):
            raise ValueError(f"mask of shape {m.shape} does not match image_shape {(H, W)}.")
        counts = m.sum(axis=-1).reshape(-1)
        if counts.min() != counts.max():
            raise ValueError(f"every per-sample mask must keep the same number of coefficients; "
                             f"got counts from {counts.min()} to {counts.max()}.")
        if counts[0] == 0:
            raise ValueError("mask keeps no coefficient; it needs at least one True entry.")
        self.image_shape = (H, W)
        rows = np.flatnonzero(m) if m.ndim == 1 else np.nonzero(m)[1].reshape(m.shape[0], -1)
        self._init_rows(rows, H * W, scale, dtype, device)

    @classmethod
    def random(cls, image_shape: tuple[int, int], n_measurements, random_state=None, *,
               center: int | float = 0, **kwargs) -> FourierMask2D:
        """A random mask of ``n_measurements`` (an int, or a float fraction of ``H·W``)
        coefficients, always keeping a ``center`` block of the lowest frequencies (a side in
        pixels, or a fraction of each side), as MRI sampling does."""
        from sklearn.utils import check_random_state

        from .ensembles import random_fourier_mask

        mask = random_fourier_mask(image_shape, n_measurements, check_random_state(random_state),
                                   center)
        return cls(mask, image_shape, **kwargs)

    @property
    def mask(self) -> Tensor:
        """The boolean mask, ``(H, W)`` or ``(n, H, W)``."""
        flat = torch.zeros(self.rows.shape[:-1] + (self.n_features,), dtype=torch.bool,
                           device=self.device).scatter_(-1, self.rows, True)
        return flat.reshape(self.shape[:-2] + self.image_shape)

    def _transform(self, x: Tensor) -> Tensor:
        return torch.fft.fft2(x.reshape(-1, *self.image_shape), norm="ortho").reshape(x.shape)

    def _inverse(self, z: Tensor) -> Tensor:
        return torch.fft.ifft2(z.reshape(-1, *self.image_shape), norm="ortho").reshape(z.shape)


# ---------------------------------------------------------------------- Kronecker products
def _kron_apply(x: Tensor, f1, f2, n1: int, n2: int) -> Tensor:
    """``(B1 ⊗ B2) x`` row by row for maps ``f1 = B1``, ``f2 = B2`` on row batches; ``x (n, n1·n2)``."""
    n = x.shape[0]
    z = f2(x.reshape(n * n1, n2))  # (n·n1, m2): B2 on the last axis of X
    z = f1(z.reshape(n, n1, -1).transpose(1, 2).reshape(-1, n1))  # (n·m2, m1): B1 on the first
    return z.reshape(n, -1, z.shape[-1]).transpose(1, 2).reshape(n, -1)


class KroneckerOperator(LinearOperator):
    r"""``A = A1 ⊗ A2`` for shared operators ``A1 (M1, N1)`` and ``A2 (M2, N2)``, never formed.

    The signal ``x`` is the row-major flattening of ``X (N1, N2)`` and

    .. math:: A x = \mathrm{vec}(A_1 X A_2ᵀ), \qquad Aᴴ v = \mathrm{vec}(A_1ᴴ V \bar A_2),
              \qquad \|A\|_2 = \|A_1\|_2 \|A_2\|_2, \qquad \|A\|_F = \|A_1\|_F \|A_2\|_F

    (separable 2-D sensing, e.g. Duarte & Baraniuk, "Kronecker compressive sensing", IEEE
    Trans. Image Process. 21, 2012). ``A Aᴴ = c1 c2 I`` when both factors are row-orthogonal.
    When both factors have a thin SVD, VAMP's LMMSE stage uses the Kronecker-structured SVD
    ``(U1 ⊗ U2) diag(s1 ⊗ s2) (V1 ⊗ V2)ᴴ`` without forming it.

    Parameters
    ----------
    A1, A2 : LinearOperator or array-like
        Shared operators or 2-D arrays (wrapped with ``as_operator``).
    """

    def __init__(self, A1, A2):
        from . import as_operator

        ops = [as_operator(A, dtype=None, name=name) for A, name in ((A1, "A1"), (A2, "A2"))]
        if ops[0].per_sample or ops[1].per_sample:
            raise ValueError(f"KroneckerOperator needs shared factors; got factors of shapes "
                             f"{ops[0].shape} and {ops[1].shape}.")
        dt = torch.promote_types(ops[0].dtype, ops[1].dtype)
        self.A1, self.A2 = (op.to(dtype=dt, device=ops[0].device) for op in ops)
        (M1, N1), (M2, N2) = self.A1.shape, self.A2.shape
        self.shape = (M1 * M2, N1 * N2)
        c1, c2 = self.A1.row_orthogonal_scale, self.A2.row_orthogonal_scale
        self.row_orthogonal_scale = None if c1 is None or c2 is None else c1 * c2

    @property
    def dtype(self) -> torch.dtype:
        return torch.promote_types(self.A1.dtype, self.A2.dtype)

    @property
    def device(self) -> torch.device:
        return self.A1.device

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(torch.promote_types(x.dtype, self.dtype))
        return _kron_apply(x, self.A1.forward, self.A2.forward, self.A1.shape[1], self.A2.shape[1])

    def adjoint(self, v: Tensor) -> Tensor:
        v = v.to(torch.promote_types(v.dtype, self.dtype))
        return _kron_apply(v, self.A1.adjoint, self.A2.adjoint, self.A1.shape[0], self.A2.shape[0])

    def to(self, dtype=None, device=None) -> KroneckerOperator:
        A1, A2 = self.A1.to(dtype=dtype, device=device), self.A2.to(dtype=dtype, device=device)
        return self if A1 is self.A1 and A2 is self.A2 else KroneckerOperator(A1, A2)

    def _norm_sq(self) -> Tensor:
        return self.A1.norm_sq() * self.A2.norm_sq()

    def _frobenius_sq(self) -> Tensor:
        return self.A1.frobenius_sq() * self.A2.frobenius_sq()

    def _factor_svds(self):
        if self.A1.row_orthogonal_scale is not None and self.A2.row_orthogonal_scale is not None:
            return None  # the closed form is cheaper
        s1, s2 = self.A1.svd(), self.A2.svd()
        return None if s1 is None or s2 is None else (s1, s2)

    def lmmse_context(self, y: Tensor):
        svds = self._factor_svds()
        if svds is None:
            return y
        (U1, _, _), (U2, _, _) = svds
        y = y.to(torch.promote_types(y.dtype, self.dtype))
        return _kron_apply(y, lambda t: t @ U1.conj(), lambda t: t @ U2.conj(), self.A1.shape[0],
                           self.A2.shape[0])

    def lmmse(self, r2: Tensor, gamma2: Tensor, context, gamma_w, *,
              gain_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        svds = self._factor_svds()
        if svds is None:
            return super().lmmse(r2, gamma2, context, gamma_w, gain_scale=gain_scale)
        (_, s1, V1), (_, s2, V2) = svds
        s = (s1[:, None] * s2[None, :]).reshape(-1)  # the singular values s1 ⊗ s2
        d = gamma_w * s / (gamma_w * s * s + gamma2) * (1 if gain_scale is None else gain_scale)
        proj = _kron_apply(r2, lambda t: t @ V1.conj(), lambda t: t @ V2.conj(), V1.shape[0],
                           V2.shape[0])
        x2 = r2 + _kron_apply(d * (context - s * proj), lambda t: t @ V1.T, lambda t: t @ V2.T,
                              s1.numel(), s2.numel())
        return x2, 1.0 - (d * s).sum(dim=-1, keepdim=True) / self.n_features

    def fingerprint(self) -> str:
        return f"kron({self.A1.fingerprint()},{self.A2.fingerprint()})"

    def __repr__(self) -> str:
        return f"KroneckerOperator({self.A1!r} ⊗ {self.A2!r})"


# ---------------------------------------------------------------------- real view
class RealView(LinearOperator):
    r"""A complex operator seen as a real one on real signals: ``2M`` real measurements.

    .. math:: R x = \begin{bmatrix} \mathrm{Re}(A x) \\ \mathrm{Im}(A x) \end{bmatrix},
              \qquad Rᵀ \begin{bmatrix} a \\ b \end{bmatrix} = \mathrm{Re}\big(Aᴴ (a + i b)\big)

    so the real-valued solvers and networks use DFT and Fourier-mask operators as they are.
    ``‖R‖_F = ‖A‖_F``; ``R Rᵀ`` is not a multiple of the identity in general (no closed-form
    LMMSE; the conjugate-gradient path serves it).

    Parameters
    ----------
    op : LinearOperator
        A complex operator, shared or per sample.
    """

    def __init__(self, op: LinearOperator):
        if not isinstance(op, LinearOperator):
            raise TypeError(f"RealView wraps a LinearOperator; got {type(op).__name__}.")
        if not op.is_complex:
            raise TypeError(f"RealView needs a complex operator; {type(op).__name__} is real "
                            "(use it directly).")
        self.op = op
        self.shape = op.shape[:-2] + (2 * op.shape[-2], op.shape[-1])

    @property
    def dtype(self) -> torch.dtype:
        return _real_dtype(self.op.dtype)

    @property
    def device(self) -> torch.device:
        return self.op.device

    def forward(self, x: Tensor) -> Tensor:
        if x.is_complex():
            raise TypeError("RealView maps real signals; got a complex tensor.")
        z = self.op.forward(x.to(torch.promote_types(x.dtype, self.op.dtype)))
        return torch.cat([z.real, z.imag], dim=-1)

    def adjoint(self, v: Tensor) -> Tensor:
        if v.is_complex():
            raise TypeError("RealView's adjoint takes real measurements; got a complex tensor.")
        M = self.op.n_measurements
        return self.op.adjoint(torch.complex(v[:, :M], v[:, M:])).real

    def take(self, index) -> LinearOperator:
        return self if not self.per_sample else RealView(self.op.take(index))

    def to(self, dtype=None, device=None) -> RealView:
        op = self.op.to(dtype=None if dtype is None else _real_dtype(dtype), device=device)
        return self if op is self.op else RealView(op)

    def _frobenius_sq(self) -> Tensor:
        return self.op.frobenius_sq()

    def fingerprint(self) -> str:
        return f"real({self.op.fingerprint()})"

    def __repr__(self) -> str:
        return f"RealView({self.op!r})"
