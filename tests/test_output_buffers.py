"""Large CPU outputs of relu, dropout and max_pool2d come from a bounded cache of released
buffers (csrc/ops/output_buffers.h): they must still be ordinary torch tensors."""

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fastconv

OPS = torch.ops.fastconv
BIG = (2, 8, 192, 192)  # 2.25 MiB in float32: above the cache's 2 MiB floor
SEED = torch.tensor([11, 12], dtype=torch.long)


def _relu(x):
    return OPS.relu(x, "cpu")


def test_released_buffer_is_reused_for_the_same_size():
    x = torch.randn(BIG)
    y = _relu(x)
    ptr = y.data_ptr()
    del y
    y = _relu(x)
    assert y.data_ptr() == ptr, "the released output came back"
    torch.testing.assert_close(y, F.relu(x), rtol=0, atol=0)


def test_outputs_are_ordinary_tensors():
    x = torch.randn(BIG)
    y = _relu(x)
    assert y.is_contiguous() and y.storage_offset() == 0 and y.device.type == "cpu"
    assert y.untyped_storage().nbytes() == x.numel() * 4
    expected = F.relu(x)
    # Resizable, as torch's outputs are: growing copies into a larger buffer, shrinking keeps it.
    y.resize_(x.numel() * 2)
    torch.testing.assert_close(y[: x.numel()], expected.reshape(-1), rtol=0, atol=0)
    y.resize_(3)
    y.resize_(0)
    # Views, in-place ops, sharing, serialisation.
    z = _relu(x)
    z[0, 0, 0, :4] = 7.0
    assert z.view(-1)[:4].tolist() == [7.0] * 4
    z.share_memory_()
    assert z.is_shared()
    buffer = io.BytesIO()
    torch.save(z, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer), z, rtol=0, atol=0)


def test_layouts_follow_torch():
    x = torch.randn(BIG).contiguous(memory_format=torch.channels_last)
    y = _relu(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.stride() == x.stride()
    torch.testing.assert_close(y, F.relu(x), rtol=0, atol=0)
    d = OPS.dropout(x, 0.5, SEED, "cpu")
    assert d.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(OPS.dropout(x.contiguous(), 0.5, SEED, "cpu"), d)  # the logical-order mask
    g = OPS.relu_backward(torch.randn(BIG), F.relu(x), "cpu")
    assert g.stride() == x.stride()


def test_pooling_and_dropout_outputs_match_torch():
    x = torch.randn(4, 16, 130, 130)  # indices of 4.1 MiB
    y, idx = OPS.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False, "cpu")
    y_ref, idx_ref = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref) and idx.dtype == torch.long
    del y, idx
    y, idx = OPS.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False, "cpu")  # reused buffers
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref)
    go = torch.randn_like(y)
    gi = OPS.max_pool2d_backward(go, idx, list(x.shape), [2, 2], [2, 2], [0, 0], [1, 1], False, "cpu")
    ref = torch.ops.aten.max_pool2d_with_indices_backward(go, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx_ref)
    assert torch.equal(gi, ref)
    a = OPS.dropout(x, 0.25, SEED, "cpu")
    del a
    b = OPS.dropout(x, 0.25, SEED, "cpu")
    assert torch.equal(b, OPS.dropout_backward(x, 0.25, SEED, "cpu"))


def test_opcheck_on_a_cached_output():
    x = torch.randn(BIG)
    torch.library.opcheck(torch.ops.fastconv.relu.default, (x, "cpu"))


def test_outputs_freed_on_other_threads():
    x = torch.randn(BIG)
    expected = F.relu(x)
    errors = []

    def work():
        try:
            for _ in range(20):
                y = _relu(x)
                if not torch.equal(y, expected):
                    errors.append("wrong values")
                del y
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    kept = [_relu(x) for _ in range(3)]  # outputs alive while others are released
    for t in threads:
        t.join()
    assert not errors
    assert len({y.data_ptr() for y in kept}) == 3
    assert all(torch.equal(y, expected) for y in kept)


def _run_fresh(code, **env_overrides):
    """stdout of `code` in a fresh Python process whose environment has these variables (and
    neither of the cache's own unless given)."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("FASTCONV_CPU_OUTPUT_CACHE_MB", "LOCAL_WORLD_SIZE")}
    env.update(env_overrides, PYTHONPATH=str(root))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_cache_can_be_turned_off():
    code = ("import torch, fastconv, torch.nn.functional as F\n"
            "x = torch.randn(2, 8, 192, 192)\n"
            "for _ in range(3):\n"
            "    assert torch.equal(torch.ops.fastconv.relu(x, 'cpu'), F.relu(x))\n"
            "print('ok')\n")
    assert "ok" in _run_fresh(code, FASTCONV_CPU_OUTPUT_CACHE_MB="0")


def test_buffer_over_the_bound_is_freed_without_evicting_the_others():
    code = ("import torch, fastconv\n"
            "relu = lambda x: torch.ops.fastconv.relu(x, 'cpu')\n"
            "small, large = torch.randn(2, 8, 192, 192), torch.randn(4, 8, 192, 192)\n"
            "y = relu(small); kept = y.data_ptr(); del y\n"  # 2.25 MiB: a 4 MiB buffer, within the bound
            "z = relu(large); del z\n"  # 4.5 MiB: a 6 MiB buffer, over the bound, freed at once
            "y = relu(small)\n"
            "print('reused', y.data_ptr() == kept)\n"
            "print('limit', fastconv.cpu_output_cache_stats()['limit_bytes'])\n")
    out = _run_fresh(code, FASTCONV_CPU_OUTPUT_CACHE_MB="4")
    assert "reused True" in out
    assert f"limit {4 << 20}" in out


def _cache_bound_in(env_overrides):
    """The cache's bound in a fresh process with these environment variables."""
    code = "import fastconv; print(fastconv.cpu_output_cache_stats()['limit_bytes'])"
    return int(_run_fresh(code, **env_overrides).split()[-1])


