"""Denoiser modules: the divergence contract, the convolutional denoisers, user modules in the
estimators, tying, persistence, pretraining, mixed precision and the legacy weight layout."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_unfold import AMPRegressor, LAMPRegressor, LDVAMPRegressor
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.denoisers import (
    BernoulliGaussian,
    ConvDenoiser1d,
    DnCNN,
    ExponentialShrinkage,
    MLPDenoiser,
    MLPResidualDenoiser,
    PiecewiseLinear,
    SoftThreshold,
    SplineShrinkage,
    jacobian_divergence,
    mc_divergence,
)
from sklearn_unfold.training import denoising_loss, pretrain_denoiser

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # tiny fits on a handful of pairs: their training-progress warnings are expected
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:pretraining the denoiser did not lower:UserWarning"),
]

F64, C128 = torch.float64, torch.complex128


def _signal(n, N, complex_, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, N, generator=g, dtype=C128 if complex_ else F64) * scale
    sigma = torch.rand(n, 1, generator=g, dtype=F64) * 0.5 + 0.4
    return r, sigma


def _away_from_kinks(r, sigma, kinks, gap=0.05):
    """Move every entry whose modulus lies within ``gap·σ`` of a breakpoint ``k·σ`` out by 0.1σ."""
    for k in kinks:
        u = r.abs() / sigma
        near = (u - k).abs() < gap
        r = torch.where(near, r * ((u + 0.1) / u), r)
    return r


def _randomize_last(linear: nn.Module, std=0.5, bias=0.1):
    with torch.no_grad():
        linear.weight.normal_(0.0, std)
        linear.bias.normal_(0.0, bias)


def _mlp():
    m = MLPDenoiser(hidden=8)
    _randomize_last(m.net[-1])
    return m


def _mlp_residual():
    m = MLPResidualDenoiser("bg", hidden=8)
    _randomize_last(m.mlp.net[-1])
    return m


# name: (factory, breakpoints of the derivative in units of σ)
SEPARABLE = {
    "soft": (SoftThreshold, (1.0,)),
    "bg": (BernoulliGaussian, ()),
    "pwlin": (PiecewiseLinear, (2.0, 4.0)),
    "expo": (ExponentialShrinkage, ()),
    "spline": (SplineShrinkage, ()),
    "mlp": (_mlp, ()),
    "mlp_residual": (_mlp_residual, ()),
}


def _conv(kind, **kw):
    """A float64 convolutional denoiser with random (non-zero) last-layer weights."""
    m = (ConvDenoiser1d(width=6, depth=3, **kw) if kind == "conv1d"
         else DnCNN((5, 6), width=6, depth=3, **kw)).double()
    _randomize_last(m.body[-1], std=0.3)
    return m.eval()


_CONV_N = {"conv1d": 40, "dncnn": 30}


# --------------------------------------------------------------------------- divergences
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("name", list(SEPARABLE))
def test_separable_dmean_is_the_jacobian_diagonal(name, complex_):
    """dmean = tr(∂η/∂r)/N (complex: ½(∂Re/∂Re + ∂Im/∂Im)) as autograd's Jacobian gives it."""
    torch.manual_seed(0)
    factory, kinks = SEPARABLE[name]
    den = factory().double()
    r, sigma = _signal(3, 50, complex_, seed=1)
    r = _away_from_kinks(r, sigma, kinks)
    value, dmean = den(r, sigma)
    assert value.shape == r.shape and value.dtype == r.dtype
    assert dmean.shape == (3, 1) and dmean.dtype == F64
    exact = jacobian_divergence(lambda z: den(z, sigma)[0], r)
    torch.testing.assert_close(dmean, exact, rtol=0, atol=1e-8)
    # not a trivial agreement: the rows have different, non-degenerate divergences
    assert float(exact.std()) > 1e-4 and float(exact.abs().min()) > 1e-2


