"""Denoisers: modules that return an estimate and its mean divergence.

The contract (:mod:`sklearn_unfold.denoisers.base`): a :class:`torch.nn.Module` whose
``forward(r, sigma)`` takes noisy signals ``r`` of shape ``(n, N)`` and their noise level
``sigma`` of shape ``(n, 1)`` and returns ``(value, dmean)``: the estimate, of ``r``'s shape,
and ``⟨η'⟩``, its divergence divided by ``N``, of shape ``(n, 1)``. Every solver, step and
network calls its denoiser this way; the package's own denoisers and a user's module plug in
alike.

* :mod:`~sklearn_unfold.denoisers.scalar`: the entrywise shrinkages as plain functions (the
  math) and the Bernoulli-Gaussian state-evolution helpers;
* :mod:`~sklearn_unfold.denoisers.base`: the contract, :func:`mc_divergence` and
  :func:`jacobian_divergence`, and the shrinkages as modules;
* :mod:`~sklearn_unfold.denoisers.neural`: a per-entry MLP and the convolutional
  :class:`ConvDenoiser1d` and :class:`DnCNN`;
* :mod:`~sklearn_unfold.denoisers.registry`: names to modules (:func:`make_denoiser`).
"""

from .base import (
    BernoulliGaussian,
    Denoiser,
    ExponentialShrinkage,
    PiecewiseLinear,
    Shrinkage,
    SoftThreshold,
    SplineShrinkage,
    jacobian_divergence,
    mc_divergence,
)
from .neural import ConvDenoiser1d, DnCNN, MLPDenoiser, MLPResidualDenoiser
from .registry import DENOISER_NAMES, FunctionDenoiser, as_denoiser, make_denoiser
from .scalar import (
    DENOISER_PARAMS,
    DenoiserFn,
    _tiny,  # noqa: F401 (the positivity guard the steps share)
    bg,
    bg_mse,
    bg_posterior_prob,
    bg_theta,
    default_theta,
    expo,
    get_denoiser,
    pwlin,
    soft,
    spline,
)

__all__ = [
    "DENOISER_NAMES", "DENOISER_PARAMS", "BernoulliGaussian", "ConvDenoiser1d", "Denoiser",
    "DenoiserFn", "DnCNN", "ExponentialShrinkage", "FunctionDenoiser", "MLPDenoiser",
    "MLPResidualDenoiser", "PiecewiseLinear", "Shrinkage", "SoftThreshold", "SplineShrinkage",
    "as_denoiser", "bg", "bg_mse", "bg_posterior_prob", "bg_theta", "default_theta", "expo",
    "get_denoiser", "jacobian_divergence", "make_denoiser", "mc_divergence", "pwlin", "soft",
    "spline",
]
