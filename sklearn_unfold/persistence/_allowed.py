"""What a model file may name: the estimators, data classes and callables :func:`load` rebuilds.

Everything a file names is looked up here, in explicit tables; nothing is imported by a name the
file chose. A constructor parameter or fitted attribute that holds any other callable is refused
by ``save`` (use pickle or joblib for it).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch
from sklearn.base import BaseEstimator
from torch import nn

_OPTIM, _SCHED, _NN, _FUNCTIONAL = ("torch.optim", "torch.optim.lr_scheduler", "torch.nn",
                                    "torch.nn.functional")


def estimator_classes() -> dict[str, type]:
    """The estimators exported by :mod:`sklearn_unfold`, by name."""
    import sklearn_unfold

    found = {name: getattr(sklearn_unfold, name, None) for name in sklearn_unfold.__all__}
    return {k: v for k, v in found.items() if isinstance(v, type) and issubclass(v, BaseEstimator)}


#: Signal priors of optional or newer modules: ``(module, class name)``, allowed (with their
#: subclasses) when the module defines them.
_OPTIONAL_PRIORS = (("sklearn_unfold.channels", "ClusteredChannelPrior"),)


def data_bases() -> tuple[type, ...]:
    """Bases of the package's data objects (operators, ensembles, priors) stored by attributes."""
    from ..datasets import BernoulliGaussianPrior
    from ..operators import LinearOperator
    from ..operators.ensembles import OperatorEnsemble

    bases: list[type] = [LinearOperator, OperatorEnsemble, BernoulliGaussianPrior]
    for module_name, name in _OPTIONAL_PRIORS:
        cls = getattr(_data_module(module_name), name, None)
        if isinstance(cls, type) and cls.__module__ == module_name:
            bases.append(cls)
    return tuple(bases)


def _loss_base() -> type:
    return nn.modules.loss._Loss


def _public_classes(module, base: type) -> dict[str, type]:
    return {name: obj for name in dir(module) if not name.startswith("_")
            and isinstance(obj := getattr(module, name), type) and issubclass(obj, base)
            and obj is not base}


def allowed_classes() -> dict[str, type]:
    """``"module:Name"`` of the classes a parameter may hold: optimisers, schedulers, losses."""
    sched_base = getattr(torch.optim.lr_scheduler, "LRScheduler",
                         torch.optim.lr_scheduler._LRScheduler)
    out = {f"{_OPTIM}:{k}": v for k, v in _public_classes(torch.optim, torch.optim.Optimizer).items()}
    out.update({f"{_SCHED}:{k}": v for k, v in _public_classes(torch.optim.lr_scheduler,
                                                                 sched_base).items()})
    out[f"{_SCHED}:ReduceLROnPlateau"] = torch.optim.lr_scheduler.ReduceLROnPlateau
    out.update({f"{_NN}:{k}": v for k, v in _public_classes(nn, _loss_base()).items()})
    return out


def allowed_functions() -> dict[str, Any]:
    """``"module:name"`` of the functions a file may name: the package's denoisers and the
    functional losses of ``torch.nn.functional``."""
    from .. import denoisers

    out = {}
    for name in getattr(denoisers, "__all__", dir(denoisers)):
        fn = getattr(denoisers, name, None)
        if (not name.startswith("_") and callable(fn) and not isinstance(fn, type)
                and str(getattr(fn, "__module__", "")).startswith(denoisers.__name__)):
            out[f"sklearn_unfold.denoisers:{name}"] = fn
    functional = torch.nn.functional
    for name in dir(functional):
        if name.endswith("_loss") and not name.startswith("_") and callable(fn := getattr(functional, name)):
            out[f"{_FUNCTIONAL}:{name}"] = fn
    return out


def denoiser_classes() -> dict[str, type]:
    """``"sklearn_unfold.denoisers:Name"`` of the denoiser modules a file may hold: stored as
    their constructor settings and weights, rebuilt by ``cls(**settings)``."""
    from .. import denoisers

    out = {}
    for name in denoisers.__all__:
        cls = getattr(denoisers, name, None)
        if (isinstance(cls, type) and issubclass(cls, denoisers.Denoiser)
                and cls not in (denoisers.Denoiser, denoisers.Shrinkage,
                                denoisers.FunctionDenoiser)):
            out[f"sklearn_unfold.denoisers:{name}"] = cls
    return out


def denoiser_class_ref(obj) -> str | None:
    for ref, cls in denoiser_classes().items():
        if type(obj) is cls:
            return ref
    return None


def resolve_denoiser_class(ref) -> type:
    cls = denoiser_classes().get(ref) if isinstance(ref, str) else None
    if cls is None:
        raise ValueError(f"refusing to load a denoiser of class {str(ref)[:200]!r}: only "
                         f"{sorted(denoiser_classes())} can be loaded")
    return cls


