"""The OFDM channel-estimation comparison (``compare --problem ofdm``) on a small problem."""

from types import MappingProxyType

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sklearn_unfold import VAMPRegressor, nmse_db  # noqa: E402
from sklearn_unfold import channel_comparison as cc  # noqa: E402
from sklearn_unfold.channels import pilot_interpolation  # noqa: E402
from sklearn_unfold.cli import _thread_limit, main  # noqa: E402
from sklearn_unfold.comparison import _sq_error, format_table  # noqa: E402

#: K, L, P small enough for seconds; P = L keeps the oracle's least squares well conditioned
#: for every support the prior draws (up to 24 taps), so it is the floor it is meant to be.
SMALL = {"n_subcarriers": 256, "n_taps": 32, "n_pilots": 32}
LABELS = ["pilot LS + interpolation", "LMMSE (PDP)", "complex OMP", "AMP-bg", "VAMP-bg",
          "LAMP-bg", "LDVAMP-bg", "support oracle"]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with _thread_limit(1):
        yield


@pytest.fixture(scope="module")
def data():
    return cc.make_channel_data(300, 100, random_state=0, **SMALL)


@pytest.fixture(scope="module")
def rows(data):
    return cc.run_channel_comparison(data=data, progress=False, quick=True, chunk_size=40)


# ----------------------------------------------------------------------------- the rows
def test_rows_labels_order_and_finite(rows):
    pytest.importorskip("sklearn_unfold.estimators.learned")
    assert list(cc.CHANNEL_METHODS) == ["ls-interp", "lmmse", "omp", "amp-bg", "vamp-bg", "lamp",
                                        "ldvamp", "oracle"]
    assert [r.label for r in rows] == LABELS
    assert [r.method for r in rows] == list(cc.CHANNEL_METHODS)
    assert all(np.isfinite(r.nmse_db) and r.fit_seconds >= 0 for r in rows)
    by = {r.method: r for r in rows}
    # the oracle is the floor; every method beats interpolating 32 pilots over 256 subcarriers
    assert by["oracle"].nmse_db == min(r.nmse_db for r in rows)
    assert all(r.nmse_db < by["ls-interp"].nmse_db for r in rows if r.method != "ls-interp")
    # curves for what iterates or has layers; the others are the plot's horizontal lines
    for name in ("amp-bg", "vamp-bg", "lamp", "ldvamp"):
        r = by[name]
        assert r.nmse_curve is not None and r.n_iter == r.nmse_curve.size
        assert r.nmse_db == pytest.approx(r.nmse_curve[-1])
    assert by["amp-bg"].n_iter == by["vamp-bg"].n_iter == 30
    assert by["lamp"].n_iter == cc.LEARNED_CONFIG["lamp"]["n_layers"]
    for name in ("ls-interp", "lmmse", "omp", "oracle"):
        assert by[name].nmse_curve is None
    assert by["omp"].notes.startswith("k=") and by["omp"].n_iter == int(by["omp"].notes[2:].split(",")[0])
    assert "damping=0.8" in by["vamp-bg"].notes
    table = format_table(rows)
    assert table.count("\n") == len(LABELS) + 1 and all(label in table for label in LABELS)


def test_ls_interpolation_is_scored_on_the_frequency_response(rows, data):
    H = data.A.frequency_response(data.X_test)
    expected = nmse_db(H, pilot_interpolation(data.Y_test, data.A))
    assert rows[0].nmse_db == pytest.approx(expected, abs=1e-9)


def test_vamp_row_equals_an_independent_fit(rows, data):
    est = VAMPRegressor(A=data.A, denoiser="bg", max_iter=30, damping=0.8)
    X_hat = est.fit(data.Y_train, data.X_train).predict(data.Y_test)
    vamp = next(r for r in rows if r.method == "vamp-bg")
    assert vamp.nmse_db == pytest.approx(nmse_db(data.X_test, X_hat), abs=1e-9)
    # the delay-domain score is the frequency-domain one (orthogonal columns of equal norm)
    H = data.A.frequency_response(data.X_test)
    assert vamp.nmse_db == pytest.approx(nmse_db(H, data.A.frequency_response(X_hat)), abs=1e-9)


# ----------------------------------------------------------------------------- pieces
def test_sq_error_sums_squared_moduli_and_keeps_the_real_path():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 5)) + 1j * rng.standard_normal((7, 5))
    X_hat = rng.standard_normal((7, 5)) + 1j * rng.standard_normal((7, 5))
    expected = float(np.sum(np.abs(X_hat - X) ** 2))
    assert _sq_error(X_hat, X) == pytest.approx(expected, rel=1e-13)
    assert _sq_error(X_hat, X, np.empty_like(X)) == pytest.approx(expected, rel=1e-13)
    assert _sq_error(X_hat.T.copy().T, X.T.copy().T, None) == pytest.approx(expected, rel=1e-13)
    Xf = np.asfortranarray(X)  # a non-contiguous difference takes the conj() path
    assert _sq_error(np.asfortranarray(X_hat), Xf, np.empty_like(Xf)) == pytest.approx(expected)
    # a complex estimate of real signals: the real buffer is not used, the error is still right
    R = X.real.copy()
    assert _sq_error(X_hat, R, np.empty_like(R)) == pytest.approx(np.sum(np.abs(X_hat - R) ** 2))
    # real: the same einsum as before, bit for bit
    A, B = X.real.copy(), X_hat.real.copy()
    d = B - A
    assert _sq_error(B, A) == float(np.einsum("ij,ij->", d, d))
    assert _sq_error(B, A, np.empty_like(A)) == float(np.einsum("ij,ij->", d, d))


