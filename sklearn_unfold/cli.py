"""The ``sklearn-unfold`` command line.

``sklearn-unfold compare`` (or ``python -m sklearn_unfold compare``) builds a reference problem
(:func:`sklearn_unfold.datasets.make_compressed_sensing`), fits every method on a training set,
runs it on a fresh test set measured through the same ``A``, prints a table (method, iterations
or layers, test NMSE in dB, fit seconds, predict milliseconds per sample) and writes a PNG of
NMSE against iteration / layer. The work is done by
:func:`sklearn_unfold.comparison.run_comparison`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from .comparison import (
    METHODS,
    available_methods,
    default_methods,
    format_table,
    learned_import_error,
    make_comparison_data,
    plot_comparison,
    run_comparison,
)

__all__ = ["main"]

CLI_PROBLEMS = ("giid", "kappa15", "noiseless", "dct")


# ----------------------------------------------------------------------------- command line
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and the ``compare`` sub-parser (for its error messages)."""
    parser = argparse.ArgumentParser(
        prog="sklearn-unfold", description="Deep unfolding and message passing, compared.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    cmp_ = sub.add_parser(
        "compare", help="run every method on a reference problem and print a table",
        description="Fit every method on a training set of a reference problem (N = 500, M = 250, "
                    "Bernoulli-Gaussian signals; Borgerding et al. 2017), "
                    "measure it on a fresh test set through the same A, print a table and write "
                    "a PNG of NMSE against iteration / layer.")
    cmp_.add_argument("--problem", choices=CLI_PROBLEMS, default="giid",
                      help="reference problem (default: %(default)s)")
    cmp_.add_argument("--n-train", type=_positive_int, default=1000,
                      help="training pairs (default: %(default)s)")
    cmp_.add_argument("--n-test", type=_positive_int, default=1000,
                      help="test pairs (default: %(default)s)")
    cmp_.add_argument("--n-features", type=_positive_int, default=500,
                      help="signal length N (default: %(default)s, the reference problems)")
    cmp_.add_argument("--n-measurements", type=_positive_int, default=250,
                      help="measurements M (default: %(default)s)")
    cmp_.add_argument("--methods", default=None,
                      help="comma-separated list from: " + ", ".join(METHODS)
                           + " (default: all available)")
    cmp_.add_argument("--output", default="compare.png",
                      help="PNG of NMSE against iteration (default: %(default)s)")
    cmp_.add_argument("--no-plot", action="store_true", help="skip the curves and the PNG")
    cmp_.add_argument("--random-state", type=int, default=0, help="seed (default: %(default)s)")
    cmp_.add_argument("--threads", type=_positive_int, default=None,
                      help="CPU threads for torch and BLAS (default: their own defaults)")
    cmp_.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser, cmp_


def _parse_methods(parser: argparse.ArgumentParser, text: str | None) -> list[str]:
    if text is None:
        return default_methods()
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        parser.error(f"--methods: unknown method(s) {unknown or [text]}; "
                     f"choose from {', '.join(METHODS)}")
    missing = [m for m in names if METHODS[m].learned and m not in available_methods()]
    if missing:
        parser.error(f"--methods: {', '.join(missing)} need the learned estimators, which "
                     f"cannot be imported here ({learned_import_error()})")
    return list(dict.fromkeys(names))


def _check_output(parser: argparse.ArgumentParser, output: str) -> None:
    """Fail before the run, not after it, when the figure cannot be written."""
    from matplotlib.figure import Figure

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sklearn-unfold``; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.
    """
    top, parser = _build_parser()
    args = top.parse_args(argv)
    methods = _parse_methods(parser, args.methods)
    if not args.no_plot:
        _check_output(parser, args.output)
    if args.n_measurements > args.n_features:
        parser.error(f"--n-measurements ({args.n_measurements}) must not exceed --n-features "
                     f"({args.n_features}): compressed sensing measures fewer than N.")
    data = make_comparison_data(args.problem, args.n_train, args.n_test, args.random_state,
                                n_features=args.n_features, n_measurements=args.n_measurements)
    M, N = data.A.shape
    with _thread_limit(args.threads):
        results = run_comparison(methods, data=data, random_state=args.random_state,
                                 curves=not args.no_plot, progress=not args.quiet)
    print(f"problem {args.problem}: N={N}, M={M}, {args.n_train} training and {args.n_test} "
          f"test samples, random_state={args.random_state}")
    print(format_table(results))
    if not args.no_plot:
        try:
            plot_comparison(results, args.output, title=f"{args.problem}: N={N}, M={M}, "
                                                        f"{args.n_test} test samples")
        except OSError as exc:
            print(f"sklearn-unfold: cannot write {args.output}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.output}")
    return 0
