"""Which kernels run fastconv ops: the backend context and what this build offers."""

from __future__ import annotations

import contextlib
import functools
import contextvars
from typing import Iterator, List

import torch

from . import _C

_current: contextvars.ContextVar[str] = contextvars.ContextVar("fastconv_backend", default="auto")


@functools.lru_cache(maxsize=None)
def cuda_compiled() -> bool:
    """True when the CUDA kernels were built into the extension (a GPU is not needed for that)."""
    return bool(_C.build_info()["cuda_compiled"])


def available_backends() -> List[str]:
    """Backends that can run here: ``"cpu"`` and ``"simt"`` always, ``"cuda"`` with a usable GPU."""
    backends = ["cpu", "simt"]
    if cuda_compiled() and torch.cuda.is_available():
        backends.insert(1, "cuda")
    return backends


def current_backend() -> str:
    """The backend selected by the innermost :func:`backend` context (``"auto"`` outside any),
    as the ops receive it: ``"simt:tf32"`` inside ``backend("simt", allow_tf32=True)``."""
    return _current.get()


@contextlib.contextmanager
def backend(name: str, allow_tf32: bool = False) -> Iterator[None]:
    """Run fastconv ops on the given backend inside the ``with`` block.

    ``"auto"`` (the default) runs CPU tensors on the C++ kernels and CUDA tensors
    on the CUDA kernels; ``"cpu"`` forces the C++ kernels; ``"simt"`` runs CPU
    tensors through the CUDA kernels on the SIMT runtime (slow; for testing and
    debugging kernels without a GPU); ``"cuda"`` requires CUDA tensors.

    Float32 convolutions on CUDA tensors use TF32 tensor cores exactly when torch's
    would (``torch.backends.cudnn.allow_tf32``, read at every call). On the SIMT
    runtime they stay full precision unless ``allow_tf32=True`` (then the backend
    the ops receive is ``"simt:tf32"``); float16 and bfloat16 convolutions use
    tensor cores on both (on GPUs from sm_80).

    The choice is recorded when an op runs forward, so its backward runs on the
    same backend even after the block has closed.
    """
    _C.check_backend_name(name, "fastconv.backend")
    if name == "cuda" and not cuda_compiled():
        raise ValueError("fastconv backend 'cuda' is unavailable: the extension was built without CUDA")
    if allow_tf32:
        if name != "simt":
            raise ValueError(
                f"fastconv.backend: allow_tf32 is a switch of the 'simt' backend, not of '{name}' "
                "(CUDA tensors follow torch.backends.cudnn.allow_tf32)"
            )
        name = "simt:tf32"
    token = _current.set(name)
    try:
        yield
    finally:
        _current.reset(token)
