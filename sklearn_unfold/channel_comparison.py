"""The OFDM channel-estimation comparison behind ``sklearn-unfold compare --problem ofdm``.

:func:`run_channel_comparison` draws pilot observations of clustered sparse channels
(:func:`~sklearn_unfold.channels.make_ofdm_channel_estimation`: ``K`` subcarriers, ``L`` delay
taps, ``P`` pilots; the training and test pairs in one call, so they share the pilots), fits
every method of :data:`CHANNEL_METHODS` on the training pairs and measures it on the test pairs.
Every NMSE is that of the frequency response ``H`` on all ``K`` subcarriers: a delay-domain
estimate ``ĥ`` has ``NMSE(Ĥ) = NMSE(ĥ)`` exactly (``F[:, :L]`` has orthogonal columns of equal
norm), so those are scored, and their curves drawn through ``staged_predict``, on ``h``; pilot
least squares with interpolation, which estimates ``Ĥ`` directly, is scored against
``A.frequency_response(X_test)``. The rows are :class:`~sklearn_unfold.comparison.ComparisonResult`
objects, printed by :func:`~sklearn_unfold.comparison.format_table` and drawn by
:func:`~sklearn_unfold.comparison.plot_comparison` (the methods without a curve, LS, LMMSE, OMP
and the support oracle, as horizontal lines).

The support oracle (least squares on each test channel's true non-zero taps) is a reference
line, the error floor of an estimator that has to find the support, not an estimator: it is
given the test channels' support, which :func:`run_channel_comparison` passes to it alone.

Examples
--------
>>> from sklearn_unfold.channel_comparison import run_channel_comparison
>>> rows = run_channel_comparison(["ls-interp", "vamp-bg", "oracle"], n_train=200, n_test=50,
...                               n_subcarriers=256, n_taps=32, n_pilots=16, progress=False)
>>> [r.label for r in rows]
['pilot LS + interpolation', 'VAMP-bg', 'support oracle']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from tqdm.auto import tqdm

from .channels import make_ofdm_channel_estimation, pilot_interpolation, support_oracle
from .comparison import ComparisonResult, Method, _fit_and_score, _notes, learned_import_error
from .estimators import AMPRegressor, LinearMMSERegressor, OMPRegressor, VAMPRegressor
from .operators import PilotDFT
from .operators.ofdm import pilot_dft_matrix

__all__ = ["CHANNEL_METHODS", "ChannelData", "LEARNED_CONFIG", "OFDM_PROBLEM", "PilotInterpolation",
           "QUICK_MAX_EPOCHS", "QUICK_OFDM", "SupportOracle", "available_channel_methods",
           "make_channel_data", "run_channel_comparison"]

#: The reference OFDM problem (read-only): ``K = 1024`` subcarriers, ``L = 128`` taps, ``P = 48``
#: random pilots at 20 dB, 20,000 training and 2,000 test pairs.
OFDM_PROBLEM = MappingProxyType({"n_subcarriers": 1024, "n_taps": 128, "n_pilots": 48,
                                 "pilot_pattern": "random", "snr_db": 20.0, "n_train": 20000,
                                 "n_test": 2000})
#: The problem of ``compare --problem ofdm --quick``: the same ``K``, ``L``, ``P`` and SNR with
#: fewer pairs (read-only).
QUICK_OFDM = MappingProxyType({**OFDM_PROBLEM, "n_train": 2000, "n_test": 500})
#: The parameters of the learned networks (read-only), besides ``A`` and ``random_state``. They
#: train on the given pairs (no signal prior), with each estimator's default schedule but a
#: longer patience: on these channels the validation NMSE improves by less than the default
#: ``tol`` per check for long stretches. LDVAMP unrolls damped VAMP (as VAMP-bg is run here);
#: 20 layers is the depth at which both networks reach VAMP-bg's 30 iterations (the
#: benchmarks page of the documentation has the depth study, ``benchmarks/channel.py``).
LEARNED_CONFIG = MappingProxyType({
    "lamp": MappingProxyType({"n_layers": 20, "n_iter_no_change": 10}),
    "ldvamp": MappingProxyType({"n_layers": 20, "damping": 0.8, "n_iter_no_change": 10}),
})
#: The learned networks' ``max_epochs`` cap with ``quick=True`` (passes over the pairs per stage).
QUICK_MAX_EPOCHS = 5

_PROBLEM_KEYS = ("n_subcarriers", "n_taps", "n_pilots", "pilot_pattern", "snr_db")


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ChannelData:
    """Training and test pairs of one OFDM problem, observed through the same pilots.

    Attributes
    ----------
    A : PilotDFT
        The pilot operator (``.frequency_response``, ``.pilots``, ``.n_subcarriers``).
    Y_train, X_train, Y_test, X_test : ndarray of complex128
        Pilot observations ``(n, P)`` and delay-domain channels ``(n, L)``.
    noise_var : float
        ``σ² = E|w|²`` of the observations.
    snr_db : float or None
    problem : mapping
        ``n_subcarriers``, ``n_taps``, ``n_pilots``, ``pilot_pattern`` and ``snr_db``.
    """

    A: PilotDFT
    Y_train: np.ndarray
    X_train: np.ndarray
    Y_test: np.ndarray
    X_test: np.ndarray
    noise_var: float
    snr_db: float | None
    problem: Mapping

    def describe(self) -> str:
        """``K=…, L=…, P=… <pattern> pilots, SNR … dB`` (for headers and titles)."""
        p = self.problem
        snr = "noiseless" if self.snr_db is None else f"SNR {self.snr_db:g} dB"
        return (f"K={p['n_subcarriers']}, L={p['n_taps']}, P={p['n_pilots']} "
                f"{p['pilot_pattern']} pilots, {snr}")


def make_channel_data(n_train: int | None = None, n_test: int | None = None, random_state=0,
                      **problem) -> ChannelData:
    """Draw ``n_train + n_test`` pairs in one call (one set of pilots) and split them.

    Parameters
    ----------
    n_train, n_test : int, optional
        Sample counts; those of :data:`OFDM_PROBLEM` by default.
    random_state : int, RandomState instance or None, default=0
        Seeds the pilots, the channels and the noise.
    **problem
        ``n_subcarriers``, ``n_taps``, ``n_pilots``, ``pilot_pattern``, ``snr_db`` (defaults
        from :data:`OFDM_PROBLEM`), passed to
        :func:`~sklearn_unfold.channels.make_ofdm_channel_estimation`.

    Returns
    -------
    ChannelData
    """
    unknown = sorted(set(problem) - set(_PROBLEM_KEYS))
    if unknown:
        raise TypeError(f"make_channel_data got unknown problem option(s) {unknown}; "
                        f"choose from {list(_PROBLEM_KEYS)}.")
    n_train = OFDM_PROBLEM["n_train"] if n_train is None else n_train
    n_test = OFDM_PROBLEM["n_test"] if n_test is None else n_test
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    spec = {k: problem.get(k, OFDM_PROBLEM[k]) for k in _PROBLEM_KEYS}
    Y, X, A, noise_var = make_ofdm_channel_estimation(
        int(n_train) + int(n_test), random_state=random_state, return_noise_var=True, **spec)
    n = int(n_train)
    return ChannelData(A, Y[:n], X[:n], Y[n:], X[n:], float(noise_var), spec["snr_db"],
                       MappingProxyType(spec))


# ----------------------------------------------------------------------------- non-estimators
class PilotInterpolation:
    """Pilot least squares with linear interpolation of ``H`` (Coleri et al. 2002).

    Nothing to fit; :meth:`predict` returns the frequency response ``Ĥ (n, K)``
    (:func:`~sklearn_unfold.channels.pilot_interpolation`), not delay-domain taps, which
    :attr:`output` declares: the runner scores it against ``A.frequency_response(X)``.
    """

    output = "frequency"

    def __init__(self, A: PilotDFT, *, periodic: bool = True):
        self.A, self.periodic = A, periodic

    def fit(self, Y: np.ndarray, X: np.ndarray | None = None) -> PilotInterpolation:
        """Nothing to learn; returns ``self``."""
        return self

    def predict(self, Y: np.ndarray) -> np.ndarray:
        """``Ĥ (n, K)`` from the pilot observations ``Y (n, P)``."""
        return pilot_interpolation(Y, self.A, periodic=self.periodic)


class SupportOracle:
    """Least squares on each channel's true non-zero taps: a reference line, not an estimator.

    :meth:`predict` needs the support of the very channels it estimates
    (:func:`~sklearn_unfold.channels.support_oracle`), which no receiver knows; its NMSE is the
    floor of any estimator that has to find the support. :attr:`needs_support` tells the
    runner to pass the test channels' support (``X_test != 0``) and to no other method. A
    channel with more non-zero taps than pilots gets the minimum-norm least-squares fit on its
    support (counted in ``n_underdetermined_``).
    """

    output = "delay"
    needs_support = True

    def __init__(self, A: PilotDFT):
        self.A = A

    def fit(self, Y: np.ndarray, X: np.ndarray | None = None) -> SupportOracle:
        """Nothing to learn; resets ``n_underdetermined_`` and returns ``self``."""
        self.n_underdetermined_ = 0
        return self

    def predict(self, Y: np.ndarray, support_mask: np.ndarray) -> np.ndarray:
        """``ĥ (n, L)``: least squares of ``Y (n, P)`` on the taps of ``support_mask (n, L)``."""
        Y, mask = np.asarray(Y), np.asarray(support_mask)
        if mask.dtype != bool or mask.shape != (Y.shape[0], self.A.n_taps):
            raise ValueError(f"support_mask must be a boolean array of shape ({Y.shape[0]}, "
                             f"{self.A.n_taps}); got dtype {mask.dtype}, shape {mask.shape}.")
        over = mask.sum(axis=1) > self.A.n_pilots
        if not over.any():
            return support_oracle(Y, self.A, mask)
        out = np.zeros((Y.shape[0], self.A.n_taps), np.complex128)
        if not over.all():
            out[~over] = support_oracle(Y[~over], self.A, mask[~over])
        dense = pilot_dft_matrix(self.A.pilots, self.A.n_subcarriers, self.A.n_taps)
        for i in np.flatnonzero(over):
            out[i, mask[i]] = np.linalg.lstsq(dense[:, mask[i]], Y[i], rcond=None)[0]
        self.n_underdetermined_ = getattr(self, "n_underdetermined_", 0) + int(over.sum())
        return out


class _WithSupport:
    """``predict(Y)`` of the oracle with one chunk's support bound (for the chunked runner)."""

    def __init__(self, oracle: SupportOracle, support_mask: np.ndarray):
        self.oracle, self.support_mask = oracle, support_mask

    def predict(self, Y: np.ndarray) -> np.ndarray:
        return self.oracle.predict(Y, self.support_mask)


