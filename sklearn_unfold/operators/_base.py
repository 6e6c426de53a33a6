"""The linear-operator interface that every step, solver and network calls.

An operator is the map ``A: F^N -> F^M`` (``F`` real or complex) applied to *row batches*:
the forward map of ``X (n, N)`` is ``X Aᵀ (n, M)`` and the adjoint of ``V (n, M)`` is
``V conj(A) (n, N)`` (``Aᴴ v`` row by row). An operator is either

* **shared**: one map for every sample, ``shape == (M, N)``; or
* **per-sample**: one map per row of the batch, ``shape == (n, M, N)``. It has ``len(op) == n``
  and ``op[idx]`` keeps the operators of the samples ``idx``, so it is indexed like a numpy
  array of ``n`` matrices (scikit-learn's cross-validation splits it with the samples).

The math layers need only :meth:`~LinearOperator.forward`, :meth:`~LinearOperator.adjoint`, a
bound on ``‖A‖₂²`` and, for VAMP, the LMMSE stage :meth:`~LinearOperator.lmmse`, which each
operator serves the cheapest way it can: through a thin SVD when one is at hand, in closed
form when ``A Aᴴ = c I`` (row-orthogonal operators), by conjugate gradients otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

#: Conjugate-gradient settings of the generic LMMSE stage.
_CG_MAX_ITER = 200
_CG_TOL = 1e-7


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.empty((), dtype=dtype).real.dtype


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """``Re⟨a_i, b_i⟩`` per row, shape ``(n, 1)``."""
    prod = a.conj() * b if a.is_complex() else a * b
    return prod.real.sum(dim=-1, keepdim=True) if prod.is_complex() else prod.sum(-1, keepdim=True)


def _sq_norm(a: Tensor) -> Tensor:
    """``‖a_i‖²`` per row, shape ``(n, 1)``, real."""
    return (a.real**2 + a.imag**2).sum(-1, keepdim=True) if a.is_complex() else (a * a).sum(
        -1, keepdim=True)


class LinearOperator:
    """Abstract linear map ``A: F^N -> F^M`` acting on row batches (see the module docstring).

    Subclasses implement :meth:`forward`, :meth:`adjoint`, :meth:`to` and, for per-sample
    operators, :meth:`take`. Everything else has a generic fall-back built on those two maps:
    :meth:`norm_sq` (power iteration), :meth:`frobenius_sq` (Hutchinson probes), :meth:`lmmse`
    (conjugate gradients) and :meth:`to_dense` (the map applied to the identity).
    """

    #: ``(M, N)`` for a shared operator, ``(n, M, N)`` for a per-sample batch.
    shape: tuple[int, ...]
    #: ``c`` when ``A Aᴴ = c I`` for every sample (the LMMSE stage is then closed form), else None.
    row_orthogonal_scale: float | None = None

    # ------------------------------------------------------------------ shape
    @property
    def per_sample(self) -> bool:
        """Whether this is a batch of per-sample operators (``shape == (n, M, N)``)."""
        return len(self.shape) == 3

    @property
    def n_measurements(self) -> int:
        return int(self.shape[-2])

    @property
    def n_features(self) -> int:
        return int(self.shape[-1])

    @property
    def dtype(self) -> torch.dtype:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def device(self) -> torch.device:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def is_complex(self) -> bool:
        """Whether the map has complex entries (its measurements are then complex)."""
        return self.dtype.is_complex

    def __len__(self) -> int:
        if not self.per_sample:
            raise TypeError(f"{type(self).__name__} of shape {self.shape} is shared by every "
                            "sample and has no length; only per-sample operators do.")
        return int(self.shape[0])

    def __getitem__(self, index) -> LinearOperator:
        if not self.per_sample:
            raise TypeError(f"{type(self).__name__} of shape {self.shape} is shared by every "
                            "sample and cannot be indexed; only per-sample operators can.")
        if isinstance(index, tuple):  # op[idx, ...], as scikit-learn indexes arrays
            if len(index) == 2 and index[1] is Ellipsis:
                index = index[0]
            else:
                raise IndexError(f"per-sample operators are indexed along the sample axis only; "
                                 f"got index {index!r}.")
        return self.take(index)

    def take(self, index) -> LinearOperator:
        """The operators of the samples ``index`` (an int array, a slice or a boolean mask).

        A shared operator returns itself (it serves every sample).
        """
        if not self.per_sample:
            return self
        raise NotImplementedError  # pragma: no cover - per-sample subclasses implement it

    def check_batch(self, n_samples: int, name: str = "operator") -> None:
        """Raise a ``ValueError`` when a per-sample batch does not have ``n_samples`` operators."""
        if self.per_sample and self.shape[0] != n_samples:
            raise ValueError(
                f"{name} holds {self.shape[0]} per-sample operators (shape {self.shape}) but the "
                f"batch has {n_samples} samples; pass one operator per sample."
            )

    # ------------------------------------------------------------------ maps
    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        """``x (n, N) -> A x (n, M)`` row by row."""
        raise NotImplementedError

    def adjoint(self, v: Tensor) -> Tensor:  # pragma: no cover - interface
        """``v (n, M) -> Aᴴ v (n, N)`` row by row (the conjugate transpose)."""
        raise NotImplementedError

    def residual(self, y: Tensor, x: Tensor) -> Tensor:
        """``y − A x`` on row batches."""
        return y - self.forward(x)

    def to(self, dtype: torch.dtype | None = None, device=None) -> LinearOperator:
        """This operator with its data in ``dtype`` (complex operators keep a complex dtype of
        the same precision) on ``device``; returns ``self`` when nothing changes."""
        raise NotImplementedError  # pragma: no cover - interface

    def _probe_batch(self, n: int) -> int:
        return int(self.shape[0]) if self.per_sample else n

    # ------------------------------------------------------------------ norms
    def _memo(self, key: str, compute):
        """``compute()`` once per operator (operators do not change once built)."""
        memo = self.__dict__.setdefault("_memo_values", {})
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    def norm_sq(self) -> Tensor:
        """``‖A‖₂²`` (the Lipschitz constant of the least-squares gradient), float64.

        A 0-d tensor for a shared operator, ``(n, 1)`` for a per-sample batch; computed once
        per operator (subclasses implement ``_norm_sq``). The generic version runs 100 power
        iterations on ``AᴴA`` from a fixed start and adds 1 %: a bound from above, which is what
        a gradient step size needs.
        """
        return self._memo("norm_sq", self._norm_sq)

    def frobenius_sq(self) -> Tensor:
        """``‖A‖²_F``, float64: a 0-d tensor (shared) or ``(n, 1)`` (per sample); computed once
        per operator (subclasses implement ``_frobenius_sq``)."""
        return self._memo("frobenius_sq", self._frobenius_sq)

    def _norm_sq(self) -> Tensor:
        op = self.to(dtype=torch.complex128 if self.is_complex else torch.float64)
        g = torch.Generator(device="cpu").manual_seed(0)
        n = self._probe_batch(1)
        x = torch.randn((n, self.n_features), generator=g, dtype=torch.float64).to(op.device)
        if self.is_complex:
            x = x.to(torch.complex128)
        lam = torch.zeros((n, 1), dtype=torch.float64, device=op.device)
        for _ in range(100):
            x = x / _sq_norm(x).sqrt().clamp_min(1e-300)
            z = op.adjoint(op.forward(x))
            lam_new = _rowdot(x, z)
            if torch.allclose(lam_new, lam, rtol=1e-9, atol=0):
                lam = lam_new
                break
            lam, x = lam_new, z
        lam = 1.01 * lam
        return lam if self.per_sample else lam.reshape(())

    def _frobenius_sq(self) -> Tensor:
        """``‖A‖²_F`` (see :meth:`frobenius_sq`).

        The generic version applies the map to the identity in blocks when ``N ≤ 4096`` (exact),
        and otherwise averages ``‖A b‖²`` over 32 Rademacher probes ``b`` (Hutchinson, exact in
        expectation, within a few percent at such sizes); subclasses that know it override it.
        """
        op = self.to(dtype=torch.complex128 if self.is_complex else torch.float64)
        if self.n_features <= 4096:
            n = self._probe_batch(1)
            total = torch.zeros((n, 1), dtype=torch.float64, device=op.device)
            eye = torch.eye(self.n_features, dtype=op.dtype, device=op.device)
            for j in range(self.n_features):
                total += _sq_norm(op.forward(eye[j].expand(n, -1)))
            return total if self.per_sample else total.reshape(())
        g = torch.Generator(device="cpu").manual_seed(1)
        n = self._probe_batch(1)
        total = torch.zeros((n, 1), dtype=torch.float64, device=op.device)
        n_probe = 32
        for _ in range(n_probe):
            b = (torch.randint(0, 2, (n, self.n_features), generator=g) * 2 - 1).to(
                dtype=torch.float64, device=op.device)
            total += _sq_norm(op.forward(b.to(op.dtype)))
        total /= n_probe
        return total if self.per_sample else total.reshape(())

    def to_dense(self) -> Tensor:
        """The matrix (``(M, N)``, or ``(n, M, N)`` per sample), built by applying the map to
        the identity: for checks on small sizes."""
        N = self.n_features
        eye = torch.eye(N, dtype=self.dtype, device=self.device)
        if not self.per_sample:
            return self.forward(eye).T.contiguous()
        n = self.shape[0]
        cols = [self.forward(eye[j].expand(n, N)) for j in range(N)]
        return torch.stack(cols, dim=-1)

    # ------------------------------------------------------------------ LMMSE (VAMP)
    def svd(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """Thin SVD ``A = U diag(s) Vᴴ`` when it is cheap, else ``None``.

        Shared: ``U (M, R)``, ``s (R,)``, ``V (N, R)``; per sample: ``(n, M, R)``, ``(n, R)``,
        ``(n, N, R)``. Matrix-free operators return ``None`` and serve :meth:`lmmse` otherwise.
        """
        return None

    def lmmse_context(self, y: Tensor):
        """What :meth:`lmmse` needs of the measurements, computed once per batch
        (``Uᴴy`` for the SVD path, ``y`` otherwise)."""
        svd = self.svd()
        if svd is None:
            return y
        U = svd[0]
        if not self.per_sample:
            return y @ U.conj()
        g = U.shape[0]
        out = torch.bmm(y.reshape(g, -1, y.shape[-1]), U.conj())
        return out.reshape(y.shape[0], -1)

    def lmmse(self, r2: Tensor, gamma2: Tensor, context, gamma_w: float | Tensor, *,
              gain_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""VAMP's LMMSE stage: ``x̂2 = (γw AᴴA + γ2 I)⁻¹(γw Aᴴy + γ2 r2)`` and its divergence.

        .. math::
            \hat x_2 = r_2 + V\,\mathrm{diag}(d)\,(Uᴴy - \mathrm{diag}(s) Vᴴ r_2),
            \quad d_i = \frac{γ_w s_i}{γ_w s_i^2 + γ_2}, \qquad
            α_2 = 1 - \frac1N \sum_i d_i s_i

        through the SVD; for a row-orthogonal operator (``A Aᴴ = c I``)

        .. math::
            \hat x_2 = r_2 + \frac{γ_w}{γ_w c + γ_2} Aᴴ(y - A r_2), \qquad
            α_2 = 1 - \frac{M}{N}\frac{γ_w c}{γ_w c + γ_2}

        and otherwise by conjugate gradients, with ``α2 = (γ2/N) tr[(γw AᴴA + γ2 I)⁻¹]``
        estimated by one Rademacher probe per sample (Hutchinson).

        Parameters
        ----------
        r2 : Tensor of shape (n, N)
        gamma2 : Tensor of shape (n, 1)
        context
            :meth:`lmmse_context` of the measurements.
        gamma_w : float or Tensor
            The noise precision ``1/σw²`` (LDVAMP learns it).
        gain_scale : Tensor of shape (R,), optional
            Per-singular-value gains on ``d`` (SVD path only).

        Returns
        -------
        x2 : Tensor of shape (n, N)
        alpha2 : Tensor of shape (n, 1), real
        """
        svd = self.svd()
        if svd is not None:
            return _lmmse_svd(r2, gamma2, context, svd, gamma_w, self.per_sample, gain_scale)
        if gain_scale is not None:
            raise ValueError(f"per-singular-value gains need an operator with an SVD; "
                             f"{type(self).__name__} has none.")
        c = self.row_orthogonal_scale
        M, N = self.n_measurements, self.n_features
        if c is not None:
            shrink = gamma_w / (gamma_w * c + gamma2)
            x2 = r2 + shrink * self.adjoint(self.residual(context, r2))
            return x2, 1.0 - (M / N) * c * shrink
        return self._lmmse_cg(r2, gamma2, context, gamma_w)

    def _lmmse_cg(self, r2: Tensor, gamma2: Tensor, y: Tensor, gamma_w) -> tuple[Tensor, Tensor]:
        def apply(x: Tensor) -> Tensor:
            return gamma_w * self.adjoint(self.forward(x)) + gamma2 * x

        rhs = gamma_w * self.adjoint(y) + gamma2 * r2
        x2 = conjugate_gradient(apply, rhs, r2)
        g = torch.Generator(device="cpu").manual_seed(2)
        n_probe = min(16, max(1, math.ceil(2048 / self.n_features)))
        exact = self.n_features <= n_probe  # as many solves as probes: use the basis, exactly
        n_probe = self.n_features if exact else n_probe
        trace = 0.0
        for j in range(n_probe):  # one probe per sample is enough for large N
            if exact:
                probe = torch.zeros_like(r2)
                probe[:, j] = 1
            else:
                probe = (torch.randint(0, 2, r2.shape, generator=g) * 2 - 1).to(
                    dtype=_real_dtype(r2.dtype), device=r2.device).to(r2.dtype)
            trace = trace + _rowdot(probe, conjugate_gradient(apply, probe, probe / gamma2))
        alpha2 = gamma2 * trace / ((1 if exact else n_probe) * self.n_features)
        return x2, alpha2.clamp(1e-12, 1.0)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """A string that changes when the operator does (for warm-start checks)."""
        return f"{type(self).__name__}{self.shape}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


