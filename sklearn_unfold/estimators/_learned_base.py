"""The machinery shared by the learned estimators (LISTA, LAMP, LDVAMP).

Each learned estimator is thin: ``fit`` validates, fits the classical solver it unrolls (kept as
``init_estimator_``), builds the network from it (:mod:`sklearn_unfold.networks`), hands it to the
training engine (:mod:`sklearn_unfold.training`) and stores the result; ``predict`` runs the
network on chunks of ``batch_size`` measurements under ``torch.no_grad`` and returns float64.
"""

from __future__ import annotations

import copy
import math
import textwrap
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from .._parallel import warn_if_gpu_shared
from ..batches import PairBatches, SyntheticBatches
from ..datasets import resolve_prior
from ..operators.ensembles import OperatorEnsemble
from ..training import Trainer
from ._base import RecoveryEstimatorBase

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; any other value is checked and returned."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or another torch device string; got {device!r}."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here; "
                         "use device='cpu' or 'auto'.")
    return dev


class LearnedEstimatorBase(RecoveryEstimatorBase):
    """What the learned estimators share: the training data, the engine, predict, pickling."""

    _parameter_constraints: dict = {
        **RecoveryEstimatorBase._parameter_constraints,
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "tied": ["boolean"],
        "init": [StrOptions({"analytic", "random"})],
        "training": [StrOptions({"layerwise", "end_to_end"})],
        "curriculum": ["boolean"],
        "max_epochs": [Interval(Real, 0, None, closed="neither")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "signal_prior": [None, StrOptions({"bernoulli_gaussian"}), HasMethods(["sample"])],
        "device": [str, torch.device],
        "dtype": [StrOptions(set(_DTYPES))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "compile": ["boolean"],
    }
    #: Learning-rate multipliers of the refinement stages after each main stage.
    _refine_factors: tuple[float, ...] = (0.5, 0.1)
    #: Refinements at the intermediate depths of layer-wise training (None: as above). One
    #: refinement per intermediate depth (the final depth gets both) halves the number of
    #: stages at the same final NMSE (LAMP-bg, giid, 10 layers: −44.75 dB in 90 s, −44.92 dB in
    #: 138 s with both).
    _growth_factors: tuple[float, ...] | None = (0.5,)
    #: Steps between two validation checks.
    _eval_every = 10
    #: The training engine; a subclass of :class:`~sklearn_unfold.training.Trainer` plugs in here.
    _trainer_class = Trainer

    #: Distinct operators drawn per training mini-batch from an operator ensemble.
    _operators_per_batch = 10

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, operator=None):
        """Initialise the network from the classical solver, then train it.

        The signature is scikit-learn's ``fit(X, y)``, used positionally as ``fit(Y, X)``.

        With one fixed dense ``A`` the network learns matrices tied to it (the
        ``"matrix"`` parameterisation). With an operator ensemble as ``A``, per-sample
        operators, or a matrix-free operator, it learns only parameters that depend on no
        matrix (the ``"operator"`` parameterisation, see the class docstring) and, with an
        ensemble, every mini-batch draws fresh operators (and fresh signals with
        ``signal_prior``): weights learned on one realisation of a random operator do not
        serve the others.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_measurements)
            Measurements ``Y``.
        y : array-like of shape (n_samples, n_features) or (n_samples,)
            The signals ``X`` behind them.
        operator : array-like of shape (n_samples, n_measurements, n_features) or \
                LinearOperator, optional
            The operator of each training pair (per-sample metadata; request it with
            ``set_fit_request(operator=True)`` under scikit-learn's metadata routing).

        Returns
        -------
        self : object
        """
        Y, X, fit_op = self._validate_fit_data(X, y, operator)
        device, dtype = resolve_device(self.device), _DTYPES[self.dtype]
        warn_if_gpu_shared(device)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        self.parameterization_ = self._parameterization(fit_op)
        self.init_estimator_ = self._make_init_estimator()
        init_op = fit_op if (fit_op is not None and fit_op is not self.operator_) else None
        self.init_estimator_.fit(Y, X, operator=init_op)
        self.signal_prior_ = resolve_prior(self.signal_prior, X)
        module, start, history = self._initial_module(device, dtype, seed, fit_op)

        to_t = lambda a: torch.as_tensor(a, dtype=dtype).to(device)  # noqa: E731
        n = Y.shape[0]
        n_val = min(n - 1, math.ceil(self.validation_fraction * n)) if n > 1 else 0
        perm = rng.permutation(n)
        val, train = perm[:n_val], perm[n_val:]
        if n_val == 0:
            val = train
        ensemble = self.A_ if isinstance(self.A_, OperatorEnsemble) else None
        if ensemble is not None:
            signals = self.signal_prior_ if self.signal_prior_ is not None else to_t(X[train])
            batches = SyntheticBatches(signals, ensemble, self.noise_var_, self.batch_size, rng,
                                       dtype=dtype, device=device,
                                       operators_per_batch=self._operators_per_batch)
        elif self.signal_prior_ is not None:
            if fit_op.per_sample:
                raise ValueError(
                    "signal_prior draws fresh signals through the operator; with per-sample "
                    "operators and no ensemble to draw from, leave signal_prior=None (or pass the "
                    "ensemble the operators come from as A).")
            batches = SyntheticBatches(self.signal_prior_, fit_op.to(dtype, device),
                                       self.noise_var_, self.batch_size, rng, dtype=dtype,
                                       device=device)
        else:
            batches = PairBatches(to_t(Y[train]), to_t(X[train]), self.batch_size, rng,
                                  operator=fit_op.take(train).to(dtype, device))
        if fit_op is not None:
            validation = (to_t(Y[val]), to_t(X[val]), fit_op.take(val).to(dtype, device))
        else:  # an ensemble without the pairs' operators: measure the held-out signals afresh,
            # through one fresh draw per 10 signals (a tenth of the memory of one per signal)
            held_out = SyntheticBatches(to_t(X[val]), ensemble, self.noise_var_, len(val),
                                        check_random_state(seed), dtype=dtype, device=device,
                                        operators_per_batch=max(1, len(val) // 10))
            validation = held_out()
        steps_per_epoch = math.ceil(len(train) / min(self.batch_size, len(train)))
        trainer = self._trainer_class(
            module, schedule=self.training, curriculum=self.curriculum,
            learning_rate=self.learning_rate, refine_factors=self._refine_factors,
            growth_factors=self._growth_factors,
            max_steps=max(1, math.ceil(self.max_epochs * steps_per_epoch)),
            n_iter_no_change=self.n_iter_no_change, tol=self.tol, eval_every=self._eval_every,
            verbose=self.verbose, eval_batch_size=max(self.batch_size, 1024))
        trainer.fit(batches, validation, start_layer=start, history=history)
        self.module_ = module
        self.history_ = trainer.history_
        if getattr(module, "calibrates", False):
            self.calibration_ = trainer.calibration_
        self.n_layers_ = module.n_layers
        self._architecture_ = self._architecture()
        self._set_coefficients(module.layer_summary())
        return self

    def _parameterization(self, fit_op) -> str:
        """``"matrix"`` for one fixed dense matrix, ``"operator"`` otherwise."""
        if isinstance(self.A_, np.ndarray) and fit_op is self.operator_:
            return "matrix"
        return "operator"

    def _shape_operator(self, fit_op):
        """The operator a network is built from: the fixed one, or a representative draw."""
        if self.operator_ is not None:
            return self.operator_
        if fit_op is not None:
            return fit_op.take(slice(0, 1))
        return self.A_.sample(1, random_state=0)

    def _typical_lipschitz(self, fit_op) -> float:
        """A representative ``‖A‖₂²`` of the operators the network will serve."""
        if fit_op is not None:
            sample = fit_op.take(slice(0, 64)) if fit_op.per_sample else fit_op
            return float(sample.norm_sq().mean())
        draws = self.A_.sample(16, random_state=0)
        return float(draws.norm_sq().mean())

    def _initial_module(self, device, dtype, seed, fit_op):
        """The module to train, the layer layer-wise training starts at, and the history."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build_module(device, dtype, fit_op)
            if self.init == "random":
                _randomize_matrices(module)
        old = getattr(self, "module_", None)
        if not (self.warm_start and old is not None):
            return module, 0, []
        before, now = getattr(self, "_architecture_", None), self._architecture()
        if before != now:
            changed = sorted(k for k in set(before or {}) | set(now)
                             if (before or {}).get(k) != now.get(k))
            warnings.warn(
                f"warm_start=True, but the previous fit of this {type(self).__name__} differs in "
                f"{', '.join(changed)} (before: {[(before or {}).get(k) for k in changed]}, now: "
                f"{[now.get(k) for k in changed]}); its weights do not apply, so this fit starts "
                "from the analytic initialisation.", UserWarning, stacklevel=4)
            return module, 0, []
        old_params = dict(old.named_parameters())
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name in old_params and old_params[name].shape == p.shape:
                    p.copy_(old_params[name].to(device=device, dtype=dtype))
        start = min(old.n_layers, module.n_layers) - (1 if old.n_layers >= module.n_layers else 0)
        return module, start, list(self.history_)

    def _architecture(self) -> dict:
        """What a warm start must find unchanged (everything but the depth)."""
        if isinstance(self.A_, OperatorEnsemble):
            operator = f"ensemble:{self.A_.fingerprint()}"
        elif self.operator_ is not None:
            operator = self.operator_.fingerprint()
        else:
            operator = "per-sample operators"
        return {"class": type(self).__name__, "tied": self.tied, "dtype": self.dtype,
                "shape": (self.n_features_in_, self._n_signal_features()),
                "parameterization": self.parameterization_, "operator": operator,
                **self._architecture_extra()}

    def _architecture_extra(self) -> dict:
        return {}

    def _set_coefficients(self, summary: dict) -> None:
        self.coefficients_ = summary

    # ------------------------------------------------------------------ predict
    def _iterate(self, Y: np.ndarray, op, forward=None):
        ref = next(self.module_.parameters())
        Yt = torch.as_tensor(np.require(Y, requirements=["C", "W"]), dtype=ref.dtype).to(ref.device)
        op = op.to(dtype=ref.dtype, device=ref.device)
        self.module_.check_operator(op, Yt.shape[0])
        with torch.no_grad():
            outputs = (forward or self.module_)(Yt, op)
        yield from outputs

    def _chunk_iterator(self):
        """With ``compile``, every chunk of one call goes through one ``torch.compile`` wrapper.

        Nothing is stored on the estimator: PyTorch caches the compiled code per process, keyed
        on the module's code and guarded on its structure, so later calls reuse it;
        ``dynamic=True`` serves every chunk size with one compilation. If compiling fails, one
        warning says why and the rest of the call runs uncompiled (no retry per chunk).
        """
        if not self.compile:
            return self._iterate
        compiled, failed = None, False

        def forward(Yt: torch.Tensor, op):
            nonlocal compiled, failed
            if not failed:
                try:
                    if compiled is None:  # lazy: compiles on its first call
                        compiled = torch.compile(self.module_, dynamic=True)
                    return compiled(Yt, op)
                except Exception as exc:  # a missing C++ compiler or Triton, an unsupported platform
                    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    warnings.warn(f"{type(self).__name__}(compile=True): torch.compile failed "
                                  f"({type(exc).__name__}: {first_line[:200]}); predicting "
                                  "without it.", UserWarning, stacklevel=5)
                    failed = True
            return self.module_(Yt, op)

        return lambda Y, op: self._iterate(Y, op, forward)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = super().__getstate__()
        module = state.get("module_")
        if module is not None and next(module.parameters()).device.type != "cpu":
            state["module_"] = copy.deepcopy(module).to("cpu")
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        module = getattr(self, "module_", None)
        if module is not None and self.device != "cpu":
            try:
                wanted = resolve_device(self.device)
            except ValueError:
                wanted = torch.device("cpu")
            self.module_ = module.to(wanted)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _randomize_matrices(module: torch.nn.Module) -> None:
    """Redraw every matrix parameter as Gaussian with the Frobenius norm of its analytic value."""
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim >= 2:
                norm = p.norm()
                draw = torch.randn(p.shape, dtype=p.dtype).to(p.device)
                p.copy_(draw * (norm / draw.norm().clamp_min(1e-30)))


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
        parameters alone, then refine all layers so far at {growth} the rate (at the final
        depth 0.5× then 0.1×). ``"end_to_end"``: train all layers together, then refine at
        0.5× then 0.1×. Every stage stops early on the validation NMSE and ends on its best
        checkpoint.
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
        Adam's rate in the main stages (refinements use 0.5× and 0.1×).
    validation_fraction : float in [0, 1), default=0.1
        Fraction of the pairs held out for early stopping and checkpoints (0: the training
        pairs are used).
    n_iter_no_change : int, default=3
        A stage stops after this many validation checks (one every 10 steps) without an
        improvement of ``tol``.
    tol : float, default=0.01
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
        value gives bitwise-equal predictions on the CPU.
    verbose : int, default=0
        Show a progress bar with the stage, the layer and the validation NMSE (dB).
    warm_start : bool, default=False
        Start from the previous fit's weights; a deeper ``n_layers`` keeps the trained layers
        and grows the rest from the analytic initialisation.
    compile : bool, default=False
        Run ``predict`` and ``staged_predict`` through ``torch.compile`` (training stays
        eager). The first call compiles (about 10–30 s on 2 CPU cores, once per process and
        network structure; it needs a C++ compiler on the CPU, Triton on CUDA); later calls fuse
        the element-wise passes of the denoisers (for LAMP-bg, 10 layers, on 2 CPU cores:
        15–25 % less time per sample in interleaved runs, less in some single runs; the matrix
        products are unchanged). Predictions equal the uncompiled ones to float rounding. If
        compilation fails, a warning says why and the network runs uncompiled."""

ATTR_DOC = """
    module_ : UnrolledNetwork
        The trained torch module (in eval mode).
    init_estimator_ : estimator
        The fitted classical estimator the network was initialised from.
    history_ : list of dict
        One record per training stage: ``stage``, ``layer`` (active depth), ``steps``,
        ``train_loss``, ``val_nmse_db``, ``learning_rate``, ``stop``.
    n_layers_ : int
    coefficients_ : dict of ndarray
        The network's readable per-layer coefficients.
    A_, operator_, sparsity_, signal_var_, noise_var_ : as in the classical estimators
    parameterization_ : {"matrix", "operator"}
        ``"matrix"``: learned matrices tied to the one fixed dense ``A``; ``"operator"``: only
        parameters that depend on no matrix (an ensemble, per-sample or matrix-free operators).
    signal_prior_ : object or None
        The fitted prior the training signals were drawn from."""


def fill_doc(cls, **defaults):
    """Fill the shared parameter and attribute sections into ``cls``'s docstring."""
    defaults["why"] = textwrap.fill(defaults["why"], width=88, subsequent_indent=" " * 8)
    cls.__doc__ = cls.__doc__.replace("%COMMON%", COMMON_DOC.format(**defaults)).replace(
        "%ATTRS%", ATTR_DOC)
    return cls
