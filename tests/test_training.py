"""The training engine: schedules, curriculum, early stopping, checkpoints and faults."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from sklearn_unfold.datasets import BernoulliGaussianPrior, make_compressed_sensing
from sklearn_unfold.networks import LAMPNetwork, lista_from_ista
from sklearn_unfold.operators import LinearOperator, as_operator
from sklearn_unfold.operators.ensembles import GaussianEnsemble
from sklearn_unfold.training import (
    Optimizer,
    PairBatches,
    PriorBatches,
    Stage,
    SyntheticBatches,
    Trainer,
    layer_nmse,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem():
    Y, X, A = make_compressed_sensing("giid", 700, n_features=64, n_measurements=32,
                                      random_state=0)
    T = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    op = as_operator(A, dtype=torch.float32)
    train = PairBatches(T(Y[:500]), T(X[:500]), 100, random_state=0, operator=op)
    return A, train, (T(Y[500:]), T(X[500:]), op)


def _net(A, n_layers=3, **kw):
    return LAMPNetwork.from_amp(A, "bg", [1.0, math.log(9.0)], n_layers, **kw)


def _val_db(net, validation):
    Yv, Xv, opv = validation
    with torch.no_grad():
        return 10 * math.log10(float(layer_nmse(net(Yv, opv)[-1:], Xv)[0]))


def test_layerwise_schedule_grows_and_improves(problem):
    A, train, val = problem
    net = _net(A)
    before = _val_db(net, val)
    tr = Trainer(net, schedule="layerwise", refine_factors=(0.5, 0.1), max_steps=20,
                 learning_rate=3e-3).fit(train, val)
    stages = [(h["stage"], h["layer"]) for h in tr.stages_]
    assert stages == [("layer", 1), ("refine", 1), ("refine", 1), ("layer", 2), ("refine", 2),
                      ("refine", 2), ("layer", 3), ("refine", 3), ("refine", 3)]
    assert {"steps", "train_loss", "val_nmse_db", "learning_rate", "stop"} <= set(tr.stages_[0])
    assert [h["learning_rate"] for h in tr.stages_[:3]] == pytest.approx([3e-3, 1.5e-3, 3e-4])
    assert [h["stage_index"] for h in tr.stages_] == list(range(9))
    after = _val_db(net, val)
    assert after < before - 1.0
    # the network ends with every layer active, trainable, and on its best checkpoint
    assert net.n_active == 3 and all(p.requires_grad for p in net.parameters())
    assert after == pytest.approx(tr.stages_[-1]["val_nmse_db"], abs=1e-3)
    assert after == pytest.approx(tr.history_[-1]["best_val_nmse_db"], abs=1e-3)


def test_end_to_end_schedule_and_growth_factors(problem):
    A, train, val = problem
    tr = Trainer(_net(A), schedule="end_to_end", refine_factors=(0.5,), max_steps=5)
    assert [(s.name, s.layer, s.final_weight) for s in tr._plan(0)] == [
        ("end_to_end", 2, 0.0), ("refine", 2, 1.0)]
    lw = Trainer(_net(A), refine_factors=(0.5, 0.1), growth_factors=(), max_steps=5)
    assert [(s.name, s.layer) for s in lw._plan(1)] == [
        ("layer", 1), ("layer", 2), ("refine", 2), ("refine", 2)]


def test_layer_stage_trains_only_the_new_layer(problem):
    A, train, val = problem
    net = _net(A)
    first = [p.detach().clone() for p in net.layer_parameters(0)]
    tr = Trainer(net, max_steps=10, refine_factors=())
    tr.module.n_active = 2
    stage = Stage("layer", 1, net.layer_parameters(1), 1e-2, 10)
    tr._setup(train, val)
    tr._fit_stage(stage)
    for p, q in zip(net.layer_parameters(0), first, strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(net.B[1], torch.as_tensor(A.T, dtype=torch.float32))


def test_curriculum_loss_goes_from_mean_to_final(problem):
    A, train, _ = problem
    tr = Trainer(_net(A))
    Y, X, op = train()
    with torch.no_grad():
        outs = tr.module(Y, op)
    per = layer_nmse(outs, X)
    mean = tr._loss(outs, X, Stage("refine", 2, [], 1e-3, 1, final_weight=0.0))
    last = tr._loss(outs, X, Stage("refine", 2, [], 1e-3, 1, final_weight=1.0))
    half = tr._loss(outs, X, Stage("refine", 2, [], 1e-3, 1, final_weight=0.5))
    assert float(mean) == pytest.approx(float(per.mean()))
    assert float(last) == pytest.approx(float(per[-1]))
    assert float(half) == pytest.approx(0.5 * float(per.mean() + per[-1]))


def test_early_stopping_ends_a_stage(problem):
    A, train, val = problem
    tr = Trainer(_net(A), schedule="end_to_end", refine_factors=(), max_steps=1000,
                 eval_every=5, n_iter_no_change=2, tol=100.0).fit(train, val)
    assert tr.stages_[0]["steps"] == 10 and tr.stages_[0]["stop"] == "no_change"
    # every check is a record: the opening one (step 0) and one every eval_every=5 steps
    assert [h["step"] for h in tr.history_] == [0, 5, 10]
    assert [h["stage_step"] for h in tr.history_] == [0, 5, 10]


class _NaNTrainer(Trainer):
    """Blows the weights up and reports a non-finite loss on its first ``n_bad`` steps."""

    n_bad = 2

    def _train_step(self, optimizer, Y, X, op, stage):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls <= self.n_bad:
            with torch.no_grad():
                for p in stage.params:
                    p.fill_(float("nan"))
            return float("nan")
        return super()._train_step(optimizer, Y, X, op, stage)


def test_non_finite_loss_rolls_back_and_lowers_the_rate(problem):
    A, train, val = problem
    net = _net(A, 2)
    with pytest.warns(ConvergenceWarning, match="rolled back"):
        tr = _NaNTrainer(net, schedule="end_to_end", refine_factors=(), max_steps=20,
                         learning_rate=1e-3).fit(train, val)
    assert tr.n_faults_ == 2 and not tr.gave_up_
    assert tr.stages_[0]["learning_rate"] == pytest.approx(1e-5)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_unrecoverable_training_ends_on_the_best_finite_model(problem):
    A, train, val = problem
    net = _net(A, 2)
    start = _val_db(net, val)
    trainer = _NaNTrainer(net, max_steps=50, max_recoveries=3)
    trainer.n_bad = 10**9
    with pytest.warns(ConvergenceWarning, match="did not recover"):
        trainer.fit(train, val)
    assert trainer.gave_up_ and trainer.stages_[-1]["stop"] == "fault"
    assert len(trainer.stages_) == 1  # training stopped at the first failing stage
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert _val_db(net, val) == pytest.approx(start, abs=1e-4)


class _InterruptTrainer(Trainer):
    def _train_step(self, optimizer, Y, X, op, stage):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 25:
            raise KeyboardInterrupt
        return super()._train_step(optimizer, Y, X, op, stage)


def test_keyboard_interrupt_keeps_the_best_weights(problem):
    A, train, val = problem
    net = _net(A, 3)
    tr = _InterruptTrainer(net, max_steps=20, learning_rate=3e-3)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="interrupted"):
        tr.fit(train, val)  # the interrupt reaches the caller, after the clean-up
    assert tr.interrupted_ and tr.stages_[-1]["stop"] == "interrupted"
    assert net.n_active == 3 and len(net(val[0], val[2])) == 3
    # the interrupted stage (a refinement at depth 1) ended on its best checkpoint
    last = tr.stages_[-1]
    assert last["layer"] == 1 and last["steps"] == 4
    net.n_active = 1
    assert _val_db(net, val) == pytest.approx(last["val_nmse_db"], abs=1e-3)


class _OOMTrainer(Trainer):
    def _train_step(self, optimizer, Y, X, op, stage):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_names_the_batch_size(problem):
    A, train, val = problem
    with pytest.raises(torch.cuda.OutOfMemoryError, match=r"batch_size=100.*batch_size=50"):
        _OOMTrainer(_net(A, 2), max_steps=5).fit(train, val)


def test_pair_batches_cover_every_pair_once_per_pass():
    Y = torch.arange(10.0)[:, None]
    op = as_operator(torch.ones(1, 1))
    batches = PairBatches(Y, 2 * Y, 5, random_state=0, operator=op)
    seen = torch.cat([batches()[0] for _ in range(2)]).ravel()
    assert sorted(seen.tolist()) == list(range(10))
    y, x, o = batches()
    assert torch.equal(x, 2 * y) and o is op  # a shared operator serves every batch as is
    again = PairBatches(Y, 2 * Y, 5, random_state=0, operator=op)
    assert torch.equal(again()[0], PairBatches(Y, 2 * Y, 5, random_state=0, operator=op)()[0])
    assert PairBatches(Y, Y, 50, operator=op).batch_size == 10
    # batches(n): successive mini-batches joined until at least n samples
    y, x, o = PairBatches(Y, 2 * Y, 4, random_state=0, operator=op)(7)
    assert y.shape == (8, 1) and torch.equal(x, 2 * y) and o is op


def test_pair_batches_index_a_per_sample_operator_with_the_batch():
    """Pair i's operator (here the matrix filled with i) travels with pair i."""
    n = 10
    Y = torch.arange(float(n))[:, None]
    mats = torch.arange(float(n), dtype=torch.float64)[:, None, None] * torch.ones(n, 2, 3)
    op = as_operator(mats)
    batches = PairBatches(Y, 2 * Y, 4, random_state=0, operator=op)
    for _ in range(5):
        y, x, o = batches()
        assert o.per_sample and o.shape == (4, 2, 3)
        torch.testing.assert_close(o.to_dense()[:, 0, 0], y.ravel().double())
    y, x, o = batches(10)  # three batches of 4 joined
    assert y.shape == (12, 1) and len(o) == 12
    torch.testing.assert_close(o.to_dense()[:, 1, 2], y.ravel().double())
    torch.testing.assert_close(o.forward(torch.ones(12, 3, dtype=torch.float64)),
                               3 * y.double().expand(12, 2))
    with pytest.raises(ValueError, match="per-sample operators"):
        PairBatches(Y[:5], Y[:5], 2, operator=op)