# ----------------------------------------------------------------------------- registry
def _fixed(factory: Callable[[PilotDFT], object]) -> Callable:
    """Factory of a method with nothing to train: ``random_state`` and ``quick`` do not apply."""

    def build(data: ChannelData, random_state: int, quick: bool = False):
        return factory(data.A)

    return build


def _learned(name: str, class_name: str) -> Callable:
    """Factory of a learned network with the parameters of ``LEARNED_CONFIG[name]``.

    The network trains on the given pairs (not on a signal prior), seeded by ``random_state``;
    with ``quick=True`` its ``max_epochs`` is at most :data:`QUICK_MAX_EPOCHS`. The config is
    read when the factory is called, so a changed :data:`LEARNED_CONFIG` applies.
    """

    def build(data: ChannelData, random_state: int, quick: bool = False):
        from .estimators import learned

        est = getattr(learned, class_name)(A=data.A)
        est.set_params(random_state=random_state, **LEARNED_CONFIG[name])
        if quick:
            est.set_params(max_epochs=min(est.get_params()["max_epochs"], QUICK_MAX_EPOCHS))
        return est

    return build


#: The methods of the channel comparison, by the name ``--methods`` takes (read-only).
CHANNEL_METHODS = MappingProxyType({
    "ls-interp": Method("pilot LS + interpolation", _fixed(PilotInterpolation)),
    "lmmse": Method("LMMSE (PDP)", _fixed(lambda A: LinearMMSERegressor(A=A))),
    "omp": Method("complex OMP", _fixed(lambda A: OMPRegressor(A=A))),
    "amp-bg": Method("AMP-bg", _fixed(lambda A: AMPRegressor(A=A, denoiser="bg", max_iter=30))),
    # undamped VAMP oscillates on this partial DFT; damping 0.8 reproduces the published figure
    "vamp-bg": Method("VAMP-bg", _fixed(
        lambda A: VAMPRegressor(A=A, denoiser="bg", max_iter=30, damping=0.8))),
    "lamp": Method("LAMP-bg", _learned("lamp", "LAMPRegressor"), learned=True),
    "ldvamp": Method("LDVAMP-bg", _learned("ldvamp", "LDVAMPRegressor"), learned=True),
    "oracle": Method("support oracle", _fixed(SupportOracle)),
})


