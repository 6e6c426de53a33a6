"""Saving and loading estimators with denoiser modules: the safe format, pickle, and the weights of
networks saved before denoisers were modules."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import test_denoiser_modules as base
import torch

from sklearn_unfold import AMPRegressor, LAMPRegressor, LDVAMPRegressor
from sklearn_unfold.denoisers import ConvDenoiser1d, DnCNN, bg_theta
from sklearn_unfold.networks import LAMPNetwork, LDVAMPNetwork
from sklearn_unfold.operators import as_operator
from sklearn_unfold.persistence import load, save

pytestmark = base.pytestmark
small, tiny, UserBG, _conv = base.small, base.tiny, base.UserBG, base._conv
_randomize_last, F64 = base._randomize_last, base.F64


def _format_version(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("params.json"))["format_version"]


def _round_trips(est, Y, tmp_path):
    expected = est.predict(Y)
    save(est, tmp_path / "model.sfu")
    assert _format_version(tmp_path / "model.sfu") == 4
    loaded = load(tmp_path / "model.sfu")
    np.testing.assert_array_equal(loaded.predict(Y), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(Y), expected)
    return loaded


@pytest.mark.parametrize("case", ["ldvamp-conv1d", "lamp-dncnn"])
def test_learned_conv_estimators_round_trip(tiny, tmp_path, case):
    Y, X, A = tiny
    if case == "ldvamp-conv1d":
        est = LDVAMPRegressor(A=A, denoiser=ConvDenoiser1d(width=4, depth=2), n_layers=2,
                              max_epochs=1, random_state=0)
        kind = ConvDenoiser1d
    else:
        est = LAMPRegressor(A=A, denoiser=DnCNN((4, 4), width=4, depth=2), n_layers=2,
                            max_epochs=1, random_state=0)
        kind = DnCNN
    est.fit(Y, X)
    loaded = _round_trips(est, Y, tmp_path)
    for t in range(2):
        got, ref = loaded.module_.layer_denoiser(t), est.module_.layer_denoiser(t)
        assert type(got) is kind and got.config() == ref.config()
        for key, value in ref.state_dict().items():
            assert torch.equal(got.state_dict()[key], value)
    np.testing.assert_equal(loaded.pretrain_history_, est.pretrain_history_)  # (nan == nan)


def test_amp_with_a_fixed_conv_denoiser_round_trips(tiny, tmp_path):
    Y, X, A = tiny
    torch.manual_seed(0)
    den = ConvDenoiser1d(width=4, depth=2, divergence="mc", probe_seed=3)
    _randomize_last(den.body[-1], std=0.05, bias=0.0)
    est = AMPRegressor(A=A, denoiser=den, max_iter=5).fit(Y, X)
    loaded = _round_trips(est, Y, tmp_path)
    assert type(loaded.denoiser_) is ConvDenoiser1d
    assert loaded.denoiser_.config() == den.config()
    assert not loaded.denoiser_.training


@pytest.mark.parametrize("cls", [AMPRegressor, LAMPRegressor])
def test_user_module_is_refused_by_save_but_pickles(tiny, tmp_path, cls):
    Y, X, A = tiny
    kw = {"max_iter": 5} if cls is AMPRegressor else {"n_layers": 2, "max_epochs": 1}
    est = cls(A=A, denoiser=UserBG(0.1, 1.0), **kw).fit(Y, X)
    with pytest.raises(TypeError, match="pickle"):
        save(est, tmp_path / "user.sfu")
    assert not (tmp_path / "user.sfu").exists()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(Y), est.predict(Y))


# --------------------------------------------------------------------------- pretraining


def _perturb(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _load_legacy(fresh, old_state, reference):
    upgraded = fresh.upgrade_state_dict(old_state)
    assert set(upgraded) == set(reference.state_dict())
    fresh.load_state_dict(upgraded, strict=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_upgrade_state_dict_lamp_bg(small):
    Y, _, A = small
    net = LAMPNetwork.from_amp(A, "bg", bg_theta(0.1, 1.0), 3, dtype=F64)
    _perturb(net, 0)  # every layer its own θ
    old = {}
    for key, value in net.state_dict().items():
        if key.startswith("denoisers."):
            t = key.split(".")[1]
            assert key == f"denoisers.{t}.theta"
            old[f"theta.{t}"] = value.clone()
        else:
            old[key] = value.clone()
    fresh = LAMPNetwork.from_amp(A, "bg", bg_theta(0.3, 2.0), 3, dtype=F64)
    _load_legacy(fresh, old, net)
    op = as_operator(A, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(torch.as_tensor(Y[:5]), op)[-1],
                                   net(torch.as_tensor(Y[:5]), op)[-1], rtol=0, atol=0)
    # a state dict in the new layout passes through unchanged
    assert fresh.upgrade_state_dict(net.state_dict()).keys() == net.state_dict().keys()


def test_upgrade_state_dict_ldvamp_mlp(small):
    _, _, A = small
    net = LDVAMPNetwork.from_vamp(A, "mlp", bg_theta(0.1, 1.0), 1e-3, 0.1, 3, dtype=F64)
    _perturb(net, 1)
    old = {}
    for key, value in net.state_dict().items():
        parts = key.split(".")
        if parts[0] != "denoisers":
            old[key] = value.clone()
        elif parts[2] == "shrinkage":
            old[f"theta.{parts[1]}"] = value.clone()
        else:
            assert parts[2] == "mlp"
            old[".".join(["mlps", parts[1], *parts[3:]])] = value.clone()
    assert any(k.startswith("mlps.2.net.") for k in old)
    fresh = LDVAMPNetwork.from_vamp(A, "mlp", bg_theta(0.3, 2.0), 1e-3, 0.1, 3, dtype=F64)
    _load_legacy(fresh, old, net)
    # one shared MLP in the old layout (mlps.0 only) serves every layer
    shared = {k: v for k, v in old.items() if not k.startswith(("mlps.1.", "mlps.2."))}
    fresh = LDVAMPNetwork.from_vamp(A, "mlp", bg_theta(0.3, 2.0), 1e-3, 0.1, 3, dtype=F64)
    upgraded = fresh.upgrade_state_dict(shared)
    assert set(upgraded) == set(net.state_dict())
    fresh.load_state_dict(upgraded, strict=True)
    for t in range(3):
        for key, value in net.layer_denoiser(0).mlp.state_dict().items():
            assert torch.equal(fresh.layer_denoiser(t).mlp.state_dict()[key], value)
        assert torch.equal(fresh.layer_denoiser(t).shrinkage.theta,
                           net.layer_denoiser(t).shrinkage.theta)
