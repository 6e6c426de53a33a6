"""The ``sklearn-unfold`` command line.

``sklearn-unfold compare`` (or ``python -m sklearn_unfold compare``) builds a reference problem
(:func:`sklearn_unfold.datasets.make_compressed_sensing`), fits every method on a training set,
runs it on a fresh test set measured through the same ``A``, prints a table (method, iterations
or layers, test NMSE in dB, fit seconds, predict milliseconds per sample) and writes a PNG of
NMSE against iteration / layer. The work is done by
:func:`sklearn_unfold.comparison.run_comparison`.

``sklearn-unfold compare --problem ofdm`` is the pilot-based OFDM channel-estimation
comparison instead (:func:`sklearn_unfold.channel_comparison.run_channel_comparison`): ``K``
subcarriers, ``L`` delay taps, ``P`` pilots (``--n-pilots``) at ``--snr-db``; pilot least
squares with interpolation, LMMSE, complex OMP, AMP, VAMP, LAMP, LDVAMP and the support oracle,
scored by the NMSE of the frequency response. ``--n-features`` and ``--n-measurements`` belong to
the compressed-sensing problems, ``--n-pilots`` and ``--snr-db`` to ``ofdm``; mixing them is an
error.

Progress goes to stderr: tqdm bars when stderr is a terminal, otherwise (a pipe, a log file, a
CI job) one plain line per method with its fit time and test NMSE, without carriage returns or
terminal control codes. ``--quiet`` silences both. ``sklearn-unfold --version`` prints the
installed version.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from . import channel_comparison
from .channel_comparison import CHANNEL_METHODS, QUICK_MAX_EPOCHS, available_channel_methods
from .comparison import (
    METHODS,
    QUICK_N_VAL,
    QUICK_PROBLEM,
    QUICK_STEPS,
    ComparisonResult,
    available_methods,
    default_methods,
    format_table,
    learned_import_error,
    make_comparison_data,
    plot_comparison,
    run_comparison,
)

__all__ = ["main"]

CLI_PROBLEMS = ("giid", "kappa15", "noiseless", "dct", "ofdm")
#: Options of the compressed-sensing problems only, and of ``--problem ofdm`` only.
CS_OPTIONS = ("n_features", "n_measurements")
OFDM_OPTIONS = ("n_pilots", "snr_db")
#: Problem sizes without ``--quick`` (those with it are ``QUICK_PROBLEM``).
DEFAULT_PROBLEM = {"n_train": 1000, "n_test": 1000, "n_features": 500, "n_measurements": 250}
PLOT_INSTALL_HINT = 'pip install "sklearn-unfold[plot]"'


def package_version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        return metadata.version("sklearn-unfold")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


# ----------------------------------------------------------------------------- command line
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and the ``compare`` sub-parser (for its error messages)."""
    parser = argparse.ArgumentParser(
        prog="sklearn-unfold", description="Deep unfolding and message passing, compared.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    cmp_ = sub.add_parser(
        "compare", help="run every method on a reference problem and print a table",
        description="Fit every method on a training set of a reference problem (N = 500, M = 250, "
                    "Bernoulli-Gaussian signals; Borgerding et al. 2017), "
                    "measure it on a fresh test set through the same A, print a table and write "
                    "a PNG of NMSE against iteration / layer. With --problem ofdm: pilot-based "
                    "OFDM channel estimation (K = {K} subcarriers, L = {L} delay taps, P pilots; "
                    "NMSE of the frequency response), with pilot least squares + interpolation, "
                    "LMMSE, complex OMP and the support oracle beside AMP, VAMP, LAMP and LDVAMP. "
                    "Progress goes to stderr: bars on a "
                    "terminal, one line per method otherwise.".format(
                        K=channel_comparison.OFDM_PROBLEM["n_subcarriers"],
                        L=channel_comparison.OFDM_PROBLEM["n_taps"]))
    q, qo = QUICK_PROBLEM, channel_comparison.QUICK_OFDM
    cmp_.add_argument(
        "--quick", action="store_true",
        help="a smaller, faster run of every method (its time is on the benchmarks page): "
             f"N={q['n_features']}, M={q['n_measurements']} (the same ratio, sparsity and SNR), "
             f"{q['n_train']} "
             f"training and {q['n_test']} test pairs, the scikit-learn peers tuned on "
             f"{QUICK_N_VAL} validation pairs, and the learned networks trained end to end for "
             f"{QUICK_STEPS['lista']} (LISTA), {QUICK_STEPS['lamp']} (LAMP) and "
             f"{QUICK_STEPS['ldvamp']} (LDVAMP) optimiser steps per stage; the classical solvers "
             f"keep their defaults. With --problem ofdm: {qo['n_train']} training and "
             f"{qo['n_test']} test pairs (the same K, L, P and SNR) and the learned networks' "
             f"max_epochs capped at {QUICK_MAX_EPOCHS}. Size options given explicitly override it")

    def default(key: str, ofdm: bool = False) -> str:
        text = f"(default: {DEFAULT_PROBLEM[key]}; {QUICK_PROBLEM[key]} with --quick"
        if ofdm:
            text += f"; ofdm: {channel_comparison.OFDM_PROBLEM[key]}, {qo[key]} with --quick"
        return text + ")"

    def default_ofdm(key: str) -> str:
        return f"(default: {channel_comparison.OFDM_PROBLEM[key]})"

    cmp_.add_argument("--problem", choices=CLI_PROBLEMS, default="giid",
                      help="reference problem: compressed sensing (giid, kappa15, noiseless, dct) "
                           "or OFDM channel estimation (ofdm) (default: %(default)s)")
    cmp_.add_argument("--n-train", type=_positive_int, default=None,
                      help="training pairs " + default("n_train", ofdm=True))
    cmp_.add_argument("--n-test", type=_positive_int, default=None,
                      help="test pairs " + default("n_test", ofdm=True))
    cmp_.add_argument("--n-features", type=_positive_int, default=None,
                      help="signal length N " + default("n_features") + "; not with ofdm")
    cmp_.add_argument("--n-measurements", type=_positive_int, default=None,
                      help="measurements M " + default("n_measurements") + "; not with ofdm")
    cmp_.add_argument("--n-pilots", type=_positive_int, default=None,
                      help="ofdm only: pilot subcarriers P " + default_ofdm("n_pilots"))
    cmp_.add_argument("--snr-db", type=_finite_float, default=None,
                      help="ofdm only: signal-to-noise ratio in dB " + default_ofdm("snr_db"))
    cmp_.add_argument("--methods", default=None,
                      help="comma-separated list from: " + ", ".join(METHODS)
                           + "; with --problem ofdm from: " + ", ".join(CHANNEL_METHODS)
                           + " (default: all available)")
    cmp_.add_argument("--output", default="compare.png",
                      help="PNG of NMSE against iteration (default: %(default)s; needs matplotlib: "
                           + PLOT_INSTALL_HINT + ")")
    cmp_.add_argument("--no-plot", action="store_true", help="skip the curves and the PNG")
    cmp_.add_argument("--random-state", type=int, default=0, help="seed (default: %(default)s)")
    cmp_.add_argument("--threads", type=_positive_int, default=None,
                      help="CPU threads for torch and BLAS (default: their own defaults)")
    cmp_.add_argument("--quiet", action="store_true",
                      help="no progress on stderr (neither bars nor per-method lines)")
    return parser, cmp_