def test_prior_batches_synthesise_measurements_through_A():
    rng = np.random.RandomState(0)
    A = torch.as_tensor(rng.standard_normal((16, 32)) / 4, dtype=torch.float64)
    prior = BernoulliGaussianPrior(0.2, 1.0, n_features=32)
    batches = PriorBatches(prior, A, noise_var=0.01, batch_size=4000, random_state=0)
    Y, X, op = batches()
    assert isinstance(op, LinearOperator) and not op.per_sample
    assert torch.equal(op.to_dense(), A)
    assert Y.shape == (4000, 16) and X.shape == (4000, 32) and Y.dtype == X.dtype == A.dtype
    assert float((Y - X @ A.T).var()) == pytest.approx(0.01, rel=0.05)
    assert float((X != 0).double().mean()) == pytest.approx(0.2, abs=0.01)
    assert not torch.equal(batches()[1], X)  # fresh signals every call
    # the operator may be given as one
    Y2, X2, op2 = PriorBatches(prior, as_operator(A), 0.0, 10, random_state=0)()
    assert torch.equal(op2.to_dense(), A) and Y2.dtype == torch.float64
    torch.testing.assert_close(Y2, X2 @ A.T)

    class Bad:
        def sample(self, n, random_state=None):
            return np.zeros((n, 5))

    with pytest.raises(ValueError, match=r"returned shape \(10, 5\); expected \(10, 32\)"):
        PriorBatches(Bad(), A, 0.01, 10)()


