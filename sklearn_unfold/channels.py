r"""Pilot-based OFDM channel estimation: clustered sparse channels, data generators, baselines.

**Model.** An OFDM symbol has ``K`` subcarriers and a cyclic prefix of ``L`` samples; a channel
of ``L`` delay taps ``h ∈ ℂ^L`` has the frequency response ``H = F_L h``, ``(F_L)_{kl} =
e^{-2πi kl/K}``. Unit-modulus pilots on the ``P`` subcarriers ``𝒫``, divided out, observe

.. math:: y = A h + w, \qquad A = F[𝒫, :L] / \sqrt P, \qquad w \sim \mathcal{CN}(0, σ^2 I)

(:class:`~sklearn_unfold.operators.PilotDFT`; Coleri et al., "Channel estimation techniques
based on pilot arrangement in OFDM systems", IEEE Trans. Broadcast. 48, 2002). ``A`` has
unit-norm columns, so the signal power per measurement is ``E‖h‖²/P`` for any channel prior and

.. math:: \mathrm{SNR} = \frac{E\|A h\|^2}{E\|w\|^2} = \frac{E\|h\|^2 / M}{σ^2}, \qquad
          σ^2 = \frac{E\|h\|^2}{M}\, 10^{-\mathrm{SNR}/10}

with ``M = P`` measurements (``M = N_a P`` for the angle-delay variant; ``E‖h‖² = 1`` here).
Channels are sparse and clustered in delay (:class:`ClusteredChannelPrior`; Bajwa et al.,
"Compressed channel sensing: a new approach to estimating sparse multipath channels", Proc.
IEEE 98, 2010). Batches are rows: ``X (n, L)``, ``Y (n, P)``, complex. The baselines are numpy
functions vectorised over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils import check_random_state

from .operators import KroneckerOperator, LinearOperator, PilotDFT
from .operators.ofdm import _positive_int, unitary_dft_matrix

__all__ = ["ClusteredAngleDelayPrior", "ClusteredChannelPrior", "delay_lmmse",
           "make_angle_delay_channel_estimation", "make_ofdm_channel_estimation", "omp",
           "pilot_interpolation", "support_oracle"]


def _int_range(value, name: str, upper: int | None = None, upper_name: str = "") -> tuple[int, int]:
    """``(lo, hi)`` with ``1 ≤ lo ≤ hi (≤ upper)`` from an int or a pair of ints."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(np.ravel(value))
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
    if len(pair) != 2 or not ints or not 1 <= pair[0] <= pair[1]:
        raise ValueError(f"{name} must be a positive integer or a pair (low, high) of them with "
                         f"low <= high; got {value!r}.")
    if upper is not None and pair[1] > upper:
        raise ValueError(f"{name} must not exceed {upper_name}={upper}; got {value!r}.")
    return int(pair[0]), int(pair[1])


def _noise_variance(snr_db, energy: float, n_measurements: int) -> float:
    """``σ² = (E‖h‖² / M) · 10^(−SNR/10)``; 0 when ``snr_db`` is None (noiseless)."""
    if snr_db is not None and not (isinstance(snr_db, (int, float, np.number))
                                   and -math.inf < snr_db <= math.inf):
        raise ValueError(f"snr_db must be a number (dB) or None (noiseless); got {snr_db!r}.")
    return 0.0 if snr_db is None else energy / n_measurements * 10 ** (-snr_db / 10)


def _as_matrix(A, name: str = "A") -> np.ndarray:
    """The dense ``(M, N)`` matrix of a shared operator, a tensor or an array."""
    if isinstance(A, LinearOperator):
        if A.per_sample:
            raise ValueError(f"{name} must be shared by every sample; got shape {A.shape}.")
        wide = torch.complex128 if A.is_complex else torch.float64
        return A.to(dtype=wide, device="cpu").to_dense().numpy()
    arr = np.asarray(A.detach().cpu() if isinstance(A, torch.Tensor) else A)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a 2-D numeric matrix (M, N) or a shared LinearOperator; "
                        f"got {type(A).__name__} with shape {arr.shape} and dtype {arr.dtype}.")
    return arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64, copy=False)


