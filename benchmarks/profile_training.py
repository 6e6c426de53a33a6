"""Where the training time of a learned estimator goes: one configuration, profiled.

Trains one configuration of ``benchmarks/learned.py`` (same problem, same defaults, same
``--set`` overrides) with a :class:`~sklearn_unfold.training.Trainer` subclass that times its
parts, optionally under :mod:`cProfile`, and prints:

* the fit's wall time split into: the analytic initialisation (classical solver, network
  build), calibration draws and fits, mini-batch synthesis, the training steps (forward, loss,
  backward, finiteness checks, optimiser step), the validation checks (their count, the
  validation size, their time), checkpoint snapshots and restores, and the rest (the Python
  overhead of the loop: progress, history records, callbacks, optimiser construction);
* one line per stage: kind, depth, optimiser steps, validation checks, how it stopped, its best
  validation NMSE and its wall time; totals per depth;
* the test NMSE (1,000 fresh pairs, as ``benchmarks/learned.py``);
* with cProfile, the functions with the most own time (``tottime``).

Usage::

    python benchmarks/profile_training.py lamp10
    python benchmarks/profile_training.py ldvamp10-kappa15 --set training=end_to_end
    python benchmarks/profile_training.py lista16-prior --set n_layers=6 --no-cprofile

The timers synchronise CUDA around each timed part when training on a GPU (which slows it a
little); on the CPU they add a few microseconds per step.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import math
import pstats
import time
from collections import defaultdict
from pathlib import Path

import torch

from sklearn_unfold import nmse_db
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.estimators._learned_base import validation_size
from sklearn_unfold.training import LRSchedule, Optimizer, Trainer


def _load_configs():
    """``CONFIGS`` of ``benchmarks/learned.py`` (next to this file)."""
    path = Path(__file__).with_name("learned.py")
    spec = importlib.util.spec_from_file_location("_learned_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIGS


class _Clock:
    """Accumulated wall time per named part (CUDA synchronised when on a GPU)."""

    def __init__(self, cuda: bool):
        self.total = defaultdict(float)
        self.count = defaultdict(int)
        self.cuda = cuda

    def time(self, name):
        clock = self

        class _Ctx:
            def __enter__(self):
                if clock.cuda:
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if clock.cuda:
                    torch.cuda.synchronize()
                clock.total[name] += time.perf_counter() - self.t0
                clock.count[name] += 1

        return _Ctx()


def timed_trainer_class(clock: _Clock, stage_log: list):
    """A :class:`Trainer` whose parts report to ``clock`` (same behaviour as the original)."""

    class TimedTrainer(Trainer):
        def fit(self, batches, validation, **kwargs):
            def timed_batches(n_samples=None):
                with clock.time("batches" if n_samples is None else "calibration draw"):
                    return batches(n_samples)

            timed_batches.batch_size = getattr(batches, "batch_size", None)
            self.n_validation_ = int(validation[0].shape[0])
            with clock.time("trainer.fit"):
                return super().fit(timed_batches, validation, **kwargs)

        def _fit_stage(self, stage):
            evals0 = clock.count["validation"]
            t0 = time.perf_counter()
            out = super()._fit_stage(stage)
            record = dict(self.stages_[-1])
            record["evals"] = clock.count["validation"] - evals0
            record["wall_s"] = time.perf_counter() - t0
            stage_log.append(record)
            return out

        def _calibrate_for(self, stage):
            with clock.time("calibration (total)"):
                return super()._calibrate_for(stage)

        def _validate_db(self):
            with clock.time("validation"):
                return super()._validate_db()

        def _snapshot(self):
            with clock.time("snapshot"):
                return super()._snapshot()

        def _restore(self, state):
            with clock.time("restore"):
                return super()._restore(state)

        def _new_optimizer(self, stage):
            with clock.time("optimizer construction"):
                return super()._new_optimizer(stage)

        def _train_step(self, optimizer, Y, X, op, stage):
            # the parent's step, split into its parts (same operations, same order)
            with clock.time("step: zero_grad+train()"):
                self.module.train()
                optimizer.zero_grad(set_to_none=True)
            with clock.time("step: forward"):
                outputs = self.module(Y, op)
            with clock.time("step: loss"):
                loss = self._loss(outputs, X, stage)
                finite = bool(torch.isfinite(loss))
            if not finite:
                return float("nan")
            with clock.time("step: backward"):
                loss.backward()
            with clock.time("step: grad finiteness check"):
                bad = any(p.grad is not None and not torch.isfinite(p.grad).all()
                          for p in stage.params)
            if bad:
                return float("nan")
            with clock.time("step: optimizer.step"):
                optimizer.step()
            with clock.time("step: loss.item"):
                return float(loss.detach())

    return TimedTrainer


def main(argv=None):
    configs = _load_configs()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", choices=list(configs))
    parser.add_argument("--set", nargs="*", default=[], metavar="PARAM=VALUE",
                        help="override estimator parameters, e.g. --set training=end_to_end")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cprofile", action="store_true", help="timers only")
    parser.add_argument("--top", type=int, default=25, help="cProfile rows to print")
    parser.add_argument("--stages", action="store_true", help="print every stage, not a summary")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True) before training (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal:
        print(f"flush denormal: {torch.set_flush_denormal(True)}")
    cls, problem, kwargs, _target, _refs = configs[args.config]
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            kwargs[key] = eval(value, {"torch": torch, "LRSchedule": LRSchedule,  # noqa: S307
                                       "Optimizer": Optimizer})  # command-line literals
        except (NameError, SyntaxError):
            kwargs[key] = value
    Y, X, A = make_compressed_sensing(problem, args.n_train, random_state=args.seed)
    Yt, Xt, _ = make_compressed_sensing(problem, args.n_test, A=A, random_state=args.seed + 1)
    est = cls(A=A, device=args.device, random_state=args.seed, **kwargs)
    clock, stage_log = _Clock(cuda=torch.device(args.device).type == "cuda"), []
    est._trainer_class = timed_trainer_class(clock, stage_log)
    prof = None if args.no_cprofile else cProfile.Profile()
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    est.fit(Y, X)
    if prof is not None:
        prof.disable()
    fit_s = time.perf_counter() - t0
    test_db = nmse_db(Xt, est.predict(Yt))

    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    print(f"== {args.config}: {cls.__name__}({shown}) on {problem}, {args.n_train} pairs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cProfile {'off' if prof is None else 'on'}")
    steps = sum(s["steps"] for s in est.stages_)
    evals = len(est.history_)
    print(f"fit wall time {fit_s:.1f} s; test NMSE {test_db:.2f} dB; {steps} optimiser steps, "
          f"{evals} validation checks, {len(est.stages_)} stages; batch_size {est.batch_size}, "
          f"eval_every {est.eval_every}, dtype {est.dtype}")

    T = clock.total
    trainer_s = T["trainer.fit"]
    step_parts = {k: v for k, v in T.items() if k.startswith("step: ")}
    step_s = sum(step_parts.values())
    cal_s = T["calibration (total)"]
    accounted = (step_s + T["batches"] + T["validation"] + T["snapshot"] + T["restore"]
                 + cal_s + T["optimizer construction"])
    rows = [
        ("analytic init (classical fit, network build, data prep)", fit_s - trainer_s, None),
        ("calibration (draw + per-layer fit)", cal_s, clock.count["calibration (total)"]),
        ("  of which the calibration draws", T["calibration draw"],
         clock.count["calibration draw"]),
        ("mini-batch synthesis / sampling", T["batches"], clock.count["batches"]),
        ("training steps (all parts)", step_s, clock.count["step: forward"]),
        *[(f"  {k[6:]}", v, clock.count[k]) for k, v in step_parts.items()],
        ("validation checks", T["validation"], clock.count["validation"]),
        ("checkpoint snapshots", T["snapshot"], clock.count["snapshot"]),
        ("checkpoint restores", T["restore"], clock.count["restore"]),
        ("optimiser construction", T["optimizer construction"],
         clock.count["optimizer construction"]),
        ("rest of the loop (progress, records, Python)", trainer_s - accounted, None),
    ]
    print(f"\n{'part':<58} {'s':>8} {'%fit':>6} {'calls':>7} {'ms/call':>8}")
    for name, s, n in rows:
        per = f"{1e3 * s / n:8.2f}" if n else f"{'':>8}"
        print(f"{name:<58} {s:8.2f} {100 * s / fit_s:6.1f} {n if n is not None else '':>7} {per}")
    n_val = validation_size(est.validation_fraction, args.n_train)
    print(f"validation set: {n_val} samples, chunks of {est.eval_batch_size or max(est.batch_size, 1024)}")

    print(f"\n{'#':>3} {'stage':<10} {'layer':>5} {'steps':>6} {'evals':>6} {'stop':<10} "
          f"{'val dB':>8} {'lr':>9} {'wall s':>7}")
    per_layer = defaultdict(lambda: [0, 0, 0.0, 0])
    for i, s in enumerate(stage_log):
        agg = per_layer[s["layer"]]
        agg[0] += s["steps"]
        agg[1] += s["evals"]
        agg[2] += s["wall_s"]
        agg[3] += 1
        if args.stages or len(stage_log) <= 12:
            print(f"{i:>3} {s['stage']:<10} {s['layer']:>5} {s['steps']:>6} {s['evals']:>6} "
                  f"{s['stop']:<10} {s['val_nmse_db']:>8.2f} {s['learning_rate']:>9.2e} "
                  f"{s['wall_s']:>7.1f}")
    if not (args.stages or len(stage_log) <= 12):
        print("(per depth; --stages prints every stage)")
        print(f"{'layer':>5} {'stages':>6} {'steps':>6} {'evals':>6} {'wall s':>7} "
              f"{'end val dB':>10} stops")
        for layer in sorted(per_layer):
            steps_l, evals_l, wall_l, n_l = per_layer[layer]
            mine = [s for s in stage_log if s["layer"] == layer]
            stops = "/".join(f"{s['stage'][0]}:{s['steps']}:{s['stop'][:2]}" for s in mine)
            print(f"{layer:>5} {n_l:>6} {steps_l:>6} {evals_l:>6} {wall_l:>7.1f} "
                  f"{mine[-1]['val_nmse_db']:>10.2f} {stops}")
    # machine-independent work: layer passes x samples (a layer stage back-propagates through
    # its new layer only; the others through every active layer)
    bs = est.batch_size
    fwd = sum(s["steps"] * s["layer"] for s in stage_log) * bs
    bwd = sum(s["steps"] * (1 if s["stage"] == "layer" else s["layer"]) for s in stage_log) * bs
    val = sum(s["evals"] * s["layer"] for s in stage_log) * n_val
    print(f"work (millions of layer x sample passes): training forward {fwd / 1e6:.1f}, "
          f"backward {bwd / 1e6:.1f}, validation forward {val / 1e6:.1f}; total "
          f"{(fwd + bwd + val) / 1e6:.1f}")
    max_steps = est.max_epochs * math.ceil(
        (args.n_train - n_val)
        / est.batch_size)
    print(f"max_steps per stage {max_steps}; stops: "
          + ", ".join(f"{k} {v}" for k, v in sorted(
              {k: sum(1 for s in stage_log if s['stop'] == k)
               for k in {s['stop'] for s in stage_log}}.items())))
    if prof is not None:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).sort_stats("tottime")
        stats.print_stats(args.top)
        text = out.getvalue()
        start = text.find("   ncalls")
        print("\ncProfile, by own time (tottime):")
        print(text[start:] if start >= 0 else text)
    return est


if __name__ == "__main__":
    main()
