"""Non-separable (convolutional) denoisers against per-entry ones, on structured signals.

Four measurements, each a table of test NMSE (dB) and fit times:

* ``clustered``: real clustered sparse signals (N = 128, M = 32 Gaussian with unit-norm columns,
  1-3 clusters of 3-8 consecutive non-zeros decaying as e^{-l/2}, 20 dB, 20,000 training and
  2,000 test pairs): VAMP-bg, LDVAMP-bg and LDVAMP with a 1-D convolutional denoiser at 10
  layers, learned D-AMP (LAMP with the same denoiser), a multi-layer perceptron regressor and
  the support oracle;
* ``digits``: scikit-learn's 8x8 digits in [0, 1], a Gaussian A with M = 32, 30 dB, 1,500
  training and 297 test images: ridge, an MLP regressor with early stopping (at least as many
  parameters as the network), RBF kernel ridge tuned by cross-validation, VAMP-bg, LDVAMP-mlp,
  LDVAMP and LAMP with a DnCNN;
* ``ofdm``: pilot-based OFDM channel estimation (K = 1024, L = 128, P = 32 random pilots,
  20 dB, 20,000 training and 2,000 test channels): complex VAMP-bg (damped), LDVAMP-bg and
  LDVAMP with a 1-D convolutional denoiser over the delay taps, the support oracle;
* ``se``: plug-in D-AMP with a fixed convolutional denoiser (pretrained on Bernoulli-Gaussian
  signals of 2,000 entries) on the giid problem (N = 8000, M = 4000), against its state evolution
  ``τ_{t+1} = σw² + (N/M) E‖D(x + √τ_t z) − x‖²/N`` (Monte Carlo over fresh signals).

Run ``python benchmarks/denoisers.py --problems clustered digits ofdm se``. Every learned
network uses ``random_state=0``; ``--threads`` sets torch's (and BLAS's) thread count.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import time
import warnings

import numpy as np
import torch


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fit(name, est, Ytr, Xtr, Yte, Xte, rows, **fit_kw):
    from sklearn_unfold import nmse_db

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(Ytr, Xtr, **fit_kw)
        pred = est.predict(Yte)
    seconds = time.perf_counter() - t0
    rows.append((name, nmse_db(Xte, pred), seconds))
    print(f"  {name:42s} {rows[-1][1]:8.2f} dB  {seconds:8.1f} s", flush=True)
    # the NMSE of a test set is a ratio of sums: a few diverged signals can dominate it
    per_signal = 10 * np.log10(np.sum(np.abs(pred - Xte) ** 2, axis=1)
                               / np.maximum(np.sum(np.abs(Xte) ** 2, axis=1), 1e-300))
    print(f"    (per-signal NMSE: median {np.median(per_signal):.2f} dB, worst "
          f"{per_signal.max():.2f} dB, {int(np.sum(per_signal > 0))} of {len(Xte)} above 0 dB)",
          flush=True)
    history = getattr(est, "history_", None)
    if history:  # a learned network: where training started (validation) and where it ended
        start = history[0]["val_nmse_db"]
        best = min(h["val_nmse_db"] for h in history)
        pre = getattr(est, "pretrain_history_", None)
        pre = f", pretraining {pre[-1]['step']} steps" if pre else ""
        print(f"    (validation NMSE {start:.2f} dB at the start of training, {best:.2f} dB at "
              f"its best{pre})", flush=True)
    return est


def _table(title: str, rows, oracle_db: float | None = None) -> None:
    print(f"\n{title}")
    print(f"  {'method':42s} {'NMSE dB':>8s}  {'fit s':>8s}" + ("  gap to oracle" if oracle_db else ""))
    for name, db, sec in rows:
        gap = f"  {db - oracle_db:+8.2f}" if oracle_db is not None else ""
        print(f"  {name:42s} {db:8.2f}  {sec:8.1f}{gap}")


def _conv1d(args):
    from sklearn_unfold.denoisers import ConvDenoiser1d

    torch.manual_seed(0)  # a module's initial weights are its own: seed them for a repeatable run
    return ConvDenoiser1d(depth=args.depth, width=args.width, kernel_size=3)


def clustered(args) -> None:
    from sklearn.neural_network import MLPRegressor

    from sklearn_unfold import LAMPRegressor, LDVAMPRegressor, VAMPRegressor, nmse_db
    from sklearn_unfold.channels import support_oracle
    from sklearn_unfold.datasets import make_clustered_sparse

    n_train = args.n_train
    Y, X, A = make_clustered_sparse(n_train + 2000, random_state=0)
    Ytr, Xtr, Yte, Xte = Y[:n_train], X[:n_train], Y[n_train:], X[n_train:]
    print(f"clustered sparse, N=128, M=32, 20 dB, {n_train} training pairs")
    rows: list = []
    oracle = nmse_db(Xte, support_oracle(Yte, A, Xte != 0))
    _fit("VAMP-bg (50 iterations)", VAMPRegressor(A=A), Ytr, Xtr, Yte, Xte, rows)
    common = dict(A=A, n_layers=args.layers, random_state=0, max_epochs=args.epochs)
    _fit(f"LDVAMP-bg, {args.layers} layers (default training)",
         LDVAMPRegressor(A=A, n_layers=args.layers, random_state=0), Ytr, Xtr, Yte, Xte, rows)
    if not args.baselines_only:
        _fit(f"LDVAMP-conv1d, {args.layers} layers, damping 0.8", LDVAMPRegressor(
            denoiser=_conv1d(args), tie_denoiser=True, damping=0.8, **common),
            Ytr, Xtr, Yte, Xte, rows)
    if not (args.skip_lamp or args.baselines_only):
        _fit(f"learned D-AMP (LAMP-conv1d), {args.layers} layers", LAMPRegressor(
            denoiser=_conv1d(args), tie_denoiser=True, **common), Ytr, Xtr, Yte, Xte, rows)
    _fit("MLP regressor (2x500, early stopping)", MLPRegressor(
        hidden_layer_sizes=(500, 500), early_stopping=True, max_iter=200, random_state=0),
        Ytr, Xtr, Yte, Xte, rows)
    rows.append(("support oracle (least squares on the taps)", oracle, 0.0))
    _table(f"clustered sparse signals, {n_train} pairs", rows, oracle)


def digits(args) -> None:
    from sklearn.datasets import load_digits
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.neural_network import MLPRegressor

    from sklearn_unfold import LAMPRegressor, LDVAMPRegressor, VAMPRegressor
    from sklearn_unfold.denoisers import DnCNN
    from sklearn_unfold.operators import gaussian_matrix

    rng = np.random.RandomState(0)
    X = load_digits().data / 16.0
    X = X[rng.permutation(len(X))]
    A = gaussian_matrix(32, 64, random_state=0)
    clean = X @ A.T
    noise_var = np.mean(clean**2) * 10 ** (-30 / 10)
    Y = clean + np.sqrt(noise_var) * rng.standard_normal(clean.shape)
    Ytr, Xtr, Yte, Xte = Y[:1500], X[:1500], Y[1500:], X[1500:]
    print("digits: 8x8 in [0, 1], M=32 Gaussian, 30 dB, 1500 training / 297 test images")
    rows: list = []
    _fit("ridge regression (alpha=1e-3)", Ridge(alpha=1e-3), Ytr, Xtr, Yte, Xte, rows)
    grid = {"alpha": [1e-3, 1e-2, 1e-1], "gamma": [0.01, 0.03, 0.1, 0.3]}
    _fit("RBF kernel ridge (alpha, gamma by 5-fold CV)",
         GridSearchCV(KernelRidge(kernel="rbf"), grid, cv=5), Ytr, Xtr, Yte, Xte, rows)
    _fit("VAMP-bg (6 iterations)", VAMPRegressor(A=A, max_iter=6), Ytr, Xtr, Yte, Xte, rows)
    common = dict(A=A, n_layers=args.digit_layers, random_state=0, batch_size=250,
                  max_epochs=args.digit_epochs)
    _fit(f"LDVAMP-mlp, {args.digit_layers} layers", LDVAMPRegressor(denoiser="mlp", **common),
         Ytr, Xtr, Yte, Xte, rows)

    def dncnn():
        torch.manual_seed(0)  # the template's initial weights: seeded for a repeatable run
        return DnCNN((8, 8), depth=args.depth, width=args.width, divergence=args.digit_divergence)

    # the network's parameters: the shared DnCNN and three scalars per layer
    n_params = sum(p.numel() for p in dncnn().parameters()) + 3 * args.digit_layers
    if not args.baselines_only:
        ld = _fit(f"LDVAMP-DnCNN, {args.digit_layers} layers", LDVAMPRegressor(
            denoiser=dncnn(), tie_denoiser=True, **common), Ytr, Xtr, Yte, Xte, rows)
        n_params = sum(p.numel() for p in ld.module_.parameters())
    if not (args.skip_lamp or args.baselines_only):
        _fit(f"learned D-AMP (LAMP-DnCNN), {args.digit_layers} layers", LAMPRegressor(
            denoiser=dncnn(), tie_denoiser=True, **common), Ytr, Xtr, Yte, Xte, rows)
    # an MLP from measurements to images with at least as many parameters as LDVAMP-DnCNN
    hidden = max(64, math.ceil((n_params - 64) / (32 + 64 + 1)))
    for width in (hidden, 2 * hidden):
        mlp = MLPRegressor(hidden_layer_sizes=(width,), early_stopping=True, max_iter=2000,
                           random_state=0)
        _fit(f"MLP regressor ({width} hidden, early stopping)", mlp, Ytr, Xtr, Yte, Xte, rows)
        count = sum(w.size for w in mlp.coefs_) + sum(b.size for b in mlp.intercepts_)
        print(f"    ({count} parameters; LDVAMP-DnCNN has {n_params})")
    _table("digits", rows)


def ofdm(args) -> None:
    from sklearn_unfold import LDVAMPRegressor, VAMPRegressor, nmse_db
    from sklearn_unfold.channels import make_ofdm_channel_estimation, support_oracle

    n_train = args.n_train
    Y, X, A = make_ofdm_channel_estimation(n_train + 2000, n_pilots=32, snr_db=20.0,
                                           random_state=0)
    Ytr, Xtr, Yte, Xte = Y[:n_train], X[:n_train], Y[n_train:], X[n_train:]
    print(f"OFDM channels, K=1024, L=128, P=32, 20 dB, {n_train} training channels")
    rows: list = []
    oracle = nmse_db(Xte, support_oracle(Yte, A, Xte != 0))
    _fit("complex VAMP-bg (30 iterations, damping 0.8)",
         VAMPRegressor(A=A, max_iter=30, damping=0.8), Ytr, Xtr, Yte, Xte, rows)
    common = dict(A=A, n_layers=args.layers, random_state=0, damping=0.8,
                  max_epochs=args.epochs)
    _fit(f"LDVAMP-bg, {args.layers} layers (default training)",
         LDVAMPRegressor(A=A, n_layers=args.layers, random_state=0, damping=0.8),
         Ytr, Xtr, Yte, Xte, rows)
    _fit(f"LDVAMP-conv1d, {args.layers} layers", LDVAMPRegressor(
        denoiser=_conv1d(args), tie_denoiser=True, **common), Ytr, Xtr, Yte, Xte, rows)
    rows.append(("support oracle", oracle, 0.0))
    _table(f"OFDM channels, P=32, 20 dB, {n_train} channels", rows, oracle)


def state_evolution(args) -> None:
    from sklearn_unfold import AMPRegressor
    from sklearn_unfold.datasets import make_compressed_sensing
    from sklearn_unfold.denoisers import ConvDenoiser1d
    from sklearn_unfold.training import pretrain_denoiser

    p = 0.1
    # the denoiser is convolutional: trained on signals of 2,000 entries, it runs on any length
    _, Xtr, _ = make_compressed_sensing("giid", 2000, n_features=2000, n_measurements=1000,
                                        random_state=0)
    N = args.se_n
    M = N // 2
    Y, X, A = make_compressed_sensing("giid", 1100, n_features=N, n_measurements=M,
                                      random_state=1)
    Ytr, Xtr_big, Yte, Xte = Y[:1000], X[:1000], Y[1000:], X[1000:]
    noise_var = float(np.mean((Ytr - Xtr_big @ A.T) ** 2))
    den = ConvDenoiser1d(depth=args.depth, width=args.width)
    levels = torch.exp(torch.linspace(math.log(0.01), math.log(2.0), 64))
    t0 = time.perf_counter()
    history = pretrain_denoiser(den, torch.as_tensor(Xtr[:1800], dtype=torch.float32), levels,
                                X_val=torch.as_tensor(Xtr[1800:], dtype=torch.float32),
                                max_steps=args.se_steps, batch_size=64, learning_rate=1e-3)
    print(f"pretrained the conv denoiser in {time.perf_counter() - t0:.0f} s "
          f"(held-out loss {history[0]['val_loss']:.3f} -> {min(h['val_loss'] for h in history):.3f})")
    den.eval()
    gen = torch.Generator().manual_seed(1)
    Xs = torch.as_tensor(Xtr[:1000], dtype=torch.float32)
    energy = float(np.mean(Xtr[:1000] ** 2))
    tau = noise_var + (N / M) * energy
    predicted = []
    with torch.no_grad():
        for _ in range(args.se_iters):
            sigma = torch.full((Xs.shape[0], 1), math.sqrt(tau))
            r = Xs + sigma * torch.randn(Xs.shape, generator=gen)
            mse = float(((den.estimate(r, sigma) - Xs) ** 2).mean())
            predicted.append(10 * np.log10(mse / energy))
            tau = noise_var + (N / M) * mse
    empirical = {}
    for divergence in ("exact", "mc"):
        den.divergence = divergence
        amp = AMPRegressor(A=A, denoiser=den, max_iter=args.se_iters, tol=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            amp.fit(Ytr, Xtr_big)
            empirical[divergence] = [10 * np.log10(np.sum((x - Xte) ** 2) / np.sum(Xte**2))
                                     for x in amp.staged_predict(Yte)]
    print(f"\nplug-in D-AMP (fixed pretrained conv1d), giid N={N}, M={M}, p={p}, "
          f"{len(Yte)} test signals; state evolution over {len(Xs)} signals")
    print(f"  {'iteration':>9s} {'SE dB':>8s} {'exact div':>10s} {'gap':>6s} {'1-probe MC':>11s} "
          f"{'gap':>6s}")
    for t, s_db in enumerate(predicted):
        e, m = empirical["exact"][t], empirical["mc"][t]
        print(f"  {t + 1:9d} {s_db:8.2f} {e:10.2f} {e - s_db:+6.2f} {m:11.2f} {m - s_db:+6.2f}")
    for divergence, curve in empirical.items():
        gap = max(abs(e - s_db) for e, s_db in zip(curve, predicted, strict=True))
        print(f"  largest |gap| with the {divergence} divergence: {gap:.2f} dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=["clustered", "digits", "ofdm", "se"],
                        choices=["clustered", "digits", "ofdm", "se"])
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--epochs", type=float, default=3.0,
                        help="max_epochs of each training stage of the conv networks")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--digit-layers", type=int, default=6)
    parser.add_argument("--digit-epochs", type=float, default=20.0)
    parser.add_argument("--digit-divergence", default="auto", choices=["auto", "exact", "mc"])
    parser.add_argument("--se-steps", type=int, default=600)
    parser.add_argument("--se-iters", type=int, default=12)
    parser.add_argument("--se-n", type=int, default=8000,
                        help="signal length of the D-AMP run (M = N/2)")
    parser.add_argument("--skip-lamp", action="store_true")
    parser.add_argument("--baselines-only", action="store_true",
                        help="skip the networks with convolutional denoisers")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"sklearn-unfold commit {_commit()}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    runs = {"clustered": clustered, "digits": digits, "ofdm": ofdm, "se": state_evolution}
    for problem in args.problems:
        runs[problem](args)


if __name__ == "__main__":
    main()