def _lmmse_svd(r2, gamma2, context, svd, gamma_w, per_sample, gain_scale):
    U, s, V = svd
    N = V.shape[-2]
    if not per_sample:
        d = gamma_w * s / (gamma_w * s * s + gamma2)
        if gain_scale is not None:
            d = d * gain_scale
        x2 = r2 + (d * (context - s * (r2 @ V.conj()))) @ V.T
        return x2, 1.0 - (d * s).sum(dim=-1, keepdim=True) / N
    # per sample, factor k serving the k-th block of n/g consecutive samples
    n, g = r2.shape[0], V.shape[0]
    r2g = r2.reshape(g, n // g, N)
    sg = s.unsqueeze(1)
    d = gamma_w * sg / (gamma_w * sg * sg + gamma2.reshape(g, n // g, 1))
    if gain_scale is not None:
        d = d * gain_scale
    proj = torch.bmm(r2g, V.conj())
    x2 = r2g + torch.bmm(d * (context.reshape(g, n // g, -1) - sg * proj), V.transpose(1, 2))
    alpha2 = 1.0 - (d * sg).sum(dim=-1) / N
    return x2.reshape(n, N), alpha2.reshape(n, 1)


def conjugate_gradient(apply, rhs: Tensor, x0: Tensor, *, max_iter: int = _CG_MAX_ITER,
                       tol: float = _CG_TOL) -> Tensor:
    r"""Solve ``H x = b`` row by row for a Hermitian positive-definite ``H`` by conjugate gradients.

    Each row of ``rhs`` is its own system (``apply`` acts row-wise); a row stops updating once
    ``‖b − H x‖ ≤ tol‖b‖``. Differentiable (the iterations are ordinary torch operations).
    """
    x = x0
    r = rhs - apply(x)
    p = r
    rs = _sq_norm(r)
    target = (tol * tol) * _sq_norm(rhs)
    for _ in range(max_iter):
        if bool((rs <= target).all()):
            break
        Hp = apply(p)
        denom = _rowdot(p, Hp)
        active = rs > target
        step = torch.where(active, rs / denom.clamp_min(1e-300), torch.zeros_like(rs))
        x = x + step * p
        r = r - step * Hp
        rs_new = _sq_norm(r)
        beta = torch.where(active, rs_new / rs.clamp_min(1e-300), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    return x


class _NumpyMap(torch.autograd.Function):
    """Apply a numpy row-batch map to a tensor, with the other map as its backward."""

    @staticmethod
    def forward(ctx, x, fwd, bwd):  # noqa: D102
        ctx.bwd = bwd
        out = fwd(x.detach().cpu().numpy())
        return torch.as_tensor(np.ascontiguousarray(out)).to(device=x.device)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        # For a real map the gradient of <g, A x> is Aᵀ g; for complex tensors torch passes the
        # conjugate Wirtinger gradient, for which the backward of x -> A x is again Aᴴ g.
        back = ctx.bwd(grad.detach().cpu().numpy())
        return torch.as_tensor(np.ascontiguousarray(back)).to(device=grad.device), None, None


def numpy_map(x: Tensor, fwd, bwd) -> Tensor:
    """``fwd`` applied to the rows of ``x`` through numpy, differentiable with ``bwd`` its adjoint."""
    return _NumpyMap.apply(x, fwd, bwd)
