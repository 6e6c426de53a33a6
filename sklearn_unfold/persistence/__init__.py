"""Save and load fitted estimators in a format that runs no code when loading.

.. warning::

   ``pickle`` and ``joblib`` files can run arbitrary code when they are loaded: unpickling a
   file from an untrusted source is unsafe. They are fine for your own models on your own
   machines (and round-trip every estimator exactly); to share models, use :func:`save` and
   :func:`load`.

A model file is a zip archive of two members. ``params.json`` holds the format name and
version, the estimator's class name, its constructor parameters (``get_params(deep=False)``),
its public fitted attributes (names ending in ``_``) and, for a learned estimator, the
``state_dict`` of its network, as tagged JSON in which every array and tensor is a reference
into ``tensors.safetensors`` (the `safetensors <https://huggingface.co/docs/safetensors>`_
format, which holds raw numbers and nothing else).

:func:`load` rebuilds an estimator through its own code: it constructs ``cls(**params)``,
restores the public fitted attributes, builds the network exactly as ``fit`` builds it and loads
the stored weights into it. It never unpickles, never imports or calls anything the file names
beyond explicit allow-lists (the estimators and the operators, ensembles, priors and denoisers
of :mod:`sklearn_unfold`; torch.optim optimisers and schedulers and torch.nn losses), and checks
every size the file declares against the bytes the file holds before it allocates anything.

Complex data round-trips exactly: complex numpy arrays and numpy complex scalars (stored as their
raw bytes), complex torch tensors and parameters (stored as their real views, the interleaved real
and imaginary parts), Python ``complex`` numbers, and the package's operators on complex data
(``DenseOperator``, ``PartialDFT``, ...: stored as their attributes). A file that holds a complex
tensor or a Python complex number is written as format version 3, which older releases refuse as
"newer than this sklearn_unfold reads". A file that holds a denoiser module (a classical
estimator's fixed denoiser, a learned estimator's denoiser template, such as a convolutional
network) is written as version 4: the module's class (one of :mod:`sklearn_unfold.denoisers`),
its constructor settings and its weights. Every other file is written as version 2, exactly as
before, and stays readable by older releases.

Tensors record their device; :func:`load` puts them back there when it exists and on the CPU
otherwise (with a warning), so a GPU-trained model predicts on a CPU-only machine.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
import zlib
from typing import IO

import torch
from sklearn.base import BaseEstimator

from ._archive import read_members, tensors_from_bytes, tensors_to_bytes, write_archive, write_atomically
from ._codec import BASE_VERSION, MAX_DEPTH, TAG
from ._estimators import Decoder, Encoder

FORMAT_NAME = "sklearn-unfold-model"
#: The newest format version this release reads and writes. Version 2: estimators as parameters,
#: public fitted attributes and networks' state_dicts. Version 3 adds complex torch tensors and
#: Python complex numbers; version 4 adds denoiser modules. :func:`save` writes the lowest
#: version that describes the model (version 2, readable by every release, when it can).
FORMAT_VERSION = 4

__all__ = ["FORMAT_VERSION", "load", "save"]

PathOrFile = str | os.PathLike | IO[bytes]


def save(estimator: BaseEstimator, path: PathOrFile) -> None:
    """Write ``estimator`` (fitted or not) to ``path`` in the safe format.

    Parameters
    ----------
    estimator : estimator
        One of the estimators exported by :mod:`sklearn_unfold`.
    path : str, path-like or binary file object
        Where to write. A path is written through a fresh temporary file created securely in
        the same folder, flushed to disk and renamed onto ``path``: an interrupted save never
        leaves a half-written model, and a symlink planted at ``path`` is replaced, not followed.

    Notes
    -----
    The file is written as format version 4 when the model holds a denoiser module (every
    fitted AMP or VAMP, and a learned estimator given a module as ``denoiser``), as version 3
    when it holds a complex torch tensor or a Python complex number (a model fitted on complex
    signals, typically), and as version 2 otherwise, so that releases which read only version 2
    still load it. A user-defined denoiser module cannot be stored: use pickle or joblib.

    Raises
    ------
    TypeError
        If ``estimator`` is not an sklearn_unfold estimator, or holds a parameter or attribute
        the format cannot store, such as a user-defined callable or prior (the message names it;
        save such a model with pickle or joblib).
    """
    from .. import __version__

    if not isinstance(estimator, BaseEstimator):
        raise TypeError(f"save expects an sklearn_unfold estimator; got {type(estimator)!r}.")
    body = (enc := Encoder()).estimator(estimator, "estimator")
    blob = tensors_to_bytes(enc.tensors)
    header = {"format": FORMAT_NAME, "format_version": enc.version,
              "sklearn_unfold_version": __version__, "class": type(estimator).__name__,
              "tensor_keys": sorted(enc.tensors), "estimator": body}
    text = json.dumps(header, indent=1, allow_nan=False)
    if hasattr(path, "write"):
        write_archive(path, text, blob)
    else:
        write_atomically(path, lambda fh: write_archive(fh, text, blob))


def load(path: PathOrFile, *, map_location: str | torch.device | None = None) -> BaseEstimator:
    """Read an estimator written by :func:`save`; runs no code from the file.

    Parameters
    ----------
    path : str, path-like or binary file object
        The model file (or an open binary file positioned at its start).
    map_location : str, torch.device or None, default=None
        Device for every tensor. ``None``: the one each tensor was saved from when it exists
        here, else the CPU, with a ``UserWarning`` (a GPU model loads on a CPU-only machine).

    Returns
    -------
    estimator
        Equal to the saved one: same parameters, same fitted attributes, identical predictions.

    Raises
    ------
    ValueError
        If the file is damaged, truncated or foreign; has an unknown or newer format version;
        declares sizes, dtypes or nesting past what its bytes hold; holds a pickle; or names
        a class or function that may not be loaded. The message says which.
    """
    name = getattr(path, "name", path)
    try:
        return _load(path, name, map_location)
    except MemoryError:
        raise ValueError(f"{name!s}: not enough memory to load this model file (its declared sizes "
                         "all fit the bytes it holds; it is large, or damaged).") from None


def _load(path, name, map_location) -> BaseEstimator:
    try:
        with zipfile.ZipFile(path) as zf:
            params_bytes, tensor_bytes = read_members(zf)
        header = json.loads(params_bytes.decode("utf-8"))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except RecursionError:
        raise ValueError(f"{name!s}: params.json nests values more than {MAX_DEPTH} levels "
                         "deep") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
            NotImplementedError, KeyError) as exc:
        raise ValueError(f"{name!s} is not a readable sklearn-unfold model file (damaged, "
                         f"truncated or another format): {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError(f"{name!s}: params.json does not describe an sklearn-unfold model")
    version = header.get("format_version")
    if type(version) is not int or not BASE_VERSION <= version <= FORMAT_VERSION:
        if type(version) is int and version > FORMAT_VERSION:
            raise ValueError(f"{name!s}: format version {version} is newer than this "
                             f"sklearn_unfold reads ({FORMAT_VERSION}); upgrade sklearn_unfold")
        raise ValueError(f"{name!s}: unknown format version {repr(version)[:40]}; this "
                         f"sklearn_unfold reads versions {BASE_VERSION} to {FORMAT_VERSION} (files "
                         "of the development version 1 must be saved again)")
    try:
        tensors = tensors_from_bytes(tensor_bytes)
    except ValueError as exc:
        raise ValueError(f"{name!s} is not a readable sklearn-unfold model file: {exc}") from exc
    keys = header.get("tensor_keys")
    if not isinstance(keys, list) or sorted(tensors) != sorted(keys):
        raise ValueError(f"{name!s} is damaged: its tensor file holds {len(tensors)} tensors, its "
                         f"params.json lists {len(keys) if isinstance(keys, list) else 'none'}.")
    body = header.get("estimator")
    if not isinstance(body, dict) or body.get(TAG) != "estimator":
        raise ValueError(f"{name!s} is damaged: params.json has no estimator entry.")
    dec = Decoder(tensors, map_location, version)
    try:
        est = dec.estimator(body, 0)
    except ValueError as exc:
        raise ValueError(f"{name!s}: {exc}") from exc
    except RecursionError:
        raise ValueError(f"{name!s}: params.json nests values more than {MAX_DEPTH} levels "
                         "deep") from None
    except (KeyError, TypeError, IndexError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"{name!s} is damaged: its params.json could not be decoded "
                         f"({type(exc).__name__}: {exc}).") from exc
    if dec.remapped:
        warnings.warn(f"{name!s}: tensors saved on {sorted(dec.remapped)} were loaded on the "
                      "CPU, as that device is not available here.", UserWarning, stacklevel=3)
    return est

