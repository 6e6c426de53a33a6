"""Neural denoisers: a per-entry MLP, and convolutional networks that see the whole signal.

All follow the contract of :mod:`sklearn_unfold.denoisers.base` (``forward(r, sigma)`` returns
the estimate and its mean divergence) and are conditioned on the noise level: their inputs are
``r/σ`` and ``log σ``, so one set of weights serves every layer of an unrolled network.
"""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import torch
from torch import Tensor, nn

from .base import MC_EPS_RATIO, SHRINKAGES, Denoiser, mc_divergence
from .scalar import _mean, _tiny

__all__ = ["ConvDenoiser1d", "DnCNN", "MLPDenoiser", "MLPResidualDenoiser"]

class MLPDenoiser(Denoiser):
    r"""A small per-entry MLP denoiser ``η(r) = r + f([r/σ, log σ])·σ``.

    The features are normalised by σ so the same weights serve every noise level; the mean
    derivative ``⟨η'⟩`` is computed exactly by autograd (the network acts entrywise, so the
    divergence is the sum of the gradient of ``Σ η`` with respect to ``r``).

    Parameters
    ----------
    hidden : int
        Width of the two hidden layers.
    """

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.hidden = int(hidden)
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, r: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        # The divergence needs autograd even under no_grad; its graph is kept only when the
        # caller records one (training, or fine-tuning a model left in eval mode).
        keep_graph = torch.is_grad_enabled()
        if r.is_complex():
            return self._complex_forward(r, sigma, keep_graph)
        with torch.enable_grad():
            r_in = r if r.requires_grad else r.detach().requires_grad_(True)
            s = sigma.expand_as(r_in)
            feats = torch.stack([r_in / s, torch.log(s.clamp_min(_tiny(s.dtype)))], dim=-1)
            value = r_in + self.net(feats).squeeze(-1) * s
            (grad,) = torch.autograd.grad(value.sum(), r_in, create_graph=keep_graph)
        if not keep_graph:
            value = value.detach()
        return value, _mean(grad)

    def _complex_forward(self, r: Tensor, sigma: Tensor, keep_graph: bool
                         ) -> tuple[Tensor, Tensor]:
        r"""``η(r) = r (1 + f([|r|/σ, log σ]))``: a learned gain of the modulus, phase kept.

        A circularly-symmetric prior's posterior mean has exactly this form (``r`` times a
        function of ``|r|``), so modulus features lose nothing and the denoiser is equivariant
        to phase rotations; real-and-imaginary features would have to learn that symmetry.
        With ``u = |r|/σ`` the complex divergence is ``1 + f + ½ u ∂f/∂u``.
        """
        with torch.enable_grad():
            s = sigma.expand(r.shape)
            u = r.abs() / s
            u_in = u if u.requires_grad else u.detach().requires_grad_(True)
            feats = torch.stack([u_in, torch.log(s.clamp_min(_tiny(s.dtype)))], dim=-1)
            h = self.net(feats).squeeze(-1)
            (dh,) = torch.autograd.grad(h.sum(), u_in, create_graph=keep_graph)
            value = r * (1.0 + h)
            deriv = 1.0 + h + 0.5 * u_in * dh
        if not keep_graph:
            value, deriv = value.detach(), deriv.detach()
        return value, _mean(deriv)


