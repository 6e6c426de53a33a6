"""Learned AMP (Borgerding-Schniter-Rangan): AMP unrolled, with its matrices and denoiser set free.

Every layer is one call of :func:`sklearn_unfold.steps.amp_step`, the step the classical AMP
runs, with the layer's own parameters:

.. code-block:: text

    v_t     = y − A x̂_t + b_t v_{t−1}
    σ_t     = ‖v_t‖ / √M
    x̂_{t+1} = η(x̂_t + B_t v_t ; σ_t, θ_t)
    b_{t+1} = c_t · (N/M) · ⟨η'(x̂_t + B_t v_t ; σ_t, θ_t)⟩

with ``x̂_0 = 0``, ``v_{−1} = 0``, ``b_0 = 0``. ``B_t`` (N×M) starts at ``Aᵀ``, ``θ_t`` at the
parameters of the AMP it unrolls and the Onsager scale ``c_t`` at 1, so the untrained network is
exactly ``n_layers`` iterations of AMP.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..denoisers import (
    DENOISER_PARAMS,
    MLPDenoiser,
    default_theta,
    get_denoiser,
    mlp_residual_denoiser,
)
from ..operators import DenseOperator
from ..steps import amp_step
from ._base import UnrolledNetwork

#: Denoisers a LAMP layer can use: the parameterised shrinkages and a per-entry MLP.
LAMP_DENOISERS = (*DENOISER_PARAMS, "mlp")


class LAMPNetwork(UnrolledNetwork):
    r"""Learned AMP: ``n_layers`` AMP iterations with per-layer ``B_t``, ``θ_t`` and ``c_t``.

    Parameters
    ----------
    A : Tensor of shape (M, N)
        The sensing matrix (a buffer: it is not trained).
    n_layers : int
        Depth.
    denoiser : str, default="bg"
        One of ``"soft"``, ``"bg"``, ``"pwlin"``, ``"expo"``, ``"spline"``
        (:mod:`sklearn_unfold.denoisers`) or ``"mlp"``: the BG shrinkage plus the residual of a
        small per-entry :class:`~sklearn_unfold.denoisers.MLPDenoiser` per layer
        (:func:`~sklearn_unfold.denoisers.mlp_residual_denoiser`), which starts at zero.
    theta : array-like of shape (n_theta,), optional
        Initial shrinkage parameters of every layer (for ``"mlp"``, the BG part's ``(v, ℓ)``);
        the shrinkage's defaults when omitted.
    tied : bool, default=False
        One matrix ``B`` for all layers instead of one per layer (the per-layer ``θ_t`` and
        ``c_t`` stay free).
    mlp_hidden : int, default=16
        Hidden width of the MLP denoiser.

    Notes
    -----
    Each layer calls :func:`sklearn_unfold.steps.amp_step`; there is no second copy of the
    update rule here.
    """

    def __init__(self, A: Tensor, n_layers: int, denoiser: str = "bg", theta=None, *,
                 tied: bool = False, mlp_hidden: int = 16):
        super().__init__(n_layers)
        if denoiser not in LAMP_DENOISERS:
            raise ValueError(f"denoiser must be one of {list(LAMP_DENOISERS)}; got {denoiser!r}.")
        self.denoiser = denoiser
        self.tied = bool(tied)
        self.register_buffer("A", A.detach().clone())
        dtype, device = A.dtype, A.device
        n_b = 1 if self.tied else self.n_layers
        self.B = nn.ParameterList(
            [nn.Parameter(A.detach().T.clone().contiguous()) for _ in range(n_b)])
        self.onsager_scale = nn.ParameterList(
            [nn.Parameter(torch.ones((), dtype=dtype, device=device)) for _ in range(n_layers)])
        #: The parameterised shrinkage (under the MLP residual for "mlp").
        self.base_denoiser = "bg" if denoiser == "mlp" else denoiser
        init = (default_theta(self.base_denoiser) if theta is None
                else np.asarray(theta, np.float64).reshape(-1))
        n_theta = len(DENOISER_PARAMS[self.base_denoiser][0])
        if init.size != n_theta:
            raise ValueError(f"theta of denoiser {denoiser!r} must have {n_theta} entries "
                             f"{DENOISER_PARAMS[self.base_denoiser][0]}; got {init.size}.")
        init = torch.as_tensor(init, dtype=dtype, device=device)
        self.theta = nn.ParameterList([nn.Parameter(init.clone()) for _ in range(n_layers)])
        n_mlp = n_layers if denoiser == "mlp" else 0
        self.mlp = nn.ModuleList(
            [MLPDenoiser(mlp_hidden).to(dtype=dtype, device=device) for _ in range(n_mlp)])

    @classmethod
    def from_amp(cls, A, denoiser: str, theta, n_layers: int, *, tied: bool = False,
                 dtype: torch.dtype = torch.float32, device="cpu", mlp_hidden: int = 16
                 ) -> LAMPNetwork:
        """Unroll ``n_layers`` iterations of AMP with denoiser ``denoiser(·; θ)``.

        Parameters
        ----------
        A : array-like or Tensor of shape (M, N)
        denoiser : str
            Denoiser name (see the class docstring).
        theta : array-like of shape (n_theta,) or None
            The AMP's denoiser parameters (e.g. a fitted ``AMPRegressor.theta_``).
        n_layers : int
        tied : bool, default=False
        dtype : torch.dtype, default=torch.float32
        device : str or torch.device, default="cpu"

        Returns
        -------
        LAMPNetwork
            A network whose forward pass equals ``n_layers`` AMP iterations.
        """
        if isinstance(theta, Tensor):
            theta = theta.detach().cpu().numpy()
        A_t = torch.as_tensor(np.asarray(A) if not isinstance(A, Tensor) else A,
                              dtype=dtype, device=device)
        return cls(A_t, n_layers, denoiser, theta, tied=tied, mlp_hidden=mlp_hidden)

    # ------------------------------------------------------------------ layers
    def _matrix(self, t: int) -> Tensor:
        return self.B[0 if self.tied else t]

    def _denoise(self, t: int):
        base = get_denoiser(self.base_denoiser)
        if self.denoiser == "mlp":
            return mlp_residual_denoiser(self.mlp[t], base), self.theta[t]
        return base, self.theta[t]

    def forward(self, Y: Tensor) -> list[Tensor]:
        """Run the first :attr:`n_active` layers; return every layer's estimate ``x̂_{t+1}``."""
        op = DenseOperator(self.A)
        x = v = b = None  # x̂_0 = 0, v_{-1} = 0, b_0 = 0
        outputs = []
        for t in range(self.n_active):
            fn, theta = self._denoise(t)
            x, v, b, _ = amp_step(x, v, b, Y, op, fn, theta, B=self._matrix(t),
                                  onsager_scale=self.onsager_scale[t])
            outputs.append(x)
        return outputs

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """Layer ``t``'s ``θ_t`` (or MLP weights), ``c_t`` and, untied or ``t = 0``, its ``B``."""
        params = [self.onsager_scale[t], self.theta[t]]
        if self.denoiser == "mlp":
            params += list(self.mlp[t].parameters())
        if not self.tied or t == 0:
            params.append(self._matrix(t))
        return params

    def layer_summary(self) -> dict[str, np.ndarray]:
        """``{"onsager_scale": (L,), "theta": (L, n_theta), <θ names>: (L,) ...}``.

        For ``"soft"`` the threshold multipliers are also under ``"threshold"``; for ``"bg"``
        the active rate ``p = 1/(1+e^ℓ)`` is under ``"sparsity"``.
        """
        out = {"onsager_scale": np.array([float(c.detach()) for c in self.onsager_scale])}
        theta = np.stack([th.detach().cpu().double().numpy() for th in self.theta])
        out["theta"] = theta
        for i, name in enumerate(DENOISER_PARAMS[self.base_denoiser][0]):
            out[name] = theta[:, i].copy()
        if self.denoiser == "soft":
            out["threshold"] = theta[:, 0].copy()
        if self.base_denoiser == "bg":
            out["sparsity"] = 1.0 / (1.0 + np.exp(theta[:, 1]))
        return out
