"""Dask: distributed search equals the serial one, lazy and out-of-core prediction, workers."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

import joblib  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402

from sklearn_unfold import AMPRegressor, LAMPRegressor  # noqa: E402
from sklearn_unfold.datasets import make_compressed_sensing  # noqa: E402
from sklearn_unfold.distributed import (  # noqa: E402
    TorchWorkerPlugin,
    configure_workers,
    predict_dask,
    predict_to_npy,
)
from sklearn_unfold.persistence import load, save  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    """One two-process cluster for the whole module (starting one takes seconds).

    Dask's nanny sets its ``pre-spawn-environ`` variables (``OMP_NUM_THREADS=1``,
    ``MALLOC_TRIM_THRESHOLD_`` ...) in this process's own environment before it spawns the
    workers; they are restored afterwards so that later tests (joblib's loky workers size
    their thread budgets from ``OMP_NUM_THREADS``) see the environment they started with.
    """
    import dask

    names = set(dask.config.get("distributed.nanny.pre-spawn-environ")) | {"PYTHONHASHSEED"}
    before = {name: os.environ.get(name) for name in names}
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as c:
            c.wait_for_workers(2)
            yield c
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def data():
    Y, X, A = make_compressed_sensing("giid", 160, n_features=40, n_measurements=20,
                                      random_state=0)
    Yt, Xt, _ = make_compressed_sensing("giid", 90, n_features=40, n_measurements=20, A=A,
                                        random_state=1)
    amp = AMPRegressor(A=A, max_iter=8).fit(Y, X)
    return {"Y": Y, "X": X, "A": A, "Yt": Yt, "Xt": Xt, "amp": amp}


@pytest.fixture(scope="module")
def lamp(data):
    with _torch_threads(1):
        return LAMPRegressor(A=data["A"], n_layers=2, max_epochs=1, batch_size=40,
                             training="end_to_end", device="cpu",
                             random_state=0).fit(data["Y"], data["X"])


class _torch_threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


# ------------------------------------------------------------------------- the core package
@pytest.fixture(scope="module")
def fresh_interpreter():
    """In a new interpreter: the modules ``import sklearn_unfold`` loads, then the error of
    ``import sklearn_unfold.distributed`` when Dask cannot be imported (one subprocess for
    both checks: starting one that imports torch takes seconds)."""
    code = textwrap.dedent("""
        import sys
        import sklearn_unfold, sklearn_unfold.persistence
        print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('dask', 'distributed'):
                    raise ImportError('No module named ' + repr(name))
        sys.meta_path.insert(0, Block())
        try:
            import sklearn_unfold.distributed
        except ImportError as exc:
            print(exc)
        else:
            print('imported without dask')
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    return out.splitlines()


def test_import_sklearn_unfold_does_not_import_dask(fresh_interpreter):
    assert fresh_interpreter[0] == "[]"


def test_missing_dask_says_how_to_install(fresh_interpreter):
    assert 'pip install "sklearn-unfold[distributed]"' in "\n".join(fresh_interpreter[1:])


