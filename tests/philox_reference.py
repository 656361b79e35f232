"""A NumPy Philox4x32-10 written from the paper, checked against Random123's
known-answer vectors, used to predict fastconv's dropout masks exactly."""

import numpy as np

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter, key):
    """counter: uint32 array (..., 4); key: uint32 array (..., 2). Returns uint32 (..., 4)."""
    c = [np.asarray(counter[..., i], dtype=np.uint64) for i in range(4)]
    k0 = np.asarray(key[..., 0], dtype=np.uint32).copy()
    k1 = np.asarray(key[..., 1], dtype=np.uint32).copy()
    for _ in range(10):
        p0, p1 = M0 * c[0], M1 * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c = [hi1 ^ c[1] ^ k0.astype(np.uint64), lo1, hi0 ^ c[3] ^ k1.astype(np.uint64), lo0]
        k0 = ((k0.astype(np.uint64) + W0) & MASK32).astype(np.uint32)
        k1 = ((k1.astype(np.uint64) + W1) & MASK32).astype(np.uint32)
    return np.stack([x.astype(np.uint32) for x in c], axis=-1)


def dropout_keep_mask(n, seed, offset, p):
    """The keep mask fastconv draws for n elements: element i uses word i % 4 of group i // 4."""
    seed, offset = np.uint64(seed % 2**64), np.uint64(offset % 2**64)
    groups = np.arange((n + 3) // 4, dtype=np.uint64)
    counter = np.stack(
        [groups & MASK32, groups >> np.uint64(32),
         np.full_like(groups, offset & MASK32), np.full_like(groups, offset >> np.uint64(32))], axis=-1
    )
    key = np.broadcast_to(np.array([seed & MASK32, seed >> np.uint64(32)], dtype=np.uint64), (len(groups), 2))
    words = philox4x32_10(counter, key).reshape(-1)[:n]
    threshold = np.uint32(np.ceil(p * 2**24))
    return (words >> np.uint32(8)) >= threshold
