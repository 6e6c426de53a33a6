"""Model files that must be refused: crafted files (bounded memory), planted symlinks, callables."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import test_persistence as base
import torch

import sklearn_unfold
from sklearn_unfold import persistence
from sklearn_unfold.persistence import load, save

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

#: The fixtures and helpers of the round-trip tests (the same small problem, one AMP model file).
data, amp_file, _predict, _rewrite = base.data, base.amp_file, base._predict, base._rewrite


# --------------------------------------------------------------------------- crafted files
def _crafted(amp_file: Path, bad: Path, case: str) -> None:
    """Write one malicious or malformed variant of ``amp_file`` to ``bad``."""
    def header_edit(edit):
        _rewrite(amp_file, bad, edit_header=edit)

    attrs = lambda h: h["estimator"]["attributes"]  # noqa: E731
    if case == "pickle-member":  # a stride-0 tensor: 8 bytes of storage that expand to 8 GB
        buf = io.BytesIO()
        torch.save({"t0": torch.zeros(1).expand(2**30)}, buf)
        with zipfile.ZipFile(amp_file) as zin, zipfile.ZipFile(bad, "w") as zout:
            zout.writestr("params.json", zin.read("params.json"))
            zout.writestr("tensors.pt", buf.getvalue())
    elif case == "subarray-dtype":
        header_edit(lambda h: h["estimator"]["params"]["A"].update(dtype="(100000000,)<f8"))
    elif case == "object-dtype":
        header_edit(lambda h: h["estimator"]["params"]["A"].update(dtype="|O"))
    elif case == "huge-shape":
        header_edit(lambda h: h["estimator"]["params"]["A"].update(shape=[2**40, 2**40]))
    elif case == "strides-field":
        header_edit(lambda h: attrs(h)["theta_"].update(strides=[0]))
    elif case == "deep-nesting":
        header_edit(lambda h: attrs(h).update(extra_=json.loads("[" * 200 + "]" * 200)))
    elif case == "very-deep-json":
        with zipfile.ZipFile(amp_file) as zin, zipfile.ZipFile(bad, "w") as zout:
            text = zin.read("params.json").decode()
            zout.writestr("params.json", text.replace('"A": {', '"B": ' + "[" * 100_000 + "]" * 100_000
                                                      + ', "A": {', 1))
            zout.writestr("tensors.safetensors", zin.read("tensors.safetensors"))
    elif case in ("version-0", "version-1", "version-text"):
        version = {"version-0": 0, "version-1": 1, "version-text": "2"}[case]
        header_edit(lambda h: h.update(format_version=version))
    elif case == "os-system":
        header_edit(lambda h: attrs(h).update(denoiser_={"__type__": "function",
                                                         "ref": "os:system"}))
    elif case == "deflate-bomb":
        with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as zout:
            zout.writestr("params.json", zipfile.ZipFile(amp_file).read("params.json"))
            with zout.open("tensors.safetensors", "w") as fh:
                chunk = bytes(1 << 20)
                for _ in range(32):
                    fh.write(chunk)
    elif case in ("overlapping-tensors", "safetensors-huge-shape"):
        if case == "overlapping-tensors":
            table = {"t0": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
                     "t1": {"dtype": "F64", "shape": [2], "data_offsets": [8, 24]}}
        else:
            table = {"t0": {"dtype": "F64", "shape": [2**31, 2**31], "data_offsets": [0, 24]}}
        text = json.dumps(table).encode()
        blob = len(text).to_bytes(8, "little") + text + bytes(24)
        with zipfile.ZipFile(amp_file) as zin, zipfile.ZipFile(bad, "w") as zout:
            zout.writestr("params.json", zin.read("params.json"))
            zout.writestr("tensors.safetensors", blob)
    else:  # pragma: no cover
        raise AssertionError(case)


CRAFTED = {
    "pickle-member": r"torch-pickle tensor member 'tensors.pt'",
    "subarray-dtype": r"refusing array dtype '\(100000000,\)<f8'.*no sub-array",
    "object-dtype": r"refusing array dtype '\|O'",
    "huge-shape": r"array t0 holds 2304 bytes, not the 9671406556917033397649408 of a float64",
    "strides-field": r"'tensor' entry has fields \['device', 'key', 'requires_grad', 'strides'\]",
    "deep-nesting": r"values nest more than 64 levels deep",
    "very-deep-json": r"nests values more than 64 levels deep",
    "version-0": r"unknown format version 0",
    "version-1": r"unknown format version 1.*must be saved again",
    "version-text": r"unknown format version '2'",
    "os-system": r"refusing to load function 'os:system'",
    "deflate-bomb": r"tensors.safetensors' declares 33554432 bytes from \d+ compressed bytes, past",
    "overlapping-tensors": r"tensor 't1' starts at byte 8, not 16: tensors overlap",
    "safetensors-huge-shape": r"declares shape \[2147483648, 2147483648\] of F64",
}


@pytest.mark.parametrize("case", [c for c in CRAFTED if c != "deflate-bomb"])
def test_crafted_file_is_refused(amp_file, tmp_path, case):
    bad = tmp_path / "bad.sfu"
    _crafted(amp_file, bad, case)
    with pytest.raises(ValueError, match=rf"(?s)bad\.sfu.*{CRAFTED[case]}"):
        load(bad)


_MEMORY_PROBE = r"""
import json, resource, sys
import test_persistence_hardening as T
from pathlib import Path
from sklearn_unfold.persistence import load