def _linear_map(complex_, N=2000, a=0.8, c=0.3, seed=0):
    """``W = a I + c G/√N`` and the variance of a one-probe estimate of tr(W)/N (per row)."""
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(N, N, generator=g, dtype=C128 if complex_ else F64) / math.sqrt(N)
    W = a * torch.eye(N, dtype=G.dtype) + c * G
    # Var(bᵀ J b) = 2‖sym J‖²_F for b ~ N(0, I) in the real view J of the map (2N dims if complex)
    A, B = W.real, (W.imag if complex_ else torch.zeros_like(W.real))
    sym_sq = ((A + A.T) / 2).square().sum() + (((B - B.T) / 2).square().sum() if complex_ else 0.0)
    dims = 2 * N if complex_ else N
    var = 2.0 * float(sym_sq) * (2 if complex_ else 1) / dims**2
    return W, float(torch.trace(W).real) / N, var


def _unit_probe(shape, complex_, seed):
    g = torch.Generator().manual_seed(seed)
    if not complex_:
        return torch.randn(shape, generator=g, dtype=F64)
    return torch.view_as_complex(torch.randn((*shape, 2), generator=g, dtype=F64))


def _check_mc_estimate(est, expected, var, n):
    sd_row = math.sqrt(var)
    assert sd_row / expected < 0.06  # one probe is accurate to a few percent at N = 2000
    rows = est.reshape(-1).numpy()
    mean = rows.mean()
    # unbiased: the row mean is within 4 standard errors, and within 4 % of tr(W)/N
    assert abs(mean - expected) < 4 * sd_row / math.sqrt(n)
    assert abs(mean - expected) < 0.04 * expected
    # and each row is one draw of that spread (no row off by more than 4.5 sd; sane spread)
    assert np.all(np.abs(rows - expected) < 4.5 * sd_row)
    assert 0.4 * sd_row < rows.std(ddof=1) < 1.8 * sd_row


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_mc_divergence_of_a_linear_map_is_its_trace(complex_):
    """g(r) = r Wᵀ: the one-probe estimate averages to tr(W)/N (real part for complex), with the
    spread √(2‖sym J‖²_F)/N that a Gaussian probe has. Complex: the probe is Gaussian with unit
    variance in the real and imaginary parts, as the docstring describes (and as the
    convolutional denoisers draw it)."""
    n = 16
    W, expected, var = _linear_map(complex_)
    r, _ = _signal(n, W.shape[0], complex_, seed=3)
    est = mc_divergence(lambda z: z @ W.T, r, probe=_unit_probe(r.shape, complex_, seed=4))
    assert est.shape == (n, 1) and est.dtype == F64
    _check_mc_estimate(est, expected, var, n)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_mc_divergence_default_probe(complex_):
    n = 16
    W, expected, var = _linear_map(complex_)
    r, _ = _signal(n, W.shape[0], complex_, seed=3)
    torch.manual_seed(5)
    _check_mc_estimate(mc_divergence(lambda z: z @ W.T, r), expected, var, n)


# --------------------------------------------------------------------------- convolutional
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("kind", ["conv1d", "dncnn"])
def test_conv_exact_divergence_is_the_jacobian_diagonal(kind, complex_):
    torch.manual_seed(0)
    den = _conv(kind, divergence="exact")
    r, sigma = _signal(4, _CONV_N[kind], complex_, seed=2)
    value, dmean = den(r, sigma)
    torch.testing.assert_close(value, den.estimate(r, sigma), rtol=0, atol=0)
    exact = jacobian_divergence(lambda z: den.estimate(z, sigma), r)
    assert dmean.shape == (4, 1) and dmean.dtype == F64
    # the network is not the identity: its divergence is away from 1 and differs by row
    assert float((exact - 1).abs().max()) > 5e-3 and float(exact.std()) > 1e-3
    # the colouring at the documented step max|r|/1000 (a ReLU kink may fall inside the step)
    torch.testing.assert_close(dmean, exact, rtol=0, atol=2e-3)
    # the colouring itself is exact: the network is piecewise linear in r, so a step far below
    # the kinks' spacing recovers the diagonal to rounding
    fine = den._probed_divergence(r, sigma, value, eps_ratio=1e7)
    torch.testing.assert_close(fine, exact, rtol=0, atol=1e-6)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("kind", ["conv1d", "dncnn"])
