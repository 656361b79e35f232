"""The backend switch, build facts, and torch.compile over the ops."""

import os
import subprocess
import sys

import pytest
import torch

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn


def test_available_backends_and_build():
    backends = fastconv.available_backends()
    assert backends[0] == "cpu" and "simt" in backends
    assert ("cuda" in backends) == (fastconv.cuda_compiled() and torch.cuda.is_available())
    assert isinstance(fastconv.cuda_compiled(), bool)


def test_cpu_kernels_run_on_several_threads():
    # at::parallel_for is an OpenMP loop compiled into the extension: built
    # without -fopenmp, every CPU kernel would quietly run on one thread.
    from fastconv import _C

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _C.parallel_for_threads() == 2
        torch.set_num_threads(1)
        assert _C.parallel_for_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="fastconv.backend: unknown backend 'tpu'"):
        with fastconv.backend("tpu"):
            pass


def test_context_nests_and_restores():
    assert fastconv.current_backend() == "auto"
    with fastconv.backend("simt"):
        assert fastconv.current_backend() == "simt"
        with fastconv.backend("cpu"):
            assert fastconv.current_backend() == "cpu"
        assert fastconv.current_backend() == "simt"
    assert fastconv.current_backend() == "auto"


def test_backward_keeps_the_forward_backend():
    x = torch.randn(6, requires_grad=True)
    with fastconv.backend("simt"):
        y = FF.relu(x)
    # Backward runs after the context closed; the graph recorded "simt".
    node = y.grad_fn
    y.sum().backward()
    torch.testing.assert_close(x.grad, (x > 0).float())
    assert node is not None
    with torch.profiler.profile() as prof:
        with fastconv.backend("simt"):
            z = FF.relu(x)
        z.sum().backward()
    names = [e.name for e in prof.events()]
    assert "fastconv::relu_backward" in names


def test_backend_must_fit_the_device():
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        torch.ops.fastconv.relu(torch.randn(3), "cuda")


@pytest.mark.cuda
def test_simt_rejects_cuda_tensors():
    with pytest.raises(RuntimeError, match="runs CPU tensors"):
        torch.ops.fastconv.relu(torch.randn(3, device="cuda"), "simt")


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(16, 16)
        self.relu = fnn.ReLU()
        self.drop = fnn.Dropout(0.3)

    def forward(self, x):
        return self.drop(self.relu(self.linear(x)))


def test_compile_fullgraph_matches_eager():
    model = _Block()
    x = torch.randn(8, 16, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.manual_seed(3)
    eager_out = model(x)
    eager_out.sum().backward()
    eager_grad = x.grad.clone()
    x.grad = None
    torch.manual_seed(3)
    compiled_out = compiled(x)
    compiled_out.sum().backward()
    # The dropout seed is drawn from torch's generator in both, so the masks agree.
    torch.testing.assert_close(compiled_out, eager_out)
    torch.testing.assert_close(x.grad, eager_grad)
    model.eval()
    torch.testing.assert_close(compiled(x), model(x))


def test_import_prints_expected_facts():
    out = subprocess.run(
        [sys.executable, "-c", "import fastconv; print(fastconv.available_backends(), fastconv.cuda_compiled())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out.startswith("['cpu',")


def test_build_info_reports_the_build_and_the_choices_made_here():
    info = fastconv.build_info()
    assert info["cuda_compiled"] == fastconv.cuda_compiled()
    assert info["torch_built_against"].split("+")[0] == torch.__version__.split("+")[0]
    assert info["torch_headers"] == torch.__version__.split("+")[0]
    assert info["cpu_isa"] in ("avx512", "avx2", "baseline")
    assert info["threads"] == torch.get_num_threads()
    assert info["simt"]["order"] in ("forward", "reversed", "shuffled")
    if info["cuda_compiled"]:
        assert info["cuda_archs"], "a CUDA build records its architectures"


def test_info_command_prints_the_build_with_the_selected_isa():
    env = dict(os.environ, FASTCONV_CPU_ISA="baseline", FASTCONV_SIMT_ORDER="shuffled")
    out = subprocess.run([sys.executable, "-m", "fastconv.info"], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert "cpu_isa" in out and "baseline" in out
    assert '"order": "shuffled"' in out
    assert "torch_built_against" in out