def test_prior_tensor_draws_are_reproducible_and_follow_the_prior():
    prior = BernoulliGaussianPrior(0.1, 4.0, n_features=500)
    gen = torch.Generator().manual_seed(3)
    X = prior.sample_tensor(4000, generator=gen, dtype=torch.float32)
    assert X.shape == (4000, 500) and X.dtype == torch.float32
    nz = X[X != 0]
    assert float((X != 0).double().mean()) == pytest.approx(0.1, abs=0.003)
    assert float(nz.double().var()) == pytest.approx(4.0, rel=0.03)
    assert abs(float(nz.double().mean())) < 0.03
    again = prior.sample_tensor(4000, generator=torch.Generator().manual_seed(3),
                                dtype=torch.float32)
    assert torch.equal(X, again)
    # batches: the same random_state gives the same batches, another one others
    A = torch.as_tensor(np.random.RandomState(0).standard_normal((250, 500)) / 16,
                        dtype=torch.float32)
    draw = lambda seed: PriorBatches(prior, A, 0.01, 100, random_state=seed)()  # noqa: E731
    (Y1, X1, _), (Y2, X2, _), (Y3, _, _) = draw(0), draw(0), draw(1)
    assert torch.equal(Y1, Y2) and torch.equal(X1, X2) and not torch.equal(Y1, Y3)
    assert Y1.dtype == X1.dtype == torch.float32
    assert float((Y1 - X1 @ A.T).var()) == pytest.approx(0.01, rel=0.1)