def test_conv_mc_predictions_are_deterministic_and_batch_independent(kind, complex_):
    torch.manual_seed(0)
    den = _conv(kind, divergence="mc")
    r, sigma = _signal(5, _CONV_N[kind], complex_, seed=6)
    with torch.no_grad():
        v1, d1 = den(r, sigma)
        v2, d2 = den(r, sigma)
    assert torch.equal(v1, v2) and torch.equal(d1, d2)
    for i in (0, 3):
        with torch.no_grad():
            vi, di = den(r[i:i + 1], sigma[i:i + 1])
        torch.testing.assert_close(vi, v1[i:i + 1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(di, d1[i:i + 1], rtol=1e-12, atol=1e-12)
    # the one probe is an estimate of the exact diagonal (tens of entries: a rough one)
    exact = jacobian_divergence(lambda z: den.estimate(z, sigma), r)
    assert float((d1 - exact).abs().max()) < 0.3
    # in training mode the probe is fresh at each call (the eval-mode probe is what is fixed)
    den.train()
    torch.manual_seed(1)
    with torch.no_grad():
        _, t1 = den(r, sigma)
        _, t2 = den(r, sigma)
    assert not torch.equal(t1, t2)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_conv_mc_probe_is_unbiased(complex_):
    """Training-mode probes are fresh: their average is the exact divergence (for complex
    signals too: the module draws unit-variance real and imaginary parts)."""
    torch.manual_seed(0)
    den = _conv("conv1d", divergence="mc").train()
    r, sigma = _signal(3, 40, complex_, seed=10)
    exact = jacobian_divergence(lambda z: den.estimate(z, sigma), r)
    with torch.no_grad():
        draws = torch.cat([den(r, sigma)[1] for _ in range(300)], dim=1)
    mean, se = draws.mean(dim=1, keepdim=True), draws.std(dim=1, keepdim=True) / math.sqrt(300)
    assert float(se.max()) < 0.03  # power to see a bias of ~10 %
    assert torch.all((mean - exact).abs() < 4 * se + 2e-3), (mean - exact, se)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("kind", ["conv1d", "dncnn"])
def test_untrained_conv_denoiser_is_the_identity(kind, complex_):
    den = (ConvDenoiser1d() if kind == "conv1d" else DnCNN((5, 6))).double()
    for mode in ("train", "eval"):
        getattr(den, mode)()
        r, sigma = _signal(3, 30, complex_, seed=7)
        value, dmean = den(r, sigma)
        assert torch.equal(value, r)
        torch.testing.assert_close(dmean, torch.ones(3, 1, dtype=F64), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- a user's module
class UserBG(nn.Module):
    """A user's Bernoulli-Gaussian posterior mean: a plain module (not a Denoiser), written
    independently of the package's formula, with its own learnable log-odds of activity."""

    def __init__(self, sparsity=0.1, var=1.0):
        super().__init__()
        self.log_odds = nn.Parameter(torch.tensor(math.log(sparsity / (1 - sparsity)), dtype=F64))
        self.register_buffer("var", torch.tensor(float(var), dtype=F64))

    def forward(self, r, sigma):
        keep = torch.is_grad_enabled()
        with torch.enable_grad():
            x = r if r.requires_grad else r.detach().requires_grad_(True)
            s2, v = sigma * sigma, self.var.to(x.dtype)
            # log p(active | r) - log p(inactive | r), from the two Gaussian likelihoods
            llr = (self.log_odds.to(x.dtype) + 0.5 * torch.log(s2 / (v + s2))
                   + 0.5 * x * x * (1 / s2 - 1 / (v + s2)))
            value = torch.sigmoid(llr) * (v / (v + s2)) * x
            (grad,) = torch.autograd.grad(value.sum(), x, create_graph=keep)
        return (value if keep else value.detach()), grad.mean(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def small():
    return make_compressed_sensing("giid", 120, n_features=64, n_measurements=32, random_state=0)


@pytest.fixture(scope="module")
def tiny():
    """N = 16 (a 4 × 4 image), M = 8, a few pairs."""
    return make_compressed_sensing("giid", 40, n_features=16, n_measurements=8, random_state=0)


def test_user_module_in_amp_equals_the_builtin(small):
    Y, X, A = small
    ref = AMPRegressor(A=A, denoiser="bg", sparsity=0.1, signal_var=1.0, max_iter=8, tol=0.0)
    user = AMPRegressor(A=A, denoiser=UserBG(0.1, 1.0), max_iter=8, tol=0.0)
    expected = ref.fit(Y, X).predict(Y)
    got = user.fit(Y, X).predict(Y)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert np.sum((got - X) ** 2) / np.sum(X**2) < 10 ** (-15 / 10)  # it does recover X
    assert isinstance(user.denoiser_, UserBG) and user.denoiser_ is not user.denoiser


def test_user_module_in_lamp_is_copied_per_layer(small):
    Y, X, A = small
    template = UserBG(0.1, 1.0)
    before = copy.deepcopy(template.state_dict())
    est = LAMPRegressor(A=A, denoiser=template, n_layers=3, max_epochs=1, random_state=0).fit(Y, X)
    layers = [est.module_.layer_denoiser(t) for t in range(3)]
    assert len(est.module_.denoisers) == 3
    assert all(type(d) is UserBG for d in layers)
    assert len({id(d) for d in layers} | {id(template)}) == 4
    assert len({d.log_odds.data_ptr() for d in layers}) == 3
    # trained: every copy moved away from the template's value
    start = float(before["log_odds"])
    assert all(abs(float(d.log_odds.detach()) - start) > 1e-6 for d in layers)
    # the module passed in is unchanged (values, dtype, mode, gradients)
    assert template.log_odds.dtype == F64 and template.log_odds.grad is None and template.training
    for key, value in template.state_dict().items():
        assert torch.equal(value, before[key])
    # the copies are independent: changing one leaves the others
    others = [float(d.log_odds.detach()) for d in layers[1:]]
    with torch.no_grad():
        layers[0].log_odds.add_(1.0)
    assert [float(d.log_odds.detach()) for d in layers[1:]] == others
    assert np.isfinite(est.predict(Y)).all()


# --------------------------------------------------------------------------- parameter counts
CONV_COUNT = (3 * 4 * 3 + 4) + (4 * 4 * 3 + 4) + (4 * 2 * 3 + 2)  # width 4, depth 3, kernel 3


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("denoiser", ["conv", "bg"])
@pytest.mark.parametrize("cls", [LAMPRegressor, LDVAMPRegressor])
def test_denoiser_parameter_counts(tiny, cls, denoiser, tie):
    Y, X, A = tiny
    n_layers = 3
    den = ConvDenoiser1d(width=4, depth=3) if denoiser == "conv" else "bg"
    per_module = CONV_COUNT if denoiser == "conv" else 2
    if denoiser == "conv":
        assert sum(p.numel() for p in den.parameters()) == CONV_COUNT
    est = cls(A=A, denoiser=den, tie_denoiser=tie, pretrain=False, n_layers=n_layers,
              max_epochs=1, random_state=0).fit(Y, X)
    net = est.module_
    count = sum(p.numel() for p in net.denoisers.parameters())
    assert count == (per_module if tie else n_layers * per_module)
    ids = {id(net.layer_denoiser(t)) for t in range(n_layers)}
    assert len(ids) == (1 if tie else n_layers)
    unique = {id(p): p for t in range(n_layers) for p in net.layer_denoiser(t).parameters()}
    assert sum(p.numel() for p in unique.values()) == count
    assert est.pretrain_history_ is None and est.pretrain_noise_levels_ is None


# --------------------------------------------------------------------------- persistence
def _blocks(n, N, seed):
    """Piecewise-constant signals: four blocks of Gaussian levels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g).repeat_interleave(N // 4, dim=1)


def test_pretrain_denoiser_lowers_the_held_out_loss():
    torch.manual_seed(0)
    X, X_val = _blocks(128, 32, 0), _blocks(48, 32, 1)
    levels = torch.tensor([0.3, 0.6, 1.0])
    sigma = levels[torch.arange(48) % 3].reshape(-1, 1)
    den = ConvDenoiser1d(width=6, depth=3)

    def held_out():
        with torch.no_grad():
            return float(denoising_loss(den, X_val, sigma, torch.Generator().manual_seed(9)))

    before = held_out()
    assert 0.8 < before < 1.2  # the untrained denoiser is the identity: the noise itself
    history = pretrain_denoiser(den, X, levels, X_val=X_val, max_steps=40, batch_size=64,
                                learning_rate=1e-2, eval_every=10, seed=0)
    after = held_out()
    assert after < 0.7 * before
    assert [h["step"] for h in history][:2] == [0, 10]
    assert min(h["val_loss"] for h in history) < 0.7 * history[0]["val_loss"]
    assert not den.training  # left in eval mode, on its best checkpoint


def test_ldvamp_records_its_pretraining(tiny):
    Y, X, A = tiny
    est = LDVAMPRegressor(A=A, denoiser=ConvDenoiser1d(width=4, depth=2), n_layers=2,
                          max_epochs=2, random_state=0).fit(Y, X)
    history = est.pretrain_history_
    assert isinstance(history, list) and len(history) >= 2
    assert all(isinstance(h, dict) and {"step", "train_loss", "val_loss"} <= set(h)
               for h in history)
    assert history[0]["step"] == 0 and all(np.isfinite(h["val_loss"]) for h in history)
    levels = est.pretrain_noise_levels_
    assert isinstance(levels, np.ndarray) and levels.shape == (2,)
    assert np.all(np.isfinite(levels)) and np.all(levels > 0)
    off = LDVAMPRegressor(A=A, denoiser=ConvDenoiser1d(width=4, depth=2), pretrain=False,
                          n_layers=2, max_epochs=1, random_state=0).fit(Y, X)
    assert off.pretrain_history_ is None and off.pretrain_noise_levels_ is None


def test_pretraining_noise_grid_covers_the_recorded_range():
    from sklearn_unfold.estimators._denoising import _noise_level_grid

    # levels crowded at the low end, as an analytic network that settles records them
    gen = torch.Generator().manual_seed(0)
    pool = torch.cat([torch.full((900,), 0.05), 0.05 + 0.5 * torch.rand(100, generator=gen)])
    grid = _noise_level_grid(pool)
    lo, hi = torch.quantile(pool.double(), torch.tensor([0.005, 0.995], dtype=torch.float64))
    assert float(grid.min()) == pytest.approx(float(lo) / 4, rel=1e-6)
    assert float(grid.max()) == pytest.approx(float(hi), rel=1e-6)
    steps = torch.diff(torch.log(grid))  # log-uniform: equal ratios between neighbours
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-3)
    # half the grid lies above the geometric mean of its ends, however crowded the pool was
    assert float((grid > (grid.min() * grid.max()).sqrt()).float().mean()) == pytest.approx(
        0.5, abs=0.01)
    one = _noise_level_grid(torch.full((10,), 0.2))  # a single level still gives a range
    assert float(one.min()) == pytest.approx(0.05) and float(one.max()) == pytest.approx(0.2)


# --------------------------------------------------------------------------- bad input
def test_dncnn_image_shape_must_match_the_signal():
    den = DnCNN((4, 4), width=4, depth=2)
    with pytest.raises(ValueError, match="image_shape"):
        den(torch.randn(2, 20), torch.ones(2, 1))
    with pytest.raises(ValueError, match="image_shape"):
        DnCNN((4,))
    with pytest.raises(ValueError, match="image_shape"):
        DnCNN((4, 0))


def test_dncnn_image_shape_mismatch_in_an_estimator(tiny):
    Y, X, A = tiny
    est = LAMPRegressor(A=A, denoiser=DnCNN((5, 5), width=4, depth=2), n_layers=2, max_epochs=1)
    with pytest.raises(ValueError, match="image_shape"):
        est.fit(Y, X)


@pytest.mark.parametrize("cls", [ConvDenoiser1d, lambda **kw: DnCNN((4, 4), **kw)],
                         ids=["conv1d", "dncnn"])
@pytest.mark.parametrize("kwargs, word", [
    ({"kernel_size": 4}, "kernel_size"), ({"depth": 1}, "depth"), ({"width": 0}, "width"),
    ({"divergence": "sure"}, "divergence"),
])
def test_conv_settings_are_checked(cls, kwargs, word):
    with pytest.raises(ValueError, match=word):
        cls(**kwargs)


@pytest.mark.parametrize("denoiser", [42, "unknown", "conv2d"])
@pytest.mark.parametrize("cls", [LAMPRegressor, LDVAMPRegressor, AMPRegressor])
def test_estimator_refuses_a_bad_denoiser(tiny, cls, denoiser):
    Y, X, A = tiny
    with pytest.raises(ValueError, match="denoiser"):
        cls(A=A, denoiser=denoiser).fit(Y, X)


# --------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("kind", ["conv1d", "dncnn"])
def test_mixed_precision_module_on_cpu(kind):
    torch.manual_seed(0)
    den = _conv(kind).float()
    r, sigma = _signal(4, _CONV_N[kind], False, seed=8)
    r, sigma = r.float(), sigma.float()
    with torch.no_grad():
        full, dfull = den(r, sigma)
    den.mixed_precision = True
    with torch.no_grad():
        half, dhalf = den(r, sigma)
    assert half.dtype == torch.float32 and torch.isfinite(half).all() and torch.isfinite(dhalf).all()
    assert not torch.equal(half, full)  # bfloat16 ran
    # the network's correction is computed to bfloat16's ~3 digits
    assert float((half - full).norm() / (full - r).norm()) < 0.05
    assert float((dhalf - dfull).abs().max()) < 0.05


def test_mixed_precision_estimator_on_cpu(tiny):
    Y, X, A = tiny
    template = ConvDenoiser1d(width=4, depth=2)
    est = LAMPRegressor(A=A, denoiser=template, mixed_precision=True, n_layers=2, max_epochs=1,
                        random_state=0).fit(Y, X)
    assert np.isfinite(est.predict(Y)).all()
    assert all(est.module_.layer_denoiser(t).mixed_precision for t in range(2))
    assert template.mixed_precision is False


# --------------------------------------------------------------------------- legacy layout
def test_an_undertrained_denoiser_is_reported():
    """A pretrained denoiser that makes the unrolled network start worse than the analytic one
    (here: a single pretraining step) is reported, with the remedy."""
    rng = np.random.RandomState(0)
    X = np.zeros((300, 16))
    for i in range(300):
        start = rng.randint(0, 12)
        X[i, start:start + 4] = rng.standard_normal(4)
    A = rng.standard_normal((8, 16)) / np.sqrt(8)
    Y = X @ A.T + 0.01 * rng.standard_normal((300, 8))
    est = LDVAMPRegressor(A=A, n_layers=2, max_epochs=1, pretrain_epochs=1e-3, random_state=0,
                          denoiser=ConvDenoiser1d(width=4, depth=3))
    with pytest.warns(UserWarning, match="Raise pretrain_epochs"):
        est.fit(Y, X)