# ------------------------------------------------------------------------- distributed search
@pytest.mark.parametrize("kind", ["lamp", "amp"])
def test_distributed_grid_search_equals_serial(client, data, kind):
    if kind == "lamp":
        est = LAMPRegressor(A=data["A"], n_layers=2, max_epochs=1, batch_size=40,
                            training="end_to_end", device="cpu", random_state=0)
        grid = {"n_layers": [2, 3], "tied": [True, False]}
    else:
        est = AMPRegressor(A=data["A"], max_iter=6)
        grid = {"damping": [0.7, 1.0], "denoiser": ["soft", "bg"]}
    cv = KFold(2, shuffle=True, random_state=0)
    with joblib.parallel_config(backend="dask"):
        dist = GridSearchCV(est, grid, cv=cv).fit(data["Y"], data["X"])
    # The workers run torch on one thread each (the nanny's OMP_NUM_THREADS=1); the serial
    # search runs on one thread too, so both do the same float operations in the same order:
    # the scores agree to the last bit here. Different thread counts would split torch's
    # reductions differently and change the float32 training trajectory in the last bits.
    with _torch_threads(1):
        serial = GridSearchCV(est, grid, cv=cv).fit(data["Y"], data["X"])
    assert dist.best_params_ == serial.best_params_
    np.testing.assert_allclose(dist.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"], rtol=1e-6, atol=0)
    assert [p for p in dist.cv_results_["params"]] == [p for p in serial.cv_results_["params"]]


def _fit(est, Y, X):
    return est.fit(Y, X)


def test_estimator_fitted_on_a_worker_comes_back_and_saves(client, data, tmp_path):
    est = LAMPRegressor(A=data["A"], n_layers=2, max_epochs=1, batch_size=40,
                        training="end_to_end", device="cpu", random_state=0)
    fitted = client.submit(_fit, est, data["Y"], data["X"], pure=False).result()
    assert fitted is not est and hasattr(fitted, "module_")
    expected = fitted.predict(data["Yt"])
    save(fitted, tmp_path / "lamp.sfu")
    np.testing.assert_array_equal(load(tmp_path / "lamp.sfu").predict(data["Yt"]), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict(data["Yt"]),
                                  expected)


# ------------------------------------------------------------------------- workers
def _torch_threads_in_task():
    return torch.get_num_threads()


def test_configure_workers_sets_torch_threads(client):
    workers = list(client.scheduler_info()["workers"])
    try:
        report = configure_workers(client, 2)
        assert {r["torch_threads"] for r in report.values()} == {2}
        assert client.run(torch.get_num_threads) == {w: 2 for w in workers}
        in_tasks = [client.submit(_torch_threads_in_task, pure=False, workers=[w]).result()
                    for w in workers]
        assert in_tasks == [2, 2]  # the task threads too, not only the worker's main thread
    finally:
        report = configure_workers(client)  # the fair share: CPUs over the 2 task threads
    try:
        share = max(1, len(os.sched_getaffinity(0)) // 2)
    except AttributeError:  # pragma: no cover
        share = max(1, (os.cpu_count() or 1) // 2)
    assert client.run(torch.get_num_threads) == {w: share for w in workers}
    assert [client.submit(_torch_threads_in_task, pure=False, workers=[w]).result()
            for w in workers] == [share, share]


def _pop_cuda_visible_devices():
    return os.environ.pop("CUDA_VISIBLE_DEVICES", None)


def test_configure_workers_gives_each_worker_its_gpu(client):
    # On CPU-only workers CUDA_VISIBLE_DEVICES is only an environment variable: the check is
    # that each worker gets a different one (device "auto" then lands on CUDA device 0, that
    # GPU), not that a GPU is used.
    try:
        report = configure_workers(client, 1, gpus=[3, 5])
        assert sorted(r["cuda_visible_devices"] for r in report.values()) == ["3", "5"]
    finally:
        client.run(_pop_cuda_visible_devices)
        configure_workers(client)


def test_plugin_and_configure_workers_reject_bad_arguments(client):
    with pytest.raises(ValueError, match="threads_per_task must be a positive integer"):
        TorchWorkerPlugin(0)
    with pytest.raises(ValueError, match="threads_per_task"):
        TorchWorkerPlugin(2.5)
    with pytest.raises(ValueError, match="gpus must be a non-empty sequence"):
        TorchWorkerPlugin(gpus="0")
    with pytest.raises(ValueError, match="gpus must be a non-empty sequence"):
        configure_workers(client, gpus=[])
    with pytest.raises(TypeError, match="client must be a dask.distributed Client"):
        configure_workers("tcp://127.0.0.1:8786")


# ------------------------------------------------------------------------- predict_dask
@pytest.mark.parametrize("chunks", [(37, 7), (90, 20)])
def test_predict_dask_equals_predict(client, data, lamp, chunks):
    Y = da.from_array(data["Yt"], chunks=chunks)
    for est, rtol in ((data["amp"], 1e-12), (lamp, 1e-5)):
        lazy = predict_dask(est, Y)
        assert lazy.shape == (90, 40) and lazy.dtype == np.float64
        assert lazy.chunks[1] == (40,) and lazy.chunks[0] == Y.chunks[0]
        # Chunks of other sizes change the matrix products' blocking in the last bits (and
        # LAMP computes in float32): close, not bitwise.
        np.testing.assert_allclose(lazy.compute(), est.predict(data["Yt"]), rtol=rtol,
                                   atol=rtol * 1e-2)


def test_predict_dask_sends_the_estimator_once(data):
    est = data["amp"]
    Y = da.from_array(data["Yt"], chunks=(9, 20))  # 10 blocks
    lazy = predict_dask(est, Y)
    graph = dict(lazy.__dask_graph__())
    holders = [k for k in graph if str(k[0] if isinstance(k, tuple) else k)
               .startswith("unfold-estimator")]
    assert len(holders) == 1
    # The graph holds Y's blocks and one copy of the estimator, not one per block.
    size_y, size_est = len(pickle.dumps(dict(Y.__dask_graph__()))), len(pickle.dumps(est))
    assert len(pickle.dumps(graph)) < size_y + 2 * size_est
    np.testing.assert_allclose(lazy.compute(scheduler="sync"), est.predict(data["Yt"]),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(predict_dask(est, data["Yt"], chunk_size=25).compute(),
                               est.predict(data["Yt"]), rtol=1e-12, atol=1e-14)


@pytest.fixture(scope="module")
def per_sample():
    Y, X, ops = make_compressed_sensing("giid", 80, n_features=30, n_measurements=15,
                                        random_state=0, ensemble=True)
    Yt, _, ops_t = make_compressed_sensing("giid", 50, n_features=30, n_measurements=15,
                                           random_state=1, ensemble=True)
    est = AMPRegressor(max_iter=6).fit(Y, X, operator=ops)
    return est, Yt, ops_t, ops_t.to_dense().numpy()


def test_predict_dask_with_per_sample_operators(client, per_sample):
    est, Yt, ops, dense = per_sample
    expected = est.predict(Yt, operator=ops)
    Y = da.from_array(Yt, chunks=(13, 15))
    op = da.from_array(dense, chunks=(20, 5, 30))  # misaligned: rechunked along with Y
    for operator in (op, dense, ops):
        got = predict_dask(est, Y, operator).compute()
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_predict_dask_rejects_bad_arguments(data, per_sample):
    est, Y = data["amp"], da.from_array(data["Yt"], chunks=(30, 20))
    with pytest.raises(NotFittedError):
        predict_dask(AMPRegressor(A=data["A"]), Y)
    with pytest.raises(TypeError, match="estimator must be a fitted estimator"):
        predict_dask(object(), Y)
    with pytest.raises(ValueError, match="Y must be 2-D"):
        predict_dask(est, da.zeros((4, 20, 2)))
    with pytest.raises(ValueError, match=r"Y has shape \(90, 7\): 7 measurement columns"):
        predict_dask(est, da.zeros((90, 7)))
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        predict_dask(est, Y[Y[:, 0] > 0])
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        predict_dask(est, Y, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size must be a positive integer"):
        predict_dask(est, Y, chunk_size=2.5)
    with pytest.raises(TypeError, match="not a path"):
        predict_dask(est, "measurements.npy")
    ps_est, Yt, ops, dense = per_sample
    with pytest.raises(ValueError, match=r"operator has shape \(49, 15, 30\) but Y has shape "
                                         r"\(50, 15\)"):
        predict_dask(ps_est, Yt, da.from_array(dense[:49]))
    with pytest.raises(ValueError, match="operator must hold one matrix per sample"):
        predict_dask(ps_est, Yt, dense[0])
    with pytest.raises(ValueError, match="per-sample operators"):
        predict_dask(ps_est, Yt, ops.take(slice(0, 10)))
    with pytest.raises(TypeError, match="operator must be a dask array"):
        predict_dask(ps_est, Yt, [1, 2, 3])


# ------------------------------------------------------------------------- predict_to_npy
def test_predict_to_npy_equals_predict(data, tmp_path):
    est = data["amp"]
    expected = est.predict(data["Yt"])
    out = predict_to_npy(est, data["Yt"], tmp_path / "x.npy", chunk_size=32)
    assert isinstance(out, np.memmap) and out.shape == (90, 40) and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)
    with open(tmp_path / "x.npy", "rb") as f:  # a valid .npy file, readable without this package
        assert np.lib.format.read_magic(f) in ((1, 0), (2, 0), (3, 0))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), out)
    np.save(tmp_path / "y.npy", data["Yt"])  # the input as a path, read through a memory map
    out2 = predict_to_npy(est, str(tmp_path / "y.npy"), str(tmp_path / "x2.npy"),
                          chunk_size=90)
    np.testing.assert_array_equal(np.asarray(out2), est.predict(data["Yt"]))


def test_predict_to_npy_with_operators_and_dask_input(client, per_sample, data, tmp_path):
    est, Yt, ops, dense = per_sample
    expected = est.predict(Yt, operator=ops)
    np.save(tmp_path / "ops.npy", dense)
    for operator in (ops, dense, tmp_path / "ops.npy", da.from_array(dense, chunks=(7, 15, 30))):
        out = predict_to_npy(est, Yt, tmp_path / "x.npy", chunk_size=16, operator=operator)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)
    # A Dask array of measurements: computed on the cluster, each worker writing its blocks.
    out = predict_to_npy(est, da.from_array(Yt, chunks=(11, 15)), tmp_path / "xd.npy",
                         chunk_size=16, operator=da.from_array(dense, chunks=(16, 15, 30)))
    np.testing.assert_allclose(np.load(tmp_path / "xd.npy"), expected, rtol=1e-12, atol=1e-14)
    amp = data["amp"]
    out = predict_to_npy(amp, da.from_array(data["Yt"], chunks=(25, 20)), tmp_path / "xa.npy")
    np.testing.assert_allclose(out, amp.predict(data["Yt"]), rtol=1e-12, atol=1e-14)


def test_predict_to_npy_rejects_bad_arguments(data, tmp_path):
    est = data["amp"]
    np.save(tmp_path / "y.npy", data["Yt"])
    with pytest.raises(ValueError, match="is the Y file"):
        predict_to_npy(est, tmp_path / "y.npy", tmp_path / "y.npy")
    with pytest.raises(ValueError, match="does not exist"):
        predict_to_npy(est, tmp_path / "missing.npy", tmp_path / "x.npy")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        predict_to_npy(est, data["Yt"], 3)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        predict_to_npy(est, data["Yt"], tmp_path / "x.npy", chunk_size=-1)
    with pytest.raises(TypeError, match="chunk_size must be a positive integer"):
        predict_to_npy(est, data["Yt"], tmp_path / "x.npy", chunk_size=None)
    with pytest.raises(ValueError, match="Y must be 2-D"):
        predict_to_npy(est, data["Yt"][0], tmp_path / "x.npy")
    with pytest.raises(ValueError, match="20 measurement columns|7 measurement columns"):
        predict_to_npy(est, data["Yt"][:, :7], tmp_path / "x.npy")
    with pytest.raises(ValueError, match=r"operator has shape \(3, 20, 40\) but Y has shape "
                                         r"\(90, 20\)"):
        predict_to_npy(est, data["Yt"], tmp_path / "x.npy", operator=np.zeros((3, 20, 40)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing was written for the rejected calls
        assert not (tmp_path / "x.npy").exists()
