"""The benchmark runner (python -m bench): its results follow bench/schema.json, its chart is a
PNG, compare and report read what it writes, and its parts (timing, cases, the torch twin of a
model) do what the results claim. Runs are tiny: one repetition, batch 1, one thread.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastconv
from bench import cases, machine, model, ops, report, runner, schema, timing
from bench.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--repeats", "1", "--min-repeats", "1", "--warmup", "1", "--threads", "1"]


def bench(*args: str) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` in a fresh interpreter, in the repository root."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
    """One CLI run: ``python -m bench --quick --only relu --batch 1 --out DIR``, with its files."""
    out = tmp_path_factory.mktemp("bench")
    run = bench("--quick", "--only", "relu", "--batch", "1", "--device", "cpu", "--out", str(out), *TINY)
    assert run.returncode == 0, run.stderr
    files = sorted(out.iterdir())
    return run, files


def test_run_writes_one_json_and_one_png_named_after_device_and_machine(relu_run):
    _, files = relu_run
    assert [f.suffix for f in files] == [".json", ".png"]
    assert files[0].stem == files[1].stem and files[0].stem.startswith("cpu-")


def test_cpu_file_names_carry_the_instruction_set(relu_run):
    _, files = relu_run
    ran_on = json.loads(files[0].read_text())["machine"]
    assert ran_on["cpu_isa_selected"] == fastconv.build_info()["cpu_isa"]
    assert files[0].stem.endswith(f"-{ran_on['cpu_isa_selected']}-1t")  # TINY runs one thread
    # One brand string, two machine kinds: the file names must not collide.
    epyc = {"cpu": "AMD EPYC", "threads": 2}
    names = {machine.slug("cpu", dict(epyc, cpu_isa_selected=isa)) for isa in ("avx2", "avx512")}
    assert names == {"amd-epyc-avx2-2t", "amd-epyc-avx512-2t"}
    assert machine.slug("cuda", dict(epyc, gpu="NVIDIA H100 80GB HBM3")) == "nvidia-h100-80gb-hbm3"


def test_json_follows_the_schema(relu_run):
    _, files = relu_run
    text = files[0].read_text()
    doc = json.loads(text)
    assert text.count("\n  {\"op\": ") == len(doc["rows"])  # one row per line
    assert schema.validate(doc) == []
    assert doc["schema"] == "fastconv-bench/1" and doc["device"] == "cpu"
    rows = doc["rows"]
    assert {r["op"] for r in rows} == {"relu"} and {r["batch"] for r in rows} == {1}
    assert {r["pass"] for r in rows} == {"fwd", "bwd", "fwd+bwd"}
    for r in rows:
        assert r["ratio_to_torch"] == pytest.approx(r["ours_ms"] / r["torch_ms"])
        assert r["gbps"] == pytest.approx(r["work"] / (r["ours_ms"] / 1e3) / 1e9)
        assert r["percent_of_peak"] == pytest.approx(100 * r["gbps"] / doc["probes"]["bandwidth_gbps"])
        assert r["gflops"] is None and r["metric"] == "gbps"
    probes = doc["probes"]
    assert probes["fp32_peak_gflops"] > 0 and probes["bandwidth_gbps"] > 0
    names = {m["name"] for m in probes["measurements"]}
    assert {"mkl_sgemm", "copy", "add"} <= names


def test_png_is_an_image(relu_run):
    from PIL import Image

    png = relu_run[1][1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.width > 200 and image.height > 200


def test_stdout_is_a_markdown_table_and_the_progress_bar_is_on_stderr(relu_run):
    run, _ = relu_run
    assert "### relu (cpu)" in run.stdout
    assert "| layer | N | pass | variant |" in run.stdout
    assert "%|" not in run.stdout
    assert "case" in run.stderr  # tqdm's unit


def test_compare_reports_the_speedup_of_matching_rows(relu_run, tmp_path, capsys):
    before = json.loads(relu_run[1][0].read_text())
    after = copy.deepcopy(before)
    for row in after["rows"]:
        row["ours_ms"] /= 2
        row["ratio_to_torch"] /= 2
    after["rows"].append({**after["rows"][0], "layer": "only in after"})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(before))
    b.write_text(json.dumps(after))
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| relu")]
    assert len(table) == len(before["rows"])
    assert all("| 2.00x |" in line for line in table)
    assert "1 only after, 0 only before" in out
    assert "relu 2.00x" in out  # geometric mean


def test_report_prints_filtered_tables(relu_run, capsys):
    assert main(["report", str(relu_run[1][0]), "--pass", "fwd+bwd", "--no-heading"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| 4096 ")]
    assert len(lines) == 1 and "| fwd+bwd |" in lines[0]
    assert "Limits probed" not in out


def test_reading_a_file_that_breaks_the_schema_fails(relu_run, tmp_path):
    doc = json.loads(relu_run[1][0].read_text())
    doc["rows"][0]["pass"] = "sideways"
    del doc["rows"][1]["torch_ms"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(schema.SchemaError, match=r"rows\[0\]\.pass: 'sideways' is not one of[\s\S]*rows\[1\]: 'torch_ms' is a required"):
        schema.load(bad)


def test_simt_smoke_run_and_unavailable_cuda(tmp_path):
    run = bench("--device", "simt", "cuda", "--only", "conv2d_relu", "--batch", "1",
                "--no-progress", "--out", str(tmp_path), *TINY)
    assert run.returncode == 0, run.stderr
    if not torch.cuda.is_available():
        assert "cuda: skipped" in run.stderr
    doc = json.loads((tmp_path / [f for f in os.listdir(tmp_path) if f.startswith("simt-")
                                  and f.endswith(".json")][0]).read_text())
    assert schema.validate(doc) == []
    assert {(r["variant"], r["pass"]) for r in doc["rows"]} == {
        (v, p) for v in ("fused", "unfused") for p in ("fwd", "bwd", "fwd+bwd")}
    assert all(r["input_shape"][0] == 1 and r["device"] == "simt" for r in doc["rows"])


# ------------------------------------------------------------------------------ the parts

def test_interleaved_alternates_the_order_and_times_each_phase():
    calls = []

    def candidate(name):
        def run(laps):
            laps.start()
            calls.append(name)
            laps.lap()
            laps.lap()
        return run

    samples = timing.interleaved({"a": candidate("a"), "b": candidate("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]
    assert [len(p) for p in samples["a"].phases] == [2, 2, 2]
    assert samples["a"].series() == [sum(p) for p in samples["a"].phases]


def test_interleaved_fits_the_repeats_to_the_budget():
    import time

    def slow(laps):
        laps.start()
        time.sleep(0.01)
        laps.lap()

    samples = timing.interleaved({"x": slow}, repeats=50, warmup=1, min_repeats=2, budget_s=0.035)
    assert 2 <= len(samples["x"].phases) <= 4
    assert len(timing.interleaved({"x": slow}, repeats=50, min_repeats=3, budget_s=0.0)["x"].phases) == 3


def test_iqr():
    assert timing.iqr([1.0]) == 0.0
    assert timing.iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0)


def test_cases_hold_the_seed_layers():
    layers = {(layer.kind, layer.net, layer.label) for layer in cases.seed_layers()}
    for label in ("3->32 3x3 @150", "32->64 3x3 @74", "64->128 3x3 @36", "128->128 3x3 @17"):
        assert ("conv", "convnet4", label) in layers
    for label in ("2x2 on 32@148", "2x2 on 64@72", "2x2 on 128@34", "2x2 on 128@15"):
        assert ("pool", "convnet4", label) in layers
    assert ("conv", "convnet3", "32->32 3x3 p1 @75") in layers
    vgg = [label for kind, net, label in layers if kind == "conv" and net == "vgg16"]
    assert len(vgg) == 9 and "512->512 3x3 p1 @14" in vgg and "3->64 3x3 p1 @224" in vgg
    assert ("conv", "1x1", "256->256 1x1 @28") in layers
    assert ("relu", "convnet4", "32x148x148") in layers and ("dropout", "convnet4", "6272 p=0.5") in layers
    assert ("dropout", "convnet3", "64x18x18 p=0.25") in layers
    selected = cases.select("cpu")
    assert {c.batch for c in selected} == {1, 16, 32}
    assert {c.op for c in selected} == set(cases.OPS)


def test_case_filters():
    picked = cases.select("cpu", only=["max_pool2d"], batches=[16], nets=["convnet4"])
    assert [c.layer for c in picked] == ["2x2 on 32@148", "2x2 on 64@72", "2x2 on 128@34", "2x2 on 128@15"]
    assert all(c.batch == 16 and c.input_shape[0] == 16 for c in picked)
    assert all(max(c.input_shape[2:], default=0) <= 12 for c in cases.select("simt"))


def test_conv_work_and_the_auto_variant():
    case = cases.Case("conv2d", "convnet4", "32->64 3x3 @74", 16, (32, 74, 74),
                      {"out_channels": 64, "kernel": 3, "stride": 1, "padding": 0, "groups": 1})
    assert ops.conv_flops(case) == 2 * 16 * 64 * 72 * 72 * 32 * 9
    assert ops.auto_algorithm(case) == "winograd"
    assert ops.variants(case) == ["direct", "im2col", "winograd"]
    assert ops.variants(case, direct_max_gflop=1.0) == ["im2col", "winograd"]
    assert ops.variants(case, device="simt") == ["direct", "im2col", "auto"]  # per-pass picks there
    depthwise = cases.Case("conv2d", "grouped", "", 16, (32, 74, 74),
                           {"out_channels": 32, "kernel": 3, "stride": 1, "padding": 0, "groups": 32})
    assert ops.auto_algorithm(depthwise) == "direct"
    assert ops.variants(depthwise, direct_max_gflop=0.0) == ["direct", "im2col", "winograd"]


def test_torch_twin_has_the_same_weights_and_torch_layers():
    torch.manual_seed(0)
    ours = fastconv.models.convnet4().eval()
    twin = model.torch_twin(ours).eval()
    assert not any(type(m).__module__.startswith("fastconv") for m in twin.modules())
    for (name, a), (name_b, b) in zip(ours.state_dict().items(), twin.state_dict().items()):
        assert name == name_b and torch.equal(a, b)
    x = torch.randn(1, 3, 150, 150)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), twin(x), rtol=1e-4, atol=1e-4)


def test_chart_of_an_empty_document(tmp_path, relu_run):
    doc = json.loads(relu_run[1][0].read_text())
    doc["rows"] = []
    report.chart(doc, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_reports_of_a_gpu_run_show_both_cudnn_baselines(relu_run, tmp_path):
    """A GPU run compares convolutions with cuDNN twice (TF32 off and on); without a GPU here, its
    rows are made from the relu run's."""
    doc = json.loads(relu_run[1][0].read_text())
    doc["device"] = "cuda"
    doc["machine"]["gpu"] = "Some GPU"
    rows = []
    for r in doc["rows"]:
        for impl, factor in (("cudnn", 1.0), ("cudnn-tf32", 0.5)):
            rows.append({**r, "op": "conv2d", "variant": "im2col", "device": "cuda", "torch_impl": impl,
                         "torch_ms": r["torch_ms"] * factor, "ratio_to_torch": r["ratio_to_torch"] / factor,
                         "metric": "gflops", "gflops": 1.0, "gbps": None, "torch_gflops": 1.0 / factor,
                         "torch_gbps": None, "peak": "fp32_peak_gflops", "auto": True})
    doc["rows"] = rows
    assert schema.validate(doc) == []
    table = report.markdown(doc)
    assert "| cuDNN, TF32 off |" in table and "| cuDNN, TF32 on |" in table
    assert "im2col (auto)" in table
    summary = report.summary(doc)
    assert "ratio vs cuDNN, TF32 on" in summary and "torch ms (cuDNN, TF32 off)" in summary
    report.chart(doc, tmp_path / "gpu.png")
    assert (tmp_path / "gpu.png").stat().st_size > 0


