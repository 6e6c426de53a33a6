"""The :class:`Trainer`: stages, early stopping, checkpoints, faults, callbacks."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor, nn

from .._warnings import warn_user
from ..operators import LinearOperator
from ._report import Progress
from ._specs import resolve_optimizer
from ._stage import Stage, current_lr, layer_nmse, on_plateau, state_to_cpu

__all__ = ["Stage", "Trainer", "layer_nmse"]


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Train an :class:`~sklearn_unfold.networks.UnrolledNetwork` with the recipe above.

    Parameters
    ----------
    module : UnrolledNetwork
        Already initialised (analytically or otherwise) and on its device.
    schedule : {"layerwise", "end_to_end"}, default="layerwise"
    curriculum : bool, default=True
        Anneal the loss from the mean of the per-layer losses to the final layer's loss.
    learning_rate : float, default=1e-3
        The optimiser's rate for a new layer (or the whole network, end to end).
    refine_factors : sequence of float, default=(0.5, 0.1, 0.01)
        Learning-rate multipliers of the refinement stages that follow.
    max_steps : int, default=100
        Optimiser steps per stage at most.
    n_iter_no_change : int, default=3
        Validation checks without improvement that end a stage.
    tol : float, default=0.01
        Improvement of the validation NMSE, in dB, that counts.
    eval_every : int, default=10
        Steps between validation checks.
    max_recoveries : int, default=4
        Non-finite losses tolerated per stage before training gives up.
    verbose : int, default=0
        Report progress on ``sys.stderr``: a tqdm bar (stage, layer, validation NMSE in dB) on a
        terminal, one line per finished stage otherwise.
    eval_batch_size : int, default=1024
        Chunk size of the validation forward passes.
    growth_factors : sequence of float, optional
        Refinement multipliers after each intermediate depth of layer-wise training (default:
        ``refine_factors``).
    log_loss : bool, default=False
        Train on the log of the loss.
    calibrate : bool, default=True
        Let the network fit each new layer to training data before its first stage (see
        above).
    calibration_samples : int, default=512
        Training samples that fit uses (drawn as whole batches, then cut to this many).
    optimizer : Optimizer, torch optimiser class or callable, optional
        ``optimizer(params, lr=rate)`` builds each stage's optimiser (default: Adam).
    lr_scheduler : LRSchedule or callable, optional
        ``lr_scheduler(optimizer)`` returns a :mod:`torch.optim.lr_scheduler` scheduler (or
        ``None``), stepped after every optimiser step of the stage it was made for.
    loss : callable, optional
        ``loss(X_hat, X) -> scalar tensor`` for one layer's estimate; the NMSE by default.
        Early stopping and checkpoints always use the validation NMSE.
    callbacks : sequence of callable, default=()
        ``callback(trainer, history)`` after every validation check (``history`` is
        ``history_``, whose last record is that check); a true return value stops training:
        the running stage ends on its best checkpoint and no further stage runs.
    estimator : object, optional
        The estimator being fitted, for callbacks (``trainer.estimator``) and messages.

    Attributes
    ----------
    history_ : list of dict
        One record per validation check: ``step`` (optimiser steps so far, cumulative over
        stages), ``stage`` (``"layer"``, ``"refine"`` or ``"end_to_end"``), ``stage_index``,
        ``layer`` (the network's active depth, from 1), ``stage_step`` (steps into the stage; 0
        for the check that opens it), ``train_loss`` (mean training loss since the previous
        check; NaN for an opening check), ``val_nmse_db``, ``best_val_nmse_db`` (the stage's
        best so far, which it ends on) and ``learning_rate``.
    stages_ : list of dict
        One record per stage: ``stage``, ``stage_index``, ``layer``, ``steps``, ``train_loss``
        (mean over the stage's last ``eval_every`` steps), ``val_nmse_db`` (the best, which the
        stage ends on), ``learning_rate`` (final), ``stop`` (``"no_change"``, ``"max_steps"``,
        ``"fault"``, ``"callback"`` or ``"interrupted"``).
    optimizer_state_ : dict
        ``{"optimizer": class name, "state": {parameter name: state tensors}}``, the last
        optimiser state of every trained parameter; :meth:`fit` continues from it when given
        it back.
    n_improvements_ : int
        Validation checks that improved a stage's checkpoint; 0 means training kept the
        initial network (warned about).
    n_faults_ : int
        Non-finite events that were rolled back.
    interrupted_ : bool
        Whether a ``KeyboardInterrupt`` ended training.
    stopped_by_callback_ : bool
        Whether a callback ended training.
    gave_up_ : bool
        Whether training ended early because a stage could not recover.
    calibration_ : list of dict
        What :meth:`~sklearn_unfold.networks.UnrolledNetwork.calibrate_layer` returned, one
        per calibrated layer (empty when the network does not calibrate).
    """

    def __init__(self, module, *, schedule: str = "layerwise", curriculum: bool = True,
                 learning_rate: float = 1e-3, refine_factors: Sequence[float] = (0.5, 0.1, 0.01),
                 max_steps: int = 100, n_iter_no_change: int = 3, tol: float = 0.01,
                 eval_every: int = 10, max_recoveries: int = 4, verbose: int = 0,
                 eval_batch_size: int = 1024, growth_factors: Sequence[float] | None = None,
                 log_loss: bool = False, calibrate: bool = True, calibration_samples: int = 512,
                 optimizer=None, lr_scheduler: Callable | None = None,
                 loss: Callable[[Tensor, Tensor], Tensor] | None = None,
                 callbacks: Sequence[Callable] = (), estimator=None):
        if schedule not in ("layerwise", "end_to_end"):
            raise ValueError(f"schedule must be 'layerwise' or 'end_to_end'; got {schedule!r}.")
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be a callable (X_hat, X) -> tensor; got {loss!r}.")
        bad = [cb for cb in callbacks if not callable(cb)]
        if bad:
            raise TypeError(f"callbacks must be callables (trainer, history); got {bad!r}.")
        self.module = module
        self.schedule = schedule
        self.curriculum = curriculum
        self.learning_rate = float(learning_rate)
        self.refine_factors = tuple(float(f) for f in refine_factors)
        self.max_steps = max(1, int(max_steps))
        self.n_iter_no_change = int(n_iter_no_change)
        self.tol = float(tol)
        self.eval_every = max(1, int(eval_every))
        self.max_recoveries = int(max_recoveries)
        self.verbose = verbose
        self.eval_batch_size = int(eval_batch_size)
        self.log_loss = log_loss
        self.calibrate = bool(calibrate)
        self.calibration_samples = max(1, int(calibration_samples))
        self.optimizer = resolve_optimizer(optimizer)
        self.lr_scheduler = lr_scheduler
        self.loss = loss
        self.callbacks = tuple(callbacks)
        self.estimator = estimator
        self._start_layer = 0
        self.growth_factors = (self.refine_factors if growth_factors is None
                               else tuple(float(f) for f in growth_factors))

    # ------------------------------------------------------------------ public
    def fit(self, batches, validation: tuple[Tensor, Tensor, LinearOperator], *,
            start_layer: int = 0, history: list | None = None, stages: list | None = None,
            optimizer_state: dict | None = None) -> Trainer:
        """Run every stage of the schedule; end on the best checkpoint, layers all active.

        Parameters
        ----------
        batches : callable
            ``batches() -> (Y, X, op)``, one training mini-batch (:class:`PairBatches`,
            :class:`SyntheticBatches`); ``batches(n)`` draws ``n`` samples (for calibration);
            ``batches.batch_size`` is quoted in memory errors.
        validation : (Tensor, Tensor, LinearOperator)
            Held-out ``(Y, X, op)`` for early stopping and checkpoints (``op`` shared, or one
            per validation sample).
        start_layer : int, default=0
            Layer-wise training starts growing from this layer (a warm start).
        history, stages : list, optional
            Records are appended to them (a warm start continues them).
        optimizer_state : dict, optional
            A previous fit's ``optimizer_state_``: each parameter's optimiser starts from its
            saved state (same optimiser class, same shape) the first time it is trained.

        Returns
        -------
        self

        Raises
        ------
        KeyboardInterrupt
            Re-raised after training ended on its best checkpoint (``interrupted_``).
        """
        plan = self._setup(batches, validation, start_layer=start_layer, history=history,
                           stages=stages, optimizer_state=optimizer_state)
        interrupt = None
        try:
            for stage in plan:
                if not self._fit_stage(stage):
                    break
        except KeyboardInterrupt as exc:
            interrupt = exc
            self.interrupted_ = True
            self._restore(self._best_state)
            self._end_stage(self._stage, "interrupted")
        finally:
            self._progress.close()
            self.module.n_active = self.module.n_layers
            for p in self.module.parameters():
                p.requires_grad_(True)
            self.module.eval()
        self._warn()
        if interrupt is not None:
            raise interrupt
        return self

    def _setup(self, batches, validation, *, start_layer: int = 0, history: list | None = None,
               stages: list | None = None, optimizer_state: dict | None = None) -> list[Stage]:
        """Reset the fitted state for a run of :meth:`fit`; return its stages."""
        self.batches, self.validation = batches, validation
        self.history_ = [] if history is None else history
        self.stages_ = [] if stages is None else stages
        self.n_faults_, self.n_improvements_ = 0, 0
        self.interrupted_ = self.gave_up_ = self.stopped_by_callback_ = False
        self.calibration_: list[dict] = []
        self._start_layer = start_layer
        self._fresh = start_layer == 0 and not self.history_
        self._step0 = int(self.history_[-1]["step"]) if self.history_ else 0
        self._index0 = int(self.stages_[-1].get("stage_index", -1)) + 1 if self.stages_ else 0
        self._n_stages0 = len(self.stages_)
        self._total_steps = 0
        self._names = {id(p): name for name, p in self.module.named_parameters()}
        saved = optimizer_state or {}
        self._saved_class, self._saved_state = saved.get("optimizer"), saved.get("state", {})
        self._loaded: set[int] = set()
        self.optimizer_state_ = {"optimizer": self._saved_class,
                                 "state": dict(self._saved_state)}
        plan = list(self._plan(start_layer))
        self._stage, self._steps, self._lr, self._losses = plan[0], 0, plan[0].lr, []
        self._optimizer = None
        self._best_state, self._best_db = self._snapshot(), float("nan")
        name = type(self.estimator).__name__ if self.estimator is not None else "Trainer"
        self._progress = Progress(self.verbose, sum(s.max_steps for s in plan), len(plan),
                                  self.module.n_layers, name)
        return plan

    # ------------------------------------------------------------------ plan
    def _plan(self, start_layer: int) -> Iterator[Stage]:
        """The stages of the schedule (overridable)."""
        L = self.module.n_layers
        if self.schedule == "layerwise":
            for t in range(min(start_layer, L - 1), L):
                yield Stage("layer", t, self.module.layer_parameters(t), self.learning_rate,
                            self.max_steps, 1.0)
                factors = self.refine_factors if t == L - 1 else self.growth_factors
                yield from self._refinements(t, factors)
        else:
            yield Stage("end_to_end", L - 1, self._params_up_to(L - 1), self.learning_rate,
                        self.max_steps, 0.0 if self.curriculum else 1.0)
            yield from self._refinements(L - 1)

    def _refinements(self, t: int, factors=None) -> Iterator[Stage]:
        factors = self.refine_factors if factors is None else factors
        k = len(factors)
        for i, factor in enumerate(factors):
            w = (i / (k - 1) if k > 1 else 1.0) if self.curriculum else 1.0
            yield Stage("refine", t, self._params_up_to(t), self.learning_rate * factor,
                        self.max_steps, w)

    def _params_up_to(self, t: int) -> list[nn.Parameter]:
        seen, params = set(), []
        for s in range(t + 1):
            for p in self.module.layer_parameters(s):
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    # ------------------------------------------------------------------ stage
    def _fit_stage(self, stage: Stage) -> bool:
        """Train one stage to early stopping; return ``False`` when training must end."""
        self._stage, self._steps = stage, 0
        self._calibrate_for(stage)
        self.module.n_active = stage.layer + 1
        trained = {id(p) for p in stage.params}
        for p in self.module.parameters():  # frozen layers build no graph: cheaper steps
            p.requires_grad_(id(p) in trained)
        self._lr = stage.lr
        optimizer, scheduler = self._new_optimizer(stage)
        self._best_state = self._snapshot()
        self._best_db = start_db = self._validate_db()
        if not math.isfinite(self._best_db):  # a non-finite start: any finite value improves
            self._best_db = math.inf
        self._losses: list[float] = []
        self._since_check: list[float] = []
        stop = "callback" if self._checked(start_db) else None
        bad_checks, recoveries = 0, 0
        while stop is None and self._steps < stage.max_steps:
            Y, X, op = self.batches()
            loss = self._guarded_step(optimizer, Y, X, op, stage)
            self._steps += 1
            self._total_steps += 1
            self._progress.update(1)
            val_db = None
            if math.isfinite(loss):
                self._losses.append(loss)
                self._since_check.append(loss)
                if scheduler is not None and not on_plateau(scheduler):
                    scheduler.step()
                if self._steps % self.eval_every == 0 or self._steps == stage.max_steps:
                    val_db = self._validate_db()
            if not math.isfinite(loss) or (val_db is not None and not math.isfinite(val_db)):
                recoveries += 1
                self.n_faults_ += 1
                self._restore(self._best_state)
                if recoveries > self.max_recoveries:
                    self.gave_up_, stop = True, "fault"
                    break
                self._lr = current_lr(optimizer) * 0.1
                optimizer, scheduler = self._new_optimizer(stage)
                continue
            if val_db is None:
                continue
            if scheduler is not None and on_plateau(scheduler):
                scheduler.step(val_db)
            if val_db < self._best_db - self.tol:
                self._best_db, self._best_state, bad_checks = val_db, self._snapshot(), 0
                self.n_improvements_ += 1
            else:
                bad_checks += 1
            if self._checked(val_db):
                stop = "callback"
            elif bad_checks >= self.n_iter_no_change:
                stop = "no_change"
        stop = stop or "max_steps"
        self._progress.update(stage.max_steps - self._steps)
        self._restore(self._best_state)
        self._end_stage(stage, stop)
        if stop == "callback":
            self.stopped_by_callback_ = True
        return stop not in ("fault", "callback")

    def _checked(self, val_db: float) -> bool:
        """Record a validation check, show it, run the callbacks; ``True``: stop training."""
        recent = self._since_check
        self._since_check = []
        self.history_.append({
            "step": self._step0 + self._total_steps, "stage": self._stage.name,
            "stage_index": self._stage_index(),
            "layer": self._stage.layer + 1, "stage_step": self._steps,
            "train_loss": float(np.mean(recent)) if recent else float("nan"),
            "val_nmse_db": float(val_db), "best_val_nmse_db": float(self._best_db),
            "learning_rate": current_lr(self._optimizer),
        })
        self._progress.describe(self._stage, val_db, self._best_db)
        stop = False
        for callback in self.callbacks:
            stop = bool(callback(self, self.history_)) or stop
        return stop

    def _stage_index(self) -> int:
        """The running stage's index, counted over every fit of a warm-started history."""
        return self._index0 + len(self.stages_) - self._n_stages0

    def _calibrate_for(self, stage: Stage) -> None:
        """Calibrate the layers that ``stage`` trains for the first time (new layers only)."""
        if not (self.calibrate and getattr(self.module, "calibrates", False)):
            return
        if stage.name == "layer":
            layers = [stage.layer] if stage.layer >= self._start_layer else []
        elif stage.name == "end_to_end":
            layers = list(range(self._start_layer, stage.layer + 1))
        else:
            return
        if not layers:
            return
        Y, X, op = self.batches(self.calibration_samples)
        n = self.calibration_samples  # whole batches were drawn: keep exactly n samples
        if Y.shape[0] > n:
            Y, X = Y[:n], X[:n]
            op = op.take(slice(0, n)) if op.per_sample else op
        self.module.eval()
        for t in layers:
            record = self.module.calibrate_layer(t, Y, X, op)
            if record is not None:
                self.calibration_.append(record)

    def _guarded_step(self, optimizer, Y: Tensor, X: Tensor, op, stage: Stage) -> float:
        """:meth:`_train_step`, with out-of-memory errors turned into a clear message."""
        try:
            return self._train_step(optimizer, Y, X, op, stage)
        except torch.cuda.OutOfMemoryError as exc:
            bs = getattr(self.batches, "batch_size", Y.shape[0])
            raise torch.cuda.OutOfMemoryError(
                f"Out of memory on {Y.device} while training with batch_size={bs} "
                f"({self.module.n_active} active layers). Lower batch_size (e.g. "
                f"batch_size={max(1, bs // 2)}) or train on the CPU (device='cpu')."
            ) from exc

    # ------------------------------------------------------------------ step
    def _train_step(self, optimizer, Y: Tensor, X: Tensor, op, stage: Stage) -> float:
        """One optimiser step; returns the loss, or NaN (and takes no step) when not finite."""
        self.module.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self.module(Y, op), X, stage)
        if not torch.isfinite(loss):
            return float("nan")
        loss.backward()
        for p in stage.params:
            if p.grad is not None and not torch.isfinite(p.grad).all():
                return float("nan")
        optimizer.step()
        return float(loss.detach())

    def _loss(self, outputs: list[Tensor], X: Tensor, stage: Stage) -> Tensor:
        """``(1 − w) · mean_l loss_l + w · loss_last`` with ``w = stage.final_weight``."""
        w = stage.final_weight
        used = outputs[-1:] if w >= 1.0 else outputs
        if self.loss is None:
            per_layer = layer_nmse(used, X)
        else:
            per_layer = torch.stack([torch.as_tensor(self.loss(x, X)).reshape(()) for x in used])
        if self.log_loss:
            per_layer = per_layer.log()
        if w >= 1.0:
            return per_layer[0]
        return (1.0 - w) * per_layer.mean() + w * per_layer[-1]

    def _make_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """A fresh optimiser over ``params`` (overridable)."""
        return self.optimizer(params, lr=lr)

    def _new_optimizer(self, stage: Stage):
        """The stage's optimiser (resuming saved per-parameter state once) and scheduler."""
        optimizer = self._make_optimizer(stage.params, self._lr)
        cls = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
        if self._saved_state and cls == self._saved_class:
            for p in stage.params:
                state = self._saved_state.get(self._names.get(id(p)))
                if state is None or id(p) in self._loaded:
                    continue
                self._loaded.add(id(p))
                optimizer.state[p] = {
                    k: (v.to(device=p.device, dtype=p.dtype).clone()
                        if isinstance(v, Tensor) and v.shape == p.shape
                        else v.clone() if isinstance(v, Tensor) else v)
                    for k, v in state.items()}
        self._optimizer = optimizer
        scheduler = self.lr_scheduler(optimizer) if self.lr_scheduler is not None else None
        return optimizer, scheduler

    # ------------------------------------------------------------------ helpers
    def _validate_db(self) -> float:
        """NMSE (dB) of the last active layer on the validation pairs."""
        Yv, Xv, opv = self.validation
        self.module.eval()
        err = 0.0
        with torch.no_grad():
            for start in range(0, Yv.shape[0], self.eval_batch_size):
                sl = slice(start, start + self.eval_batch_size)
                est = self.module(Yv[sl], opv.take(sl))[-1]
                err += float(((est - Xv[sl]).abs() ** 2).sum())
        ref = max(float((Xv.abs() ** 2).sum()), 1e-300)
        return 10.0 * math.log10(err / ref) if math.isfinite(err) and err > 0 else (
            -300.0 if err == 0 else float("nan"))

    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def _restore(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state)

    def _end_stage(self, stage: Stage, stop: str) -> None:
        """Record the stage, keep its optimiser state, report it."""
        recent = self._losses[-self.eval_every:]
        record = {
            "stage": stage.name, "stage_index": self._stage_index(), "layer": stage.layer + 1,
            "steps": self._steps,
            "train_loss": float(np.mean(recent)) if recent else float("nan"),
            "val_nmse_db": self._best_db, "learning_rate": current_lr(self._optimizer, self._lr),
            "stop": stop,
        }
        self.stages_.append(record)
        if self._optimizer is not None:
            cls = type(self._optimizer)
            if self.optimizer_state_["optimizer"] != f"{cls.__module__}.{cls.__qualname__}":
                self.optimizer_state_ = {"optimizer": f"{cls.__module__}.{cls.__qualname__}",
                                         "state": {}}
            for p in stage.params:
                state = self._optimizer.state.get(p)
                if state and id(p) in self._names:
                    self.optimizer_state_["state"][self._names[id(p)]] = state_to_cpu(state)
        self._progress.stage_done(record)

    def _warn(self) -> None:
        name = type(self.estimator).__name__ if self.estimator is not None else "Trainer"
        if self.gave_up_:
            warn_user(
                f"{name}: training diverged (non-finite loss) {self.n_faults_} times and did not "
                f"recover even at learning rate {self._lr:.3g}; the fit ended early with the best "
                f"finite model (validation NMSE {self._best_db:.2f} dB). Lower learning_rate.",
                ConvergenceWarning)
        elif self.n_faults_:
            warn_user(
                f"{name}: training hit a non-finite loss {self.n_faults_} time(s); each time the "
                "network was rolled back to its last good checkpoint and the learning rate "
                "divided by 10. Consider a lower learning_rate.", ConvergenceWarning)
        if (self._fresh and self.n_improvements_ == 0 and not self.interrupted_
                and not self.stopped_by_callback_):
            lr = self.learning_rate
            warn_user(
                f"{name}: training made no progress: no stage improved the validation NMSE by "
                f"tol={self.tol:g} dB, so the fitted network is its untrained initialisation. "
                f"The learning rate ({lr:g}) is probably too large: lower learning_rate (e.g. to "
                f"{lr / 10:g}); if it is already small, give training more steps.",
                ConvergenceWarning)
        if self.interrupted_:
            warn_user(
                f"{name}: training interrupted (KeyboardInterrupt): the network keeps the best "
                f"weights so far (stage {self._stage.name!r}, layer {self._stage.layer + 1}, "
                f"validation NMSE {self._best_db:.2f} dB; layers not yet trained keep their "
                "initial values) and is usable; the interrupt is re-raised.", UserWarning)
