"""Learned denoising VAMP: VAMP iterations unrolled into layers with their parameters set free.

Each layer calls :func:`sklearn_unfold.steps.vamp_step` once (the LMMSE stage of the operator it
is given, then the denoiser stage), with its own learned noise precision, precision
corrections, optional per-singular-value gains and denoiser. No parameter but the optional gains
depends on one matrix: the LMMSE stage always comes from each sample's own operator.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..operators import LinearOperator
from ..steps import vamp_initial_precision, vamp_precision_bounds, vamp_step
from ._unrolled import DenoiserLayers, UnrolledNetwork, make_param

#: The smallest noise variance, relative to the signal's second moment (noiseless data).
_MIN_NOISE_VAR = 1e-9
#: The smallest learned damping: a layer keeps at least this share of its new message.
_MIN_DAMPING = 0.05


class LDVAMPNetwork(DenoiserLayers, UnrolledNetwork):
    r"""Learned denoising VAMP (Borgerding's LVAMP generalised to learned denoisers).

    Layer ``t`` is one call of :func:`~sklearn_unfold.steps.vamp_step`:

    .. math::
        &γ_2 \leftarrow c_{2,t}\,γ_2, \qquad
        \hat x_2 = r_2 + V\,\mathrm{diag}(g_{t,i}\,d_i)\,(Uᴴy - \mathrm{diag}(s)Vᴴ r_2),
        \quad d_i = \frac{γ_{w,t} s_i}{γ_{w,t} s_i^2 + γ_2} \\
        &α_2 = 1 - \tfrac1N \textstyle\sum_i g_{t,i} d_i s_i, \quad
        γ_1 = c_{1,t}\,γ_2\frac{1-α_2}{α_2}, \quad r_1 = \frac{\hat x_2 - α_2 r_2}{1-α_2} \\
        &\hat x_1 = η_t(r_1;\ γ_1^{-1/2}), \quad α_1 = \langle η_t'\rangle, \quad
        γ_2^+ = γ_1\frac{1-α_1}{α_1}, \quad r_2^+ = \frac{\hat x_1 - α_1 r_1}{1-α_1}

    and outputs ``x̂1``. The LMMSE stage is the operator's own
    (:meth:`~sklearn_unfold.operators.LinearOperator.lmmse`: the SVD form above, the closed
    form of a row-orthogonal operator, or conjugate gradients), so the same network runs on
    one fixed matrix, a fast transform or a fresh operator per sample. The first layer starts
    from ``r_2 = 0`` and the per-sample precision of
    :func:`~sklearn_unfold.steps.vamp_initial_precision`, as
    :func:`~sklearn_unfold.solvers.vamp_iterates` does. Learned per layer:

    * ``γ_{w,t} = exp(log_gamma_w[t])``, initialised at ``1/σ_w²`` (Borgerding's LVAMP); or,
      with ``adaptive_noise``, ``γ_{w,t} = \hat γ_{w,t} exp(log_cw[t])``: each sample's own
      noise precision, re-estimated in every layer by expectation maximisation (adaptive VAMP,
      :func:`~sklearn_unfold.steps.vamp_step`; ``\hat γ_{w,0} = 1/σ_w²``), times a learned
      correction initialised at 1. The network then serves measurements of any SNR;
    * ``c_{1,t} = exp(log_c1[t])``, ``c_{2,t} = exp(log_c2[t])``, initialised at 1. The ``γ_2``
      correction multiplies the precision that layer ``t`` *receives*; placed there, the first
      layer learns its initial precision and every layer's parameters reach the output;
    * ``g_t`` (``n_gains > 0``): per-singular-value gains, initialised at 1; they belong to one
      operator's SVD, so a network with gains serves only operators with ``n_gains`` singular
      values;
    * ``η_t``: the layer's denoiser module (:mod:`~sklearn_unfold.denoisers`): a parameterised
      shrinkage with parameters ``θ_t`` (initialised at ``theta``), the BG shrinkage plus the
      residual of a per-entry MLP (``"mlp"``, which starts at zero), or any module, a CNN
      included (learned D-VAMP: its divergence ``α_1`` then comes from a Monte-Carlo probe).

    At initialisation the network reproduces the classical VAMP iterates with its denoiser (for
    ``"mlp"``, those of VAMP-bg). ``tied=True`` shares the LMMSE stage (``γ_w`` and the gains)
    across layers; ``tie_denoiser=True`` shares the denoiser module; the corrections stay per
    layer.

    Parameters
    ----------
    n_layers : int
    operator_shape : (int, int)
        ``(M, N)``.
    denoiser : torch.nn.Module or str
        A denoiser module, or a name of :data:`~sklearn_unfold.denoisers.DENOISER_NAMES`.
    theta : array-like or None
        Initial parameters of a named shrinkage (for ``"mlp"``: the BG parameters ``(v, ℓ)``).
    noise_var : float
        ``σw²``; the initial noise precision is ``1/σw²`` (``σw²`` floored at
        ``1e-9·E[x²]`` for noiseless data: relative to the data, so scale-free).
    signal_second_moment : float
        ``E[x²]``; it floors the first layer's per-sample starting precision.
    tied : bool, default=False
    tie_denoiser : bool, default=False
        One denoiser module for every layer instead of one copy per layer.
    n_gains : int, default=0
        Number of per-singular-value gains (0: none).
    damping : float in (0, 1], default=1.0
        Below 1, the layers unroll damped VAMP: from the second layer on, layer ``t`` passes on
        ``r_2 ← β_t r_2^+ + (1-β_t) r_2`` and ``γ_2 ← (β_t/\sqrt{γ_2^+} + (1-β_t)/\sqrt{γ_2})^{-2}``
        with a learned ``β_t`` (initialised at ``damping``, kept in ``[0.05, 1]``), as
        :func:`~sklearn_unfold.solvers.vamp_iterates` damps with a fixed one.
    dtype, device
        Of the parameters.
    """

    def __init__(self, n_layers: int, operator_shape, denoiser, theta, noise_var: float,
                 signal_second_moment: float, *, tied: bool = False, tie_denoiser: bool = False,
                 n_gains: int = 0, damping: float = 1.0, adaptive_noise: bool = False,
                 dtype: torch.dtype = torch.float32, device=None):
        super().__init__(n_layers, tied)
        if signal_second_moment <= 0:
            raise ValueError(f"signal_second_moment must be > 0; got {signal_second_moment}.")
        if not 0.0 < float(damping) <= 1.0:
            raise ValueError(f"damping must be in (0, 1]; got {damping}.")
        #: Whether the layers damp their messages (a learned ``β_t`` per layer from layer 1 on).
        self.damped = float(damping) < 1.0
        self.operator_shape = tuple(int(d) for d in operator_shape)
        self.gains = int(n_gains) > 0
        self.n_gains = int(n_gains)
        self.operator_agnostic = not self.gains
        self.signal_second_moment = float(signal_second_moment)
        self.noise_var = max(float(noise_var), _MIN_NOISE_VAR * self.signal_second_moment)
        #: Whether each sample's noise precision is re-estimated in every layer (adaptive VAMP).
        self.adaptive_noise = bool(adaptive_noise)
        if self.adaptive_noise:  # a learned correction of each layer's per-sample estimate
            self.add_layer_params("log_cw", lambda: make_param([0.0], dtype, device),
                                  tieable=True)
        else:
            self.add_layer_params(
                "log_gamma_w",
                lambda: make_param([math.log(1.0 / self.noise_var)], dtype, device),
                tieable=True)
        if self.gains:
            self.add_layer_params("gain", lambda: make_param(np.ones(self.n_gains), dtype, device),
                                  tieable=True)
        self.add_layer_params("log_c1", lambda: make_param([0.0], dtype, device))
        self.add_layer_params("log_c2", lambda: make_param([0.0], dtype, device))
        if self.damped:  # layer 0 starts from r2 = 0: there is nothing to damp towards
            self.add_layer_params("damping", lambda: make_param([float(damping)], dtype, device),
                                  first=1)
        self._init_denoisers(denoiser, theta, tie_denoiser=tie_denoiser, dtype=dtype,
                             device=device)

    @classmethod
    def from_vamp(cls, A, denoiser, theta, noise_var: float, signal_second_moment: float,
                  n_layers: int, *, tied: bool = False, tie_denoiser: bool = False,
                  gains: bool = False,
                  damping: float = 1.0, adaptive_noise: bool = False,
                  dtype: torch.dtype = torch.float32, device=None) -> LDVAMPNetwork:
        """Build the network whose layers are, at initialisation, the iterations of VAMP.

        Parameters
        ----------
        A : array-like, tensor or LinearOperator
            The operator it is built for (its shape; with ``gains``, its number of singular
            values).
        denoiser, theta, noise_var, signal_second_moment, n_layers, tied, tie_denoiser
            See the class docstring.
        gains : bool
            Learn per-singular-value gains of the LMMSE stage (needs an operator with an SVD).
        damping : float in (0, 1], default=1.0
            The VAMP damping ``β`` unrolled (see :func:`~sklearn_unfold.solvers.vamp_iterates`);
            below 1 each layer from the second on learns its own ``β_t``, starting at ``β``.
        adaptive_noise : bool, default=False
            Unroll adaptive VAMP: see the class docstring.
        dtype, device
            Of the parameters.

        Returns
        -------
        LDVAMPNetwork
        """
        from ..operators import as_operator

        op = as_operator(A, dtype=None)
        n_gains = 0
        if gains:
            svd = op.svd()
            if svd is None or op.per_sample:
                raise ValueError(f"gains=True needs one fixed operator with an SVD (a matrix); "
                                 f"got {type(op).__name__} of shape {op.shape}.")
            n_gains = int(svd[1].shape[-1])
        return cls(n_layers, op.shape[-2:], denoiser, theta, noise_var, signal_second_moment,
                   tied=tied, tie_denoiser=tie_denoiser, n_gains=n_gains, damping=damping,
                   adaptive_noise=adaptive_noise, dtype=dtype, device=device)

    # ------------------------------------------------------------------ interface
    def forward(self, Y: Tensor, op: LinearOperator) -> list[Tensor]:
        """Run the first :attr:`n_active` layers on ``Y (n, M)``; return each layer's ``x̂1``."""
        Y, op = self._cast(Y, op)
        n, N = Y.shape[0], self.operator_shape[1]
        if self.gains:
            svd = op.svd()
            if svd is None or svd[1].shape[-1] != self.n_gains:
                raise ValueError(f"this network learned {self.n_gains} per-singular-value gains; "
                                 f"the operator {type(op).__name__} of shape {op.shape} has "
                                 f"{'no SVD' if svd is None else svd[1].shape[-1]} singular values.")
        context = op.lmmse_context(Y)
        r2 = torch.zeros((n, N), dtype=Y.dtype, device=Y.device)
        gamma2 = vamp_initial_precision(Y, op.frobenius_sq(), self.noise_var,
                                        self.signal_second_moment)
        bounds = vamp_precision_bounds(gamma2.detach())  # relative to the data: scale-free
        if self.adaptive_noise:  # each sample's estimate, from the training noise level on
            gamma_w_hat = torch.full((n, 1), 1.0 / self.noise_var, dtype=gamma2.dtype,
                                     device=Y.device)
        outs = []
        for t in range(self.n_active):
            if self.adaptive_noise:
                gamma_w = gamma_w_hat * self.layer_param("log_cw", t).exp()
            else:
                gamma_w = self.layer_param("log_gamma_w", t).exp()
            x1, r2_new, gamma2_new, _, *em = vamp_step(
                r2, gamma2 * self.log_c2[t].exp(), context, op, gamma_w, self.layer_denoiser(t),
                gain_scale=self.layer_param("gain", t) if self.gains else None,
                gamma1_scale=self.log_c1[t].exp(), precision_bounds=bounds,
                y=Y if self.adaptive_noise else None)
            if em:
                gamma_w_hat = em[0]
            if self.damped and t > 0:  # VAMP's damping (vamp_iterates), with a learned β_t
                beta = self.layer_param("damping", t).clamp(_MIN_DAMPING, 1.0)
                r2_new = beta * r2_new + (1.0 - beta) * r2
                gamma2_new = (beta * gamma2_new.rsqrt() + (1.0 - beta) * gamma2.rsqrt()) ** -2
            r2, gamma2 = r2_new, gamma2_new
            outs.append(x1)
        return outs

    def layer_summary(self) -> dict[str, np.ndarray]:
        """Per-layer coefficients.

        ``noise_precision`` (``γ_w``), ``gamma1_scale`` (``c_1``), ``gamma2_scale`` (``c_2``),
        the denoisers' readable parameters layer by layer (a shrinkage's ``theta``,
        ``(n_layers, P)``, and its named entries; nothing for a neural denoiser) and ``gain``
        (``(n_layers, R)``, with gains only).
        """
        T = self.n_layers
        noise = ("noise_precision_scale", "log_cw") if self.adaptive_noise else (
            "noise_precision", "log_gamma_w")
        out = {
            noise[0]: self.per_layer_values(noise[1], torch.exp).reshape(T),
            "gamma1_scale": self.per_layer_values("log_c1", torch.exp).reshape(T),
            "gamma2_scale": self.per_layer_values("log_c2", torch.exp).reshape(T),
            **self._denoiser_summary(),
        }
        if self.gains:
            out["gain"] = self.per_layer_values("gain")
        if self.damped:
            out["damping"] = np.array([1.0] + [
                float(self.layer_param("damping", t).detach().clamp(_MIN_DAMPING, 1.0))
                for t in range(1, self.n_layers)])
        return out
