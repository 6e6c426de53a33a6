"""Estimators in the file: constructor parameters, public fitted attributes, networks' weights.

An estimator is stored as ``get_params(deep=False)``, its public fitted attributes (names ending
in ``_``, not starting with ``_``) and a few facts about its fit under names of this format
(:data:`FIT_FACTS`); a torch network is stored as its ``state_dict`` and the plain settings of
its sub-modules. Loading constructs ``cls(**params)``, restores the attributes and facts,
rebuilds each network with the estimator's own ``_build_module`` and loads the weights into it;
private attributes are recomputed by the estimator's own code, never read from the file.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from . import _allowed
from ._codec import _PLAIN, TAG, ValueDecoder, ValueEncoder, fields

#: Plain values a sub-module's settings may hold (a complex one makes a format-3 file).
_SETTING = (*_PLAIN, complex)


def _get_target_1d(est):
    return bool(est._target_1d) if hasattr(est, "_target_1d") else None


def _get_n_signal(est):
    return int(est._n_signal_features()) if hasattr(est, "_n_signal") else None


def _get_n_iter(est):
    return int(est.n_iter_) if "_predict_stats" in vars(est) else None


def _set_n_iter(est, value: int) -> None:
    est._predict_stats = {"n_iter": int(value)}


#: Facts about a fit that the estimators keep privately, stored under names of this format:
#: ``name: (type, read from a fitted estimator or None, restore on a new one)``. When an
#: estimator renames its private attribute, only this table changes; files keep their meaning.
FIT_FACTS = {
    "target_1d": (bool, _get_target_1d, lambda est, v: setattr(est, "_target_1d", v)),
    "n_signal_features": (int, _get_n_signal, lambda est, v: setattr(est, "_n_signal", v)),
    "n_iter": (int, _get_n_iter, _set_n_iter),
}


def public_fitted(est) -> dict:
    params = est.get_params(deep=False)
    return {k: v for k, v in vars(est).items()
            if k.endswith("_") and not k.startswith("_") and k not in params}


class Encoder(ValueEncoder):
    def estimator(self, est, where: str) -> dict:
        name = type(est).__name__
        classes = _allowed.estimator_classes()
        if classes.get(name) is not type(est):
            raise TypeError(f"{where} is a {type(est).__qualname__}, not one of the estimators "
                            f"exported by sklearn_unfold ({sorted(classes)}).")
        facts = {k: getter(est) for k, (_, getter, _) in FIT_FACTS.items()}
        attributes = {}
        for key, value in public_fitted(est).items():
            here = f"{where}.{key}"
            network = (isinstance(value, nn.Module) and _allowed.loss_class_ref(value) is None
                       and _allowed.denoiser_class_ref(value) is None)
            if network and not hasattr(est, "_build_module"):
                raise TypeError(f"{here} is a torch module, which only a learned estimator can "
                                "rebuild on loading; use pickle or joblib for this model.")
            attributes[key] = self._network(value, here) if network else self.encode(value, here)
        return {TAG: "estimator", "class": name,
                "params": self.dict(est.get_params(deep=False), f"{where}.params"),
                "attributes": attributes,
                "fit_facts": {k: v for k, v in facts.items() if v is not None}}

    def module(self, module: nn.Module, where: str) -> dict:
        raise TypeError(f"{where}: a torch module can only be stored as a fitted attribute of a "
                        "learned estimator (which rebuilds it); use pickle or joblib for this model.")

    def _network(self, module: nn.Module, where: str) -> dict:
        settings = {}
        for name, sub in module.named_modules():
            plain = {k: v for k, v in vars(sub).items() if not k.startswith("_") and k != "training"
                     and (isinstance(v, _SETTING) or (isinstance(v, tuple)
                                                      and all(isinstance(x, _SETTING) for x in v)))}
            settings[name] = {"training": bool(sub.training), "values": self.dict(plain, where)}
        state = module.state_dict(keep_vars=False)
        return {TAG: "module", "state_dict": {k: self._tensor(v, f"{where}.{k}") for k, v in state.items()},
                "settings": settings}


class Decoder(ValueDecoder):
    def estimator(self, obj: dict, depth: int) -> BaseEstimator:
        fields(obj, ("class", "params", "attributes", "fit_facts"))
        classes = _allowed.estimator_classes()
        name = obj["class"]
        if not isinstance(name, str) or name not in classes:
            raise ValueError(f"refusing to load an estimator of class {str(name)[:80]!r}: only the "
                             f"estimators exported by sklearn_unfold can be loaded ({sorted(classes)})")
        params = self.decode(obj["params"], depth)
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise ValueError(f"the parameters of a {name} are not a table of names")
        try:
            est = classes[name](**params)
        except TypeError as exc:
            raise ValueError(f"the stored parameters do not fit {name}: {exc}") from None
        facts = obj["fit_facts"]
        if not isinstance(facts, dict):
            raise ValueError(f"the fit facts of a {name} are not a table")
        for key, value in facts.items():
            if key not in FIT_FACTS or type(value) is not FIT_FACTS[key][0]:
                raise ValueError(f"unknown fit fact {str(key)[:40]!r}={str(value)[:40]} of a {name}")
            FIT_FACTS[key][2](est, value)
        attributes = obj["attributes"]
        if not isinstance(attributes, dict) or TAG in attributes:
            raise ValueError(f"the fitted attributes of a {name} are not a table of names")
        modules = {}
        for key, value in attributes.items():
            if not key.endswith("_") or key.startswith("_"):
                raise ValueError(f"{key!r} is not the name of a public fitted attribute")
            if isinstance(value, dict) and value.get(TAG) == "module":
                modules[key] = value
                setattr(est, key, None)  # (holds its place: attributes keep the stored order)
            else:
                setattr(est, key, self.decode(value, depth))
        for key, value in modules.items():
            setattr(est, key, self._module(est, value, depth))
        if modules and hasattr(type(est), "_architecture"):
            est._architecture_ = est._architecture()  # what a later warm start compares with
        return est

    def _module(self, est, obj: dict, depth: int) -> nn.Module:
        fields(obj, ("state_dict", "settings"))
        state, settings = obj["state_dict"], obj["settings"]
        if not isinstance(state, dict) or not isinstance(settings, dict):
            raise ValueError("a network entry without its state_dict and settings tables")
        if not hasattr(est, "_build_module"):
            raise ValueError(f"a {type(est).__name__} has no network to load weights into")
        tensors = {k: self.decode(v, depth) for k, v in state.items()}
        if not all(isinstance(t, torch.Tensor) for t in tensors.values()):
            raise ValueError("a network's state_dict holds something other than tensors")
        # the estimators build networks from a real dtype (complex weights, if any, take the
        # precision of that dtype): a network of complex tensors only is built from their parts'
        inexact = [t for t in tensors.values() if t.is_floating_point() or t.is_complex()]
        first = next((t for t in inexact if t.is_floating_point()), inexact[0] if inexact else None)
        dtype = torch.float32 if first is None else _real_dtype(first.dtype)
        device = torch.device("cpu") if first is None else first.device
        module = _build(est, device, dtype)
        built = module.state_dict()
        flipped = [k for k, t in tensors.items()
                   if k in built and built[k].is_complex() != t.is_complex()]
        if flipped:  # load_state_dict would cast complex into real, dropping imaginary parts
            k = flipped[0]
            raise ValueError(f"the stored weights do not fit the network a {type(est).__name__} with "
                             f"these parameters builds: {k!r} is stored as {tensors[k].dtype} but "
                             f"built as {built[k].dtype}")
        legacy = False
        if hasattr(module, "upgrade_state_dict"):  # weights saved by an older release
            upgraded = module.upgrade_state_dict(tensors)
            legacy, tensors = upgraded.keys() != tensors.keys(), upgraded
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"the stored weights do not fit the network a {type(est).__name__} with "
                             f"these parameters builds: {str(exc)[:400]}") from None
        subs = dict(module.named_modules())
        for name, entry in settings.items():
            if legacy and name not in subs and re.fullmatch(r"(theta|mlps)(\..*)?", name):
                continue  # the containers of an older release's layout (their values are weights)
            if name not in subs or not isinstance(entry, dict):
                raise ValueError(f"the stored network has a part {str(name)[:60]!r} that the "
                                 "rebuilt one lacks")
            fields(entry, ("training", "values"))
            values = self.decode(entry["values"], depth)
            sub = subs[name]
            sub.training = bool(entry["training"])
            for key, value in values.items() if isinstance(values, dict) else ():
                current = getattr(sub, key, None)
                if hasattr(sub, key) and not key.startswith("_") and type(current) is type(value) \
                        and not isinstance(current, (nn.Module, torch.Tensor)):
                    setattr(sub, key, value)
        return module


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the real and imaginary parts of ``dtype`` (``dtype`` itself when real)."""
    return torch.empty((), dtype=dtype).real.dtype


def _build(est, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The estimator's own network, built as its fit builds it (at the fitted depth)."""
    from ..operators import as_operator
    from ..operators.ensembles import OperatorEnsemble

    fit_op = getattr(est, "operator_", None)
    if fit_op is None and not isinstance(getattr(est, "A_", None), OperatorEnsemble):
        # fitted on per-sample operators only: a stand-in of the same shape (what the network
        # takes from its operator beyond the shape is in the weights and settings restored next)
        m, n = int(est.n_features_in_), int(est._n_signal_features())
        fit_op = as_operator(np.random.RandomState(0).standard_normal((1, m, n)) / np.sqrt(m))
    fitted_depth = getattr(est, "n_layers_", None)
    depth = getattr(est, "n_layers", None)
    try:
        if fitted_depth is not None:
            est.n_layers = fitted_depth
        with torch.random.fork_rng(devices=[]):
            return est._build_module(device, dtype, fit_op)
    except (ValueError, TypeError, AttributeError, RuntimeError, IndexError) as exc:
        raise ValueError(f"could not rebuild the network of a {type(est).__name__} from its stored "
                         f"parameters ({type(exc).__name__}: {str(exc)[:300]})") from None
    finally:
        if fitted_depth is not None:
            est.n_layers = depth
