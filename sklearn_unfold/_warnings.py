"""Warnings attributed to the user's line.

A warning raised deep inside a solver, the training loop or a scikit-learn search should point
at the user's ``fit``/``predict`` (or ``GridSearchCV(...).fit``) line, not at the package's own
loop: the ``stacklevel`` is counted up to the first frame outside this package, scikit-learn and
joblib.
"""

from __future__ import annotations

import os
import sys
import warnings

import joblib
import sklearn


def _internal_dirs() -> tuple[str, ...]:
    return tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                 for m in (sys.modules["sklearn_unfold"], sklearn, joblib))


def user_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning to the user's line.

    Counted from the function that calls ``warnings.warn`` (level 1): the first frame whose
    file is outside this package, scikit-learn and joblib.
    """
    internal = _internal_dirs()
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(internal):
        frame, level = frame.f_back, level + 1
    return level


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the user's line (see :func:`user_stacklevel`)."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
