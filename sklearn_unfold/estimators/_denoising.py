"""What LAMP and LDVAMP share about their denoiser: the template, tying, pretraining.

``denoiser`` is a name or any denoiser module (:mod:`sklearn_unfold.denoisers`); the network
copies it into every layer (or shares one copy, ``tie_denoiser=True``). A denoiser without an
analytic starting point (a CNN) is pretrained alone on noisy training signals at the noise levels
the layers of the analytic network see, then unrolled and trained end to end.
"""

from __future__ import annotations

import copy
import math
from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from .._warnings import warn_user
from ..denoisers import DENOISER_NAMES, default_theta, make_denoiser
from ..training import pretrain_denoiser

#: The documentation of the denoiser parameters, shared by LAMP and LDVAMP.
DENOISER_PARAMS_DOC = """
        A module passed here brings its own initial weights: build it after
        ``torch.manual_seed`` for a fit that repeats exactly (a named denoiser is built from
        ``random_state``).
    tie_denoiser : bool, default=False
        Share one denoiser module between all layers instead of giving each layer its own copy
        of ``denoiser`` (every copy starts equal and is trained apart). The rule is the same
        for every denoiser: a shrinkage's ``θ``, an MLP and a CNN alike; ``tied`` governs the
        rest of the layer.
    pretrain : "auto" or bool, default="auto"
        Train the denoiser alone before unrolling it: on the training signals plus Gaussian
        noise at levels drawn log-uniformly over the range the layers of the analytic network
        (the same network with the Bernoulli-Gaussian denoiser) see on the held-out pairs,
        extended four times lower, at ``learning_rate`` with the early-stopping settings of a
        stage (after Metzler et al.'s learned D-AMP), then copy it into every layer.
        ``"auto"`` pretrains denoisers without an analytic starting point (the convolutional
        ones). The record is in ``pretrain_history_``.
    pretrain_epochs : float, default=500
        The most passes over the training signals (each with fresh noise) that pretraining
        takes; a pass costs one evaluation of the denoiser per signal, far less than a pass of
        the unrolled network.
    mixed_precision : bool, default=False
        Run the convolutions of a convolutional denoiser in bfloat16 under ``torch.autocast``
        (meant for GPUs; the message-passing arithmetic stays in ``dtype``)."""


#: How far below the lowest noise level the analytic network reaches pretraining goes: the
#: learned network's last layers see less noise than the analytic one's.
_PRETRAIN_LOW_FACTOR = 4.0
#: The fewest optimiser steps between two checks of pretraining's held-out loss.
_PRETRAIN_MIN_CHECK_STEPS = 50
#: Noise levels in the pretraining grid.
_PRETRAIN_GRID = 256


def _noise_level_grid(pool: torch.Tensor) -> torch.Tensor:
    """Log-uniform noise levels over the range of ``pool``, extended downwards.

    The recorded levels crowd where the analytic network converges; drawn from them, the first
    layers' high noise levels are rare and the denoiser's divergence is least accurate exactly
    where VAMP's first precision updates rely on it. The range is the 0.5 % to 99.5 %
    quantiles of the pool, its lower end divided by ``_PRETRAIN_LOW_FACTOR``.
    """
    pool = pool.double()
    lo, hi = (float(q) for q in torch.quantile(pool[:2**24], pool.new_tensor([0.005, 0.995])))
    # hi ≥ the lower quantile, so the range is never empty
    return torch.exp(torch.linspace(math.log(lo / _PRETRAIN_LOW_FACTOR), math.log(hi),
                                    _PRETRAIN_GRID))


def _nmse_db(X_hat, X) -> float:
    err = (X_hat - X).abs().square().sum()
    return float(10.0 * torch.log10(err / X.abs().square().sum()))