def _as_batch(Y, width: int, name: str = "Y") -> np.ndarray:
    arr = np.asarray(Y.detach().cpu() if isinstance(Y, torch.Tensor) else Y)
    if arr.ndim != 2 or arr.shape[1] != width or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric array of shape (n_samples, {width}); got "
                         f"shape {arr.shape} and dtype {arr.dtype}.")
    return arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64, copy=False)


# ---------------------------------------------------------------------- priors
@dataclass
class ClusteredChannelPrior:
    r"""Sparse delay-domain channels made of a few clusters of consecutive taps.

    A channel has ``C`` clusters, ``C`` uniform on ``n_clusters = (C_lo, C_hi)``; cluster ``c``
    spans ``ℓ_c`` consecutive taps (``ℓ_c`` uniform on ``cluster_length``) from a start delay
    ``s_c`` uniform on ``{0, …, L − ℓ_c}`` (clusters lie inside ``[0, L)``; overlapping clusters
    add their powers). Given the clusters the taps are independent, circularly-symmetric Gaussian:

    .. math:: h_l \sim \mathcal{CN}(0, v_l), \qquad
              v_l = \frac1Z \sum_{c=1}^{C} e^{-(l - s_c)/d}\,[s_c ≤ l < s_c + ℓ_c], \qquad
              Z = E[C]\; E_ℓ\Big[\sum_{j=0}^{ℓ-1} e^{-j/d}\Big]

    with ``d = decay_taps``: every cluster decays exponentially from the same peak power ``1/Z``,
    and the one constant ``Z`` makes ``E‖h‖² = 1`` on average over channels (a channel with more
    or longer clusters has more energy, and a higher SNR than the nominal one).

    Parameters
    ----------
    n_taps : int
        ``L``.
    n_clusters : int or (int, int), default=(1, 3)
    cluster_length : int or (int, int), default=(3, 8)
        Taps per cluster, at most ``n_taps``.
    decay_taps : float, default=2.0
        ``d > 0``, the e-folding length of the power inside a cluster, in taps (``inf``: flat).
    complex_valued : bool, default=True
        ``False`` draws real taps ``h_l ~ N(0, v_l)`` instead.
    """

    n_taps: int
    n_clusters: int | tuple[int, int] = (1, 3)
    cluster_length: int | tuple[int, int] = (3, 8)
    decay_taps: float = 2.0
    complex_valued: bool = True

    def __post_init__(self):
        self._check()

    def _check(self):
        L = _positive_int(self.n_taps, "n_taps")
        clusters = _int_range(self.n_clusters, "n_clusters")
        lengths = _int_range(self.cluster_length, "cluster_length", L, "n_taps")
        d = self.decay_taps
        if isinstance(d, bool) or not isinstance(d, (int, float, np.number)) or not d > 0:
            raise ValueError(f"decay_taps must be a positive number (or inf); got {d!r}.")
        return L, clusters, lengths, float(d)

    @property
    def n_features(self) -> int:
        """The signal length ``L`` (what the estimators call ``n_features``)."""
        return int(self.n_taps)

    def _delay_powers(self, n: int, rng) -> np.ndarray:
        """``(n, C_hi, L)``: each cluster's tap variances (0 for unused cluster slots)."""
        L, (c_lo, c_hi), (l_lo, l_hi), d = self._check()
        count = rng.randint(c_lo, c_hi + 1, size=n)
        length = rng.randint(l_lo, l_hi + 1, size=(n, c_hi))
        start = rng.randint(0, L - length + 1)
        rel = np.arange(L) - start[..., None]
        prof = np.where((rel >= 0) & (rel < length[..., None]),
                        np.exp(-np.maximum(rel, 0) / d), 0.0)
        return prof * ((np.arange(c_hi) < count[:, None]) / self._scale())[..., None]

    def _scale(self) -> float:
        """``Z = E[C] · E_ℓ[Σ_{j<ℓ} e^{−j/d}]``, the mean energy of the unnormalised clusters."""
        _, (c_lo, c_hi), (l_lo, l_hi), d = self._check()
        energy = np.mean([np.exp(-np.arange(ell) / d).sum() for ell in range(l_lo, l_hi + 1)])
        return (c_lo + c_hi) / 2 * float(energy)

    def _draw(self, power: np.ndarray, rng) -> np.ndarray:
        if not self.complex_valued:
            return rng.standard_normal(power.shape) * np.sqrt(power)
        noise = rng.standard_normal(power.shape) + 1j * rng.standard_normal(power.shape)
        return noise * np.sqrt(power / 2)

    def _powers(self, n: int, rng) -> np.ndarray:
        return self._delay_powers(n, rng).sum(axis=1)

    def sample(self, n_samples: int, random_state=None) -> np.ndarray:
        """Draw ``n_samples`` channels of shape ``(n_samples, n_features)`` (complex128, or
        float64 when not ``complex_valued``)."""
        rng = check_random_state(random_state)
        return self._draw(self._powers(_positive_int(n_samples, "n_samples"), rng), rng)

    def power_delay_profile(self) -> np.ndarray:
        r"""``E|h_l|²`` for ``l < L`` (it sums to ``E‖h‖² = 1``), exactly: a cluster averaged
        over its ``n_ℓ`` lengths ``ℓ`` and its starts,

        .. math:: E|h_l|^2 = \frac{E[C]}{Z\,n_ℓ} \sum_{ℓ} \frac{1}{L-ℓ+1} \sum_{s=0}^{L-ℓ}
                  e^{-(l-s)/d}\,[s ≤ l < s+ℓ].
        """
        L, (c_lo, c_hi), (l_lo, l_hi), d = self._check()
        pdp = np.zeros(L)
        for ell in range(l_lo, l_hi + 1):
            pdp += np.convolve(np.exp(-np.arange(ell) / d), np.ones(L - ell + 1)) / (L - ell + 1)
        return pdp * (c_lo + c_hi) / 2 / ((l_hi - l_lo + 1) * self._scale())

    def fit(self, X=None, y=None) -> ClusteredChannelPrior:
        """No-op (the prior's parameters are fixed); checks ``X`` has ``n_taps`` columns."""
        if X is not None:
            _as_batch(X, self.n_features, "X")
        return self


