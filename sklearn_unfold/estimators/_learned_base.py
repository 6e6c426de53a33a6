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
from ..datasets import resolve_prior
from ..training import PairBatches, PriorBatches, Trainer
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

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Initialise the network from the classical solver, then train it.

        The signature is scikit-learn's ``fit(X, y)``, used positionally as ``fit(Y, X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_measurements)
            Measurements ``Y``.
        y : array-like of shape (n_samples, n_features) or (n_samples,)
            The signals ``X`` behind them.

        Returns
        -------
        self : object
        """
        Y, X = self._validate_fit_data(X, y)
        device, dtype = resolve_device(self.device), _DTYPES[self.dtype]
        warn_if_gpu_shared(device)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        self.init_estimator_ = self._make_init_estimator().fit(Y, X)
        module, start, history = self._initial_module(device, dtype, seed)
        self.signal_prior_ = resolve_prior(self.signal_prior, X)

        to_t = lambda a: torch.as_tensor(a, dtype=dtype).to(device)  # noqa: E731
        n = Y.shape[0]
        n_val = min(n - 1, math.ceil(self.validation_fraction * n)) if n > 1 else 0
        perm = rng.permutation(n)
        val, train = perm[:n_val], perm[n_val:]
        if n_val == 0:
            val = train
        if self.signal_prior_ is None:
            batches = PairBatches(to_t(Y[train]), to_t(X[train]), self.batch_size, rng)
        else:
            batches = PriorBatches(self.signal_prior_, to_t(self.A_), self.noise_var_,
                                   self.batch_size, rng)
        steps_per_epoch = math.ceil(len(train) / min(self.batch_size, len(train)))
        trainer = self._trainer_class(
            module, schedule=self.training, curriculum=self.curriculum,
            learning_rate=self.learning_rate, refine_factors=self._refine_factors,
            growth_factors=self._growth_factors,
            max_steps=max(1, math.ceil(self.max_epochs * steps_per_epoch)),
            n_iter_no_change=self.n_iter_no_change, tol=self.tol, eval_every=self._eval_every,
            verbose=self.verbose, eval_batch_size=max(self.batch_size, 1024))
        trainer.fit(batches, (to_t(Y[val]), to_t(X[val])), start_layer=start, history=history)
        self.module_ = module
        self.history_ = trainer.history_
        if getattr(module, "calibrates", False):
            self.calibration_ = trainer.calibration_
        self.n_layers_ = module.n_layers
        self._architecture_ = self._architecture()
        self._set_coefficients(module.layer_summary())
        return self

    def _initial_module(self, device, dtype, seed):
        """The module to train, the layer layer-wise training starts at, and the history."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build_module(device, dtype)
            if self.init == "random":
                _randomize_matrices(module)
        old = getattr(self, "module_", None)
        if not (self.warm_start and old is not None
                and getattr(self, "_architecture_", None) == self._architecture()):
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
        return {"class": type(self).__name__, "tied": self.tied, "dtype": self.dtype,
                "shape": self.A_.shape, **self._architecture_extra()}

    def _architecture_extra(self) -> dict:
        return {}

    def _set_coefficients(self, summary: dict) -> None:
        self.coefficients_ = summary

    # ------------------------------------------------------------------ predict
    def _iterate(self, Y: np.ndarray, forward=None):
        ref = next(self.module_.buffers())
        Yt = torch.as_tensor(np.require(Y, requirements=["C", "W"]), dtype=ref.dtype).to(ref.device)
        with torch.no_grad():
            outputs = (forward or self.module_)(Yt)
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

        def forward(Yt: torch.Tensor):
            nonlocal compiled, failed
            if not failed:
                try:
                    if compiled is None:  # lazy: compiles on its first call
                        compiled = torch.compile(self.module_, dynamic=True)
                    return compiled(Yt)
                except Exception as exc:  # a missing C++ compiler or Triton, an unsupported platform
                    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    warnings.warn(f"{type(self).__name__}(compile=True): torch.compile failed "
                                  f"({type(exc).__name__}: {first_line[:200]}); predicting "
                                  "without it.", UserWarning, stacklevel=5)
                    failed = True
            return self.module_(Yt)

        return lambda Y: self._iterate(Y, forward)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = super().__getstate__()
        module = state.get("module_")
        if module is not None and next(module.buffers()).device.type != "cpu":
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
    A_, sparsity_, signal_var_, noise_var_ : as in the classical estimators
    signal_prior_ : object or None
        The fitted prior the training signals were drawn from."""


def fill_doc(cls, **defaults):
    """Fill the shared parameter and attribute sections into ``cls``'s docstring."""
    defaults["why"] = textwrap.fill(defaults["why"], width=88, subsequent_indent=" " * 8)
    cls.__doc__ = cls.__doc__.replace("%COMMON%", COMMON_DOC.format(**defaults)).replace(
        "%ATTRS%", ATTR_DOC)
    return cls
