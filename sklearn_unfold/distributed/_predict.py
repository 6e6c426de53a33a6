"""Lazy (Dask) and out-of-core (memory-mapped ``.npy``) prediction."""

from __future__ import annotations

import logging
import os
import uuid
from numbers import Integral
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..operators import LinearOperator

logger = logging.getLogger(__name__)


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
        its rows (the whole operator then goes to every worker that computes a block: for
        many samples, prefer a Dask array). ``None``: the estimator's fitted operator.
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
        if shape[-2] != M or (N is not None and shape[-1] != N):
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
