"""Operators with explicit entries: dense matrices, per-sample batches of them, SVD factors,
``scipy.sparse`` matrices and wrapped ``scipy.sparse.linalg.LinearOperator`` objects."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from ._base import LinearOperator, _real_dtype, numpy_map


def _target_dtype(current: torch.dtype, dtype: torch.dtype | None) -> torch.dtype:
    """``dtype``, made complex of the same precision when the operator is complex."""
    if dtype is None:
        return current
    if current.is_complex and not dtype.is_complex:
        return torch.complex128 if dtype == torch.float64 else torch.complex64
    return dtype


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        arr = t.detach().cpu().contiguous()
        h.update(str(tuple(arr.shape)).encode())
        h.update(arr.to(torch.complex128 if arr.is_complex() else torch.float64).numpy().tobytes())
    return h.hexdigest()[:16]


def _index_tensor(index, n: int, device) -> Tensor:
    """Sample indices (int64) from an int array, a list, a slice or a boolean mask."""
    if isinstance(index, slice):  # numpy resolves negative steps, which torch slicing refuses
        return torch.as_tensor(np.arange(n)[index].copy(), dtype=torch.int64, device=device)
    if isinstance(index, Tensor):
        idx = index.to(device)
    else:
        idx = torch.as_tensor(np.asarray(index), device=device)
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise IndexError(f"a boolean mask over {n} per-sample operators must have shape "
                             f"({n},); got {tuple(idx.shape)}.")
        return idx.nonzero().squeeze(1)
    idx = idx.reshape(-1).long()
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise IndexError(f"index out of range for {n} per-sample operators.")
    return idx % n if idx.numel() else idx


def _complexify(x: Tensor, dtype: torch.dtype) -> Tensor:
    """A real ``x`` cast to the complex ``dtype`` of a complex operator (else ``x`` unchanged)."""
    return x.to(dtype) if dtype.is_complex and not x.is_complex() else x


def _cast_svd(svd, dtype: torch.dtype, device):
    """SVD factors ``(U, s, V)`` in ``dtype`` (``s`` real) on ``device``; ``None`` stays."""
    if svd is None:
        return None
    U, s, V = svd
    return (U.to(dtype=dtype, device=device), s.to(dtype=_real_dtype(dtype), device=device),
            V.to(dtype=dtype, device=device))


class _Grouped(LinearOperator):
    """Per-sample operators stored as ``g`` distinct maps, each serving ``repeats`` consecutive
    samples (``n = g · repeats``): training draws a few operators per mini-batch and applies
    each to its block of samples with one matrix product."""

    repeats: int = 1

    def _groups(self, x: Tensor) -> Tensor:
        g = self.shape[0] // self.repeats
        return x.reshape(g, self.repeats, x.shape[-1])

    def _group_index(self, index) -> Tensor:
        idx = _index_tensor(index, self.shape[0], self.device)
        return torch.div(idx, self.repeats, rounding_mode="floor")


class DenseOperator(LinearOperator):
    """A dense matrix ``A`` of shape ``(M, N)``, shared by every sample.

    Its thin SVD (for VAMP) is computed once, in double precision, when first asked for.
    """

    def __init__(self, A: Tensor):
        if A.ndim != 2:
            raise ValueError(f"DenseOperator needs a 2-D matrix; got shape {tuple(A.shape)}.")
        self.A = A
        self.shape = (int(A.shape[0]), int(A.shape[1]))
        self._svd: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.A.dtype

    @property
    def device(self) -> torch.device:
        return self.A.device

    def forward(self, x: Tensor) -> Tensor:
        return _complexify(x, self.A.dtype) @ self.A.T

    def adjoint(self, v: Tensor) -> Tensor:
        return _complexify(v, self.A.dtype) @ (self.A.conj() if self.A.is_complex() else self.A)

    def residual(self, y: Tensor, x: Tensor) -> Tensor:
        if x.ndim == 2 and y.ndim == 2 and x.dtype == y.dtype == self.A.dtype:
            return torch.addmm(y, x, self.A.T, alpha=-1.0)
        return y - self.forward(x)

    def to(self, dtype=None, device=None) -> DenseOperator:
        dtype = _target_dtype(self.A.dtype, dtype)
        device = self.A.device if device is None else torch.device(device)
        if dtype == self.A.dtype and device == self.A.device:
            return self
        out = DenseOperator(self.A.to(dtype=dtype, device=device))
        out._svd = _cast_svd(self._svd, dtype, device)
        return out

    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._svd is None:
            wide = torch.complex128 if self.A.is_complex() else torch.float64
            U, s, Vh = torch.linalg.svd(self.A.to(wide), full_matrices=False)
            keep = (s > s[0] * max(self.shape) * torch.finfo(s.dtype).eps) if s.numel() else s > 0
            U, s, V = U[:, keep], s[keep], Vh[keep].conj().T
            dt = self.A.dtype
            self._svd = (U.to(dt).contiguous(), s.to(_real_dtype(dt)), V.to(dt).contiguous())
        return self._svd

    def _norm_sq(self) -> Tensor:
        s = self.svd()[1]
        return (s[0].to(torch.float64) ** 2) if s.numel() else torch.zeros((), dtype=torch.float64)

    def _frobenius_sq(self) -> Tensor:
        return (self.A.abs().to(torch.float64) ** 2).sum()

    def to_dense(self) -> Tensor:
        return self.A

    def fingerprint(self) -> str:
        return f"dense{self.shape}:{_digest(self.A)}"


class DenseBatchOperator(_Grouped):
    """One dense matrix per sample: ``A`` of shape ``(g, M, N)``, matrix ``i // repeats`` serving
    sample ``i`` (``repeats=1``: one matrix per sample; ``shape == (g·repeats, M, N)``)."""

    def __init__(self, A: Tensor, repeats: int = 1):
        if A.ndim != 3:
            raise ValueError(f"DenseBatchOperator needs a 3-D batch of matrices (n, M, N); got "
                             f"shape {tuple(A.shape)}.")
        self.A = A
        self.repeats = int(repeats)
        self.shape = (int(A.shape[0]) * self.repeats, int(A.shape[1]), int(A.shape[2]))
        self._svd: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.A.dtype

    @property
    def device(self) -> torch.device:
        return self.A.device

    def forward(self, x: Tensor) -> Tensor:
        out = torch.bmm(self._groups(_complexify(x, self.A.dtype)), self.A.transpose(1, 2))
        return out.reshape(x.shape[0], self.shape[1])

    def adjoint(self, v: Tensor) -> Tensor:
        A = self.A.conj() if self.A.is_complex() else self.A
        v = _complexify(v, self.A.dtype)
        return torch.bmm(self._groups(v), A).reshape(v.shape[0], self.shape[2])

    def take(self, index) -> DenseBatchOperator:
        g = self._group_index(index)
        out = DenseBatchOperator(self.A[g])
        if self._svd is not None:  # narrowing keeps the SVD already computed
            out._svd = tuple(f[g] for f in self._svd)
        return out

    def to(self, dtype=None, device=None) -> DenseBatchOperator:
        dtype = _target_dtype(self.A.dtype, dtype)
        device = self.A.device if device is None else torch.device(device)
        if dtype == self.A.dtype and device == self.A.device:
            return self
        out = DenseBatchOperator(self.A.to(dtype=dtype, device=device), self.repeats)
        out._svd = _cast_svd(self._svd, dtype, device)
        return out

    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        """Batched thin SVD (``R = min(M, N)``; singular values below round-off set to 0)."""
        if self._svd is None:
            wide = torch.complex128 if self.A.is_complex() else torch.float64
            U, s, Vh = torch.linalg.svd(self.A.to(wide), full_matrices=False)
            tiny = s[:, :1] * max(self.shape[1:]) * torch.finfo(s.dtype).eps
            s = torch.where(s > tiny, s, torch.zeros_like(s))
            dt = self.A.dtype
            self._svd = (U.to(dt), s.to(_real_dtype(dt)), Vh.conj().transpose(1, 2).to(dt))
        return self._svd

    def _per_sample(self, value: Tensor) -> Tensor:
        return value.repeat_interleave(self.repeats, dim=0).reshape(-1, 1)

    def _norm_sq(self) -> Tensor:
        s = self.svd()[1].to(torch.float64)
        return self._per_sample(s[:, 0] ** 2)

    def _frobenius_sq(self) -> Tensor:
        return self._per_sample((self.A.abs().to(torch.float64) ** 2).sum(dim=(1, 2)))

    def to_dense(self) -> Tensor:
        return self.A.repeat_interleave(self.repeats, dim=0)

    def fingerprint(self) -> str:
        return f"dense-batch{self.shape}:{_digest(self.A)}"


class SVDOperator(_Grouped):
    r"""An operator given by its thin SVD factors, ``A = U diag(s) Vᴴ``.

    Shared: ``U (M, R)``, ``s (R,)``, ``V (N, R)``. Per sample: ``U (g, M, R)``, ``s (g, R)``,
    ``V (g, N, R)``, factor ``i // repeats`` serving sample ``i``. The maps and VAMP's LMMSE
    stage use the factors directly, so no SVD is ever computed (the κ-conditioned ensemble
    draws its operators in this form).
    """

    def __init__(self, U: Tensor, s: Tensor, V: Tensor, repeats: int = 1):
        if not (U.ndim == V.ndim == s.ndim + 1 and U.ndim in (2, 3)):
            raise ValueError(f"SVDOperator needs U (M, R), s (R,), V (N, R), or a leading batch "
                             f"dimension on all three; got shapes {tuple(U.shape)}, "
                             f"{tuple(s.shape)}, {tuple(V.shape)}.")
        self.U, self.s, self.V = U, s, V
        self.repeats = int(repeats)
        if U.ndim == 2:
            self.shape = (int(U.shape[0]), int(V.shape[0]))
        else:
            self.shape = (int(U.shape[0]) * self.repeats, int(U.shape[1]), int(V.shape[1]))

    @property
    def dtype(self) -> torch.dtype:
        return self.U.dtype

    @property
    def device(self) -> torch.device:
        return self.U.device

    def forward(self, x: Tensor) -> Tensor:
        x = _complexify(x, self.U.dtype)
        if not self.per_sample:
            return ((x @ self.V.conj()) * self.s) @ self.U.T
        z = torch.bmm(self._groups(x), self.V.conj()) * self.s.unsqueeze(1)
        return torch.bmm(z, self.U.transpose(1, 2)).reshape(x.shape[0], self.shape[1])

    def adjoint(self, v: Tensor) -> Tensor:
        v = _complexify(v, self.U.dtype)
        if not self.per_sample:
            return ((v @ self.U.conj()) * self.s) @ self.V.T
        z = torch.bmm(self._groups(v), self.U.conj()) * self.s.unsqueeze(1)
        return torch.bmm(z, self.V.transpose(1, 2)).reshape(v.shape[0], self.shape[2])

    def take(self, index) -> SVDOperator:
        if not self.per_sample:
            return self
        g = self._group_index(index)
        return SVDOperator(self.U[g], self.s[g], self.V[g])

    def to(self, dtype=None, device=None) -> SVDOperator:
        dtype = _target_dtype(self.U.dtype, dtype)
        device = self.U.device if device is None else torch.device(device)
        if dtype == self.U.dtype and device == self.U.device:
            return self
        return SVDOperator(self.U.to(dtype=dtype, device=device),
                           self.s.to(dtype=_real_dtype(dtype), device=device),
                           self.V.to(dtype=dtype, device=device), self.repeats)

    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.U, self.s, self.V

    def _norm_sq(self) -> Tensor:
        top = self.s.abs().to(torch.float64).amax(dim=-1)
        if not self.per_sample:
            return top**2
        return (top**2).repeat_interleave(self.repeats).reshape(-1, 1)

    def _frobenius_sq(self) -> Tensor:
        fro = (self.s.to(torch.float64) ** 2).sum(dim=-1)
        return fro if not self.per_sample else fro.repeat_interleave(self.repeats).reshape(-1, 1)

    def fingerprint(self) -> str:
        return f"svd{self.shape}:{_digest(self.U, self.s, self.V)}"


class SparseOperator(LinearOperator):
    """A ``scipy.sparse`` matrix of shape ``(M, N)``, applied as a torch sparse CSR tensor
    (differentiable in the signal, on any device)."""

    def __init__(self, A, dtype: torch.dtype = torch.float64, device=None):
        A = sp.csr_matrix(A)
        self.shape = (int(A.shape[0]), int(A.shape[1]))
        self._scipy = A
        dtype = _target_dtype(torch.complex128 if np.iscomplexobj(A.data) else torch.float64,
                              dtype)
        self._dtype, self._device = dtype, torch.device("cpu" if device is None else device)
        self._A = self._csr(A)
        AH = sp.csr_matrix(A.conj().T)
        self._AH = self._csr(AH)

    def _csr(self, M) -> Tensor:
        with warnings.catch_warnings():  # torch's "beta" notice for sparse CSR tensors
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.as_tensor(M.indptr, dtype=torch.int64),
                torch.as_tensor(M.indices, dtype=torch.int64),
                torch.as_tensor(M.data).to(self._dtype), size=M.shape,
                check_invariants=False).to(self._device)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def forward(self, x: Tensor) -> Tensor:
        return (self._A @ x.T.to(self._dtype)).T

    def adjoint(self, v: Tensor) -> Tensor:
        return (self._AH @ v.T.to(self._dtype)).T

    def to(self, dtype=None, device=None) -> SparseOperator:
        dtype = _target_dtype(self._dtype, dtype)
        device = self._device if device is None else torch.device(device)
        if dtype == self._dtype and device == self._device:
            return self
        return SparseOperator(self._scipy, dtype=dtype, device=device)

    def _frobenius_sq(self) -> Tensor:
        return torch.tensor(float(np.sum(np.abs(self._scipy.data) ** 2)), dtype=torch.float64)

    def _norm_sq(self) -> Tensor:
        """``‖A‖₂²`` from scipy's sparse SVD (ARPACK), to its tolerance."""
        return _scipy_norm_sq(self._scipy, self)

    def svd(self):
        """The thin SVD of the matrix when it has at most ``2²²`` entries (exact LMMSE for
        VAMP), else ``None`` (conjugate gradients)."""
        return _small_svd(self)

    def to_dense(self) -> Tensor:
        return torch.as_tensor(self._scipy.toarray()).to(dtype=self._dtype, device=self._device)

    def fingerprint(self) -> str:
        A = self._scipy
        h = hashlib.sha1(A.indptr.tobytes() + A.indices.tobytes() + A.data.tobytes())
        return f"sparse{self.shape}:{h.hexdigest()[:16]}"

    def __getstate__(self):
        return {"shape": self.shape, "_scipy": self._scipy, "_dtype": self._dtype,
                "_device": self._device}

    def __setstate__(self, state):
        self.__init__(state["_scipy"], dtype=state["_dtype"], device=state["_device"])


