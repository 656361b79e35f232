"""Reading results documents: Markdown tables, the change between two runs, the chart."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from . import cpu_targets

OP_ORDER = ("conv2d", "conv2d_relu", "max_pool2d", "relu", "dropout", "model")
PASS_ORDER = ("fwd", "bwd", "fwd+bwd", "step", "infer")
TORCH_LABEL = {"onednn": "oneDNN", "aten": "ATen", "cudnn": "cuDNN, TF32 off", "cudnn-tf32": "cuDNN, TF32 on"}


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _rate(value: Optional[float]) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _percent(value: Optional[float]) -> str:
    if value is None:
        return ""
    return f"{value:.0f}%" if value >= 10 else f"{value:.1f}%"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right_from: int = 0) -> List[str]:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if i >= right_from else "---" for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _filtered(rows: List[Dict], ops=None, passes=None, batches=None, nets=None) -> List[Dict]:
    return [r for r in rows if (not ops or r["op"] in ops) and (not passes or r["pass"] in passes)
            and (not batches or r["batch"] in batches) and (not nets or r["net"] in nets)]


def _sort_key(layer_order: Dict[Tuple[str, str], int]):
    def key(r: Dict):
        return (layer_order[(r["op"], r["layer"])], r["batch"], PASS_ORDER.index(r["pass"]))
    return key


def heading(doc: Dict) -> List[str]:
    """Where and how the figures were measured, and the machine's limits, in a few lines."""
    m, v, p = doc["machine"], doc["versions"], doc["probes"]
    where = m["gpu"] if doc["device"] == "cuda" and m.get("gpu") else m["cpu"]
    commit = f" (commit {v['fastconv_commit'][:7]}{'-dirty' if str(v.get('fastconv_commit')).endswith('-dirty') else ''})" \
        if v.get("fastconv_commit") else ""
    theo = p["theoretical"].get("fp32_gflops")
    return [
        f"**{doc['device']}** on {where}, {m['threads']} threads; torch {v['torch']}, fastconv {v['fastconv']}{commit}; "
        f"{'quick run, ' if doc['settings'].get('quick') else ''}{doc['created']}.",
        "",
        f"Limits probed: fp32 GEMM {p['fp32_peak_gflops']:.0f} GFLOP/s ({p['fp32_peak_source']}"
        + (f"; theoretical {theo:.0f}" if theo else "") + f"), streaming bandwidth {p['bandwidth_gbps']:.1f} GB/s "
        f"({p['bandwidth_source']}, read + written). ms: median ± IQR; ratio: fastconv / torch time "
        "(below 1: fastconv faster); % peak: fastconv's rate as a share of the limit.",
    ]


def markdown(doc: Dict, ops: Optional[Sequence[str]] = None, passes: Optional[Sequence[str]] = None,
             batches: Optional[Sequence[int]] = None, nets: Optional[Sequence[str]] = None,
             with_heading: bool = True) -> str:
    """One Markdown table per op over the document's rows (optionally filtered)."""
    rows = _filtered(doc["rows"], ops, passes, batches, nets)
    layer_order: Dict[Tuple[str, str], int] = {}
    for r in doc["rows"]:
        layer_order.setdefault((r["op"], r["layer"]), len(layer_order))
    lines: List[str] = heading(doc) + [""] if with_heading else []
    for op in OP_ORDER:
        mine = sorted((r for r in rows if r["op"] == op), key=_sort_key(layer_order))
        if not mine:
            continue
        metric = "GFLOP/s" if mine[0]["metric"] == "gflops" else "GB/s"
        impls = list(OrderedDict.fromkeys(r["torch_impl"] for r in mine))
        several = len(impls) > 1
        header = ["layer", "N", "pass", "variant"] + (["torch"] if several else []) + [
            "fastconv ms", f"torch ms ({TORCH_LABEL[impls[0]]})" if not several else "torch ms", "ratio",
            f"fastconv {metric}", f"torch {metric}", "% peak"]
        body = []
        for r in mine:
            variant = r["variant"] + (" (auto)" if r.get("auto") else "")
            rate = r["gflops"] if metric == "GFLOP/s" else r["gbps"]
            torch_rate = r["torch_gflops"] if metric == "GFLOP/s" else r["torch_gbps"]
            body.append([r["layer"], str(r["batch"]), r["pass"], variant]
                        + ([TORCH_LABEL[r["torch_impl"]]] if several else [])
                        + [f"{_ms(r['ours_ms'])} ± {_ms(r['ours_iqr_ms'])}",
                           f"{_ms(r['torch_ms'])} ± {_ms(r['torch_iqr_ms'])}",
                           f"{r['ratio_to_torch']:.2f}x", _rate(rate), _rate(torch_rate),
                           _percent(r["percent_of_peak"])])
        lines += [f"### {op} ({doc['device']})", ""] + _table(header, body, right_from=5 if several else 4) + [""]
    return "\n".join(lines)


