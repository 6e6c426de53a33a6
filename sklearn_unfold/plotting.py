"""Plots in scikit-learn's Display style: NMSE against depth, and a network's training history.

Each display holds the numbers it draws (constructor arguments), draws them with
its ``plot`` method, and has a ``from_*`` class method that computes them from fitted estimators.
After plotting it exposes ``figure_``, ``ax_`` and the artists it created. matplotlib is
imported only when something is drawn, so the rest of the package does not need it.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from sklearn_unfold import AMPRegressor, VAMPRegressor
>>> from sklearn_unfold.datasets import make_compressed_sensing
>>> from sklearn_unfold.plotting import NMSECurveDisplay
>>> Y, X, A = make_compressed_sensing("giid", n_samples=50, random_state=0)
>>> ests = [AMPRegressor(A=A, max_iter=10).fit(Y, X), VAMPRegressor(A=A, max_iter=10).fit(Y, X)]
>>> disp = NMSECurveDisplay.from_estimators(ests, Y, X, names=["AMP-bg", "VAMP-bg"])
>>> len(disp.lines_)
2
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import numpy as np

from .metrics import nmse_db

__all__ = ["NMSECurveDisplay", "TrainingHistoryDisplay", "staged_nmse_db"]

#: Marker of each training-stage kind in :class:`TrainingHistoryDisplay` (read-only).
_STAGE_MARKERS = MappingProxyType({"layer": "o", "refine": ".", "end_to_end": "s"})
#: (colour, linestyle) of the successive reference levels in :class:`NMSECurveDisplay`.
_REFERENCE_STYLES = (("black", "--"), ("dimgrey", ":"), ("saddlebrown", "-."), ("olive", "--"),
                     ("black", ":"), ("dimgrey", "-."))


def _pyplot():
    """Import ``matplotlib.pyplot`` lazily, with a clear message when it is missing."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Plotting needs matplotlib: pip install \"sklearn-unfold[plot]\" (or matplotlib)") from exc
    return plt


def _get_ax(ax):
    """``(figure, ax)``: the given axes and its figure, or a new figure with one axes."""
    if ax is None:
        _, ax = _pyplot().subplots()
    return ax.figure, ax


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def staged_nmse_db(estimator, Y, X, *, max_stages: int | None = None) -> np.ndarray:
    """NMSE (dB) of every stage of ``estimator.staged_predict(Y)`` against ``X``.

    Parameters
    ----------
    estimator : fitted estimator with ``staged_predict``
        A classical solver (one stage per iteration) or a learned network (one per layer).
    Y : array-like of shape (n_samples, n_measurements)
    X : array-like of shape (n_samples, n_features)
        The true signals.
    max_stages : int, optional
        Stop after this many stages.

    Returns
    -------
    ndarray of shape (n_stages,)
        Element ``t`` is the NMSE after iteration (layer) ``t + 1``.
    """
    if not hasattr(estimator, "staged_predict"):
        raise TypeError(f"{type(estimator).__name__} has no staged_predict.")
    X = np.asarray(X, dtype=np.float64)
    curve = []
    for X_hat in estimator.staged_predict(Y):
        curve.append(nmse_db(X, np.reshape(X_hat, X.shape)))
        if max_stages is not None and len(curve) >= max_stages:
            break
    return np.asarray(curve, dtype=np.float64)


def _default_names(estimators: Sequence) -> list[str]:
    names, seen = [], {}
    for est in estimators:
        base = type(est).__name__.removesuffix("Regressor")
        denoiser = getattr(est, "denoiser", None)
        if isinstance(denoiser, str):
            base = f"{base}-{denoiser}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base} ({seen[base]})")
    return names


