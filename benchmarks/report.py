# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Markdown tables from the JSON results of `throughput.py`, `scaling.py` and `gpu.py` (for the performance docs).

```bash
python benchmarks/report.py benchmarks/results/throughput.json benchmarks/results/scaling.json
```
"""

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common.case import method_label  # noqa: E402
from benchmarks.common.data import lengths_label  # noqa: E402


def _machine(payload: dict) -> str:
    m = payload["machine"]
    threads = payload.get("settings", {}).get("threads")
    load = payload.get("load_average_start"), payload.get("load_average_end")
    return (
        f"{m.get('cpu_model')} ({m.get('cpu_logical_cores')} logical cores visible, torch threads {threads}), "
        f"torch {m.get('torch')}, transformers {m.get('transformers')}, trl {m.get('trl')}, {m.get('date')}; "
        f"load average at start/end {load[0]} / {load[1]}"
    )


def throughput_tables(payload: dict) -> str:
    out = [f"Machine: {_machine(payload)}", "", f"Command: `{payload['command']}`", ""]
    out.append(
        "| data | variant | method | step s (spread) | tokens/step | tokens/s | step peak MiB | time ratio | "
        "token ratio | padded-position ratio | LM-head position ratio | memory ratio | time <= 1.1x tokens | "
        "memory <= 1.1x tokens |"
    )
    out.append("|" + "---|" * 14)
    for r in payload["ratios"]:
        lo, hi = r["step_time_spread_s"]
        out.append(
            f"| {r['data_used']} | {r['variant']} | {method_label(r['method'])} | {r['step_time_s']:.2f} "
            f"({lo:.2f}-{hi:.2f}) | {r['tokens_per_step']:.0f} | {r['tokens_per_s']:.0f} | "
            f"{r['step_peak_increase_mib']:.0f} | **{r['time_ratio']:.2f}** | {r['token_ratio']:.2f} | "
            f"{r['position_ratio']:.2f} | {r['scored_ratio']:.2f} | **{r['memory_ratio']:.2f}** | "
            f"{'yes' if r['time_target_met'] else 'no'} | {'yes' if r['memory_target_met'] else 'no'} |"
        )
    out.append("")
    for e in payload.get("prefix_sharing_exactness", []):
        out.append(
            f"- prefix sharing vs two-row, {e['model']} on {e['data_used']} ({e['pairs']} pairs, fp32): max |diff| of "
            f"c_w, c_l, u_w, u_l = {e['max_abs_diff']:.1e} (max relative {e['max_rel_diff']:.1e}; mean |log p| "
            f"{e['mean_abs_logp']:.0f})"
        )
    return "\n".join(out)


def scaling_tables(payload: dict) -> str:
    out = [f"Machine: {_machine(payload)}", "", f"Command: `{payload['command']}`", ""]
    if "lengths" in payload:
        out.append("| sweep | length | LM head | method | step s | time ratio | token ratio | memory ratio |")
        out.append("|" + "---|" * 8)
        for r in payload["lengths"]["ratios"]:
            if r["method"] == "dpo":
                continue
            out.append(
                f"| {r['sweep']} | {r['length']} | {r['lm_head']} | {method_label(r['method'])} | "
                f"{r['step_time_s']:.2f} | **{r['time_ratio']:.2f}** | {r['token_ratio']:.2f} | "
                f"{r['memory_ratio']:.2f} |"
            )
        out.append("")
    if "attention" in payload:
        out.append("| mode | row tokens | layout / attention | time s | peak RSS increase MiB |")
        out.append("|" + "---|" * 5)
        for r in sorted(
            (r for r in payload["attention"] if "error" not in r),
            key=lambda r: (
                r["case"].get("mode", "train"),
                r["case"]["row_tokens"],
                r["case"]["layout"],
                r["case"]["attn"],
            ),  # fmt: skip
        ):
            c = r["case"]
            out.append(
                f"| {c.get('mode', 'train')} | {c['row_tokens']} | {c['layout']} / {c['attn']} | {r['time_s']:.3f} | "
                f"{r['peak_increase_mib']:.0f} |"
            )
        for r in payload["attention"]:
            if "error" in r:
                out.append(f"- error: {r['case']}: {r['error'][-300:]}")
    return "\n".join(out)


def gpu_tables(payload: dict) -> str:
    m = payload["machine"]
    columns = ["data", "pairs/step", "method", "scoring", "attention", "step s", "tokens/step", "tokens/s"]
    columns += ["step peak MiB", "time ratio", "token ratio", "memory ratio", "MFU (6N)", "MFU (model FLOPs)"]
    if payload.get("preset"):  # several models; the whole peak (weights included) matters at 8B
        columns = ["model", *columns[:8], "peak MiB", *columns[8:]]
    out = [
        f"Device: {m.get('cuda_device')} (CUDA {m.get('cuda_version')}), torch {m.get('torch')}, transformers "
        f"{m.get('transformers')}, trl {m.get('trl')}, {m.get('date')};"
        f" peak {payload.get('peak_bf16_tflops')} TFLOP/s",
        "",
        f"Command: `{payload['command']}`",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    batch = {r["case"]["data"]: r["case"]["batch_size"] for r in payload["runs"] if "case" in r}
    nan = float("nan")
    for r in payload["table"]:
        pct = lambda x: f"{100 * x:.1f}%" if x is not None else "n/a"  # noqa: E731
        scoring = "targets only" if r["variant"] == "targets_only" else "all four"
        cells = {
            "model": r.get("model"),
            "data": r["data_used"] + lengths_label(r.get("prompt_tokens"), r.get("response_tokens")),
            "pairs/step": r.get("batch_size") or batch.get(r["data"]),
            "method": method_label(r["method"]),
            "scoring": "-" if r["method"] == "dpo" else scoring,
            "attention": r["attn"],
            "step s": f"{r['step_time_s']:.3f}",
            "tokens/step": f"{r['tokens_per_step']:.0f}",
            "tokens/s": f"{r['tokens_per_s']:.0f}",
            "peak MiB": f"{r['peak_mib']:.0f}",
            "step peak MiB": f"{r['step_peak_increase_mib']:.0f}",
            "time ratio": f"**{r.get('time_ratio', nan):.2f}**",
            "token ratio": f"{r.get('token_ratio', nan):.2f}",
            "memory ratio": f"{r.get('memory_ratio', nan):.2f}",
            "MFU (6N)": pct(r["mfu_6n"]),
            "MFU (model FLOPs)": pct(r["mfu_model"]),
        }
        out.append("| " + " | ".join(str(cells[c]) for c in columns) + " |")
    for e in payload.get("errors", []):
        out.append(f"- error: {e['case'].get('label')}: {e['error'][:200]}")
    for skipped in payload.get("skipped", []):
        out.append(f"- skipped: {skipped['case']['label']}: {skipped['reason']}")
    return "\n".join(out)


def main(paths):
    for path in paths:
        payload = json.loads(Path(path).read_text())
        print(f"## {path}\n")
        kind = payload.get("benchmark")
        if kind == "throughput":
            print(throughput_tables(payload))
        elif kind == "scaling":
            print(scaling_tables(payload))
        elif kind == "gpu":
            print(gpu_tables(payload))
        else:
            print(json.dumps(payload.get("table"), indent=1))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
