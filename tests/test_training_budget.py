"""The default training budget, pinned: a later change cannot make training slow silently.

On a small problem (N = 64, M = 32, 1,200 pairs: 120 held out, 1,080 for training, 3 steps per
pass at ``batch_size=500``) every learned estimator is fitted with its defaults and the stages,
optimiser steps and validation checks it used are compared with the budget its defaults allow.
The benchmarks page explains how the defaults were chosen (``benchmarks/speedup.py``).
"""

import math

import pytest

from sklearn_unfold import LAMPRegressor, LDVAMPRegressor, LISTARegressor
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.estimators._learned_base import MAX_AUTO_VALIDATION, validation_size

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_PAIRS, N_LAYERS = 1200, 4
#: estimator: (stage plan, largest total of optimiser steps, largest number of checks)
#: LAMP / LDVAMP: end to end + one refinement, each at most ceil(20 passes x 3) = 60 steps;
#: LISTA: a new-layer stage and a refinement per depth, each at most ceil(4 x 3) = 12 steps.
BUDGET = {
    LAMPRegressor: ([("end_to_end", N_LAYERS), ("refine", N_LAYERS)], 2 * 60, 2 * (1 + 6)),
    LDVAMPRegressor: ([("end_to_end", N_LAYERS), ("refine", N_LAYERS)], 2 * 60, 2 * (1 + 6)),
    LISTARegressor: ([(kind, t) for t in range(1, N_LAYERS + 1) for kind in ("layer", "refine")],
                     2 * N_LAYERS * 12, 2 * N_LAYERS * (1 + 2)),
}


@pytest.fixture(scope="module")
def problem():
    Y, X, A = make_compressed_sensing("giid", N_PAIRS, n_features=64, n_measurements=32,
                                      random_state=0)
    return Y, X, A


def test_validation_auto_holds_out_a_tenth_at_most_a_thousand():
    assert validation_size("auto", N_PAIRS) == 120
    assert validation_size("auto", 20000) == MAX_AUTO_VALIDATION == 1000
    assert validation_size("auto", 5) == 1 and validation_size("auto", 1) == 0
    assert validation_size(0.5, 20000) == 10000 and validation_size(0.0, 100) == 0
    assert validation_size(0.999, 10) == 9  # never every pair
    for cls in BUDGET:
        assert cls().validation_fraction == "auto"


@pytest.mark.parametrize("cls", list(BUDGET), ids=lambda c: c.__name__)
def test_default_schedule_stays_within_its_step_and_check_budget(problem, cls):
    Y, X, A = problem
    plan, max_steps, max_checks = BUDGET[cls]
    seen = []
    est = cls(A=A, n_layers=N_LAYERS, device="cpu", random_state=0,
              callbacks=[lambda trainer, history: seen.append(trainer.validation[0].shape[0])])
    est.fit(Y, X)
    assert [(s["stage"], s["layer"]) for s in est.stages_] == plan
    steps = sum(s["steps"] for s in est.stages_)
    assert 0 < steps <= max_steps
    assert len(est.history_) <= max_checks and est.history_[-1]["step"] == steps
    # every check ran on the held-out tenth (120 pairs), never on more
    assert set(seen) == {120}
    # each stage checks every eval_every steps and at its end, plus the check that opens it
    for stage in est.stages_:
        checks = [h for h in est.history_ if h["stage_index"] == stage["stage_index"]]
        assert len(checks) <= 1 + math.ceil(stage["steps"] / est.eval_every)
