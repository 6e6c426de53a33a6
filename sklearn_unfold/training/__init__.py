"""The training engine shared by every unrolled network.

It knows modules, losses, optimisers, learning-rate schedules, callbacks and batches, not any
algorithm: a network only has to implement the :class:`~sklearn_unfold.networks.UnrolledNetwork`
interface (``forward(Y, op)`` returns every layer's estimate, ``layer_parameters(t)`` names what
layer ``t`` adds, ``n_active`` sets how many layers run). Of the measurement model it knows only
"apply the operator": a batch is ``(Y, X, op)``, with ``op`` one operator shared by the batch or
one per sample (fresh draws from an operator ensemble, so that the learned parameters serve
every operator of the family rather than one matrix).

The recipe (Borgerding, Schniter and Rangan, 2017; Chen et al., 2018):

* **layer-wise greedy** (``schedule="layerwise"``): for ``t = 0, 1, …``, switch layer ``t`` on,
  train its new parameters alone at ``learning_rate`` on the last layer's loss, then refine all
  layers so far at ``learning_rate × refine_factors`` (Borgerding: 0.5, 0.1, 0.01);
* **end to end** (``schedule="end_to_end"``): train all layers together at ``learning_rate``,
  then the same refinements;
* **loss curriculum**: the loss is ``(1 − w) · mean_l loss_l + w · loss_last`` over the layers
  that run (``loss`` is the NMSE unless another is given), with ``w`` going from 0 (mean of the
  per-layer losses) to 1 (final layer) across the refinement stages; ``curriculum=False`` keeps
  ``w = 1``;
* **calibration**: when a layer joins (and, end to end, for every layer before training),
  a network that supports it fits that layer's scalars to a few training batches first
  (:meth:`~sklearn_unfold.networks.UnrolledNetwork.calibrate_layer`; learned ISTA fits its
  step and threshold); ``calibrate=False`` skips it;
* every stage is stopped early by the validation NMSE of the last active layer (checked every
  ``eval_every`` steps, ``n_iter_no_change`` checks without an improvement of ``tol`` dB) and
  ends on its best validation checkpoint.

A denoiser without an analytic starting point (a CNN) is first trained alone on noisy signals at
the noise levels the layers see (:func:`pretrain_denoiser`, after learned D-AMP), then unrolled.

Every validation check is a record of ``history_`` (a learning curve) and is handed to the
callbacks, which may stop training. The optimiser (:class:`Optimizer`) and the within-stage
learning-rate scheduler (:class:`LRSchedule`) are plug-ins.

Faults: a non-finite loss, gradient or validation NMSE rolls the network back to the stage's
last good checkpoint, divides the learning rate by 10 and goes on; after ``max_recoveries``
failures in a stage training ends with the best finite model. A ``KeyboardInterrupt`` ends
training on the best checkpoint and is then re-raised. Training that never improves on the
initial network warns. A CUDA out-of-memory error is re-raised with the batch size to lower.

The loop is a handful of small methods in the style of skorch — :meth:`Trainer.fit` →
``Trainer._fit_stage`` → ``Trainer._train_step`` — so a subclass can override one.
"""

from ..batches import PairBatches, PriorBatches, SyntheticBatches
from ._pretrain import denoising_loss, pretrain_denoiser
from ._specs import LRSchedule, Optimizer
from ._trainer import Stage, Trainer, layer_nmse

__all__ = ["LRSchedule", "Optimizer", "PairBatches", "PriorBatches", "Stage", "SyntheticBatches",
           "Trainer", "denoising_loss", "layer_nmse", "pretrain_denoiser"]
