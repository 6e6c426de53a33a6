"""Learned ISTA: ISTA unrolled into layers with its matrices, steps and thresholds set free.

Three variants, one class each, each layer calling one step function of
:mod:`sklearn_unfold.steps`:

* :class:`LISTANetwork` (``"lista"``, Gregor-LeCun): ``x_{t+1} = soft(W_t y + S_t x_t; θ_t)``
  (:func:`~sklearn_unfold.steps.lista_step`);
* :class:`LISTACPNetwork` (``"cp"``, coupled): ``x_{t+1} = soft(x_t + B_t (y − A x_t); θ_t)``
  (:func:`~sklearn_unfold.steps.ista_step` with ``B=B_t``);
* :class:`ALISTANetwork` (``"alista"``, Liu et al.): ``x_{t+1} = soft(x_t + γ_t Wᴴ(y − A x_t);
  θ_t)`` with a fixed ``W``: the analytic weight of :func:`analytic_weight` for one fixed
  matrix, or ``W = A`` of each sample's own operator (the operator-independent form, trained
  over an ensemble of operators); only ``γ_t`` and ``θ_t`` are learned.

Each may add Chen et al.'s support selection: in layer ``t`` the ``p_t = min(1.2 (t+1), 13) %``
entries of largest magnitude bypass the threshold.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..operators import LinearOperator, as_operator
from ..steps import ista_step, lista_step
from ..tuning import fit_step_threshold
from ._unrolled import UnrolledNetwork, make_param

VARIANTS = ("lista", "cp", "alista")


def support_fraction(t: int) -> float:
    """Chen et al.'s support-selection fraction of layer ``t`` (0-based).

    ``p_t = min(1.2 (t+1), 13) / 100``: 1.2 % in the first layer, growing to 13 %.
    """
    return min(1.2 * (t + 1), 13.0) / 100.0


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float64, or complex128 for complex data."""
    return torch.complex128 if dtype.is_complex else torch.float64


def _ridge_gram(A: Tensor, ridge: float) -> Tensor:
    """``G = AAᴴ + ridge·tr(AAᴴ)/M · I`` (``M × M``), the Gram matrix both weights solve with."""
    G = A @ A.mH
    return G + ridge * torch.trace(G).real / G.shape[0] * torch.eye(G.shape[0], dtype=G.dtype,
                                                                    device=G.device)


def analytic_weight(A: Tensor, ridge: float = 1e-10) -> Tensor:
    r"""ALISTA's analytic weight: the ``W`` of least coherence with ``A`` (Frobenius form).

    .. math:: W = \arg\min_W \big\|\mathrm{offdiag}(Wᴴ A)\big\|_F^2
              \quad\text{s.t.}\quad w_iᴴ a_i = 1\ \ \forall i

    The problem separates over the columns; each is ``min wᴴ(AAᴴ)w`` subject to ``a_iᴴ w = 1``, so
    ``w_i = G⁻¹ a_i / (a_iᴴ G⁻¹ a_i)`` with ``G = AAᴴ`` (plus ``ridge·tr(G)/M`` on its diagonal
    when ``A`` is rank-deficient). For an i.i.d. Gaussian ``A`` this is close to ``A`` itself.

    Parameters
    ----------
    A : tensor of shape (M, N)
    ridge : float
        Relative Tikhonov term on ``G``.

    Returns
    -------
    W : tensor of shape (M, N), same dtype as ``A``; ``diag(WᴴA) = 1``.
    """
    A64 = A.to(_wide(A.dtype))
    GA = torch.linalg.solve(_ridge_gram(A64, ridge), A64)
    W = GA / (A64.conj() * GA).sum(dim=0, keepdim=True).real  # a_iᴴ G⁻¹ a_i is real
    return W.to(A.dtype)