def available_channel_methods() -> list[str]:
    """Names of the channel methods that can run here (learned ones only when importable)."""
    learned_ok = learned_import_error() is None
    return [k for k, m in CHANNEL_METHODS.items() if learned_ok or not m.learned]


# ----------------------------------------------------------------------------- running
def _extra_notes(est) -> list[str]:
    notes = []
    damping = getattr(est, "damping", None)
    if damping is not None and damping != 1:
        notes.append(f"damping={damping:g}")
    if getattr(est, "n_underdetermined_", 0):
        notes.append(f"min-norm on {est.n_underdetermined_} channels with more taps than pilots")
    return notes


def _run_method(name: str, data: ChannelData, *, random_state: int, curves: bool,
                chunk_size: int, progress: bool, quick: bool) -> ComparisonResult:
    method = CHANNEL_METHODS[name]
    est = method.build(data, random_state, quick=quick)
    if progress and method.learned and "verbose" in est.get_params():
        est.set_params(verbose=1)  # the training engine's own progress bar
    # an estimate of H is scored against H; one of h against h (the same NMSE, at L/K the cost)
    frequency = getattr(est, "output", "delay") == "frequency"
    target = data.A.frequency_response(data.X_test) if frequency else data.X_test
    # a curve for what iterates (AMP, VAMP) or has layers; LMMSE and OMP, whose staged_predict
    # has one stage, are horizontal lines like LS and the oracle
    params = est.get_params() if hasattr(est, "get_params") else {}
    iterative = "max_iter" in params
    staged = curves and hasattr(est, "staged_predict") and (iterative or "n_layers" in params)

    def with_support(model, sl: slice):
        return _WithSupport(model, data.X_test[sl] != 0)

    curve, fit_seconds, elapsed, n_iter, caught = _fit_and_score(
        est, method.label, data.Y_train, data.X_train, data.Y_test, target, staged=staged,
        chunk_size=chunk_size, progress=progress,
        predictor=with_support if getattr(est, "needs_support", False) else None)
    n_test = data.Y_test.shape[0]
    if staged:
        n_iter = curve.size
    elif n_iter is None:
        # OMP: its k iterations (selected taps); LS, LMMSE and the oracle: "-"
        n_iter = getattr(est, "n_nonzero_coefs_", getattr(est, "n_layers", None))
    notes = ", ".join(filter(None, [_notes(est, caught), *_extra_notes(est)]))
    return ComparisonResult(name, method.label, n_iter, float(curve[-1]), fit_seconds,
                            1e3 * elapsed / n_test, notes, curve if staged else None)