# The summary's tables: op, pass, caption.
SUMMARY = (
    ("conv2d", "fwd+bwd", "conv2d, forward + backward (the variant algorithm=\"auto\" picks)"),
    ("conv2d_relu", "fwd", "conv2d_relu (fused conv2d + bias + ReLU) against conv2d then relu_, forward"),
    ("max_pool2d", "fwd+bwd", "max_pool2d, forward + backward"),
    ("relu", "fwd+bwd", "relu, forward + backward"),
    ("dropout", "fwd+bwd", "dropout, forward + backward"),
)


def _reference_batch(rows: List[Dict]) -> int:
    batches = {r["batch"] for r in rows}
    return 16 if 16 in batches else max(batches)


def summary(doc: Dict) -> str:
    """Compact tables for the README: per op and layer, the times at batch 16 (or the largest
    batch run), the ratio to torch at every batch size, the rates and the share of the limit;
    then the model rows in full. A CPU document starts with its targets (cpu_targets)."""
    lines = heading(doc) + [""]
    if doc["device"] == "cpu":
        lines += [cpu_targets.markdown(doc)]
    layer_order: Dict[Tuple[str, str], int] = {}
    for r in doc["rows"]:
        layer_order.setdefault((r["op"], r["layer"]), len(layer_order))
    for op, pass_, caption in SUMMARY:
        rows = [r for r in doc["rows"] if r["op"] == op and r["pass"] == pass_]
        if not rows:
            continue
        ref = _reference_batch(rows)
        batches = sorted({r["batch"] for r in rows})
        variants = list(OrderedDict.fromkeys(r["variant"] for r in rows))
        impls = list(OrderedDict.fromkeys(r["torch_impl"] for r in rows))
        metric = "GFLOP/s" if rows[0]["metric"] == "gflops" else "GB/s"
        rate = "gflops" if metric == "GFLOP/s" else "gbps"
        at = {(r["layer"], r["batch"], r["variant"], r["torch_impl"]): r for r in rows}
        header = (["layer", f"torch ms ({TORCH_LABEL[impls[0]]})"] + [f"{v} ms" for v in variants]
                  + [f"ratio N={b}" for b in batches]
                  + [f"ratio vs {TORCH_LABEL[i]}" for i in impls[1:]]
                  + (["fusion gain"] if op == "conv2d_relu" else [])
                  + [f"fastconv {metric}", f"torch {metric}", "% peak"])
        body = []
        for layer in sorted(OrderedDict.fromkeys(r["layer"] for r in rows), key=lambda l: layer_order[(op, l)]):
            def row(batch, variant=None, impl=impls[0]):
                if variant is None:  # the auto variant for conv2d, else the first
                    autos = [v for v in variants if (at.get((layer, batch, v, impl)) or {}).get("auto")]
                    variant = autos[0] if autos else variants[0]
                return at.get((layer, batch, variant, impl))
            main = row(ref)
            if main is None:
                continue
            cells = [layer, _ms(main["torch_ms"])]
            cells += [_ms(row(ref, v)["ours_ms"]) if row(ref, v) else "" for v in variants]
            cells += [f"{row(b)['ratio_to_torch']:.2f}x" if row(b) else "" for b in batches]
            cells += [f"{row(ref, impl=i)['ratio_to_torch']:.2f}x" if row(ref, impl=i) else "" for i in impls[1:]]
            if op == "conv2d_relu":
                fused, unfused = row(ref, "fused"), row(ref, "unfused")
                cells.append(f"{unfused['ours_ms'] / fused['ours_ms']:.2f}x" if fused and unfused else "")
            cells += [_rate(main[rate]), _rate(main[f"torch_{rate}"]), _percent(main["percent_of_peak"])]
            body.append(cells)
        lines += [f"**{caption}**; ms at N={ref}:", ""] + _table(header, body, right_from=1) + [""]
    if any(r["op"] == "model" for r in doc["rows"]):
        lines.append(markdown(doc, ops=["model"], with_heading=False))
    return "\n".join(lines).rstrip() + "\n"


def _key(r: Dict) -> tuple:
    return (r["device"], r["op"], r["variant"], r["net"], r["layer"], r["batch"], r["pass"], r["torch_impl"])


