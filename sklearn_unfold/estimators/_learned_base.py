"""The machinery shared by the learned estimators (LISTA, LAMP, LDVAMP).

Each learned estimator is thin: ``fit`` validates, fits the classical solver it unrolls (kept as
``init_estimator_``), builds the network from it (:mod:`sklearn_unfold.networks`), hands it to the
training engine (:mod:`sklearn_unfold.training`) and stores the result; ``predict`` runs the
network on chunks of ``batch_size`` measurements under ``torch.no_grad`` and returns float64.
"""

from __future__ import annotations

import copy
import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from .._parallel import warn_if_gpu_shared
from .._warnings import warn_user
from ..batches import PairBatches, SyntheticBatches, tensor_sampler
from ..datasets import resolve_prior
from ..operators.ensembles import OperatorEnsemble
from ..training import LRSchedule, Optimizer, Trainer
from ._base import RecoveryEstimatorBase
from ._validation import _rms

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: The default ``optimizer`` and ``lr_schedule`` of the learned estimators. Shared, and never
#: changed in place: ``set_params(optimizer__lr=...)`` sets a copy (see ``set_params``).
DEFAULT_OPTIMIZER = Optimizer(torch.optim.Adam)
#: LISTA's layer-wise growth: one refinement of all layers at half the rate after every depth.
LAYERWISE_LR_SCHEDULE = LRSchedule(refine_factors=(0.5,), growth_factors=(0.5,))
#: LAMP's and LDVAMP's end-to-end training: one refinement at a tenth of the rate, on the final
#: layer's loss (``growth_factors`` serve only if ``training="layerwise"`` is asked for).
END_TO_END_LR_SCHEDULE = LRSchedule(refine_factors=(0.1,), growth_factors=(0.5,))


#: ``validation_fraction="auto"`` holds out this fraction of the pairs, at most
#: ``MAX_AUTO_VALIDATION`` of them: enough to rank checkpoints, and a validation check then costs
#: a bounded number of forward passes whatever the size of the data.
AUTO_VALIDATION_FRACTION = 0.1
MAX_AUTO_VALIDATION = 1000


