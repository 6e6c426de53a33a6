"""Shared fixtures: the reference problems at full size (N=500, M=250), generated once."""

import numpy as np
import pytest
import torch

from sklearn_unfold.datasets import make_compressed_sensing


@pytest.fixture(scope="session")
def giid():
    """giid at 40 dB: training pairs, a fresh test set on the same A, and σw²."""
    Y, X, A, noise_var = make_compressed_sensing("giid", 300, random_state=0,
                                                 return_noise_var=True)
    Yt, Xt, _ = make_compressed_sensing("giid", 300, A=A, random_state=1)
    return {"Y": Y, "X": X, "A": A, "Yt": Yt, "Xt": Xt, "noise_var": noise_var}


@pytest.fixture(scope="session")
def kappa15():
    Y, X, A, noise_var = make_compressed_sensing("kappa15", 300, random_state=0,
                                                 return_noise_var=True)
    Yt, Xt, _ = make_compressed_sensing("kappa15", 300, A=A, random_state=1)
    return {"Y": Y, "X": X, "A": A, "Yt": Yt, "Xt": Xt, "noise_var": noise_var}


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny problems run fastest, and steadiest on a shared machine, on one torch thread.

    Modules of small-network tests opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)
