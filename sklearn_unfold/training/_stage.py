"""Pieces of a training run: the per-layer NMSE loss, a stage, small helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["Stage", "layer_nmse"]


# ----------------------------------------------------------------------------- losses
def layer_nmse(outputs: Sequence[Tensor], X: Tensor) -> Tensor:
    """Per-layer NMSE ``‖X̂_l − X‖²_F / ‖X‖²_F`` of a batch, as a 1-D tensor over layers."""
    denom = _energy(X).clamp_min(torch.finfo(X.real.dtype).tiny)
    return torch.stack([_energy(x - X) for x in outputs]) / denom


def _energy(t: Tensor) -> Tensor:
    """``Σ|t|²`` (complex tensors: the squared moduli)."""
    return (t.real.square() + t.imag.square()).sum() if t.is_complex() else (t * t).sum()


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


def state_to_cpu(state: dict) -> dict:
    return {k: (v.detach().to("cpu").clone() if isinstance(v, Tensor) else v)
            for k, v in state.items()}


def current_lr(optimizer, default: float = float("nan")) -> float:
    if optimizer is None:
        return default
    return float(optimizer.param_groups[0]["lr"])


def on_plateau(scheduler) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
