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
    # chunked staged errors add up to the NMSE of one full-batch predict (to float32 rounding:
    # the comparison's classical solvers iterate in float32, and a chunk's matrix products
    # round differently from the whole batch's)
    est = METHODS["amp-bg"].build(data, 0).fit(data.Y_train, data.X_train)
    assert est.dtype == "float32"
    assert amp.nmse_db == pytest.approx(nmse_db(data.X_test, est.predict(data.Y_test)), abs=1e-5)
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


# ----------------------------------------------------------------------------- version, logging, --quick
def test_version_prints_the_installed_version(capsys, monkeypatch):
    from importlib import metadata

    import sklearn_unfold
    from sklearn_unfold import cli

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"sklearn-unfold {metadata.version('sklearn-unfold')}\n"

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.metadata, "version", not_installed)
    assert cli.package_version() == sklearn_unfold.__version__


def test_piped_progress_is_one_plain_line_per_method(capsys):
    argv = ["compare", "--methods", "amp-bg,omp", "--no-plot",
            *(a for a in TINY if a != "--quiet")]
    assert main(argv) == 0
    captured = capsys.readouterr()  # capsys's stderr is not a terminal, like a pipe
    for stream in (captured.out, captured.err):
        assert "\r" not in stream and "\x1b" not in stream
    lines = captured.err.splitlines()
    assert len(lines) == 2, captured.err
    for i, (line, label) in enumerate(zip(lines, ("AMP-bg", "sklearn OMP"), strict=True), 1):
        assert line.startswith(f"[{i}/2] {label}: fit ") and line.endswith(" dB")
        nmse = float(line.split("test NMSE ")[1].removesuffix(" dB"))
        table_row = next(r for r in captured.out.splitlines() if r.startswith(f"| {label} "))
        assert nmse == pytest.approx(float(table_row.split("|")[3]), abs=0.006)


def test_progress_bars_only_on_a_terminal(capsys, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    argv = ["compare", "--methods", "amp-bg", "--no-plot", *(a for a in TINY if a != "--quiet")]
    assert main(argv) == 0
    assert "\r" in term.getvalue()  # tqdm redraws its bar in place
    assert "[1/1]" not in term.getvalue()
    term.seek(0), term.truncate()
    assert main([*argv, "--quiet"]) == 0
    assert term.getvalue() == ""


def test_quick_configuration():
    from sklearn_unfold.cli import DEFAULT_PROBLEM, _build_parser, _resolve_sizes
    from sklearn_unfold.comparison import QUICK_N_VAL, QUICK_PROBLEM, QUICK_STEPS

    top, _ = _build_parser()
    assert _resolve_sizes(top.parse_args(["compare"])) == DEFAULT_PROBLEM
    quick = _resolve_sizes(top.parse_args(["compare", "--quick"]))
    assert quick == dict(QUICK_PROBLEM)
    # the reference problems' ratio M/N = 1/2 at a smaller size, with fewer pairs
    assert 2 * quick["n_measurements"] == quick["n_features"] < DEFAULT_PROBLEM["n_features"]
    assert quick["n_train"] < DEFAULT_PROBLEM["n_train"] and quick["n_test"] < DEFAULT_PROBLEM["n_test"]
    assert _resolve_sizes(top.parse_args(["compare", "--quick", "--n-test", "7"]))["n_test"] == 7

    data = make_comparison_data("giid", 100, 5, random_state=0, n_features=40, n_measurements=20)
    assert METHODS["lasso"].build(data, 0, quick=True).n_val == QUICK_N_VAL < 100
    assert METHODS["amp-bg"].build(data, 0, quick=True).get_params()["max_iter"] == \
        METHODS["amp-bg"].build(data, 0).get_params()["max_iter"]
    pytest.importorskip("sklearn_unfold.estimators.learned")
    for name, full_steps in (("lista", 25), ("lamp", 70), ("ldvamp", 100)):
        full, fast = (METHODS[name].build(data, 0, quick=q).get_params() for q in (False, True))
        assert fast["training"] == "end_to_end" and fast["n_layers"] == full["n_layers"] == 10
        assert fast["max_epochs"] / full["max_epochs"] == pytest.approx(QUICK_STEPS[name] / full_steps)


def test_quick_is_described_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--quick" in text and "N=250, M=125" in text and "smaller, faster run" in text


def test_ofdm_problem_is_described_in_the_help(capsys):
    from sklearn_unfold.channel_comparison import CHANNEL_METHODS

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "ofdm" in text and "--n-pilots" in text and "--snr-db" in text
    assert "ofdm only" in text and "not with ofdm" in text
    for name in CHANNEL_METHODS:
        assert name in text


@pytest.mark.parametrize("argv, message", [
    (["compare", "--problem", "ofdm", "--n-features", "100"], "--n-features"),
    (["compare", "--problem", "giid", "--snr-db", "10"], "--snr-db"),
])
def test_problem_specific_options_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_matplotlib_says_how_to_install(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--methods", "amp-bg", *TINY])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "sklearn-unfold[plot]" in err and "--no-plot" in err


# ----------------------------------------------------------------------------- packaging
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
#: Import names of the distributions whose names differ.
_IMPORT_NAMES = {"scikit-learn": "sklearn", "dask[array,distributed]": "dask"}


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements) -> set[str]:
    import re

    names = {re.split(r"[<>=!~ ]", r, maxsplit=1)[0] for r in requirements}
    return {_IMPORT_NAMES.get(n, n) for n in names}


def test_declared_dependencies_are_what_the_package_imports():
    import ast
    import sys

    project = _project()
    required = _names(project["dependencies"])
    extras = {k: _names(v) for k, v in project["optional-dependencies"].items()}
    imported = set()
    for path in (ROOT / "sklearn_unfold").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"sklearn_unfold"}
    optional = extras["plot"] | extras["distributed"] | {"distributed"}  # dask[distributed]
    assert third_party - required - optional == set()          # everything imported is declared
    assert required - third_party == set()                     # nothing declared goes unused
    assert {"threadpoolctl", "safetensors"} <= required
    assert "matplotlib" not in required
    assert extras["plot"] == {"matplotlib"} and "matplotlib" in extras["test"]
    torch_req = [r for r in project["dependencies"] if r.startswith("torch")]
    assert len(torch_req) == 1 and "<" not in torch_req[0] and "==" not in torch_req[0]  # no cap


def test_readme_quick_start_is_two_commands_and_ci_runs_the_same_tests():
    import re

    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    install_run, test = commands
    assert re.search(r'-e "\.\[plot\]" && sklearn-unfold compare$', install_run)
    assert test.endswith('-e ".[test]" && python -m pytest')
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