def run_channel_comparison(methods: Sequence[str] | None = None, *, data: ChannelData | None = None,
                           n_train: int | None = None, n_test: int | None = None,
                           random_state: int = 0, curves: bool = True, chunk_size: int = 500,
                           progress: bool = True, quick: bool = False,
                           callback: Callable[[ComparisonResult], None] | None = None,
                           **problem) -> list[ComparisonResult]:
    """Fit every channel method on the training pairs and measure it on the test pairs.

    Parameters
    ----------
    methods : sequence of str, optional
        Names from :data:`CHANNEL_METHODS`; default :func:`available_channel_methods`.
    data : ChannelData, optional
        Reuse a problem (:func:`make_channel_data`); then ``n_train``, ``n_test`` and
        ``**problem`` must not be given.
    n_train, n_test : int, optional
        Sample counts; those of :data:`OFDM_PROBLEM`, or of :data:`QUICK_OFDM` with ``quick``.
    random_state : int, default=0
        Seeds the data and the learned networks' training.
    curves : bool, default=True
        Record the test NMSE after every iteration / layer of the methods with
        ``staged_predict`` (the prediction time excludes that bookkeeping).
    chunk_size : int, default=500
        Test samples per ``predict`` call (the progress bar advances per chunk).
    progress : bool, default=True
        Show tqdm progress bars (on stderr).
    quick : bool, default=False
        The sizes of :data:`QUICK_OFDM` (without ``data``) and the learned networks' training
        capped at :data:`QUICK_MAX_EPOCHS`.
    callback : callable, optional
        Called with each method's result as soon as it is measured.
    **problem
        ``n_subcarriers``, ``n_taps``, ``n_pilots``, ``pilot_pattern``, ``snr_db``
        (:func:`make_channel_data`).

    Returns
    -------
    list of ComparisonResult
        One per method, in the order given; ``nmse_db`` is the test NMSE of ``H`` in dB.
    """
    methods = list(available_channel_methods() if methods is None else methods)
    unknown = [m for m in methods if m not in CHANNEL_METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(CHANNEL_METHODS)}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")
    if data is None:
        base = QUICK_OFDM if quick else OFDM_PROBLEM
        data = make_channel_data(base["n_train"] if n_train is None else n_train,
                                 base["n_test"] if n_test is None else n_test, random_state,
                                 **{**{k: base[k] for k in _PROBLEM_KEYS}, **problem})
    else:
        given = [k for k, v in (("n_train", n_train), ("n_test", n_test)) if v is not None]
        if given or problem:
            raise ValueError(f"data was given, so {given + sorted(problem)} cannot apply; pass "
                             "them to make_channel_data instead.")
    results = []
    with tqdm(methods, desc="compare", unit="method", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(CHANNEL_METHODS[name].label)
            results.append(_run_method(name, data, random_state=random_state,
                                       curves=curves, chunk_size=chunk_size, progress=progress,
                                       quick=quick))
            if callback is not None:
                callback(results[-1])
    return results