@dataclass
class ClusteredAngleDelayPrior(ClusteredChannelPrior):
    r"""Angle-delay channels of a uniform linear array: clusters in delay × consecutive angles.

    The delay clusters of :class:`ClusteredChannelPrior`, each also covering ``w_c`` consecutive
    angle bins (``w_c`` uniform on ``angle_spread``) from a bin uniform on ``{0, …, N_a − 1}``,
    modulo ``N_a`` (the DFT's angle bins are circular), its power split equally over them. A
    channel is ``X (N_a, L)`` flattened row-major; ``E‖h‖² = 1`` and, by circular symmetry,
    ``E|h_{a,l}|² = E|h_l|²/N_a`` (:meth:`power_profile`).

    Parameters
    ----------
    n_taps, n_clusters, cluster_length, decay_taps
        As :class:`ClusteredChannelPrior`.
    n_antennas : int, default=32
        ``N_a``, the number of angle bins (antennas).
    angle_spread : int or (int, int), default=(1, 3)
        Angle bins per cluster, at most ``n_antennas``.
    """

    n_antennas: int = 32
    angle_spread: int | tuple[int, int] = (1, 3)

    def _check(self):
        Na = _positive_int(self.n_antennas, "n_antennas")
        _int_range(self.angle_spread, "angle_spread", Na, "n_antennas")
        return super()._check()

    @property
    def n_features(self) -> int:
        return int(self.n_antennas) * int(self.n_taps)

    def _powers(self, n: int, rng) -> np.ndarray:
        delay = self._delay_powers(n, rng)
        Na, (w_lo, w_hi) = int(self.n_antennas), _int_range(self.angle_spread, "angle_spread")
        first, width = rng.randint(0, Na, delay.shape[:2]), rng.randint(w_lo, w_hi + 1, delay.shape[:2])
        angle = ((np.arange(Na) - first[..., None]) % Na < width[..., None]) / width[..., None]
        return np.einsum("nca,ncl->nal", angle, delay).reshape(n, -1)

    def power_profile(self) -> np.ndarray:
        """``E|h_{a,l}|²`` flattened like the channels, shape ``(n_antennas·n_taps,)``."""
        return np.tile(self.power_delay_profile() / self.n_antennas, int(self.n_antennas))