class NMSECurveDisplay:
    """NMSE (dB) against iteration or layer for several estimators on the same data.

    Build it with :meth:`from_estimators` (which runs ``staged_predict``) or from curves you
    already have, then call :meth:`plot`.

    Parameters
    ----------
    nmse_db : sequence of array-like of shape (n_stages_i,)
        One curve per estimator: the NMSE in dB after iteration (layer) ``1, 2, …``.
    names : sequence of str, optional
        Legend labels, one per curve. Defaults to ``"curve 0"``, ``"curve 1"``, …
    references : mapping of str to float, optional
        Horizontal reference levels in dB (a non-iterative peer, an oracle, a bound), drawn as
        dark dashed or dotted lines labelled with their value.

    Attributes
    ----------
    lines_ : list of matplotlib Line2D
        One per curve, in the order of ``nmse_db``.
    reference_lines_ : list of matplotlib Line2D
        One per reference level.
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    See Also
    --------
    staged_nmse_db : The curve of one estimator.
    TrainingHistoryDisplay : Validation NMSE during training.
    """

    def __init__(self, *, nmse_db: Sequence, names: Sequence[str] | None = None,
                 references: Mapping[str, float] | None = None):
        self.nmse_db = [np.asarray(c, dtype=np.float64).ravel() for c in nmse_db]
        if names is None:
            names = [f"curve {i}" for i in range(len(self.nmse_db))]
        self.names = list(names)
        if len(self.names) != len(self.nmse_db):
            raise ValueError(
                f"names has {len(self.names)} entries but there are {len(self.nmse_db)} curves.")
        self.references = dict(references or {})

    def plot(self, ax=None, *, xscale: str = "auto", legend: bool = True,
             legend_kw: Mapping | None = None, reference_kw: Mapping | None = None,
             **line_kw) -> NMSECurveDisplay:
        """Draw the curves (and the reference levels).

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw here; a new figure is created when omitted.
        xscale : {"auto", "linear", "log"}, default="auto"
            ``"auto"`` is logarithmic when a curve has more than 100 stages (ISTA's thousands
            of iterations beside a 10-layer network) and linear otherwise.
        legend : bool, default=True
        legend_kw : mapping, optional
            Keyword arguments of ``ax.legend``; by default the legend sits at the best place
            inside the axes, or to the right of them when it has more than 6 entries.
        reference_kw : mapping, optional
            Keyword arguments of the reference lines (``ax.axhline``).
        **line_kw
            Keyword arguments of the curves (``ax.plot``), e.g. ``linewidth``.

        Returns
        -------
        self : NMSECurveDisplay
        """
        if xscale not in ("auto", "linear", "log"):
            raise ValueError(f"xscale must be 'auto', 'linear' or 'log'; got {xscale!r}.")
        fig, ax = _get_ax(ax)
        longest = max((c.size for c in self.nmse_db), default=0)
        if xscale == "auto":
            xscale = "log" if longest > 100 else "linear"
        self.lines_ = []
        for curve, name in zip(self.nmse_db, self.names, strict=True):
            stages = np.arange(1, curve.size + 1)
            marker = "o" if curve.size <= 30 else None
            kw = {"marker": marker, "markersize": 3, **line_kw}
            (line,) = ax.plot(stages, curve, label=name, **kw)
            self.lines_.append(line)
        self.reference_lines_ = []
        for i, (name, level) in enumerate(self.references.items()):
            color, style = _REFERENCE_STYLES[i % len(_REFERENCE_STYLES)]
            kw = {"color": color, "linestyle": style, "linewidth": 1.2, **(reference_kw or {})}
            line = ax.axhline(float(level), label=f"{name} ({float(level):.1f} dB)", **kw)
            self.reference_lines_.append(line)
        ax.set_xscale(xscale)
        if xscale == "linear":
            _integer_ticks(ax)
        ax.set_xlabel("iteration / layer")
        ax.set_ylabel("NMSE (dB)")
        ax.grid(True, which="major", alpha=0.3)
        n_entries = len(self.lines_) + len(self.reference_lines_)
        if legend and n_entries:
            kw = {"fontsize": "small"}
            if n_entries > 6:
                kw.update(loc="center left", bbox_to_anchor=(1.01, 0.5))
            ax.legend(**{**kw, **(legend_kw or {})})
        self.ax_, self.figure_ = ax, fig
        return self

    @classmethod
    def from_estimators(cls, estimators, Y, X, *, names: Sequence[str] | None = None,
                        references: Mapping[str, float] | None = None,
                        max_stages: int | None = None, ax=None, xscale: str = "auto",
                        **line_kw) -> NMSECurveDisplay:
        """Compute each fitted estimator's NMSE per stage on ``(Y, X)`` and plot them.

        Parameters
        ----------
        estimators : sequence of fitted estimators, or mapping of name to estimator
            Each needs ``staged_predict`` (classical solvers and learned networks have it).
        Y : array-like of shape (n_samples, n_measurements)
            Measurements, the same for every estimator.
        X : array-like of shape (n_samples, n_features)
            The true signals.
        names : sequence of str, optional
            Legend labels. Defaults to the mapping's keys, or the class name and denoiser
            (``"AMP-bg"``).
        references : mapping of str to float, optional
            Horizontal reference levels in dB.
        max_stages : int, optional
            Cap on the stages computed per estimator.
        ax : matplotlib Axes, optional
        xscale : {"auto", "linear", "log"}, default="auto"
        **line_kw
            Passed to :meth:`plot`.

        Returns
        -------
        display : NMSECurveDisplay
        """
        if isinstance(estimators, Mapping):
            names = list(estimators) if names is None else names
            estimators = list(estimators.values())
        else:
            estimators = list(estimators)
        if names is None:
            names = _default_names(estimators)
        curves = [staged_nmse_db(est, Y, X, max_stages=max_stages) for est in estimators]
        disp = cls(nmse_db=curves, names=names, references=references)
        return disp.plot(ax=ax, xscale=xscale, **line_kw)