def pseudo_inverse_weight(A: Tensor, ridge: float = 1e-3) -> Tensor:
    r"""The regularised pseudo-inverse back-projection ``A⁺ = Aᴴ(AAᴴ + ρI)⁻¹``, shape ``(N, M)``.

    ``ρ = ridge·tr(AAᴴ)/M``. The matched step ``x + γAᴴ(y − Ax)`` multiplies the error by
    ``I − γAᴴA``, whose eigenvalues lie on both sides of 0, so it leaks every entry's error into
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
    A64 = A.to(_wide(A.dtype))
    return torch.linalg.solve(_ridge_gram(A64, ridge), A64).mH.contiguous().to(A.dtype)


class _LearnedISTA(UnrolledNetwork):
    """What the three learned-ISTA variants share: thresholds, support selection, calibration.

    Subclasses implement :meth:`_layer` (one layer on the estimate ``x`` with a given threshold)
    and, where they learn matrices, :meth:`_matrices`, :meth:`_set_direction` and
    :meth:`_rescale_step`.
    """

    calibrates = True
    variant = ""

    def __init__(self, n_layers: int, operator_shape, alpha: float, lipschitz: float,
                 theta0: float, *, tied: bool, support_selection: bool, dtype, device):
        super().__init__(n_layers, tied)
        self.operator_shape = tuple(int(d) for d in operator_shape)
        self.alpha = float(alpha)
        self.lipschitz = float(lipschitz)
        self.support_selection = bool(support_selection)
        self.add_layer_params("thresholds", lambda: make_param([theta0], dtype, device))

    def support_frac(self, t: int) -> float:
        """The support-selection fraction of layer ``t`` (0 without support selection)."""
        return support_fraction(t) if self.support_selection else 0.0

    def forward(self, Y: Tensor, op: LinearOperator | None = None) -> list[Tensor]:
        """Run the first :attr:`n_active` layers on ``Y (n, M)``; return the outputs ``(n, N)``."""
        if op is not None:
            Y, op = self._cast(Y, op)
        else:
            Y = self._cast_data(Y)
        x = torch.zeros((Y.shape[0], self.operator_shape[1]), dtype=Y.dtype, device=Y.device)
        cache = self._prepare(Y)
        outs = []
        for t in range(self.n_active):
            x = self._layer(t, x, Y, op, self.thresholds[t], cache)
            outs.append(x)
        return outs

    def _prepare(self, Y: Tensor):
        """Per-call work shared by every layer (the tied ``W y`` of Gregor's form)."""
        return None

    def _layer(self, t, x, Y, op, theta, cache=None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _matrices(self, t: int) -> list:
        """The learned matrices layer ``t`` uses (none for ALISTA)."""
        return []

    @torch.no_grad()
    def calibrate_layer(self, t: int, Y: Tensor, X: Tensor, op: LinearOperator | None = None
                        ) -> dict:
        r"""Fit layer ``t``'s direction, step and threshold to training pairs before it is trained.

        With the earlier layers' output ``x_t`` and the layer's update ``u = r_t − x_t`` (``r_t``
        its pre-threshold output), :func:`~sklearn_unfold.tuning.fit_step_threshold` finds
        ``γ, θ`` minimising ``‖shrink(x_t + γu; θ) − X‖²``; the layer is then rescaled to take
        the step ``γ u`` (``B_t ← γB_t``; ``W_t ← γW_t``, ``S_t ← (1−γ)I + γS_t``; ALISTA's
        ``γ_t ← γγ_t``) and ``θ_t ← θ``.

        For the variants with learned matrices the fit is made for two directions and the better
        one on the pairs is kept: the layer's current matrices (at the start ``B = Aᴴ/L``,
        ISTA's matched back-projection) and the regularised pseudo-inverse ``A⁺`` of
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
        Y, X = self._cast_data(Y), self._cast_data(X)
        dtype = Y.dtype
        active, self.n_active = self.n_active, t
        x = self(Y, op)[-1] if t > 0 else torch.zeros_like(X)
        self.n_active = active
        zero = torch.zeros_like(self.thresholds[t])
        has_matrices = bool(self._matrices(t))
        tune_step = not has_matrices or not self.tied or t == 0
        theta0 = float(self.thresholds[t])
        cache = self._prepare(Y)

        def fit() -> dict:
            update = self._layer(t, x, Y, op, zero, cache) - x
            return fit_step_threshold(x, update, X, theta0, support_frac=self.support_frac(t),
                                      tune_step=tune_step)

        best, direction = fit(), "matched" if has_matrices else "analytic"
        if has_matrices and tune_step and op is not None and not op.per_sample:
            A = op.to_dense().to(dtype)
            saved = [m.detach().clone() for m in self._matrices(t)]
            self._set_direction(t, pseudo_inverse_weight(A), A)
            cache = self._prepare(Y)
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

    def _set_direction(self, t: int, B: Tensor, A: Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _rescale_step(self, t: int, gamma: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _steps(self) -> np.ndarray:
        return np.ones(self.n_layers)

    def layer_summary(self) -> dict[str, np.ndarray]:
        """Per-layer coefficients: ``threshold`` ``θ_t``, ``step`` ``γ_t`` and ``support_frac``.

        For ``"lista"`` and ``"cp"`` the step is folded into the learned matrices and reported as 1.
        """
        frac = np.array([self.support_frac(t) for t in range(self.n_layers)])
        return {"threshold": self.per_layer_values("thresholds").reshape(-1),
                "step": self._steps(), "support_frac": frac}


def _dense64(A) -> Tensor:
    op = as_operator(A, dtype=torch.float64)
    if op.per_sample:
        raise ValueError(f"learned-ISTA matrices are initialised from one fixed operator; got a "
                         f"per-sample batch of shape {op.shape}.")
    return op.to_dense().to(_wide(op.dtype)).cpu()


class _MatrixLearnedISTA(_LearnedISTA):
    """The learned-ISTA variants with matrices of one fixed ``A``, initialised from ISTA."""

    operator_agnostic = False

    def __init__(self, A, alpha: float, n_layers: int, *, tied: bool = False,
                 support_selection: bool = False, dtype: torch.dtype = torch.float32,
                 device=None):
        A64 = _dense64(A)
        L = float(torch.linalg.matrix_norm(A64, ord=2) ** 2)
        super().__init__(n_layers, A64.shape, alpha, L, float(alpha) / L, tied=tied,
                         support_selection=support_selection, dtype=dtype, device=device)
        self._init_matrices(A64, L, dtype, device)

    def _init_matrices(self, A64: Tensor, L: float, dtype, device) -> None:  # pragma: no cover
        raise NotImplementedError


class LISTANetwork(_MatrixLearnedISTA):
    r"""Learned ISTA in Gregor and LeCun's form: ``x_{t+1} = η(W_t y + S_t x_t; θ_t)``.

    Initialised at ``W = Aᴴ/L``, ``S = I − AᴴA/L``, ``θ = α/L`` (``L = ‖A‖₂²``), where it
    reproduces the ISTA iterates exactly (without support selection). Layer 0 has no ``S``
    (``x_0 = 0``). ``η`` is the soft threshold, or with ``support_selection`` the soft threshold
    whose largest ``p_t = min(1.2 (t+1), 13) %`` entries pass unthresholded. ``tied=True``
    shares one ``(W, S)``; thresholds stay per layer. The matrices belong to one ``A``: the
    operator passed to :meth:`forward` is not used.

    Attributes
    ----------
    W : ParameterList of (N, M) tensors, one per layer (one if tied)
    S : ParameterList of (N, N) tensors, for layers ``1…T−1`` (one if tied)
    thresholds : ParameterList of (1,) tensors
    """

    variant = "lista"

    def _init_matrices(self, A64: Tensor, L: float, dtype, device) -> None:
        self.add_layer_params("W", lambda: make_param(A64.mH / L, dtype, device), tieable=True)
        if self.n_layers > 1:
            S0 = torch.eye(A64.shape[1], dtype=A64.dtype) - A64.mH @ A64 / L
            self.add_layer_params("S", lambda: make_param(S0, dtype, device), tieable=True,
                                  first=1)

    def _prepare(self, Y: Tensor):
        return Y @ self.W[0].T if self.tied else None

    def _layer(self, t, x, Y, op, theta, cache=None) -> Tensor:
        frac = self.support_frac(t)
        Wy = cache if cache is not None else Y @ self.layer_param("W", t).T
        if t == 0:
            N = self.operator_shape[1]
            zero_S = torch.zeros((), dtype=Y.dtype, device=Y.device)
            return lista_step(x, Wy, zero_S.expand(N, N), theta, support_frac=frac)
        return lista_step(x, Wy, self.layer_param("S", t), theta, support_frac=frac)

    def _matrices(self, t: int) -> list:
        mats = [self.layer_param("W", t)]
        if self.n_layers > 1 and (self.tied or t > 0):
            mats.append(self.layer_param("S", max(t, 1)))
        return mats

    def _set_direction(self, t: int, B: Tensor, A: Tensor) -> None:
        """Make layer ``t`` take the step ``x + B(y − Ax)`` (``W = B``, ``S = I − BA``)."""
        mats = self._matrices(t)
        mats[0].copy_(B)
        if len(mats) > 1:
            eye = torch.eye(mats[1].shape[0], dtype=mats[1].dtype, device=mats[1].device)
            mats[1].copy_(eye - B.to(mats[1].dtype) @ A.to(mats[1].dtype))

    def _rescale_step(self, t: int, gamma: float) -> None:
        mats = self._matrices(t)  # W ← γW, S ← (1−γ)I + γS: x + γ(Wy + Sx − x)
        mats[0].mul_(gamma)
        if len(mats) > 1:
            eye = torch.eye(mats[1].shape[0], dtype=mats[1].dtype, device=mats[1].device)
            mats[1].mul_(gamma).add_(eye, alpha=1.0 - gamma)


class LISTACPNetwork(_MatrixLearnedISTA):
    r"""LISTA-CP (coupled): ``x_{t+1} = η(x_t + B_t(y − A x_t); θ_t)``.

    Initialised at ``B = Aᴴ/L``, ``θ = α/L`` (the ISTA iterates). ``B_t`` is learned per layer
    (one if tied); the residual uses the operator passed to :meth:`forward`.
    """

    variant = "cp"

    def _init_matrices(self, A64: Tensor, L: float, dtype, device) -> None:
        self.add_layer_params("B", lambda: make_param(A64.mH / L, dtype, device), tieable=True)

    def _layer(self, t, x, Y, op, theta, cache=None) -> Tensor:
        return ista_step(x, Y, op, theta, B=self.layer_param("B", t), step=1.0,
                         support_frac=self.support_frac(t))

    def _matrices(self, t: int) -> list:
        return [self.layer_param("B", t)]

    def _set_direction(self, t: int, B: Tensor, A: Tensor) -> None:
        self._matrices(t)[0].copy_(B)

    def _rescale_step(self, t: int, gamma: float) -> None:
        self._matrices(t)[0].mul_(gamma)


class ALISTANetwork(_LearnedISTA):
    r"""ALISTA (Liu et al.): ``x_{t+1} = η(x_t + γ_t Wᴴ(y − A x_t); θ_t)``, only ``γ_t, θ_t`` learned.

    ``W`` is fixed: with ``weight="analytic"`` the analytic weight of :func:`analytic_weight`
    for one fixed matrix (stored as the back-projection ``W_analytic`` of shape ``(N, M)``);
    with ``weight="adjoint"``, ``W = A`` of each sample's own operator, the operator-independent
    form that is trained over an ensemble of operators and serves a fresh ``A`` per sample.
    Initialised at ``γ = 1/‖WᴴA‖₂`` (``1/L`` for the adjoint) and ``θ = αγ``.
    """

    variant = "alista"

    def __init__(self, n_layers: int, operator_shape, alpha: float, gamma0: float, *,
                 W_analytic: Tensor | None = None, tied: bool = False,
                 support_selection: bool = False, dtype: torch.dtype = torch.float32,
                 device=None):
        super().__init__(n_layers, operator_shape, alpha, 1.0 / gamma0, float(alpha) * gamma0,
                         tied=tied, support_selection=support_selection, dtype=dtype,
                         device=device)
        self.weight = "adjoint" if W_analytic is None else "analytic"
        self.operator_agnostic = W_analytic is None
        if W_analytic is not None and W_analytic.is_complex():
            dtype_w = torch.complex64 if dtype == torch.float32 else torch.complex128
        else:
            dtype_w = dtype
        self.register_buffer("W_analytic", None if W_analytic is None
                             else W_analytic.to(dtype=dtype_w, device=device))
        self.add_layer_params("steps", lambda: make_param([gamma0], dtype, device))

    @classmethod
    def from_ista(cls, A, alpha: float, n_layers: int, *, weight: str = "analytic",
                  lipschitz: float | None = None, tied: bool = False,
                  support_selection: bool = False, dtype: torch.dtype = torch.float32,
                  device=None) -> ALISTANetwork:
        """Build ALISTA from ISTA's ``α``; ``weight="adjoint"`` needs only ``A``'s shape and
        ``lipschitz`` (a typical ``‖A‖₂²`` of the operators it will serve)."""
        if weight not in ("analytic", "adjoint"):
            raise ValueError(f"weight must be 'analytic' or 'adjoint'; got {weight!r}.")
        if weight == "adjoint":
            op = as_operator(A, dtype=None)
            L = float(op.norm_sq().mean()) if lipschitz is None else float(lipschitz)
            return cls(n_layers, op.shape[-2:], alpha, 1.0 / L, tied=tied,
                       support_selection=support_selection, dtype=dtype, device=device)
        A64 = _dense64(A)
        W = analytic_weight(A64)
        gamma0 = 1.0 / float(torch.linalg.matrix_norm(W.mH @ A64, ord=2))
        return cls(n_layers, A64.shape, alpha, gamma0, W_analytic=W.mH.contiguous(), tied=tied,
                   support_selection=support_selection, dtype=dtype, device=device)

    def _layer(self, t, x, Y, op, theta, cache=None) -> Tensor:
        return ista_step(x, Y, op, theta, B=self.W_analytic, step=self.steps[t],
                         support_frac=self.support_frac(t))

    def _rescale_step(self, t: int, gamma: float) -> None:
        self.steps[t].mul_(gamma)

    def _steps(self) -> np.ndarray:
        return self.per_layer_values("steps").reshape(-1)


#: The learned-ISTA class of each variant name.
LISTA_CLASSES = {"lista": LISTANetwork, "cp": LISTACPNetwork, "alista": ALISTANetwork}


def lista_from_ista(A, alpha: float, n_layers: int, *, variant: str = "lista",
                    tied: bool = False, support_selection: bool = False,
                    operator_agnostic: bool = False, lipschitz: float | None = None,
                    dtype: torch.dtype = torch.float32, device=None) -> _LearnedISTA:
    """Build the learned-ISTA network of ``variant`` whose layers start as ISTA's iterations.

    Parameters
    ----------
    A : array-like, tensor or LinearOperator
        The operator (one fixed matrix, except for the operator-agnostic ALISTA).
    alpha : float
        ISTA's ℓ1 weight ``α`` (``θ = α/L``; see :class:`~sklearn_unfold.ISTARegressor`).
    n_layers : int
    variant : {"lista", "cp", "alista"}
    tied, support_selection
        See the classes.
    operator_agnostic : bool, default=False
        Build the form whose parameters depend on no matrix: ALISTA with ``W = A`` of each
        sample's operator (only ``variant="alista"`` has one).
    lipschitz : float, optional
        ``‖A‖₂²`` for the operator-agnostic form (computed from ``A`` when omitted).
    dtype, device
        Of the parameters and buffers.
    """
    if variant not in LISTA_CLASSES:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}.")
    if operator_agnostic and variant != "alista":
        raise ValueError(f"only variant='alista' has an operator-independent form; got "
                         f"{variant!r}.")
    if variant == "alista":
        return ALISTANetwork.from_ista(A, alpha, n_layers,
                                       weight="adjoint" if operator_agnostic else "analytic",
                                       lipschitz=lipschitz, tied=tied,
                                       support_selection=support_selection, dtype=dtype,
                                       device=device)
    return LISTA_CLASSES[variant](A, alpha, n_layers, tied=tied,
                                  support_selection=support_selection, dtype=dtype, device=device)