# ---------------------------------------------------------------------- generators
def _pilot_operator(pilots, n_pilots, n_subcarriers, n_taps, pattern, rng) -> PilotDFT:
    if isinstance(pilots, KroneckerOperator):
        pilots = pilots.A2
    if isinstance(pilots, PilotDFT):
        return pilots.to(dtype=torch.complex128, device="cpu")
    return PilotDFT.random(n_pilots, n_subcarriers, n_taps, pattern, rng) if pilots is None \
        else PilotDFT(pilots, n_subcarriers, n_taps)


def make_ofdm_channel_estimation(
    n_samples: int = 1000, *, n_subcarriers: int = 1024, n_taps: int = 128, n_pilots: int = 48,
    pilot_pattern: str = "random", pilots=None, n_clusters=(1, 3), cluster_length=(3, 8),
    decay_taps: float = 2.0, snr_db: float | None = 20.0, random_state=None,
    return_noise_var: bool = False,
):
    r"""Generate ``(Y, X, A)``: pilot observations ``Y = X Aᵀ + W`` of clustered OFDM channels.

    ``X`` is drawn from :class:`ClusteredChannelPrior` (``E‖h‖² = 1``), ``A`` is the
    :class:`~sklearn_unfold.operators.PilotDFT` of the pilots and ``W ~ CN(0, σ²)`` with
    ``σ² = 10^(−SNR/10) / P`` (see the module docstring). For a test set on the same pilots,
    draw ``n_train + n_test`` pairs in one call and split them, or pass ``pilots=A`` with
    another ``random_state``.

    Parameters
    ----------
    n_samples : int, default=1000
    n_subcarriers, n_taps, n_pilots : int, default=1024, 128, 48
        ``K``, ``L`` and ``P``.
    pilot_pattern : {"random", "comb"}, default="random"
        How :meth:`PilotDFT.random <sklearn_unfold.operators.PilotDFT.random>` draws the
        pilots when ``pilots`` is not given.
    pilots : array-like of int, PilotDFT or KroneckerOperator, optional
        Fixed pilot subcarriers; an operator also fixes ``K``, ``L`` and ``P`` (its values win).
    n_clusters, cluster_length, decay_taps
        The channel prior (:class:`ClusteredChannelPrior`).
    snr_db : float or None, default=20.0
        ``None`` is noiseless.
    random_state : int, RandomState instance or None
        Seeds the pilots (when drawn), then the channels, then the noise.
    return_noise_var : bool, default=False

    Returns
    -------
    Y : ndarray of complex128, shape (n_samples, P)
    X : ndarray of complex128, shape (n_samples, L)
    A : PilotDFT of shape (P, L)
    noise_var : float, only with ``return_noise_var``
    """
    rng = check_random_state(random_state)
    A = _pilot_operator(pilots, n_pilots, n_subcarriers, n_taps, pilot_pattern, rng)
    prior = ClusteredChannelPrior(A.n_taps, n_clusters, cluster_length, decay_taps)
    return _observe(prior, A, n_samples, snr_db, rng, return_noise_var)