amp, folder = Path(sys.argv[1]), Path(sys.argv[2])
vm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize")][0]
resource.setrlimit(resource.RLIMIT_AS, ((vm << 10) + (2 << 30),) * 2)  # a guard for the machine
out = {}
for case in sys.argv[3:]:
    T._crafted(amp, folder / f"{case}.sfu", case)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load(folder / f"{case}.sfu")
        message = "loaded"
    except ValueError as exc:
        message = str(exc)
    out[case] = [message, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10]
print(json.dumps(out))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_crafted_files_are_refused_within_bounded_memory(amp_file, tmp_path):
    """The files that once allocated gigabytes (a stride-0 tensor, sub-array dtype, deflate bomb,
    huge shapes) are refused before allocating: peak RSS grows by < 100 MiB, under an address
    space cap (a regression fails here instead of swapping the machine)."""
    import subprocess
    import sys

    cases = ["pickle-member", "subarray-dtype", "huge-shape", "deflate-bomb", "safetensors-huge-shape"]
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(amp_file), str(tmp_path), *cases],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for case in cases:
        message, growth_mib = results[case]
        assert re.search(CRAFTED[case], message), (case, message)
        assert growth_mib < 100, (case, growth_mib)


def test_memory_error_never_escapes_load(amp_file, monkeypatch):
    def exhausted(data):
        raise MemoryError

    monkeypatch.setattr(persistence, "tensors_from_bytes", exhausted)
    with pytest.raises(ValueError, match="amp.sfu: not enough memory to load this model file"):
        load(amp_file)


# --------------------------------------------------------------------------- secure writing
def test_save_replaces_planted_symlinks_without_following_them(data, tmp_path, monkeypatch):
    est = sklearn_unfold.ISTARegressor(A=data[2], max_iter=5).fit(data[0], data[1])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "model.sfu"
    # the temporary name the previous version used, planted by another user
    (tmp_path / f"model.sfu.tmp-{__import__('os').getpid()}").symlink_to(victim)
    save(est, target)
    assert victim.read_text() == "precious"
    target.unlink()
    target.symlink_to(victim)  # a symlink at the target itself
    save(est, target)
    assert victim.read_text() == "precious"
    assert target.is_file() and not target.is_symlink()
    np.testing.assert_array_equal(_predict(load(target), data[0]), _predict(est, data[0]))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_interrupted_save_leaves_no_file(data, tmp_path, monkeypatch):
    est = sklearn_unfold.ISTARegressor(A=data[2], max_iter=5).fit(data[0], data[1])

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(persistence, "write_archive", fail)
    with pytest.raises(OSError, match="disk full"):
        save(est, tmp_path / "m.sfu")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- callables
