"""Every operator class against its dense matrix: maps, adjoints, norms, indexing, LMMSE, dtypes."""

import zlib

import numpy as np
import pytest
import scipy.fft
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from sklearn_unfold.operators import (
    DenseBatchOperator,
    DenseOperator,
    FourierMask2D,
    KroneckerOperator,
    LinearOperator,
    PartialDCT,
    PartialDFT,
    RealView,
    ScipyOperator,
    SparseOperator,
    SVDOperator,
    as_operator,
    conditioned_matrix,
    gaussian_matrix,
    partial_dct_matrix,
    random_rows,
)
from sklearn_unfold.operators.transforms import dct_ortho, idct_ortho

pytestmark = pytest.mark.usefixtures("one_torch_thread")

M, N = 6, 10
HW = (4, 5)


def _dct_mat(n):
    return scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)


def _dft_mat(n):
    return np.fft.fft(np.eye(n), norm="ortho", axis=0)


def _fft2_mat(shape):
    return np.kron(_dft_mat(shape[0]), _dft_mat(shape[1]))


def _masks(n, rng, m=7):
    out = np.zeros((n, HW[0] * HW[1]), dtype=bool)
    for i in range(n):
        out[i, rng.choice(out.shape[1], m, replace=False)] = True
    return out.reshape(n, *HW)


def _svd_factors(A):
    U, s, Vh = np.linalg.svd(A, full_matrices=False)
    return U, s, Vh.T