def make_angle_delay_channel_estimation(
    n_samples: int = 1000, *, n_antennas: int = 32, n_subcarriers: int = 512, n_taps: int = 64,
    n_pilots: int = 32, pilot_pattern: str = "random", pilots=None, n_clusters=(1, 3),
    cluster_length=(3, 8), angle_spread=(1, 3), decay_taps: float = 2.0,
    snr_db: float | None = 20.0, random_state=None, return_noise_var: bool = False,
):
    r"""Massive-MIMO uplink pilots: ``(Y, X, A)`` with channels sparse in angle and delay.

    A uniform linear array of ``N_a`` half-wavelength-spaced antennas observes the pilot
    subcarriers of the space-frequency channel ``F_a X F_Lᵀ``, ``F_a`` the unitary ``N_a``-point
    DFT and ``X (N_a, L)`` the angle-delay channel (:class:`ClusteredAngleDelayPrior`):

    .. math:: y = (F_a ⊗ A_p)\, \mathrm{vec}(X) + w, \qquad A_p = F[𝒫, :L]/\sqrt P,
              \qquad σ^2 = 10^{-\mathrm{SNR}/10} / (N_a P)

    (row-major ``vec``); ``A`` is the :class:`~sklearn_unfold.operators.KroneckerOperator` of
    the dense unitary DFT and the :class:`~sklearn_unfold.operators.PilotDFT` (unit-norm
    columns; VAMP's LMMSE stage runs through both factors' SVDs). ``F_a`` being unitary, the
    rotated measurements ``(F_aᴴ ⊗ I) y`` are ``N_a`` OFDM problems on the same pilots, one per
    angle bin, coupled only by the prior (most bins are empty); a solver that models one error
    variance per sample over all bins (VAMP) can diverge here. Parameters as
    :func:`make_ofdm_channel_estimation` (``pilots`` may be the ``A`` returned here), and

    Parameters
    ----------
    n_antennas : int, default=32
    angle_spread : int or (int, int), default=(1, 3)
        Consecutive angle bins per cluster.

    Returns
    -------
    Y : ndarray of complex128, shape (n_samples, n_antennas·P)
    X : ndarray of complex128, shape (n_samples, n_antennas·L)
    A : KroneckerOperator of shape (n_antennas·P, n_antennas·L)
    noise_var : float, only with ``return_noise_var``
    """
    rng = check_random_state(random_state)
    kron = isinstance(pilots, KroneckerOperator)
    Na = pilots.A1.shape[1] if kron else _positive_int(n_antennas, "n_antennas")
    Ap = _pilot_operator(pilots, n_pilots, n_subcarriers, n_taps, pilot_pattern, rng)
    prior = ClusteredAngleDelayPrior(Ap.n_taps, n_clusters, cluster_length, decay_taps,
                                     n_antennas=Na, angle_spread=angle_spread)
    A = KroneckerOperator(unitary_dft_matrix(Na), Ap)
    return _observe(prior, A, n_samples, snr_db, rng, return_noise_var)


def _observe(prior, A, n_samples, snr_db, rng, return_noise_var):
    noise_var = _noise_variance(snr_db, 1.0, A.n_measurements)
    X = prior.sample(n_samples, rng)
    Y = A.forward(torch.from_numpy(X)).numpy() + prior._draw(np.full((len(X), A.shape[0]), noise_var), rng)
    return (Y, X, A, noise_var) if return_noise_var else (Y, X, A)


# ---------------------------------------------------------------------- baselines
def pilot_interpolation(Y, A: PilotDFT, *, kind: str = "linear", periodic: bool = True) -> np.ndarray:
    r"""Least squares on the pilots, interpolated over the subcarriers: ``Ĥ (n, K)``.

    On the pilots ``Ĥ_p = √P y_p`` (the least-squares estimate ``H_p + √P w_p`` once the
    ``1/√P`` of ``A`` is undone); between them the real and imaginary parts are interpolated
    linearly in the subcarrier index (Coleri et al. 2002). The estimate is not restricted to
    ``L`` taps: compare it with ``A.frequency_response(X)``.

    Parameters
    ----------
    Y : array-like of shape (n_samples, P)
    A : PilotDFT
    kind : {"linear"}, default="linear"
    periodic : bool, default=True
        Circular subcarrier index (``H`` has period ``K``: beyond the last pilot the estimate
        runs towards the first one); otherwise the edge pilots' values are held.

    Returns
    -------
    H_hat : ndarray of complex128, shape (n_samples, K)
    """
    if not isinstance(A, PilotDFT):
        raise TypeError(f"A must be a PilotDFT (it needs the pilot positions); got {type(A).__name__}.")
    if kind != "linear":
        raise ValueError(f"kind must be 'linear'; got {kind!r}.")
    Hp = _as_batch(Y, A.n_pilots) * math.sqrt(A.n_pilots)
    K, p, eye = A.n_subcarriers, A.pilots, np.eye(A.n_pilots)
    W = np.stack([np.interp(np.arange(K), p, e, period=K if periodic else None) for e in eye])
    return Hp.astype(np.complex128) @ W