def _resolve_sizes(args: argparse.Namespace) -> dict[str, int]:
    """The problem sizes: the options given, else the ``--quick`` or the full defaults."""
    base = QUICK_PROBLEM if args.quick else DEFAULT_PROBLEM
    return {k: base[k] if getattr(args, k) is None else getattr(args, k) for k in DEFAULT_PROBLEM}


def _parse_methods(parser: argparse.ArgumentParser, text: str | None,
                   problem: str = "giid") -> list[str]:
    ofdm = problem == "ofdm"
    registry, available = ((CHANNEL_METHODS, available_channel_methods) if ofdm
                           else (METHODS, available_methods))
    if text is None:
        return available() if ofdm else default_methods()
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in registry]
    if not names or unknown:
        parser.error(f"--methods: unknown method(s) {unknown or [text]}"
                     f"{' for --problem ofdm' if ofdm else ''}; "
                     f"choose from {', '.join(registry)}")
    missing = [m for m in names if registry[m].learned and m not in available()]
    if missing:
        parser.error(f"--methods: {', '.join(missing)} need the learned estimators, which "
                     f"cannot be imported here ({learned_import_error()})")
    return list(dict.fromkeys(names))


def _check_output(parser: argparse.ArgumentParser, output: str) -> None:
    """Fail before the run, not after it, when the figure cannot be written."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        parser.error(f"--output: writing the figure needs matplotlib, which is not installed; "
                     f"install it with {PLOT_INSTALL_HINT}, or pass --no-plot")

    path = Path(output)
    if not path.parent.is_dir():
        parser.error(f"--output: directory {str(path.parent)!r} does not exist")
    kinds = Figure().canvas.get_supported_filetypes()
    if path.suffix and path.suffix[1:].lower() not in kinds:
        parser.error(f"--output: unknown image format {path.suffix!r}; use .png "
                     f"(or one of {', '.join(sorted(kinds))})")


@contextmanager
def _thread_limit(n_threads: int | None):
    """Limit torch's and the BLAS libraries' threads for the duration (no-op for ``None``)."""
    if n_threads is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        torch.set_num_threads(before)


class _LineLog:
    """One plain progress line per method on a stream that is not a terminal."""

    def __init__(self, total: int, stream):
        self.total, self.stream, self.done = total, stream, 0

    def __call__(self, result: ComparisonResult) -> None:
        self.done += 1
        width = len(str(self.total))
        print(f"[{self.done:>{width}}/{self.total}] {result.label}: fit {result.fit_seconds:.2f} s, "
              f"test NMSE {result.nmse_db:.2f} dB", file=self.stream, flush=True)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_problem_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse the size options of the other kind of problem (compressed sensing vs ofdm)."""
    ofdm = args.problem == "ofdm"
    wrong = [d for d in (CS_OPTIONS if ofdm else OFDM_OPTIONS) if getattr(args, d) is not None]
    if wrong:
        names = ", ".join(_option(d) for d in wrong)
        if ofdm:
            parser.error(f"{names}: not an option of --problem ofdm (its sizes are K, L and P; "
                         f"use --n-pilots and --snr-db)")
        parser.error(f"{names}: only with --problem ofdm, not --problem {args.problem} "
                     "(use --n-features and --n-measurements)")


