"""The CPU kernels' vector paths (csrc/cpu/cpu_isa.h: AVX-512, AVX2, portable) against each
other bit for bit, and each against torch (tests/cpu_isa_outputs.py), every path forced with
FASTCONV_CPU_ISA in a process of its own (the choice is made once per process). Dropout masks
are also checked against the NumPy Philox of tests/philox_reference.py."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CPU_ISA_FLAGS, cpu_flags
from philox_reference import dropout_keep_mask

HERE = Path(__file__).resolve().parent


ISAS = {isa: needs <= cpu_flags() for isa, needs in CPU_ISA_FLAGS.items()}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Each available path's outputs, keyed by path name. The processes run side by side."""
    runs = {}
    for isa, available in ISAS.items():
        if not available:
            continue
        path = tmp_path_factory.mktemp(isa) / "out.npz"
        env = dict(os.environ, FASTCONV_CPU_ISA=isa, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
        process = subprocess.Popen([sys.executable, str(HERE / "cpu_isa_outputs.py"), str(path)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent)
        runs[isa] = (process, path)
    results = {}
    for isa, (process, path) in runs.items():
        stdout, stderr = process.communicate()
        assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
        assert f"cpu_isa {isa}" in stdout, "the switch took effect"
        with np.load(path) as data:
            results[isa] = dict(data)
    return results


@pytest.mark.parametrize("isa", [i for i, ok in ISAS.items() if ok and i != "baseline"])
def test_vector_path_matches_portable_bit_for_bit(outputs, isa):
    portable, vector = outputs["baseline"], outputs[isa]
    assert portable.keys() == vector.keys()
    for key, want in portable.items():
        got = vector[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), key


@pytest.mark.parametrize("isa", [i for i, ok in ISAS.items() if ok])
def test_dropout_masks_are_philox(outputs, isa):
    checked = 0
    for key, y in outputs[isa].items():
        parts = key.split("_")
        if parts[0] != "dropout" or len(parts) != 6 or y.size == 0:
            continue
        _, _, n, p, seed, offset = parts
        p, n = float(p), int(n)
        if p in (0.0, 1.0) or n > 20000:  # larger ones: compared with the checked portable path
            continue
        keep = dropout_keep_mask(n, int(seed), int(offset), p)
        # Away from the specials (zeros, NaN, inf, denormal-scale values at both ends of the
        # input), an element is kept exactly when its output is non-zero.
        normal = np.ones(n, bool)
        normal[:8] = False
        if n > 16:
            normal[-8:] = False
        assert np.array_equal((y != 0)[normal], keep[normal]), key
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("isa", [i for i, ok in ISAS.items() if ok])
def test_stored_masks_are_philox(outputs, isa):
    checked = 0
    for key, mask in outputs[isa].items():
        if not key.startswith("keepbits_"):
            continue
        _, _, n, p, seed, offset = key.split("_")
        n = int(n)
        assert mask.dtype == np.uint8 and mask.shape == ((n + 7) // 8,), key
        if n > 20000:  # larger ones: compared with the portable path
            continue
        bits = np.unpackbits(mask, bitorder="little")
        assert np.array_equal(bits[:n].astype(bool), dropout_keep_mask(n, int(seed), int(offset), float(p))), key
        assert not bits[n:].any(), "the padding bits are zero"
        checked += 1
    assert checked > 50


@pytest.mark.skipif(not ISAS["avx512"], reason="the CPU has no AVX-512")
def test_unset_switch_picks_the_widest_path():
    env = {k: v for k, v in os.environ.items() if k != "FASTCONV_CPU_ISA"}
    env["PYTHONPATH"] = str(HERE.parent)
    run = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.build_info()['cpu_isa'])"],
                         env=env, capture_output=True, text=True, check=True, cwd=HERE.parent)
    assert run.stdout.strip() == "avx512"
