"""The one place where a denoiser's name becomes a module."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .base import SHRINKAGES, Denoiser
from .neural import ConvDenoiser1d, MLPResidualDenoiser

#: Names the estimators accept for ``denoiser``: the shrinkages, ``"mlp"`` (BG plus a per-entry
#: MLP residual) and ``"conv1d"`` (a :class:`ConvDenoiser1d` with its defaults).
DENOISER_NAMES = (*SHRINKAGES, "mlp", "conv1d")


def make_denoiser(name: str, theta=None) -> Denoiser:
    """A new denoiser module from its name (see :data:`DENOISER_NAMES`).

    ``theta`` sets the initial parameters of a shrinkage (for ``"mlp"``, of its BG part).
    """
    if name in SHRINKAGES:
        return SHRINKAGES[name](theta)
    if name == "mlp":
        return MLPResidualDenoiser("bg", theta=theta)
    if name == "conv1d":
        return ConvDenoiser1d()
    raise ValueError(f"denoiser must be one of {list(DENOISER_NAMES)} or a torch.nn.Module; got "
                     f"{name!r}.")


class FunctionDenoiser(Denoiser):
    """A scalar function ``fn(r, sigma, theta)`` with fixed ``theta``, as a module.

    What :func:`as_denoiser` makes of the function-and-parameters form the solvers also accept
    (``amp(Y, A, bg, theta)``).
    """

    def __init__(self, fn, theta) -> None:
        super().__init__()
        self.fn = fn
        self.register_buffer("theta", torch.as_tensor(
            theta.detach() if isinstance(theta, Tensor) else np.asarray(theta, np.float64)))

    def forward(self, r: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return self.fn(r, sigma, self.theta.to(device=r.device, dtype=r.real.dtype))


def as_denoiser(denoiser, theta=None) -> nn.Module:
    """The module that a solver or a step calls as ``denoiser(r, sigma)``.

    * a module (any ``torch.nn.Module`` whose ``forward(r, sigma)`` returns
      ``(value, dmean)``): itself (``theta`` must be ``None``);
    * a name: :func:`make_denoiser` ``(name, theta)``, fixed;
    * a scalar function ``fn(r, sigma, theta)`` of :mod:`~sklearn_unfold.denoisers.scalar`
      with its ``theta``: the module that calls it, fixed (no gradient flows to ``theta``).
    """
    if isinstance(denoiser, nn.Module):
        if theta is not None:
            raise ValueError("theta is given but the denoiser is a module, which holds its own "
                             "parameters; pass theta=None.")
        return denoiser
    if isinstance(denoiser, str):
        return make_denoiser(denoiser, theta).requires_grad_(False)
    if callable(denoiser):
        if theta is None:
            raise ValueError(f"the denoiser function {getattr(denoiser, '__name__', denoiser)!r} "
                             "needs its parameters theta.")
        for cls in SHRINKAGES.values():  # the package's own shrinkages: their (fixed) module
            if cls._fn is denoiser:
                return cls(theta).requires_grad_(False)
        return FunctionDenoiser(denoiser, theta)
    raise TypeError(f"denoiser must be a torch.nn.Module, a name or a function; got "
                    f"{type(denoiser).__name__}.")
