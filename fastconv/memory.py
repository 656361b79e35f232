"""The cache that large CPU outputs of fastconv's ops come from.

A tensor above glibc's mmap threshold (32 MiB) is mapped afresh on every allocation, so
writing it first costs a page fault per 4 KiB page, often more than the op itself. fastconv's
CPU ops (ReLU, dropout, max pooling, and the convolutions' outputs and input gradients)
therefore take outputs of 2 MiB and more from buffers that earlier outputs released: a
training loop asks for the same sizes every step. The cache keeps at
most ``FASTCONV_CPU_OUTPUT_CACHE_MB`` MiB of released buffers (default: an eighth of the
memory the process may use, physical or its container's limit, divided among the processes
``torchrun`` starts on the host, between 256 MiB and 4 GiB; each process has its own cache;
0 turns it off). Like ``torch.cuda.empty_cache()``,
:func:`empty_cpu_output_cache` hands what it holds back to the system.
"""

from __future__ import annotations

from typing import Dict

from . import _C


def cpu_output_cache_stats() -> Dict[str, int]:
    """``limit_bytes`` (the most released bytes the cache keeps), ``held_bytes`` and
    ``held_buffers`` (what it keeps now)."""
    return dict(_C.cpu_output_cache_stats())


def empty_cpu_output_cache() -> None:
    """Frees every released buffer the cache holds. Outputs still alive are unaffected; they
    return to the cache when released."""
    _C.empty_cpu_output_cache()
