"""Small parameter objects for the optimiser and the learning-rate schedule.

They follow scikit-learn's parameter protocol (``get_params`` / ``set_params``, constructor
arguments stored as given), so that a learned estimator's ``optimizer`` and ``lr_schedule``
parameters are tuned like nested estimators: ``set_params(optimizer__lr=1e-2)``,
``GridSearchCV(est, {"optimizer__lr": [1e-3, 3e-3]})``, and :func:`sklearn.base.clone` copies
them. Both are callables, which is what the training engine uses them for.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["LRSchedule", "Optimizer"]


def _qualname(obj) -> str:
    module = getattr(obj, "__module__", "")
    module = "torch.optim" if module.startswith("torch.optim.") and "lr_scheduler" not in module \
        else module
    return f"{module}.{getattr(obj, '__qualname__', repr(obj))}"


def _check_kwargs(owner: str, target, kwargs: dict, skip: tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming the keyword arguments ``target`` does not take."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: trust the caller
        return
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = [n for n in sig.parameters if n not in skip]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"{owner}: {_qualname(target)} takes no argument(s) {unknown}; its keyword arguments "
            f"are {accepted}.")


class Optimizer:
    """A torch optimiser class and its keyword arguments, as an estimator parameter.

    ``Optimizer(torch.optim.Adam, lr=1e-3, weight_decay=1e-5)`` builds
    ``torch.optim.Adam(params, lr=..., weight_decay=1e-5)`` for every training stage.

    Parameters
    ----------
    optimizer_class : type, default=torch.optim.Adam
        A :class:`torch.optim.Optimizer` subclass.
    **kwargs
        Its keyword arguments. ``lr``, when given, is the rate of the main training stages and
        replaces the estimator's ``learning_rate`` (the refinement stages use it times the
        schedule's factors).

    Examples
    --------
    >>> import torch
    >>> from sklearn_unfold.training import Optimizer
    >>> opt = Optimizer(torch.optim.Adam, lr=1e-3)
    >>> opt.set_params(lr=3e-3).get_params()["lr"]
    0.003
    """

    def __init__(self, optimizer_class: type = torch.optim.Adam, **kwargs: Any):
        if not (isinstance(optimizer_class, type)
                and issubclass(optimizer_class, torch.optim.Optimizer)):
            raise TypeError(f"Optimizer: optimizer_class must be a torch.optim.Optimizer "
                            f"subclass; got {optimizer_class!r}.")
        _check_kwargs("Optimizer", optimizer_class, kwargs, skip=("self", "params"))
        self.optimizer_class = optimizer_class
        self.kwargs = kwargs

    @property
    def lr(self) -> float | None:
        """The ``lr`` keyword argument, or ``None`` when not given."""
        return self.kwargs.get("lr")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments (scikit-learn's protocol)."""
        return {"optimizer_class": self.optimizer_class, **self.kwargs}

    def set_params(self, **params: Any) -> Optimizer:
        """Set the optimiser class or keyword arguments; unknown names raise a ``ValueError``."""
        cls = params.pop("optimizer_class", self.optimizer_class)
        kwargs = {**self.kwargs, **params}
        type(self)(cls, **kwargs)  # validate before changing anything
        self.optimizer_class, self.kwargs = cls, kwargs
        return self

    def __call__(self, params: Sequence[torch.nn.Parameter], lr: float | None = None
                 ) -> torch.optim.Optimizer:
        """Build the optimiser over ``params``; ``lr`` replaces the stored rate when given."""
        kwargs = dict(self.kwargs)
        if lr is not None:
            kwargs["lr"] = lr
        return self.optimizer_class(params, **kwargs)

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"Optimizer({_qualname(self.optimizer_class)}{args})"


