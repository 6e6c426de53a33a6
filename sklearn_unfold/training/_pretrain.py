"""Training a denoiser alone on noisy signals: the first stage of learned D-AMP and D-VAMP.

A large denoiser (a CNN) has no analytic starting point: unrolled from its identity
initialisation, the network starts far from any solution. Metzler, Mousavi and Baraniuk
("Learned D-AMP", NeurIPS 2017) first train the denoiser alone on signals plus white Gaussian
noise at the noise levels the layers see, then unroll it and train the network end to end.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import Tensor, nn

from .._warnings import warn_user


def _estimate(denoiser: nn.Module, r: Tensor, sigma: Tensor) -> Tensor:
    """The estimate alone (a denoiser with ``estimate`` skips its divergence)."""
    estimate = getattr(denoiser, "estimate", None)
    return estimate(r, sigma) if callable(estimate) else denoiser(r, sigma)[0]


def _noisy(X: Tensor, sigma: Tensor, generator: torch.Generator) -> Tensor:
    """``X + σ z`` with ``z ~ N(0, I)`` (``CN(0, I)``, ``E|z_i|² = 1``, for complex ``X``)."""
    if X.is_complex():
        z = torch.randn((*X.shape, 2), dtype=X.real.dtype, device=X.device, generator=generator)
        return X + sigma * torch.view_as_complex(z) / math.sqrt(2.0)
    z = torch.randn(X.shape, dtype=X.dtype, device=X.device, generator=generator)
    return X + sigma * z


def denoising_loss(denoiser: nn.Module, X: Tensor, sigma: Tensor, generator) -> Tensor:
    r"""``mean_i ‖g(x_i + σ_i z_i) − x_i‖² / (N σ_i²)``: the error in units of the noise, so
    that every noise level weighs the same (1 for the identity, the MMSE ratio at best)."""
    err = _estimate(denoiser, _noisy(X, sigma, generator), sigma) - X
    power = (err.real.square() + err.imag.square()) if err.is_complex() else err.square()
    return (power.mean(dim=-1, keepdim=True) / sigma.square()).mean()


def pretrain_denoiser(denoiser: nn.Module, X: Tensor, noise_levels: Tensor, *,
                      X_val: Tensor | None = None, max_steps: int = 1000, batch_size: int = 256,
                      learning_rate: float = 1e-3, eval_every: int = 20,
                      n_iter_no_change: int = 5, tol: float = 1e-3, seed: int = 0,
                      verbose: int = 0) -> list[dict]:
    r"""Train ``denoiser`` alone to map ``x + σ z`` to ``x`` (Adam, in place).

    Every mini-batch draws signals from ``X``, a noise level per signal from ``noise_levels``
    (the levels the unrolled layers see, pooled) and fresh noise; the loss is
    :func:`denoising_loss`. Every ``eval_every`` steps the same loss on ``X_val`` (with noise
    drawn once) is checked; training stops after ``n_iter_no_change`` checks without a relative
    improvement of ``tol`` and ends on the best checkpoint.

    Parameters
    ----------
    denoiser : torch.nn.Module
        A denoiser (:mod:`sklearn_unfold.denoisers`), trained in place.
    X : Tensor of shape (n, N)
        Training signals (real or complex).
    noise_levels : Tensor of shape (K,)
        The pool of noise levels ``σ`` to draw from.
    X_val : Tensor of shape (n_val, N), optional
        Held-out signals (``X`` itself when omitted).
    max_steps, batch_size, learning_rate, eval_every, n_iter_no_change, tol, seed, verbose
        The budget and the optimiser's settings.

    Returns
    -------
    list of dict
        One record per check: ``step``, ``train_loss`` (mean over the steps since the last
        check) and ``val_loss`` (both in units of the noise variance).
    """
    levels = noise_levels.detach().reshape(-1).to(device=X.device, dtype=X.real.dtype)
    levels = levels[torch.isfinite(levels) & (levels > 0)]
    if levels.numel() == 0:
        raise ValueError("noise_levels holds no positive finite value.")
    gen = torch.Generator(device=X.device)
    gen.manual_seed(int(seed))
    X_val = X if X_val is None else X_val
    sig_val = levels[torch.randint(levels.numel(), (X_val.shape[0], 1), generator=gen,
                                   device=X.device)]
    val_gen_state = gen.get_state()
    params = [p for p in denoiser.parameters() if p.requires_grad]
    if not params:
        return []
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    n = X.shape[0]
    batch = min(int(batch_size), n)
    rng = np.random.RandomState(int(seed) % (2**31))

    def validate() -> float:
        denoiser.eval()
        vgen = torch.Generator(device=X.device)
        vgen.set_state(val_gen_state)  # the same noise at every check
        with torch.no_grad():
            return float(denoising_loss(denoiser, X_val, sig_val, vgen))

    best = validate()
    best_state = copy.deepcopy(denoiser.state_dict())
    history = [{"step": 0, "train_loss": float("nan"), "val_loss": best}]
    stale, running, count, order, pos = 0, 0.0, 0, rng.permutation(n), 0
    for step in range(1, int(max_steps) + 1):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        idx = torch.as_tensor(order[pos:pos + batch], device=X.device)
        pos += batch
        sig = levels[torch.randint(levels.numel(), (batch, 1), generator=gen, device=X.device)]
        denoiser.train()
        optimizer.zero_grad(set_to_none=True)
        loss = denoising_loss(denoiser, X[idx], sig, gen)
        if not torch.isfinite(loss):
            continue
        loss.backward()
        optimizer.step()
        running, count = running + float(loss.detach()), count + 1
        if step % eval_every and step != max_steps:
            continue
        val = validate()
        history.append({"step": step, "train_loss": running / max(count, 1), "val_loss": val})
        running, count = 0.0, 0
        if verbose:
            print(f"[pretrain] step {step}: train {history[-1]['train_loss']:.4f}, "
                  f"val {val:.4f} (noise variance units)", flush=True)
        if val < best * (1.0 - tol):
            best, stale = val, 0
            best_state = copy.deepcopy(denoiser.state_dict())
        else:
            stale += 1
            if stale >= n_iter_no_change:
                break
    denoiser.load_state_dict(best_state)
    denoiser.eval()
    if best >= history[0]["val_loss"] and len(history) > 1:
        warn_user("pretraining the denoiser did not lower its held-out error; the network "
                  "starts from the untrained denoiser.", UserWarning)
    return history
