"""The training engine shared by every unrolled network.

It knows modules, losses, optimisers and batches, not any algorithm: a network only has to
implement the :class:`~sklearn_unfold.networks.UnrolledNetwork` interface (``forward(Y, op)``
returns every layer's estimate, ``layer_parameters(t)`` names what layer ``t`` adds,
``n_active`` sets how many layers run). Of the measurement model it knows only "apply the
operator": a batch is ``(Y, X, op)``, with ``op`` one operator shared by the batch or one per
sample (fresh draws from an operator ensemble, so that the learned parameters serve every
operator of the family rather than one matrix).

The recipe (Borgerding, Schniter and Rangan, 2017; Chen et al., 2018):

* **layer-wise greedy** (``schedule="layerwise"``): for ``t = 0, 1, …``, switch layer ``t`` on,
  train its new parameters alone at ``learning_rate`` on the last layer's loss, then refine all
  layers so far at ``learning_rate × refine_factors`` (Borgerding: 0.5, 0.1, 0.01);
* **end to end** (``schedule="end_to_end"``): train all layers together at ``learning_rate``,
  then the same refinements;
* **loss curriculum**: the loss is ``(1 − w) · mean_l NMSE_l + w · NMSE_last`` over the layers
  that run, with ``w`` going from 0 (mean of the per-layer losses) to 1 (final layer) across the
  refinement stages; ``curriculum=False`` keeps ``w = 1``;
* **calibration**: when a layer joins (and, end to end, for every layer before training),
  a network that supports it fits that layer's scalars to a few training batches first
  (:meth:`~sklearn_unfold.networks.UnrolledNetwork.calibrate_layer`; learned ISTA fits its
  step and threshold); ``calibrate=False`` skips it;
* every stage is stopped early by the validation NMSE of the last active layer (checked every
  ``eval_every`` steps, ``n_iter_no_change`` checks without an improvement of ``tol`` dB) and
  ends on its best validation checkpoint.

Faults: a non-finite loss, gradient or validation NMSE rolls the network back to the stage's
last good checkpoint, divides the learning rate by 10 and goes on; after ``max_recoveries``
failures in a stage training ends with the best finite model. ``KeyboardInterrupt`` ends
training on the best checkpoint. Both warn. A CUDA out-of-memory error is re-raised with the
batch size to lower.

The loop is a handful of small methods in the style of skorch — :meth:`Trainer.fit` →
``Trainer._fit_stage`` → ``Trainer._train_step`` — so a subclass can override one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor, nn
from tqdm.auto import tqdm

from .batches import PairBatches, PriorBatches, SyntheticBatches
from .operators import LinearOperator

__all__ = ["PairBatches", "PriorBatches", "Stage", "SyntheticBatches", "Trainer", "layer_nmse"]


# ----------------------------------------------------------------------------- losses
def layer_nmse(outputs: Sequence[Tensor], X: Tensor) -> Tensor:
    """Per-layer NMSE ``‖X̂_l − X‖²_F / ‖X‖²_F`` of a batch, as a 1-D tensor over layers."""
    denom = (X * X).sum().clamp_min(torch.finfo(X.dtype).tiny)
    return torch.stack([((x - X) ** 2).sum() for x in outputs]) / denom


@dataclass
class Stage:
    """One training stage: which parameters, at which rate, on which loss, for how long.

    ``layer`` is the index of the deepest active layer (layers ``0 … layer`` run);
    ``final_weight`` is the curriculum weight ``w`` of the last layer's loss.
    """

    name: str
    layer: int
    params: list[nn.Parameter]
    lr: float
    max_steps: int
    final_weight: float = 1.0


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Train an :class:`~sklearn_unfold.networks.UnrolledNetwork` with the recipe above.

    Parameters
    ----------
    module : UnrolledNetwork
        Already initialised (analytically or otherwise) and on its device.
    schedule : {"layerwise", "end_to_end"}, default="layerwise"
    curriculum : bool, default=True
        Anneal the loss from the mean of the per-layer NMSEs to the final layer's NMSE.
    learning_rate : float, default=1e-3
        Adam's rate for a new layer (or the whole network, end to end).
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
        Show a tqdm progress bar with the stage, the layer and the validation NMSE in dB.
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
    calibration_samples : int, default=1024
        Training samples drawn for that fit (whole batches, so at least this many).

    Attributes
    ----------
    history_ : list of dict
        One record per stage: ``stage``, ``layer`` (the network's active depth, from 1),
        ``steps``, ``train_loss`` (mean loss over the stage's last ``eval_every`` steps),
        ``val_nmse_db`` (the best, which the stage ends on), ``learning_rate`` (final),
        ``stop`` (``"no_change"``, ``"max_steps"``, ``"fault"`` or ``"interrupted"``).
    n_faults_ : int
        Non-finite events that were rolled back.
    interrupted_ : bool
        Whether a ``KeyboardInterrupt`` ended training.
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
                 eval_batch_size: int = 1024, growth_factors=None, log_loss=False,
                 calibrate: bool = True, calibration_samples: int = 1024):
        if schedule not in ("layerwise", "end_to_end"):
            raise ValueError(f"schedule must be 'layerwise' or 'end_to_end'; got {schedule!r}.")
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
        self._start_layer = 0
        self.growth_factors = (self.refine_factors if growth_factors is None
                               else tuple(float(f) for f in growth_factors))

    # ------------------------------------------------------------------ public
    def fit(self, batches, validation: tuple[Tensor, Tensor, LinearOperator], *,
            start_layer: int = 0,
            history: list | None = None) -> Trainer:
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
        history : list, optional
            Records are appended to it (a warm start continues the history).

        Returns
        -------
        self
        """
        self.batches, self.validation = batches, validation
        self.history_ = [] if history is None else history
        self.n_faults_, self.interrupted_, self.gave_up_ = 0, False, False
        self.calibration_: list[dict] = []
        self._start_layer = start_layer
        stages = list(self._plan(start_layer))
        self._stage, self._steps, self._lr, self._losses = stages[0], 0, stages[0].lr, []
        self._best_state, self._best_db = self._snapshot(), float("nan")
        self._bar = tqdm(total=sum(s.max_steps for s in stages), disable=not self.verbose,
                         leave=bool(self.verbose), dynamic_ncols=True)
        try:
            for stage in stages:
                if not self._fit_stage(stage):
                    break
        except KeyboardInterrupt:
            self.interrupted_ = True
            self._restore(self._best_state)
            self._record(self._stage, self._steps, "interrupted")
        finally:
            self._bar.close()
            self.module.n_active = self.module.n_layers
            for p in self.module.parameters():
                p.requires_grad_(True)
            self.module.eval()
        self._warn()
        return self

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
        optimizer = self._make_optimizer(stage.params, self._lr)
        self._best_state = self._snapshot()
        self._best_db = self._validate_db()
        if not math.isfinite(self._best_db):  # a non-finite start: any finite value improves
            self._best_db = math.inf
        self._losses: list[float] = []
        self._show()
        bad_checks, recoveries, stop = 0, 0, "max_steps"
        while self._steps < stage.max_steps:
            Y, X, op = self.batches()
            loss = self._guarded_step(optimizer, Y, X, op, stage)
            self._steps += 1
            self._bar.update(1)
            val_db = None
            if math.isfinite(loss):
                self._losses.append(loss)
                if self._steps % self.eval_every == 0 or self._steps == stage.max_steps:
                    val_db = self._validate_db()
            if not math.isfinite(loss) or (val_db is not None and not math.isfinite(val_db)):
                recoveries += 1
                self.n_faults_ += 1
                self._restore(self._best_state)
                if recoveries > self.max_recoveries:
                    self.gave_up_, stop = True, "fault"
                    break
                self._lr *= 0.1
                optimizer = self._make_optimizer(stage.params, self._lr)
                continue
            if val_db is None:
                continue
            if val_db < self._best_db - self.tol:
                self._best_db, self._best_state, bad_checks = val_db, self._snapshot(), 0
            else:
                bad_checks += 1
            self._show(val_db)
            if bad_checks >= self.n_iter_no_change:
                stop = "no_change"
                break
        self._bar.update(stage.max_steps - self._steps)
        self._restore(self._best_state)
        self._record(stage, self._steps, stop)
        return stop != "fault"

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
        """``(1 − w) · mean_l NMSE_l + w · NMSE_last`` with ``w = stage.final_weight``."""
        w = stage.final_weight
        if w >= 1.0:
            out = layer_nmse(outputs[-1:], X)[0]
            return out.log() if self.log_loss else out
        per_layer = layer_nmse(outputs, X)
        if self.log_loss:
            per_layer = per_layer.log()
        return (1.0 - w) * per_layer.mean() + w * per_layer[-1]

    def _make_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr)

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

    def _record(self, stage: Stage, steps: int, stop: str) -> None:
        recent = self._losses[-self.eval_every:]
        self.history_.append({
            "stage": stage.name, "layer": stage.layer + 1, "steps": steps,
            "train_loss": float(np.mean(recent)) if recent else float("nan"),
            "val_nmse_db": self._best_db, "learning_rate": self._lr, "stop": stop,
        })

    def _show(self, val_db: float | None = None) -> None:
        if self.verbose:
            stage = self._stage
            self._bar.set_description(
                f"{stage.name} layer {stage.layer + 1}/{self.module.n_layers}")
            shown = self._best_db if val_db is None else val_db
            self._bar.set_postfix_str(f"val NMSE {shown:.2f} dB (best {self._best_db:.2f})")

    def _warn(self) -> None:
        if self.gave_up_:
            warnings.warn(
                f"Training diverged (non-finite loss) {self.n_faults_} times and did not recover "
                f"even at learning rate {self._lr:.3g}; the fit ended early with the best finite "
                f"model (validation NMSE {self._best_db:.2f} dB). Lower learning_rate.",
                ConvergenceWarning, stacklevel=3)
        elif self.n_faults_:
            warnings.warn(
                f"Training hit a non-finite loss {self.n_faults_} time(s); each time the network "
                "was rolled back to its last good checkpoint and the learning rate divided by 10. "
                "Consider a lower learning_rate.", ConvergenceWarning, stacklevel=3)
        if self.interrupted_:
            warnings.warn(
                "Training interrupted (KeyboardInterrupt): the estimator keeps the best weights "
                f"so far (stage {self._stage.name!r}, layer {self._stage.layer + 1}, validation "
                f"NMSE {self._best_db:.2f} dB) and is usable; layers not yet trained keep their "
                "initial values.", UserWarning, stacklevel=3)
