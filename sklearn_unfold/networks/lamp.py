"""Learned AMP (Borgerding-Schniter-Rangan): AMP unrolled, with its matrices and denoiser set free.

Every layer is one call of :func:`sklearn_unfold.steps.amp_step`, the step the classical AMP
runs, with the layer's own parameters and the operator given at call time:

.. code-block:: text

    v_t     = y − A x̂_t + b_t v_{t−1}
    σ_t     = ‖v_t‖ / √M
    x̂_{t+1} = η(x̂_t + B_t v_t ; σ_t, θ_t)
    b_{t+1} = c_t · (N/M) · ⟨η'(x̂_t + B_t v_t ; σ_t, θ_t)⟩

with ``x̂_0 = 0``, ``v_{−1} = 0``, ``b_0 = 0``. Two parameterisations of ``B_t``:

* ``"matrix"``: a learned ``N × M`` matrix per layer (one if tied), initialised at ``Aᴴ`` of the
  one fixed ``A`` it is trained for;
* ``"operator"``: ``B_t = β_t Aᴴ`` with a learned scalar ``β_t`` (initialised at 1) and each
  sample's own operator, so that no parameter depends on one matrix: the form that is trained
  over an ensemble of operators and serves a fresh ``A`` per sample.

``θ_t`` starts at the parameters of the AMP it unrolls and the Onsager scale ``c_t`` at 1, so the
untrained network is exactly ``n_layers`` iterations of AMP.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..operators import LinearOperator, as_operator
from ..steps import amp_step
from ._unrolled import LEARNED_DENOISERS, DenoiserLayers, UnrolledNetwork, make_param

#: Denoiser names a LAMP layer accepts (besides any denoiser module).
LAMP_DENOISERS = LEARNED_DENOISERS
#: The parameterisations of the back-projection ``B_t``.
PARAMETERIZATIONS = ("matrix", "operator")


class LAMPNetwork(DenoiserLayers, UnrolledNetwork):
    r"""Learned AMP: ``n_layers`` AMP iterations with per-layer ``B_t``, ``θ_t`` and ``c_t``.

    Parameters
    ----------
    n_layers : int
        Depth.
    operator_shape : (int, int)
        ``(M, N)``.
    denoiser : torch.nn.Module or str, default="bg"
        The denoiser every layer starts from: a module following the contract of
        :mod:`sklearn_unfold.denoisers` (a shrinkage, an MLP, a CNN, or a user's own), or a name
        of :data:`~sklearn_unfold.denoisers.DENOISER_NAMES` (``"mlp"``: the BG shrinkage plus
        a per-entry MLP residual that starts at zero). With a non-separable denoiser (a CNN)
        the network is learned D-AMP (Metzler, Mousavi and Baraniuk, NeurIPS 2017).
    theta : array-like of shape (n_theta,), optional
        Initial parameters of a named shrinkage (for ``"mlp"``, the BG part's ``(v, ℓ)``).
    tied : bool, default=False
        One matrix ``B`` (or one scale ``β``) for all layers (``c_t`` stays free).
    tie_denoiser : bool, default=False
        One denoiser module shared by every layer, instead of one copy per layer.
    B0 : Tensor of shape (N, M), optional
        The initial back-projection (``Aᴴ``) of the ``"matrix"`` parameterisation; ``None``
        gives the ``"operator"`` parameterisation ``B_t = β_t Aᴴ``.
    dtype, device
        Of the parameters.

    Notes
    -----
    Each layer calls :func:`sklearn_unfold.steps.amp_step`; there is no second copy of the
    update rule here. Use :meth:`from_amp` to build one.
    """

    def __init__(self, n_layers: int, operator_shape, denoiser="bg", theta=None, *,
                 tied: bool = False, tie_denoiser: bool = False, B0: Tensor | None = None,
                 dtype: torch.dtype = torch.float32, device=None):
        super().__init__(n_layers, tied)
        self.operator_shape = tuple(int(d) for d in operator_shape)
        M, N = self.operator_shape
        self.parameterization = "operator" if B0 is None else "matrix"
        self.operator_agnostic = B0 is None
        if B0 is not None:
            if tuple(B0.shape) != (N, M):
                raise ValueError(f"B0 must have shape (N, M) = {(N, M)}; got {tuple(B0.shape)}.")
            self.add_layer_params("B", lambda: make_param(B0.detach(), dtype, device),
                                  tieable=True)
        else:
            self.add_layer_params("beta", lambda: make_param(1.0, dtype, device), tieable=True)
        self.add_layer_params("onsager_scale", lambda: make_param(1.0, dtype, device))
        self._init_denoisers(denoiser, theta, tie_denoiser=tie_denoiser, dtype=dtype,
                             device=device)

    @classmethod
    def from_amp(cls, A, denoiser, theta, n_layers: int, *, tied: bool = False,
                 tie_denoiser: bool = False, parameterization: str = "matrix",
                 dtype: torch.dtype = torch.float32, device="cpu") -> LAMPNetwork:
        """Unroll ``n_layers`` iterations of AMP with denoiser ``denoiser(·; θ)``.

        Parameters
        ----------
        A : array-like, tensor or LinearOperator
            The operator (``"matrix"``: its dense ``Aᴴ`` initialises ``B_t``; ``"operator"``:
            only its shape is used).
        denoiser : torch.nn.Module or str
            The denoiser (see the class docstring).
        theta : array-like of shape (n_theta,) or None
            The AMP's shrinkage parameters (e.g. a fitted ``AMPRegressor.theta_``) for a named
            shrinkage; ``None`` for a module.
        n_layers : int
        tied, tie_denoiser : bool, default=False
        parameterization : {"matrix", "operator"}, default="matrix"
        dtype : torch.dtype, default=torch.float32
        device : str or torch.device, default="cpu"

        Returns
        -------
        LAMPNetwork
            A network whose forward pass equals ``n_layers`` AMP iterations.
        """
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}; got "
                             f"{parameterization!r}.")
        if isinstance(theta, Tensor):
            theta = theta.detach().cpu().numpy()
        op = as_operator(A, dtype=None)
        B0 = None
        if parameterization == "matrix":
            if op.per_sample:
                raise ValueError(
                    f"parameterization='matrix' learns matrices for one fixed operator; got a "
                    f"per-sample batch of shape {op.shape}. Use parameterization='operator'.")
            dense = op.to_dense()
            B0 = dense.conj().mT.contiguous()
        return cls(n_layers, op.shape[-2:], denoiser, theta, tied=tied, tie_denoiser=tie_denoiser,
                   B0=B0, dtype=dtype, device=device)

    # ------------------------------------------------------------------ layers
    def forward(self, Y: Tensor, op: LinearOperator) -> list[Tensor]:
        """Run the first :attr:`n_active` layers; return every layer's estimate ``x̂_{t+1}``."""
        Y, op = self._cast(Y, op)
        x = v = b = None  # x̂_0 = 0, v_{-1} = 0, b_0 = 0
        outputs = []
        for t in range(self.n_active):
            if self.parameterization == "matrix":
                B, step = self.layer_param("B", t), 1.0
            else:
                B, step = None, self.layer_param("beta", t)
            x, v, b, _ = amp_step(x, v, b, Y, op, self.layer_denoiser(t), B=B, step=step,
                                  onsager_scale=self.onsager_scale[t])
            outputs.append(x)
        return outputs

    def layer_summary(self) -> dict[str, np.ndarray]:
        """``{"onsager_scale": (L,), "theta": (L, n_theta), <θ names>: (L,) ...}``.

        The denoisers' readable parameters come layer by layer (a shrinkage's ``theta`` and
        its named entries; for the soft threshold ``"threshold"``, for BG the active rate
        ``"sparsity"``; nothing for a neural denoiser); the ``"operator"`` parameterisation adds
        the back-projection scales under ``"step"``.
        """
        out = {"onsager_scale": self.per_layer_values("onsager_scale").reshape(-1)}
        out.update(self._denoiser_summary())
        if self.parameterization == "operator":
            out["step"] = self.per_layer_values("beta").reshape(-1)
        return out
