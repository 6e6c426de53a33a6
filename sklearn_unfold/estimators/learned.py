"""LISTA, LAMP and LDVAMP as scikit-learn regressors from measurements to signals.

Each estimator is thin: ``fit`` validates, fits the classical solver it unrolls (kept as
``init_estimator_``), builds the network from it (:mod:`sklearn_unfold.networks`), hands it to the
training engine (:mod:`sklearn_unfold.training`) and stores the result; ``predict`` runs the
network on chunks of ``batch_size`` measurements under ``torch.no_grad`` and returns float64.
The shared machinery is in :mod:`sklearn_unfold.estimators._learned_base`.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ..networks.lamp import LAMPNetwork
from ..networks.ldvamp import LDVAMPNetwork
from ..networks.lista import VARIANTS, lista_from_ista
from ._base import fill_a_doc
from ._denoising import DENOISER_PARAMS_DOC, DenoisingEstimatorMixin
from ._learned_base import (
    DEFAULT_OPTIMIZER,
    END_TO_END_LR_SCHEDULE,
    LAYERWISE_LR_SCHEDULE,
    LearnedEstimatorBase,
)
from ._learned_docs import fill_doc
from .classical import AMPRegressor, ISTARegressor, VAMPRegressor

__all__ = ["LAMPRegressor", "LDVAMPRegressor", "LISTARegressor"]


@fill_a_doc
class LISTARegressor(LearnedEstimatorBase):
    r"""Learned ISTA: ISTA unrolled into layers whose matrices and thresholds are trained.

    By default the coupled form with support selection (LISTA-CP-SS, Chen et al.), the variant
    that goes past the LASSO floor:

    .. math:: x_{t+1} = η_{p_t}\big(x_t + B_t(y - A x_t);\ θ_t\big), \qquad
              B_t \leftarrow Aᵀ/L,\ θ_t \leftarrow α/L

    where ``η_p`` soft-thresholds all but the ``p_t = min(1.2 (t+1), 13) %`` largest entries.
    ``variant="lista"`` is Gregor-LeCun's ``x_{t+1} = soft(W_t y + S_t x_t; θ_t)`` and
    ``"alista"`` learns only a step and a threshold per layer (analytic ``W``). With an operator
    ensemble, per-sample or matrix-free operators (``parameterization_ == "operator"``) the
    layers take ALISTA's operator-independent form whatever ``variant``:
    ``x_{t+1} = η(x_t + γ_t Aᴴ(y − A x_t); θ_t)`` with each sample's own ``A``. The network
    starts from ``init_estimator_``, an :class:`~sklearn_unfold.ISTARegressor`; before each
    layer is trained, its direction (ISTA's matched ``Aᵀ`` or the regularised pseudo-inverse
    ``Aᵀ(AAᵀ+ρI)⁻¹``, whichever fits better), step and threshold are fitted to about 1,000
    training samples
    (:meth:`~sklearn_unfold.networks.lista.LISTANetwork.calibrate_layer`), since ISTA's
    ``1/L`` and ``α/L`` are far from what a layer of a short network wants.

    Parameters
    ----------
    %A%
    variant : {"cp", "lista", "alista"}, default="cp"
        The layer form (see above).
    support_selection : bool, default=True
        Let the largest ``p_t`` entries of each layer bypass the threshold.
    alpha : "auto" or float, default="auto"
        ISTA's ℓ1 weight that sets the initial thresholds (see ISTARegressor).%COMMON%

    Attributes
    ----------
    thresholds_ : ndarray of shape (n_layers,)
        The learned thresholds ``θ_t``.
    steps_ : ndarray of shape (n_layers,)
        The learned steps ``γ_t`` (``"alista"``; 1 otherwise).
    calibration_ : list of dict
        For each layer this fit added (every layer, unless ``warm_start`` grew a fitted
        network), the ``direction`` it started from (``"matched"``, ``"pseudo_inverse"`` or, for
        ALISTA, ``"analytic"``), the fitted ``step`` and ``threshold`` and the training-sample
        NMSE before and after the fit (``nmse_db_before``, ``nmse_db_after``).%ATTRS%

    Examples
    --------
    >>> from sklearn_unfold import LISTARegressor
    >>> from sklearn_unfold.datasets import make_compressed_sensing
    >>> Y, X, A = make_compressed_sensing("giid", 400, n_features=64, n_measurements=32,
    ...                                   random_state=0)
    >>> est = LISTARegressor(A=A, n_layers=4, alpha=0.1, max_epochs=1, random_state=0).fit(Y, X)
    >>> est.predict(Y).shape
    (400, 64)
    """

    _parameter_constraints: dict = {
        **LearnedEstimatorBase._parameter_constraints,
        "variant": [StrOptions(set(VARIANTS))],
        "support_selection": ["boolean"],
        "alpha": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, A=None, *, variant="cp", support_selection=True, alpha="auto",
                 n_layers=16, tied=False, init="analytic", training="layerwise", curriculum=True,
                 max_epochs=4, batch_size=500, learning_rate=1e-3, validation_fraction="auto",
                 n_iter_no_change=2, tol=0.02, signal_prior=None, noise_var="auto",
                 device="auto", dtype="float32", random_state=None, verbose=0,
                 warm_start=False, compile=False, optimizer=DEFAULT_OPTIMIZER,
                 lr_schedule=LAYERWISE_LR_SCHEDULE, loss="nmse", callbacks=None, eval_every=10,
                 eval_batch_size=None, operators_per_batch=10):
        self.A = A
        self.n_layers = n_layers
        self.tied = tied
        self.variant = variant
        self.support_selection = support_selection
        self.alpha = alpha
        self.init = init
        self.training = training
        self.curriculum = curriculum
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.signal_prior = signal_prior
        self.noise_var = noise_var
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.compile = compile
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.loss = loss
        self.callbacks = callbacks
        self.eval_every = eval_every
        self.eval_batch_size = eval_batch_size
        self.operators_per_batch = operators_per_batch

    def _make_init_estimator(self):
        alpha = self.alpha if self.alpha == "auto" else self.alpha / self.data_scale_
        return ISTARegressor(A=self.A_, alpha=alpha, noise_var=self._scaled_noise_var(),
                             batch_size=self.batch_size)

    def _build_module(self, device, dtype, fit_op):
        alpha = self.init_estimator_.alpha_
        if self.parameterization_ == "operator":
            return lista_from_ista(self._shape_operator(fit_op), alpha, self.n_layers,
                                   variant="alista", operator_agnostic=True,
                                   lipschitz=self._typical_lipschitz(fit_op), tied=self.tied,
                                   support_selection=self.support_selection, dtype=dtype,
                                   device=device)
        return lista_from_ista(self.A_, alpha, self.n_layers, tied=self.tied,
                               variant=self.variant, support_selection=self.support_selection,
                               dtype=dtype, device=device)

    def _architecture_extra(self) -> dict:
        return {"variant": self.variant, "support_selection": self.support_selection}

    def _set_coefficients(self, summary: dict) -> None:
        super()._set_coefficients(summary)
        self.thresholds_ = summary["threshold"]
        self.steps_ = summary["step"]


@fill_a_doc
class LAMPRegressor(DenoisingEstimatorMixin, LearnedEstimatorBase):
    r"""Learned AMP (Borgerding-Schniter-Rangan): AMP unrolled with learned matrices.

    .. math::
        v_t = y - A\hat x_t + b_t v_{t-1}, \quad σ_t = \|v_t\|/\sqrt M, \quad
        \hat x_{t+1} = η(\hat x_t + B_t v_t;\ σ_t, θ_t), \quad
        b_{t+1} = c_t\,(N/M)\,\langle η'_t\rangle

    With one fixed dense ``A`` (``parameterization_ == "matrix"``) every layer learns its own
    matrix ``B_t``, initialised at ``Aᵀ``. With an operator ensemble, per-sample or matrix-free
    operators (``parameterization_ == "operator"``) the layers use each sample's own operator,
    ``B_t = β_t Aᴴ``, and learn only the scalar ``β_t`` (initialised at 1): no parameter
    depends on one matrix. ``θ_t`` starts at the fitted AMP's denoiser parameters
    (``init_estimator_``, an :class:`~sklearn_unfold.AMPRegressor`) and the Onsager scale
    ``c_t`` at 1, so the untrained network is AMP. The defaults (layer-wise training with the
    loss curriculum, Adam at 3e-3, at most 5 passes over the pairs per stage) reach about
    −44.7 dB at 10 layers on the giid reference problem from 20,000 pairs; the
    :doc:`/benchmarks` page reports the accuracy and training time of each configuration.

    Parameters
    ----------
    %A%
    denoiser : str or torch.nn.Module, default="bg"
        The layers' denoiser, one of ``"bg"``, ``"soft"``, ``"pwlin"``, ``"expo"``,
        ``"spline"``, ``"mlp"``, ``"conv1d"`` or a module: ``"bg"`` and ``"soft"`` start from the matched AMP;
        ``"pwlin"``, ``"expo"`` and ``"spline"`` from their default parameters; ``"mlp"`` is the
        BG shrinkage plus a small per-entry MLP residual that starts at zero; ``"conv1d"`` a
        :class:`~sklearn_unfold.denoisers.ConvDenoiser1d` with its defaults. Any denoiser
        module (:mod:`sklearn_unfold.denoisers`, or a user's own that follows the same
        contract) is copied into the layers and trained there (it is never changed itself):
        with a :class:`~sklearn_unfold.denoisers.DnCNN` or
        :class:`~sklearn_unfold.denoisers.ConvDenoiser1d` this is learned D-AMP (Metzler,
        Mousavi and Baraniuk, NeurIPS 2017).%DENOISING%%COMMON%

    Attributes
    ----------
    onsager_scale_ : ndarray of shape (n_layers,)
        The learned Onsager scales ``c_t``.
    theta_ : ndarray of shape (n_layers, n_theta) or None
        The learned shrinkage parameters ``θ_t`` (for ``"mlp"``, those of the BG part;
        ``None`` for a neural denoiser).
    thresholds_ : ndarray of shape (n_layers,)
        ``"soft"`` only: the threshold multipliers ``λ_t``.
    pretrain_history_ : list of dict or None
        With pretraining, one record per check of the denoiser's held-out error (``step``,
        ``train_loss``, ``val_loss``, in units of the noise variance); ``None`` otherwise.
    pretrain_noise_levels_ : ndarray of shape (n_layers,) or None
        With pretraining, the median noise level each layer of the analytic network saw (in
        the data's units): the levels the denoiser was pretrained at.%ATTRS%

    Examples
    --------
    >>> from sklearn_unfold import LAMPRegressor
    >>> from sklearn_unfold.datasets import make_compressed_sensing
    >>> Y, X, A = make_compressed_sensing("giid", 400, n_features=64, n_measurements=32,
    ...                                   random_state=0)
    >>> est = LAMPRegressor(A=A, n_layers=4, max_epochs=1, random_state=0).fit(Y, X)
    >>> len(list(est.staged_predict(Y)))
    4
    """

    _parameter_constraints: dict = {
        **LearnedEstimatorBase._parameter_constraints,
        **DenoisingEstimatorMixin._denoiser_constraints,
    }

    def __init__(self, A=None, *, denoiser="bg", tie_denoiser=False, pretrain="auto",
                 pretrain_epochs=500, mixed_precision=False, n_layers=10, tied=False,
                 init="analytic",
                 training="end_to_end", curriculum=True, max_epochs=20, batch_size=500,
                 learning_rate=3e-3, validation_fraction="auto", n_iter_no_change=3, tol=0.01,
                 signal_prior=None, noise_var="auto", device="auto", dtype="float32",
                 random_state=None, verbose=0, warm_start=False, compile=False,
                 optimizer=DEFAULT_OPTIMIZER, lr_schedule=END_TO_END_LR_SCHEDULE, loss="nmse",
                 callbacks=None, eval_every=10, eval_batch_size=None, operators_per_batch=10):
        self.A = A
        self.n_layers = n_layers
        self.tied = tied
        self.denoiser = denoiser
        self.tie_denoiser = tie_denoiser
        self.pretrain = pretrain
        self.pretrain_epochs = pretrain_epochs
        self.mixed_precision = mixed_precision
        self.init = init
        self.training = training
        self.curriculum = curriculum
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.signal_prior = signal_prior
        self.noise_var = noise_var
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.compile = compile
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.loss = loss
        self.callbacks = callbacks
        self.eval_every = eval_every
        self.eval_batch_size = eval_batch_size
        self.operators_per_batch = operators_per_batch

    def _make_init_estimator(self):
        return AMPRegressor(A=self.A_, denoiser=self._init_denoiser_name(),
                            noise_var=self._scaled_noise_var(), batch_size=self.batch_size)

    def _build_module(self, device, dtype, fit_op, denoiser=None):
        return LAMPNetwork.from_amp(self._shape_operator(fit_op),
                                    denoiser if denoiser is not None else self._denoiser_template(),
                                    None, self.n_layers, tied=self.tied,
                                    tie_denoiser=self.tie_denoiser,
                                    parameterization=self.parameterization_, dtype=dtype,
                                    device=device)

    def _architecture_extra(self) -> dict:
        return self._denoiser_architecture()

    def _set_coefficients(self, summary: dict) -> None:
        super()._set_coefficients(summary)
        self.onsager_scale_ = summary["onsager_scale"]
        self._denoiser_coefficients(summary)


@fill_a_doc
class LDVAMPRegressor(DenoisingEstimatorMixin, LearnedEstimatorBase):
    r"""Learned denoising VAMP: VAMP unrolled with a learned LMMSE stage, corrections and denoiser.

    Each layer is one VAMP iteration (:func:`~sklearn_unfold.steps.vamp_step`) with a learned
    noise precision ``γ_{w,t}`` (Borgerding's LVAMP), learned corrections ``c_{1,t}, c_{2,t}`` of
    the precision updates, optional per-singular-value gains and a learned shrinkage ``θ_t``.
    The LMMSE stage is always each sample's own operator's (through its SVD, in closed form for
    a row-orthogonal operator, or by conjugate gradients), so with an operator ensemble,
    per-sample or matrix-free operators only the gains, which belong to one matrix, are
    unavailable. It starts from the fitted VAMP (``init_estimator_``, a
    :class:`~sklearn_unfold.VAMPRegressor`) and keeps VAMP's robustness to ill-conditioned ``A``.

    The learned noise precision ties the network to the noise level of its training pairs:
    measurements at a much lower SNR than that are recovered far worse than by VAMP matched to
    their noise, and training over a range of SNRs learns an average precision that serves
    none of them well. With ``adaptive_noise=True`` each layer estimates each sample's noise
    precision instead (adaptive VAMP), which serves every SNR; the :doc:`/benchmarks` page has
    the measurements.

    Parameters
    ----------
    %A%
    denoiser : str or torch.nn.Module, default="bg"
        As in :class:`LAMPRegressor`; a convolutional module makes this learned D-VAMP.%DENOISING%
    gains : bool, default=False
        Also learn per-singular-value gains of the LMMSE stage.
    damping : float in (0, 1], default=1.0
        Unroll damped VAMP: the starting VAMP (``init_estimator_``) uses this damping, and
        below 1 every layer from the second on learns its own damping ``β_t`` of the message
        ``r_2`` and the precision ``γ_2``, starting at this value. Undamped VAMP can oscillate
        on structured operators (a partial DFT of few pilots, say), where damping ``0.8``
        makes it converge; 1 keeps the undamped network. With a convolutional denoiser
        (learned D-VAMP) damping ``0.8`` is the safer start: the precision update takes the
        trained network's divergence for its error, and undamped layers can amplify the
        difference on some signals (:doc:`/user_guide/denoisers`).
    adaptive_noise : bool, default=False
        Unroll adaptive VAMP: every layer re-estimates each sample's noise precision by
        expectation maximisation (starting from ``noise_var_``) and learns only a correction
        of it, instead of learning one noise precision per layer. The network then serves
        measurements of any SNR, and can be trained over a range of SNRs.%COMMON%

    Attributes
    ----------
    noise_precision_ : ndarray of shape (n_layers,) or None
        The learned ``γ_{w,t}`` (``None`` with ``adaptive_noise``).
    noise_precision_scale_ : ndarray of shape (n_layers,) or None
        With ``adaptive_noise``, the learned corrections of each layer's estimated noise
        precision (``None`` otherwise).
    gamma1_scale_, gamma2_scale_ : ndarray of shape (n_layers,)
        The learned precision corrections ``c_{1,t}``, ``c_{2,t}``.
    theta_ : ndarray of shape (n_layers, n_theta) or None
        The learned shrinkage parameters (``None`` for a neural denoiser).
    pretrain_history_, pretrain_noise_levels_
        As in :class:`LAMPRegressor`.
    damping_ : ndarray of shape (n_layers,)
        The learned damping ``β_t`` of each layer (1 for the first layer, and for every layer
        when ``damping=1``).%ATTRS%
    """

    _parameter_constraints: dict = {
        **LearnedEstimatorBase._parameter_constraints,
        **DenoisingEstimatorMixin._denoiser_constraints,
        "gains": ["boolean"],
        "damping": [Interval(Real, 0, 1, closed="right")],
        "adaptive_noise": ["boolean"],
    }

    def __init__(self, A=None, *, denoiser="bg", tie_denoiser=False, pretrain="auto",
                 pretrain_epochs=500, mixed_precision=False, gains=False, damping=1.0,
                 adaptive_noise=False,
                 n_layers=10, tied=False,
                 init="analytic", training="end_to_end", curriculum=True, max_epochs=20,
                 batch_size=500, learning_rate=3e-3, validation_fraction="auto",
                 n_iter_no_change=3, tol=0.01, signal_prior=None, noise_var="auto",
                 device="auto", dtype="float32", random_state=None, verbose=0,
                 warm_start=False, compile=False, optimizer=DEFAULT_OPTIMIZER,
                 lr_schedule=END_TO_END_LR_SCHEDULE, loss="nmse", callbacks=None, eval_every=10,
                 eval_batch_size=None, operators_per_batch=10):
        self.A = A
        self.n_layers = n_layers
        self.tied = tied
        self.denoiser = denoiser
        self.tie_denoiser = tie_denoiser
        self.pretrain = pretrain
        self.pretrain_epochs = pretrain_epochs
        self.mixed_precision = mixed_precision
        self.gains = gains
        self.damping = damping
        self.adaptive_noise = adaptive_noise
        self.init = init
        self.training = training
        self.curriculum = curriculum
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.signal_prior = signal_prior
        self.noise_var = noise_var
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.compile = compile
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.loss = loss
        self.callbacks = callbacks
        self.eval_every = eval_every
        self.eval_batch_size = eval_batch_size
        self.operators_per_batch = operators_per_batch

    def _make_init_estimator(self):
        return VAMPRegressor(A=self.A_, denoiser=self._init_denoiser_name(),
                             noise_var=self._scaled_noise_var(), damping=self.damping,
                             adaptive_noise=self.adaptive_noise, batch_size=self.batch_size)

    def _build_module(self, device, dtype, fit_op, denoiser=None):
        # the prior's second moment in training's units (where the non-zeros have unit power)
        second_moment = self.sparsity_ * self.signal_var_ / self.data_scale_**2
        if not 0.0 < second_moment < np.inf:
            second_moment = 1.0
        if self.gains and self.parameterization_ != "matrix":
            raise ValueError(
                "gains=True learns one gain per singular value of one fixed matrix; with an "
                "operator ensemble, per-sample or matrix-free operators use gains=False.")
        return LDVAMPNetwork.from_vamp(self._shape_operator(fit_op),
                                       denoiser if denoiser is not None
                                       else self._denoiser_template(), None,
                                       self._scaled_noise_var(), second_moment, self.n_layers,
                                       tied=self.tied, tie_denoiser=self.tie_denoiser,
                                       gains=self.gains,
                                       damping=self.damping,
                                       adaptive_noise=self.adaptive_noise, dtype=dtype,
                                       device=device)

    def _architecture_extra(self) -> dict:
        return {**self._denoiser_architecture(), "gains": self.gains,
                "damping": float(self.damping), "adaptive_noise": bool(self.adaptive_noise)}

    def _set_coefficients(self, summary: dict) -> None:
        super()._set_coefficients(summary)
        self.noise_precision_ = summary.get("noise_precision")
        self.noise_precision_scale_ = summary.get("noise_precision_scale")
        self.gamma1_scale_ = summary["gamma1_scale"]
        self.gamma2_scale_ = summary["gamma2_scale"]
        self._denoiser_coefficients(summary)
        self.damping_ = summary.get("damping", np.ones(len(summary["gamma1_scale"])))


fill_doc(LISTARegressor, n_layers=16, training="layerwise", max_epochs=4, learning_rate=1e-3,
         n_iter_no_change=2, tol=0.02,
         lr_schedule="LRSchedule(refine_factors=(0.5,), growth_factors=(0.5,))",
         why="Layer-wise is the default here: it reaches the lowest NMSE; end to end trains "
             "faster but ends higher (far higher without the per-layer fit of the step and "
             "threshold). The :doc:`/benchmarks` page reports the accuracy and training time of "
             "both schedules.",
         schedule_why="Every depth is refined once, at half the rate; a further refinement at "
                      "0.1× gained nothing on the reference problems (see the :doc:`/benchmarks` "
                      "page).")
_END_TO_END_WHY = (
    "End to end is the default: from the analytic {solver} start, which is already a coherent "
    "multi-layer solution, training all layers together on the mean of the per-layer losses "
    "reaches the NMSE of Borgerding et al.'s (2017) layer-wise growth in a fraction of the "
    "optimiser steps. \"layerwise\" remains for comparison and for starts far from a solution; "
    "the :doc:`/benchmarks` page reports the accuracy and training time of both.")
_END_TO_END_SCHEDULE_WHY = (
    "The end-to-end stage (on the mean of the per-layer losses) is followed by one refinement "
    "at 0.1× the rate on the final layer's loss.")
for _cls in (LAMPRegressor, LDVAMPRegressor):
    _cls.__doc__ = _cls.__doc__.replace("%DENOISING%", DENOISER_PARAMS_DOC)
fill_doc(LAMPRegressor, n_layers=10, training="end_to_end", max_epochs=20, learning_rate=3e-3,
         n_iter_no_change=3, tol=0.01,
         lr_schedule="LRSchedule(refine_factors=(0.1,), growth_factors=(0.5,))",
         why=_END_TO_END_WHY.format(solver="AMP"), schedule_why=_END_TO_END_SCHEDULE_WHY)
fill_doc(LDVAMPRegressor, n_layers=10, training="end_to_end", max_epochs=20, learning_rate=3e-3,
         n_iter_no_change=3, tol=0.01,
         lr_schedule="LRSchedule(refine_factors=(0.1,), growth_factors=(0.5,))",
         why=_END_TO_END_WHY.format(solver="VAMP"), schedule_why=_END_TO_END_SCHEDULE_WHY)