def test_a_prior_that_overrides_sample_draws_with_its_own_sample():
    from sklearn_unfold.batches import tensor_sampler

    class Shifted(BernoulliGaussianPrior):  # overrides sample, inherits sample_tensor
        def sample(self, n_samples, random_state=None):
            return super().sample(n_samples, random_state) + 100.0

    class Both(Shifted):  # overrides both again: its own sample_tensor serves
        def sample_tensor(self, n_samples, **kwargs):
            return BernoulliGaussianPrior.sample_tensor(self, n_samples, **kwargs) + 100.0

    base = BernoulliGaussianPrior(0.2, 1.0, n_features=8)
    assert tensor_sampler(base) is not None and tensor_sampler(Shifted(0.2, 1.0, 8)) is None
    assert tensor_sampler(Both(0.2, 1.0, 8)) is not None
    A = torch.eye(8, dtype=torch.float64)
    _, X, _ = PriorBatches(Shifted(0.2, 1.0, 8), A, 0.0, 50, random_state=0)()
    assert float(X.min()) > 90.0  # the override was used


def test_synthetic_batches_draw_fresh_operators_from_an_ensemble():
    M, N = 16, 32
    ensemble = GaussianEnsemble(M, N)
    prior = BernoulliGaussianPrior(0.2, 1.0, n_features=N)
    make = lambda seed, batch=1000, k=10: SyntheticBatches(  # noqa: E731
        prior, ensemble, 0.01, batch, random_state=seed, operators_per_batch=k)
    batches = make(0)
    Y, X, op = batches()
    assert Y.shape == (1000, M) and X.shape == (1000, N) and Y.dtype == torch.float64
    assert op.per_sample and op.shape == (1000, M, N)
    dense = op.to_dense()
    # 10 distinct draws, each serving its block of 100 consecutive samples
    assert all(torch.equal(dense[i], dense[100 * (i // 100)]) for i in range(1000))
    firsts = dense[::100]
    assert len({float(a.sum()) for a in firsts}) == 10
    assert float(firsts.var()) == pytest.approx(1.0 / M, rel=0.1)  # entries N(0, 1/M)
    resid = Y - torch.einsum("imn,in->im", dense, X)
    assert float(resid.var()) == pytest.approx(0.01, rel=0.05)
    assert float((X != 0).double().mean()) == pytest.approx(0.2, abs=0.01)
    # fresh operators (and signals) every call; reproducible from the seed
    Y2, X2, op2 = batches()
    assert not torch.equal(op2.to_dense()[0], dense[0]) and not torch.equal(X2, X)
    Y3, _, op3 = make(0)()
    assert torch.equal(Y3, Y) and torch.equal(op3.to_dense(), dense)
    # batches(n) draws n samples; the draws per batch are rounded down to a divisor of it
    Yn, Xn, opn = batches(250)
    assert Yn.shape == (250, M) and len(opn) == 250
    _, _, odd = make(1, batch=12, k=5)()
    assert len({float(a.sum()) for a in odd.to_dense()}) == 4


def test_synthetic_batches_resample_training_signals_through_a_fixed_operator():
    rng = np.random.RandomState(0)
    A = torch.as_tensor(rng.standard_normal((8, 12)) / 3)
    signals = torch.as_tensor(rng.standard_normal((30, 12)))
    op = as_operator(A)
    batches = SyntheticBatches(signals, op, 0.0, 10, random_state=0)
    Y, X, o = batches()
    assert o is op and X.shape == (10, 12)
    assert all(any(torch.equal(x, s) for s in signals) for x in X)
    torch.testing.assert_close(Y, X @ A.T)
    Y, X, o = batches(25)  # successive batches joined, the one operator
    assert Y.shape == (30, 8) and o is op
    torch.testing.assert_close(Y, X @ A.T)


@pytest.mark.parametrize("kind", ["lamp", "alista"])
def test_training_over_an_ensemble_improves_on_fresh_operators(kind):
    """Trained on a fresh Gaussian matrix per block of samples, the operator-independent
    networks (LAMP with B_t = β_t Aᵀ, ALISTA with W = A) beat their untrained selves on
    operators never seen in training (a validation and a separate test draw)."""
    M, N, noise_var = 16, 32, 1e-3
    ensemble = GaussianEnsemble(M, N)
    prior = BernoulliGaussianPrior(0.1, 1.0, n_features=N)
    draw = lambda seed, n, k: SyntheticBatches(  # noqa: E731
        prior, ensemble, noise_var, n, random_state=seed, dtype=torch.float32,
        operators_per_batch=k)
    train = draw(0, 64, 8)
    val, test = draw(1, 400, 400)(), draw(2, 400, 400)()
    if kind == "lamp":  # AMP with a mismatched prior to start from
        net = LAMPNetwork.from_amp(ensemble.sample_one(0), "bg", [0.3, math.log(0.7 / 0.3)], 3,
                                   parameterization="operator")
    else:
        net = lista_from_ista(ensemble.sample_one(0), 0.05, 3, variant="alista",
                              operator_agnostic=True, lipschitz=(1 + math.sqrt(N / M)) ** 2)
    assert net.operator_agnostic
    before_val, before_test = _val_db(net, val), _val_db(net, test)
    torch.manual_seed(0)
    tr = Trainer(net, schedule="end_to_end", refine_factors=(0.1,), max_steps=60,
                 eval_every=10, learning_rate=3e-2, calibration_samples=256).fit(train, val)
    after_val, after_test = _val_db(net, val), _val_db(net, test)
    assert after_val == pytest.approx(tr.stages_[-1]["val_nmse_db"], abs=1e-3)
    assert after_val < before_val - 1.0, (before_val, after_val)
    assert after_test < before_test - 1.0, (before_test, after_test)


def test_verbose_shows_stage_layer_and_nmse(problem, capsys):
    A, train, val = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(_net(A, 2), schedule="end_to_end", refine_factors=(), max_steps=10,
                verbose=1).fit(train, val)
    err = capsys.readouterr().err
    # stderr is not a terminal here: one plain line per stage, no bar, no cursor codes
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Trainer: stage 1/1, layer 2/2 (end to end): ")
    assert "dB" in lines[0] and "layer layer" not in err


def test_verbose_progress_on_a_pipe_is_one_line_per_stage(problem, capsys):
    A, train, val = problem
    tr = Trainer(_net(A, 2), refine_factors=(0.5,), max_steps=10, verbose=1).fit(train, val)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert len(lines) == len(tr.stages_) == 4
    assert [line.split(": ", 1)[1].split(":")[0] for line in lines] == [
        "stage 1/4, layer 1/2 (new)", "stage 2/4, layer 1/2 (refine)",
        "stage 3/4, layer 2/2 (new)", "stage 4/4, layer 2/2 (refine)"]
    for line, rec in zip(lines, tr.stages_, strict=True):
        assert f"{rec['val_nmse_db']:.2f} dB" in line and f"stopped: {rec['stop']}" in line


def test_verbose_progress_on_a_terminal_is_a_bar(problem, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    A, train, val = problem
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    Trainer(_net(A, 2), refine_factors=(0.5,), max_steps=10, verbose=1).fit(train, val)
    out = stream.getvalue()
    assert "\r" in out and "layer 2/2 (refine)" in out and "layer layer" not in out


def _lista(A, n_layers=3):
    return lista_from_ista(A, 0.05, n_layers, variant="cp", support_selection=True)


def test_new_layers_are_calibrated_once_before_training(problem):
    A, train, val = problem
    tr = Trainer(_lista(A), refine_factors=(0.5,), max_steps=3).fit(train, val)
    assert [c["layer"] for c in tr.calibration_] == [1, 2, 3]
    assert all(c["nmse_db_after"] <= c["nmse_db_before"] for c in tr.calibration_)
    # a warm start from layer 2 calibrates only the layers it adds
    warm = Trainer(tr.module, refine_factors=(0.5,), max_steps=3).fit(train, val, start_layer=2)
    assert [c["layer"] for c in warm.calibration_] == [3]
    # end to end calibrates every layer up front
    e2e = Trainer(_lista(A), schedule="end_to_end", refine_factors=(), max_steps=3)
    assert [c["layer"] for c in e2e.fit(train, val).calibration_] == [1, 2, 3]


def test_calibration_can_be_switched_off_and_is_a_no_op_for_lamp(problem):
    A, train, val = problem
    net = _lista(A, 2)
    start = net.thresholds[0].detach().clone()
    tr = Trainer(net, refine_factors=(), max_steps=1, learning_rate=1e-12,
                 calibrate=False).fit(train, val)
    assert tr.calibration_ == [] and float(net.thresholds[0].detach()) == pytest.approx(float(start))
    assert Trainer(_net(A), refine_factors=(), max_steps=2).fit(train, val).calibration_ == []


def test_custom_loss_goes_through_the_curriculum(problem):
    A, train, _ = problem
    nmse = lambda Xh, X: ((Xh - X) ** 2).sum() / (X * X).sum()  # noqa: E731
    default, custom = Trainer(_net(A)), Trainer(_net(A), loss=nmse)
    Y, X, op = train()
    with torch.no_grad():
        outs = default.module(Y, op)
    for w in (0.0, 0.5, 1.0):
        stage = Stage("refine", 2, [], 1e-3, 1, final_weight=w)
        assert float(custom._loss(outs, X, stage)) == pytest.approx(
            float(default._loss(outs, X, stage)), rel=1e-5)
    with pytest.raises(TypeError, match="loss must be a callable"):
        Trainer(_net(A), loss="mae")


def test_optimizer_state_is_resumed_by_parameter_name(problem):
    A, train, val = problem
    kw = dict(schedule="end_to_end", refine_factors=(), max_steps=10, eval_every=5,
              n_iter_no_change=100, tol=-math.inf)
    net = _net(A, 2)
    first = Trainer(net, **kw).fit(train, val)
    state = first.optimizer_state_
    assert state["optimizer"] == "torch.optim.adam.Adam"
    assert float(state["state"]["B.0"]["step"]) == 10
    assert state["state"]["B.0"]["exp_avg"].shape == net.B[0].shape
    again = Trainer(net, **kw).fit(train, val, history=list(first.history_),
                                   stages=list(first.stages_), optimizer_state=state)
    assert float(again.optimizer_state_["state"]["B.0"]["step"]) == 20
    assert float(state["state"]["B.0"]["step"]) == 10  # the given state was not changed
    assert [h["step"] for h in again.history_] == [0, 5, 10, 10, 15, 20]
    assert [s["stage_index"] for s in again.stages_] == [0, 1]
    # another optimiser class starts afresh
    sgd = Trainer(net, optimizer=Optimizer(torch.optim.SGD, momentum=0.9), **kw)
    sgd.fit(train, val, optimizer_state=state)
    assert sgd.optimizer_state_["optimizer"] == "torch.optim.sgd.SGD"
    assert set(sgd.optimizer_state_["state"]["B.0"]) == {"momentum_buffer"}


def test_callbacks_can_stop_a_trainer_and_a_plateau_scheduler_lowers_the_rate(problem):
    A, train, val = problem
    calls = []

    def stop_at_third(trainer, history):
        calls.append(trainer)
        return len(history) == 3

    plateau = lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(  # noqa: E731
        opt, factor=0.5, patience=0, threshold=100.0, threshold_mode="abs")
    tr = Trainer(_net(A, 2), schedule="end_to_end", refine_factors=(0.5,), max_steps=50,
                 eval_every=5, n_iter_no_change=100, callbacks=[stop_at_third],
                 lr_scheduler=plateau, learning_rate=1e-3)
    tr.fit(train, val)
    assert len(calls) == 3 and calls[0] is tr and tr.stopped_by_callback_
    assert [s["stop"] for s in tr.stages_] == ["callback"]  # the refinement never ran
    # the check at step 10 does not beat the one at step 5 by the huge threshold: the rate halves
    assert [h["learning_rate"] for h in tr.history_] == pytest.approx([1e-3, 1e-3, 5e-4])
