"""The method comparison behind ``sklearn-unfold compare``, importable by benchmarks and docs.

:func:`run_comparison` draws a reference problem
(:func:`~sklearn_unfold.datasets.make_compressed_sensing`, or takes one), fits every
method on the training pairs (what is ``"auto"``: the prior, the noise level, thresholds, the
peers' tuning, the networks' weights), runs it on a fresh test set measured through the same
``A`` and returns one :class:`ComparisonResult` per method, with its NMSE after every iteration
or layer. :func:`format_table` prints them; :func:`plot_comparison` draws NMSE against iteration
with the non-iterative peers (scikit-learn's ``Lasso`` and ``OrthogonalMatchingPursuit``) as
horizontal lines. The methods are the read-only table :data:`METHODS` (name → label, factory).

Examples
--------
>>> from sklearn_unfold.comparison import format_table, run_comparison
>>> rows = run_comparison(["amp-bg", "omp"], n_train=100, n_test=20, progress=False)
>>> [r.label for r in rows]
['AMP-bg', 'sklearn OMP']
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.linear_model import Lasso, OrthogonalMatchingPursuit, orthogonal_mp
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from .datasets import make_compressed_sensing
from .estimators import AMPRegressor, FISTARegressor, ISTARegressor, VAMPRegressor

__all__ = ["ComparisonData", "ComparisonResult", "METHODS", "Method", "QUICK_N_VAL", "QUICK_PROBLEM",
           "QUICK_STEPS", "available_methods", "default_methods", "format_table",
           "learned_import_error", "make_comparison_data", "plot_comparison", "run_comparison"]


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ComparisonData:
    """Training and test pairs of one problem, measured through the same ``A``."""

    problem: str
    A: np.ndarray
    Y_train: np.ndarray
    X_train: np.ndarray
    Y_test: np.ndarray
    X_test: np.ndarray


def make_comparison_data(problem: str = "giid", n_train: int = 1000, n_test: int = 1000,
                         random_state=0, *, n_features: int = 500,
                         n_measurements: int = 250) -> ComparisonData:
    """Draw a reference problem's ``A``, a training set and a fresh test set through that ``A``.

    Parameters
    ----------
    problem : {"giid", "kappa15", "noiseless", "dct"}
    n_train, n_test : int
        Sample counts.
    random_state : int, RandomState instance or None
    n_features, n_measurements : int, default=500, 250
        ``N`` and ``M`` (the reference problems' sizes by default).

    Returns
    -------
    ComparisonData
    """
    rng = check_random_state(random_state)
    Y, X, A = make_compressed_sensing(problem, n_train, n_features=n_features,
                                      n_measurements=n_measurements, random_state=rng)
    Y_test, X_test, _ = make_compressed_sensing(problem, n_test, A=A, random_state=rng)
    return ComparisonData(problem, A, Y, X, Y_test, X_test)


#: The problem of ``compare --quick``: the reference problems' ratios (M / N = 1/2, 10 %
#: non-zeros, 40 dB) at half their size, with fewer pairs (read-only).
QUICK_PROBLEM = MappingProxyType({"n_train": 500, "n_test": 100, "n_features": 250,
                                  "n_measurements": 125})
#: Optimiser steps per training stage of each learned method under ``compare --quick``
#: (30, 100 and 100 otherwise; read-only).
QUICK_STEPS = MappingProxyType({"lista": 10, "lamp": 20, "ldvamp": 10})
#: Validation pairs on which ``compare --quick`` tunes the scikit-learn peers (100 otherwise).
QUICK_N_VAL = 50


# ----------------------------------------------------------------------------- peers
class _TunedLasso:
    """scikit-learn's ``Lasso`` (``fit_intercept=False``) per sample, alpha tuned on validation.

    ``fit`` picks ``alpha_`` by validation NMSE on the last ``n_val`` training pairs over a
    geometric grid (ratio √2) centred on the LASSO weight that :class:`ISTARegressor` calibrates
    (divided by ``M``, sklearn's scaling), widened while the best value is on an edge.
    ``predict`` solves the samples with multi-target ``Lasso.fit(A, Y.T)`` calls, one per thread.
    """

    def __init__(self, A: np.ndarray, n_val: int = 100, alpha_center: float | None = None):
        self.A, self.n_val, self.alpha_center = A, n_val, alpha_center

    def fit(self, Y: np.ndarray, X: np.ndarray) -> _TunedLasso:
        Yv, Xv = Y[-self.n_val:], X[-self.n_val:]
        center = self.alpha_center
        if center is None:
            center = ISTARegressor(A=self.A).fit(Y, X).alpha_ / self.A.shape[0]
        scores: dict[int, float] = {}
        exponents = list(range(-3, 4))
        while True:
            for e in exponents:
                if e not in scores:
                    scores[e] = _sq_error(self._solve(center * 2.0 ** (e / 2), Yv), Xv)
            best = min(scores, key=scores.get)
            if min(scores) < best < max(scores) or len(scores) >= 13:
                break
            exponents = [best - 1 if best == min(scores) else best + 1]
        self.alpha_ = float(center * 2.0 ** (best / 2))
        return self

    def _solve(self, alpha: float, Y: np.ndarray) -> np.ndarray:
        # scikit-learn's coordinate descent runs without the GIL, one target at a time: the
        # samples are split over as many threads as torch may use (``--threads``)
        n_jobs = max(1, min(torch.get_num_threads(), Y.shape[0]))
        fits = Parallel(n_jobs=n_jobs, prefer="threads")(
            delayed(Lasso(alpha=alpha, fit_intercept=False).fit)(self.A, part.T)
            for part in np.array_split(Y, n_jobs))
        self.n_iter_ = int(max(np.max(f.n_iter_) for f in fits))
        return np.concatenate([np.reshape(f.coef_, (-1, self.A.shape[1])) for f in fits])

    def predict(self, Y: np.ndarray) -> np.ndarray:
        return self._solve(self.alpha_, Y)


class _TunedOMP:
    """scikit-learn's ``OrthogonalMatchingPursuit`` per sample, ``k`` tuned on validation.

    ``fit`` runs OMP's path up to ``2 ×`` the training signals' mean number of non-zeros on the
    last ``n_val`` training pairs and keeps the ``n_nonzero_coefs_`` of lowest validation error.
    """

    def __init__(self, A: np.ndarray, n_val: int = 100):
        self.A, self.n_val = A, n_val

    def fit(self, Y: np.ndarray, X: np.ndarray) -> _TunedOMP:
        M, N = self.A.shape
        mean_nnz = float(np.mean(np.sum(X != 0, axis=1)))
        k_max = int(min(M, max(2, np.ceil(2 * mean_nnz))))
        err = np.zeros(k_max)
        for y, x in zip(Y[-self.n_val:], X[-self.n_val:], strict=True):
            path = np.reshape(orthogonal_mp(self.A, y, n_nonzero_coefs=k_max, return_path=True),
                              (N, -1))
            e = np.sum((path - x[:, None]) ** 2, axis=0)
            err[:e.size] += e
            err[e.size:] += e[-1]  # the path ended early: the fit is exact from there on
        self.n_nonzero_coefs_ = self.n_iter_ = int(np.argmin(err)) + 1
        return self

    def predict(self, Y: np.ndarray) -> np.ndarray:
        # precompute=True: the Gram matrix once for all samples, OMP's fastest exact form here
        # (sklearn's "auto" skips it for a wide A and is slower; see the benchmarks page)
        omp = OrthogonalMatchingPursuit(n_nonzero_coefs=self.n_nonzero_coefs_,
                                        fit_intercept=False, precompute=True)
        return np.reshape(omp.fit(self.A, Y.T).coef_, (Y.shape[0], -1))


def _sq_error(X_hat: np.ndarray, X: np.ndarray, buffer: np.ndarray | None = None) -> float:
    """``‖X̂ − X‖²_F`` (the sum of ``|·|²``, so complex entries count both parts); ``buffer``
    (shaped like ``X``) holds the difference when given and of the difference's dtype, so that
    a curve over thousands of iterations allocates nothing per iteration."""
    X_hat = np.reshape(X_hat, X.shape)
    if buffer is not None and buffer.dtype != np.result_type(X_hat, X):
        buffer = None  # e.g. a complex estimate of real signals: a real buffer cannot hold it
    diff = np.subtract(X_hat, X, out=buffer)
    # einsum's own loop, not BLAS: a BLAS call here would leave its threads spinning against
    # the solver's threads between iterations
    if np.iscomplexobj(diff):
        # |d|² = Re(d)² + Im(d)²: the same loop over the real and imaginary parts side by side
        # (a view, no copy), or over conj(d) d when the difference is not contiguous
        if diff.flags.c_contiguous:
            parts = diff.view(diff.real.dtype)
            return float(np.einsum("ij,ij->", parts, parts))
        return float(np.einsum("ij,ij->", diff.conj(), diff).real)
    return float(np.einsum("ij,ij->", diff, diff))


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Method:
    """A method of the comparison: its printed label and a factory of the unfitted estimator.

    ``build(data, random_state, quick=False)`` returns an object with ``fit(Y, X)`` and
    ``predict(Y)`` (``staged_predict`` too for a curve in the plot); ``quick=True`` asks for the
    smaller training budget of ``compare --quick`` (the classical methods ignore it).
    """

    label: str
    build: Callable[..., object]
    learned: bool = False


def _classical(factory: Callable[[np.ndarray], object]) -> Callable:
    """Factory of a classical solver: it has nothing to train, so ``quick`` does not apply."""

    def build(data: ComparisonData, random_state: int, quick: bool = False):
        return factory(data.A)

    return build


def _peer(cls: type) -> Callable:
    """Factory of a tuned scikit-learn peer: ``quick`` tunes it on ``QUICK_N_VAL`` pairs, not 100."""

    def build(data: ComparisonData, random_state: int, quick: bool = False):
        return cls(data.A, n_val=QUICK_N_VAL if quick else 100)

    return build


def _learned(class_name: str, steps_per_stage: int, quick_steps: int, **params) -> Callable:
    """Factory of a learned estimator with a small training budget.

    The network trains on fresh signals from the Bernoulli-Gaussian prior fitted to the training
    signals (the pairs then serve for validation), for at most ``steps_per_stage`` optimiser
    steps per training stage. With ``quick=True`` it trains end to end (LISTA too), for at most
    ``quick_steps`` steps per stage. Parameters the estimator does not have are skipped.
    """

    def build(data: ComparisonData, random_state: int, quick: bool = False):
        from .estimators import learned
        from .estimators._learned_base import validation_size

        est = getattr(learned, class_name)(A=data.A)
        known = est.get_params()
        n = data.Y_train.shape[0]
        n_fit = max(1, n - validation_size(known.get("validation_fraction", 0.0), n))
        steps = quick_steps if quick else steps_per_stage
        epochs = steps * known.get("batch_size", 500) / n_fit
        wanted = {"signal_prior": "bernoulli_gaussian", "max_epochs": epochs,
                  "random_state": random_state, **params}
        if quick:
            wanted["training"] = "end_to_end"
        return est.set_params(**{k: v for k, v in wanted.items() if k in known})

    return build


#: The methods ``compare`` knows, by the name ``--methods`` takes (read-only).
METHODS = MappingProxyType({
    # The classical solvers iterate in float32, the learned networks' precision: the table
    # compares like with like (the same NMSE as in float64 to 0.01 dB, in about half the time).
    "ista": Method("ISTA", _classical(lambda A: ISTARegressor(A=A, dtype="float32"))),
    "fista": Method("FISTA", _classical(lambda A: FISTARegressor(A=A, dtype="float32"))),
    "amp-soft": Method("AMP-soft", _classical(
        lambda A: AMPRegressor(A=A, denoiser="soft", dtype="float32"))),
    "amp-bg": Method("AMP-bg", _classical(
        lambda A: AMPRegressor(A=A, denoiser="bg", dtype="float32"))),
    "vamp-soft": Method("VAMP-soft", _classical(
        lambda A: VAMPRegressor(A=A, denoiser="soft", dtype="float32"))),
    "vamp-bg": Method("VAMP-bg", _classical(
        lambda A: VAMPRegressor(A=A, denoiser="bg", dtype="float32"))),
    "lasso": Method("sklearn Lasso", _peer(_TunedLasso)),
    "omp": Method("sklearn OMP", _peer(_TunedOMP)),
    # Learned networks: small budgets (the benchmarks page of the documentation records the
    # command's wall time), each network with its default schedule.
    "lista": Method("LISTA-CPSS", _learned("LISTARegressor", 25, QUICK_STEPS["lista"],
                                           n_layers=10), learned=True),
    "lamp": Method("LAMP-bg", _learned("LAMPRegressor", 70, QUICK_STEPS["lamp"], n_layers=10),
                   learned=True),
    "ldvamp": Method("LDVAMP-bg", _learned("LDVAMPRegressor", 100, QUICK_STEPS["ldvamp"],
                                           n_layers=10), learned=True),
})


def learned_import_error() -> str | None:
    """Why the learned estimators cannot be imported (the message), or ``None`` when they can."""
    try:
        from .estimators import learned  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def available_methods() -> list[str]:
    """Names of the methods that can run here (learned ones only when importable)."""
    learned_ok = learned_import_error() is None
    return [k for k, m in METHODS.items() if learned_ok or not m.learned]


def default_methods() -> list[str]:
    """The methods ``compare`` runs when ``--methods`` is not given: all available ones."""
    return available_methods()


# ----------------------------------------------------------------------------- running
@dataclass
class ComparisonResult:
    """One row of the comparison table.

    ``n_iter`` is the iterations (classical), layers (learned), coordinate-descent epochs
    (Lasso, the largest over samples) or selected atoms (OMP); ``nmse_curve`` the test NMSE
    (dB) after each iteration / layer (``None`` without ``staged_predict``).
    """

    method: str
    label: str
    n_iter: int | None
    nmse_db: float
    fit_seconds: float
    predict_ms_per_sample: float
    notes: str = ""
    nmse_curve: np.ndarray | None = field(default=None, repr=False)


_PARAM_NOTES = (("alpha_", "alpha={:.3g}"), ("threshold_", "lambda={:.3g}"),
                ("n_nonzero_coefs_", "k={}"))
_WARNING_NOTES = (("diverged", "diverged on some samples"), ("max_iter", "hit max_iter"),
                  ("did not converge", "not converged"), ("prematurely", "stopped early"),
                  ("made no progress", "training made no progress"))


def _notes(est, caught: list) -> str:
    notes = [fmt.format(getattr(est, a)) for a, fmt in _PARAM_NOTES
             if getattr(est, a, None) is not None]
    for w in caught:
        msg = str(w.message)
        note = next((n for key, n in _WARNING_NOTES if key in msg), type(w.message).__name__)
        if note not in notes:
            notes.append(note)
    return ", ".join(notes)


def _chunk_errors(est, Y: np.ndarray, X: np.ndarray, staged: bool) -> tuple[np.ndarray, float]:
    """Squared error after each stage (or only the last) and the seconds spent predicting."""
    if not staged:
        start = time.perf_counter()
        X_hat = est.predict(Y)
        return np.array([_sq_error(X_hat, X)]), time.perf_counter() - start
    errs, elapsed, buffer, start = [], 0.0, np.empty_like(X), time.perf_counter()
    for X_hat in est.staged_predict(Y):
        elapsed += time.perf_counter() - start  # the error bookkeeping is not timed
        errs.append(_sq_error(X_hat, X, buffer))
        start = time.perf_counter()
    return np.array(errs), elapsed + time.perf_counter() - start


def _fit_and_score(est, label: str, Y_train: np.ndarray, X_train: np.ndarray,
                   Y_test: np.ndarray, target: np.ndarray, *, staged: bool, chunk_size: int,
                   progress: bool, predictor: Callable | None = None):
    """Fit ``est``, then its test NMSE (dB) against ``target``, chunk by chunk.

    Returns ``(curve, fit_seconds, predict_seconds, n_iter, caught_warnings)``: the NMSE after
    every stage (``staged``) or only the last, and the largest ``n_iter_`` over the chunks (when
    not staged). ``predictor(est, chunk_slice)``, when given, is what predicts each chunk (an
    estimator that needs more than the measurements, such as the test signals' support).
    """
    n_test = Y_test.shape[0]
    total, elapsed, n_iter = None, 0.0, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        est.fit(Y_train, X_train)
        fit_seconds = time.perf_counter() - start
        with tqdm(total=n_test, desc=f"{label} predict", unit="sample", leave=False,
                  disable=not progress) as bar:
            for lo in range(0, n_test, chunk_size):
                sl = slice(lo, lo + chunk_size)
                model = est if predictor is None else predictor(est, sl)
                errs, dt = _chunk_errors(model, Y_test[sl], target[sl], staged)
                elapsed += dt
                if total is not None and errs.size < total.size:  # this chunk stopped sooner
                    errs = np.pad(errs, (0, total.size - errs.size), mode="edge")
                elif total is not None:
                    total = np.pad(total, (0, errs.size - total.size), mode="edge")
                total = errs if total is None else total + errs
                if not staged and hasattr(est, "n_iter_"):
                    n_iter = max(n_iter or 0, int(est.n_iter_))
                bar.update(min(chunk_size, n_test - lo))
    curve = 10.0 * np.log10(np.maximum(total, 1e-300) / np.sum(np.abs(target) ** 2))
    return curve, fit_seconds, elapsed, n_iter, list(caught)


def _run_method(name: str, data: ComparisonData, *, random_state: int, curves: bool,
                chunk_size: int, progress: bool, quick: bool) -> ComparisonResult:
    method = METHODS[name]
    est = method.build(data, random_state, quick=quick)
    if progress and method.learned and "verbose" in est.get_params():
        est.set_params(verbose=1)  # the training engine's own progress bar
    staged = curves and hasattr(est, "staged_predict")
    curve, fit_seconds, elapsed, n_iter, caught = _fit_and_score(
        est, method.label, data.Y_train, data.X_train, data.Y_test, data.X_test, staged=staged,
        chunk_size=chunk_size, progress=progress)
    if staged:
        n_iter = curve.size
    elif n_iter is None:
        n_iter = getattr(est, "n_layers", None)
    return ComparisonResult(name, method.label, n_iter, float(curve[-1]), fit_seconds,
                            1e3 * elapsed / data.Y_test.shape[0], _notes(est, caught),
                            curve if staged else None)


def run_comparison(methods: Sequence[str] | None = None, *, problem: str = "giid",
                   n_train: int | None = None, n_test: int | None = None, random_state: int = 0,
                   data: ComparisonData | None = None, curves: bool = True,
                   chunk_size: int = 250, progress: bool = True, quick: bool = False,
                   callback: Callable[[ComparisonResult], None] | None = None,
                   ) -> list[ComparisonResult]:
    """Fit every method on the training pairs and measure it on the test pairs.

    Parameters
    ----------
    methods : sequence of str, optional
        Names from :data:`METHODS`; default :func:`default_methods`.
    problem : {"giid", "kappa15", "noiseless", "dct"}, default="giid"
        Ignored when ``data`` is given.
    n_train, n_test : int, optional
        Sample counts (ignored when ``data`` is given); 1,000 each by default, those of
        :data:`QUICK_PROBLEM` with ``quick=True``.
    random_state : int, default=0
        Seeds the data and the learned networks' training.
    data : ComparisonData, optional
        Reuse a problem (:func:`make_comparison_data`).
    curves : bool, default=True
        Record the test NMSE after every iteration / layer (through ``staged_predict``); the
        prediction time then excludes this bookkeeping but includes the copy of each iterate.
    chunk_size : int, default=250
        Test samples per ``predict`` call (the progress bar advances per chunk).
    progress : bool, default=True
        Show tqdm progress bars (on stderr).
    quick : bool, default=False
        The small configuration of ``compare --quick``: without ``data``, the problem size of
        :data:`QUICK_PROBLEM`; for the learned methods, the training budget of
        :data:`QUICK_STEPS`.
    callback : callable, optional
        Called with each method's :class:`ComparisonResult` as soon as it is measured (the
        command line logs one line per method with it).

    Returns
    -------
    list of ComparisonResult
        One per method, in the order given.
    """
    methods = list(default_methods() if methods is None else methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(METHODS)}.")
    if data is None:
        sizes = dict(QUICK_PROBLEM) if quick else {"n_train": 1000, "n_test": 1000,
                                                   "n_features": 500, "n_measurements": 250}
        sizes.update({k: v for k, v in (("n_train", n_train), ("n_test", n_test)) if v is not None})
        data = make_comparison_data(problem, sizes.pop("n_train"), sizes.pop("n_test"),
                                    random_state, **sizes)
    results = []
    with tqdm(methods, desc="compare", unit="method", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(METHODS[name].label)
            results.append(_run_method(name, data, random_state=random_state, curves=curves,
                                       chunk_size=max(1, int(chunk_size)), progress=progress,
                                       quick=quick))
            if callback is not None:
                callback(results[-1])
    return results


def format_table(results: Sequence[ComparisonResult]) -> str:
    """The comparison as a plain-text table (also valid Markdown)."""
    head = ("method", "iters/layers", "test NMSE (dB)", "fit (s)", "predict (ms/sample)", "notes")
    rows = [(r.label, "-" if r.n_iter is None else str(r.n_iter), f"{r.nmse_db:.2f}",
             f"{r.fit_seconds:.2f}", f"{r.predict_ms_per_sample:.3f}", r.notes) for r in results]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    right = (False, True, True, True, True, False)

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w)
                                 for c, w, r in zip(cells, widths, right, strict=True)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2))
                          for w, r in zip(widths, right, strict=True)) + "|"
    return "\n".join([line(head), rule, *(line(r) for r in rows)])


def plot_comparison(results: Sequence[ComparisonResult], output, *, title: str | None = None):
    """Write the NMSE-against-iteration figure of ``results`` to ``output`` (a PNG path).

    Methods with a curve are lines (:class:`~sklearn_unfold.plotting.NMSECurveDisplay`), the
    others horizontal reference levels. Returns the display.
    """
    from matplotlib.figure import Figure

    from .plotting import NMSECurveDisplay

    with_curve = [r for r in results if r.nmse_curve is not None]
    fig = Figure(figsize=(9.5, 5), layout="constrained")
    disp = NMSECurveDisplay(
        nmse_db=[r.nmse_curve for r in with_curve], names=[r.label for r in with_curve],
        references={r.label: r.nmse_db for r in results if r.nmse_curve is None},
    ).plot(ax=fig.add_subplot())
    if title:
        disp.ax_.set_title(title)
    fig.savefig(output, dpi=120)
    return disp
