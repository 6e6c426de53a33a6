"""The interface every unrolled network implements, so one training engine serves them all."""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn


class UnrolledNetwork(nn.Module):
    """Base class of the unrolled networks (LISTA, LAMP, LDVAMP).

    A network holds ``n_layers`` layers; each layer calls the step function of the solver it
    unrolls (:mod:`sklearn_unfold.steps`) with its own free parameters. Layer-wise training grows
    the network one layer at a time through :attr:`n_active`.

    Subclasses implement :meth:`forward`, :meth:`layer_parameters` and :meth:`layer_summary`;
    they may implement :meth:`calibrate_layer` (and set :attr:`calibrates`).
    """

    #: Whether :meth:`calibrate_layer` does anything (the trainer only draws data for it then).
    calibrates = False

    def __init__(self, n_layers: int):
        super().__init__()
        self.n_layers = int(n_layers)
        #: Number of leading layers that :meth:`forward` runs (grown by layer-wise training).
        self.n_active = int(n_layers)

    def forward(self, Y: Tensor) -> list[Tensor]:  # pragma: no cover - interface
        """Run the first :attr:`n_active` layers on measurements ``Y (n, M)``.

        Returns the list of per-layer estimates, each ``(n, N)``; the last is the output.
        """
        raise NotImplementedError

    def layer_parameters(self, t: int) -> list[nn.Parameter]:  # pragma: no cover - interface
        """The trainable parameters that layer ``t`` introduces.

        With tied weights, the shared matrices belong to layer 0 (so a layer-wise stage that
        trains "layer t alone" trains only its per-layer scalars).
        """
        raise NotImplementedError

    def layer_summary(self) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        """Readable learned per-layer coefficients, e.g. ``{"threshold": array (n_layers,)}``."""
        raise NotImplementedError

    def calibrate_layer(self, t: int, Y: Tensor, X: Tensor) -> dict | None:
        """Set layer ``t``'s parameters from training pairs before it is trained (a hook).

        Called by the trainer when layer ``t`` joins the network (every layer before it is
        already in place). The default keeps the analytic initialisation and returns ``None``;
        an implementation returns a dict that describes what it set.
        """
        return None