def test_console_script_is_installed_with_the_runner():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, _, function = project["project"]["scripts"]["fastconv-bench"].partition(":")
    assert module == "bench.__main__" and function == "main" and callable(main)
    setuptools = project["tool"]["setuptools"]
    assert "bench" in setuptools["packages"]  # the script's package is installed
    assert "schema.json" in setuptools["package-data"]["bench"]  # and the schema it validates with


def test_simt_run_times_conv2d_in_half_precision(tmp_path):
    """--dtype: conv2d once per dtype, labelled by it; the other ops stay in float32."""
    run = bench("--device", "simt", "--only", "conv2d", "relu", "--batch", "1", "--dtype", "float32", "bfloat16",
                "--no-progress", "--out", str(tmp_path), *TINY)
    assert run.returncode == 0, run.stderr
    doc = schema.load(next(tmp_path.glob("simt-*.json")))
    conv = [r for r in doc["rows"] if r["op"] == "conv2d"]
    assert {r["dtype"] for r in conv} == {"float32", "bfloat16"}
    assert all(r["layer"].endswith(" bf16") == (r["dtype"] == "bfloat16") for r in conv)
    assert {r["dtype"] for r in doc["rows"] if r["op"] == "relu"} == {"float32"}
    assert doc["settings"]["dtypes"] == ["float32", "bfloat16"]
    cpu = bench("--device", "cpu", "--dtype", "float16", "--list")
    assert cpu.returncode == 0 and "left out" in cpu.stderr


