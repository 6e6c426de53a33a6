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

import numpy as np
import torch
from torch import Tensor, nn

from ..denoisers import DENOISER_PARAMS, MLPDenoiser, default_theta, get_denoiser, mlp_residual_denoiser
from ..operators import LinearOperator

#: Denoisers a learned layer can use: the parameterised shrinkages and a per-entry MLP.
LEARNED_DENOISERS = (*DENOISER_PARAMS, "mlp")


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
    def add_layer_params(self, name: str, make, *, tieable: bool = False, first: int = 0) -> None:
        """Declare a per-layer list ``name``: ``make()`` builds one entry (a parameter or module).

        ``tieable`` lists hold one entry when the network is tied; ``first`` is the first layer that has
        an entry (LISTA's ``S`` starts at layer 1).
        """
        shared = tieable and self.tied
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


class ShrinkageDenoisers:
    """Mixin: per-layer shrinkage parameters ``θ_t`` and, for ``"mlp"``, per-entry MLPs.

    ``denoiser`` is a shrinkage of :data:`~sklearn_unfold.denoisers.DENOISER_PARAMS` or
    ``"mlp"`` (the BG shrinkage plus the residual of an
    :class:`~sklearn_unfold.denoisers.MLPDenoiser` that starts at zero,
    :func:`~sklearn_unfold.denoisers.mlp_residual_denoiser`).
    """

    def _init_denoisers(self, denoiser: str, theta, *, tie_mlp: bool, mlp_hidden: int,
                        dtype, device) -> None:
        if denoiser not in LEARNED_DENOISERS:
            raise ValueError(f"denoiser must be one of {list(LEARNED_DENOISERS)}; got {denoiser!r}.")
        self.denoiser = denoiser
        #: The shrinkage under the MLP residual ("bg" for "mlp"), else the denoiser itself.
        self.base_denoiser = "bg" if denoiser == "mlp" else denoiser
        init = (default_theta(self.base_denoiser) if theta is None
                else np.asarray(theta, np.float64).reshape(-1))
        names = DENOISER_PARAMS[self.base_denoiser][0]
        if init.size != len(names):
            raise ValueError(f"theta of denoiser {denoiser!r} must have {len(names)} entries "
                             f"{names}; got {init.size}.")
        self.add_layer_params("theta", lambda: make_param(init, dtype, device))
        if denoiser == "mlp":
            self.add_layer_params(
                "mlps", lambda: MLPDenoiser(mlp_hidden).to(dtype=dtype, device=device),
                tieable=tie_mlp)
        else:
            self.mlps = nn.ModuleList()
            self._layer_lists["mlps"] = (False, 0)

    def _denoise(self, t: int):
        """``(denoiser_fn, theta)`` of layer ``t`` in the signature the step functions call."""
        base = get_denoiser(self.base_denoiser)
        if self.denoiser == "mlp":
            return mlp_residual_denoiser(self.layer_param("mlps", t), base), self.theta[t]
        return base, self.theta[t]

    def _theta_summary(self) -> dict[str, np.ndarray]:
        theta = self.per_layer_values("theta")
        out = {"theta": theta}
        for i, name in enumerate(DENOISER_PARAMS[self.base_denoiser][0]):
            out[name] = theta[:, i].copy()
        if self.denoiser == "soft":
            out["threshold"] = theta[:, 0].copy()
        if self.base_denoiser == "bg":
            out["sparsity"] = 1.0 / (1.0 + np.exp(theta[:, 1]))
        return out
