"""``sklearn-unfold compare`` on a tiny problem: the table, the PNG, and clear option errors."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sklearn_unfold import nmse_db  # noqa: E402
from sklearn_unfold.cli import _thread_limit, main  # noqa: E402
from sklearn_unfold.comparison import (  # noqa: E402
    METHODS,
    _TunedLasso,
    format_table,
    make_comparison_data,
    run_comparison,
)

TINY = ["--n-train", "60", "--n-test", "20", "--n-features", "100", "--n-measurements", "50",
        "--quiet", "--threads", "1"]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small problems run fastest, and disturb other processes least, on one thread."""
    with _thread_limit(1):
        yield


def test_compare_prints_table_and_writes_png(tmp_path, capsys):
    out = tmp_path / "curves.png"
    status = main(["compare", "--methods", "amp-bg,vamp-bg,omp", "--output", str(out), *TINY])
    assert status == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    for column in ("iters/layers", "test NMSE (dB)", "fit (s)", "predict (ms/sample)"):
        assert column in header
    for label in ("AMP-bg", "VAMP-bg", "sklearn OMP"):
        rows = [line for line in lines if line.startswith(f"| {label} ")]
        assert len(rows) == 1, printed
        nmse = float(rows[0].split("|")[3])
        assert nmse < -10.0
    assert out.exists() and out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_comparison_rows_match_curves():
    data = make_comparison_data("giid", 60, 20, random_state=1, n_features=100,
                                n_measurements=50)
    rows = run_comparison(["amp-bg", "omp"], data=data, chunk_size=7, progress=False)
    amp, omp = rows
    assert amp.nmse_curve is not None and amp.n_iter == amp.nmse_curve.size
    assert amp.nmse_db == pytest.approx(amp.nmse_curve[-1])
    # chunked staged errors add up to the NMSE of one full-batch predict
    est = METHODS["amp-bg"].build(data, 0).fit(data.Y_train, data.X_train)
    assert amp.nmse_db == pytest.approx(nmse_db(data.X_test, est.predict(data.Y_test)), abs=1e-9)
    assert omp.nmse_curve is None and omp.n_iter >= 1 and "k=" in omp.notes
    table = format_table(rows)
    assert table.count("\n") == 3 and "sklearn OMP" in table


def test_tuned_lasso_matches_sklearn_per_sample():
    from sklearn.linear_model import Lasso

    data = make_comparison_data("giid", 40, 5, random_state=2, n_features=60, n_measurements=30)
    peer = _TunedLasso(data.A, n_val=20, alpha_center=1e-3).fit(data.Y_train, data.X_train)
    grid = 1e-3 * 2.0 ** (np.arange(-6, 7) / 2)
    assert np.isclose(grid, peer.alpha_).any()
    X_hat = peer.predict(data.Y_test)
    one = Lasso(alpha=peer.alpha_, fit_intercept=False).fit(data.A, data.Y_test[3]).coef_
    np.testing.assert_allclose(X_hat[3], one, atol=1e-8)


@pytest.mark.parametrize("argv, message", [
    (["compare", "--problem", "nope"], "invalid choice"),
    (["compare", "--methods", "amp-bg,magic"], "unknown method"),
    (["compare", "--n-test", "0"], "positive integer"),
    (["compare", "--n-train", "ten"], "positive integer"),
    (["compare", "--output", "/no/such/dir/x.png"], "does not exist"),
    (["compare", "--output", "x.notanimage"], "image format"),
    (["compare", "--n-measurements", "600"], "must not exceed"),
    ([], "command"),
])
def test_bad_options_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_learned_methods_build_with_a_small_budget():
    pytest.importorskip("sklearn_unfold.estimators.learned")
    from sklearn_unfold.comparison import available_methods

    data = make_comparison_data("giid", 100, 5, random_state=0, n_features=40, n_measurements=20)
    for name in ("lista", "lamp", "ldvamp"):
        assert name in available_methods()
        params = METHODS[name].build(data, 3).get_params()
        assert params["signal_prior"] == "bernoulli_gaussian"
        assert params["random_state"] == 3 and params["n_layers"] == 10
        assert params["A"] is data.A