def test_allowed_callables_and_generic_state_round_trip(data, tmp_path):
    est = sklearn_unfold.AMPRegressor(A=data[2], max_iter=5).fit(data[0], data[1])
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    est.extra_ = {"optimizer": torch.optim.Adam, "scheduler": torch.optim.lr_scheduler.StepLR,
                  "loss": torch.nn.HuberLoss(reduction="sum", delta=0.5),
                  "functional": torch.nn.functional.mse_loss, "state": opt.state_dict(),
                  "history": [{"stage": "main", "val_nmse_db": -3.5, "stop": None}]}
    save(est, tmp_path / "m.sfu")
    extra = load(tmp_path / "m.sfu").extra_
    assert extra["optimizer"] is torch.optim.Adam
    assert extra["scheduler"] is torch.optim.lr_scheduler.StepLR
    assert extra["functional"] is torch.nn.functional.mse_loss
    assert type(extra["loss"]) is torch.nn.HuberLoss
    assert (extra["loss"].reduction, extra["loss"].delta) == ("sum", 0.5)
    assert extra["history"] == est.extra_["history"]
    state = extra["state"]
    assert list(state["state"]) == [0, 1] and state["param_groups"][0]["lr"] == 1e-3
    assert torch.equal(state["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


@pytest.mark.parametrize("value", [print, __import__("os").system, lambda x: x,
                                   torch.optim.Adam.step, torch.nn.Linear(2, 2)])
def test_save_refuses_other_callables(data, tmp_path, value):
    est = sklearn_unfold.AMPRegressor(A=data[2], max_iter=5)
    est.denoiser = value  # a custom callable as a parameter
    with pytest.raises(TypeError, match=r"(?s)estimator.params\['denoiser'\].*pickle or joblib"):
        save(est, tmp_path / "x.sfu")
    assert not (tmp_path / "x.sfu").exists()


# --------------------------------------------------------------------------- complex payloads
@pytest.fixture(scope="module")
def complex_file(tmp_path_factory, data):
    """An AMP model with a complex tensor, a complex array, a real tensor and a complex number."""
    path = tmp_path_factory.mktemp("complex") / "complex.sfu"
    est = sklearn_unfold.AMPRegressor(A=data[2], max_iter=5).fit(data[0], data[1])
    rng = np.random.default_rng(0)
    est.extra_ = {"t": torch.randn(3, 4, dtype=torch.complex128),
                  "a": rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2)),
                  "r": torch.arange(5.0), "z": 1.5 - 2j}
    save(est, path)
    return path


def _complex_crafted(src: Path, bad: Path, case: str) -> None:
    def edit(header):
        extra = header["estimator"]["attributes"]["extra_"]
        t, a, r, z = extra["t"], extra["a"], extra["r"], extra["z"]
        if case == "flag-not-true":
            t["complex"] = 1
        elif case == "flag-false":
            t["complex"] = False
        elif case == "in-version-2":
            header["format_version"] = 2
        elif case == "newer-version":
            header["format_version"] = 5
        elif case == "flag-on-byte-array":
            t["key"] = a["key"]
        elif case == "flag-on-real-tensor":
            r["complex"] = True
        elif case == "bad-order":
            t["order"] = [0, 0]
        elif case == "strides-field":
            t["strides"] = [4, 1]
        elif case == "array-itemsize":
            a["dtype"] = "<c8"
        elif case == "array-c32":
            a["dtype"] = "<c32"
        elif case == "array-shape":
            a["shape"] = [3, 3]
        elif case == "scalar-string-part":
            z["real"] = "1.5"
        elif case == "scalar-bool-part":
            z["imag"] = True
        elif case == "scalar-missing-part":
            del z["imag"]
        elif case == "scalar-bad-float-tag":
            z["real"] = {"__type__": "float", "value": "1e5"}
        else:  # pragma: no cover
            raise AssertionError(case)

    _rewrite(src, bad, edit_header=edit)


