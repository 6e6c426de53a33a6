"""The training engine: schedules, curriculum, early stopping, checkpoints and faults."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from sklearn_unfold.datasets import BernoulliGaussianPrior, make_compressed_sensing
from sklearn_unfold.networks import LAMPNetwork, LISTANetwork
from sklearn_unfold.training import PairBatches, PriorBatches, Stage, Trainer, layer_nmse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem():
    Y, X, A = make_compressed_sensing("giid", 700, n_features=64, n_measurements=32,
                                      random_state=0)
    T = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    train = PairBatches(T(Y[:500]), T(X[:500]), 100, random_state=0)
    return A, train, (T(Y[500:]), T(X[500:]))


def _net(A, n_layers=3, **kw):
    return LAMPNetwork.from_amp(A, "bg", [1.0, math.log(9.0)], n_layers, **kw)


def _val_db(net, validation):
    Yv, Xv = validation
    with torch.no_grad():
        return 10 * math.log10(float(layer_nmse(net(Yv)[-1:], Xv)[0]))


def test_layerwise_schedule_grows_and_improves(problem):
    A, train, val = problem
    net = _net(A)
    before = _val_db(net, val)
    tr = Trainer(net, schedule="layerwise", refine_factors=(0.5, 0.1), max_steps=20,
                 learning_rate=3e-3).fit(train, val)
    stages = [(h["stage"], h["layer"]) for h in tr.history_]
    assert stages == [("layer", 1), ("refine", 1), ("refine", 1), ("layer", 2), ("refine", 2),
                      ("refine", 2), ("layer", 3), ("refine", 3), ("refine", 3)]
    assert {"steps", "train_loss", "val_nmse_db", "learning_rate", "stop"} <= set(tr.history_[0])
    assert [h["learning_rate"] for h in tr.history_[:3]] == pytest.approx([3e-3, 1.5e-3, 3e-4])
    after = _val_db(net, val)
    assert after < before - 1.0
    # the network ends with every layer active, trainable, and on its best checkpoint
    assert net.n_active == 3 and all(p.requires_grad for p in net.parameters())
    assert after == pytest.approx(tr.history_[-1]["val_nmse_db"], abs=1e-3)


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
    tr.batches, tr.validation, tr.history_ = train, val, []
    tr._bar = __import__("tqdm").tqdm(disable=True)
    tr._fit_stage(stage)
    for p, q in zip(net.layer_parameters(0), first, strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(net.B[1], torch.as_tensor(A.T, dtype=torch.float32))


def test_curriculum_loss_goes_from_mean_to_final(problem):
    A, train, _ = problem
    tr = Trainer(_net(A))
    Y, X = train()
    with torch.no_grad():
        outs = tr.module(Y)
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
    assert tr.history_[0]["steps"] == 10 and tr.history_[0]["stop"] == "no_change"


class _NaNTrainer(Trainer):
    """Blows the weights up and reports a non-finite loss on its first ``n_bad`` steps."""

    n_bad = 2

    def _train_step(self, optimizer, Y, X, stage):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls <= self.n_bad:
            with torch.no_grad():
                for p in stage.params:
                    p.fill_(float("nan"))
            return float("nan")
        return super()._train_step(optimizer, Y, X, stage)


def test_non_finite_loss_rolls_back_and_lowers_the_rate(problem):
    A, train, val = problem
    net = _net(A, 2)
    with pytest.warns(ConvergenceWarning, match="rolled back"):
        tr = _NaNTrainer(net, schedule="end_to_end", refine_factors=(), max_steps=20,
                         learning_rate=1e-3).fit(train, val)
    assert tr.n_faults_ == 2 and not tr.gave_up_
    assert tr.history_[0]["learning_rate"] == pytest.approx(1e-5)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_unrecoverable_training_ends_on_the_best_finite_model(problem):
    A, train, val = problem
    net = _net(A, 2)
    start = _val_db(net, val)
    trainer = _NaNTrainer(net, max_steps=50, max_recoveries=3)
    trainer.n_bad = 10**9
    with pytest.warns(ConvergenceWarning, match="did not recover"):
        trainer.fit(train, val)
    assert trainer.gave_up_ and trainer.history_[-1]["stop"] == "fault"
    assert len(trainer.history_) == 1  # training stopped at the first failing stage
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert _val_db(net, val) == pytest.approx(start, abs=1e-4)


class _InterruptTrainer(Trainer):
    def _train_step(self, optimizer, Y, X, stage):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 25:
            raise KeyboardInterrupt
        return super()._train_step(optimizer, Y, X, stage)


def test_keyboard_interrupt_keeps_the_best_weights(problem):
    A, train, val = problem
    net = _net(A, 3)
    with pytest.warns(UserWarning, match="interrupted"):
        tr = _InterruptTrainer(net, max_steps=20, learning_rate=3e-3).fit(train, val)
    assert tr.interrupted_ and tr.history_[-1]["stop"] == "interrupted"
    assert net.n_active == 3 and len(net(val[0])) == 3
    # the interrupted stage (a refinement at depth 1) ended on its best checkpoint
    last = tr.history_[-1]
    assert last["layer"] == 1 and last["steps"] == 4
    net.n_active = 1
    assert _val_db(net, val) == pytest.approx(last["val_nmse_db"], abs=1e-3)


class _OOMTrainer(Trainer):
    def _train_step(self, optimizer, Y, X, stage):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_names_the_batch_size(problem):
    A, train, val = problem
    with pytest.raises(torch.cuda.OutOfMemoryError, match=r"batch_size=100.*batch_size=50"):
        _OOMTrainer(_net(A, 2), max_steps=5).fit(train, val)


def test_pair_batches_cover_every_pair_once_per_pass():
    Y = torch.arange(10.0)[:, None]
    batches = PairBatches(Y, 2 * Y, 5, random_state=0)
    seen = torch.cat([batches()[0] for _ in range(2)]).ravel()
    assert sorted(seen.tolist()) == list(range(10))
    y, x = batches()
    assert torch.equal(x, 2 * y)
    again = PairBatches(Y, 2 * Y, 5, random_state=0)
    assert torch.equal(again()[0], PairBatches(Y, 2 * Y, 5, random_state=0)()[0])
    assert PairBatches(Y, Y, 50).batch_size == 10


def test_prior_batches_synthesise_measurements_through_A():
    rng = np.random.RandomState(0)
    A = torch.as_tensor(rng.standard_normal((16, 32)) / 4, dtype=torch.float64)
    prior = BernoulliGaussianPrior(0.2, 1.0, n_features=32)
    batches = PriorBatches(prior, A, noise_var=0.01, batch_size=4000, random_state=0)
    Y, X = batches()
    assert Y.shape == (4000, 16) and X.shape == (4000, 32)
    assert float((Y - X @ A.T).var()) == pytest.approx(0.01, rel=0.05)
    assert float((X != 0).double().mean()) == pytest.approx(0.2, abs=0.01)
    assert not torch.equal(batches()[1], X)  # fresh signals every call

    class Bad:
        def sample(self, n, random_state=None):
            return np.zeros((n, 5))

    with pytest.raises(ValueError, match=r"returned shape \(10, 5\); expected \(10, 32\)"):
        PriorBatches(Bad(), A, 0.01, 10)()


def test_verbose_shows_stage_layer_and_nmse(problem, capsys):
    A, train, val = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(_net(A, 2), schedule="end_to_end", refine_factors=(), max_steps=10,
                verbose=1).fit(train, val)
    err = capsys.readouterr().err
    assert "end_to_end layer 2/2" in err and "dB" in err


def _lista(A, n_layers=3):
    return LISTANetwork.from_ista(A, 0.05, n_layers, variant="cp", support_selection=True)


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
