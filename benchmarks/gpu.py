# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""GPU throughput of InSPO against `trl.DPOTrainer` on a 0.5B-class model: tokens/s, step time, peak memory and
model-FLOPs utilisation (MFU).

Launch (one GPU, from the repository root):

    python benchmarks/gpu.py --targets-only --output benchmarks/results/gpu.json

The model is built from config with Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864,
vocabulary 151936, tied embeddings: 494M parameters), random weights, bf16 weights and autocast, `sdpa` attention
(`--attn flash_attention_2` for the two-row layout and DPO; prefix sharing needs a 4D mask: `sdpa`, `flex_attention`
or `eager`). Methods: `trl.DPOTrainer`, `InSPOTrainer` two-row, `InSPOTrainer` prefix-shared; live reference model
(a frozen copy); data: the HH-RLHF sample (`--data-path`, synthetic chat-like rows when absent) and long-response
synthetic rows. Each (data, method) runs in a fresh process, `--repeats` times, interleaved; a step is timed from one
`on_step_end` to the next after `torch.cuda.synchronize()`. `--targets-only` adds InSPO runs with
`unconditional_metrics=False` (the LM head scores the target segments only; see `throughput.py`'s
`compact_targets` variant).

MFU, two ways (both divided by the step time and the device's peak dense bf16 FLOP/s, looked up from the device name
in `PEAK_BF16_TFLOPS`, or `--peak-tflops`):

- `mfu_6n`: `6 * N * tokens`, N = all parameters, tokens = non-pad tokens fed to the policy (the usual convention; it
  ignores the reference forward and attention, and counts the LM head on every token);