def _resolve_ofdm(args: argparse.Namespace) -> dict:
    """The OFDM problem: the options given, else the ``--quick`` or the full defaults."""
    base = channel_comparison.QUICK_OFDM if args.quick else channel_comparison.OFDM_PROBLEM
    spec = dict(base)
    for dest in ("n_train", "n_test", *OFDM_OPTIONS):
        if getattr(args, dest) is not None:
            spec[dest] = getattr(args, dest)
    return spec


def _compare_ofdm(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  methods: list[str]) -> int:
    """``compare --problem ofdm``: the channel-estimation comparison, its table and figure."""
    spec = _resolve_ofdm(args)
    if spec["n_pilots"] > spec["n_subcarriers"]:
        parser.error(f"--n-pilots ({spec['n_pilots']}) must not exceed the "
                     f"{spec['n_subcarriers']} subcarriers")
    n_train, n_test = spec.pop("n_train"), spec.pop("n_test")
    data = channel_comparison.make_channel_data(n_train, n_test, args.random_state, **spec)
    bars = not args.quiet and _is_terminal(sys.stderr)
    log = None if args.quiet or bars else _LineLog(len(methods), sys.stderr)
    with _thread_limit(args.threads):
        results = channel_comparison.run_channel_comparison(
            methods, data=data, random_state=args.random_state, curves=not args.no_plot,
            progress=bars, quick=args.quick, callback=log)
    print(f"problem ofdm{' (--quick)' if args.quick else ''}: {data.describe()}, {n_train} "
          f"training and {n_test} test samples, random_state={args.random_state}; "
          "NMSE of the frequency response")
    print(format_table(results))
    if not args.no_plot:
        p = data.problem
        snr = "noiseless" if data.snr_db is None else f"SNR={data.snr_db:g} dB"
        try:
            plot_comparison(results, args.output,
                            title=f"OFDM channel estimation: K={p['n_subcarriers']}, "
                                  f"L={p['n_taps']}, P={p['n_pilots']}, {snr}, "
                                  f"{n_test} test samples")
        except OSError as exc:
            print(f"sklearn-unfold: cannot write {args.output}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sklearn-unfold``; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        0 on success, 1 when the figure cannot be written (bad options exit with status 2).
    """
    top, parser = _build_parser()
    args = top.parse_args(argv)
    _check_problem_options(parser, args)
    methods = _parse_methods(parser, args.methods, args.problem)
    if not args.no_plot:
        _check_output(parser, args.output)
    if args.problem == "ofdm":
        return _compare_ofdm(parser, args, methods)
    sizes = _resolve_sizes(args)
    if sizes["n_measurements"] > sizes["n_features"]:
        parser.error(f"--n-measurements ({sizes['n_measurements']}) must not exceed --n-features "
                     f"({sizes['n_features']}): compressed sensing measures fewer than N.")
    data = make_comparison_data(args.problem, sizes["n_train"], sizes["n_test"], args.random_state,
                                n_features=sizes["n_features"],
                                n_measurements=sizes["n_measurements"])
    M, N = data.A.shape
    bars = not args.quiet and _is_terminal(sys.stderr)
    log = None if args.quiet or bars else _LineLog(len(methods), sys.stderr)
    with _thread_limit(args.threads):
        results = run_comparison(methods, data=data, random_state=args.random_state,
                                 curves=not args.no_plot, progress=bars, quick=args.quick,
                                 callback=log)
    print(f"problem {args.problem}{' (--quick)' if args.quick else ''}: N={N}, M={M}, "
          f"{sizes['n_train']} training and {sizes['n_test']} test samples, "
          f"random_state={args.random_state}")
    print(format_table(results))
    if not args.no_plot:
        try:
            plot_comparison(results, args.output, title=f"{args.problem}: N={N}, M={M}, "
                                                        f"{sizes['n_test']} test samples")
        except OSError as exc:
            print(f"sklearn-unfold: cannot write {args.output}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.output}")
    return 0
