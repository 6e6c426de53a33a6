"""Scale out on Dask: thread and GPU budgets for workers, lazy and out-of-core prediction.

Install with ``pip install "sklearn-unfold[distributed]"`` (Dask and ``dask.distributed``);
the rest of the package never imports Dask.

Three tools:

* :func:`configure_workers` (and the :class:`TorchWorkerPlugin` it registers) gives torch and
  BLAS in every worker of a ``dask.distributed`` cluster their share of the cores, and, on
  request, each worker its own GPU, so that ``GridSearchCV`` under
  ``joblib.parallel_config(backend="dask")`` neither oversubscribes the cores nor piles its fits
  onto one GPU;
* :func:`predict_dask` predicts a Dask array of measurements lazily, block by block, with the
  fitted estimator sent to the workers once;
* :func:`predict_to_npy` writes the estimates of an array, a ``.npy`` file or a Dask array of
  measurements into a ``.npy`` file, chunk by chunk, so that memory stays flat as the number of
  samples grows.

See the "Scaling out" page of the documentation for the recipes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .operators import LinearOperator

INSTALL_HINT = 'pip install "sklearn-unfold[distributed]"'

try:
    import dask
    import dask.array as da
    from distributed import WorkerPlugin
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"sklearn_unfold.distributed needs Dask and dask.distributed, which are not installed "
        f"({exc}). Install them with: {INSTALL_HINT}") from exc

__all__ = ["TorchWorkerPlugin", "configure_workers", "predict_dask", "predict_to_npy"]

logger = logging.getLogger(__name__)

PLUGIN_NAME = "sklearn-unfold-torch"

# What the plugin applied in this (worker) process, keyed by worker address; read back by
# configure_workers through ``client.run``.
_APPLIED: dict[str, dict[str, Any]] = {}

# The warning of ``sklearn_unfold._parallel.warn_if_gpu_shared``: it fires for any fit off the
# main thread, hence for every fit in a Dask worker. A worker with one task thread and one GPU of
# its own does not share that GPU, so the plugin silences it there (and only there).
_SHARED_GPU_WARNING = r"Training on cuda.* inside a parallel job"


# ------------------------------------------------------------------------------------ workers
def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _apply_threads(n_threads: int, blas: bool) -> int | None:
    """Set torch's (and, with ``blas``, BLAS's) threads for the calling thread and the process."""
    torch.set_num_threads(n_threads)
    if not blas:
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    threadpool_limits(limits=n_threads, user_api="blas")
    return n_threads


def _apply_in_task_thread(n_threads: int, blas: bool, barrier: threading.Barrier) -> str:
    _apply_threads(n_threads, blas)
    name = threading.current_thread().name
    try:  # hold this thread until every task thread has taken one call
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    return name


class TorchWorkerPlugin(WorkerPlugin):
    """Give torch and BLAS in a Dask worker their share of the cores, and the worker its GPU.

    Register it with ``client.register_plugin(TorchWorkerPlugin(...))`` (it then also applies
    to workers that join later), or let :func:`configure_workers` compute the shares and
    register it. On each worker, at start-up or when registered:

    * **threads**: ``torch.set_num_threads(threads_per_task)``, applied in the worker's
      process and in each of its task threads (torch keeps a thread count per thread that has
      already run an operation, so setting it from one thread does not reach the others), and
      the same limit on BLAS through ``threadpoolctl`` when it is installed and ``blas=True``.
      A worker with ``nthreads = t`` runs up to ``t`` tasks at once, each with
      ``threads_per_task`` torch threads: choose ``t × threads_per_task`` at most the worker's
      cores;
    * **GPU**: with ``gpus``, the worker's process gets ``CUDA_VISIBLE_DEVICES`` set to one of
      them before it first uses CUDA, so that CUDA device 0, where ``device="auto"`` and
      ``"cuda"`` train, is that GPU. Worker ``k`` (its name, as
      ``LocalCluster`` names its workers ``0, 1, ...``; or an explicit mapping) gets
      ``gpus[k % len(gpus)]``. A worker whose environment already sets
      ``CUDA_VISIBLE_DEVICES`` (``dask-cuda``, a SLURM GPU allocation, a launcher script) is
      left as it is unless ``gpus`` is given.

    Parameters
    ----------
    threads_per_task : int, mapping or None, default=None
        torch (and BLAS) threads for each task; a mapping from worker name or address to such
        a number gives each worker its own. ``None`` gives a worker its CPUs divided by its
        task threads (``usable CPUs // nthreads``): its share when it is alone on the CPUs it
        sees (a batch job, a container). Several workers on one machine see the same CPUs, so
        use :func:`configure_workers`, which counts them, or give the number.
    gpus : sequence of int or str, or mapping, optional
        GPU ids to spread over the workers, or a mapping from worker name or address to a GPU
        id. ``None`` leaves CUDA alone.
    blas : bool, default=True
        Also limit BLAS threads (through ``threadpoolctl``, when importable).
    timeout : float, default=30
        Seconds to wait for busy task threads when the plugin is registered on a running
        worker; threads still busy then keep their setting until they next start (a warning
        is logged on the worker).

    Notes
    -----
    Dask's nanny already starts each worker process with ``OMP_NUM_THREADS=1``,
    ``MKL_NUM_THREADS=1`` and ``OPENBLAS_NUM_THREADS=1`` (the Dask setting
    ``distributed.nanny.pre-spawn-environ``), and torch sizes its thread pool from
    ``OMP_NUM_THREADS`` when it is imported: without this plugin every task of a nanny-started
    worker runs torch on one thread, which does not oversubscribe the cores (``t`` task
    threads, one torch thread each) but leaves cores idle when a worker is given more cores
    than task threads. Workers started without a nanny (``processes=False``,
    ``dask worker --no-nanny``) get no such limit, and torch then uses every core in every
    task.

    ``CUDA_VISIBLE_DEVICES`` is read by the CUDA driver when the process first initialises
    CUDA; the plugin raises a ``RuntimeError`` on a worker where torch has already done so.
    """

    name = PLUGIN_NAME
    idempotent = False

    def __init__(self, threads_per_task: int | Mapping[Any, int] | None = None, *,
                 gpus: Sequence[int | str] | Mapping[Any, int | str] | None = None,
                 blas: bool = True, timeout: float = 30.0) -> None:
        self.threads_per_task = _check_threads(threads_per_task)
        self.gpus = _check_gpus(gpus)
        self.blas = bool(blas)
        self.timeout = float(timeout)

    # ---------------------------------------------------------------- what this worker gets
    @staticmethod
    def _lookup(mapping: Mapping, worker) -> Any:
        for key in (worker.name, str(worker.name), worker.address):
            if key in mapping:
                return mapping[key]
        return None

    def _threads_for(self, worker) -> int:
        if isinstance(self.threads_per_task, Mapping):
            found = self._lookup(self.threads_per_task, worker)
            if found is not None:
                return int(found)
        elif self.threads_per_task is not None:
            return int(self.threads_per_task)
        return max(1, _usable_cpus() // max(1, int(worker.state.nthreads)))

    def _gpu_for(self, worker) -> str | None:
        if self.gpus is None:
            return None
        if isinstance(self.gpus, Mapping):
            found = self._lookup(self.gpus, worker)
            return None if found is None else str(found)
        try:
            index = int(worker.name)
        except (TypeError, ValueError):
            raise ValueError(
                f"TorchWorkerPlugin(gpus={list(self.gpus)}) spreads GPUs over workers by their "
                f"integer names (0, 1, ...), but this worker is named {worker.name!r}: give "
                "gpus as a mapping {worker name or address: gpu id}, use configure_workers, or "
                "set CUDA_VISIBLE_DEVICES in each worker's environment.") from None
        return str(self.gpus[index % len(self.gpus)])

    # ---------------------------------------------------------------- the plugin hook
    async def setup(self, worker) -> None:
        """Apply the thread and GPU settings on ``worker`` (called by ``dask.distributed``)."""
        gpu = self._gpu_for(worker)
        if gpu is not None and os.environ.get("CUDA_VISIBLE_DEVICES") != gpu:
            if torch.cuda.is_initialized():
                raise RuntimeError(
                    f"worker {worker.address} has initialised CUDA already, so setting "
                    f"CUDA_VISIBLE_DEVICES={gpu} there has no effect: register the plugin "
                    "before the worker's first CUDA task (e.g. right after starting the "
                    "cluster), or set CUDA_VISIBLE_DEVICES in the worker's environment.")
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        nthreads = max(1, int(worker.state.nthreads))
        if nthreads == 1 and visible is not None and visible.strip() and "," not in visible:
            warnings.filterwarnings("ignore", message=_SHARED_GPU_WARNING, category=UserWarning)

        n_threads = self._threads_for(worker)
        blas = _apply_threads(n_threads, self.blas)  # the process; threads started later
        reached: set[str] = set()
        executor = getattr(worker, "executors", {}).get("default")
        if executor is not None:
            barrier = threading.Barrier(nthreads, timeout=self.timeout)
            loop = asyncio.get_running_loop()
            calls = [loop.run_in_executor(executor, _apply_in_task_thread, n_threads, self.blas,
                                          barrier) for _ in range(nthreads)]
            reached = set(await asyncio.gather(*calls))
            if len(reached) < nthreads:
                logger.warning("TorchWorkerPlugin reached %d of %d task threads of %s within "
                               "%.0f s (the others were busy); they keep their thread count "
                               "until they next start.", len(reached), nthreads, worker.address,
                               self.timeout)
        _APPLIED[worker.address] = {
            "name": worker.name, "nthreads": nthreads, "torch_threads": n_threads,
            "blas_threads": blas, "task_threads_reached": len(reached),
            "cuda_visible_devices": visible,
        }


def _check_threads(value):
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: _check_threads(v) for k, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"threads_per_task must be a positive integer, a mapping of worker to "
                         f"positive integers, or None; got {value!r}.")
    return int(value)


def _check_gpus(gpus):
    if gpus is None:
        return None
    if isinstance(gpus, Mapping):
        return {k: str(v) for k, v in gpus.items()}
    if isinstance(gpus, (str, bytes)) or not isinstance(gpus, Sequence) or len(gpus) == 0:
        raise ValueError(f"gpus must be a non-empty sequence of GPU ids (e.g. [0, 1]) or a "
                         f"mapping of worker to GPU id; got {gpus!r}.")
    return [str(g) for g in gpus]


def _worker_facts(dask_worker=None) -> dict[str, Any]:
    host = dask_worker.address.rsplit(":", 1)[0] if dask_worker is not None else ""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cpus = list(range(os.cpu_count() or 1))
    return {"host": host, "cpus": cpus, "nthreads": int(dask_worker.state.nthreads),
            "name": dask_worker.name}


def _worker_report(dask_worker=None) -> dict[str, Any]:
    applied = dict(_APPLIED.get(dask_worker.address, {}))
    applied["torch_threads_now"] = torch.get_num_threads()
    applied["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return applied


def configure_workers(client, threads_per_task: int | None = None, *,
                      gpus: Sequence[int | str] | None = None, blas: bool = True,
                      timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """Give torch and BLAS in every worker its share of the cores, and each worker a GPU.

    Counts the workers that share CPUs (the same host and CPU affinity), gives each task
    thread an equal share of them, and registers a :class:`TorchWorkerPlugin` with those
    numbers (workers that join later get ``threads_per_task``, or their CPUs over their task
    threads when it is ``None``). Call it once the workers are up
    (``client.wait_for_workers(n)``), before the first task.

    Parameters
    ----------
    client : distributed.Client
        The client of the cluster.
    threads_per_task : int, optional
        torch (and BLAS) threads for each task. ``None``: each worker's fair share, the CPUs of
        its machine (those its process may use) divided by the task threads of all the
        workers running there; for ``LocalCluster(n_workers=w, threads_per_worker=t)`` on
        ``c`` cores that is ``max(1, c // (w × t))``.
    gpus : sequence of int or str, optional
        GPU ids; the current workers, in the order of their names, get one each in turn
        (``CUDA_VISIBLE_DEVICES``, see :class:`TorchWorkerPlugin`). ``None`` leaves CUDA
        alone: a worker started with its own ``CUDA_VISIBLE_DEVICES`` keeps it.
    blas : bool, default=True
        Also limit BLAS threads through ``threadpoolctl``.
    timeout : float, default=30
        Seconds a worker waits for busy task threads (see :class:`TorchWorkerPlugin`).

    Returns
    -------
    report : dict
        Worker address → what it applied: ``nthreads``, ``torch_threads`` (per task),
        ``blas_threads``, ``task_threads_reached``, ``cuda_visible_devices`` and
        ``torch_threads_now`` (read back in the worker).
    """
    if not hasattr(client, "run") or not hasattr(client, "register_plugin"):
        raise TypeError(f"client must be a dask.distributed Client; got "
                        f"{type(client).__name__}.")
    threads = _check_threads(threads_per_task)
    gpus = _check_gpus(gpus)
    if isinstance(gpus, Mapping):
        raise ValueError("configure_workers takes gpus as a sequence of GPU ids; pass a "
                         "mapping to TorchWorkerPlugin directly.")
    facts = client.run(_worker_facts)
    if not facts:
        raise ValueError("the client has no workers yet: start them (or "
                         "client.wait_for_workers(n)) before configure_workers.")
    per_worker: dict[str, int] | int | None = threads
    if threads is None:
        groups: dict[tuple, int] = {}
        for f in facts.values():
            key = (f["host"], tuple(f["cpus"]))
            groups[key] = groups.get(key, 0) + f["nthreads"]
        per_worker = {addr: max(1, len(f["cpus"]) // groups[(f["host"], tuple(f["cpus"]))])
                      for addr, f in facts.items()}
    gpu_map = None
    if gpus is not None:
        order = sorted(facts, key=lambda a: (str(facts[a]["name"]), a))
        gpu_map = {addr: gpus[i % len(gpus)] for i, addr in enumerate(order)}
    # Workers that join later are not in the mappings: they get their CPUs over their task
    # threads (threads_per_task=None) and keep their CUDA_VISIBLE_DEVICES.
    plugin = TorchWorkerPlugin(per_worker, gpus=gpu_map, blas=blas, timeout=timeout)
    client.register_plugin(plugin, name=PLUGIN_NAME)
    return client.run(_worker_report)


# ------------------------------------------------------------------------------------ predict
def _check_estimator(estimator) -> None:
    if not hasattr(estimator, "predict"):
        raise TypeError(f"estimator must be a fitted estimator with a predict method; got "
                        f"{type(estimator).__name__}.")
    check_is_fitted(estimator)


def _n_features_in(estimator) -> int | None:
    n = getattr(estimator, "n_features_in_", None)
    return int(n) if n is not None else None


def _output_tail(estimator, probe) -> tuple[int, ...]:
    """The shape of one sample's estimate: ``(N,)``, or ``()`` for 1-D targets."""
    n_signal = getattr(estimator, "_n_signal_features", None)
    if callable(n_signal) and hasattr(estimator, "_target_1d"):
        return () if estimator._target_1d else (int(n_signal()),)
    return tuple(np.shape(probe())[1:])


def _predict_block(Y_block, estimator, operator, rows, tail):
    if Y_block.shape[0] == 0:
        return np.empty((0,) + tuple(tail), dtype=np.float64)
    if rows is not None:  # a per-sample LinearOperator: this block's rows of it
        operator = operator.take(slice(int(rows[0]), int(rows[-1]) + 1))
    if operator is None:
        out = estimator.predict(Y_block)
    else:
        out = estimator.predict(Y_block, operator=operator)
    return np.asarray(out, dtype=np.float64)


def _check_chunk_size(chunk_size, name: str = "chunk_size", allow_none: bool = True):
    if chunk_size is None and allow_none:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral):
        raise TypeError(f"{name} must be a positive integer (rows per chunk); got "
                        f"{type(chunk_size).__name__} {chunk_size!r}.")
    if chunk_size < 1:
        raise ValueError(f"{name} must be a positive integer (rows per chunk); got {chunk_size}.")
    return int(chunk_size)


def predict_dask(estimator, Y, operator=None, *, chunk_size: int | None = None) -> da.Array:
    """Predict a Dask array of measurements lazily, one block of whole rows at a time.

    Nothing is computed until the result is (``.compute()``, ``.store(...)``,
    :func:`predict_to_npy`). ``Y`` is rechunked so that each block holds whole rows (all
    ``M`` measurements of its samples); each block is one ``estimator.predict`` call. The
    estimator enters the task graph once, as one ``dask.delayed`` object that every block
    depends on: a distributed scheduler sends it to each worker once, not with every block.

    Parameters
    ----------
    estimator : fitted estimator
        A fitted estimator of this package (or any fitted regressor with ``predict``).
    Y : dask.array.Array or array-like of shape (n_samples, n_measurements)
        The measurements. An in-memory array is wrapped with ``dask.array.from_array``.
    operator : dask.array.Array, array-like or LinearOperator, optional
        The operator of each sample: an ``(n_samples, n_measurements, n_features)`` Dask
        array (rechunked along the samples like ``Y``, so each block of ``Y`` travels with its
        operators) or in-memory array, or a per-sample (or shared)
        :class:`~sklearn_unfold.operators.LinearOperator`, sent once, of which each block takes
        its rows. ``None``: the estimator's fitted operator.
    chunk_size : int, optional
        Rows per block; ``None`` keeps ``Y``'s row chunks (a numpy ``Y`` becomes one block per
        ``10_000`` rows).

    Returns
    -------
    X_hat : dask.array.Array of shape (n_samples, n_features), float64
        (``(n_samples,)`` for an estimator fitted on 1-D targets), chunked along the samples
        like the rechunked ``Y``.
    """
    _check_estimator(estimator)
    chunk_size = _check_chunk_size(chunk_size)
    if not isinstance(Y, da.Array):
        if isinstance(Y, (str, os.PathLike)):
            raise TypeError("Y must be an array, not a path; open it with "
                            "dask.array.from_array(np.load(path, mmap_mode='r')) or use "
                            "predict_to_npy.")
        Y = np.asarray(Y) if not hasattr(Y, "shape") else Y
        if getattr(Y, "ndim", None) == 2:
            Y = da.from_array(Y, chunks=(chunk_size or 10_000, -1))
    if getattr(Y, "ndim", None) != 2:
        raise ValueError(f"Y must be 2-D, of shape (n_samples, n_measurements); got "
                         f"{getattr(Y, 'ndim', np.ndim(Y))}-D input of shape {np.shape(Y)}.")
    if any(np.isnan(c) for c in Y.chunks[0]):
        raise ValueError(f"Y has unknown chunk sizes along its samples (shape {Y.shape}); call "
                         "Y.compute_chunk_sizes() first.")
    n, M = Y.shape
    expected = _n_features_in(estimator)
    if expected is not None and M != expected:
        raise ValueError(f"Y has shape {Y.shape}: {M} measurement columns, but "
                         f"{type(estimator).__name__} was fitted with {expected}.")
    if n == 0:
        raise ValueError(f"Y has 0 samples (shape {Y.shape}); at least 1 is required.")
    Y = Y.rechunk({0: chunk_size, 1: -1} if chunk_size is not None else {1: -1})
    row_chunks = Y.chunks[0]

    def probe():
        first = np.asarray(Y[:1].compute())
        op1 = operator
        if isinstance(operator, da.Array):
            op1 = np.asarray(operator[:1].compute())
        elif isinstance(operator, LinearOperator) and operator.per_sample:
            op1 = operator.take(slice(0, 1))
        elif operator is not None:
            op1 = np.asarray(operator)[:1]
        return (estimator.predict(first) if op1 is None
                else estimator.predict(first, operator=op1))

    tail = _output_tail(estimator, probe)
    est = dask.delayed(estimator, name=f"unfold-estimator-{uuid.uuid4().hex}", traverse=False)
    op_arg, op_ind, rows, rows_ind = None, None, None, None
    if operator is not None:
        op_arg, op_ind, rows, rows_ind = _dask_operator(operator, n, M, tail, row_chunks)
    out_ind = "i" if tail == () else "ij"
    new_axes = {} if tail == () else {"j": tail[0]}
    return da.blockwise(
        _predict_block, out_ind, Y, "ik", est, None, op_arg, op_ind, rows, rows_ind,
        tuple(tail), None, new_axes=new_axes, concatenate=True, dtype=np.float64,
        meta=np.empty((0,) * len(out_ind), dtype=np.float64),
        name=f"unfold-predict-{uuid.uuid4().hex}")


def _dask_operator(operator, n: int, M: int, tail, row_chunks):
    """The operator argument of the blocks: a Dask array aligned with ``Y``, or a delayed one."""
    N = tail[0] if tail else None
    if isinstance(operator, LinearOperator):
        shape = tuple(operator.shape)
        if operator.per_sample and shape[0] != n:
            raise ValueError(f"operator holds {shape[0]} per-sample operators (shape {shape}) "
                             f"but Y has {n} samples.")
        if tuple(shape[-2:])[0] != M or (N is not None and shape[-1] != N):
            raise ValueError(f"operator has shape {shape}; Y has {M} measurements per sample"
                             + (f" and the estimator recovers {N} signal entries" if N else "")
                             + ".")
        op = dask.delayed(operator, name=f"unfold-operator-{uuid.uuid4().hex}", traverse=False)
        if not operator.per_sample:
            return op, None, None, None
        return op, None, da.arange(n, chunks=(row_chunks,)), "i"
    if isinstance(operator, (str, os.PathLike)):
        raise TypeError("operator must be an array or a LinearOperator, not a path; open the "
                        "file with np.load(path, mmap_mode='r').")
    if not isinstance(operator, da.Array):
        if isinstance(operator, torch.Tensor):
            operator = operator.detach().cpu().numpy()
        elif not hasattr(operator, "shape"):
            raise TypeError(f"operator must be a dask array, an (n_samples, n_measurements, "
                            f"n_features) array or a LinearOperator; got "
                            f"{type(operator).__name__}.")
        if np.ndim(operator) != 3:
            raise ValueError(f"operator must hold one matrix per sample, shape (n_samples, "
                             f"n_measurements, n_features); got {np.ndim(operator)}-D input of "
                             f"shape {np.shape(operator)}.")
        operator = da.from_array(operator, chunks=(row_chunks, -1, -1))
    if operator.ndim != 3:
        raise ValueError(f"operator must hold one matrix per sample, shape (n_samples, "
                         f"n_measurements, n_features); got {operator.ndim}-D input of shape "
                         f"{operator.shape}.")
    if operator.shape[0] != n or operator.shape[1] != M or (N is not None
                                                            and operator.shape[2] != N):
        want = f"({n}, {M}, {N if N is not None else 'n_features'})"
        raise ValueError(f"operator has shape {operator.shape} but Y has shape ({n}, {M}): "
                         f"operator must have shape {want}, one operator per sample.")
    operator = operator.rechunk((row_chunks, -1, -1))
    return operator, "ikl", None, None


# ------------------------------------------------------------------------------ out of core
class _NpyBlockWriter:
    """A ``__setitem__`` target for ``dask.array.store`` that writes into a ``.npy`` file.

    It holds only the path: each write maps the file, writes its region, flushes and unmaps,
    so it pickles small, and no process keeps the written pages mapped (resident) afterwards.
    """

    def __init__(self, path: str, shape: tuple[int, ...], dtype=np.float64) -> None:
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def __setitem__(self, index, value) -> None:
        out = np.load(self.path, mmap_mode="r+")
        try:
            out[index] = value
            out.flush()
        finally:
            del out


def _open_rows(source, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of an array or of a ``.npy`` path, copied, the file unmapped again."""
    if isinstance(source, (str, os.PathLike)):
        mm = np.load(source, mmap_mode="r")
        try:
            return np.array(mm[start:stop])
        finally:
            del mm
    return np.asarray(source[start:stop])


def _npy_shape(path, name: str) -> tuple[int, ...]:
    try:
        mm = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise ValueError(f"{name} is the path {str(path)!r}, which does not exist.") from None
    except (ValueError, OSError) as exc:
        raise ValueError(f"{name} is the path {str(path)!r}, which is not a readable .npy "
                         f"file ({exc}).") from None
    if not isinstance(mm, np.ndarray):
        raise ValueError(f"{name} is the path {str(path)!r}, which holds no single array "
                         "(an .npz archive?); pass a .npy file.")
    shape = mm.shape
    del mm
    return shape


def predict_to_npy(estimator, Y, path: str | os.PathLike, *, chunk_size: int = 10_000,
                   operator=None) -> np.memmap:
    """Predict chunk by chunk into a ``.npy`` file, with memory flat in the number of samples.

    The estimates are written into ``numpy.lib.format.open_memmap(path, mode="w+")``: a
    standard ``.npy`` file, readable with ``np.load`` (``mmap_mode="r"`` to leave it on disk).
    Each chunk of ``chunk_size`` rows is read (a ``.npy`` input through a memory map opened
    for that chunk only), predicted and written, and the maps are closed again, so the
    memory used is that of one chunk whatever the number of samples.

    With a Dask array ``Y`` the chunks are computed by the active Dask scheduler (a
    ``dask.distributed`` cluster's workers, if a client is active), through
    :func:`predict_dask`, and each worker writes its blocks into the file: ``path`` must then
    be on a file system that every worker sees.

    Parameters
    ----------
    estimator : fitted estimator
        A fitted estimator of this package (or any fitted regressor with ``predict``).
    Y : array-like, str, path or dask.array.Array of shape (n_samples, n_measurements)
        The measurements: an array (a ``numpy.memmap`` too), the path of a ``.npy`` file
        (opened with ``mmap_mode="r"``), or a Dask array.
    path : str or path-like
        The ``.npy`` file to write (created, or overwritten); not the input file.
    chunk_size : int, default=10_000
        Rows per chunk (per block of a Dask ``Y``).
    operator : array-like, str, path, dask.array.Array or LinearOperator, optional
        The operator of each sample (an ``(n_samples, n_measurements, n_features)`` array or
        ``.npy`` path, read chunk by chunk like ``Y``; a Dask array; a per-sample
        :class:`~sklearn_unfold.operators.LinearOperator`). ``None``: the fitted operator.

    Returns
    -------
    X_hat : numpy.memmap of shape (n_samples, n_features), float64
        The written file, opened read-only (``np.load(path, mmap_mode="r")``).
    """
    _check_estimator(estimator)
    chunk_size = _check_chunk_size(chunk_size, allow_none=False)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike (the .npy file to write); got "
                        f"{type(path).__name__}.")
    path = os.fspath(path)
    for name, source in (("Y", Y), ("operator", operator)):
        if isinstance(source, (str, os.PathLike)) and Path(source).exists() \
                and Path(path).exists() and os.path.samefile(source, path):
            raise ValueError(f"path {path!r} is the {name} file: writing the estimates there "
                             "would overwrite the input; choose another path.")
    if isinstance(Y, da.Array):
        X_hat = predict_dask(estimator, Y, operator, chunk_size=chunk_size)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=X_hat.shape)
        del out
        da.store(X_hat, _NpyBlockWriter(path, X_hat.shape), lock=False, compute=True)
        return np.load(path, mmap_mode="r")

    if isinstance(Y, (str, os.PathLike)):
        shape = _npy_shape(Y, "Y")
    else:
        if not hasattr(Y, "shape"):
            Y = np.asarray(Y)
        shape = tuple(Y.shape)
    if len(shape) != 2:
        raise ValueError(f"Y must be 2-D, of shape (n_samples, n_measurements); got "
                         f"{len(shape)}-D input of shape {shape}.")
    n, M = shape
    if n == 0:
        raise ValueError(f"Y has 0 samples (shape {shape}); at least 1 is required.")
    expected = _n_features_in(estimator)
    if expected is not None and M != expected:
        raise ValueError(f"Y has shape {shape}: {M} measurement columns, but "
                         f"{type(estimator).__name__} was fitted with {expected}.")
    op_rows = _operator_rows(operator, n, M)

    out_shape = None
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        Y_chunk = _open_rows(Y, start, stop)
        op_chunk = op_rows(start, stop)
        X_chunk = np.asarray(estimator.predict(Y_chunk) if op_chunk is None
                             else estimator.predict(Y_chunk, operator=op_chunk),
                             dtype=np.float64)
        if out_shape is None:
            out_shape = (n,) + X_chunk.shape[1:]
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=out_shape)
        else:
            out = np.load(path, mmap_mode="r+")
        try:
            out[start:stop] = X_chunk
            out.flush()
        finally:
            del out
        del Y_chunk, op_chunk, X_chunk
    return np.load(path, mmap_mode="r")


def _operator_rows(operator, n: int, M: int):
    """``(start, stop) -> the operators of rows start:stop`` (or ``None``), validated once."""
    if operator is None:
        return lambda start, stop: None
    if isinstance(operator, LinearOperator):
        shape = tuple(operator.shape)
        if shape[-2] != M or (operator.per_sample and shape[0] != n):
            raise ValueError(f"operator has shape {shape} but Y has shape ({n}, {M}): operator "
                             f"must have shape ({n}, {M}, n_features) (or ({M}, n_features) "
                             "shared by every sample).")
        if not operator.per_sample:
            return lambda start, stop: operator
        return lambda start, stop: operator.take(slice(start, stop))
    if isinstance(operator, (str, os.PathLike)):
        shape = _npy_shape(operator, "operator")
    elif isinstance(operator, da.Array) or hasattr(operator, "shape"):
        shape = tuple(operator.shape)
    else:
        raise TypeError(f"operator must be an (n_samples, n_measurements, n_features) array, "
                        f"a .npy path, a dask array or a LinearOperator; got "
                        f"{type(operator).__name__}.")
    if len(shape) != 3 or shape[0] != n or shape[1] != M:
        raise ValueError(f"operator has shape {shape} but Y has shape ({n}, {M}): operator must "
                         f"have shape ({n}, {M}, n_features), one operator per sample.")
    if isinstance(operator, da.Array):
        return lambda start, stop: np.asarray(operator[start:stop].compute())
    return lambda start, stop: _open_rows(operator, start, stop)
