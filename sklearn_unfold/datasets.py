"""Signal priors and the ``make_*`` generators of the reference problems.

The reference problems (after Borgerding, Schniter and Rangan, 2017) are real-valued,
``N = 500``, ``M = 250``, Bernoulli-Gaussian signals with rate ``p = 0.1`` and unit active
variance, and a noise variance ``σw² = p · (N/M) · 10^(−SNR/10)`` (2e-5 at 40 dB):

========== ============================================================ ======
problem    A                                                            SNR
========== ============================================================ ======
giid       i.i.d. ``N(0, 1/M)``                                         40 dB
kappa15    ``U diag(s) Vᵀ``, Haar ``U, V``, condition number 15         40 dB
noiseless  as giid                                                      ∞
dct        ``M`` random rows of the orthonormal DCT-II, × ``√(N/M)``    40 dB
========== ============================================================ ======
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils import check_random_state

from .operators import (
    bernoulli_matrix,
    conditioned_matrix,
    gaussian_matrix,
    partial_dct_matrix,
)
from .operators.ensembles import (
    ConditionedEnsemble,
    GaussianEnsemble,
    OperatorEnsemble,
    PartialDCTEnsemble,
)

#: Reference problems: (matrix kind, SNR in dB or None for noiseless, extra matrix kwargs).
PROBLEMS: dict[str, tuple[str, float | None, dict]] = {
    "giid": ("gaussian", 40.0, {}),
    "kappa15": ("conditioned", 40.0, {"condition_number": 15.0}),
    "noiseless": ("gaussian", None, {}),
    "dct": ("dct", 40.0, {}),
    "bernoulli": ("bernoulli", 40.0, {}),
}

_MATRICES = {
    "gaussian": gaussian_matrix,
    "conditioned": conditioned_matrix,
    "dct": partial_dct_matrix,
    "bernoulli": bernoulli_matrix,
}


@dataclass
class BernoulliGaussianPrior:
    r"""Bernoulli-Gaussian signal prior ``x_i ~ (1 − p) δ0 + p N(0, v)`` i.i.d.

    Parameters
    ----------
    sparsity : float
        The rate ``p`` of non-zero entries, in (0, 1].
    var : float
        The variance ``v`` of the non-zero entries.
    n_features : int or None
        ``N``; set by :meth:`fit` or needed before :meth:`sample`.
    complex_valued : bool, default=False
        Circularly-symmetric complex non-zeros, ``x_i ~ (1 − p) δ0 + p CN(0, v)`` with
        ``E|x_i|² = v`` for the non-zeros (one support for the real and imaginary parts);
        :meth:`fit` sets it from the dtype of ``X``.

    Any object with ``sample(n_samples, random_state)`` (and optionally ``fit(X)``) can stand in
    for this class where the learned estimators take a ``signal_prior``.
    """

    sparsity: float = 0.1
    var: float = 1.0
    n_features: int | None = None
    complex_valued: bool = False

    def fit(self, X: np.ndarray) -> BernoulliGaussianPrior:
        """Estimate ``p`` (fraction of non-zeros) and ``v`` (mean square modulus of the non-zeros)
        from X; a complex ``X`` makes the prior complex."""
        self.complex_valued = bool(np.iscomplexobj(X))
        X = np.asarray(X, dtype=np.complex128 if self.complex_valued else np.float64)
        nz = np.abs(X) > 1e-12 * max(float(np.abs(X).max(initial=0.0)), 1e-300)
        self.n_features = X.shape[1]
        self.sparsity = float(np.clip(nz.mean(), 1.0 / X.size, 1.0))
        active = X[nz]
        # the mean square in units of the largest entry: neither underflows nor overflows
        peak = float(np.abs(active).max()) if active.size else 0.0
        self.var = float(np.mean(np.abs(active / peak) ** 2)) * peak**2 if peak > 0 else 1.0
        return self

    @property
    def second_moment(self) -> float:
        """``E[x²] = p v``."""
        return self.sparsity * self.var

    def sample(self, n_samples: int, random_state=None) -> np.ndarray:
        """Draw ``n_samples`` signals, shape ``(n_samples, N)``."""
        if self.n_features is None:
            raise ValueError("BernoulliGaussianPrior.n_features is not set; call fit(X) or pass it.")
        rng = check_random_state(random_state)
        shape = (n_samples, self.n_features)
        support = rng.random_sample(shape) < self.sparsity
        if self.complex_valued:
            values = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
            return support * values * np.sqrt(self.var / 2.0)
        return support * rng.standard_normal(shape) * np.sqrt(self.var)

    def sample_tensor(self, n_samples: int, *, generator: torch.Generator,
                      dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """Draw ``n_samples`` signals as a tensor, on ``device``, from a torch ``generator``.

        The same distribution as :meth:`sample`, drawn by torch directly in ``dtype`` on the
        device the network trains on (no host copy); training draws its mini-batches this way
        when the prior offers it (several times faster than :meth:`sample` in float64).
        """
        if self.n_features is None:
            raise ValueError("BernoulliGaussianPrior.n_features is not set; call fit(X) or pass it.")
        shape = (int(n_samples), int(self.n_features))
        if self.complex_valued and not dtype.is_complex:
            dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        real = torch.empty((), dtype=dtype).real.dtype
        support = torch.rand(shape, generator=generator, dtype=real, device=device)
        # a complex randn draws CN(0, 1): real and imaginary parts of variance 1/2 each
        values = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return values.mul_(math.sqrt(self.var)).masked_fill_(support >= self.sparsity, 0.0)


def noise_variance_for_snr(snr_db: float | None, sparsity: float, var: float, n_features: int,
                           n_measurements: int) -> float:
    """``σw² = p·v·(N/M)·10^(−SNR/10)``, the noise variance of the reference problems (0 if noiseless).

    With ``‖A‖²_F = N`` on average, ``E‖Ax‖² / M = p v N / M``, so this is the SNR definition
    ``E‖Ax‖² / E‖w‖²``.
    """
    if snr_db is None or np.isinf(snr_db):
        return 0.0
    return sparsity * var * (n_features / n_measurements) * 10.0 ** (-snr_db / 10.0)


def make_sparse_signals(n_samples: int = 1000, n_features: int = 500, *, sparsity: float = 0.1,
                        var: float = 1.0, random_state=None) -> np.ndarray:
    """Bernoulli-Gaussian sparse signals, shape ``(n_samples, n_features)``."""
    prior = BernoulliGaussianPrior(sparsity=sparsity, var=var, n_features=n_features)
    return prior.sample(n_samples, random_state=random_state)


def make_sensing_matrix(kind: str, n_measurements: int, n_features: int, *, random_state=None,
                        **kwargs) -> np.ndarray:
    """Sensing matrix of ``kind`` in ``{'gaussian', 'conditioned', 'dct', 'bernoulli'}``."""
    if kind not in _MATRICES:
        raise ValueError(f"kind must be one of {sorted(_MATRICES)}; got {kind!r}.")
    return _MATRICES[kind](n_measurements, n_features, random_state=random_state, **kwargs)


def make_compressed_sensing(
    problem: str = "giid",
    n_samples: int = 1000,
    *,
    n_features: int = 500,
    n_measurements: int = 250,
    sparsity: float = 0.1,
    var: float = 1.0,
    snr_db: float | None = "default",
    A: np.ndarray | None = None,
    random_state=None,
    return_noise_var: bool = False,
    ensemble=False,
    complex_valued: bool = False,
):
    """Generate ``(Y, X, A)`` for a reference problem: ``Y = X Aᵀ + W``.

    With ``ensemble``, every sample has its own operator, drawn from the problem's random
    family (or from the ensemble given), and ``A`` is returned as a per-sample
    :class:`~sklearn_unfold.operators.LinearOperator` of shape ``(n_samples, M, N)``: the data
    of a random-operator problem (fresh masks, pilots or projections per sample), to pass as
    ``operator=`` to the estimators.

    Parameters
    ----------
    problem : {'giid', 'kappa15', 'noiseless', 'dct', 'bernoulli'}
        The reference problem; it fixes the matrix ensemble and the default SNR.
    n_samples : int
        Number of (measurement, signal) pairs.
    n_features, n_measurements : int
        ``N`` and ``M`` (500 and 250 in the references).
    sparsity, var : float
        Bernoulli-Gaussian rate ``p`` and active variance ``v``.
    snr_db : float or None
        Overrides the problem's SNR; ``None`` means noiseless.
    A : ndarray of shape (n_measurements, n_features), optional
        Reuse a matrix (for a fresh test set on the training matrix). Drawn when omitted.
    random_state : int, RandomState instance or None
        Seeds the matrix (when drawn), the signals and the noise.
    return_noise_var : bool
        Also return ``σw²``.
    ensemble : bool or operator ensemble, default=False
        ``True`` draws one operator per sample from the problem's family (``giid``,
        ``noiseless``: :class:`~sklearn_unfold.operators.GaussianEnsemble`; ``kappa15``:
        :class:`~sklearn_unfold.operators.ConditionedEnsemble`; ``dct``:
        :class:`~sklearn_unfold.operators.PartialDCTEnsemble`); an ensemble object draws from it.
    complex_valued : bool, default=False
        The complex counterpart of ``giid``, ``noiseless`` or ``kappa15``: circularly-symmetric
        complex Gaussian entries ``CN(0, 1/M)`` (or Haar unitary singular vectors), complex
        Bernoulli-Gaussian signals ``(1 − p) δ0 + p CN(0, v)`` and noise ``CN(0, σw²)``
        (``E|w|² = σw²``, the same SNR as the real problem). ``Y``, ``X`` and ``A`` are
        complex128; a complex ``A`` declares the problem complex to every estimator.

    Returns
    -------
    Y : ndarray of shape (n_samples, n_measurements)
    X : ndarray of shape (n_samples, n_features)
    A : ndarray of shape (n_measurements, n_features), or LinearOperator of shape \
            (n_samples, n_measurements, n_features) with ``ensemble``
    noise_var : float
        Only when ``return_noise_var``.

    Examples
    --------
    >>> from sklearn_unfold.datasets import make_compressed_sensing
    >>> Y, X, A = make_compressed_sensing("giid", n_samples=10, random_state=0)
    >>> Y.shape, X.shape, A.shape
    ((10, 250), (10, 500), (250, 500))
    """
    if problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {sorted(PROBLEMS)}; got {problem!r}.")
    kind, default_snr, kwargs = PROBLEMS[problem]
    if isinstance(snr_db, str):
        snr_db = default_snr
    rng = check_random_state(random_state)
    if complex_valued:
        if kind not in ("gaussian", "conditioned") or (ensemble is not False
                                                       and ensemble is not None):
            raise ValueError(f"complex_valued=True has complex counterparts of the 'giid', "
                             f"'noiseless' and 'kappa15' problems with one fixed matrix; got "
                             f"problem={problem!r}, ensemble={ensemble!r}.")
        return _make_complex(kind, kwargs, n_samples, n_features, n_measurements, sparsity, var,
                             snr_db, A, rng, return_noise_var)
    if ensemble is not False and ensemble is not None:
        if A is not None:
            raise ValueError("pass either A (one fixed matrix) or ensemble (one per sample).")
        family = _problem_ensemble(problem, n_measurements, n_features) if ensemble is True \
            else ensemble
        if not isinstance(family, OperatorEnsemble):
            raise TypeError(f"ensemble must be True, False or an operator ensemble; got "
                            f"{type(ensemble).__name__}.")
        n_measurements, n_features = family.shape
        op = family.sample(n_samples, random_state=rng)
        X = make_sparse_signals(n_samples, n_features, sparsity=sparsity, var=var,
                                random_state=rng)
        noise_var = noise_variance_for_snr(snr_db, sparsity, var, n_features, n_measurements)
        Y = op.forward(torch.from_numpy(X)).numpy()
        Y = Y + np.sqrt(noise_var) * rng.standard_normal((n_samples, n_measurements))
        return (Y, X, op, noise_var) if return_noise_var else (Y, X, op)
    if A is None:
        A = make_sensing_matrix(kind, n_measurements, n_features, random_state=rng, **kwargs)
    else:
        A = np.asarray(A, dtype=np.float64)
        if A.shape != (n_measurements, n_features):
            n_measurements, n_features = A.shape
    X = make_sparse_signals(n_samples, n_features, sparsity=sparsity, var=var, random_state=rng)
    noise_var = noise_variance_for_snr(snr_db, sparsity, var, n_features, n_measurements)
    Y = X @ A.T + np.sqrt(noise_var) * rng.standard_normal((n_samples, n_measurements))
    if return_noise_var:
        return Y, X, A, noise_var
    return Y, X, A


def _make_complex(kind, kwargs, n_samples, n_features, n_measurements, sparsity, var, snr_db, A,
                  rng, return_noise_var):
    """The complex counterpart of a reference problem (see :func:`make_compressed_sensing`)."""
    if A is None:
        make = gaussian_matrix if kind == "gaussian" else conditioned_matrix
        A = make(n_measurements, n_features, random_state=rng, complex_valued=True, **kwargs)
    else:
        A = np.asarray(A, dtype=np.complex128)
        n_measurements, n_features = A.shape
    prior = BernoulliGaussianPrior(sparsity, var, n_features, complex_valued=True)
    X = prior.sample(n_samples, random_state=rng)
    noise_var = noise_variance_for_snr(snr_db, sparsity, var, n_features, n_measurements)
    shape = (n_samples, n_measurements)
    W = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * np.sqrt(noise_var / 2)
    Y = X @ A.T + W
    return (Y, X, A, noise_var) if return_noise_var else (Y, X, A)


def _problem_ensemble(problem: str, n_measurements: int, n_features: int) -> OperatorEnsemble:
    kind, _, kwargs = PROBLEMS[problem]
    if kind == "gaussian":
        return GaussianEnsemble(n_measurements, n_features)
    if kind == "conditioned":
        return ConditionedEnsemble(n_measurements, n_features, **kwargs)
    if kind == "dct":
        return PartialDCTEnsemble(n_measurements, n_features)
    raise ValueError(f"problem {problem!r} has no operator ensemble; pass one as ensemble=.")


def make_clustered_sparse(n_samples: int = 1000, n_features: int = 128,
                          n_measurements: int = 32, *, n_clusters=(1, 3), cluster_length=(3, 8),
                          decay_taps: float = 2.0, snr_db: float | None = 20.0,
                          complex_valued: bool = False, random_state=None,
                          return_noise_var: bool = False):
    r"""Generate ``(Y, X, A)``: clustered sparse signals measured through a Gaussian matrix.

    ``X`` is drawn from :class:`~sklearn_unfold.channels.ClusteredChannelPrior` (a few clusters
    of consecutive non-zeros whose power decays as ``e^{−l/d}``, ``E‖x‖² = 1``): structure a
    per-entry denoiser cannot see. ``A`` is ``M × N`` Gaussian with unit-norm columns, and
    ``Y = X Aᵀ + W`` with ``W ~ N(0, σ²)``, ``σ² = 10^{−SNR/10}/M`` (``CN`` for complex
    signals and matrices).

    Parameters
    ----------
    n_samples, n_features, n_measurements : int, default=1000, 128, 32
    n_clusters, cluster_length, decay_taps
        The prior (:class:`~sklearn_unfold.channels.ClusteredChannelPrior`).
    snr_db : float or None, default=20.0
    complex_valued : bool, default=False
    random_state : int, RandomState instance or None
        Seeds the matrix, then the signals, then the noise.
    return_noise_var : bool, default=False

    Returns
    -------
    Y : ndarray of shape (n_samples, n_measurements)
    X : ndarray of shape (n_samples, n_features)
    A : ndarray of shape (n_measurements, n_features)
    noise_var : float, only with ``return_noise_var``
    """
    from .channels import ClusteredChannelPrior

    rng = check_random_state(random_state)
    A = rng.standard_normal((n_measurements, n_features))
    if complex_valued:
        A = A + 1j * rng.standard_normal((n_measurements, n_features))
    A = A / np.linalg.norm(A, axis=0, keepdims=True)
    prior = ClusteredChannelPrior(n_features, n_clusters, cluster_length, decay_taps,
                                  complex_valued=bool(complex_valued))
    X = prior.sample(n_samples, rng)
    noise_var = 0.0 if snr_db is None else 10.0 ** (-float(snr_db) / 10.0) / n_measurements
    Y = X @ A.T + prior._draw(np.full((len(X), n_measurements), noise_var), rng)
    return (Y, X, A, noise_var) if return_noise_var else (Y, X, A)


def resolve_prior(signal_prior, X: np.ndarray | None = None):
    """Turn a ``signal_prior`` argument into a fitted prior object, or ``None``.

    Parameters
    ----------
    signal_prior : None, "bernoulli_gaussian" or object
        ``None`` is returned as is. The string gives a :class:`BernoulliGaussianPrior` whose
        rate and variance are fitted to ``X``. Any other object must have a
        ``sample(n_samples, random_state)`` method; it is copied (the caller's object is never
        modified) and, when it has a ``fit`` method and ``X`` is given, fitted to ``X``.
    X : ndarray of shape (n_samples, n_features), optional
        Training signals.

    Returns
    -------
    prior : object or None
    """
    if signal_prior is None:
        return None
    if isinstance(signal_prior, str):
        if signal_prior != "bernoulli_gaussian":
            raise ValueError(
                f"signal_prior must be None, 'bernoulli_gaussian' or an object with a "
                f"sample(n_samples, random_state) method; got {signal_prior!r}."
            )
        prior = BernoulliGaussianPrior()
        return prior.fit(X) if X is not None else prior
    if not callable(getattr(signal_prior, "sample", None)):
        raise TypeError(
            "signal_prior must have a sample(n_samples, random_state) method; got an object "
            f"of type {type(signal_prior).__name__}."
        )
    prior = copy.deepcopy(signal_prior)
    if X is not None and callable(getattr(prior, "fit", None)):
        fitted = prior.fit(X)
        prior = fitted if fitted is not None else prior
    return prior