class LRSchedule:
    """The learning-rate schedule of a training run, as an estimator parameter.

    Training runs in stages (see :class:`~sklearn_unfold.training.Trainer`): a main stage at the
    base rate, then refinements at the base rate times ``refine_factors``. Within a stage, an
    optional :mod:`torch.optim.lr_scheduler` class is stepped after every optimiser step
    (:class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` after every validation check, on the
    validation NMSE); it starts afresh with every stage.

    Parameters
    ----------
    refine_factors : tuple of float, default=(0.5, 0.1)
        Rate multipliers of the refinement stages after the last layer (layer-wise) or after
        the end-to-end stage.
    growth_factors : tuple of float or None, default=(0.5,)
        Layer-wise training: multipliers of the refinements after each intermediate depth
        (``None``: as ``refine_factors``; ``()``: none).
    scheduler : type or None, default=None
        A learning-rate scheduler class, e.g. ``torch.optim.lr_scheduler.StepLR``.
    **scheduler_kwargs
        Its keyword arguments (``step_size=50, gamma=0.5``).

    Examples
    --------
    >>> import torch
    >>> from sklearn_unfold.training import LRSchedule
    >>> LRSchedule(refine_factors=(0.5,), scheduler=torch.optim.lr_scheduler.StepLR,
    ...            step_size=50, gamma=0.5).get_params()["step_size"]
    50
    """

    def __init__(self, refine_factors: Sequence[float] = (0.5, 0.1),
                 growth_factors: Sequence[float] | None = (0.5,),
                 scheduler: type | None = None, **scheduler_kwargs: Any):
        _check_factors("refine_factors", refine_factors)
        if growth_factors is not None:
            _check_factors("growth_factors", growth_factors)
        if scheduler is not None:
            if not callable(scheduler):
                raise TypeError(f"LRSchedule: scheduler must be a torch.optim.lr_scheduler "
                                f"class (or None); got {scheduler!r}.")
            _check_kwargs("LRSchedule", scheduler, scheduler_kwargs, skip=("self", "optimizer"))
        elif scheduler_kwargs:
            raise ValueError(f"LRSchedule: scheduler arguments {sorted(scheduler_kwargs)} were "
                             "given without a scheduler.")
        self.refine_factors = refine_factors
        self.growth_factors = growth_factors
        self.scheduler = scheduler
        self.scheduler_kwargs = scheduler_kwargs

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments (scikit-learn's protocol)."""
        return {"refine_factors": self.refine_factors, "growth_factors": self.growth_factors,
                "scheduler": self.scheduler, **self.scheduler_kwargs}

    def set_params(self, **params: Any) -> LRSchedule:
        """Set factors, the scheduler class or its arguments (validated first)."""
        merged = {**self.get_params(), **params}
        new = type(self)(**merged)
        self.__dict__.update(new.__dict__)
        return self

    def __call__(self, optimizer: torch.optim.Optimizer):
        """The within-stage scheduler for ``optimizer``, or ``None``."""
        if self.scheduler is None:
            return None
        return self.scheduler(optimizer, **self.scheduler_kwargs)

    def __repr__(self) -> str:
        parts = [f"refine_factors={self.refine_factors!r}",
                 f"growth_factors={self.growth_factors!r}"]
        if self.scheduler is not None:
            parts.append(f"scheduler={_qualname(self.scheduler)}")
            parts += [f"{k}={v!r}" for k, v in self.scheduler_kwargs.items()]
        return f"LRSchedule({', '.join(parts)})"


def _check_factors(name: str, factors) -> None:
    try:
        values = [float(f) for f in factors]
    except (TypeError, ValueError):
        raise TypeError(f"LRSchedule: {name} must be a sequence of positive numbers; got "
                        f"{factors!r}.") from None
    if any(not (v > 0) for v in values):
        raise ValueError(f"LRSchedule: {name} must be positive; got {factors!r}.")


def resolve_optimizer(optimizer) -> Callable[..., torch.optim.Optimizer]:
    """``None`` → Adam; an optimiser class → :class:`Optimizer` of it; else as given."""
    if optimizer is None:
        return Optimizer(torch.optim.Adam)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return Optimizer(optimizer)
    if not callable(optimizer):
        raise TypeError(f"optimizer must be an Optimizer(...), a torch.optim.Optimizer subclass "
                        f"or a callable (params, lr) -> optimizer; got {optimizer!r}.")
    return optimizer
