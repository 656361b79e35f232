"""Each op's contenders on one case: fastconv's variants, torch's own op, and the work done.

Both sides get the very same tensors: one input (and weight and bias), drawn once, and one
output gradient for backward. Every input that has a gradient in a network requires one here,
the input of a layer included, so backward computes the same gradients on both sides.

The work that turns a time into a rate:

* convolution: ``2 * N * C_out * H_out * W_out * (C_in / groups) * kh * kw`` flops forward,
  twice that backward (input and weight gradients; the bias gradient is not counted);
* memory-bound ops: the bytes an ideal kernel reads plus writes (fp32, 4 bytes; int64
  indices 8), for ``n`` input and ``m`` output elements:

  =============  =========================  ================================================
  op             forward                    backward
  =============  =========================  ================================================
  relu           read n, write n: ``8n``    read grad and output, write grad: ``12n``
  dropout        read n, write n: ``8n``    read grad, write grad (the mask, regenerated or
                                            read as n/8 bytes of bits, is not counted): ``8n``
  max_pool2d     read n, write m: ``4n+4m`` read grad and int64 indices, write the input
                                            grad: ``4m + 8m + 4n``
  =============  =========================  ================================================

  torch's kernels may move more (its dropout writes a mask); the count is the op's, the same
  for both sides, so GB/s compare like with like.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, List, Optional, Tuple, TypeVar

import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

from .cases import Case
from .timing import Candidate, Laps

Context = Callable[[], ContextManager]
T = TypeVar("T")


@dataclass
class Contest:
    """One case ready to time: the shared tensors and every contender."""

    inputs: List[torch.Tensor]                      # the op's arguments; those with grads require them
    grad: torch.Tensor                              # the output gradient backward starts from
    ours: Dict[str, Callable[..., torch.Tensor]]    # variant -> op
    theirs: Dict[str, Callable[..., torch.Tensor]]  # torch's implementation label -> op
    contexts: Dict[str, Context]                    # settings a torch implementation runs under
    metric: str                                     # "gflops" or "gbps"
    work: Dict[str, float]                          # pass -> flops or bytes
    auto: Optional[str] = None                      # the conv2d variant algorithm="auto" runs
    # (ours, theirs) that make rows, where not every pair does: on a GPU float32 convolutions run
    # twice on both sides, TF32 off and on, and only like is set against like.
    pairs: Optional[List[Tuple[str, str]]] = None
    autos: Optional[set] = None                     # with pairs: the candidates auto runs

    def is_auto(self, name: str) -> Optional[bool]:
        if self.autos is not None:
            return name in self.autos
        return name == self.auto if self.auto else None

    def rows(self) -> List[Tuple[str, str]]:
        return self.pairs if self.pairs is not None else [(o, t) for o in self.ours for t in self.theirs]

    @staticmethod
    def variant(name: str) -> str:
        """The variant a candidate's rows name: "im2col@tf32" is im2col, under TF32."""
        return name.split(TF32_MARK)[0]


TF32_MARK = "@tf32"


def _tf32(enabled: bool) -> Context:
    @contextlib.contextmanager
    def context():
        saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = enabled
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = saved
    return context


def torch_conv_impls(device: str, dtype: str = "float32") -> Dict[str, Context]:
    """torch's convolution as the yardstick: oneDNN on the CPU; on a GPU cuDNN, in float32 twice,
    with TF32 off (fp32 arithmetic) and on (its tensor-core default for convolutions). Ours runs
    under the same setting as the cuDNN it is set against (see _conv)."""
    if device == "cuda":
        return {"cudnn": _tf32(False), "cudnn-tf32": _tf32(True)} if dtype == "float32" else {"cudnn": _tf32(False)}
    return {"onednn" if torch.backends.mkldnn.is_available() else "aten": contextlib.nullcontext}