def delay_lmmse(Y, A, tap_power, noise_var: float) -> np.ndarray:
    r"""The LMMSE (Gaussian posterior-mean) estimate of the channels, ``ĥ (n, N)``.

    .. math:: \hat h = R Aᴴ (A R Aᴴ + σ^2 I)^{-1} y

    with ``R = diag(tap_power)`` (the power-delay profile; Edfors et al. 1998) or a full
    covariance; one ``M × M`` solve serves the whole batch.

    Parameters
    ----------
    Y : array-like of shape (n_samples, M)
    A : PilotDFT, KroneckerOperator, shared LinearOperator or array of shape (M, N)
    tap_power : array-like of shape (N,) or (N, N)
        ``E|h_l|²`` (non-negative) or the covariance ``E[h hᴴ]``.
    noise_var : float
        ``σ² ≥ 0`` (0 needs ``A R Aᴴ`` invertible).

    Returns
    -------
    h_hat : ndarray of shape (n_samples, N), complex128 (float64 for real Y, A and R)
    """
    Y, Amat = _problem(Y, A)
    M, N = Amat.shape
    R = np.asarray(tap_power)
    if R.shape not in ((N,), (N, N)) or not np.issubdtype(R.dtype, np.number) or (
            R.ndim == 1 and (np.iscomplexobj(R) or np.any(R < 0))):
        raise ValueError(f"tap_power must be ({N},) non-negative tap variances or an ({N}, {N}) "
                         f"covariance; got shape {R.shape}, dtype {R.dtype}, min {R.real.min()}.")
    if not isinstance(noise_var, (int, float, np.number)) or not 0 <= noise_var < math.inf:
        raise ValueError(f"noise_var must be a finite number >= 0; got {noise_var!r}.")
    AR = Amat * R if R.ndim == 1 else Amat @ R
    G = AR @ Amat.conj().T + noise_var * np.eye(M)
    try:
        B = np.linalg.solve(G, AR)  # G⁻¹ A R, whose conjugate transpose is R Aᴴ G⁻¹
    except np.linalg.LinAlgError as exc:
        raise ValueError("A R Aᴴ + noise_var I is singular; pass noise_var > 0.") from exc
    return Y @ B.conj()


def _problem(Y, A) -> tuple[np.ndarray, np.ndarray]:
    """``Y (n, M)`` and the dense ``A (M, N)``, in their common dtype."""
    Amat = _as_matrix(A)
    Y = _as_batch(Y, Amat.shape[0])
    dtype = np.result_type(Y, Amat)
    return Y.astype(dtype, copy=False), Amat.astype(dtype, copy=False)


