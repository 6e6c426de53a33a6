"""The parameter and attribute sections the learned estimators' docstrings share."""

from __future__ import annotations

import textwrap

COMMON_DOC = """
    n_layers : int, default={n_layers}
        Depth of the network (iterations unrolled).
    tied : bool, default=False
        One set of matrices for all layers (fewer parameters, better with little data); the
        per-layer scalars stay free.
    init : {{"analytic", "random"}}, default="analytic"
        ``"analytic"`` starts from the fitted classical solver, so the untrained network equals
        its first ``n_layers`` iterations. ``"random"`` redraws the learned matrices at random
        (Gaussian, same Frobenius norm); it is there for comparison and often does not converge.
    training : {{"layerwise", "end_to_end"}}, default="{training}"
        ``"layerwise"``: greedy growth; for each depth, switch the new layer on and train its
        parameters alone, then refine all layers so far at the rates of ``lr_schedule``
        (``growth_factors`` after the intermediate depths, ``refine_factors`` after the last).
        ``"end_to_end"``: train all layers together, then refine at ``refine_factors``. Every
        stage stops early on the validation NMSE and ends on its best checkpoint.
        {why}
    curriculum : bool, default=True
        Loss curriculum: the mean of the per-layer NMSEs in the end-to-end stage and every
        refinement but the last, the final layer's NMSE in the last one (layer-wise stages that
        train a new layer alone use the final layer's NMSE). ``False``: the final layer's NMSE
        throughout.
    max_epochs : float, default={max_epochs}
        The budget of each training stage, in passes over the training pairs
        (``ceil(max_epochs · n_train / batch_size)`` optimiser steps at most). With
        ``signal_prior``, a pass is as many fresh signals as there are training pairs.
    batch_size : int, default=500
        Mini-batch size for training, and chunk size for ``predict``.
    learning_rate : float, default={learning_rate}
        The optimiser's rate in the main stages (refinements use ``lr_schedule``'s factors).
        ``optimizer=Optimizer(..., lr=...)`` (or
        ``optimizer__lr``) replaces it.
    optimizer : Optimizer or torch optimiser class, default=Optimizer(torch.optim.Adam)
        The optimiser of every stage (a fresh one per stage), as
        :class:`~sklearn_unfold.training.Optimizer` ``(torch.optim.AdamW, weight_decay=1e-4)``;
        its arguments are nested parameters (``set_params(optimizer__lr=1e-2)``, a
        ``GridSearchCV`` grid over ``"optimizer__lr"``).
    lr_schedule : LRSchedule, default={lr_schedule}
        :class:`~sklearn_unfold.training.LRSchedule`: the rate multipliers of the refinement
        stages (``refine_factors``; ``growth_factors`` after the intermediate depths of
        layer-wise training) and an optional :mod:`torch.optim.lr_scheduler` within each
        stage; nested parameters as well (``lr_schedule__refine_factors=(0.5,)``).
        {schedule_why}
    loss : "nmse" or callable, default="nmse"
        The training loss of one layer's estimate, ``loss(X_hat, X) -> scalar tensor``
        (differentiable); the curriculum weighs it over the layers. Early stopping and
        checkpoints always use the validation NMSE.
    callbacks : list of callable or None, default=None
        Each is called as ``callback(trainer, history)`` after every validation check
        (``history`` is the list of records so far, the last one that check's;
        ``trainer.estimator`` is this estimator and ``trainer.module`` the network). A true
        return value stops training on the running stage's best checkpoint.
    eval_every : int, default=10
        Optimiser steps between two validation checks.
    eval_batch_size : int or None, default=None
        Chunk size of the validation forward passes (``None``: ``max(batch_size, 1024)``).
    operators_per_batch : int, default=10
        With an operator ensemble as ``A``: distinct operators drawn per training mini-batch.
    validation_fraction : float in [0, 1) or "auto", default="auto"
        Fraction of the pairs held out for early stopping and checkpoints (0: the training
        pairs are used). ``"auto"``: 10 % of the pairs, at most 1,000 (enough to rank
        checkpoints; beyond that, more held-out pairs only make every check slower).
    n_iter_no_change : int, default={n_iter_no_change}
        A stage stops after this many validation checks (one every ``eval_every`` steps)
        without an improvement of ``tol``.
    tol : float, default={tol}
        Smallest improvement of the validation NMSE, in dB, that counts.
    signal_prior : None, "bernoulli_gaussian" or object, default=None
        ``None`` trains on the given pairs (shuffled mini-batches). Otherwise every step draws
        fresh signals from the prior (the string: a Bernoulli-Gaussian prior fitted to the
        training signals; an object: anything with ``sample(n_samples, random_state)``, fitted
        with ``fit(X)`` when it has one) and synthesises ``Y = X A_ᵀ + W`` with the noise variance
        ``noise_var_``; the given pairs then only serve for validation.
    noise_var : "auto" or float, default="auto"
        ``σw²``; ``"auto"`` estimates it from ``Y − X A_ᵀ`` on the training pairs.
    device : str, default="auto"
        ``"auto"`` trains on CUDA when available, else the CPU; or any torch device string.
    dtype : {{"float32", "float64"}}, default="float32"
        Of the network's parameters and computations (predictions are returned as float64).
    random_state : int, RandomState instance or None, default=None
        Seeds the split, the batches, the prior's draws and any random initialisation; the same
        value gives bitwise-equal predictions on the CPU with the same number of torch threads
        (reductions split differently across threads round differently).
    verbose : int, default=0
        Report training on ``sys.stderr``: a progress bar (stage, layer, validation NMSE in
        dB) on a terminal, one line per finished stage otherwise (a pipe, a log file).
    warm_start : bool, default=False
        Start from the previous fit's weights and optimiser state (``optimizer_state_``); a
        deeper ``n_layers`` keeps the trained layers and grows the rest from the analytic
        initialisation. ``history_`` and ``stages_`` continue.
    compile : bool, default=False
        Run ``predict`` and ``staged_predict`` through ``torch.compile`` (training stays
        eager). The first call compiles (once per process and network structure; it needs a
        C++ compiler on the CPU, Triton on CUDA); later calls fuse the element-wise passes of
        the denoisers (the matrix products are unchanged; the :doc:`/benchmarks` page reports
        the gain). Predictions equal the uncompiled ones to float rounding. If compilation
        fails, a warning says why and the network runs uncompiled."""