class MLPResidualDenoiser(Denoiser):
    r"""A shrinkage plus the residual of a per-entry MLP (the ``"mlp"`` denoiser).

    .. math:: η(r; σ) = η_{\mathrm{base}}(r; σ, θ) + \big(η_{\mathrm{mlp}}(r; σ) - r\big),
              \qquad ⟨η'⟩ = ⟨η_{\mathrm{base}}'⟩ + ⟨η_{\mathrm{mlp}}'⟩ - 1

    :class:`MLPDenoiser` starts at the identity (its last layer is zero), so this denoiser starts
    exactly at the shrinkage: a network built on it starts at the solver it unrolls (for VAMP,
    an identity denoiser would make its precision updates degenerate).

    Parameters
    ----------
    base : str, default="bg"
        The shrinkage (a name of :data:`~sklearn_unfold.denoisers.scalar.DENOISER_PARAMS`).
    hidden : int, default=16
        Width of the MLP's two hidden layers.
    theta : array-like, optional
        Initial parameters of the shrinkage.
    """

    def __init__(self, base: str = "bg", hidden: int = 16, theta=None):
        super().__init__()
        if base not in SHRINKAGES:
            raise ValueError(f"base must be one of {sorted(SHRINKAGES)}; got {base!r}.")
        self.base = base
        self.hidden = int(hidden)
        self.shrinkage = SHRINKAGES[base](theta)
        self.mlp = MLPDenoiser(hidden)

    def forward(self, r: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        value, dmean = self.shrinkage(r, sigma)
        m_value, m_dmean = self.mlp(r, sigma)
        return value + (m_value - r), dmean + (m_dmean - 1.0)

    def summary(self):
        return self.shrinkage.summary()


#: ``divergence="auto"`` computes the exact diagonal when it takes at most this many probes.
_MAX_AUTO_PROBES = 64
#: ``ε = max|r| / ratio`` of the Monte-Carlo probe when the network runs in bfloat16: the format
#: keeps about 3 significant digits, so the finite difference needs a larger step.
_MIXED_EPS_RATIO = 50.0


@functools.lru_cache(maxsize=32)
def _colouring(spatial: tuple[int, ...], field: int) -> tuple[np.ndarray, int]:
    """Each entry's colour (its position modulo ``min(field, size)`` in every dimension) and the
    number of colours: entries of one colour are a receptive field apart."""
    period = [min(field, d) for d in spatial]
    grid = np.indices(spatial).reshape(len(spatial), -1)
    colour = np.zeros(grid.shape[1], dtype=np.int64)
    for k, per in enumerate(period):
        colour = colour * per + grid[k] % per
    return colour, int(np.prod(period))


class _ConvResidualDenoiser(Denoiser):
    r"""A DnCNN-style residual network: ``g(r) = r − σ · CNN([Re r/σ, Im r/σ, log σ])``.

    The network predicts the noise in units of ``σ`` (residual learning, Zhang et al., "Beyond a
    Gaussian denoiser", IEEE TIP 2017): ``depth`` convolutions of ``width`` channels with ReLUs
    between them and no normalisation layers (batch statistics would make a sample's estimate,
    and its divergence, depend on the rest of the batch). The last convolution starts at zero,
    so the untrained denoiser is the identity. Real and complex signals share the architecture
    (two signal channels; the imaginary one is zero for real signals).
    """

    separable = False
    pretrain_by_default = True
    _conv: type = nn.Conv1d

    def _setup(self, depth, width, kernel_size, divergence, probe_seed, mixed_precision) -> None:
        """Store the settings under their own names, check them and build the network."""
        self.depth = depth
        self.width = width
        self.kernel_size = kernel_size
        self.divergence = divergence
        self.probe_seed = probe_seed
        self.mixed_precision = bool(mixed_precision)
        self._build_body()

    def _build_body(self) -> None:
        for name, value, low in (("depth", self.depth, 2), ("width", self.width, 1),
                                 ("kernel_size", self.kernel_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the output keeps the input's size); got "
                             f"{self.kernel_size}.")
        if self.divergence not in ("auto", "mc", "exact"):
            raise ValueError(f"divergence must be 'auto', 'mc' or 'exact'; got "
                             f"{self.divergence!r}.")
        k, w, pad = self.kernel_size, self.width, self.kernel_size // 2
        layers: list[nn.Module] = [self._conv(3, w, k, padding=pad), nn.ReLU()]
        for _ in range(self.depth - 2):
            layers += [self._conv(w, w, k, padding=pad), nn.ReLU()]
        layers.append(self._conv(w, 2, k, padding=pad))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.body = nn.Sequential(*layers)

    def _spatial(self, n_features: int) -> tuple[int, ...]:
        return (n_features,)

    def _autocast(self, device: torch.device):
        if not self.mixed_precision:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def estimate(self, r: Tensor, sigma: Tensor) -> Tensor:
        """The estimate ``g(r)`` alone (no divergence)."""
        n, N = r.shape
        spatial = self._spatial(N)
        dtype = self.body[0].weight.dtype
        s = sigma.to(dtype).clamp_min(_tiny(dtype) ** 0.5).reshape(n, 1, 1)
        if r.is_complex():
            parts = torch.view_as_real(r).to(dtype).transpose(1, 2)
        else:
            r_real = r.to(dtype).unsqueeze(1)
            parts = torch.cat([r_real, torch.zeros_like(r_real)], dim=1)
        feats = torch.cat([parts / s, torch.log(s).expand(n, 1, N)], dim=1)
        with self._autocast(r.device):
            noise = self.body(feats.reshape(n, 3, *spatial))
        noise = noise.to(dtype).reshape(n, 2, N) * s
        if r.is_complex():
            est = torch.complex(parts[:, 0] - noise[:, 0], parts[:, 1] - noise[:, 1])
        else:
            est = parts[:, 0] - noise[:, 0]
        return est.to(r.dtype)

    def receptive_field(self) -> int:
        """Entries (per spatial dimension) that one output entry depends on."""
        return self.depth * (self.kernel_size - 1) + 1

    def _probed_divergence(self, r: Tensor, sigma: Tensor, value: Tensor, eps_ratio: float
                           ) -> Tensor:
        r"""The exact diagonal of the Jacobian, from coloured probes (finite differences).

        An output entry depends only on the inputs within the receptive field, so
        ``∂g_i/∂r_j = 0`` when ``i`` and ``j`` are a period ``P`` (the receptive field, at most
        the signal's size) or more apart in some dimension. Colouring the entries by their
        position modulo ``P`` and perturbing all entries of one colour at once,
        ``(g(r + ε e_c) − g(r))_i / ε = ∂g_i/∂r_i`` for every ``i`` of colour ``c``: the whole
        diagonal in ``∏P`` passes (twice that for complex signals), instead of ``N``. The passes
        run without a graph: training treats this divergence as a constant of the parameters
        (the estimate itself carries their gradients), which keeps its cost at ``∏P`` forward
        passes.
        """
        with torch.no_grad():
            return self._probed_divergence_nograd(r.detach(), sigma.detach(), value.detach(),
                                                  eps_ratio)

    def _probed_divergence_nograd(self, r: Tensor, sigma: Tensor, value: Tensor,
                                  eps_ratio: float) -> Tensor:
        n, N = r.shape
        colour, n_colours = _colouring(self._spatial(N), self.receptive_field())
        real = r.real.dtype
        masks = torch.zeros((n_colours, N), dtype=real, device=r.device)
        masks[torch.as_tensor(colour, device=r.device), torch.arange(N, device=r.device)] = 1.0
        eps = (r.detach().abs().amax(dim=-1, keepdim=True) / eps_ratio).clamp_min(
            _tiny(real) ** 0.5)
        total = torch.zeros((n, 1), dtype=real, device=r.device)
        units = (1.0, 1j) if r.is_complex() else (1.0,)
        chunk = max(1, 8192 // max(n, 1))
        for unit in units:
            for start in range(0, n_colours, chunk):
                probes = masks[start:start + chunk].to(r.dtype) * unit  # (P, N)
                P = probes.shape[0]
                pert = (r.unsqueeze(0) + eps.to(r.dtype).unsqueeze(0) * probes.unsqueeze(1))
                out = self.estimate(pert.reshape(P * n, N), sigma.repeat(P, 1))
                diff = (out.reshape(P, n, N) - value.unsqueeze(0)) / eps.unsqueeze(0)
                prod = (probes.conj().unsqueeze(1) * diff)
                total = total + prod.real.sum(dim=(0, 2)).unsqueeze(-1)
        return total / (N * len(units))

    def _probe(self, r: Tensor) -> Tensor:
        """A fresh probe per call in training; in eval mode one fixed probe (seeded by
        ``probe_seed``) shared by every row, so predictions are deterministic and a row's
        estimate does not depend on the rest of its batch."""
        real = r.real.dtype
        shape = (*r.shape, 2) if r.is_complex() else tuple(r.shape)
        if self.training:
            b = torch.randn(shape, dtype=real, device=r.device)
        else:
            gen = torch.Generator(device=r.device)
            gen.manual_seed(int(self.probe_seed))
            b = torch.randn((1, *shape[1:]), dtype=real, device=r.device, generator=gen)
        return torch.view_as_complex(b) if r.is_complex() else b

    def forward(self, r: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        def fn(x):
            return self.estimate(x, sigma)

        value = fn(r)
        ratio = _MIXED_EPS_RATIO if self.mixed_precision else MC_EPS_RATIO
        if self._divergence_kind(r.shape[-1]) == "exact":
            dmean = self._probed_divergence(r, sigma, value, ratio)
        else:
            dmean = mc_divergence(fn, r, value, probe=self._probe(r), eps_ratio=ratio)
        return value, dmean.to(r.real.dtype)

    def _divergence_kind(self, n_features: int) -> str:
        if self.divergence != "auto":
            return self.divergence
        periods = [min(self.receptive_field(), d) for d in self._spatial(n_features)]
        return "exact" if int(np.prod(periods)) <= _MAX_AUTO_PROBES else "mc"


class ConvDenoiser1d(_ConvResidualDenoiser):
    r"""A 1-D convolutional denoiser for signals with local structure along their index.

    .. math:: g(r) = r - σ\,\mathrm{CNN}\big([\mathrm{Re}\,r/σ,\ \mathrm{Im}\,r/σ,\ \log σ]\big)

    a DnCNN-style residual network over the signal's ``N`` entries (delay taps of a channel,
    samples of a time series): ``depth`` 1-D convolutions of ``width`` channels and
    ``kernel_size`` taps with ReLUs between them (receptive field ``depth·(kernel_size−1)+1``
    entries). Its divergence is computed exactly (``divergence="exact"``: the Jacobian's
    diagonal from one finite difference per colour of entries a receptive field apart, so
    ``receptive field`` extra passes) or estimated with one Monte-Carlo probe
    (:func:`~sklearn_unfold.denoisers.mc_divergence`, ``"mc"``: two passes, for long signals).
    ``"auto"`` takes the exact diagonal when it needs at most 64 passes. The single probe's
    relative error is about ``√(2‖J‖_F²)/tr J``: 30-40 % per signal for a 128-entry signal with
    a dozen active entries, which VAMP's precision updates do not tolerate; AMP's Onsager term
    does better, and on images of ``10⁴``-``10⁵`` pixels one probe is accurate. It starts at
    the identity and is meant to be trained: the learned estimators pretrain it on noisy signals at the noise
    levels their layers see, then train the unrolled network end to end.

    Parameters
    ----------
    depth : int, default=5
        Number of convolutions (at least 2).
    width : int, default=32
        Channels of the hidden convolutions.
    kernel_size : int, default=3
        Taps of each convolution (odd).
    divergence : {"auto", "exact", "mc"}, default="auto"
    probe_seed : int, default=0
        Seed of the fixed Monte-Carlo probe used in eval mode (prediction).
    mixed_precision : bool, default=False
        Run the convolutions under ``torch.autocast`` in bfloat16 (meant for GPUs, where it
        roughly halves their time and memory; the rest of the network stays in full precision,
        and the probe's step grows to ``max|r|/50``).
    """

    _conv = nn.Conv1d

    def __init__(self, depth: int = 5, width: int = 32, kernel_size: int = 3, *,
                 divergence: str = "auto", probe_seed: int = 0, mixed_precision: bool = False):
        super().__init__()
        self._setup(depth, width, kernel_size, divergence, probe_seed, mixed_precision)


class DnCNN(_ConvResidualDenoiser):
    r"""A DnCNN-style 2-D residual denoiser for images, flattened row by row into signals.

    .. math:: g(r) = r - σ\,\mathrm{CNN}\big([\mathrm{Re}\,r/σ,\ \mathrm{Im}\,r/σ,\ \log σ]\big)

    with the signal of ``N = H·W`` entries seen as an ``H × W`` image (Zhang et al., IEEE TIP
    2017, without batch normalisation; Metzler et al.'s learned D-AMP uses the same denoiser).
    Used inside D-AMP / D-VAMP its divergence comes from one Monte-Carlo probe or, for small
    images (at most 64 colour probes), exactly (see :class:`ConvDenoiser1d`).

    Parameters
    ----------
    image_shape : (int, int)
        ``(H, W)``; the signals must have ``H·W`` entries.
    depth : int, default=5
    width : int, default=32
    kernel_size : int, default=3
    divergence : {"auto", "exact", "mc"}, default="auto"
    probe_seed : int, default=0
    mixed_precision : bool, default=False
        As in :class:`ConvDenoiser1d`.
    """

    _conv = nn.Conv2d

    def __init__(self, image_shape=(8, 8), depth: int = 5, width: int = 32,
                 kernel_size: int = 3, *, divergence: str = "auto", probe_seed: int = 0,
                 mixed_precision: bool = False):
        super().__init__()
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else ()
        if len(shape) != 2 or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise ValueError(f"image_shape must be a pair of positive integers (H, W); got "
                             f"{image_shape!r}.")
        self.image_shape = shape
        self._setup(depth, width, kernel_size, divergence, probe_seed, mixed_precision)

    def _spatial(self, n_features: int) -> tuple[int, ...]:
        if n_features != math.prod(self.image_shape):
            raise ValueError(f"DnCNN with image_shape={self.image_shape} denoises signals of "
                             f"{math.prod(self.image_shape)} entries; got {n_features}.")
        return self.image_shape
