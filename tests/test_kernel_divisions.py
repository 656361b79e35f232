"""No CUDA kernel divides 64-bit integers inside a loop: a GPU has no 64-bit divider, so each
``div``/``rem`` ``.s64``/``.u64`` is a software routine of about 70 instructions, run once per
element or work item in a grid-stride loop and more often deeper. Index math inside loops is
32-bit with host-computed FastDivmods (csrc/common/index_math.h); this keeps it so for every
kernel nvcc builds, read from the PTX the way the GPU model (bench/cuda_model.py) reads it: from
its sm_90 kernel table, compiled once and cached under build/cuda_model until a source changes."""

from __future__ import annotations

import shutil

import pytest

from bench import cuda_model, ptxas_report

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc to compile the CUDA kernels to PTX")


@pytest.mark.parametrize("unit", ptxas_report.all_units())
def test_no_64_bit_division_inside_a_kernel_loop(unit):
    kernels = [k for k in cuda_model.kernel_table("90", progress=False).values() if k["unit"] == unit]
    assert kernels, f"no kernels found in {unit}"
    offenders = {k["name"]: (k["div64_in_loop"], k["div64_loop_depth"]) for k in kernels if k["div64_in_loop"]}
    assert not offenders, f"64-bit div/rem inside loops (count, loop depth) in {unit}: {offenders}"