- `mfu_model`: the FLOPs the step actually needs: `6 * N_body * tokens` for the policy backbone (`N_body` = parameters
  without the embedding/LM-head matrix), `6 * V * h * scored` for the LM head on the positions it scores (on CUDA TRL
  scores only labelled positions), attention `3 * 4 * layers * h * pairs` (`pairs`: the (query, key) pairs causal
  attention needs, padding excluded; for a tree row, each token's ancestors and own branch), plus the forward FLOPs
  (one third) for the live reference model.

`--smoke` runs a seconds-long version on CPU with a tiny model (fp32), to keep the script from rotting; no GPU number
comes from it. Results measured on an H100 (2026-11-26) are in `benchmarks/results/gpu*.json` and
`docs/benchmarks_performance.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import perf_common as pc  # noqa: E402


# Peak dense (no sparsity) bf16 tensor-core throughput, TFLOP/s, from the vendors' data sheets. The first key that
# is a substring of `torch.cuda.get_device_name()` wins (more specific names first).
PEAK_BF16_TFLOPS = {
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # H100 SXM5
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A10G": 125.0,  # NVIDIA does not publish it; 70 TFLOP/s dense fp16 w/ fp32 acc is also quoted
    "A10": 125.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "RTX 6000 Ada": 364.0,
    "V100": 125.0,  # fp16 (no bf16 on Volta)
}


SUMMARY_NOTE = (
    "step_time_s: median over the kept repeats (the first --discard-repeats dropped when more remain) of each run's "
    "median step time after --warmup steps"
)


def peak_tflops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def step_flops(result: dict) -> dict:
    """Model FLOPs of one training step of `result` (see the module docstring)."""
    shape = result["model_shape"]
    h, layers, v = shape["hidden_size"], shape["num_layers"], shape["vocab_size"]
    n_all = result["num_parameters"]
    n_body = n_all - v * h * (1 if shape.get("tie_word_embeddings") else 2)
    batches = result["batches"][result["case"]["warmup"] :]
    tokens = statistics.mean(b["tokens"] for b in batches)
    scored = statistics.mean(b["scored"] for b in batches)
    # Attention score FLOPs (QK^T and AV) over the (query, key) pairs causal attention needs (tree rows: ancestors
    # and own branch only), whatever the kernel computes
    pairs = statistics.mean(b["attention_pairs"] for b in batches)
    attention = 2 * 2 * layers * h * pairs  # forward
    forward = 2 * n_body * tokens + 2 * v * h * scored + attention
    reference = forward if result["case"].get("reference", "live") == "live" else 0.0
    return {"flops_6n": 6 * n_all * tokens, "flops_model": 3 * forward + reference, "tokens": tokens}


def build_cases(args, tokenizer_dir: str) -> list[dict]:
    cases = []
    runs = [(method, "default") for method in args.methods]
    if args.targets_only:
        runs += [(m, "targets_only") for m in ("inspo", "inspo_ps") if m in args.methods]
    for data in args.datasets:
        for method, variant in runs:
            cases.append(
                dict(
                    label=f"{data}/{variant}/{method}",
                    variant=variant,
                    score_targets_only=variant == "targets_only",
                    method=method,
                    model="tiny" if args.smoke else args.model,
                    data=data,
                    batch_size=args.batch_size or {"hh": 8, "chat": 8, "long": 4}[data],
                    warmup=args.warmup,
                    steps=args.steps,
                    reference="live",
                    lm_head="stock",
                    attn=args.ps_attn if (method == "inspo_ps" and args.ps_attn) else args.attn,
                    threads=args.threads,
                    hh_path=str(args.data_path) if args.data_path else None,
                    tokenizer_dir=tokenizer_dir,
                    device="cpu" if args.smoke else "cuda",
                    dtype="float32" if args.smoke else "bfloat16",
                    gradient_checkpointing=args.gradient_checkpointing,
                    seed=0,
                )
            )
    return cases


def summarize(results: list[dict], peak: float | None, discard_repeats: int = 1) -> list[dict]:
    """One row per (data, variant, method): the median over repeats of each run's median step time (a step's time
    on a GPU has rare allocator/autotuning spikes that a mean would carry), after dropping the first
    `discard_repeats` repeats when more remain (the first cases of a process run slower: allocator growth, kernel
    selection), with FLOPs, MFU and ratios against DPOTrainer's default run on the same data."""
    rows = []
    by_key = {}
    last = max((r.get("repeat", 0) for r in results if "error" not in r), default=0)
    keep_from = discard_repeats if last >= discard_repeats else 0
    for r in results:
        if "error" in r or r.get("repeat", 0) < keep_from:
            continue
        r["flops"] = step_flops(r)
        by_key.setdefault((r["case"]["data"], r["case"]["variant"], r["case"]["method"]), []).append(r)
    for (data, variant, method), rs in by_key.items():
        w = rs[0]["case"]["warmup"]
        t = statistics.median(statistics.median(r["step_times_s"][w:]) for r in rs)
        f = rs[0]["flops"]
        rows.append(
            {
                "data": data,
                "data_used": rs[0]["data_used"],
                "method": method,
                "variant": variant,
                "attn": rs[0]["case"]["attn"],
                "repeats_used": len(rs),
                "step_time_s": t,
                "step_time_runs_s": [statistics.median(r["step_times_s"][w:]) for r in rs],
                "tokens_per_step": f["tokens"],
                "tokens_per_s": f["tokens"] / t,
                "pairs_per_s": rs[0]["case"]["batch_size"] / t,
                "step_peak_increase_mib": statistics.median(r["step_peak_increase_mib"] for r in rs),
                "peak_mib": statistics.median(r["peak_mib"] for r in rs),
                "tflops_6n": f["flops_6n"] / t / 1e12,
                "tflops_model": f["flops_model"] / t / 1e12,
                "mfu_6n": f["flops_6n"] / t / (peak * 1e12) if peak else None,
                "mfu_model": f["flops_model"] / t / (peak * 1e12) if peak else None,
            }
        )
    for row in rows:
        base = next((b for b in rows if b["data"] == row["data"] and b["method"] == "dpo"), None)  # default variant
        if base:
            row["time_ratio"] = row["step_time_s"] / base["step_time_s"]
            row["token_ratio"] = row["tokens_per_step"] / base["tokens_per_step"]
            row["memory_ratio"] = row["step_peak_increase_mib"] / base["step_peak_increase_mib"]
    return rows


def print_table(rows, device_name, peak, output):
    print("| data | method | variant | step s | tokens/s | peak MiB | time ratio | token ratio | MFU 6N | MFU model |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = lambda x: f"{100 * x:.1f}%" if x is not None else "n/a"  # noqa: E731
        nan = float("nan")
        print(f"| {r['data_used']} | {pc.METHOD_LABELS[r['method']]} | {r['variant']} | {r['step_time_s']:.3f} | "
              f"{r['tokens_per_s']:.0f} | {r['peak_mib']:.0f} | {r.get('time_ratio', nan):.2f} | "
              f"{r.get('token_ratio', nan):.2f} | {mfu(r['mfu_6n'])} | {mfu(r['mfu_model'])} |")  # fmt: skip
    print(f"device: {device_name or 'CPU (smoke)'}; peak bf16 {peak} TFLOP/s; wrote {output}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long CPU run on a tiny model (no GPU needed)")
    parser.add_argument("--model", default="qwen2-0.5b", choices=sorted(pc.MODEL_SHAPES))
    parser.add_argument("--data-path", type=Path, default=pc.DEFAULT_HH)
    parser.add_argument("--datasets", nargs="+", default=["hh", "long"], choices=["hh", "long", "chat"])
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: 8 on hh, 4 on long)")
    parser.add_argument("--methods", nargs="+", default=list(pc.METHODS), choices=pc.METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, flash_attention_2, ...)")
    parser.add_argument("--ps-attn", default=None, help="attention implementation for prefix sharing (default --attn)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--targets-only",
        action="store_true",
        help="also run InSPO with unconditional_metrics=False (LM head on the target segments only)",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (overrides lookup)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--output", type=Path, default=pc.RESULTS_DIR / "gpu.json")
    parser.add_argument(
        "--discard-repeats",
        type=int,
        default=1,
        help="drop the first N repeats from the summary when more remain (process warm-up)",
    )
    parser.add_argument(
        "--resummarize",
        type=Path,
        default=None,
        help="recompute the summary table of an existing result file (in place) and exit",
    )
    args = parser.parse_args(argv)
    if args.resummarize:
        payload = json.loads(args.resummarize.read_text())
        payload["table"] = summarize(payload["runs"], payload["peak_bf16_tflops"], args.discard_repeats)
        payload["summary"] = SUMMARY_NOTE
        pc.write_json(args.resummarize, payload)
        print_table(payload["table"], payload["machine"].get("cuda_device"), payload["peak_bf16_tflops"],
                    args.resummarize)  # fmt: skip
        return 0
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.smoke:
        args.repeats, args.warmup, args.steps, args.in_process, args.threads = 1, 1, 2, True, 1
        args.batch_size = args.batch_size or 2
        args.datasets = args.datasets[:1]
    else:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or use --smoke for the CPU smoke test")
    if args.data_path is not None and not Path(args.data_path).exists():
        print(f"[bench] {args.data_path} not found: using synthetic chat-like data instead", file=sys.stderr)
        args.data_path = None
    command = " ".join([Path(sys.executable).name] + sys.argv)
    started = time.time()
    tokenizer_dir = pc.prepare_tokenizer(
        args.data_path, vocab_size=2000 if args.smoke else 8000, max_hh_rows=50 if args.smoke else None
    )
    machine = pc.machine_info()
    device_name = machine.get("cuda_device")
    peak = args.peak_tflops or peak_tflops(device_name)
    cases = build_cases(args, tokenizer_dir)
    results = []
    partial = Path(args.output).with_suffix(".partial.jsonl")  # survives a run cut off by a time limit
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text("")
    for result in _run(cases, args):
        results.append(result)
        with partial.open("a") as f:
            f.write(json.dumps(result, default=str) + "\n")
    rows = summarize(results, peak, discard_repeats=args.discard_repeats)
    payload = {
        "benchmark": "gpu",
        "command": command,
        "smoke": args.smoke,
        "machine": machine,
        "peak_bf16_tflops": peak,
        "peak_assumption": "dense bf16 tensor-core peak of the device's data sheet (PEAK_BF16_TFLOPS), no sparsity",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model_shape": pc.MODEL_SHAPES[cases[0]["model"]],
        "wall_time_s": time.time() - started,
        "summary": SUMMARY_NOTE,
        "table": rows,
        "errors": [r for r in results if "error" in r],
        "runs": results,
    }
    pc.write_json(args.output, payload)
    print_table(rows, device_name, peak, args.output)
    return 1 if payload["errors"] else 0


def _run(cases, args):
    for repeat in range(args.repeats):
        for case in cases:
            try:
                [result] = pc.run_cases([case], 1, args.in_process)
            except Exception as error:  # e.g. out of memory, an attention backend without 4D masks: record, go on
                yield {"case": case, "error": f"{type(error).__name__}: {str(error)[-2000:]}"}
                continue
            result["repeat"] = repeat
            yield result


if __name__ == "__main__":
    sys.exit(main())
