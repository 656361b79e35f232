"""Run as a script under FASTCONV_CPU_ISA=<isa>: checks the CPU ReLU (with and without its stored
mask, and above the last-level cache, where it writes with streaming stores), dropout and 2x2 max
pooling against torch on awkward inputs, and saves every output to the .npz named by argv[1],
so that tests/test_cpu_isa_paths.py can compare the vector paths with the portable one bit for
bit. Prints the ISA the kernels used."""

import sys

import numpy as np
import torch
import torch.nn.functional as F

import fastconv

OPS = torch.ops.fastconv
# Element counts around the vector widths (16 floats, 64 per dropout block: one keep word; AVX-512
# generates two blocks' words at once: 192 ends on one whole block after the pair, 193 adds a
# partial one) and
# tensors above the output cache's 2 MiB.
SIZES = [0, 1, 3, 4, 5, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 192, 193, 1000, 6272 * 3 + 1, 1 << 20 | 5]
SPECIALS = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), -1e-30, 1e-30, -3.0]


def sample(n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=dtype)
    k = min(n, len(SPECIALS))
    x[:k] = torch.tensor(SPECIALS[:k], dtype=dtype)
    if n > 2 * len(SPECIALS):  # the specials again at the end: the vector tails
        x[-k:] = torch.tensor(SPECIALS[:k], dtype=dtype)
    return x


def same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.signbit(a), torch.signbit(b)), "sign of zero"


def main(path):
    out = {}
    for dtype in (torch.float32, torch.float64):
        tag = str(dtype).split(".")[1]
        for n in SIZES:
            x = sample(n, dtype, n)
            g = sample(n, dtype, n + 1)
            y = OPS.relu(x, "cpu")
            same(y, F.relu(x))
            gi = OPS.relu_backward(g, y, "cpu")
            same(gi, torch.ops.aten.threshold_backward(g, y, 0))
            out[f"relu_{tag}_{n}"], out[f"relu_bwd_{tag}_{n}"] = y.numpy(), gi.numpy()
            # The stored mask: the same output, and backward from it the same gradient.
            ym, mask = OPS.relu_with_mask(x, "cpu")
            same(ym, y)
            same(OPS.relu_backward_from_mask(g, mask, "cpu"), gi)
            bits = np.unpackbits(mask.numpy(), bitorder="little").astype(bool)
            assert np.array_equal(bits[:n], (~(x <= 0)).numpy()) and not bits[n:].any(), f"relu mask, {n}"
            out[f"relumask_{tag}_{n}"] = mask.numpy()
            for p in (0.0, 0.3, 0.5, 1.0):
                for seed, offset in ((0, 0), (123456789, 42), (2**63 - 1, 2**40 + 3)):
                    pair = torch.tensor([seed, offset], dtype=torch.long)
                    d = OPS.dropout(x, p, pair, "cpu")
                    db = OPS.dropout_backward(x, p, pair, "cpu")
                    same(d, db)  # the same map with the same mask
                    out[f"dropout_{tag}_{n}_{p}_{seed}_{offset}"] = d.numpy()
                    # The stored mask: the same output, and backward from it the same map.
                    dm, mask = OPS.dropout_with_mask(x, p, pair, "cpu")
                    same(dm, d)
                    same(OPS.dropout_backward_from_mask(x, p, mask, "cpu"), d)
                    out[f"keepbits_{tag}_{n}_{p}_{seed}_{offset}"] = mask.numpy()
        # Non-contiguous and channels_last views, odd sizes.
        base = sample(3 * 5 * 9 * 11, dtype, 7).reshape(3, 5, 9, 11)
        for name, v in (("transposed", base.transpose(1, 3)), ("strided", base[:, :, ::2, 1::3]),
                        ("channels_last", base.contiguous(memory_format=torch.channels_last))):
            same(OPS.relu(v, "cpu"), F.relu(v))
            out[f"dropout_{tag}_{name}"] = OPS.dropout(v, 0.5, torch.tensor([5, 6]), "cpu").numpy()
        # 2x2 max pooling: odd sizes (the spare row and column), widths on both sides of the
        # streaming backward's threshold, NaN and ties.
        for shape in ((1, 1, 2, 2), (2, 3, 5, 7), (1, 2, 15, 15), (2, 2, 9, 33), (1, 3, 34, 34), (1, 1, 7, 301)):
            x = sample(int(np.prod(shape)), dtype, sum(shape)).reshape(shape)
            x[..., 0, :4] = 1.0  # ties: the first maximum wins
            y, idx = OPS.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False, "cpu")
            y_ref, idx_ref = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
            same(y, y_ref)
            assert torch.equal(idx, idx_ref)
            go = sample(y.numel(), dtype, 3).reshape(y.shape)
            gi = OPS.max_pool2d_backward(go, idx, list(shape), [2, 2], [2, 2], [0, 0], [1, 1], False, "cpu")
            same(gi, torch.ops.aten.max_pool2d_with_indices_backward(go, x, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                                      idx_ref))
            # The one-byte taps training saves: the same maxima, and the same gradient from them.
            yt, taps = OPS.max_pool2d_with_taps(x, [2, 2], [2, 2], [0, 0], [1, 1], False, "cpu")
            same(yt, y_ref)
            oh, ow = torch.arange(y.shape[2]).view(-1, 1), torch.arange(y.shape[3])
            offset = idx_ref - (2 * oh * shape[3] + 2 * ow)  # 0, 1, W or W + 1 from each window's corner
            assert torch.equal(taps.long(), (offset >= shape[3]).long() * 2 + offset % shape[3])
            same(OPS.max_pool2d_backward_from_taps(go, taps, list(shape), [2, 2], [2, 2], [0, 0], [1, 1], False, "cpu"),
                 gi)
            key = "x".join(map(str, shape))
            out[f"pool_{tag}_{key}"], out[f"pool_idx_{tag}_{key}"] = y.numpy(), idx.numpy()
            out[f"pool_bwd_{tag}_{key}"] = gi.numpy()
            out[f"pool_taps_{tag}_{key}"] = taps.numpy()
        # Above the last-level cache the ReLU kernels write with streaming stores (from the
        # threshold build_info reports): checked against torch here, not saved (they are large).
        x = sample(fastconv.build_info()["cpu_streaming_stores_from_bytes"] // (2 * dtype.itemsize) + 77, dtype, 5)
        g = sample(x.numel(), dtype, 6)
        assert 2 * x.numel() * x.element_size() > fastconv.build_info()["cpu_streaming_stores_from_bytes"]
        assert x.data_ptr() % 64 == 0 and g.data_ptr() % 64 == 0  # the outputs are aligned like these
        y_ref = F.relu(x)
        same(OPS.relu(x, "cpu"), y_ref)
        y, mask = OPS.relu_with_mask(x, "cpu")
        same(y, y_ref)
        same(OPS.relu_backward_from_mask(g, mask, "cpu"), torch.ops.aten.threshold_backward(g, y_ref, 0))
    np.savez(path, **out)
    print("cpu_isa", fastconv.build_info()["cpu_isa"])


if __name__ == "__main__":
    main(sys.argv[1])
