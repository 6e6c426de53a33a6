"""Thread and GPU budgets for the workers of a ``dask.distributed`` cluster."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import torch
from distributed import WorkerPlugin

logger = logging.getLogger(__name__)

PLUGIN_NAME = "sklearn-unfold-torch"

#: The worker attribute where the plugin records what it applied (read back by
#: configure_workers through ``client.run``).
_APPLIED_ATTR = "_sklearn_unfold_applied"

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
        torch (and BLAS) threads for each task; a mapping from worker name (stable when the
        nanny restarts a worker) or address to such a number gives each worker its own.
        ``None`` gives a worker its CPUs divided by its task threads
        (``usable CPUs // nthreads``): its share when it is alone on the CPUs it sees (a batch
        job, a container). Several workers on one machine see the same CPUs, so use
        :func:`configure_workers`, which counts them, or give the number.
    gpus : sequence of int or str, or mapping, optional
        GPU ids to spread over the workers, or a mapping from worker name or address to a GPU
        id. ``None`` leaves CUDA alone (a worker missing from the mapping too).
    blas : bool, default=True
        Also limit BLAS threads (through ``threadpoolctl``, when importable).
    timeout : float, default=30
        Seconds to wait for busy task threads when the plugin is registered on a worker that
        is running tasks. The calls queued for them run after those tasks, on whichever
        thread is free, so a busy thread may keep its old torch setting (a warning is logged
        on the worker): register the plugin on idle workers.

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
        # Threads for a worker missing from a threads_per_task mapping (configure_workers sets
        # it to the smallest share it computed, for workers that join later).
        self._fallback_threads: int | None = None

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
            if self._fallback_threads is not None:
                return self._fallback_threads
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
            # Calls queued behind busy tasks stay queued and apply the setting when they run;
            # setup does not wait for them beyond the timeout.
            done, _ = await asyncio.wait(calls, timeout=self.timeout)
            reached = {call.result() for call in done if call.exception() is None}
            if len(reached) < nthreads:
                logger.warning("TorchWorkerPlugin reached %d of %d task threads of %s within "
                               "%.0f s (the others were busy running tasks); those keep their "
                               "torch thread count until a queued call reaches them.",
                               len(reached), nthreads, worker.address, self.timeout)
        setattr(worker, _APPLIED_ATTR, {
            "name": worker.name, "nthreads": nthreads, "torch_threads": n_threads,
            "blas_threads": blas, "task_threads_reached": len(reached),
            "cuda_visible_devices": visible,
        })


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


def _name_order(name) -> tuple:
    """Sort key of worker names: integers (``LocalCluster``'s 0, 1, ...) by value, first."""
    try:
        return (0, int(name))
    except (TypeError, ValueError):
        return (1, 0)


def _worker_report(dask_worker=None) -> dict[str, Any]:
    applied = dict(getattr(dask_worker, _APPLIED_ATTR, {}))
    applied["torch_threads_now"] = torch.get_num_threads()
    applied["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return applied


def configure_workers(client, threads_per_task: int | None = None, *,
                      gpus: Sequence[int | str] | None = None, blas: bool = True,
                      timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """Give torch and BLAS in every worker its share of the cores, and each worker a GPU.

    Counts the workers that share CPUs (the same host and CPU affinity), gives each task
    thread an equal share of them, and registers a :class:`TorchWorkerPlugin` with those
    numbers, keyed by worker name, so that a worker the nanny restarts gets its number again
    (a worker that joins later gets ``threads_per_task``, or, when it is ``None``, the
    smallest share computed here). Call it once the workers are up
    (``client.wait_for_workers(n)``), before the first task; call it again after the set of
    workers changes.

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
        per_worker = {f["name"]: max(1, len(f["cpus"]) // groups[(f["host"], tuple(f["cpus"]))])
                      for f in facts.values()}
    gpu_map = None
    if gpus is not None:
        order = sorted(facts.values(), key=lambda f: (_name_order(f["name"]), str(f["name"])))
        gpu_map = {f["name"]: gpus[i % len(gpus)] for i, f in enumerate(order)}
    # Workers that join later are in neither mapping: they get the smallest share computed
    # here and keep their own CUDA_VISIBLE_DEVICES.
    plugin = TorchWorkerPlugin(per_worker, gpus=gpu_map, blas=blas, timeout=timeout)
    if isinstance(per_worker, dict):
        plugin._fallback_threads = min(per_worker.values())
    client.register_plugin(plugin, name=PLUGIN_NAME)
    return client.run(_worker_report)


