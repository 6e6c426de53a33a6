"""What every unrolled network shares: layers, tying, per-layer parameter lists, denoisers.

A network holds ``n_layers`` layers; each layer calls the step function of the solver it
unrolls (:mod:`sklearn_unfold.steps`) with its own free parameters and the operator it is
given at call time: ``forward(Y, op)`` runs the first :attr:`~UnrolledNetwork.n_active` layers
on measurements ``Y (n, M)`` taken through ``op`` (one shared
:class:`~sklearn_unfold.operators.LinearOperator`, or one per sample) and returns every layer's
estimate. Layer-wise training grows the network through :attr:`~UnrolledNetwork.n_active`.

Parameters are declared once, as per-layer lists (:meth:`UnrolledNetwork.add_layer_params`):
a list of one entry shared by every layer (tied), one entry per layer, or one per layer from
some layer on (LISTA's ``S``, which layer 0 does not have). :meth:`layer_parameters`,
:meth:`layer_param` and :meth:`layer_summary` are generic over those declarations.
"""

from __future__ import annotations

import contextlib
import copy
import re

import numpy as np
import torch
from torch import Tensor, nn

from ..denoisers import DENOISER_NAMES, make_denoiser
from ..operators import LinearOperator

#: Denoiser names a learned layer accepts (besides any denoiser module).
LEARNED_DENOISERS = DENOISER_NAMES


def make_param(value, dtype, device) -> nn.Parameter:
    """A parameter holding a copy of ``value`` (array, list or tensor) in ``dtype``'s precision
    (complex values keep a complex dtype of that precision)."""
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if not (t.is_complex() or t.is_floating_point()):
        t = t.to(torch.float64)
    if t.is_complex():
        dtype = torch.complex64 if dtype in (torch.float32, torch.complex64) else torch.complex128
    return nn.Parameter(t.detach().to(dtype=dtype, device=device).clone())


