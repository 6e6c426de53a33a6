"""Operator ensembles: reproducible draws, ``repeats``, shapes, spectra and bad input."""

import numpy as np
import pytest
import torch

from sklearn_unfold.operators import (
    ConditionedEnsemble,
    DenseBatchOperator,
    DenseOperator,
    FourierMask2D,
    FourierMask2DEnsemble,
    GaussianEnsemble,
    OperatorEnsemble,
    PartialDCT,
    PartialDCTEnsemble,
    PartialDFT,
    PartialDFTEnsemble,
    SVDOperator,
    conditioned_matrix,
    gaussian_matrix,
    is_ensemble,
    partial_dct_matrix,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENSEMBLES = {
    "gaussian": lambda: GaussianEnsemble(6, 10),
    "conditioned": lambda: ConditionedEnsemble(6, 10, condition_number=5.0),
    "conditioned-tall": lambda: ConditionedEnsemble(10, 6, condition_number=5.0),
    "partial-dct": lambda: PartialDCTEnsemble(6, 10),
    "partial-dft": lambda: PartialDFTEnsemble(6, 10),
    "fourier-mask": lambda: FourierMask2DEnsemble((4, 5), 7, center=2),
}
OP_TYPES = {"gaussian": (DenseOperator, DenseBatchOperator), "conditioned": (SVDOperator,) * 2,
            "conditioned-tall": (SVDOperator,) * 2, "partial-dct": (PartialDCT,) * 2,
            "partial-dft": (PartialDFT,) * 2, "fourier-mask": (FourierMask2D,) * 2}


@pytest.mark.parametrize("name", ENSEMBLES)
def test_sample_shapes_types_and_reproducibility(name):
    ens = ENSEMBLES[name]()
    assert is_ensemble(ens) and isinstance(ens, OperatorEnsemble)
    M, N = ens.shape
    op = ens.sample(8, random_state=0)
    assert isinstance(op, OP_TYPES[name][1])
    assert op.per_sample and op.shape == (8, M, N) and len(op) == 8
    dense = op.to_dense().numpy()
    np.testing.assert_array_equal(ens.sample(8, random_state=0).to_dense().numpy(), dense)
    assert not np.allclose(ens.sample(8, random_state=1).to_dense().numpy(), dense)
    assert not np.allclose(dense[0], dense[1])  # one distinct draw per sample
    rng = np.random.RandomState(0)  # a RandomState instance advances between calls
    assert not np.allclose(ens.sample(2, rng).to_dense().numpy(), ens.sample(2, rng).to_dense().numpy())

    one = ens.sample_one(random_state=0)
    assert isinstance(one, OP_TYPES[name][0]) and one.shape == (M, N) and not one.per_sample
    np.testing.assert_allclose(one.to_dense().numpy(), dense[0], atol=1e-12)
    assert op.take([3, 1]).shape == (2, M, N)


@pytest.mark.parametrize("name", ENSEMBLES)
def test_repeats_share_operators_across_consecutive_samples(name):
    ens = ENSEMBLES[name]()
    op = ens.sample(6, random_state=0, repeats=3)
    assert op.shape == (6,) + ens.shape
    dense = op.to_dense().numpy()
    np.testing.assert_allclose(dense[:3], np.broadcast_to(dense[0], (3,) + ens.shape), atol=0)
    np.testing.assert_allclose(dense[3:], np.broadcast_to(dense[3], (3,) + ens.shape), atol=0)
    assert not np.allclose(dense[0], dense[3])
    # the g = n / repeats distinct draws are the first g draws of the same random_state
    np.testing.assert_allclose(dense[::3], ens.sample(2, random_state=0).to_dense().numpy(),
                               atol=1e-12)
    x = torch.randn(6, ens.shape[1], dtype=torch.float64)
    np.testing.assert_allclose(op.forward(x).numpy(),
                               np.einsum("nmk,nk->nm", dense, x.numpy()), atol=1e-12)
    with pytest.raises(ValueError, match="must divide"):
        ens.sample(7, random_state=0, repeats=2)


@pytest.mark.parametrize("name", ENSEMBLES)
def test_dtype_device_repr_and_fingerprint(name):
    ens = ENSEMBLES[name]()
    op = ens.sample(2, 0, dtype=torch.float32, device="cpu")
    assert op.dtype in (torch.float32, torch.complex64) and op.device == torch.device("cpu")
    assert ens.sample_one(0, dtype=torch.float32).dtype == op.dtype
    assert op.dtype.is_complex == (name in ("partial-dft", "fourier-mask"))
    text = repr(ens)
    assert text.startswith(type(ens).__name__ + "(") and "n_measurements=" in text
    assert ens.fingerprint() == ENSEMBLES[name]().fingerprint()
    assert ens.get_params()["n_measurements"] in (6, 7, 10)


def test_fingerprints_differ_between_families():
    prints = {ENSEMBLES[name]().fingerprint() for name in ENSEMBLES}
    prints.add(ConditionedEnsemble(6, 10, condition_number=2.0).fingerprint())
    assert len(prints) == len(ENSEMBLES) + 1


def test_single_draws_match_the_numpy_generators():
    np.testing.assert_allclose(GaussianEnsemble(20, 30).sample_one(3).to_dense().numpy(),
                               gaussian_matrix(20, 30, random_state=3), atol=0)
    np.testing.assert_allclose(PartialDCTEnsemble(20, 30).sample_one(3).to_dense().numpy(),
                               partial_dct_matrix(20, 30, random_state=3), atol=1e-12)
    np.testing.assert_array_equal(PartialDCTEnsemble(5, 9).sample_one(4).rows.numpy(),
                                  PartialDCT.random(5, 9, 4).rows.numpy())
    np.testing.assert_array_equal(FourierMask2DEnsemble((6, 6), 10, center=2).sample_one(5)
                                  .mask.numpy(),
                                  FourierMask2D.random((6, 6), 10, 5, center=2).mask.numpy())


def test_gaussian_columns_have_unit_norm_on_average():
    A = GaussianEnsemble(200, 50).sample(4, random_state=0).to_dense().numpy()
    assert np.mean(np.sum(A**2, axis=1)) == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("shape", [(20, 40), (40, 20), (15, 15)])
def test_conditioned_ensemble_spectrum_and_haar_factors(shape):
    ens = ConditionedEnsemble(*shape, condition_number=15.0)
    op = ens.sample(3, random_state=0)
    A = op.to_dense().numpy()
    s = np.linalg.svd(A, compute_uv=False)
    np.testing.assert_allclose(s[:, 0] / s[:, -1], 15.0, rtol=1e-8)
    np.testing.assert_allclose(np.sum(A**2, axis=(1, 2)), shape[1], rtol=1e-10)
    np.testing.assert_allclose(s[0], np.linalg.svd(conditioned_matrix(*shape, 15.0, random_state=0),
                                                   compute_uv=False), rtol=1e-10)
    U, _, V = op.svd()
    R = min(shape)
    eye = np.broadcast_to(np.eye(R), (3, R, R))
    np.testing.assert_allclose(U.transpose(1, 2) @ U, eye, atol=1e-12)
    np.testing.assert_allclose(V.transpose(1, 2) @ V, eye, atol=1e-12)
    np.testing.assert_allclose(op.norm_sq().numpy().ravel(), s[:, 0] ** 2, rtol=1e-10)


def test_conditioned_ensemble_factors_are_haar_on_average():
    """The sign fix makes ``E[U] = 0``: without it the diagonal of ``Q`` is biased positive."""
    U, _, _ = ConditionedEnsemble(4, 4, 1.0).sample(400, random_state=0).svd()
    assert abs(float(torch.diagonal(U, dim1=1, dim2=2).mean())) < 0.05


@pytest.mark.parametrize("cls", [PartialDCTEnsemble, PartialDFTEnsemble])
def test_partial_transform_ensembles_are_row_orthogonal_with_distinct_rows(cls):
    op = cls(6, 10).sample(4, random_state=0)
    assert op.row_orthogonal_scale == pytest.approx(10 / 6)
    rows = op.rows.numpy()
    assert all(len(set(r)) == 6 for r in rows)
    assert len({tuple(r) for r in rows}) == 4


def test_fourier_mask_ensemble_keeps_the_centre_and_the_count():
    ens = FourierMask2DEnsemble((8, 8), 0.25, center=4)
    assert ens.shape == (16, 64)
    masks = ens.sample(5, random_state=0).mask.numpy()
    assert masks.shape == (5, 8, 8) and np.all(masks.sum(axis=(1, 2)) == 16)
    centre = np.ix_(range(5), [6, 7, 0, 1], [6, 7, 0, 1])
    assert masks[centre].all()


def test_is_ensemble_rejects_other_objects():
    assert not is_ensemble(np.eye(3))
    assert not is_ensemble(PartialDCT([0], 3))
    assert not is_ensemble(GaussianEnsemble)


def test_bad_input_messages():
    ens = GaussianEnsemble(4, 8)
    with pytest.raises(ValueError, match="must divide"):
        ens.sample(5, repeats=2)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        ens.sample(0)
    with pytest.raises(TypeError, match="n_samples must be an int"):
        ens.sample(2.0)
    with pytest.raises(ValueError, match="repeats must be a positive integer"):
        ens.sample(4, repeats=0)
    with pytest.raises(ValueError, match="n_measurements <= n_features"):
        PartialDCTEnsemble(9, 8)
    with pytest.raises(ValueError, match="n_measurements <= n_features"):
        PartialDFTEnsemble(9, 8)
    with pytest.raises(ValueError, match="condition_number"):
        ConditionedEnsemble(4, 8, condition_number=0.5)
    with pytest.raises(ValueError, match="n_features must be a positive integer"):
        GaussianEnsemble(4, 0)
    with pytest.raises(ValueError, match="centre"):
        FourierMask2DEnsemble((4, 4), 3, center=2)
    with pytest.raises(ValueError, match=r"n_measurements must lie in \[1, 16\]"):
        FourierMask2DEnsemble((4, 4), 17)
