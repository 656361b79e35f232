"""Every kernel variant built for the SIMT runtime, in every dtype, runs in the default test run,
so a new kernel cannot land untested. Runs last (conftest orders it); a run of part of the
suite skips it, since it asks what the whole suite launched."""

from __future__ import annotations

import pytest

from simt_kernels import kernels_built, launch_counts, name_of


def test_every_simt_kernel_variant_was_launched(request):
    if not request.config.stash.get(WHOLE_SUITE, False):
        pytest.skip("asks what the whole test suite launched; this run selected part of it")
    built = kernels_built()
    assert built, "the extension's symbol table lists no SIMT kernels"
    launched = {offset for offset, count in launch_counts().items() if count > 0}
    outside = sorted(name_of(o) for o in launched - built.keys())
    assert not outside, f"kernels launched without a launch bound the SIMT runtime can check: {outside}"
    missing = sorted(built[o] for o in built.keys() - launched)
    assert not missing, f"{len(missing)} of {len(built)} SIMT kernel variants never ran:\n" + "\n".join(missing)


WHOLE_SUITE = pytest.StashKey[bool]()
