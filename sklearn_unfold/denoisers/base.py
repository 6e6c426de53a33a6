"""The denoiser interface, the divergence estimators, and the shrinkages as modules.

A denoiser is a :class:`torch.nn.Module` whose ``forward`` maps a batch of noisy signals to
their estimates and the estimates' mean divergence:

.. code-block:: text

    value, dmean = denoiser(r, sigma)

* ``r``     : ``(n_samples, N)`` tensor (real or complex), ``r = x + σ z``;
* ``sigma`` : ``(n_samples, 1)`` real tensor, the standard deviation of the noise in each row
  (``E|r_i − x_i|² = σ²``);
* ``value`` : the estimate of ``x``, the shape and dtype of ``r``;
* ``dmean`` : ``(n_samples, 1)`` real tensor, the divergence of the map ``r ↦ value`` divided
  by ``N``: ``⟨η'⟩ = (1/N) Σ_i ∂value_i/∂r_i`` (for complex ``r``, the real part of the
  Wirtinger derivative, ``½(∂Re/∂Re + ∂Im/∂Im)``).

AMP's Onsager term is ``(N/M)⟨η'⟩`` times the previous residual and VAMP's precision update
is ``γ(1 − ⟨η'⟩)/⟨η'⟩``, so ``dmean`` must be the divergence of the very map that produced
``value``. An entrywise (*separable*) denoiser computes it exactly; a denoiser that sees the
whole signal (a convolutional network) estimates it with one random probe
(:func:`mc_divergence`) or computes it exactly with ``N`` backward passes
(:func:`jacobian_divergence`) when ``N`` is small. The module owns its parameters: a learned
network trains them, a classical solver runs the module as it is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .scalar import DENOISER_PARAMS, _tiny, bg, default_theta, expo, pwlin, soft, spline

__all__ = [
    "BernoulliGaussian", "Denoiser", "ExponentialShrinkage", "PiecewiseLinear", "Shrinkage",
    "SoftThreshold", "SplineShrinkage", "jacobian_divergence", "mc_divergence",
]

#: ``ε = max|r| / MC_EPS_RATIO`` per row: the finite-difference step of the Monte-Carlo probe.
MC_EPS_RATIO = 1000.0


class Denoiser(nn.Module):
    """Base class of the package's denoisers (a user's denoiser need not subclass it).

    Subclasses implement ``forward(r, sigma) -> (value, dmean)`` (see the module docstring)
    and store each constructor argument under its own name (as scikit-learn estimators do),
    so :meth:`config` can describe them; the safe model files store that description and the
    weights.
    """

    #: Whether the denoiser acts entrywise (its divergence is then exact and cheap).
    separable: bool = True
    #: Whether the learned estimators train it alone on noisy signals before unrolling it
    #: (``pretrain="auto"``): True for denoisers without an analytic starting point.
    pretrain_by_default: bool = False

    def config(self) -> dict:
        """The constructor arguments that are plain values (tensors travel in ``state_dict``)."""
        out = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name == "self" or not hasattr(self, name):
                continue
            value = getattr(self, name)
            if value is None or isinstance(value, (bool, int, float, str)) or (
                    isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value)):
                out[name] = value
        return out

    def summary(self) -> dict[str, np.ndarray]:
        """Readable parameters (e.g. ``{"threshold": ...}``); empty for a neural denoiser."""
        return {}

    def estimate(self, r: Tensor, sigma: Tensor) -> Tensor:
        """The estimate alone; a denoiser whose divergence costs extra passes overrides it."""
        return self(r, sigma)[0]


# --------------------------------------------------------------------------- divergences
def _real_view(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """``Re Σ_i conj(a_i) b_i`` per row, shape ``(n, 1)``."""
    prod = _real_view(a) * _real_view(b)
    dims = tuple(range(1, prod.ndim))
    return prod.sum(dim=dims).unsqueeze(-1)


def _real_dims(r: Tensor) -> int:
    return r.shape[-1] * (2 if r.is_complex() else 1)


def mc_divergence(fn: Callable[[Tensor], Tensor], r: Tensor, value: Tensor | None = None, *,
                  probe: Tensor | None = None, eps_ratio: float = MC_EPS_RATIO) -> Tensor:
    r"""Monte-Carlo estimate of the mean divergence ``⟨η'⟩`` of a map ``fn`` at ``r``.

    One random probe ``b ~ N(0, I)`` and a finite difference (Ramani, Blu and Unser, "Monte-Carlo
    SURE", IEEE TIP 2008):

    .. math:: \mathrm{div}\, g(r) ≈ \frac{b^ᵀ\big(g(r + ε b) - g(r)\big)}{ε}, \qquad
              ε = \max_i |r_i| / 1000 \ \text{per row}, \qquad ⟨η'⟩ = \mathrm{div}/N

    since ``E[bᵀ J b] = tr J``. For complex ``r`` the probe is Gaussian in the real and imaginary
    parts (``2N`` real dimensions) and the estimate is divided by ``2N``: the real part of the
    Wirtinger derivative. The estimate is differentiable in ``fn``'s parameters.

    Parameters
    ----------
    fn : callable
        ``r ↦ g(r)`` (the noise level already bound).
    r : Tensor of shape (n, N)
    value : Tensor, optional
        ``g(r)`` when already computed.
    probe : Tensor, optional
        ``b``, of ``r``'s shape or ``(1, N)`` (one probe for every row); drawn from torch's
        global generator when omitted.
    eps_ratio : float, default=1000
        ``ε = max|r| / eps_ratio``.

    Returns
    -------
    Tensor of shape (n, 1)
    """
    if probe is None:  # unit variance in every real dimension (the real and imaginary parts)
        probe = torch.randn((*r.shape, 2) if r.is_complex() else r.shape, dtype=r.real.dtype,
                            device=r.device)
        if r.is_complex():
            probe = torch.view_as_complex(probe)
    if value is None:
        value = fn(r)
    mag = (r.detach().abs().amax(dim=-1, keepdim=True) / eps_ratio).clamp_min(
        _tiny(r.real.dtype) ** 0.5)
    perturbed = fn(r + mag.to(r.dtype) * probe)
    return _row_dot(probe, perturbed - value) / (mag * _real_dims(r))


def jacobian_divergence(fn: Callable[[Tensor], Tensor], r: Tensor, *,
                        create_graph: bool = False) -> Tensor:
    r"""The exact mean divergence ``⟨η'⟩ = tr(∂g/∂r)/N`` of ``fn`` at ``r``, row by row.

    ``N`` (``2N`` for complex ``r``) vector-Jacobian products in one batched backward pass
    (``is_grads_batched``): exact, and affordable for short signals. For complex ``r``,
    ``½(∂Re g/∂Re r + ∂Im g/∂Im r)`` averaged over the entries. ``fn`` must treat the rows
    independently.

    Returns
    -------
    Tensor of shape (n, 1)
    """
    with torch.enable_grad():
        r_in = r.detach().requires_grad_(True)
        out = _real_view(fn(r_in)).reshape(r.shape[0], -1)
        d = out.shape[1]
        eye = torch.eye(d, dtype=out.dtype, device=out.device)
        basis = eye.unsqueeze(1).expand(d, r.shape[0], d)
        (jac,) = torch.autograd.grad(out, r_in, basis, is_grads_batched=True,
                                     create_graph=create_graph)
    # jac[k, n, ...] = ∂out[n, k]/∂r[n, ...]: the diagonal is entry k of the real view
    diag = _real_view(jac).reshape(d, r.shape[0], d).diagonal(dim1=0, dim2=2)
    return diag.sum(dim=-1, keepdim=True) / d


# --------------------------------------------------------------------------- shrinkages
class Shrinkage(Denoiser):
    r"""A parameterised entrywise shrinkage ``η(r; σ, θ)`` of :mod:`~sklearn_unfold.denoisers.scalar`.

    ``θ`` is a parameter of the module (a 1-D tensor); the value and the exact mean derivative
    are those of the scalar function. Use one of the named subclasses.

    Parameters
    ----------
    theta : array-like of shape (n_theta,), optional
        Initial parameters (their names are in ``param_names``); the defaults of
        :data:`~sklearn_unfold.denoisers.scalar.DENOISER_PARAMS` when omitted.
    """

    #: The shrinkage's name in :data:`~sklearn_unfold.denoisers.scalar.DENOISER_PARAMS`.
    name: str = ""
    _fn = None

    def __init__(self, theta=None):
        super().__init__()
        names = DENOISER_PARAMS[self.name][0]
        init = (default_theta(self.name) if theta is None
                else np.asarray(theta.detach().cpu() if isinstance(theta, Tensor) else theta,
                                dtype=np.float64).reshape(-1))
        if init.size != len(names):
            raise ValueError(f"theta of denoiser {self.name!r} must have {len(names)} entries "
                             f"{names}; got {init.size}.")
        self.theta = nn.Parameter(torch.as_tensor(init, dtype=torch.float64))

    @property
    def param_names(self) -> tuple[str, ...]:
        return DENOISER_PARAMS[self.name][0]

    def forward(self, r: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        theta = self.theta
        if theta.dtype != r.real.dtype:  # a float64 solver running a float32 module, or back
            theta = theta.to(r.real.dtype)
        return type(self)._fn(r, sigma, theta)

    def summary(self) -> dict[str, np.ndarray]:
        theta = self.theta.detach().cpu().to(torch.float64).numpy().copy()
        out = {"theta": theta}
        out.update({n: np.float64(theta[i]) for i, n in enumerate(self.param_names)})
        return out

    def extra_repr(self) -> str:
        values = self.theta.detach().cpu().tolist()
        return ", ".join(f"{n}={v:.4g}" for n, v in zip(self.param_names, values, strict=True))


class SoftThreshold(Shrinkage):
    r"""Scaled soft threshold ``η(r) = g sign(r) max(|r| − λσ, 0)``, ``θ = (λ, g)``
    (:func:`~sklearn_unfold.denoisers.scalar.soft`)."""

    name = "soft"
    _fn = staticmethod(soft)

    def summary(self) -> dict[str, np.ndarray]:
        out = super().summary()
        out["threshold"] = out["lam"]
        return out


class BernoulliGaussian(Shrinkage):
    r"""Bernoulli-Gaussian MMSE denoiser ``E[x | r]``, ``θ = (v, ℓ)`` with ``p = 1/(1+e^ℓ)``
    (:func:`~sklearn_unfold.denoisers.scalar.bg`)."""

    name = "bg"
    _fn = staticmethod(bg)

    @classmethod
    def from_prior(cls, sparsity: float, var: float) -> BernoulliGaussian:
        """The denoiser matched to a prior of rate ``sparsity`` and non-zero variance ``var``."""
        from .scalar import bg_theta

        return cls(bg_theta(sparsity, var))

    def summary(self) -> dict[str, np.ndarray]:
        out = super().summary()
        out["sparsity"] = np.float64(1.0 / (1.0 + np.exp(out["logit"])))
        return out


class PiecewiseLinear(Shrinkage):
    """Piecewise-linear shrinkage, ``θ = (a, b, s0, s1, s2)``
    (:func:`~sklearn_unfold.denoisers.scalar.pwlin`)."""

    name = "pwlin"
    _fn = staticmethod(pwlin)


class ExponentialShrinkage(Shrinkage):
    """Exponential shrinkage, ``θ = (width, slope, dip)``
    (:func:`~sklearn_unfold.denoisers.scalar.expo`)."""

    name = "expo"
    _fn = staticmethod(expo)


class SplineShrinkage(Shrinkage):
    """Cubic-spline shrinkage, ``θ = (width, slope, dip)``
    (:func:`~sklearn_unfold.denoisers.scalar.spline`)."""

    name = "spline"
    _fn = staticmethod(spline)


#: The shrinkage module of each name.
SHRINKAGES: dict[str, type[Shrinkage]] = {
    cls.name: cls for cls in (SoftThreshold, BernoulliGaussian, PiecewiseLinear,
                              ExponentialShrinkage, SplineShrinkage)
}