class ScipyOperator(LinearOperator):
    """A wrapped ``scipy.sparse.linalg.LinearOperator`` (shared, on the CPU).

    The forward map is ``matmat``, the adjoint ``rmatmat``; both are differentiable (each is
    the other's backward), so the learned networks train through them. An operator defined
    without ``rmatvec``/``rmatmat`` serves only where no adjoint is needed: asking for one
    raises a ``ValueError`` that says so.
    """

    def __init__(self, A: spla.LinearOperator, dtype: torch.dtype | None = None):
        self.op = A
        self.shape = (int(A.shape[0]), int(A.shape[1]))
        complex_op = np.issubdtype(np.dtype(A.dtype), np.complexfloating)
        self._dtype = _target_dtype(torch.complex128 if complex_op else torch.float64,
                                    dtype or torch.float64)
        self.has_adjoint = _has_adjoint(A)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _fwd(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(self.op.matmat(np.ascontiguousarray(a.T))).T

    def _adj(self, a: np.ndarray) -> np.ndarray:
        if not self.has_adjoint:
            raise ValueError(
                f"the scipy LinearOperator A of shape {self.shape} defines no adjoint (rmatvec / "
                "rmatmat), which this method needs (Aᴴ v); build it with rmatvec=... or pass the "
                "matrix itself.")
        return np.asarray(self.op.rmatmat(np.ascontiguousarray(a.T))).T

    def forward(self, x: Tensor) -> Tensor:
        return numpy_map(x, self._fwd, self._adj).to(dtype=self._out_dtype(x))

    def adjoint(self, v: Tensor) -> Tensor:
        if not self.has_adjoint:
            self._adj(np.zeros((0, self.shape[0])))  # raises the message above
        return numpy_map(v, self._adj, self._fwd).to(dtype=self._out_dtype(v))

    def _out_dtype(self, x: Tensor) -> torch.dtype:
        return _target_dtype(self._dtype if self._dtype.is_complex else x.dtype, x.dtype)

    def to(self, dtype=None, device=None) -> ScipyOperator:
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"a scipy LinearOperator runs on the CPU only; got device={device!r}. "
                             "Use device='cpu', or a dense, sparse or transform operator.")
        dtype = _target_dtype(self._dtype, dtype)
        if dtype == self._dtype:
            return self
        return ScipyOperator(self.op, dtype)

    def svd(self):
        """The thin SVD when the operator has at most ``2²²`` entries (exact LMMSE for VAMP),
        else ``None`` (conjugate gradients)."""
        return _small_svd(self)

    def _norm_sq(self) -> Tensor:
        """``‖A‖₂²`` from scipy's sparse SVD (ARPACK) when the operator has an adjoint."""
        if not self.has_adjoint:
            self._adj(np.zeros((0, self.shape[0])))  # raises: a norm bound needs the adjoint
        return _scipy_norm_sq(self.op, self)

    def fingerprint(self) -> str:
        return f"scipy{self.shape}:{id(self.op)}"