class UnrolledNetwork(nn.Module):
    """Base class of the unrolled networks (LISTA, LAMP, LDVAMP).

    Subclasses declare their per-layer parameters with :meth:`add_layer_params` and implement
    :meth:`forward` (and :meth:`layer_summary` for readable coefficients); they may implement
    :meth:`calibrate_layer` (and set :attr:`calibrates`).

    Parameters
    ----------
    n_layers : int
        Depth.
    tied : bool
        Whether the declared *tieable* lists hold one entry shared by every layer.
    """

    #: Whether :meth:`calibrate_layer` does anything (the trainer only draws data for it then).
    calibrates = False
    #: Whether :meth:`forward` works with any operator (per-sample, fresh draws): the
    #: parameters do not depend on one matrix.
    operator_agnostic = True

    def __init__(self, n_layers: int, tied: bool = False):
        super().__init__()
        if int(n_layers) < 1:
            raise ValueError(f"n_layers must be >= 1; got {n_layers}.")
        self.n_layers = int(n_layers)
        #: Number of leading layers that :meth:`forward` runs (grown by layer-wise training).
        self.n_active = int(n_layers)
        self.tied = bool(tied)
        self._layer_lists: dict[str, tuple[bool, int]] = {}

    # ------------------------------------------------------------------ declarations
    def add_layer_params(self, name: str, make, *, tieable: bool = False, first: int = 0,
                         shared: bool | None = None) -> None:
        """Declare a per-layer list ``name``: ``make()`` builds one entry (a parameter or module).

        ``tieable`` lists hold one entry when the network is tied; ``shared`` (when given)
        decides that instead; ``first`` is the first layer that has an entry (LISTA's ``S``
        starts at layer 1).
        """
        shared = (tieable and self.tied) if shared is None else bool(shared)
        count = 1 if shared else max(self.n_layers - first, 0)
        entries = [make() for _ in range(count)]
        container = (nn.ModuleList(entries) if entries and isinstance(entries[0], nn.Module)
                     and not isinstance(entries[0], nn.Parameter) else nn.ParameterList(entries))
        setattr(self, name, container)
        self._layer_lists[name] = (shared, first)

    def layer_param(self, name: str, t: int):
        """The entry of list ``name`` that layer ``t`` uses (the shared one when tied)."""
        shared, first = self._layer_lists[name]
        container = getattr(self, name)
        return container[0] if shared else container[t - first]

    def has_layer_param(self, name: str, t: int) -> bool:
        shared, first = self._layer_lists[name]
        return len(getattr(self, name)) > 0 and (shared or t >= first)

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """The trainable parameters that layer ``t`` introduces.

        Shared (tied) entries belong to layer 0, so a layer-wise stage that trains "layer t
        alone" trains only its own per-layer entries.
        """
        if not 0 <= t < self.n_layers:
            raise IndexError(f"layer {t} out of range for {self.n_layers} layers.")
        params: list[nn.Parameter] = []
        for name, (shared, first) in self._layer_lists.items():
            container = getattr(self, name)
            if shared:
                entry = container[0] if (t == 0 and len(container)) else None
            else:
                entry = container[t - first] if 0 <= t - first < len(container) else None
            if entry is None:
                continue
            params.extend(entry.parameters() if isinstance(entry, nn.Module)
                          and not isinstance(entry, nn.Parameter) else [entry])
        return params

    def per_layer_values(self, name: str, fn=None) -> np.ndarray:
        """``(n_layers, ...)`` float64 array of list ``name``'s entries, layer by layer."""
        rows = []
        for t in range(self.n_layers):
            value = self.layer_param(name, t).detach()
            value = fn(value) if fn is not None else value
            rows.append(value.cpu().to(torch.complex128 if value.is_complex() else torch.float64)
                        .numpy())
        return np.stack(rows)

    # ------------------------------------------------------------------ interface
    def forward(self, Y: Tensor, op: LinearOperator) -> list[Tensor]:  # pragma: no cover
        """Run the first :attr:`n_active` layers on measurements ``Y (n, M)`` through ``op``.

        Returns the list of per-layer estimates, each ``(n, N)``; the last is the output.
        """
        raise NotImplementedError

    def layer_summary(self) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        """Readable learned per-layer coefficients, e.g. ``{"threshold": array (n_layers,)}``."""
        raise NotImplementedError

    def calibrate_layer(self, t: int, Y: Tensor, X: Tensor, op: LinearOperator) -> dict | None:
        """Set layer ``t``'s parameters from training pairs before it is trained (a hook).

        Called by the trainer when layer ``t`` joins the network (every layer before it is
        already in place). The default keeps the analytic initialisation and returns ``None``;
        an implementation returns a dict that describes what it set.
        """
        return None

    def _compute_dtype(self) -> torch.dtype:
        return next(self.parameters()).real.dtype

    def _cast_data(self, Y: Tensor) -> Tensor:
        """``Y`` in the precision of the parameters, complex when ``Y`` is."""
        dtype = self._compute_dtype()
        if Y.is_complex():
            return Y.to(torch.complex64 if dtype == torch.float32 else torch.complex128)
        return Y.to(dtype)

    def _cast(self, Y: Tensor, op: LinearOperator) -> tuple[Tensor, LinearOperator]:
        """``Y`` and ``op`` in the precision of the parameters (a no-op when they already are)."""
        Y = self._cast_data(Y)
        return Y, op.to(dtype=self._compute_dtype(), device=Y.device)

    def check_operator(self, op: LinearOperator, n_samples: int) -> None:
        """Raise a ``ValueError`` when ``op`` does not fit this network or the batch."""
        shape = getattr(self, "operator_shape", None)
        if shape is not None and tuple(op.shape[-2:]) != tuple(shape):
            raise ValueError(f"the operator has shape {op.shape} but the network was built for "
                             f"(n_measurements, n_features) = {tuple(shape)}.")
        op.check_batch(n_samples)