COMPLEX_CRAFTED = {
    "flag-not-true": r"invalid 'complex' field '1' of tensor 't\d+' \(true or absent\)",
    "flag-false": r"invalid 'complex' field 'False'",
    "in-version-2": r"damaged: a file of format version 2 holds (a complex (tensor|number)|a "
                    r"denoiser module), which only format version [34]",
    "newer-version": r"format version 5 is newer than this sklearn_unfold reads \(4\)",
    "flag-on-byte-array": r"damaged: complex tensor t\d+ is stored as a torch.uint8 tensor of shape "
                          r"\[96\], not as float32 or float64 \(real, imaginary\) pairs",
    "flag-on-real-tensor": r"damaged: complex tensor t\d+ is stored as a torch.float32 tensor of "
                           r"shape \[5\]",
    "bad-order": r"invalid axis order \[0, 0\] for 2 axes",
    "strides-field": r"'tensor' entry has fields \['complex', 'device', 'key', 'requires_grad', "
                     r"'strides'\]",
    "array-itemsize": r"damaged: array t\d+ holds 96 bytes, not the 48 of a complex64 array",
    "array-c32": r"refusing array dtype '<c32'",
    "array-shape": r"damaged: array t\d+ holds 96 bytes, not the 144 of a complex128 array",
    "scalar-string-part": r"invalid complex number with parts \['1.5', -2.0\]",
    "scalar-bool-part": r"invalid complex number with parts \[1.5, True\]",
    "scalar-missing-part": r"a 'complex' entry has fields \['real'\]; expected \['imag', 'real'\]",
    "scalar-bad-float-tag": r"invalid float '1e5'",
}


def test_complex_file_loads(complex_file):
    extra = load(complex_file).extra_
    assert extra["t"].dtype == torch.complex128 and extra["a"].dtype == np.complex128
    assert extra["z"] == 1.5 - 2j and extra["r"].dtype == torch.float32


@pytest.mark.parametrize("case", list(COMPLEX_CRAFTED))
def test_tampered_complex_payload_is_refused(complex_file, tmp_path, case):
    bad = tmp_path / "bad.sfu"
    _complex_crafted(complex_file, bad, case)
    with pytest.raises(ValueError, match=rf"(?s)bad\.sfu.*{COMPLEX_CRAFTED[case]}"):
        load(bad)


def test_damaged_complex_tensor_bytes_are_refused(complex_file, tmp_path):
    bad = tmp_path / "bad.sfu"
    bad.write_bytes(base._corrupt_stored_bytes(complex_file.read_bytes(), "tensors.safetensors"))
    with pytest.raises(ValueError, match=r"(?s)bad\.sfu.*not a readable sklearn-unfold model file"
                                         r".*Bad CRC-32"):
        load(bad)


@pytest.mark.parametrize("dtype", ["C64", "C128", "c64"])
def test_safetensors_complex_dtypes_are_refused(complex_file, tmp_path, dtype):
    """The tensor member holds only the dtypes this format writes; complex tensors are stored as
    float pairs, never under a complex safetensors dtype."""
    table = {"t0": {"dtype": dtype, "shape": [2], "data_offsets": [0, 16]}}
    text = json.dumps(table).encode()
    bad = tmp_path / "bad.sfu"
    with zipfile.ZipFile(complex_file) as zin, zipfile.ZipFile(bad, "w") as zout:
        zout.writestr("params.json", zin.read("params.json"))
        zout.writestr("tensors.safetensors", len(text).to_bytes(8, "little") + text + bytes(16))
    with pytest.raises(ValueError, match=rf"(?s)bad\.sfu.*tensor 't0' has dtype '{dtype}', not one of"):
        load(bad)


@pytest.mark.parametrize("version", [3, 4])
def test_real_file_labelled_a_newer_version_loads(tmp_path, data, version):
    """Versions 3 and 4 only add entries: a version-2 description read as a newer version is the
    same model."""
    from sklearn_unfold import ISTARegressor

    Y, X = data[0], data[1]
    v2 = tmp_path / "v2.sfu"
    save(ISTARegressor(A=data[2], max_iter=20).fit(Y, X), v2)
    relabelled = tmp_path / "v3.sfu"
    _rewrite(v2, relabelled, edit_header=lambda h: h.update(format_version=version))
    np.testing.assert_array_equal(_predict(load(relabelled), Y), _predict(load(v2), Y))