def auto_algorithm(case: Case, device: str = "cpu", conv_pass: str = "fwd",
                   tf32: Optional[bool] = None) -> str:
    """The algorithm conv2d's "auto" picks on ``device`` ("cpu", "cuda" or "simt") for one pass
    ("fwd", "bwd_input", "bwd_weight"), as the extension itself decides it
    (csrc/ops/conv2d_auto.cpp). The CUDA kernels' rule can differ between passes; the benchmark
    marks the variant auto runs forward. ``tf32``: float32 under that TF32 setting rather than
    torch.backends.cudnn.allow_tf32's."""
    c, h, w = case.shape
    p = case.params
    k, pad, stride = p["kernel"], p["padding"], p["stride"]
    # float32 on CUDA follows torch's TF32 rule for convolutions (tensor cores from sm_80).
    allow_tf32 = torch.backends.cudnn.allow_tf32 if tf32 is None else tf32
    # half and bfloat16 always run on tensor cores there.
    tensor_cores = (device == "cuda" and (allow_tf32 or case.dtype != "float32")
                    and torch.cuda.get_device_capability()[0] >= 8)
    return fastconv._C.conv2d_auto_algorithm(device, conv_pass, [case.batch, c, h, w], [p["out_channels"], c // p["groups"], k, k],
                                             [stride, stride], [pad, pad], [1, 1], p["groups"], tensor_cores)


def conv_flops(case: Case) -> float:
    c, h, w = case.shape
    p = case.params
    k, pad, stride = p["kernel"], p["padding"], p["stride"]
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    return 2.0 * case.batch * p["out_channels"] * ho * wo * (c // p["groups"]) * k * k


def variants(case: Case, direct_max_gflop: float = float("inf"), device: str = "cpu") -> List[str]:
    """fastconv's contenders on ``case``.

    conv2d's ``winograd`` variant runs where it can (3x3, stride 1, on the CPU); its ``direct``
    variant is left out where the forward pass exceeds ``direct_max_gflop``
    (unless "auto" would pick it): it is the simple reference kernel, several times slower
    than im2col off the first layers, and would take minutes per case on VGG16's big layers.
    On the CUDA kernels (cuda, simt) ``auto`` runs too: there each pass picks its own
    algorithm, so auto's training pass can be neither variant's (on the CPU it is one of them).
    """
    if case.op == "conv2d":
        # winograd: 3x3 stride-1 layers (the cases are undilated), on the C++ kernels only
        winograd = ["winograd"] if device == "cpu" and case.params["kernel"] == 3 and case.params["stride"] == 1 else []
        per_pass = [] if device == "cpu" else ["auto"]
        if conv_flops(case) / 1e9 > direct_max_gflop and auto_algorithm(case, device) != "direct":
            return ["im2col", *winograd, *per_pass]
        return ["direct", "im2col", *winograd, *per_pass]
    if case.op == "conv2d_relu":
        return ["fused", "unfused"]
    return ["fastconv"]


def torch_impls(case: Case, device: str) -> Dict[str, Context]:
    """torch's contenders on ``case`` and the settings each runs under."""
    if case.op in ("conv2d", "conv2d_relu", "model"):
        return torch_conv_impls(device, case.dtype)
    return {"aten": contextlib.nullcontext}


def build(case: Case, device: str, direct_max_gflop: float = float("inf")) -> Contest:
    """The tensors and contenders of ``case`` on ``device`` ("cpu", "cuda" or "simt")."""
    dev = "cuda" if device == "cuda" else "cpu"
    dtype = getattr(torch, case.dtype)
    x = torch.randn(case.input_shape, device=dev, dtype=dtype, requires_grad=True)
    impls = torch_impls(case, dev)
    names = variants(case, direct_max_gflop, device)
    if case.op in ("conv2d", "conv2d_relu"):
        return _conv(case, dev, x, names, impls, "auto" if "auto" in names else auto_algorithm(case, device))
    if case.op == "max_pool2d":
        k, s = case.params["kernel"], case.params["stride"]
        ours = lambda t: FF.max_pool2d(t, k, s)  # noqa: E731
        theirs = lambda t: F.max_pool2d(t, k, s)  # noqa: E731
        with torch.no_grad():
            y = F.max_pool2d(x, k, s)
        n, m = x.numel(), y.numel()
        work = {"fwd": 4 * n + 4 * m, "bwd": 4 * m + 8 * m + 4 * n}
        grad = torch.randn_like(y)
    elif case.op == "relu":
        ours, theirs = FF.relu, F.relu
        n = x.numel()
        work = {"fwd": 8 * n, "bwd": 12 * n}
        grad = torch.randn_like(x)
    elif case.op == "dropout":
        p = case.params["p"]
        ours = lambda t: FF.dropout(t, p, training=True)  # noqa: E731
        theirs = lambda t: F.dropout(t, p, training=True)  # noqa: E731
        n = x.numel()
        work = {"fwd": 8 * n, "bwd": 8 * n}
        grad = torch.randn_like(x)
    else:
        raise ValueError(f"no contenders for op {case.op!r}")
    return Contest([x], grad, {name: ours for name in names}, {name: theirs for name in impls}, impls, "gbps",
                   {**work, "fwd+bwd": work["fwd"] + work["bwd"]})


def _conv(case: Case, dev: str, x: torch.Tensor, names: List[str], impls: Dict[str, Context], auto: str) -> Contest:
    c = case.shape[0]
    p = case.params
    groups, cout, k = p["groups"], p["out_channels"], p["kernel"]
    w = (torch.randn(cout, c // groups, k, k, device=dev, dtype=x.dtype) / (c // groups * k * k) ** 0.5).requires_grad_()
    b = torch.randn(cout, device=dev, dtype=x.dtype, requires_grad=True)
    geometry = dict(stride=p["stride"], padding=p["padding"], groups=groups)
    flops = conv_flops(case)
    if case.op == "conv2d":
        ours = {a: (lambda xx, ww, bb, a=a: FF.conv2d(xx, ww, bb, algorithm=a, **geometry)) for a in names}
        torch_op = lambda xx, ww, bb: F.conv2d(xx, ww, bb, **geometry)  # noqa: E731
    else:
        # Fused against conv2d followed by an in-place relu (as the seed models run it), both
        # fastconv with algorithm="auto"; torch has no fused op, so it runs conv2d + relu_.
        ours = {"fused": lambda xx, ww, bb: FF.conv2d_relu(xx, ww, bb, **geometry),
                "unfused": lambda xx, ww, bb: FF.relu(FF.conv2d(xx, ww, bb, **geometry), inplace=True)}
        torch_op = lambda xx, ww, bb: F.relu(F.conv2d(xx, ww, bb, **geometry), inplace=True)  # noqa: E731
        auto = None
    with torch.no_grad():
        y = F.conv2d(x, w, b, **geometry)
    work = {"fwd": flops, "bwd": 2 * flops, "fwd+bwd": 3 * flops}
    contest = Contest([x, w, b], torch.randn_like(y), ours, {name: torch_op for name in impls}, dict(impls),
                      "gflops", work, auto=auto)
    if "cudnn-tf32" in impls:
        _pair_by_tf32(contest, case)
    return contest


def tf32_twins(ours: Dict[str, T]) -> Tuple[Dict[str, T], Dict[str, Context], List[Tuple[str, str]]]:
    """float32 on a GPU: every contender of ours runs twice, under cuDNN's TF32 setting off and on
    (the twin is named ``name@tf32``), and is set against the cuDNN run under the same setting.
    Returns the contenders, the setting each runs under, and the (ours, theirs) pairs."""
    twins: Dict[str, T] = {}
    contexts: Dict[str, Context] = {}
    pairs: List[Tuple[str, str]] = []
    for name, contender in ours.items():
        twin = name + TF32_MARK
        twins[name], twins[twin] = contender, contender
        contexts[name], contexts[twin] = _tf32(False), _tf32(True)
        pairs += [(name, "cudnn"), (twin, "cudnn-tf32")]
    return twins, contexts, pairs


def _pair_by_tf32(contest: Contest, case: Case) -> None:
    """Ours TF32 off and on, each against cuDNN under the same setting (auto picks per setting)."""
    contest.ours, contexts, contest.pairs = tf32_twins(contest.ours)
    contest.contexts.update(contexts)
    if contest.auto == "auto":
        contest.autos = {"auto", "auto" + TF32_MARK}
    elif contest.auto is not None:
        contest.autos = {auto_algorithm(case, "cuda", tf32=False), auto_algorithm(case, "cuda", tf32=True) + TF32_MARK}


# ---------------------------------------------------------------------- timed candidates

def forward(op: Callable[..., torch.Tensor], inputs: List[torch.Tensor], context: Context) -> Candidate:
    """Inference: the forward pass under ``no_grad``, on inputs that do not require grad (torch's
    max_pool2d skips its indices only then)."""
    detached = [t.detach() for t in inputs]

    def run(laps: Laps) -> None:
        with context(), torch.no_grad():
            laps.start()
            out = op(*detached)
            laps.lap()
        del out  # freed after the clock stopped

    return run


def forward_backward(op: Callable[..., torch.Tensor], inputs: List[torch.Tensor], grad: torch.Tensor,
                     context: Context) -> Candidate:
    """A training pass in two phases: forward recording autograd, then backward from ``grad``
    (the gradients of the previous call are dropped first, untimed, so none accumulate)."""

    def run(laps: Laps) -> None:
        for t in inputs:
            t.grad = None
        with context():
            laps.start()
            out = op(*inputs)
            laps.lap()
            out.backward(grad)
            laps.lap()

    return run
