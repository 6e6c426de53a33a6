"""Learned denoising VAMP: VAMP iterations unrolled into layers with their parameters set free.

Each layer calls :func:`sklearn_unfold.steps.vamp_step` once (the LMMSE stage through the SVD of
``A``, then the denoiser stage), with its own learned noise precision, precision corrections,
optional per-singular-value gains and denoiser.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ..denoisers import DENOISER_PARAMS, MLPDenoiser, get_denoiser, mlp_residual_denoiser
from ..operators import as_operator
from ..steps import vamp_initial_precision, vamp_step
from ._base import UnrolledNetwork

_MIN_NOISE_VAR = 1e-10


def _param(value, dtype, device) -> nn.Parameter:
    return nn.Parameter(torch.as_tensor(value, dtype=dtype, device=device).clone())


class LDVAMPNetwork(UnrolledNetwork):
    r"""Learned denoising VAMP (Borgerding's LVAMP generalised to learned denoisers).

    Layer ``t`` is one call of :func:`~sklearn_unfold.steps.vamp_step`:

    .. math::
        &γ_2 \leftarrow c_{2,t}\,γ_2, \qquad
        \hat x_2 = r_2 + V\,\mathrm{diag}(g_{t,i}\,d_i)\,(Uᵀy - \mathrm{diag}(s)Vᵀ r_2),
        \quad d_i = \frac{γ_{w,t} s_i}{γ_{w,t} s_i^2 + γ_2} \\
        &α_2 = 1 - \tfrac1N \textstyle\sum_i g_{t,i} d_i s_i, \quad
        γ_1 = c_{1,t}\,γ_2\frac{1-α_2}{α_2}, \quad r_1 = \frac{\hat x_2 - α_2 r_2}{1-α_2} \\
        &\hat x_1 = η_t(r_1;\ γ_1^{-1/2}), \quad α_1 = \langle η_t'\rangle, \quad
        γ_2^+ = γ_1\frac{1-α_1}{α_1}, \quad r_2^+ = \frac{\hat x_1 - α_1 r_1}{1-α_1}

    and outputs ``x̂1``. The first layer starts from ``r_2 = 0`` and the per-sample precision of
    :func:`~sklearn_unfold.steps.vamp_initial_precision`, as
    :func:`~sklearn_unfold.solvers.vamp_iterates` does. Learned per layer:

    * ``γ_{w,t} = exp(log_gamma_w[t])``, initialised at ``1/σ_w²`` (Borgerding's LVAMP);
    * ``c_{1,t} = exp(log_c1[t])``, ``c_{2,t} = exp(log_c2[t])``, initialised at 1. The ``γ_2``
      correction multiplies the precision that layer ``t`` *receives* (the same family as
      ``vamp_step``'s ``gamma2_scale`` on layer ``t−1``'s output); placed there, the first layer
      learns its initial precision and every layer's parameters reach the output;
    * ``g_t`` (``gains=True``): per-singular-value gains, initialised at 1;
    * ``η_t``: a parameterised shrinkage of :mod:`~sklearn_unfold.denoisers` with parameters
      ``θ_t`` (initialised at ``theta``), or for ``denoiser="mlp"`` the BG shrinkage plus the
      residual of an :class:`~sklearn_unfold.denoisers.MLPDenoiser`
      (:func:`~sklearn_unfold.denoisers.mlp_residual_denoiser`), whose residual starts at zero.

    At initialisation the network reproduces the classical VAMP iterates (for ``"mlp"``, those
    of VAMP-bg).
    ``tied=True`` shares the LMMSE stage (``γ_w`` and the gains) and, for ``"mlp"``, the MLP
    across layers; the corrections ``c_1, c_2`` and the shrinkage parameters stay per layer.

    Use :meth:`from_vamp` to build one.

    Attributes
    ----------
    U, s, V : buffers
        Thin SVD ``A = U diag(s) Vᵀ``: ``(M, R)``, ``(R,)``, ``(N, R)``.
    log_gamma_w, log_c1, log_c2 : ParameterList of (1,) tensors
    gain : ParameterList of (R,) tensors
        Empty unless ``gains``.
    theta : ParameterList of (P,) tensors
        The shrinkage parameters per layer (BG's ``(v, ℓ)`` under the MLP for ``"mlp"``).
    mlps : ModuleList of MLPDenoiser
        One per layer (one if tied) for ``"mlp"``; empty otherwise.
    """

    def __init__(self, A, denoiser: str, theta, noise_var: float, signal_second_moment: float,
                 n_layers: int, *, tied: bool = False, gains: bool = False,
                 dtype: torch.dtype = torch.float32, device=None, mlp_hidden: int = 16):
        super().__init__(n_layers)
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1; got {n_layers}.")
        if denoiser != "mlp" and denoiser not in DENOISER_PARAMS:
            raise ValueError(
                f"denoiser must be 'mlp' or one of {sorted(DENOISER_PARAMS)}; got {denoiser!r}.")
        if signal_second_moment <= 0:
            raise ValueError(f"signal_second_moment must be > 0; got {signal_second_moment}.")
        self.denoiser = denoiser
        #: The shrinkage under the MLP residual ("bg" for "mlp"), else the denoiser itself.
        self.base_denoiser = "bg" if denoiser == "mlp" else denoiser
        self.tied = bool(tied)
        self.gains = bool(gains)
        self.noise_var = max(float(noise_var), _MIN_NOISE_VAR)
        self.signal_second_moment = float(signal_second_moment)
        kw = {"dtype": dtype, "device": device}
        U, s, V = as_operator(A, dtype=torch.float64).svd()
        self.register_buffer("U", U.to(**kw))
        self.register_buffer("s", s.to(**kw))
        self.register_buffer("V", V.to(**kw))
        n_lmmse = 1 if self.tied else self.n_layers
        self.log_gamma_w = nn.ParameterList(
            _param([math.log(1.0 / self.noise_var)], **kw) for _ in range(n_lmmse))
        self.gain = nn.ParameterList(
            _param(torch.ones(s.shape[0]), **kw) for _ in range(n_lmmse if self.gains else 0))
        self.log_c1 = nn.ParameterList(_param([0.0], **kw) for _ in range(self.n_layers))
        self.log_c2 = nn.ParameterList(_param([0.0], **kw) for _ in range(self.n_layers))
        th = torch.as_tensor(np.asarray(theta, dtype=np.float64)).reshape(-1)
        n_expected = len(DENOISER_PARAMS[self.base_denoiser][0])
        if th.numel() != n_expected:
            raise ValueError(f"theta of denoiser {denoiser!r} must have {n_expected} entries "
                             f"({DENOISER_PARAMS[self.base_denoiser][0]}); got {th.numel()}.")
        self.theta = nn.ParameterList(_param(th, **kw) for _ in range(self.n_layers))
        n_mlp = 0 if denoiser != "mlp" else (1 if self.tied else self.n_layers)
        self.mlps = nn.ModuleList(MLPDenoiser(hidden=mlp_hidden).to(**kw) for _ in range(n_mlp))

    @classmethod
    def from_vamp(cls, A, denoiser: str, theta, noise_var: float, signal_second_moment: float,
                  n_layers: int, *, tied: bool = False, gains: bool = False,
                  dtype: torch.dtype = torch.float32, device=None) -> LDVAMPNetwork:
        """Build the network whose layers are, at initialisation, the iterations of VAMP.

        Parameters
        ----------
        A : array-like or tensor of shape (M, N)
            The sensing matrix (its SVD is stored).
        denoiser : str
            A shrinkage of :data:`~sklearn_unfold.denoisers.DENOISER_PARAMS` (``"bg"``,
            ``"pwlin"``, ``"expo"``, ``"spline"``, ``"soft"``) or ``"mlp"``.
        theta : array-like
            Initial shrinkage parameters (for ``"mlp"``: the BG parameters ``(v, ℓ)`` of the
            shrinkage under the MLP residual).
        noise_var : float
            ``σw²``; the initial noise precision is ``1/σw²`` (floored at 1e-10 for noiseless data).
        signal_second_moment : float
            ``E[x²]``; it floors the first layer's per-sample starting precision
            (:func:`~sklearn_unfold.steps.vamp_initial_precision`).
        n_layers : int
        tied : bool
            Share the LMMSE stage (and the MLP) across layers.
        gains : bool
            Learn per-singular-value gains of the LMMSE stage.
        dtype, device
            Of the parameters and buffers.

        Returns
        -------
        LDVAMPNetwork
        """
        return cls(A, denoiser, theta, noise_var, signal_second_moment, n_layers, tied=tied,
                   gains=gains, dtype=dtype, device=device)

    # ------------------------------------------------------------------ helpers
    def _lmmse_index(self, t: int) -> int:
        return 0 if self.tied else t

    def _denoise(self, t: int):
        """``(denoiser_fn, theta)`` of layer ``t`` in the signature that ``vamp_step`` calls."""
        base = get_denoiser(self.base_denoiser)
        if self.denoiser == "mlp":
            return mlp_residual_denoiser(self.mlps[0 if self.tied else t], base), self.theta[t]
        return base, self.theta[t]

    # ------------------------------------------------------------------ interface
    def forward(self, Y: Tensor) -> list[Tensor]:
        """Run the first :attr:`n_active` layers on ``Y (n, M)``; return each layer's ``x̂1``."""
        Y = Y.to(dtype=self.s.dtype)
        n, N = Y.shape[0], self.V.shape[0]
        Uty = Y @ self.U
        r2 = torch.zeros((n, N), dtype=Y.dtype, device=Y.device)
        gamma2 = vamp_initial_precision(Y, self.s, self.noise_var, self.signal_second_moment)
        outs = []
        for t in range(self.n_active):
            k = self._lmmse_index(t)
            fn, theta = self._denoise(t)
            x1, r2, gamma2, _ = vamp_step(
                r2, gamma2 * self.log_c2[t].exp(), Uty, self.s, self.V,
                self.log_gamma_w[k].exp(), fn, theta,
                gain_scale=self.gain[k] if self.gains else None,
                gamma1_scale=self.log_c1[t].exp())
            outs.append(x1)
        return outs

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """Parameters introduced by layer ``t``; tied (shared) ones belong to layer 0."""
        if not 0 <= t < self.n_layers:
            raise IndexError(f"layer {t} out of range for {self.n_layers} layers.")
        params: list[nn.Parameter] = [self.log_c1[t], self.log_c2[t], self.theta[t]]
        if not self.tied or t == 0:
            params.append(self.log_gamma_w[t])
            if self.gains:
                params.append(self.gain[t])
            if self.denoiser == "mlp":
                params.extend(self.mlps[t].parameters())
        return params

    def layer_summary(self) -> dict[str, np.ndarray]:
        """Per-layer coefficients.

        ``noise_precision`` (``γ_w``), ``gamma1_scale`` (``c_1``), ``gamma2_scale`` (``c_2``),
        ``theta`` (``(n_layers, P)``, the shrinkage parameters) and ``gain`` (``(n_layers, R)``,
        with gains only).
        """
        T = self.n_layers

        def per_layer(plist: nn.ParameterList, fn=lambda p: p) -> np.ndarray:
            return np.stack([fn(plist[self._lmmse_index(t) if len(plist) < T else t]).detach()
                             .cpu().to(torch.float64).numpy() for t in range(T)])

        out = {
            "noise_precision": per_layer(self.log_gamma_w, torch.exp).reshape(T),
            "gamma1_scale": per_layer(self.log_c1, torch.exp).reshape(T),
            "gamma2_scale": per_layer(self.log_c2, torch.exp).reshape(T),
        }
        out["theta"] = per_layer(self.theta)
        if self.gains:
            out["gain"] = per_layer(self.gain)
        return out