#: Largest operator (entries) whose SVD the sparse and scipy wrappers compute for VAMP.
_SMALL_SVD = 2**22


def _small_svd(op: LinearOperator):
    cache = getattr(op, "_svd_cache", None)
    if cache is not None or op.shape[0] * op.shape[1] > _SMALL_SVD:
        return cache
    dense = DenseOperator(LinearOperator.to_dense(op).to(op.dtype))
    op._svd_cache = dense.svd()
    return op._svd_cache


def _scipy_norm_sq(A, op: LinearOperator) -> Tensor:
    """The largest singular value squared by ``scipy.sparse.linalg.svds`` (a bound from the
    power iteration of the base class where ARPACK cannot run: tiny or failing problems)."""
    if min(A.shape) > 1:
        try:
            s = spla.svds(A, k=1, return_singular_vectors=False, tol=1e-12, random_state=0)
            return torch.tensor(float(s[0]) ** 2, dtype=torch.float64)
        except (ValueError, spla.ArpackError, spla.ArpackNoConvergence):
            pass
    return LinearOperator._norm_sq(op)


def _has_adjoint(A: spla.LinearOperator) -> bool:
    try:
        A.rmatvec(np.zeros(A.shape[0], dtype=A.dtype))
    except NotImplementedError:
        return False
    return True