def compare(before: Dict, after: Dict) -> str:
    """The change from ``before`` to ``after``, per row found in both: fastconv's time before and
    after, its speedup (before / after, above 1: faster now), and the ratio to torch in each."""
    old = {_key(r): r for r in before["rows"]}
    matched = [(old[_key(r)], r) for r in after["rows"] if _key(r) in old]
    lines = []
    for name, doc in (("before", before), ("after", after)):
        m, v = doc["machine"], doc["versions"]
        lines.append(f"- {name}: {doc['device']} on {m.get('gpu') or m['cpu']}, {m['threads']} threads, "
                     f"fastconv {v['fastconv']} {str(v.get('fastconv_commit') or '')[:7]}, torch {v['torch']}, "
                     f"{doc['created']}")
    if before["machine"].get("cpu") != after["machine"].get("cpu") or \
            before["machine"].get("gpu") != after["machine"].get("gpu"):
        lines.append("- note: the two runs come from different machines; compare the ratios to torch, not times")
    lines.append(f"- {len(matched)} matching rows; {len(after['rows']) - len(matched)} only after, "
                 f"{len(before['rows']) - len(matched)} only before")
    lines.append("")
    body = []
    speedups: Dict[str, List[float]] = {}
    for a, b in matched:
        speedup = a["ours_ms"] / b["ours_ms"]
        speedups.setdefault(b["op"], []).append(speedup)
        body.append([b["op"], b["variant"], b["layer"], str(b["batch"]), b["pass"], b["torch_impl"],
                     _ms(a["ours_ms"]), _ms(b["ours_ms"]), f"{speedup:.2f}x",
                     f"{a['ratio_to_torch']:.2f}x", f"{b['ratio_to_torch']:.2f}x"])
    lines += _table(["op", "variant", "layer", "N", "pass", "torch", "before ms", "after ms", "speedup",
                     "ratio before", "ratio after"], body, right_from=6)
    if speedups:
        lines += ["", "Geometric mean speedup per op: " + ", ".join(
            f"{op} {math.exp(sum(map(math.log, s)) / len(s)):.2f}x ({len(s)} rows)" for op, s in speedups.items())]
    return "\n".join(lines) + "\n"


def chart(doc: Dict, path: Path) -> None:
    """A PNG of fastconv's time / torch's per op (one panel each) and layer: bars for the
    training pass (fwd+bwd; a model's step), dots for inference (fwd), log scale, 1 = torch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [op for op in OP_ORDER if any(r["op"] == op for r in doc["rows"])]
    if not ops:
        ops = ["(no rows)"]
    cases = {op: list(OrderedDict.fromkeys((r["layer"], r["batch"]) for r in doc["rows"] if r["op"] == op))
             for op in ops}
    widest = max([len(c) for c in cases.values()] + [4])
    fig, axes = plt.subplots(len(ops), 1, figsize=(max(8.0, 0.45 * widest + 3), 3.6 * len(ops)), squeeze=False)
    for ax, op in zip(axes[:, 0], ops):
        rows = [r for r in doc["rows"] if r["op"] == op]
        series = list(OrderedDict.fromkeys((r["variant"], r["torch_impl"]) for r in rows))
        width = 0.8 / max(len(series), 1)
        lo, hi = 1.0, 1.0
        for i, (variant, impl) in enumerate(series):
            label = variant if len({s[1] for s in series}) == 1 else f"{variant} vs {TORCH_LABEL[impl]}"
            for pass_, marker in (("fwd+bwd", "bar"), ("step", "bar"), ("fwd", "dot"), ("infer", "bar")):
                xs, ys = [], []
                for j, case in enumerate(cases[op]):
                    for r in rows:
                        if (r["variant"], r["torch_impl"], r["pass"]) == (variant, impl, pass_) and \
                                (r["layer"], r["batch"]) == case:
                            xs.append(j - 0.4 + width * (i + 0.5))
                            ys.append(r["ratio_to_torch"])
                if not xs:
                    continue
                color = f"C{i}"
                if marker == "bar":  # from the torch line at 1, up (slower) or down (faster)
                    ax.bar(xs, [y - 1 for y in ys], bottom=1, width=width * 0.9, color=color, label=label)
                    lo, hi = min(lo, *ys), max(hi, *ys)
                else:
                    ax.plot(xs, ys, "o", color="black", markersize=3, label="fwd" if i == 0 else None)
                    lo, hi = min(lo, *ys), max(hi, *ys)
        ax.axhline(1.0, color="gray", linewidth=1)
        ax.set_yscale("log")
        low, high = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
        step = max(1, math.ceil((high - low) / 8))  # at most about 8 ticks
        ticks = [2.0**e for e in range(low, high + 1) if (e - low) % step == 0 or e == 0]
        ax.set_yticks(ticks, [f"{t:g}x" if t >= 1 else f"1/{1 / t:g}x" for t in ticks])
        ax.minorticks_off()
        ax.set_ylim(ticks[0] / 1.1, ticks[-1] * 1.1)
        ax.set_xticks(range(len(cases[op])))
        ax.set_xticklabels([f"{layer}  N={batch}" for layer, batch in cases[op]], rotation=60, ha="right",
                           fontsize=7)
        ax.set_xlim(-0.6, max(len(cases[op]), 1) - 0.4)
        ax.set_ylabel("fastconv / torch time")
        what = "step and inference" if op == "model" else "bars fwd+bwd, dots fwd"
        ax.set_title(f"{op} on {doc['device']}: {what}; below 1: fastconv faster", fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        unique = OrderedDict(zip(labels, handles))
        if unique:
            ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
    m = doc["machine"]
    fig.suptitle(f"fastconv vs torch: {m.get('gpu') if doc['device'] == 'cuda' else m['cpu']}, "
                 f"{m['threads']} threads, torch {doc['versions']['torch']}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