def test_gpu_float32_sets_like_against_like(monkeypatch):
    """On a GPU, float32 convolutions run twice on both sides, TF32 off and on, and each of ours is
    set against cuDNN under the same setting, with auto marked per setting. Without a GPU the
    case runs on simt with cuDNN's two settings and the CUDA auto rule stood in."""
    case = next(c for c in cases.select("simt", batches=[1]) if c.op == "conv2d")
    monkeypatch.setattr(ops, "torch_impls", lambda case, device: ops.torch_conv_impls("cuda"))
    monkeypatch.setattr(ops, "auto_algorithm", lambda case, device="cpu", conv_pass="fwd", tf32=None:
                        "im2col" if tf32 else "direct")  # the forward's pick, stood in
    seen = []
    names, contexts, pairs = ops.tf32_twins({"im2col": lambda: seen.append(torch.backends.cudnn.allow_tf32)})
    assert pairs == [("im2col", "cudnn"), ("im2col@tf32", "cudnn-tf32")]
    for name in ("im2col", "im2col@tf32"):
        with contexts[name]():
            names[name]()
    assert seen == [False, True]

    settings = runner.Settings(repeats=1, min_repeats=1, budget_s=0.01)
    with fastconv.backend("simt"):
        rows = runner.run_layer_case(case, "simt", settings, {})
    pairs = {(r["variant"], r["torch_impl"], r["auto"]) for r in rows}
    assert pairs == {(v, impl, v == "auto") for v in ("direct", "im2col", "auto") for impl in ("cudnn", "cudnn-tf32")}
    assert len(rows) == 6 * 3
    # Without an "auto" contender (a hand-built contest) the rule's pick per setting is marked.
    contest = ops.Contest([], torch.empty(0), {"direct": None, "im2col": None}, {}, ops.torch_conv_impls("cuda"),
                          "gflops", {}, auto="direct")
    ops._pair_by_tf32(contest, case)
    assert contest.is_auto("direct") and contest.is_auto("im2col@tf32") and not contest.is_auto("im2col")