def _build(name):
    """``(operator, its dense matrix built independently, LMMSE path, exact ‖A‖₂²)``."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    t = torch.as_tensor
    if name == "dense":
        A = gaussian_matrix(M, N, random_state=0)
        return DenseOperator(t(A)), A, "svd", True
    if name == "dense-complex":
        A = rng.standard_normal((M, N)) + 1j * rng.standard_normal((M, N))
        return DenseOperator(t(A)), A, "svd", True
    if name == "dense-batch":
        A = rng.standard_normal((4, M, N))
        return DenseBatchOperator(t(A)), A, "svd", True
    if name == "dense-batch-repeats":
        A = rng.standard_normal((2, M, N))
        return DenseBatchOperator(t(A), repeats=2), np.repeat(A, 2, axis=0), "svd", True
    if name == "svd":
        A = conditioned_matrix(M, N, 5.0, random_state=0)
        return SVDOperator(*(t(f) for f in _svd_factors(A))), A, "svd", True
    if name == "svd-batch-repeats":
        A = np.stack([conditioned_matrix(M, N, 5.0, random_state=k) for k in range(2)])
        U, s, V = (np.stack(f) for f in zip(*(_svd_factors(a) for a in A), strict=True))
        return SVDOperator(t(U), t(s), t(V), repeats=2), np.repeat(A, 2, axis=0), "svd", True
    if name == "sparse":
        A = sp.random(M, N, density=0.5, random_state=0, format="csr")
        return SparseOperator(A), A.toarray(), "cg", False
    if name == "scipy":
        A = gaussian_matrix(M, N, random_state=1)
        return ScipyOperator(spla.aslinearoperator(A)), A, "cg", False
    if name == "partial-dct":
        return PartialDCT.random(M, N, 0), partial_dct_matrix(M, N, random_state=0), "closed", True
    if name == "partial-dct-batch":
        rows = np.stack([rng.choice(N, M, replace=False) for _ in range(4)])
        dense = np.stack([_dct_mat(N)[r] for r in rows]) * 0.5
        return PartialDCT(rows, N, scale=0.5), dense, "closed", True
    if name == "partial-dft":
        rows = random_rows(M, N, random_state=3)
        return PartialDFT(rows, N), _dft_mat(N)[rows] * np.sqrt(N / M), "closed", True
    if name == "partial-dft-batch":
        rows = np.stack([rng.choice(N, M, replace=False) for _ in range(4)])
        return PartialDFT(rows, N), np.stack([_dft_mat(N)[r] for r in rows]) * np.sqrt(N / M), \
            "closed", True
    if name == "fourier-mask":
        mask = _masks(1, rng)[0]
        dense = _fft2_mat(HW)[mask.ravel()] * np.sqrt(20 / 7)
        return FourierMask2D(mask), dense, "closed", True
    if name == "fourier-mask-batch":
        masks = _masks(4, rng)
        dense = np.stack([_fft2_mat(HW)[m.ravel()] for m in masks]) * np.sqrt(20 / 7)
        return FourierMask2D(masks), dense, "closed", True
    if name == "kron-dense":
        A1, A2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 5))
        return KroneckerOperator(A1, A2), np.kron(A1, A2), "svd", True
    if name == "kron-dct-dense":
        A1, A2 = partial_dct_matrix(3, 4, random_state=0), rng.standard_normal((2, 5))
        return KroneckerOperator(PartialDCT.random(3, 4, 0), A2), np.kron(A1, A2), "cg", True
    if name == "kron-dft-dct":
        rows = random_rows(2, 5, random_state=1)
        A1 = _dft_mat(5)[rows] * np.sqrt(5 / 2)
        op = KroneckerOperator(PartialDFT(rows, 5), PartialDCT.random(3, 4, 0))
        return op, np.kron(A1, partial_dct_matrix(3, 4, random_state=0)), "closed", True
    if name == "real-view":
        rows = random_rows(4, N, random_state=4)
        F = _dft_mat(N)[rows] * np.sqrt(N / 4)
        return RealView(PartialDFT(rows, N)), np.vstack([F.real, F.imag]), "cg", False
    if name == "real-view-batch":
        masks = _masks(4, rng, m=5)
        F = np.stack([_fft2_mat(HW)[m.ravel()] for m in masks]) * 2.0
        return RealView(FourierMask2D(masks)), np.concatenate([F.real, F.imag], axis=1), "cg", \
            False
    raise KeyError(name)


CASES = ["dense", "dense-complex", "dense-batch", "dense-batch-repeats", "svd", "svd-batch-repeats",
         "sparse", "scipy", "partial-dct", "partial-dct-batch", "partial-dft", "partial-dft-batch",
         "fourier-mask", "fourier-mask-batch", "kron-dense", "kron-dct-dense", "kron-dft-dct",
         "real-view", "real-view-batch"]
PER_SAMPLE = [c for c in CASES if "batch" in c]


def _rand(shape, complex_, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    if complex_:
        x = torch.complex(x, torch.randn(shape, generator=g, dtype=dtype))
    return x


def _n(op):
    return op.shape[0] if op.per_sample else 3


@pytest.mark.parametrize("name", CASES)
def test_maps_match_the_dense_matrix(name):
    op, dense, _, _ = _build(name)
    assert isinstance(op, LinearOperator)
    assert op.shape == dense.shape
    assert op.is_complex == np.iscomplexobj(dense)
    n = _n(op)
    x = _rand((n, op.n_features), op.is_complex and "real-view" not in name, 0)
    v = _rand((n, op.n_measurements), op.is_complex, 1)
    D = dense if op.per_sample else np.broadcast_to(dense, (n,) + dense.shape)
    expected_fwd = np.einsum("nmk,nk->nm", D, x.numpy())
    expected_adj = np.einsum("nmk,nm->nk", D.conj(), v.numpy())
    np.testing.assert_allclose(op.forward(x).numpy(), expected_fwd, rtol=0, atol=1e-12)
    np.testing.assert_allclose(op.adjoint(v).numpy(), expected_adj, rtol=0, atol=1e-12)
    np.testing.assert_allclose(op.to_dense().numpy(), dense, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_dot_product_test(name):
    """``⟨A x, y⟩ = ⟨x, Aᴴ y⟩`` (the complex inner product for complex operators)."""
    op, *_ = _build(name)
    n = _n(op)
    cplx = op.is_complex
    x = _rand((n, op.n_features), cplx, 2)
    y = _rand((n, op.n_measurements), cplx, 3)
    lhs = torch.vdot(op.forward(x).reshape(-1), y.reshape(-1))
    rhs = torch.vdot(x.reshape(-1), op.adjoint(y).reshape(-1))
    assert abs(complex(lhs - rhs)) <= 1e-10 * abs(complex(lhs))


@pytest.mark.parametrize("name", CASES)
def test_norms_and_row_orthogonality(name):
    op, dense, path, exact = _build(name)
    D = dense if op.per_sample else dense[None]
    true_norm = np.linalg.norm(D, ord=2, axis=(1, 2)) ** 2
    true_fro = np.sum(np.abs(D) ** 2, axis=(1, 2))
    norm, fro = op.norm_sq(), op.frobenius_sq()
    assert norm.dtype == fro.dtype == torch.float64
    assert tuple(norm.shape) == tuple(fro.shape) == ((op.shape[0], 1) if op.per_sample else ())
    est = norm.numpy().reshape(-1)
    if exact:
        np.testing.assert_allclose(est, true_norm, rtol=1e-10)
    else:  # power iteration plus 1 %: an upper bound within 2 %
        assert np.all(est >= true_norm * (1 - 1e-9)) and np.all(est <= 1.02 * true_norm)
    np.testing.assert_allclose(fro.numpy().reshape(-1), true_fro, rtol=1e-10)
    c = op.row_orthogonal_scale
    assert (c is not None) == (path == "closed")
    if c is not None:
        gram = D @ np.swapaxes(D.conj(), 1, 2)
        np.testing.assert_allclose(gram, c * np.broadcast_to(np.eye(D.shape[1]), gram.shape),
                                   atol=1e-12)


@pytest.mark.parametrize("name", PER_SAMPLE)
@pytest.mark.parametrize("index", [np.array([2, 0, 2]), [3], slice(1, 3), slice(None, None, -2),
                                   np.array([True, False, True, True]), torch.tensor([1, -1])])
def test_take_matches_the_indexed_dense_batch(name, index):
    op, dense, *_ = _build(name)
    assert len(op) == 4
    expected = dense[index.numpy() if isinstance(index, torch.Tensor) else index]
    sub = op[index]
    assert sub.shape == expected.shape and len(sub) == expected.shape[0]
    np.testing.assert_allclose(op.take(index).to_dense().numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(sub.norm_sq().numpy().reshape(-1),
                               op.norm_sq().numpy().reshape(-1)[np.arange(4)[index if not
                               isinstance(index, torch.Tensor) else index.numpy()]], rtol=1e-6)


@pytest.mark.parametrize("name", [c for c in CASES if c not in PER_SAMPLE])
def test_shared_operators_are_not_indexable(name):
    op, *_ = _build(name)
    assert op.take([0, 1]) is op
    with pytest.raises(TypeError, match="shared"):
        len(op)
    with pytest.raises(TypeError, match="shared"):
        op[0]


@pytest.mark.parametrize("name", CASES)
def test_lmmse_matches_the_direct_solve(name):
    op, dense, path, _ = _build(name)
    n = _n(op)
    cplx = op.is_complex and "real-view" not in name
    Mm, Nn = op.n_measurements, op.n_features
    r2, y = _rand((n, Nn), cplx, 4), _rand((n, Mm), cplx, 5)
    gamma2 = torch.linspace(0.5, 2.0, n, dtype=torch.float64).reshape(n, 1)
    gamma_w = 3.0
    x2, alpha2 = op.lmmse(r2, gamma2, op.lmmse_context(y), gamma_w)
    D = dense if op.per_sample else np.broadcast_to(dense, (n,) + dense.shape)
    for i in range(n):
        Ai, g2 = D[i], float(gamma2[i])
        H = gamma_w * Ai.conj().T @ Ai + g2 * np.eye(Nn)
        want = np.linalg.solve(H, gamma_w * Ai.conj().T @ y[i].numpy() + g2 * r2[i].numpy())
        want_alpha = g2 / Nn * np.trace(np.linalg.inv(H)).real
        if path == "cg":  # CG stops at a relative residual of 1e-7; up to 16 features the
            # trace is taken over the basis (exact), above it from 16 Rademacher probes
            np.testing.assert_allclose(x2[i].numpy(), want, rtol=1e-6, atol=1e-6)
            assert float(alpha2[i]) == pytest.approx(want_alpha, rel=1e-6 if Nn <= 16 else 0.15)
        else:
            np.testing.assert_allclose(x2[i].numpy(), want, rtol=1e-8, atol=1e-10)
            assert float(alpha2[i]) == pytest.approx(want_alpha, rel=1e-10)
    assert alpha2.shape == (n, 1) and not alpha2.is_complex()


@pytest.mark.parametrize("name", CASES)
def test_single_precision_and_conversions(name):
    op, *_ = _build(name)
    assert op.to() is op and op.to(dtype=torch.float64, device="cpu") is op
    assert as_operator(op) is op
    op32 = op.to(dtype=torch.float32)
    assert op32.dtype == (torch.complex64 if op.is_complex else torch.float32)
    assert op32.shape == op.shape
    n = _n(op)
    x = _rand((n, op.n_features), False, 6)
    y64 = op.forward(x)
    y32 = op32.forward(x.float())
    assert y32.dtype in (torch.float32, torch.complex64)
    torch.testing.assert_close(y32.to(y64.dtype), y64, rtol=1e-4, atol=1e-5)
    v = _rand((n, op.n_measurements), op.is_complex, 7, dtype=torch.float32)
    assert op32.adjoint(v).dtype in (torch.float32, torch.complex64)
    assert op32.to(dtype=torch.float64).dtype == op.dtype


@pytest.mark.parametrize("name", CASES)
def test_fingerprint_and_repr(name):
    op, *_ = _build(name)
    assert op.fingerprint() == op.fingerprint()
    if name != "scipy":  # a wrapped scipy operator is known by its identity only
        assert op.fingerprint() == _build(name)[0].fingerprint()
    text = repr(op)
    assert type(op).__name__ in text and len(text) < 600
    assert "tensor(" not in text


def test_fingerprints_tell_operators_apart():
    prints = [_build(name)[0].fingerprint() for name in CASES if name != "scipy"]
    assert len(set(prints)) == len(prints)
    assert PartialDCT.random(M, N, 0).fingerprint() != PartialDCT.random(M, N, 1).fingerprint()
    assert PartialDCT([0, 1], 4).fingerprint() != PartialDCT([0, 1], 4, scale=1.0).fingerprint()


@pytest.mark.parametrize("n_features", [1, 2, 7, 16, 33])
def test_dct_through_the_fft_matches_scipy(n_features):
    x = np.random.default_rng(0).standard_normal((3, n_features))
    X = dct_ortho(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(X, scipy.fft.dct(x, type=2, norm="ortho", axis=-1), atol=1e-12)
    np.testing.assert_allclose(idct_ortho(torch.as_tensor(X)).numpy(), x, atol=1e-12)


def test_partial_dct_reproduces_partial_dct_matrix_and_default_scale():
    op = PartialDCT.random(20, 50, random_state=7)
    np.testing.assert_array_equal(op.rows.numpy(), random_rows(20, 50, random_state=7))
    np.testing.assert_allclose(op.to_dense().numpy(), partial_dct_matrix(20, 50, random_state=7),
                               atol=1e-12)
    assert op.row_orthogonal_scale == pytest.approx(50 / 20)
    assert isinstance(PartialDFT.random(3, 8, 0), PartialDFT)


def test_gradients_flow_through_matrix_free_maps():
    def check(f, x):
        assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-8)

    x = _rand((2, 6), False, 8).requires_grad_()
    dct = PartialDCT([4, 0, 3], 6)
    check(dct.forward, x)
    check(dct.adjoint, _rand((2, 3), False, 9).requires_grad_())
    check(lambda t: PartialDFT([1, 5], 6).forward(t).abs(), x)
    check(lambda t: RealView(FourierMask2D(np.eye(2, 3, dtype=bool))).forward(t), x)
    check(KroneckerOperator(PartialDCT([0, 2], 3), np.ones((1, 2))).forward, x)
    batch = PartialDCT([[0, 1], [2, 5]], 6)
    check(batch.forward, x)


def test_fourier_mask_layouts_and_random_masks():
    rng = np.random.default_rng(0)
    masks = _masks(3, rng)
    op = FourierMask2D(masks)
    flat = FourierMask2D(masks.reshape(3, -1), image_shape=HW)
    np.testing.assert_array_equal(op.mask.numpy(), masks)
    assert op.fingerprint() == flat.fingerprint() and op.image_shape == HW
    img = torch.as_tensor(rng.standard_normal((3,) + HW))
    want = np.fft.fft2(img.numpy(), norm="ortho")[masks] * np.sqrt(20 / 7)
    np.testing.assert_allclose(op.forward(img.reshape(3, -1)).numpy().ravel(), want, atol=1e-12)

    rand = FourierMask2D.random((8, 10), 0.25, random_state=0, center=4)
    mask = rand.mask.numpy()
    assert rand.shape == (20, 80) and mask.sum() == 20
    assert mask[np.ix_([6, 7, 0, 1], [8, 9, 0, 1])].all()  # the low-frequency centre, wrapped
    again = FourierMask2D.random((8, 10), 20, 0, center=4)
    np.testing.assert_array_equal(again.mask.numpy(), mask)
    assert FourierMask2D.random((8, 10), 30, 0, center=0.5).mask.numpy()[
        np.ix_([6, 7, 0, 1], [8, 9, 0, 1, 2])].all()


def test_kronecker_structure():
    rng = np.random.default_rng(1)
    A1, A2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 5))
    op = KroneckerOperator(A1, A2)
    X = rng.standard_normal((4, 5))
    np.testing.assert_allclose(op.forward(torch.as_tensor(X.reshape(1, -1))).numpy().reshape(3, 2),
                               A1 @ X @ A2.T, atol=1e-12)
    assert op.svd() is None  # the LMMSE stage uses the factors' SVDs instead
    mixed = KroneckerOperator(PartialDFT([0, 2], 4), A2)
    assert mixed.is_complex and mixed.A2.dtype == torch.complex128
    assert "KroneckerOperator" in repr(op) and op.to(dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("op", [RealView(PartialDFT.random(24, 64, 0)),
                                KroneckerOperator(PartialDCT.random(5, 8, 0), np.ones((3, 8)) +
                                                  np.eye(3, 8))])
def test_lmmse_hutchinson_divergence_within_ten_percent(op):
    """Above 16 features the CG path estimates ``α2`` from Rademacher probes."""
    n, Nn = 6, op.n_features
    r2, y = _rand((n, Nn), False, 10), _rand((n, op.n_measurements), False, 11)
    gamma2 = torch.linspace(0.5, 2.0, n, dtype=torch.float64).reshape(n, 1)
    _, alpha2 = op.lmmse(r2, gamma2, op.lmmse_context(y), 3.0)
    D = op.to_dense().numpy()
    errors = []
    for i in range(n):
        H = 3.0 * D.T @ D + float(gamma2[i]) * np.eye(Nn)
        want = float(gamma2[i]) / Nn * np.trace(np.linalg.inv(H))
        errors.append(abs(float(alpha2[i]) / want - 1))
    assert max(errors) < 0.15 and np.mean(errors) < 0.1


def test_transforms_on_row_orthogonal_lmmse_in_float32():
    op = PartialDCT.random(8, 16, 0).to(dtype=torch.float32)
    r2, y = torch.randn(3, 16), torch.randn(3, 8)
    x2, alpha2 = op.lmmse(r2, torch.ones(3, 1), op.lmmse_context(y), 2.0)
    assert x2.dtype == torch.float32 and alpha2.shape == (3, 1)


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"lie in \[0, 8\)"):
        PartialDCT([0, 8], 8)
    with pytest.raises(ValueError, match="n_measurements <= n_features"):
        PartialDCT(np.arange(9), 8)
    with pytest.raises(ValueError, match="n_measurements <= n_features"):
        PartialDCT.random(9, 8)
    with pytest.raises(ValueError, match="distinct"):
        PartialDFT([1, 1], 8)
    with pytest.raises(TypeError, match="integer"):
        PartialDCT([0.0, 1.0], 8)
    with pytest.raises(ValueError, match="1-D"):
        PartialDCT(np.zeros((1, 1, 1), dtype=int), 8)
    with pytest.raises(ValueError, match="scale"):
        PartialDCT([0], 8, scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        PartialDCT([0], 8, scale="unit")
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 0, :2] = masks[1, 0, 0] = True
    with pytest.raises(ValueError, match="same number"):
        FourierMask2D(masks)
    with pytest.raises(TypeError, match="boolean"):
        FourierMask2D(np.ones((3, 3)))
    with pytest.raises(ValueError, match="does not match"):
        FourierMask2D(np.ones((3, 3), dtype=bool), image_shape=(2, 2))
    with pytest.raises(ValueError, match="no coefficient"):
        FourierMask2D(np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="centre"):
        FourierMask2D.random((8, 8), 4, 0, center=4)
    with pytest.raises(ValueError, match="fraction"):
        FourierMask2D.random((8, 8), 1.5, 0)
    with pytest.raises(ValueError, match="shared factors"):
        KroneckerOperator(np.ones((2, 2, 2)), np.ones((2, 2)))
    with pytest.raises(TypeError, match="complex operator"):
        RealView(PartialDCT([0], 4))
    with pytest.raises(TypeError, match="real signals"):
        RealView(PartialDFT([0], 4)).forward(torch.zeros(1, 4, dtype=torch.complex128))
    with pytest.raises(ValueError, match="per-sample operators"):
        PartialDCT([[0], [1]], 4).forward(torch.zeros(3, 4))


def test_norms_are_computed_once_and_not_shared_with_narrowed_copies():
    """norm_sq / frobenius_sq are memoised per operator; take() and to() start afresh."""
    rows = np.stack([np.sort(np.random.RandomState(i).choice(16, 6, replace=False))
                     for i in range(5)])
    op = PartialDCT(rows, 16, scale=2.0)
    assert op.frobenius_sq().shape == (5, 1)
    assert op.frobenius_sq() is op.frobenius_sq()  # the memoised tensor
    sub = op.take([0, 3])
    assert sub.frobenius_sq().shape == (2, 1) and sub.norm_sq().shape == (2, 1)
    np.testing.assert_allclose(sub.frobenius_sq().numpy(), 6 * 4.0)
    assert op.to(dtype=torch.float32).norm_sq().shape == (5, 1)
