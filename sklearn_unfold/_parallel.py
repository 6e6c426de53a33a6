"""Thread budgets for torch inside parallel workers (``GridSearchCV(n_jobs=k)`` and friends).

Torch runs its own pool of intra-op threads, sized by default to the number of cores. ``k``
parallel fits, each with a full pool, oversubscribe the cores ``k`` times over. joblib's
default ``loky`` backend (the one scikit-learn uses for ``n_jobs``) prevents this already: it
starts each worker with ``OMP_NUM_THREADS`` (and the BLAS equivalents) set to
``cpu_count() // n_jobs``, and torch sizes its pool from ``OMP_NUM_THREADS`` when it is first
imported in the worker. ``joblib.parallel_config(inner_max_num_threads=t)`` sets that budget
explicitly.

:func:`limit_torch_threads` applies such a budget to torch at run time as well, for the cases
the environment variable cannot reach: torch imported before the variable was set, or another
backend that sets the variable without starting a fresh process. It is meant to wrap the
numerical part of ``fit`` (and ``predict``) of the estimators::

    with limit_torch_threads():
        ...  # training loop

Outside a worker (no ``OMP_NUM_THREADS``) it changes nothing.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["in_parallel_worker", "limit_torch_threads", "thread_budget", "warn_if_gpu_shared"]


def in_parallel_worker() -> bool:
    """Whether this code runs as one of several parallel jobs.

    True in a worker process (joblib's ``loky`` or ``multiprocessing`` backends, which is what
    ``GridSearchCV(n_jobs=k)`` starts) and off the main thread (the ``threading`` backend).
    """
    return (multiprocessing.current_process().name != "MainProcess"
            or threading.current_thread() is not threading.main_thread())


def warn_if_gpu_shared(device: torch.device) -> bool:
    """Warn when a CUDA fit runs as one of several parallel jobs; return whether it warned.

    Parallel jobs on one GPU compete for its memory and serialise on its queue: they run out of
    memory or go no faster. The rule is one job per GPU (``n_jobs=1`` on a single GPU).
    """
    if torch.device(device).type != "cuda" or not in_parallel_worker():
        return False
    warnings.warn(
        f"Training on {device} inside a parallel job (a worker of GridSearchCV(n_jobs>1) or "
        "joblib): jobs that share one GPU compete for its memory and do not run faster. Use "
        "n_jobs=1 per GPU, or device='cpu' for CPU-parallel searches.", UserWarning, stacklevel=3)
    return True


def thread_budget() -> int | None:
    """The number of threads this process was given, or ``None`` when it was given no limit.

    Read from ``OMP_NUM_THREADS``, which joblib's loky workers (and users) set.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        budget = int(value)
    except ValueError:
        return None
    return budget if budget >= 1 else None


@contextmanager
def limit_torch_threads(n_threads: int | None = None) -> Iterator[int]:
    """Cap torch's intra-op threads for the duration of the block, then restore them.

    Parameters
    ----------
    n_threads : int or None, default=None
        The cap; ``None`` uses :func:`thread_budget` (no change when that is ``None`` too).

    Yields
    ------
    int
        The number of threads torch uses inside the block.
    """
    before = torch.get_num_threads()
    cap = thread_budget() if n_threads is None else int(n_threads)
    if cap is None or cap >= before:
        yield before
        return
    torch.set_num_threads(max(cap, 1))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