class DenoisingEstimatorMixin:
    """Denoiser handling of the learned estimators whose layers call a denoiser module."""

    _denoiser_constraints: dict = {
        "denoiser": [StrOptions(set(DENOISER_NAMES)), nn.Module],
        "tie_denoiser": ["boolean"],
        "pretrain": [StrOptions({"auto"}), "boolean"],
        "pretrain_epochs": [Interval(Real, 0, None, closed="neither")],
        "mixed_precision": ["boolean"],
    }

    def _init_denoiser_name(self) -> str:
        """The shrinkage of the classical solver the network starts from."""
        return "soft" if isinstance(self.denoiser, str) and self.denoiser == "soft" else "bg"

    def _denoiser_template(self) -> nn.Module:
        """The module every layer starts from (a new one; the parameter is never changed)."""
        if isinstance(self.denoiser, nn.Module):
            template = copy.deepcopy(self.denoiser)
        elif self.denoiser in ("bg", "soft", "mlp"):  # the classical solver's fitted θ
            template = make_denoiser(
                self.denoiser, self.init_estimator_.theta_.detach().cpu().numpy().copy())
        else:
            template = make_denoiser(self.denoiser, default_theta(self.denoiser)
                                     if self.denoiser in ("pwlin", "expo", "spline") else None)
        if self.mixed_precision:
            for sub in template.modules():
                if hasattr(sub, "mixed_precision"):
                    sub.mixed_precision = True
        return template

    def _analytic_template(self) -> nn.Module:
        """The classical solver's shrinkage: the denoiser of the network whose noise levels a
        pretrained denoiser must serve."""
        return make_denoiser(self._init_denoiser_name(),
                             self.init_estimator_.theta_.detach().cpu().numpy().copy())

    def _pretrains(self, module) -> bool:
        if self.pretrain != "auto":
            return bool(self.pretrain)
        first = module.layer_denoiser(0)
        return bool(getattr(first, "pretrain_by_default", False))

    def _pretrain_denoisers(self, module, X_train, validation, fit_op, device, dtype, seed
                            ) -> None:
        """Pretrain the first layer's denoiser and copy it into every layer."""
        self.pretrain_history_ = None
        self.pretrain_noise_levels_ = None
        if not self._pretrains(module):
            return
        Yv, Xv, opv = validation
        reference = self._build_module(device, dtype, fit_op, denoiser=self._analytic_template())
        with torch.no_grad(), reference.recording_noise_levels() as levels:
            reference_db = _nmse_db(reference(Yv, opv)[-1], Xv)
        pool = torch.cat([lv.reshape(-1) for lv in levels])
        pool = pool[torch.isfinite(pool) & (pool > 0)]
        if pool.numel() == 0:
            warn_user("the analytic network reported no finite noise level; the denoiser is not "
                      "pretrained.", UserWarning)
            return
        #: Median noise level of each layer of the analytic network, in the data's units.
        self.pretrain_noise_levels_ = np.array(
            [float(lv.reshape(-1).median()) * self.data_scale_ for lv in levels])
        first = module.layer_denoiser(0)
        steps_per_pass = math.ceil(len(X_train) / min(self.batch_size, len(X_train)))
        self.pretrain_history_ = pretrain_denoiser(
            first, X_train, _noise_level_grid(pool), X_val=Xv,
            max_steps=max(1, math.ceil(self.pretrain_epochs * steps_per_pass)),
            batch_size=self.batch_size, learning_rate=self.learning_rate,
            # a check per pass over the signals (at least 50 steps apart), and at least 5
            # checks of patience: a denoiser keeps improving slowly for many passes, and its
            # divergence matches its error (which VAMP's precisions rely on) only once it is
            # well trained
            eval_every=max(self.eval_every, steps_per_pass, _PRETRAIN_MIN_CHECK_STEPS),
            n_iter_no_change=max(self.n_iter_no_change, 5),
            tol=1.0 - 10.0 ** (-float(self.tol) / 10.0), seed=seed, verbose=self.verbose)
        state = first.state_dict()
        for t in range(1, module.n_layers):
            other = module.layer_denoiser(t)
            if other is not first:
                other.load_state_dict(state)
        module.eval()
        with torch.no_grad():
            start_db = _nmse_db(module(Yv, opv)[-1], Xv)
        if not start_db <= reference_db:
            warn_user(
                f"{type(self).__name__}: with the pretrained denoiser the network starts at a "
                f"validation NMSE of {start_db:.2f} dB, worse than the same network with the "
                f"Bernoulli-Gaussian denoiser ({reference_db:.2f} dB): the denoiser is not yet "
                "good enough to unroll (VAMP in particular takes its divergence for its error, "
                "which holds only for a well-trained denoiser). Raise pretrain_epochs, or lower "
                "learning_rate.", UserWarning)

    def _denoiser_architecture(self) -> dict:
        den = self.denoiser
        if isinstance(den, nn.Module):
            config = den.config() if hasattr(den, "config") else {}
            den = f"{type(den).__module__}.{type(den).__qualname__}{sorted(config.items())}"
        return {"denoiser": den, "tie_denoiser": bool(self.tie_denoiser)}

    def _denoiser_coefficients(self, summary: dict) -> None:
        self.theta_ = summary.get("theta")
        if "threshold" in summary:
            self.thresholds_ = summary["threshold"]
