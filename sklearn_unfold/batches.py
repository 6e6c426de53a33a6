"""Mini-batch sources for the training engine: ``batches() -> (Y, X, op)``.

* :class:`PairBatches`: shuffled mini-batches of fixed training pairs, with their operator (one
  shared, or one per pair);
* :class:`SyntheticBatches`: fresh measurements ``Y = A X + σw W`` at every step, the signals
  drawn from a prior or resampled from training signals, the operator fixed or drawn afresh from
  an operator ensemble;
* :class:`PriorBatches`: :class:`SyntheticBatches` with a prior.

``batches(n)`` returns at least ``n`` samples at once (the trainer's calibration draw).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import Tensor

from .operators import LinearOperator, as_operator

__all__ = ["PairBatches", "PriorBatches", "SyntheticBatches"]


class PairBatches:
    """Shuffled mini-batches of fixed ``(Y, X)`` pairs; reshuffled after every pass.

    Parameters
    ----------
    Y : Tensor of shape (n, M)
    X : Tensor of shape (n, N)
    batch_size : int
        Capped at ``n``; a last incomplete batch of a pass is skipped.
    random_state : int, RandomState instance or None
        Seeds the shuffles.
    operator : LinearOperator
        The operator of the pairs: shared, or one per pair (then indexed with the batch).
    """

    def __init__(self, Y: Tensor, X: Tensor, batch_size: int, random_state=None, *,
                 operator: LinearOperator):
        self.Y, self.X, self.operator = Y, X, operator
        self.n_samples = int(Y.shape[0])
        operator.check_batch(self.n_samples)
        self.batch_size = max(1, min(int(batch_size), self.n_samples))
        self._rng = check_random_state(random_state)
        self._order = None
        self._pos = self.n_samples

    def _next_index(self) -> Tensor:
        if self._pos + self.batch_size > self.n_samples:
            perm = self._rng.permutation(self.n_samples)
            self._order = torch.as_tensor(perm, device=self.Y.device)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def __call__(self, n_samples: int | None = None) -> tuple[Tensor, Tensor, LinearOperator]:
        """The next mini-batch ``(Y, X, op)``; ``n_samples``: successive mini-batches, joined,
        until at least that many samples."""
        idx = self._next_index()
        if n_samples is not None:
            parts = [idx]
            while sum(p.numel() for p in parts) < n_samples:
                parts.append(self._next_index())
            idx = torch.cat(parts)
        return self.Y[idx], self.X[idx], self.operator.take(idx)


def _owner(obj, name: str):
    """The class in ``type(obj)``'s MRO that defines ``name`` (``None``: an instance attribute
    or none)."""
    return next((c for c in type(obj).__mro__ if name in vars(c)), None)


def tensor_sampler(prior):
    """``prior.sample_tensor`` when it draws what ``prior.sample`` draws, else ``None``.

    A subclass that overrides ``sample`` but not ``sample_tensor`` draws with its own
    ``sample``: the tensor draws it inherits would ignore the override.
    """
    draw = getattr(prior, "sample_tensor", None)
    if draw is None or not callable(draw):
        return None
    sample_cls, tensor_cls = _owner(prior, "sample"), _owner(prior, "sample_tensor")
    if sample_cls is not None and tensor_cls is not None and sample_cls is not tensor_cls \
            and issubclass(sample_cls, tensor_cls):
        return None
    return draw


class SyntheticBatches:
    """Fresh measurements every step: ``Y = A X + σw W``, ``W ~ N(0, I)``.

    The signals are drawn from a prior, or resampled from training signals; the operator is one
    fixed operator, or drawn afresh for every mini-batch from an operator ensemble (each of
    ``operators_per_batch`` draws serving its block of the batch), which is how a network
    learns parameters that serve the whole family rather than one matrix.

    Parameters
    ----------
    signals : object or Tensor of shape (n, N)
        A prior with ``sample(n_samples, random_state) -> ndarray (n_samples, N)``, or training
        signals to draw mini-batches from. A prior that also has ``sample_tensor(n_samples, *,
        generator, dtype, device) -> Tensor`` (as
        :class:`~sklearn_unfold.datasets.BernoulliGaussianPrior`) draws with it instead, and
        the noise is then drawn by torch too: both on the training device, in its dtype.
    operator : LinearOperator or operator ensemble
        A fixed operator (shared by every sample), or an object with
        ``sample(n_samples, random_state, repeats=..., dtype=..., device=...)``.
    noise_var : float
        ``σw²``.
    batch_size : int
    random_state : int, RandomState instance or None
        Seeds the signals, the operators and the noise.
    dtype, device
        Of the batches.
    operators_per_batch : int, default=10
        Distinct operators drawn per mini-batch from an ensemble (capped at ``batch_size``;
        rounded down to a divisor of it).
    """

    def __init__(self, signals, operator, noise_var: float, batch_size: int, random_state=None,
                 *, dtype: torch.dtype = torch.float64, device=None,
                 operators_per_batch: int = 10):
        self.signals, self.operator = signals, operator
        self.noise_std = math.sqrt(max(float(noise_var), 0.0))
        self.batch_size = int(batch_size)
        self.dtype, self.device = dtype, device
        self.operators_per_batch = max(1, int(operators_per_batch))
        self._rng = check_random_state(random_state)
        self._ensemble = not isinstance(operator, LinearOperator)
        self._n_features = int(operator.shape[-1])
        self._n_measurements = int(operator.shape[-2])
        if isinstance(signals, Tensor):
            self._pairs = PairBatches(signals, signals, batch_size, self._rng,
                                      operator=_Identity(signals.shape[1]))
        # A prior that draws tensors itself (``sample_tensor``) draws the signals and the noise
        # on the training device in the training dtype, from a torch generator seeded here.
        self._draw = None if isinstance(signals, Tensor) else tensor_sampler(signals)
        self._generator = None
        if self._draw is not None:
            self._generator = torch.Generator(device=torch.device(device or "cpu"))
            self._generator.manual_seed(int(self._rng.randint(np.iinfo(np.int32).max)))

    def _signals(self, n: int) -> Tensor:
        if isinstance(self.signals, Tensor):
            return self._pairs(n if n != self._pairs.batch_size else None)[1][:n]
        N = self._n_features
        if self._draw is not None:
            X = self._draw(n, generator=self._generator, dtype=self.dtype, device=self.device)
            if tuple(X.shape) != (n, N):
                raise ValueError(
                    f"signal_prior.sample_tensor({n}, ...) returned shape {tuple(X.shape)}; "
                    f"expected ({n}, {N}) to match the operator of shape "
                    f"{tuple(self.operator.shape)}.")
            return X
        X = np.asarray(self.signals.sample(n, random_state=self._rng))
        if X.shape != (n, N):
            raise ValueError(
                f"signal_prior.sample({n}, random_state) returned shape {X.shape}; expected "
                f"({n}, {N}) to match the operator of shape {tuple(self.operator.shape)}."
            )
        return torch.as_tensor(X, dtype=self.dtype).to(self.device)

    def _operator(self, n: int) -> LinearOperator:
        if not self._ensemble:
            return self.operator
        k = min(self.operators_per_batch, n)
        while n % k:
            k -= 1
        return self.operator.sample(n, random_state=self._rng, repeats=n // k, dtype=self.dtype,
                                    device=self.device)

    def __call__(self, n_samples: int | None = None) -> tuple[Tensor, Tensor, LinearOperator]:
        """A fresh mini-batch ``(Y, X, op)``; ``n_samples``: at least that many samples (for a
        fixed operator, successive mini-batches joined)."""
        if n_samples is not None and not self._ensemble:
            parts = [self()]
            while sum(p[0].shape[0] for p in parts) < n_samples:
                parts.append(self())
            return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                    self.operator)
        n = self.batch_size if n_samples is None else int(n_samples)
        X = self._signals(n)
        op = self._operator(n)
        clean = op.forward(X)
        # complex measurements get circularly-symmetric noise, E|w|² = σw² (a complex randn
        # draws CN(0, 1))
        if self._generator is not None:
            W = torch.randn((n, self._n_measurements), generator=self._generator,
                            dtype=clean.dtype, device=self.device)
        else:
            W = self._rng.standard_normal((n, self._n_measurements))
            if clean.is_complex():
                W = (W + 1j * self._rng.standard_normal((n, self._n_measurements))) / math.sqrt(2)
            W = torch.as_tensor(W, dtype=clean.dtype).to(self.device)
        return clean + self.noise_std * W, X, op


class PriorBatches(SyntheticBatches):
    """Fresh signals from a prior every step, through one operator or an ensemble
    (:class:`SyntheticBatches` with ``signals=prior``; the batches take the operator's dtype)."""

    def __init__(self, prior, A, noise_var: float, batch_size: int, random_state=None, **kwargs):
        if isinstance(A, Tensor):
            A = as_operator(A, dtype=A.dtype, device=A.device)
        elif not isinstance(A, LinearOperator) and not callable(getattr(A, "sample", None)):
            A = as_operator(A)
        if isinstance(A, LinearOperator):
            kwargs.setdefault("dtype", A.dtype)
            kwargs.setdefault("device", A.device)
        super().__init__(prior, A, noise_var, batch_size, random_state, **kwargs)


class _Identity(LinearOperator):
    """The identity (a stand-in operator for batches of signals alone)."""

    def __init__(self, n: int):
        self.shape = (n, n)

    @property
    def dtype(self):
        return torch.float64

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, x: Tensor) -> Tensor:
        return x

    def adjoint(self, v: Tensor) -> Tensor:
        return v

    def to(self, dtype=None, device=None):
        return self