class DenoiserLayers:
    """Mixin: the per-layer denoiser modules of LAMP and LDVAMP, under one tying rule.

    Every layer calls its denoiser as ``denoiser(r, sigma) -> (value, dmean)``
    (:mod:`sklearn_unfold.denoisers`). With ``tie_denoiser=False`` each layer owns a copy of the
    template module (all copies start equal and are trained apart); with ``True`` one module is
    shared by every layer. The rule is the same for every network and every denoiser (a
    shrinkage's ``θ``, an MLP, a CNN): ``tied`` governs the rest of the layer, never the
    denoiser.
    """

    def _init_denoisers(self, denoiser, theta=None, *, tie_denoiser: bool = False, dtype=None,
                        device=None) -> None:
        template = make_denoiser(denoiser, theta) if isinstance(denoiser, str) else denoiser
        if not isinstance(template, nn.Module):
            raise TypeError(f"denoiser must be a torch.nn.Module or one of "
                            f"{list(LEARNED_DENOISERS)}; got {type(denoiser).__name__}.")
        #: Whether one denoiser module serves every layer.
        self.tie_denoiser = bool(tie_denoiser)
        self.add_layer_params(
            "denoisers", lambda: copy.deepcopy(template).to(dtype=dtype, device=device),
            shared=self.tie_denoiser)

    def layer_denoiser(self, t: int) -> nn.Module:
        """The denoiser module of layer ``t`` (the shared one when tied)."""
        return self.layer_param("denoisers", t)

    def _denoiser_summary(self) -> dict[str, np.ndarray]:
        """The denoisers' readable parameters, stacked layer by layer (``{}`` for a neural one)."""
        rows = [getattr(self.layer_denoiser(t), "summary", dict)() for t in range(self.n_layers)]
        if not rows or not rows[0]:
            return {}
        return {key: np.stack([np.asarray(row[key], dtype=np.float64) for row in rows])
                for key in rows[0]}

    @contextlib.contextmanager
    def recording_noise_levels(self):
        """Record the noise level ``σ`` every layer hands its denoiser, in layer order.

        ``with net.recording_noise_levels() as levels: net(Y, op)`` leaves one ``(n, 1)``
        tensor per layer run in ``levels``: the levels a pretrained denoiser must serve.
        """
        levels: list[Tensor] = []
        hooks = [m.register_forward_pre_hook(lambda _m, args: levels.append(args[1].detach()))
                 for m in {id(d): d for d in self.denoisers}.values()]
        try:
            yield levels
        finally:
            for h in hooks:
                h.remove()

    def upgrade_state_dict(self, state: dict) -> dict:
        """Map the weights of a network saved before denoisers were modules onto this one.

        Older files hold the shrinkage parameters as ``theta.<t>`` and the MLPs as
        ``mlps.<k>.…`` (one per layer, or one shared); they become ``denoisers.<t>.theta``
        (``denoisers.<t>.shrinkage.theta`` and ``denoisers.<t>.mlp.…`` for ``"mlp"``).
        """
        if any(k.startswith("denoisers.") for k in state) or self.tie_denoiser:
            return state
        inner = "shrinkage." if hasattr(self.layer_denoiser(0), "shrinkage") else ""
        n_mlps = len({m[1] for k in state if (m := re.match(r"mlps\.(\d+)\.", k))})
        out = {}
        for key, value in state.items():
            if m := re.fullmatch(r"theta\.(\d+)", key):
                out[f"denoisers.{m[1]}.{inner}theta"] = value
            elif m := re.match(r"mlps\.(\d+)\.(.*)", key):
                layers = range(self.n_layers) if n_mlps == 1 else [int(m[1])]
                for t in layers:
                    out[f"denoisers.{t}.mlp.{m[2]}"] = value
            else:
                out[key] = value
        return out