def _fit_support(Z: np.ndarray, gram: np.ndarray, idx: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-row least squares on the columns ``idx_i`` by the normal equations ``A_Sᴴ A_S c = A_Sᴴ y``
    (``Z`` the rows ``Aᴴ y``, ``gram = AᴴA``), scattered into ``(n, N)``; a padded slot (``valid``
    False) gets a unit diagonal and a zero right-hand side, so its coefficient is 0."""
    both = valid[:, :, None] & valid[:, None, :]
    G = np.where(both, gram[idx[:, :, None], idx[:, None, :]], np.eye(idx.shape[1]))
    b = np.where(valid, np.take_along_axis(Z, idx, axis=1), 0)
    coef = np.zeros(Z.shape, Z.dtype)
    np.put_along_axis(coef, idx, np.linalg.solve(G, b[..., None])[..., 0], axis=1)
    return coef


def omp(Y, A, n_nonzero_coefs: int) -> np.ndarray:
    r"""Orthogonal matching pursuit, complex and batched: ``ĥ (n, N)`` with ``k`` non-zeros.

    Per sample, the column most correlated with the residual, ``argmax_j |a_jᴴ r|``, joins the
    support and the coefficients are refitted by least squares on it, ``r = y − A_S ĉ``; a
    sample stops early when its residual vanishes (Pati, Rezaiifar & Krishnaprasad, Asilomar
    1993). Columns are compared without normalisation, as
    :func:`sklearn.linear_model.orthogonal_mp` does (this matches it on real data).

    Parameters
    ----------
    Y : array-like of shape (n_samples, M)
    A : PilotDFT, KroneckerOperator, shared LinearOperator or array of shape (M, N)
    n_nonzero_coefs : int
        ``k``, in ``[1, min(M, N)]``.

    Returns
    -------
    h_hat : ndarray of shape (n_samples, N)
    """
    Y, Amat = _problem(Y, A)
    k = _positive_int(n_nonzero_coefs, "n_nonzero_coefs")
    if k > min(Amat.shape):
        raise ValueError(f"n_nonzero_coefs must be at most min(M, N) = {min(Amat.shape)}; got {k}.")
    coef, support = np.zeros((Y.shape[0], Amat.shape[1]), Y.dtype), np.zeros((Y.shape[0], k), int)
    Z, gram = Y @ Amat.conj(), Amat.conj().T @ Amat
    y_norm = np.linalg.norm(Y, axis=1)
    tiny, active, R = 1e-12 * y_norm * np.linalg.norm(Amat, axis=0).max(), np.arange(len(Y)), Y.copy()
    for t in range(k):
        corr = np.abs(R[active] @ Amat.conj())
        np.put_along_axis(corr, support[active, :t], -1.0, axis=1)
        ok = corr.max(axis=1) > tiny[active]
        support[active[ok], t] = corr.argmax(axis=1)[ok]
        active = active[ok]
        if active.size == 0:
            break
        coef[active] = _fit_support(Z[active], gram, support[active, :t + 1],
                                    np.ones((active.size, t + 1), bool))
        R[active] = Y[active] - coef[active] @ Amat.T
        active = active[np.linalg.norm(R[active], axis=1) > 1e-12 * y_norm[active]]
    return coef


def support_oracle(Y, A, support_mask) -> np.ndarray:
    r"""Least squares on the true non-zero taps: ``ĥ_S = A_S⁺ y``, zero elsewhere.

    The error floor of any estimator that must find the support: unbiased, with error
    ``σ² tr((A_Sᴴ A_S)⁻¹)`` per sample.

    Parameters
    ----------
    Y : array-like of shape (n_samples, M)
    A : PilotDFT, KroneckerOperator, shared LinearOperator or array of shape (M, N)
    support_mask : array-like of bool, shape (n_samples, N) or (N,)
        The taps to fit (e.g. ``X != 0``): columns ``A_S`` of full rank (at most ``M``).

    Returns
    -------
    h_hat : ndarray of shape (n_samples, N)
    """
    Y, Amat = _problem(Y, A)
    M, N = Amat.shape
    mask = np.asarray(support_mask)
    if mask.dtype != bool:
        raise TypeError(f"support_mask must be boolean; got dtype {mask.dtype}.")
    mask = np.broadcast_to(mask, Y.shape[:1] + (N,)) if mask.shape == (N,) else mask
    if mask.shape != (Y.shape[0], N):
        raise ValueError(f"support_mask must have shape ({Y.shape[0]}, {N}) or ({N},); got "
                         f"{np.shape(support_mask)}.")
    counts = mask.sum(axis=1)
    if counts.max(initial=0) > M:
        raise ValueError(f"support_mask selects up to {counts.max()} taps, more than the {M} "
                         "measurements: the least squares are not unique.")
    s = max(int(counts.max(initial=0)), 1)
    idx = np.argsort(~mask, axis=1, kind="stable")[:, :s]
    return _fit_support(Y @ Amat.conj(), Amat.conj().T @ Amat, idx, np.arange(s) < counts[:, None])