ATTR_DOC = """
    module_ : UnrolledNetwork
        The trained torch module (in eval mode).
    init_estimator_ : estimator
        The fitted classical estimator the network was initialised from.
    history_ : list of dict
        One record per validation check (a learning curve): ``step`` (optimiser steps so far),
        ``stage`` (``"layer"``, ``"refine"`` or ``"end_to_end"``), ``stage_index``, ``layer``
        (active depth), ``stage_step``, ``train_loss`` (mean since the previous check),
        ``val_nmse_db``, ``best_val_nmse_db`` (the stage's best so far) and ``learning_rate``.
    stages_ : list of dict
        One record per training stage: ``stage``, ``stage_index``, ``layer``, ``steps``,
        ``train_loss``, ``val_nmse_db`` (the best, which the stage ends on),
        ``learning_rate`` and ``stop`` (``"no_change"``, ``"max_steps"``, ``"fault"``,
        ``"callback"`` or ``"interrupted"``).
    optimizer_state_ : dict
        The optimiser's last state of every trained parameter (``{"optimizer": class name,
        "state": {parameter name: {name: tensor}}}``); ``warm_start`` resumes from it.
    interrupted_ : bool
        Whether a ``KeyboardInterrupt`` ended training (the estimator then holds the best
        checkpoint so far, and ``fit`` re-raised the interrupt).
    n_layers_ : int
    coefficients_ : dict of ndarray
        The network's readable per-layer coefficients.
    A_, operator_, sparsity_, signal_var_, noise_var_ : as in the classical estimators
    parameterization_ : {"matrix", "operator"}
        ``"matrix"``: learned matrices tied to the one fixed dense ``A``; ``"operator"``: only
        parameters that depend on no matrix (an ensemble, per-sample or matrix-free operators).
    signal_prior_ : object or None
        The fitted prior the training signals were drawn from (in the data's units).
    data_scale_ : float
        The RMS of the training signals' non-zero entries (``√signal_var_``). Training divides
        ``Y`` and ``X`` by it and ``predict`` divides ``Y`` by it and multiplies the estimate
        back, so the network, its learned coefficients and ``init_estimator_`` live in units
        where the non-zeros have unit power, and the same problem in other units gives the
        same NMSE."""


def fill_doc(cls, **defaults):
    """Fill the shared parameter and attribute sections into ``cls``'s docstring."""
    for key in ("why", "schedule_why"):
        defaults[key] = textwrap.fill(defaults[key], width=88, subsequent_indent=" " * 8)
    cls.__doc__ = cls.__doc__.replace("%COMMON%", COMMON_DOC.format(**defaults)).replace(
        "%ATTRS%", ATTR_DOC)
    return cls