def validation_size(validation_fraction, n_samples: int) -> int:
    """How many of ``n_samples`` pairs ``validation_fraction`` holds out (at most ``n − 1``)."""
    if n_samples <= 1:
        return 0
    if validation_fraction == "auto":
        wanted = min(math.ceil(AUTO_VALIDATION_FRACTION * n_samples), MAX_AUTO_VALIDATION)
    else:
        wanted = math.ceil(validation_fraction * n_samples)
    return min(n_samples - 1, wanted)


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
        "validation_fraction": [Interval(Real, 0, 1, closed="left"), StrOptions({"auto"})],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "signal_prior": [None, StrOptions({"bernoulli_gaussian"}), HasMethods(["sample"])],
        "device": [str, torch.device],
        "dtype": [StrOptions(set(_DTYPES))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "compile": ["boolean"],
        "optimizer": [callable],
        "lr_schedule": [HasMethods(["get_params", "set_params"]), callable],
        "loss": [StrOptions({"nmse"}), callable],
        "callbacks": [None, list, tuple],
        "eval_every": [Interval(Integral, 1, None, closed="left")],
        "eval_batch_size": [None, Interval(Integral, 1, None, closed="left")],
        "operators_per_batch": [Interval(Integral, 1, None, closed="left")],
    }
    #: The training engine; a subclass of :class:`~sklearn_unfold.training.Trainer` plugs in here.
    _trainer_class = Trainer

    def set_params(self, **params):
        """Set the parameters of this estimator, nested ones included (``optimizer__lr=...``).

        A nested parameter is set on a copy of the object that holds it (made with
        :func:`sklearn.base.clone`), so the object given to the constructor, or the default
        shared by every estimator, is never changed in place.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : estimator instance
        """
        for name in {key.partition("__")[0] for key in params if "__" in key}:
            value = getattr(self, name, None)
            if name not in params and hasattr(value, "get_params") and not isinstance(value, type):
                setattr(self, name, clone(value, safe=False))
        return super().set_params(**params)

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

        Raises
        ------
        KeyboardInterrupt
            Re-raised when training is interrupted, after the estimator was fitted on the best
            checkpoint so far (``interrupted_ = True``). An interrupt, or any other error,
            before the new network is complete leaves the estimator's previous fitted state
            exactly as it was.
        """
        previous = dict(self.__dict__)
        try:
            interrupt = self._fit(X, y, operator)
        except BaseException:  # not fitted to the end: the previous fitted state, unmixed
            self.__dict__.clear()
            self.__dict__.update(previous)
            raise
        if interrupt is not None:
            raise interrupt
        return self

    def _fit(self, X, y, operator=None) -> KeyboardInterrupt | None:
        """Fit; return the ``KeyboardInterrupt`` that ended training early, if any."""
        Y, X, fit_op = self._validate_fit_data(X, y, operator)
        self.data_scale_ = self._fit_data_scale(Y, X)
        scale = self.data_scale_
        Y, X = Y / scale, X / scale  # training runs in units where X's non-zeros have unit power
        noise_var = self._scaled_noise_var()
        device, dtype = resolve_device(self.device), _DTYPES[self.dtype]
        warn_if_gpu_shared(device)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        self.parameterization_ = self._parameterization(fit_op)
        self.init_estimator_ = self._make_init_estimator()
        init_op = fit_op if (fit_op is not None and fit_op is not self.operator_) else None
        self.init_estimator_.fit(Y, X, operator=init_op)
        self.signal_prior_ = resolve_prior(self.signal_prior, X * scale)  # in the data's units
        prior = None if self.signal_prior_ is None else _ScaledPrior(self.signal_prior_, scale)
        module, start, resumed = self._initial_module(device, dtype, seed, fit_op)

        if self._is_complex():  # the parameters stay real where they are scalars
            dtype_data = torch.complex64 if dtype == torch.float32 else torch.complex128
        else:
            dtype_data = dtype
        to_t = lambda a: torch.as_tensor(a, dtype=dtype_data).to(device)  # noqa: E731
        n = Y.shape[0]
        n_val = validation_size(self.validation_fraction, n)
        perm = rng.permutation(n)
        val, train = perm[:n_val], perm[n_val:]
        if n_val == 0:
            val = train
        ensemble = self.A_ if isinstance(self.A_, OperatorEnsemble) else None
        if ensemble is not None:
            signals = prior if prior is not None else to_t(X[train])
            batches = SyntheticBatches(signals, ensemble, noise_var, self.batch_size, rng,
                                       dtype=dtype_data, device=device,
                                       operators_per_batch=self.operators_per_batch)
        elif prior is not None:
            if fit_op.per_sample:
                raise ValueError(
                    "signal_prior draws fresh signals through the operator; with per-sample "
                    "operators and no ensemble to draw from, leave signal_prior=None (or pass the "
                    "ensemble the operators come from as A).")
            batches = SyntheticBatches(prior, fit_op.to(dtype, device),
                                       noise_var, self.batch_size, rng, dtype=dtype_data,
                                       device=device)
        else:
            batches = PairBatches(to_t(Y[train]), to_t(X[train]), self.batch_size, rng,
                                  operator=fit_op.take(train).to(dtype, device))
        if fit_op is not None:
            validation = (to_t(Y[val]), to_t(X[val]), fit_op.take(val).to(dtype, device))
        else:  # an ensemble without the pairs' operators: measure the held-out signals afresh,
            # through one fresh draw per 10 signals (a tenth of the memory of one per signal)
            held_out = SyntheticBatches(to_t(X[val]), ensemble, noise_var, len(val),
                                        check_random_state(seed), dtype=dtype_data,
                                        device=device,
                                        operators_per_batch=max(1, len(val) // 10))
            validation = held_out()
        steps_per_epoch = math.ceil(len(train) / min(self.batch_size, len(train)))
        max_steps = max(1, math.ceil(self.max_epochs * steps_per_epoch))
        if hasattr(self, "_pretrain_denoisers") and not resumed:  # a denoiser trained alone first
            self._pretrain_denoisers(module, to_t(X[train]), validation, fit_op, device, dtype,
                                     seed)
        trainer = self._make_trainer(module, max_steps)
        interrupt = None
        try:
            trainer.fit(batches, validation, start_layer=start, **resumed)
        except KeyboardInterrupt as exc:
            if not getattr(trainer, "interrupted_", False):  # not from the training loop
                raise
            interrupt = exc  # the trainer ended on its best checkpoint: finish the fit
        self.module_ = module
        self.history_ = trainer.history_
        self.stages_ = trainer.stages_
        self.optimizer_state_ = trainer.optimizer_state_
        self.interrupted_ = interrupt is not None
        if getattr(module, "calibrates", False):
            self.calibration_ = trainer.calibration_
        self.n_layers_ = module.n_layers
        self._architecture_ = self._architecture()
        self._set_coefficients(module.layer_summary())
        return interrupt

    def _make_trainer(self, module, max_steps: int) -> Trainer:
        """The training engine, configured from the estimator's parameters."""
        optimizer = self.optimizer
        if isinstance(optimizer, type):
            optimizer = Optimizer(optimizer)
        lr = getattr(optimizer, "lr", None)
        schedule = self.lr_schedule
        refine = getattr(schedule, "refine_factors", END_TO_END_LR_SCHEDULE.refine_factors)
        growth = getattr(schedule, "growth_factors", None)
        return self._trainer_class(
            module, schedule=self.training, curriculum=self.curriculum,
            learning_rate=self.learning_rate if lr is None else lr, refine_factors=refine,
            growth_factors=growth, max_steps=max_steps, n_iter_no_change=self.n_iter_no_change,
            tol=self.tol, eval_every=self.eval_every, verbose=self.verbose,
            eval_batch_size=(max(self.batch_size, 1024) if self.eval_batch_size is None
                             else self.eval_batch_size),
            optimizer=optimizer, lr_scheduler=schedule if callable(schedule) else None,
            loss=None if self.loss == "nmse" else self.loss, callbacks=self.callbacks or (),
            estimator=self)

    def _fit_data_scale(self, Y: np.ndarray, X: np.ndarray) -> float:
        """The scale ``c`` training divides ``Y`` and ``X`` by: the RMS of the non-zero signal
        entries, ``√signal_var_``.

        The network then learns in units where the signals' non-zeros have unit power, so the
        same problem in other units (``Y`` and ``X`` times ``s``) trains and predicts the same
        (up to rounding), and float32 holds data of any magnitude float64 can. Learned
        thresholds and prior variances are in those units, which is what the default learning
        rates are set for (Adam's steps have a fixed size in parameter units). Signals without
        non-zeros fall back on the RMS of ``Y``, then on 1. A warm start keeps the previous
        fit's scale, which its weights were learned in.
        """
        old = getattr(self, "data_scale_", None)
        if self.warm_start and old is not None and getattr(self, "module_", None) is not None:
            return float(old)
        for scale in (float(np.sqrt(self.signal_var_)) if np.any(X) else 0.0, _rms(Y)):
            if 0.0 < scale < np.inf:
                return scale
        return 1.0

    def _scaled_noise_var(self) -> float:
        """``noise_var_`` in the units training runs in (divided by ``data_scale_²``)."""
        return float(self.noise_var_) / self.data_scale_**2

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
        """The module to train, the layer layer-wise training starts at, and what a warm start
        continues (``history``, ``stages`` and ``optimizer_state`` of :meth:`Trainer.fit`)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build_module(device, dtype, fit_op)
            if self.init == "random":
                _randomize_matrices(module)
        old = getattr(self, "module_", None)
        if not (self.warm_start and old is not None):
            return module, 0, {}
        before, now = getattr(self, "_architecture_", None), self._architecture()
        if before != now:
            changed = sorted(k for k in set(before or {}) | set(now)
                             if (before or {}).get(k) != now.get(k))
            warn_user(
                f"warm_start=True, but the previous fit of this {type(self).__name__} differs in "
                f"{', '.join(changed)} (before: {[(before or {}).get(k) for k in changed]}, now: "
                f"{[now.get(k) for k in changed]}); its weights do not apply, so this fit starts "
                "from the analytic initialisation.", UserWarning)
            return module, 0, {}
        old_params = dict(old.named_parameters())
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name in old_params and old_params[name].shape == p.shape:
                    p.copy_(old_params[name].to(device=device, dtype=dtype))
        start = min(old.n_layers, module.n_layers) - (1 if old.n_layers >= module.n_layers else 0)
        return module, start, {
            "history": list(self.history_), "stages": list(getattr(self, "stages_", [])),
            "optimizer_state": getattr(self, "optimizer_state_", None)}

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
        dtype = ref.real.dtype
        data_dtype = ((torch.complex64 if dtype == torch.float32 else torch.complex128)
                      if np.iscomplexobj(Y) else dtype)
        Yt = torch.as_tensor(np.require(Y, requirements=["C", "W"]), dtype=data_dtype).to(
            ref.device)
        op = op.to(dtype=dtype, device=ref.device)
        self.module_.check_operator(op, Yt.shape[0])
        with torch.no_grad():
            outputs = list((forward or self.module_)(Yt, op))
        for i in range(len(outputs)):  # hand each layer over and drop it here (staged_predict)
            x, outputs[i] = outputs[i], None
            yield x

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


class _ScaledPrior:
    """A signal prior whose draws are divided by ``scale`` (training's units)."""

    def __init__(self, prior, scale: float) -> None:
        self.prior, self.scale = prior, float(scale)

    def sample(self, n_samples: int, random_state=None):
        return np.asarray(self.prior.sample(n_samples, random_state)) / self.scale

    def __getattr__(self, name: str):
        # ``sample_tensor`` exactly when the wrapped prior has it (the fast draws of training)
        draw = tensor_sampler(self.__dict__.get("prior")) if name == "sample_tensor" else None
        if draw is not None:
            def sample_tensor(n_samples: int, **kwargs):
                return draw(n_samples, **kwargs).div_(self.scale)
            return sample_tensor
        raise AttributeError(name)


def _randomize_matrices(module: torch.nn.Module) -> None:
    """Redraw every matrix parameter as Gaussian with the Frobenius norm of its analytic value."""
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim >= 2:
                norm = p.norm()
                draw = torch.randn(p.shape, dtype=p.dtype).to(p.device)
                p.copy_(draw * (norm / draw.norm().clamp_min(1e-30)))
