"""OFDM pilot operator, clustered channel priors, the channel-estimation generators and baselines."""

import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.linear_model import orthogonal_mp

from sklearn_unfold.channels import (
    ClusteredAngleDelayPrior,
    ClusteredChannelPrior,
    delay_lmmse,
    make_angle_delay_channel_estimation,
    make_ofdm_channel_estimation,
    omp,
    pilot_interpolation,
    support_oracle,
)
from sklearn_unfold.operators import KroneckerOperator, LinearOperator, PilotDFT
from sklearn_unfold.operators.ofdm import pilot_dft_matrix, unitary_dft_matrix


def _crandn(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def _brute_force(pilots, K, L):
    """``F[𝒫, :L] / √P`` from the definition, entry by entry."""
    rows = [[np.exp(-2j * np.pi * p * tap / K) for tap in range(L)] for p in pilots]
    return np.array(rows) / np.sqrt(len(pilots))


def _nmse(a, b):
    return np.sum(np.abs(b - a) ** 2) / np.sum(np.abs(a) ** 2)


def _runs(mask_row):
    """Lengths of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], mask_row, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


# ---------------------------------------------------------------------- PilotDFT
@pytest.mark.parametrize("pattern", ["random", "comb"])
@pytest.mark.parametrize("dtype, tol", [(torch.complex128, 1e-12), (torch.complex64, 1e-5)])
def test_pilot_dft_dot_product_and_dense(pattern, dtype, tol):
    rng = np.random.default_rng(0)
    A = PilotDFT.random(12, 64, 20, pattern, random_state=0, dtype=dtype)
    x = torch.as_tensor(_crandn(rng, 5, 20)).to(dtype)
    v = torch.as_tensor(_crandn(rng, 5, 12)).to(dtype)
    Ax, AHv = A.forward(x), A.adjoint(v)
    assert Ax.dtype == AHv.dtype == dtype and Ax.shape == (5, 12) and AHv.shape == (5, 20)
    lhs = (Ax.conj() * v).sum(-1)  # ⟨Ax, v⟩
    rhs = (x.conj() * AHv).sum(-1)  # ⟨x, Aᴴv⟩
    assert torch.allclose(lhs, rhs, rtol=tol, atol=tol * 10)
    D = _brute_force(A.pilots, 64, 20)
    assert np.allclose(D, pilot_dft_matrix(A.pilots, 64, 20), atol=1e-12)
    assert np.allclose(Ax.numpy(), x.numpy() @ D.T, atol=tol * 10)
    assert np.allclose(AHv.numpy(), v.numpy() @ D.conj(), atol=tol * 10)
    assert np.allclose(A.to_dense().numpy(), D, atol=tol)


def test_pilot_dft_real_input_and_unit_columns():
    A = PilotDFT.random(8, 32, 10, random_state=1)
    x = torch.randn(3, 10, dtype=torch.float64)
    assert torch.allclose(A.forward(x), A.forward(x.to(torch.complex128)))
    D = A.to_dense().numpy()
    assert np.allclose(np.linalg.norm(D, axis=0), 1.0)
    assert float(A.frobenius_sq()) == 10.0
    assert float(LinearOperator._frobenius_sq(A)) == pytest.approx(10.0, rel=1e-12)


@pytest.mark.parametrize("P, L", [(12, 20), (20, 12)])
def test_pilot_dft_svd_and_norm(P, L):
    A = PilotDFT.random(P, 64, L, random_state=2)
    D = A.to_dense().numpy()
    U, s, V = (t.numpy() for t in A.svd())
    R = min(P, L)
    assert U.shape == (P, R) and s.shape == (R,) and V.shape == (L, R)
    assert np.allclose((U * s) @ V.conj().T, D, atol=1e-12)
    assert np.allclose(U.conj().T @ U, np.eye(R), atol=1e-12)
    assert np.allclose(V.conj().T @ V, np.eye(R), atol=1e-12)
    assert np.all(np.diff(s) <= 1e-12)
    assert float(A.norm_sq()) == pytest.approx(np.linalg.norm(D, 2) ** 2, rel=1e-12)
    assert A.svd() is A.svd()  # cached


def test_pilot_dft_single_precision_and_copies():
    A = PilotDFT.random(12, 64, 20, random_state=3)
    A.svd()
    B = A.to(dtype=torch.float32)
    assert B is not A and B.dtype == torch.complex64 and A.dtype == torch.complex128
    U, s, V = B.svd()
    assert U.dtype == V.dtype == torch.complex64 and s.dtype == torch.float32
    assert np.allclose(((U * s) @ V.conj().T).numpy(), A.to_dense().numpy(), atol=1e-5)
    fresh = PilotDFT(A.pilots, 64, 20, dtype=torch.float32)  # SVD computed in single precision
    assert fresh.svd()[0].dtype == torch.complex64
    assert A.to(dtype=torch.complex128) is A and A.to() is A


def test_pilot_dft_pickle_deepcopy_fingerprint():
    A = PilotDFT.random(12, 64, 20, random_state=4)
    A.svd()
    x = torch.randn(2, 20, dtype=torch.complex128)
    for B in (copy.deepcopy(A), pickle.loads(pickle.dumps(A))):
        assert torch.allclose(B.forward(x), A.forward(x))
        assert B.fingerprint() == A.fingerprint()
        assert np.array_equal(B.pilots, A.pilots)
    other = PilotDFT.random(12, 64, 20, random_state=5)
    assert other.fingerprint() != A.fingerprint()
    assert "n_pilots=12" in repr(A)


def test_pilot_dft_row_orthogonal_comb():
    A = PilotDFT.random(8, 64, 16, "comb", offset=3)  # spacing 8, (p−q)·16 ≡ 0 (mod 64)
    assert np.array_equal(A.pilots, 3 + 8 * np.arange(8))
    D = A.to_dense().numpy()
    assert A.row_orthogonal_scale == 2.0
    assert np.allclose(D @ D.conj().T, 2.0 * np.eye(8), atol=1e-12)
    assert float(A.norm_sq()) == 2.0
    assert PilotDFT.random(8, 64, 16, random_state=0).row_orthogonal_scale is None


def test_pilot_dft_random_patterns():
    a = PilotDFT.random(10, 100, 20, random_state=7)
    assert np.array_equal(a.pilots, PilotDFT.random(10, 100, 20, random_state=7).pilots)
    assert np.all(np.diff(a.pilots) > 0) and a.pilots.dtype == np.int64
    comb = PilotDFT.random(7, 100, 20, "comb", random_state=7)
    assert np.array_equal(comb.pilots - comb.pilots[0], (np.arange(7) * 100) // 7)
    assert 0 <= comb.pilots[0] < 100 // 7
    assert np.array_equal(PilotDFT([5, 1, 3], 8, 4).pilots, [1, 3, 5])  # sorted
    mask = np.zeros(8, bool)
    mask[[1, 3, 5]] = True
    assert np.array_equal(PilotDFT(mask, 8, 4).pilots, [1, 3, 5])


def test_frequency_response_and_nmse_equivalence():
    rng = np.random.default_rng(8)
    K, L = 64, 20
    A = PilotDFT.random(12, K, L, random_state=8)
    h, h_hat = _crandn(rng, 4, L), _crandn(rng, 4, L)
    F = np.exp(-2j * np.pi * np.outer(np.arange(K), np.arange(L)) / K)
    H = A.frequency_response(h)
    assert H.shape == (4, K) and np.allclose(H, h @ F.T)
    assert np.allclose(H[:, A.pilots] / np.sqrt(12), A.forward(torch.as_tensor(h)).numpy())
    assert np.allclose(F.conj().T @ F, K * np.eye(L))  # orthogonal columns of norm √K
    assert _nmse(H, A.frequency_response(h_hat)) == pytest.approx(_nmse(h, h_hat), rel=1e-12)
    Ht = A.frequency_response(torch.as_tensor(h))
    assert isinstance(Ht, torch.Tensor) and np.allclose(Ht.numpy(), H)


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"pilots": [0, 70], "n_subcarriers": 64, "n_taps": 8}, ValueError, "pilots"),
    ({"pilots": [-1, 3], "n_subcarriers": 64, "n_taps": 8}, ValueError, "pilots"),
    ({"pilots": [1, 3, 3], "n_subcarriers": 64, "n_taps": 8}, ValueError, "distinct"),
    ({"pilots": [], "n_subcarriers": 64, "n_taps": 8}, ValueError, "pilots"),
    ({"pilots": [1.0, 2.0], "n_subcarriers": 64, "n_taps": 8}, TypeError, "pilots"),
    ({"pilots": [[1, 2]], "n_subcarriers": 64, "n_taps": 8}, ValueError, "pilots"),
    ({"pilots": [1, 2], "n_subcarriers": 64, "n_taps": 65}, ValueError, "n_taps"),
    ({"pilots": [1, 2], "n_subcarriers": 0, "n_taps": 8}, ValueError, "n_subcarriers"),
    ({"pilots": [1, 2], "n_subcarriers": 64, "n_taps": 2.5}, ValueError, "n_taps"),
    ({"pilots": [1, 2], "n_subcarriers": 64, "n_taps": 8, "dtype": torch.float16}, TypeError,
     "dtype"),
])
def test_pilot_dft_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        PilotDFT(**kwargs)


def test_pilot_dft_bad_random_and_shapes():
    with pytest.raises(ValueError, match="pattern"):
        PilotDFT.random(4, 16, 4, "diagonal")
    with pytest.raises(ValueError, match="offset"):
        PilotDFT.random(4, 16, 4, "comb", offset=4)
    with pytest.raises(ValueError, match="n_pilots"):
        PilotDFT.random(17, 16, 4)
    A = PilotDFT.random(4, 16, 4, random_state=0)
    with pytest.raises(ValueError, match="x must"):
        A.forward(torch.zeros(2, 5, dtype=torch.complex128))
    with pytest.raises(ValueError, match="h must"):
        A.frequency_response(np.zeros((2, 5)))


# ---------------------------------------------------------------------- LMMSE stage (VAMP)
def _lmmse_reference(D, y, r2, g2, gw):
    N = D.shape[1]
    x2, a2 = [], []
    for i in range(len(y)):
        H = gw * D.conj().T @ D + g2[i, 0] * np.eye(N)
        x2.append(np.linalg.solve(H, gw * D.conj().T @ y[i] + g2[i, 0] * r2[i]))
        a2.append(g2[i, 0] / N * np.trace(np.linalg.inv(H)).real)
    return np.array(x2), np.array(a2)


@pytest.mark.parametrize("kron", [False, True])
def test_lmmse_stage_matches_closed_form(kron):
    rng = np.random.default_rng(9)
    Ap = PilotDFT.random(6, 32, 10, random_state=9)
    A = KroneckerOperator(unitary_dft_matrix(4), Ap) if kron else Ap
    if kron:
        assert A._factor_svds() is not None  # the Kronecker SVD path, not conjugate gradients
    D = A.to_dense().numpy()
    M, N = D.shape
    y, r2 = _crandn(rng, 3, M), _crandn(rng, 3, N)
    g2, gw = rng.uniform(0.5, 5.0, (3, 1)), 20.0
    x2, a2 = A.lmmse(torch.as_tensor(r2), torch.as_tensor(g2), A.lmmse_context(torch.as_tensor(y)),
                     gw)
    x_ref, a_ref = _lmmse_reference(D, y, r2, g2, gw)
    assert np.allclose(x2.numpy(), x_ref, atol=1e-10)
    assert np.allclose(a2.numpy().ravel(), a_ref, atol=1e-10)


def test_vamp_recovers_ofdm_channels():
    from sklearn_unfold.denoisers import bg_theta, get_denoiser
    from sklearn_unfold.solvers import vamp

    Y, X, A, nv = make_ofdm_channel_estimation(100, random_state=10, return_noise_var=True)
    p = np.mean(X != 0)
    var = np.mean(np.abs(X[X != 0]) ** 2)
    args = (get_denoiser("bg"), torch.as_tensor(bg_theta(p, var)), nv, p * var)
    # damped: undamped VAMP diverges on a few samples of this draw, with the dense matrix too
    X_hat, _ = vamp(torch.as_tensor(Y), A, *args, max_iter=20, damping=0.7)
    X_dense, _ = vamp(torch.as_tensor(Y), A.to_dense(), *args, max_iter=20, damping=0.7)
    assert torch.allclose(X_hat, X_dense, atol=1e-8)  # the operator is the matrix, through VAMP
    lmmse = delay_lmmse(Y, A, ClusteredChannelPrior(128).power_delay_profile(), nv)
    assert 10 * np.log10(_nmse(X, X_hat.numpy())) < 10 * np.log10(_nmse(X, lmmse)) - 15


# ---------------------------------------------------------------------- Kronecker variant
def test_angle_delay_operator():
    rng = np.random.default_rng(11)
    Y, X, A = make_angle_delay_channel_estimation(3, n_antennas=4, n_subcarriers=32, n_taps=8,
                                                  n_pilots=5, random_state=11)
    assert isinstance(A, KroneckerOperator) and A.shape == (20, 32)
    x, v = _crandn(rng, 2, 32), _crandn(rng, 2, 20)
    Ax = A.forward(torch.as_tensor(x)).numpy()
    AHv = A.adjoint(torch.as_tensor(v)).numpy()
    assert np.allclose(np.sum(Ax.conj() * v, 1), np.sum(x.conj() * AHv, 1))
    D = np.kron(unitary_dft_matrix(4), pilot_dft_matrix(A.A2.pilots, 32, 8))
    assert np.allclose(Ax, x @ D.T)
    assert np.allclose(np.linalg.norm(D, axis=0), 1.0)
    assert float(A.frobenius_sq()) == pytest.approx(32.0)
    assert float(A.norm_sq()) == pytest.approx(np.linalg.norm(D, 2) ** 2)


# ---------------------------------------------------------------------- priors
def test_power_delay_profile_matches_samples():
    prior = ClusteredChannelPrior(128)
    pdp = prior.power_delay_profile()
    assert pdp.shape == (128,) and pdp.sum() == pytest.approx(1.0)
    n = 20000
    P = np.abs(prior.sample(n, random_state=12)) ** 2
    # per-tap z-scores of the sample mean against its own standard error (|h_l|² is heavy-tailed
    # when a tap is rarely covered, so a fixed relative tolerance would not fit every tap)
    z = (P.mean(0) - pdp) / (P.std(0) / np.sqrt(n))
    assert np.max(np.abs(z)) < 5
    assert P.sum(1).mean() == pytest.approx(1.0, rel=0.03)  # E‖h‖² = 1, n = 20000


def test_cluster_structure():
    X = ClusteredChannelPrior(64).sample(3000, random_state=13)
    assert X.dtype == np.complex128 and X.shape == (3000, 64)
    for row in X != 0:
        runs = _runs(row)
        assert 1 <= len(runs) <= 3 and runs.min() >= 3 and runs.sum() <= 24
    single = ClusteredChannelPrior(64, n_clusters=1).sample(500, random_state=14) != 0
    assert all(len(_runs(r)) == 1 and 3 <= _runs(r)[0] <= 8 for r in single)
    # exponential decay inside a cluster: align single clusters of 8 taps at their start
    X = ClusteredChannelPrior(64, n_clusters=1, cluster_length=8).sample(20000, random_state=15)
    start = np.argmax(X != 0, axis=1)
    aligned = np.abs(X[np.arange(len(X))[:, None], start[:, None] + np.arange(8)]) ** 2
    expected = np.exp(-np.arange(8) / 2.0) / np.exp(-np.arange(8) / 2.0).sum()
    assert np.allclose(aligned.mean(0), expected, rtol=0.05)  # |h|²/v ~ Exp(1): 0.7 % s.e.


def test_prior_reproducible_and_fit():
    prior = ClusteredChannelPrior(32)
    assert np.array_equal(prior.sample(5, random_state=0), prior.sample(5, random_state=0))
    assert not np.array_equal(prior.sample(5, random_state=0), prior.sample(5, random_state=1))
    assert prior.fit(np.zeros((3, 32))) is prior and prior.n_features == 32
    with pytest.raises(ValueError, match="X must"):
        prior.fit(np.zeros((3, 31)))


@pytest.mark.parametrize("kwargs, word", [
    ({"n_taps": 0}, "n_taps"),
    ({"n_taps": 32, "n_clusters": (3, 1)}, "n_clusters"),
    ({"n_taps": 32, "n_clusters": (0, 2)}, "n_clusters"),
    ({"n_taps": 32, "cluster_length": (3, 40)}, "cluster_length"),
    ({"n_taps": 32, "cluster_length": (2.0, 4)}, "cluster_length"),
    ({"n_taps": 32, "decay_taps": 0.0}, "decay_taps"),
    ({"n_taps": 32, "decay_taps": "fast"}, "decay_taps"),
])
def test_prior_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ClusteredChannelPrior(**kwargs)


def test_angle_delay_prior():
    prior = ClusteredAngleDelayPrior(16, n_antennas=8)
    X = prior.sample(20000, random_state=16)
    assert X.shape == (20000, 128) and prior.n_features == 128
    P = np.abs(X) ** 2
    assert P.sum(1).mean() == pytest.approx(1.0, rel=0.03)
    profile = prior.power_profile()
    assert profile.sum() == pytest.approx(1.0)
    assert np.allclose(P.reshape(-1, 8, 16).sum(1).mean(0), prior.power_delay_profile(),
                       rtol=0.1, atol=2e-3)
    assert np.allclose(P.reshape(-1, 8, 16).sum(2).mean(0), 1 / 8, rtol=0.05)  # uniform in angle
    one = ClusteredAngleDelayPrior(16, n_clusters=1, angle_spread=2, n_antennas=8)
    bins = (one.sample(200, random_state=17).reshape(-1, 8, 16) != 0).any(2)
    assert np.all(bins.sum(1) == 2)
    assert np.all((bins & np.roll(bins, 1, axis=1)).sum(1) == 1)  # consecutive modulo n_antennas
    with pytest.raises(ValueError, match="angle_spread"):
        ClusteredAngleDelayPrior(16, n_antennas=4, angle_spread=(1, 5))


# ---------------------------------------------------------------------- generators
def test_make_ofdm_shapes_and_reproducibility():
    Y, X, A = make_ofdm_channel_estimation(50, random_state=0)
    assert Y.shape == (50, 48) and X.shape == (50, 128) and A.shape == (48, 128)
    assert Y.dtype == X.dtype == np.complex128 and isinstance(A, PilotDFT)
    Y2, X2, A2 = make_ofdm_channel_estimation(50, random_state=0)
    assert np.array_equal(Y, Y2) and np.array_equal(X, X2) and np.array_equal(A.pilots, A2.pilots)
    Yt, Xt, At = make_ofdm_channel_estimation(20, pilots=A, random_state=1)
    assert np.array_equal(At.pilots, A.pilots) and not np.array_equal(Xt, X[:20])
    _, _, Ac = make_ofdm_channel_estimation(5, n_subcarriers=64, n_taps=16, n_pilots=8,
                                            pilot_pattern="comb", random_state=2)
    assert np.all(np.diff(Ac.pilots) == 8)
    _, _, Ap = make_ofdm_channel_estimation(5, n_subcarriers=64, n_taps=16, pilots=[0, 9, 40])
    assert np.array_equal(Ap.pilots, [0, 9, 40])


def test_make_ofdm_noise_and_signal_power():
    n, snr = 5000, 20.0
    Y, X, A, nv = make_ofdm_channel_estimation(n, snr_db=snr, random_state=3, return_noise_var=True)
    assert nv == pytest.approx(10 ** (-snr / 10) / 48)
    clean = A.forward(torch.as_tensor(X)).numpy()
    W = Y - clean
    # n·P = 240000 complex samples: the standard error of the mean power is 0.2 %
    assert np.mean(np.abs(W) ** 2) == pytest.approx(nv, rel=0.02)
    assert np.mean(W.real ** 2) == pytest.approx(nv / 2, rel=0.02)
    assert abs(np.mean(W**2)) < 0.02 * nv  # circularly symmetric
    assert np.mean(np.abs(clean) ** 2) * 48 == pytest.approx(1.0, rel=0.05)  # E‖Ah‖² = E‖h‖²
    Y0, X0, A0 = make_ofdm_channel_estimation(10, snr_db=None, random_state=4)
    assert np.allclose(Y0, A0.forward(torch.as_tensor(X0)).numpy())


def test_make_angle_delay():
    Y, X, A, nv = make_angle_delay_channel_estimation(2000, n_antennas=8, random_state=5,
                                                      return_noise_var=True)
    assert Y.shape == (2000, 8 * 32) and X.shape == (2000, 8 * 64) and A.shape == (256, 512)
    assert nv == pytest.approx(10 ** -2 / 256)
    W = Y - A.forward(torch.as_tensor(X)).numpy()
    assert np.mean(np.abs(W) ** 2) == pytest.approx(nv, rel=0.02)
    Y2, X2, A2 = make_angle_delay_channel_estimation(3, pilots=A, random_state=6)
    assert A2.shape == A.shape and np.array_equal(A2.A2.pilots, A.A2.pilots)


@pytest.mark.parametrize("kwargs, word", [
    ({"n_samples": 0}, "n_samples"),
    ({"snr_db": "high"}, "snr_db"),
    ({"snr_db": float("nan")}, "snr_db"),
    ({"pilot_pattern": "block"}, "pattern"),
    ({"pilots": [1, 1]}, "distinct"),
    ({"n_clusters": (2, 1)}, "n_clusters"),
])
def test_make_ofdm_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_ofdm_channel_estimation(**{"n_samples": 5, **kwargs})


# ---------------------------------------------------------------------- baselines
def test_pilot_interpolation():
    Y, X, A = make_ofdm_channel_estimation(20, n_subcarriers=64, n_taps=16, n_pilots=8,
                                           snr_db=None, random_state=7)
    H_hat = pilot_interpolation(Y, A)
    H = A.frequency_response(X)
    assert H_hat.shape == (20, 64) and np.allclose(H_hat[:, A.pilots], H[:, A.pilots])
    # a response linear in the subcarrier index is interpolated exactly between the pilots
    A = PilotDFT([4, 10, 30, 50], 64, 8)
    line = (1 + 2j) + (0.5 - 0.25j) * A.pilots
    H_hat = pilot_interpolation(line[None] / 2, A, periodic=False)[0]
    k = np.arange(4, 51)
    assert np.allclose(H_hat[k], (1 + 2j) + (0.5 - 0.25j) * k)
    assert np.allclose(H_hat[:4], line[0]) and np.allclose(H_hat[51:], line[-1])  # held
    wrapped = pilot_interpolation(line[None] / 2, A)[0]  # circular: from pilot 50 to 64 + 4
    assert np.allclose(wrapped[57], line[-1] + (line[0] - line[-1]) * 7 / 18)
    with pytest.raises(TypeError, match="PilotDFT"):
        pilot_interpolation(Y, A.to_dense().numpy())
    with pytest.raises(ValueError, match="kind"):
        pilot_interpolation(line[None], A, kind="cubic")


def test_delay_lmmse_matches_posterior_mean():
    Y, X, A, nv = make_ofdm_channel_estimation(30, n_subcarriers=128, n_taps=24, n_pilots=12,
                                               random_state=8, return_noise_var=True)
    pdp = ClusteredChannelPrior(24).power_delay_profile()
    h = delay_lmmse(Y, A, pdp, nv)
    D = _brute_force(A.pilots, 128, 24)
    # the information form (AᴴA/σ² + R⁻¹)⁻¹ Aᴴ y / σ², another expression of the posterior mean
    post = np.linalg.inv(D.conj().T @ D / nv + np.diag(1 / pdp))
    assert np.allclose(h, Y @ (post @ D.conj().T / nv).T, atol=1e-10)
    assert np.allclose(delay_lmmse(Y, A, np.diag(pdp), nv), h)  # full covariance
    assert np.allclose(delay_lmmse(Y, D, pdp, nv), h)  # dense matrix
    rng = np.random.default_rng(8)
    G, Yr = rng.standard_normal((6, 10)), rng.standard_normal((4, 6))
    hr = delay_lmmse(Yr, G, np.ones(10), 0.1)
    assert hr.dtype == np.float64
    assert np.allclose(hr, Yr @ np.linalg.solve(G @ G.T + 0.1 * np.eye(6), G))


def test_omp_recovers_sparse_complex():
    rng = np.random.default_rng(9)
    A = PilotDFT.random(32, 256, 64, random_state=9)
    X = np.zeros((10, 64), complex)
    for row in X:
        row[rng.choice(64, 4, replace=False)] = _crandn(rng, 4)
    Y = A.forward(torch.as_tensor(X)).numpy()
    assert np.allclose(omp(Y, A, 4), X, atol=1e-10)
    assert np.allclose(omp(Y, A, 9), X, atol=1e-10)  # stops once the residual vanishes
    assert np.array_equal(omp(np.zeros((2, 32)), A, 3), np.zeros((2, 64)))


@pytest.mark.parametrize("normalise", [True, False])
def test_omp_matches_sklearn(normalise):
    rng = np.random.default_rng(10)
    D = rng.standard_normal((30, 60))
    if normalise:
        D /= np.linalg.norm(D, axis=0)
    Y = rng.standard_normal((25, 30))
    for k in (1, 5, 12):
        assert np.allclose(omp(Y, D, k), orthogonal_mp(D, Y.T, n_nonzero_coefs=k).T, atol=1e-10)


def test_support_oracle():
    Y, X, A = make_ofdm_channel_estimation(20, n_subcarriers=256, n_taps=64, n_pilots=32,
                                           snr_db=None, random_state=11)
    assert np.allclose(support_oracle(Y, A, X != 0), X, atol=1e-10)
    shared = np.zeros(64, bool)
    shared[:5] = True
    h = support_oracle(Y, A, shared)
    assert np.all(h[:, 5:] == 0)
    D = A.to_dense().numpy()
    assert np.allclose(h[:, :5], np.linalg.lstsq(D[:, :5], Y.T, rcond=None)[0].T)
    assert np.array_equal(support_oracle(Y, A, np.zeros(64, bool)), np.zeros((20, 64)))
    with pytest.raises(ValueError, match="support_mask"):
        support_oracle(Y, A, np.ones(64, bool))  # 64 taps from 32 measurements
    with pytest.raises(TypeError, match="support_mask"):
        support_oracle(Y, A, (X != 0).astype(int))
    with pytest.raises(ValueError, match="support_mask"):
        support_oracle(Y, A, np.ones((3, 64), bool))


@pytest.mark.parametrize("call, exc, word", [
    (lambda Y, A: omp(Y, A, 0), ValueError, "n_nonzero_coefs"),
    (lambda Y, A: omp(Y, A, 33), ValueError, "n_nonzero_coefs"),
    (lambda Y, A: omp(Y[:, :5], A, 3), ValueError, "Y must"),
    (lambda Y, A: delay_lmmse(Y, A, -np.ones(64), 0.1), ValueError, "tap_power"),
    (lambda Y, A: delay_lmmse(Y, A, np.ones(63), 0.1), ValueError, "tap_power"),
    (lambda Y, A: delay_lmmse(Y, A, np.ones(64), -1.0), ValueError, "noise_var"),
    (lambda Y, A: delay_lmmse(Y, "A", np.ones(64), 0.1), TypeError, "A must"),
    (lambda Y, A: pilot_interpolation(Y[:, :3], A), ValueError, "Y must"),
])
def test_baselines_bad_input(call, exc, word):
    Y, _, A = make_ofdm_channel_estimation(4, n_subcarriers=256, n_taps=64, n_pilots=32,
                                           random_state=12)
    with pytest.raises(exc, match=word):
        call(Y, A)