def callable_ref(obj) -> str | None:
    """The reference of an allowed class or function, else None."""
    for ref, value in (allowed_classes() | allowed_functions()).items():
        if value is obj:
            return ref
    return None


def loss_class_ref(obj) -> str | None:
    """``"torch.nn:Name"`` when ``obj`` is an instance of one of torch.nn's loss modules."""
    cls = type(obj)
    ref = f"{_NN}:{cls.__name__}"
    return ref if allowed_classes().get(ref) is cls else None


def resolve_callable(ref, *, kind: str):
    table = allowed_classes() if kind == "class" else allowed_functions()
    value = table.get(ref) if isinstance(ref, str) else None
    if value is None:
        what = ("torch.optim optimisers, torch.optim.lr_scheduler schedulers and torch.nn losses"
                if kind == "class" else
                "the denoisers of sklearn_unfold.denoisers and the losses of torch.nn.functional")
        raise ValueError(f"refusing to load {kind} {str(ref)[:200]!r}: only {what} can be loaded")
    return value


def resolve_loss(ref) -> type:
    cls = resolve_callable(ref, kind="class")
    if not issubclass(cls, _loss_base()):
        raise ValueError(f"refusing to load a loss of class {ref!r}: it is not a torch.nn loss")
    return cls


def spec_classes() -> dict[str, type]:
    """Parameter objects of the training engine (an optimiser, a schedule, ...) that follow
    scikit-learn's parameter protocol: stored as their ``get_params`` and rebuilt by ``cls(**params)``."""
    module = sys.modules.get("sklearn_unfold.training")
    out = {}
    for name in getattr(module, "__all__", ()):
        cls = getattr(module, name, None)
        if (isinstance(cls, type) and hasattr(cls, "get_params") and hasattr(cls, "set_params")
                and not issubclass(cls, (BaseEstimator, nn.Module))):
            out[f"sklearn_unfold.training:{name}"] = cls
    return out


def spec_class_ref(obj) -> str | None:
    for ref, cls in spec_classes().items():
        if type(obj) is cls:
            return ref
    return None


def resolve_spec_class(ref) -> type:
    cls = spec_classes().get(ref) if isinstance(ref, str) else None
    if cls is None:
        raise ValueError(f"refusing to load a parameter object of class {str(ref)[:200]!r}: only "
                         f"{sorted(spec_classes())} can be loaded")
    return cls


#: Modules of the package that define (or may define) operators, ensembles or priors. A file that
#: names a class of one of them imports it first when the package has not yet (a module that
#: ``import sklearn_unfold`` does not import eagerly still loads); no other module is ever
#: imported for a file. Names of modules that do not exist are refused like any unknown class.
DATA_MODULES = (
    "sklearn_unfold.datasets",
    "sklearn_unfold.channels",
    "sklearn_unfold.operators",
    "sklearn_unfold.operators._base",
    "sklearn_unfold.operators.dense",
    "sklearn_unfold.operators.ensembles",
    "sklearn_unfold.operators.ofdm",
    "sklearn_unfold.operators.transforms",
)


def _data_module(name: str):
    """The module ``name`` when it is one of :data:`DATA_MODULES` (imported if need be), else
    None; never imports anything else."""
    if name not in DATA_MODULES:
        return None
    if name not in sys.modules:
        try:
            importlib.import_module(name)
        except ImportError:
            return None
    return sys.modules.get(name)


def data_class_ref(obj) -> str | None:
    cls = type(obj)
    if not isinstance(obj, data_bases()) or isinstance(obj, nn.Module):
        return None
    if not cls.__module__.startswith("sklearn_unfold.") or "<" in cls.__qualname__:
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_data_class(ref) -> type:
    """An operator, ensemble or prior class of the package from ``"module:QualName"``; the module
    must already be imported (importing sklearn_unfold imports them all) or be one of the
    package's data modules (:data:`DATA_MODULES`), which is imported then."""
    module_name, _, qualname = str(ref).partition(":")
    obj: Any = None
    if module_name.startswith("sklearn_unfold."):
        obj = sys.modules.get(module_name) or _data_module(module_name)
    for part in qualname.split(".") if obj is not None and qualname else []:
        obj = getattr(obj, part, None)
    ok = (isinstance(obj, type) and obj.__module__ == module_name and obj.__qualname__ == qualname
          and issubclass(obj, data_bases()) and not issubclass(obj, nn.Module))
    if not ok:
        raise ValueError(f"refusing to load an object of class {str(ref)[:200]!r}: only the linear "
                         "operators, operator ensembles and signal priors of sklearn_unfold can be "
                         "loaded")
    return obj