def test_default_bound_follows_the_memory_and_the_processes_on_the_host():
    mib = 1 << 20
    alone = _cache_bound_in({})
    assert 256 * mib <= alone <= 4096 * mib and alone % (2 * mib) == 0
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert alone <= max(256 * mib, physical // 8)  # never more than an eighth, unless at the floor
    shared = _cache_bound_in({"LOCAL_WORLD_SIZE": "4"})
    assert shared == max(256 * mib, alone // 4 // (2 * mib) * (2 * mib)) or alone == 4096 * mib
    assert shared <= alone
    assert _cache_bound_in({"FASTCONV_CPU_OUTPUT_CACHE_MB": "6"}) == 6 * mib


def test_many_sizes_stay_within_the_bound():
    """Sizes that never come back are evicted oldest first; the held bytes never pass the bound."""
    code = ("import torch, fastconv\n"
            "relu = lambda x: torch.ops.fastconv.relu(x, 'cpu')\n"
            "for i in range(40):\n"
            "    relu(torch.randn((1 << 19) * (1 + i % 7) + 5))\n"  # 2-14 MiB outputs, released at once
            "    s = fastconv.cpu_output_cache_stats()\n"
            "    assert s['held_bytes'] <= s['limit_bytes'], s\n"
            "x = torch.randn(1 << 20)\n"
            "assert torch.equal(relu(x), torch.relu(x))\n"
            "print('ok', fastconv.cpu_output_cache_stats()['held_buffers'])\n")
    assert _run_fresh(code, FASTCONV_CPU_OUTPUT_CACHE_MB="20").startswith("ok")


def test_empty_cache_frees_what_it_holds():
    if fastconv.cpu_output_cache_stats()["limit_bytes"] == 0:
        pytest.skip("FASTCONV_CPU_OUTPUT_CACHE_MB=0 turns the cache off")
    x = torch.randn(BIG)
    y = _relu(x)
    before = fastconv.cpu_output_cache_stats()
    del y
    held = fastconv.cpu_output_cache_stats()
    assert held["held_bytes"] >= before["held_bytes"] + x.numel() * 4
    assert held["held_buffers"] == before["held_buffers"] + 1
    alive = _relu(x)  # from the cache; emptying must leave it alone
    fastconv.empty_cpu_output_cache()
    assert fastconv.cpu_output_cache_stats()["held_bytes"] == 0
    assert fastconv.cpu_output_cache_stats()["held_buffers"] == 0
    torch.testing.assert_close(alive, F.relu(x), rtol=0, atol=0)
    del alive  # released into the emptied cache
    assert fastconv.cpu_output_cache_stats()["held_buffers"] == 1
    torch.testing.assert_close(_relu(x), F.relu(x), rtol=0, atol=0)


def test_convolution_outputs_and_input_gradients_are_reused():
    x = torch.randn(4, 8, 130, 130)  # 2.1 MiB outputs and input gradients
    w = torch.randn(8, 8, 3, 3) / 9
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    y = OPS.conv2d(x, w, None, *geometry, "im2col", "cpu")
    ptr = y.data_ptr()
    del y
    y = OPS.conv2d(x, w, None, *geometry, "im2col", "cpu")
    assert y.data_ptr() == ptr
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
    g = OPS.conv2d_backward_input(y, w, list(x.shape), *geometry, "im2col", "cpu")
    ptr = g.data_ptr()
    del g
    g = OPS.conv2d_backward_input(y, w, list(x.shape), *geometry, "im2col", "cpu")
    assert g.data_ptr() == ptr
    expected = torch.ops.aten.convolution_backward(y, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                   [True, False, False])[0]
    torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-4)


def test_kernel_scratch_comes_from_the_cache_and_goes_back():
    # The Winograd weight gradient of 256 channels sums 16 x 256 x 256 floats (4 MiB) and, on
    # several threads, keeps private partial sums as large: scratch that a fresh allocation
    # would fault in page by page on every call (csrc/cpu/scratch.h).
    if fastconv.cpu_output_cache_stats()["limit_bytes"] < 32 << 20:
        pytest.skip("FASTCONV_CPU_OUTPUT_CACHE_MB under 32 keeps too little to hold the scratch")
    x = torch.randn(1, 256, 12, 12)
    g = torch.randn(1, 256, 12, 12)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    fastconv.empty_cpu_output_cache()
    dw = OPS.conv2d_backward_weight(g, x, [256, 256, 3, 3], *geometry, "winograd", "cpu")
    after_first = fastconv.cpu_output_cache_stats()
    assert after_first["held_bytes"] >= 16 * 256 * 256 * 4, "the sums went back to the cache"
    again = OPS.conv2d_backward_weight(g, x, [256, 256, 3, 3], *geometry, "winograd", "cpu")
    assert fastconv.cpu_output_cache_stats() == after_first, "the second call reused the same buffers"
    expected = torch.ops.aten.convolution_backward(g, x, torch.empty(256, 256, 3, 3), None, [1, 1], [1, 1], [1, 1],
                                                   False, [0, 0], 1, [False, True, False])[1]
    torch.testing.assert_close(dw, expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(again, dw, rtol=0, atol=0)
