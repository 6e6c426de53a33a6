"""Learned ISTA: ISTA unrolled into layers with its matrices, steps and thresholds set free.

Three variants, each a layer that calls one step function of :mod:`sklearn_unfold.steps`:

* ``"lista"`` (Gregor-LeCun): ``x_{t+1} = soft(W_t y + S_t x_t; θ_t)``
  (:func:`~sklearn_unfold.steps.lista_step`);
* ``"cp"`` (LISTA-CP, coupled): ``x_{t+1} = soft(x_t + B_t (y − A x_t); θ_t)``
  (:func:`~sklearn_unfold.steps.ista_step` with ``B=B_t``);
* ``"alista"`` (Liu et al.): ``x_{t+1} = soft(x_t + γ_t Wᵀ(y − A x_t); θ_t)`` with the analytic,
  fixed ``W`` of :func:`analytic_weight`; only ``γ_t`` and ``θ_t`` are learned.

Each may add Chen et al.'s support selection: in layer ``t`` the ``p_t = min(1.2 (t+1), 13) %``
entries of largest magnitude bypass the threshold.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..operators import DenseOperator
from ..steps import ista_step, lista_step
from ..tuning import fit_step_threshold
from ._base import UnrolledNetwork

VARIANTS = ("lista", "cp", "alista")


def support_fraction(t: int) -> float:
    """Chen et al.'s support-selection fraction of layer ``t`` (0-based).

    ``p_t = min(1.2 (t+1), 13) / 100``: 1.2 % in the first layer, growing to 13 %.
    """
    return min(1.2 * (t + 1), 13.0) / 100.0


def _ridge_gram(A: Tensor, ridge: float) -> Tensor:
    """``G = AAᵀ + ridge·tr(AAᵀ)/M · I`` (``M × M``), the Gram matrix both weights solve with."""
    G = A @ A.T
    return G + ridge * torch.trace(G) / G.shape[0] * torch.eye(G.shape[0], dtype=G.dtype,
                                                               device=G.device)


def analytic_weight(A: Tensor, ridge: float = 1e-10) -> Tensor:
    r"""ALISTA's analytic weight: the ``W`` of least coherence with ``A`` (Frobenius form).

    .. math:: W = \arg\min_W \big\|\mathrm{offdiag}(Wᵀ A)\big\|_F^2
              \quad\text{s.t.}\quad w_iᵀ a_i = 1\ \ \forall i

    The problem separates over the columns; each is ``min wᵀ(AAᵀ)w`` subject to ``a_iᵀ w = 1``, so
    ``w_i = G⁻¹ a_i / (a_iᵀ G⁻¹ a_i)`` with ``G = AAᵀ`` (plus ``ridge·tr(G)/M`` on its diagonal
    when ``A`` is rank-deficient). For an i.i.d. Gaussian ``A`` this is close to ``A`` itself.

    Parameters
    ----------
    A : tensor of shape (M, N)
    ridge : float
        Relative Tikhonov term on ``G``.

    Returns
    -------
    W : tensor of shape (M, N), same dtype as ``A``; ``diag(WᵀA) = 1``.
    """
    A64 = A.to(torch.float64)
    GA = torch.linalg.solve(_ridge_gram(A64, ridge), A64)
    W = GA / (A64 * GA).sum(dim=0, keepdim=True)
    return W.to(A.dtype)


def pseudo_inverse_weight(A: Tensor, ridge: float = 1e-3) -> Tensor:
    r"""The regularised pseudo-inverse back-projection ``A⁺ = Aᵀ(AAᵀ + ρI)⁻¹``, shape ``(N, M)``.

    ``ρ = ridge·tr(AAᵀ)/M``. The matched step ``x + γAᵀ(y − Ax)`` multiplies the error by
    ``I − γAᵀA``, whose eigenvalues lie on both sides of 0, so it leaks every entry's error into
    all the others; ``x + A⁺(y − Ax)`` removes the error's row-space part and leaves its
    null-space part: for an i.i.d. error at ``M/N = 1/2`` that halves its variance, where the
    best matched step leaves two thirds of it. Learned ISTA offers it as the starting
    direction of each new layer (:meth:`LISTANetwork.calibrate_layer`).

    Parameters
    ----------
    A : tensor of shape (M, N)
    ridge : float
        Relative Tikhonov term (keeps a rank-deficient or ill-conditioned ``A`` finite).

    Returns
    -------
    B : tensor of shape (N, M), same dtype and device as ``A``.
    """
    A64 = A.to(torch.float64)
    return torch.linalg.solve(_ridge_gram(A64, ridge), A64).T.contiguous().to(A.dtype)


def _param(value, dtype, device) -> nn.Parameter:
    return nn.Parameter(torch.as_tensor(value, dtype=dtype, device=device).clone())


class LISTANetwork(UnrolledNetwork):
    r"""Learned ISTA (LISTA, LISTA-CP or ALISTA), optionally with support selection.

    Layer ``t = 0, …, T−1`` maps ``x_t`` to ``x_{t+1}`` (``x_0 = 0``):

    * ``"lista"``: ``x_{t+1} = η(W_t y + S_t x_t; θ_t)``, initialised at ``W = Aᵀ/L``,
      ``S = I − AᵀA/L``, ``θ = α/L`` (``L = ‖A‖₂²``). Layer 0 has no ``S`` (``x_0 = 0``).
    * ``"cp"``: ``x_{t+1} = η(x_t + B_t(y − A x_t); θ_t)``, initialised at ``B = Aᵀ/L``,
      ``θ = α/L``.
    * ``"alista"``: ``x_{t+1} = η(x_t + γ_t Wᵀ(y − A x_t); θ_t)`` with ``W`` from
      :func:`analytic_weight` (a buffer, not trained), initialised at ``γ = 1/‖WᵀA‖₂``, ``θ = αγ``.

    ``η`` is the soft threshold, or with ``support_selection`` the soft threshold whose largest
    ``p_t = min(1.2 (t+1), 13) %`` entries pass unthresholded. With these initial values and
    without support selection, ``"lista"`` and ``"cp"`` reproduce the ISTA iterates exactly.

    With ``tied=True`` all layers share one ``(W, S)`` (``"lista"``) or one ``B`` (``"cp"``);
    thresholds (and ALISTA's steps, which have no matrices to tie) stay per layer.

    Use :meth:`from_ista` to build one. Training first fits each new layer's step and
    threshold to the data (:meth:`calibrate_layer`), then trains it.

    Attributes
    ----------
    A : buffer (M, N)
        The sensing matrix (used by ``"cp"`` and ``"alista"``).
    W_analytic : buffer (N, M) or None
        ``Wᵀ`` of ALISTA, stored as the back-projection ``B`` of
        :func:`~sklearn_unfold.steps.ista_step`.
    thresholds : ParameterList of (1,) tensors
        ``θ_t``, one per layer.
    steps : ParameterList of (1,) tensors
        ``γ_t`` (``"alista"`` only; empty otherwise).
    W, S : ParameterList
        ``"lista"`` matrices; ``W`` is ``(N, M)`` per layer (one if tied), ``S`` ``(N, N)`` for
        layers ``1…T−1`` (one if tied).
    B : ParameterList
        ``"cp"`` back-projections ``(N, M)``, one per layer (one if tied).
    """

    calibrates = True

    def __init__(self, A: Tensor, alpha: float, n_layers: int, *, tied: bool = False,
                 variant: str = "lista", support_selection: bool = False,
                 dtype: torch.dtype = torch.float32, device=None):
        super().__init__(n_layers)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}.")
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1; got {n_layers}.")
        self.variant = variant
        self.tied = bool(tied)
        self.support_selection = bool(support_selection)
        A64 = torch.as_tensor(np.asarray(A) if not isinstance(A, Tensor) else A.detach().cpu(),
                              dtype=torch.float64)
        M, N = A64.shape
        L = float(torch.linalg.matrix_norm(A64, ord=2) ** 2)
        self.lipschitz = L
        self.alpha = float(alpha)
        self.register_buffer("A", A64.to(dtype=dtype, device=device))
        kw = {"dtype": dtype, "device": device}
        n_mat = 1 if self.tied else self.n_layers
        self.W = nn.ParameterList()
        self.S = nn.ParameterList()
        self.B = nn.ParameterList()
        self.steps = nn.ParameterList()
        self.W_analytic: Tensor | None
        theta0 = self.alpha / L
        if variant == "lista":
            self.W.extend(_param(A64.T / L, **kw) for _ in range(n_mat))
            n_s = 1 if self.tied else self.n_layers - 1
            if self.n_layers > 1:
                S0 = torch.eye(N, dtype=torch.float64) - A64.T @ A64 / L
                self.S.extend(_param(S0, **kw) for _ in range(n_s))
            self.register_buffer("W_analytic", None)
        elif variant == "cp":
            self.B.extend(_param(A64.T / L, **kw) for _ in range(n_mat))
            self.register_buffer("W_analytic", None)
        else:
            W = analytic_weight(A64)
            gamma0 = 1.0 / float(torch.linalg.matrix_norm(W.T @ A64, ord=2))
            theta0 = self.alpha * gamma0
            self.register_buffer("W_analytic", W.T.contiguous().to(**kw))
            self.steps.extend(_param([gamma0], **kw) for _ in range(self.n_layers))
        self.thresholds = nn.ParameterList(
            _param([theta0], **kw) for _ in range(self.n_layers))

    @classmethod
    def from_ista(cls, A, alpha: float, n_layers: int, *, tied: bool = False,
                  variant: str = "lista", support_selection: bool = False,
                  dtype: torch.dtype = torch.float32, device=None) -> LISTANetwork:
        """Build the network whose layers are, at initialisation, the iterations of ISTA.

        Parameters
        ----------
        A : array-like or tensor of shape (M, N)
            The sensing matrix.
        alpha : float
            ISTA's ℓ1 weight ``α`` (``θ = α/L``; see :class:`~sklearn_unfold.ISTARegressor`).
        n_layers : int
            Depth ``T``.
        tied : bool
            Share the matrices between layers.
        variant : {"lista", "cp", "alista"}
            The layer form (see the class docstring).
        support_selection : bool
            Let the largest ``min(1.2 (t+1), 13) %`` entries of layer ``t`` bypass the threshold.
        dtype, device
            Of the parameters and buffers.

        Returns
        -------
        LISTANetwork
        """
        return cls(A, alpha, n_layers, tied=tied, variant=variant,
                   support_selection=support_selection, dtype=dtype, device=device)

    # ------------------------------------------------------------------ helpers
    def support_frac(self, t: int) -> float:
        """The support-selection fraction of layer ``t`` (0 without support selection)."""
        return support_fraction(t) if self.support_selection else 0.0

    def _mat(self, plist: nn.ParameterList, t: int) -> Tensor:
        return plist[0] if self.tied else plist[t]

    # ------------------------------------------------------------------ interface
    def forward(self, Y: Tensor) -> list[Tensor]:
        """Run the first :attr:`n_active` layers on ``Y (n, M)``; return the outputs ``(n, N)``."""
        Y = Y.to(dtype=self.A.dtype)
        x = torch.zeros((Y.shape[0], self.A.shape[1]), dtype=Y.dtype, device=Y.device)
        Wy_tied = Y @ self.W[0].T if (self.variant == "lista" and self.tied) else None
        outs = []
        for t in range(self.n_active):
            x = self._layer(t, x, Y, self.thresholds[t], Wy_tied)
            outs.append(x)
        return outs

    def _layer(self, t: int, x: Tensor, Y: Tensor, theta: Tensor, Wy: Tensor | None = None
               ) -> Tensor:
        """Layer ``t`` on the estimate ``x``, with threshold ``theta`` (0: no shrinkage)."""
        frac = self.support_frac(t)
        if self.variant == "lista":
            Wy = Wy if Wy is not None else Y @ self._mat(self.W, t).T
            if t == 0:
                N = self.A.shape[1]
                zero_S = torch.zeros((), dtype=Y.dtype, device=Y.device)
                return lista_step(x, Wy, zero_S.expand(N, N), theta, support_frac=frac)
            return lista_step(x, Wy, self._mat(self.S, t - 1), theta, support_frac=frac)
        op = DenseOperator(self.A)
        if self.variant == "cp":
            return ista_step(x, Y, op, theta, B=self._mat(self.B, t), step=1.0,
                             support_frac=frac)
        return ista_step(x, Y, op, theta, B=self.W_analytic, step=self.steps[t],
                         support_frac=frac)

    @torch.no_grad()
    def calibrate_layer(self, t: int, Y: Tensor, X: Tensor) -> dict:
        r"""Fit layer ``t``'s direction, step and threshold to training pairs before it is trained.

        With the earlier layers' output ``x_t`` and the layer's update ``u = r_t − x_t`` (``r_t``
        its pre-threshold output), :func:`~sklearn_unfold.tuning.fit_step_threshold` finds
        ``γ, θ`` minimising ``‖shrink(x_t + γu; θ) − X‖²``; the layer is then rescaled to take
        the step ``γ u`` (``B_t ← γB_t``; ``W_t ← γW_t``, ``S_t ← (1−γ)I + γS_t``; ALISTA's
        ``γ_t ← γγ_t``) and ``θ_t ← θ``.

        For ``"cp"`` and ``"lista"`` the fit is made for two directions and the better one on
        the pairs is kept: the layer's current matrices (at the start ``B = Aᵀ/L``, ISTA's
        matched back-projection) and the regularised pseudo-inverse ``A⁺`` of
        :func:`pseudo_inverse_weight` (``B = A⁺``; ``W = A⁺``, ``S = I − A⁺A``). ISTA's step
        ``1/L`` and threshold ``α/L`` are far from what a layer of a short network wants, and
        Adam moves a scalar by about its learning rate per step. Tied matrices are shared by
        every layer, so with ``tied=True`` only ``θ_t`` is fitted after the first layer (ALISTA,
        which has no matrices, still fits ``γ_t``).

        Returns
        -------
        dict
            ``layer``, ``direction`` (``"matched"`` for the current matrices,
            ``"pseudo_inverse"``, or ``"analytic"`` for ALISTA), ``step``, ``threshold``,
            ``nmse_db_before``, ``nmse_db_after`` (on the pairs given).
        """
        Y, X = Y.to(dtype=self.A.dtype), X.to(dtype=self.A.dtype)
        active, self.n_active = self.n_active, t
        x = self(Y)[-1] if t > 0 else torch.zeros_like(X)
        self.n_active = active
        zero = torch.zeros_like(self.thresholds[t])
        tune_step = self.variant == "alista" or not self.tied or t == 0
        theta0 = float(self.thresholds[t])

        def fit() -> dict:
            update = self._layer(t, x, Y, zero) - x
            return fit_step_threshold(x, update, X, theta0, support_frac=self.support_frac(t),
                                      tune_step=tune_step)

        best, direction = fit(), "analytic" if self.variant == "alista" else "matched"
        if self.variant != "alista" and tune_step:
            saved = [m.detach().clone() for m in self._matrices(t)]
            self._set_direction(t, pseudo_inverse_weight(self.A))
            candidate = fit()
            if candidate["nmse_db_after"] < best["nmse_db_after"]:
                candidate["nmse_db_before"] = best["nmse_db_before"]  # at the layer's start
                best, direction = candidate, "pseudo_inverse"
            else:
                for m, old in zip(self._matrices(t), saved, strict=True):
                    m.copy_(old)
        if tune_step and best["step"] != 1.0:
            self._rescale_step(t, best["step"])
        self.thresholds[t].fill_(best["threshold"])
        return {"layer": t + 1, "direction": direction, **best}

    def _matrices(self, t: int) -> list[nn.Parameter]:
        """The matrices of layer ``t``: ``[B_t]``, or ``[W_t]`` and ``S_t`` where it has one."""
        if self.variant == "cp":
            return [self._mat(self.B, t)]
        S = self.S[0] if (self.tied and len(self.S)) else (self.S[t - 1] if t > 0 else None)
        return [self._mat(self.W, t)] + ([S] if S is not None else [])

    def _set_direction(self, t: int, B: Tensor) -> None:
        """Make layer ``t`` take the step ``x + B(y − Ax)`` (``"lista"``: ``W = B``, ``S = I − BA``)."""
        mats = self._matrices(t)
        mats[0].copy_(B)
        if len(mats) > 1:
            eye = torch.eye(mats[1].shape[0], dtype=mats[1].dtype, device=mats[1].device)
            mats[1].copy_(eye - B.to(mats[1].dtype) @ self.A.to(mats[1].dtype))

    def _rescale_step(self, t: int, gamma: float) -> None:
        """Make layer ``t`` (and, tied, every layer) take ``γ`` times its current step."""
        if self.variant == "alista":
            self.steps[t].mul_(gamma)
            return
        mats = self._matrices(t)  # B ← γB; W ← γW, S ← (1−γ)I + γS: x + γ(Wy + Sx − x)
        mats[0].mul_(gamma)
        if len(mats) > 1:
            eye = torch.eye(mats[1].shape[0], dtype=mats[1].dtype, device=mats[1].device)
            mats[1].mul_(gamma).add_(eye, alpha=1.0 - gamma)

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """Parameters introduced by layer ``t``; tied matrices belong to layer 0."""
        if not 0 <= t < self.n_layers:
            raise IndexError(f"layer {t} out of range for {self.n_layers} layers.")
        params: list[nn.Parameter] = [self.thresholds[t]]
        if self.variant == "alista":
            return params + [self.steps[t]]
        if self.tied:
            return params + (list(self.W) + list(self.S) + list(self.B) if t == 0 else [])
        if self.variant == "cp":
            return params + [self.B[t]]
        return params + [self.W[t]] + ([self.S[t - 1]] if t > 0 else [])

    def layer_summary(self) -> dict[str, np.ndarray]:
        """Per-layer coefficients: ``threshold`` ``θ_t``, ``step`` ``γ_t`` and ``support_frac``.

        For ``"lista"`` and ``"cp"`` the step is folded into the learned matrices and reported as 1.
        """
        theta = np.array([float(p.detach()) for p in self.thresholds])
        if self.variant == "alista":
            step = np.array([float(p.detach()) for p in self.steps])
        else:
            step = np.ones(self.n_layers)
        frac = np.array([self.support_frac(t) for t in range(self.n_layers)])
        return {"threshold": theta, "step": step, "support_frac": frac}