def test_make_channel_data_shares_the_pilots(data):
    assert data.A.shape == (32, 32) and data.A.n_subcarriers == 256
    assert data.Y_train.shape == (300, 32) and data.X_test.shape == (100, 32)
    assert np.iscomplexobj(data.Y_test) and np.iscomplexobj(data.X_train)
    assert data.noise_var == pytest.approx(10 ** (-20 / 10) / 32)
    assert dict(data.problem) == {**SMALL, "pilot_pattern": "random", "snr_db": 20.0}
    assert "K=256, L=32, P=32 random pilots, SNR 20 dB" == data.describe()
    with pytest.raises(TypeError, match="n_antennas"):
        cc.make_channel_data(10, 5, n_antennas=4)
    with pytest.raises(ValueError, match="n_test"):
        cc.make_channel_data(10, 0)
    with pytest.raises(ValueError, match="n_train"):
        cc.run_channel_comparison(["ls-interp"], data=data, n_train=5, progress=False)
    with pytest.raises(ValueError, match="magic"):
        cc.run_channel_comparison(["magic"], data=data, progress=False)


def test_registries_are_read_only_and_learned_config_applies(data):
    for table in (cc.CHANNEL_METHODS, cc.OFDM_PROBLEM, cc.QUICK_OFDM, cc.LEARNED_CONFIG,
                  cc.LEARNED_CONFIG["lamp"]):
        with pytest.raises(TypeError):
            table["x"] = 1
    assert {k: cc.QUICK_OFDM[k] for k in SMALL} == {k: cc.OFDM_PROBLEM[k] for k in SMALL}
    assert cc.QUICK_OFDM["n_train"] < cc.OFDM_PROBLEM["n_train"]
    pytest.importorskip("sklearn_unfold.estimators.learned")
    for name in ("lamp", "ldvamp"):
        full = cc.CHANNEL_METHODS[name].build(data, 3).get_params()
        fast = cc.CHANNEL_METHODS[name].build(data, 3, quick=True).get_params()
        assert full["random_state"] == 3 and full["A"] is data.A and full["signal_prior"] is None
        assert full["n_layers"] == cc.LEARNED_CONFIG[name]["n_layers"]
        assert fast["max_epochs"] == min(full["max_epochs"], cc.QUICK_MAX_EPOCHS)


def test_oracle_falls_back_to_min_norm_when_taps_outnumber_pilots():
    d = cc.make_channel_data(5, 40, random_state=1, n_subcarriers=64, n_taps=16, n_pilots=8)
    mask = d.X_test != 0
    assert (mask.sum(axis=1) > 8).any() and (mask.sum(axis=1) <= 8).any()
    oracle = cc.SupportOracle(d.A).fit(d.Y_train)
    h = oracle.predict(d.Y_test, mask)
    assert np.all(h[~mask] == 0) and np.isfinite(h).all()
    assert oracle.n_underdetermined_ == int((mask.sum(axis=1) > 8).sum())
    with pytest.raises(ValueError, match="support_mask"):
        oracle.predict(d.Y_test, mask.astype(int))


# ----------------------------------------------------------------------------- command line
@pytest.mark.parametrize("argv, message", [
    (["--problem", "ofdm", "--n-features", "100"], "--n-features"),
    (["--problem", "ofdm", "--n-measurements", "10"], "--n-measurements"),
    (["--n-pilots", "16"], "--n-pilots"),
    (["--problem", "dct", "--snr-db", "10"], "--snr-db"),
    (["--problem", "ofdm", "--methods", "vamp-bg,lista"], "unknown method"),
    (["--problem", "ofdm", "--snr-db", "nan"], "finite number"),
    (["--problem", "ofdm", "--n-pilots", "0"], "positive integer"),
    (["--problem", "ofdm", "--n-pilots", "5000", "--no-plot"], "must not exceed"),
])
def test_ofdm_options_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_ofdm_options_parse():
    from sklearn_unfold.cli import _build_parser, _parse_methods, _resolve_ofdm

    top, parser = _build_parser()
    args = top.parse_args(["compare", "--problem", "ofdm", "--n-pilots", "24", "--snr-db", "7.5",
                           "--quick", "--n-test", "9"])
    spec = _resolve_ofdm(args)
    assert spec == {**cc.QUICK_OFDM, "n_pilots": 24, "snr_db": 7.5, "n_test": 9}
    assert _resolve_ofdm(top.parse_args(["compare", "--problem", "ofdm"])) == dict(cc.OFDM_PROBLEM)
    assert _parse_methods(parser, "OMP, oracle,omp", "ofdm") == ["omp", "oracle"]
    assert _parse_methods(parser, None, "ofdm") == cc.available_channel_methods()


def test_cli_ofdm_end_to_end(monkeypatch, capsys, tmp_path):
    pytest.importorskip("sklearn_unfold.estimators.learned")
    for name in ("OFDM_PROBLEM", "QUICK_OFDM"):
        monkeypatch.setattr(cc, name, MappingProxyType({**getattr(cc, name), **SMALL}))
    out = tmp_path / "ofdm.png"
    argv = ["compare", "--problem", "ofdm", "--quick", "--n-train", "200", "--n-test", "50",
            "--snr-db", "15", "--output", str(out), "--threads", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == ("problem ofdm (--quick): K=256, L=32, P=32 random pilots, SNR 15 dB, 200 "
                        "training and 50 test samples, random_state=0; NMSE of the frequency "
                        "response")
    for label in LABELS:
        row = [line for line in lines if line.startswith(f"| {label} ")]
        assert len(row) == 1, captured.out
        assert np.isfinite(float(row[0].split("|")[3]))
    assert len(captured.err.splitlines()) == len(LABELS)  # one plain line per method
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