def _records(history: Iterable[Mapping]) -> list[dict]:
    records = [dict(r) for r in history]
    if not records:
        raise ValueError("The training history is empty: nothing to plot.")
    if not all("val_nmse_db" in r for r in records):
        raise ValueError("Every history record needs a 'val_nmse_db' entry.")
    return records


class TrainingHistoryDisplay:
    """Validation NMSE of a learned estimator across its training: a learning curve.

    The history is the estimator's ``history_``: one record (dict) per validation check, with
    ``"val_nmse_db"`` and, when present, ``"step"`` (optimiser steps so far), ``"stage"``
    (``"layer"`` for a new layer trained alone, ``"refine"``, ``"end_to_end"``), ``"layer"``
    (the active depth, from 1) and ``"best_val_nmse_db"`` (the stage's best so far). One record
    per stage (the estimator's ``stages_``, with ``"steps"``, the optimiser steps of each
    stage) is drawn as well. Missing optional keys are tolerated.

    Parameters
    ----------
    history : sequence of dict
    name : str, optional
        Legend label of the curve.

    Attributes
    ----------
    line_ : matplotlib Line2D
        The validation NMSE curve.
    markers_ : dict of str to matplotlib Line2D
        Markers per stage kind (``kind="stages"`` only).
    layer_lines_ : list of matplotlib Line2D
        Vertical lines where a new layer starts (``kind="stages"``, when layers are known).
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    """

    def __init__(self, *, history: Sequence[Mapping], name: str | None = None):
        self.history = _records(history)
        self.name = name

    @property
    def layer_nmse_db(self) -> dict[int, float]:
        """The validation NMSE (dB) each depth ends on (its last stage's best checkpoint)."""
        out: dict[int, float] = {}
        for rec in self.history:
            if "layer" in rec:
                out[int(rec["layer"])] = float(rec.get("best_val_nmse_db", rec["val_nmse_db"]))
        return out

    def plot(self, ax=None, *, kind: str = "stages", **line_kw) -> TrainingHistoryDisplay:
        """Draw the validation NMSE.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        kind : {"stages", "layers"}, default="stages"
            ``"stages"``: the validation NMSE of every record against the optimiser steps
            (``"step"``; for one record per stage, the cumulative ``"steps"``; the record
            number when neither is recorded), markers by stage kind and a dotted line where
            each new layer starts. ``"layers"``: the final validation NMSE of each depth.
        **line_kw
            Keyword arguments of the curve (``ax.plot``).

        Returns
        -------
        self : TrainingHistoryDisplay
        """
        if kind not in ("stages", "layers"):
            raise ValueError(f"kind must be 'stages' or 'layers'; got {kind!r}.")
        fig, ax = _get_ax(ax)
        label = self.name or "validation"
        self.markers_, self.layer_lines_ = {}, []
        if kind == "layers":
            per_layer = self.layer_nmse_db
            if not per_layer:
                raise ValueError("kind='layers' needs a 'layer' entry in the history records.")
            depth = sorted(per_layer)
            kw = {"marker": "o", **line_kw}
            (self.line_,) = ax.plot(depth, [per_layer[d] for d in depth], label=label, **kw)
            _integer_ticks(ax)
            ax.set_xlabel("layers")
        else:
            self._plot_stages(ax, label, line_kw)
        ax.set_ylabel("validation NMSE (dB)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        self.ax_, self.figure_ = ax, fig
        return self

    def _plot_stages(self, ax, label: str, line_kw: Mapping) -> None:
        recs = self.history
        if all("step" in r for r in recs):
            x = np.array([int(r["step"]) for r in recs])
            ax.set_xlabel("optimiser steps")
        elif all("steps" in r for r in recs):
            x = np.cumsum([int(r["steps"]) for r in recs])
            ax.set_xlabel("optimiser steps")
        else:
            x = np.arange(1, len(recs) + 1)
            ax.set_xlabel("training stage")
        y = np.array([float(r["val_nmse_db"]) for r in recs])
        (self.line_,) = ax.plot(x, y, label=label, **line_kw)
        color = self.line_.get_color()
        kinds = [str(r.get("stage", "stage")) for r in recs]
        for k in dict.fromkeys(kinds):
            sel = np.array([kk == k for kk in kinds])
            (m,) = ax.plot(x[sel], y[sel], linestyle="none", color=color,
                           marker=_STAGE_MARKERS.get(k, "x"), label=f"{k} stage")
            self.markers_[k] = m
        if all("layer" in r for r in recs):
            layers = [int(r["layer"]) for r in recs]
            starts = [0] + [i for i in range(1, len(recs)) if layers[i] != layers[i - 1]]
            show_text = len(starts) <= 20
            per_check = all("step" in r for r in recs)  # a check opens each stage
            for i in starts:
                x0 = x[i] if per_check else (x[i - 1] if i > 0 else 0)
                self.layer_lines_.append(
                    ax.axvline(x0, color="grey", linestyle=":", linewidth=0.8))
                if show_text:
                    ax.annotate(f"L{layers[i]}", (x0, 1.0), xycoords=("data", "axes fraction"),
                                xytext=(2, -10), textcoords="offset points", fontsize=7,
                                color="grey")

    @classmethod
    def from_estimator(cls, estimator, *, name: str | None = None, ax=None,
                       kind: str = "stages", **line_kw) -> TrainingHistoryDisplay:
        """Plot a fitted learned estimator's ``history_``.

        Parameters
        ----------
        estimator : fitted estimator with a ``history_`` attribute
        name : str, optional
            Legend label; defaults to the class name.
        ax : matplotlib Axes, optional
        kind : {"stages", "layers"}, default="stages"
        **line_kw
            Passed to :meth:`plot`.

        Returns
        -------
        display : TrainingHistoryDisplay
        """
        history = getattr(estimator, "history_", None)
        if history is None:
            raise ValueError(
                f"{type(estimator).__name__} has no history_: fit a learned estimator first.")
        name = name or type(estimator).__name__.removesuffix("Regressor")
        return cls(history=history, name=name).plot(ax=ax, kind=kind, **line_kw)

    @classmethod
    def from_history(cls, history: Sequence[Mapping], *, name: str | None = None, ax=None,
                     kind: str = "stages", **line_kw) -> TrainingHistoryDisplay:
        """Plot a history list directly (see the class docstring for its records)."""
        return cls(history=history, name=name).plot(ax=ax, kind=kind, **line_kw)
