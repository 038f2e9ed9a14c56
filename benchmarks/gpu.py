# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""GPU throughput of InSPO against `trl.DPOTrainer`: tokens/s, step time, peak memory and model-FLOPs utilisation
(MFU), on models built from a config (random weights, nothing downloaded), bf16.

Launch (one GPU, from the repository root):

    python benchmarks/gpu.py --targets-only --output benchmarks/results/gpu.json
    python benchmarks/gpu.py --preset llama3-8b --output benchmarks/results/gpu_llama3_8b.json

Without a preset: Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocabulary 151936, tied
embeddings: 494M parameters), full fine-tuning with a live reference model (a frozen copy), `sdpa` attention (`--attn
flash_attention_2` for the two-row layout and DPO; prefix sharing needs a 4D mask: `sdpa`, `flex_attention` or `eager`,
see `--ps-attn`); data: the HH-RLHF sample (`--data-path`, synthetic chat-like rows when absent) and long-response
synthetic rows. Methods: `trl.DPOTrainer`, `InSPOTrainer` two-row, `InSPOTrainer` prefix-shared (with
`InSPOConfig(prefix_sharing=<--prefix-sharing>)`, passed through unchanged). `--targets-only` adds InSPO runs with
`unconditional_metrics=False` (the LM head scores the target segments only) for the layouts run with `--attn` (the
option changes the LM head's work, not attention). Each case runs `--repeats` times, interleaved; a step is timed from
one `on_step_end` to the next after `torch.cuda.synchronize()`.

`--preset llama3-8b` (a set of defaults; any option given on the command line wins): Llama-3-8B's shape (hidden 4096,
32 layers, 32 heads, 8 KV heads, MLP 14336, vocabulary 128256, rope theta 500000) and, to tie back to the tables of the
default run, Qwen2-0.5B's; LoRA r=16 on every linear layer with the adapter-disabled model as reference; gradient
checkpointing; synthetic rows whose InSPO row `x + y_l + y_w` holds ~1,024 and ~2,048 tokens, in the prompt/response
proportions of the HH sample and of the long-response data, 2 pairs per step at ~1k tokens and 1 at ~2k; DPOTrainer,
InSPO two-row (sdpa) and prefix-shared (sdpa and flex attention), the sdpa ones with `unconditional_metrics` True and
False; 2 warm-up and 3 measured steps, one repeat, all in this process: 24 cases per model. `--max-minutes` (default 8
with the preset) skips the cases that would not finish in time (estimated as below); the JSON is rewritten after every
case, so a run cut short still leaves one.

Planning estimate (`--dry-run` prints it without running): per case, setup (1.5 s + 0.5 s per billion parameters) plus
`warmup + steps` steps of `executed FLOPs / (PLAN_MFU * peak) + PLAN_STEP_OVERHEAD_S` each, where the executed FLOPs
are the model FLOPs below plus one more policy forward with gradient checkpointing (the recomputation), and
`PLAN_FLEX_COMPILE_S` for the first flex-attention case of each model (compilation) and `PLAN_FLEX_RECOMPILE_S` for
each later one (new row lengths). Token counts per step come from the row lengths
(`benchmarks.common.flops.pair_counts`).

MFU, two ways (both divided by the step time and the device's peak dense bf16 FLOP/s, from TRL's table
`trl.trainer.utils.get_peak_flops`, or `--peak-tflops`): `mfu_6n`, `6 * N * tokens` (the usual convention), and
`mfu_model`, the FLOPs the step needs (`benchmarks.common.flops`: backbone, LM head on the scored positions, causal
attention pairs, the reference forward; LoRA's frozen weights take no gradient).

`--smoke` runs the same case list on CPU with tiny shapes (fp32, rows 16 times shorter, two steps), to keep the
script from rotting; no GPU number comes from it. PyTorch has no flex-attention backward on CPU, so those cases are
listed as skipped there.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common.case import METHOD_FIELDS, METHODS, Case, method_label, run_settings  # noqa: E402
from benchmarks.common.data import (  # noqa: E402
    hh_sample,
    lengths_label,
    load_tokenizer,
    mean_lengths,
    prepare_tokenizer,
    scale_lengths,
)
from benchmarks.common.env import DEFAULT_HH, RESULTS_DIR, command_line, write_json  # noqa: E402
from benchmarks.common.flops import pair_counts, peak_tflops, step_flops  # noqa: E402
from benchmarks.common.machine import machine_info  # noqa: E402
from benchmarks.common.models import MODEL_SHAPES, count_parameters  # noqa: E402
from benchmarks.common.runner import ratio, run_cases  # noqa: E402


PRESETS = {
    "llama3-8b": dict(
        models=["llama3-8b", "qwen2-0.5b"],
        datasets=["hh", "long"],
        row_tokens=[1024, 2048],
        methods=list(METHODS),
        ps_attn=["sdpa", "flex_attention"],
        targets_only=True,
        reference="lora",
        gradient_checkpointing=True,
        repeats=1,
        warmup=2,
        steps=3,
        in_process=True,
        max_minutes=8.0,
    ),
}
BATCH_SIZE = {"hh": 8, "chat": 8, "long": 4}  # pairs per step on the data sets' own rows
ROW_BATCH_TOKENS = 2048  # with --row-tokens: pairs per step = max(1, ROW_BATCH_TOKENS // row tokens)
SMOKE_ROW_DIVISOR = 16
# Planning assumptions (see the module docstring)
PLAN_MFU = 0.35
PLAN_STEP_OVERHEAD_S = 0.1
PLAN_CASE_OVERHEAD_S = 1.5  # trainer set-up, first-step allocations (0.5B runs on an H100: 0.3-1.1 s + ~0.3 s)
PLAN_SETUP_S_PER_BILLION = 0.5  # building the model on the GPU, adding LoRA adapters
PLAN_FLEX_COMPILE_S = 30.0  # the first flex-attention case of a model
PLAN_FLEX_RECOMPILE_S = 10.0  # each later one (new row lengths)
PLAN_PEAK_TFLOPS = 989.0  # H100 SXM / H200, when no device is visible
BUDGET_SKIP = "left out by --max-minutes"
SUMMARY_NOTE = (
    "step_time_s: median over the kept repeats (the first --discard-repeats dropped when more remain) of each run's "
    "median step time after --warmup steps"
)


def prefix_sharing_value(text: str) -> bool | str:
    """`--prefix-sharing` as `InSPOConfig` takes it: `true`/`false` as booleans, any other value unchanged."""
    return {"true": True, "false": False}.get(text.lower(), text)


def data_points(args, means: dict) -> list[dict]:
    """The data of the runs: each data set's own rows, or, with `--row-tokens`, synthetic rows of each length in the
    proportions of the data set's `means` (`data.mean_lengths`); with the pairs per step."""
    if not args.row_tokens:
        return [{"data": data, "batch_size": args.batch_size or BATCH_SIZE[data]} for data in args.datasets]
    divisor = SMOKE_ROW_DIVISOR if args.smoke else 1
    points = []
    for data in args.datasets:
        used, prompt_mean, response_mean = means[data]
        for row_tokens in args.row_tokens:
            prompt, response = scale_lengths(prompt_mean, response_mean, row_tokens // divisor)
            pairs = args.batch_size or max(1, ROW_BATCH_TOKENS // row_tokens)
            points.append({"data": used, "prompt_tokens": prompt, "response_tokens": response, "batch_size": pairs})
    return points


def smoke_model(model: str) -> str:
    return "tiny-qwen2" if MODEL_SHAPES[model]["architecture"] == "qwen2" else "tiny"


def build_cases(args, tokenizer_dir: str, points: list[dict]) -> list[Case]:
    """Every (model, data point, method, attention, `unconditional_metrics`) run, in the order they run (the first
    model's first: what a time budget leaves out is at the end)."""
    runs = []  # (method, attention, unconditional_metrics)
    for method in args.methods:
        attns = (args.ps_attn or [args.attn]) if method == "inspo_ps" else [args.attn]
        for attn in attns:
            # unconditional_metrics changes the LM head's work, not attention: shown with --attn only
            metrics = [True, False] if args.targets_only and method != "dpo" and attn == args.attn else [True]
            runs += [(method, attn, um) for um in metrics]
    settings = dict(
        run_settings(args, tokenizer_dir),
        reference=args.reference,
        gradient_checkpointing=args.gradient_checkpointing,
        device="cpu" if args.smoke else "cuda",
        dtype="float32" if args.smoke else "bfloat16",
    )
    cases = []
    for model in args.models:
        for point in points:
            for method, attn, unconditional_metrics in runs:
                fields = dict(METHOD_FIELDS[method], model=smoke_model(model) if args.smoke else model, attn=attn)
                if method == "inspo_ps":
                    fields["prefix_sharing"] = args.prefix_sharing
                variant = "default" if unconditional_metrics else "targets_only"
                case = Case(
                    **fields, **point, **settings, unconditional_metrics=unconditional_metrics, variant=variant
                )
                rows = lengths_label(case.prompt_tokens, case.response_tokens)
                case.label = f"{case.model}/{case.data}{rows}/{case.method}/{attn}/{variant}"
                cases.append(case)
    return cases


def skip_reason(case: Case) -> str | None:
    if case.attn == "flex_attention" and case.device == "cpu":
        return "PyTorch has no flex-attention backward on CPU"
    return None


def plan(cases: list[Case], means: dict, peak: float) -> list[dict]:
    """Each case with its planned seconds (see the module docstring) and why it is skipped (None: it runs); cases on a
    data set's own rows are planned at its `means` (`data.mean_lengths`)."""
    compiled, planned = set(), []
    for case in cases:
        lengths = (case.prompt_tokens, case.response_tokens) if case.prompt_tokens else means[case.data][1:]
        seconds = estimate_seconds(case, *lengths, peak)
        if case.attn == "flex_attention":
            seconds += PLAN_FLEX_RECOMPILE_S if case.model in compiled else PLAN_FLEX_COMPILE_S
            compiled.add(case.model)
        planned.append({"case": case.to_dict(), "planned_s": seconds, "skipped": skip_reason(case)})
    return planned


def estimate_seconds(case: Case, prompt: float, response: float, peak: float) -> float:
    """Planned wall time of `case` on pairs of these lengths (tokens), without compilation."""
    shape = MODEL_SHAPES[case.model]
    params = count_parameters(shape)
    counts = pair_counts(case.method.split("=")[0], prompt, response, case.unconditional_metrics)
    per_step = (case.batch_size * counts[k] for k in ("tokens", "scored", "attention_pairs"))
    flops = step_flops(shape, params, *per_step, reference=case.reference)
    executed = flops["flops_model"] + (flops["flops_forward"] if case.gradient_checkpointing else 0.0)
    step_s = executed / (PLAN_MFU * peak * 1e12) + PLAN_STEP_OVERHEAD_S
    return PLAN_CASE_OVERHEAD_S + PLAN_SETUP_S_PER_BILLION * params / 1e9 + (case.warmup + case.steps) * step_s


def summarize(results: list[dict], peak: float | None, discard_repeats: int = 1) -> list[dict]:
    """One row per (model, data, row lengths, variant, method, attention): the median over repeats of each run's
    median step time (a step's time on a GPU has rare allocator/autotuning spikes that a mean would carry), after
    dropping the first `discard_repeats` repeats when more remain (the first cases of a process run slower: allocator
    growth, kernel selection), with FLOPs, MFU and ratios against DPOTrainer's default run on the same model and
    data."""
    keys = ("model", "data", "prompt_tokens", "response_tokens", "variant", "method", "attn")
    last = max((r.get("repeat", 0) for r in results if "error" not in r), default=0)
    keep_from = discard_repeats if last >= discard_repeats else 0
    groups = {}
    for r in results:
        if "error" not in r and r.get("repeat", 0) >= keep_from:
            groups.setdefault(tuple(r["case"].get(k) for k in keys), []).append(r)
    rows = []
    for key, rs in groups.items():
        case = rs[0]["case"]
        w = case["warmup"]
        t = statistics.median(statistics.median(r["step_times_s"][w:]) for r in rs)
        measured = rs[0]["batches"][w:]
        tokens, scored, pairs = (
            statistics.mean(b[k] for b in measured) for k in ("tokens", "scored", "attention_pairs")
        )
        shape = rs[0]["model_shape"]
        flops = step_flops(shape, count_parameters(shape), tokens, scored, pairs, case.get("reference", "live"))
        rows.append(
            {
                **dict(zip(keys, key)),
                "data_used": rs[0]["data_used"],
                "batch_size": case["batch_size"],
                "reference": case.get("reference", "live"),
                "gradient_checkpointing": case.get("gradient_checkpointing", False),
                "repeats_used": len(rs),
                "step_time_s": t,
                "step_time_runs_s": [statistics.median(r["step_times_s"][w:]) for r in rs],
                "tokens_per_step": tokens,
                "tokens_per_s": tokens / t,
                "pairs_per_s": case["batch_size"] / t,
                "step_peak_increase_mib": statistics.median(r["step_peak_increase_mib"] for r in rs),
                "peak_mib": statistics.median(r["peak_mib"] for r in rs),
                "tflops_6n": flops["flops_6n"] / t / 1e12,
                "tflops_model": flops["flops_model"] / t / 1e12,
                "mfu_6n": flops["flops_6n"] / t / (peak * 1e12) if peak else None,
                "mfu_model": flops["flops_model"] / t / (peak * 1e12) if peak else None,
            }
        )
    for row in rows:
        point = [row[k] for k in keys[:4]]
        base = next((b for b in rows if [b[k] for k in keys[:4]] == point and b["method"] == "dpo"), None)
        if base:
            row["time_ratio"] = ratio(row["step_time_s"], base["step_time_s"])
            row["token_ratio"] = ratio(row["tokens_per_step"], base["tokens_per_step"])
            row["memory_ratio"] = ratio(row["step_peak_increase_mib"], base["step_peak_increase_mib"])
    return rows


def print_table(rows, device_name, peak, output):
    header = (
        "| model | data | method | attention | variant | step s | tokens/s | peak MiB | time ratio | token ratio | "
        "memory ratio | MFU 6N | MFU model |"
    )
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    nan = float("nan")
    for r in rows:
        mfu = lambda x: f"{100 * x:.1f}%" if x is not None else "n/a"  # noqa: E731
        data = r["data_used"] + lengths_label(r.get("prompt_tokens"), r.get("response_tokens"))
        print(
            f"| {r.get('model')} | {data} | {method_label(r['method'])} | {r['attn']} | {r['variant']} | "
            f"{r['step_time_s']:.3f} | {r['tokens_per_s']:.0f} | {r['peak_mib']:.0f} | "
            f"{r.get('time_ratio', nan):.2f} | {r.get('token_ratio', nan):.2f} | {r.get('memory_ratio', nan):.2f} | "
            f"{mfu(r['mfu_6n'])} | {mfu(r['mfu_model'])} |"
        )
    print(f"device: {device_name or 'CPU (smoke)'}; peak bf16 {peak} TFLOP/s; wrote {output}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a set of defaults (module docstring)")
    parser.add_argument("--smoke", action="store_true", help="seconds-long CPU run on tiny shapes (no GPU needed)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the cases and their planned time (and write them to --output)"
    )
    parser.add_argument("--models", "--model", nargs="+", default=["qwen2-0.5b"], choices=sorted(MODEL_SHAPES))
    parser.add_argument("--data-path", type=Path, default=DEFAULT_HH)
    parser.add_argument("--datasets", nargs="+", default=["hh", "long"], choices=["hh", "long", "chat"])
    parser.add_argument(
        "--row-tokens",
        nargs="+",
        type=int,
        default=None,
        help="synthetic rows whose InSPO row x + y_l + y_w holds this many tokens, in each data set's proportions",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: see BATCH_SIZE)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--prefix-sharing",
        type=prefix_sharing_value,
        default=True,
        help="InSPOConfig(prefix_sharing=...) of the inspo_ps runs, passed through unchanged (true, or e.g. auto)",
    )
    parser.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, flash_attention_2, ...)")
    parser.add_argument(
        "--ps-attn", nargs="+", default=None, help="attention of the prefix-shared runs (default --attn)"
    )
    parser.add_argument(
        "--targets-only",
        action="store_true",
        help="also run InSPO with unconditional_metrics=False (LM head on the target segments only)",
    )
    parser.add_argument(
        "--reference",
        default="live",
        choices=["live", "lora"],
        help="live: a frozen copy; lora: LoRA r=16 on every linear layer, the adapter-disabled model as reference",
    )
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--max-minutes",
        "--max_minutes",
        type=float,
        default=None,
        help="skip the cases that would not finish within this many minutes of the start (planned time)",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (overrides lookup)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON (default: benchmarks/results/gpu.json; --dry-run: none)",
    )
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
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.warmup, args.steps, args.in_process = 1, 1, 1, True
        args.threads = args.threads or 1
        if not args.row_tokens:
            args.batch_size, args.datasets = args.batch_size or 2, args.datasets[:1]
    return parser, args


def main(argv=None):
    parser, args = parse_args(argv)
    if args.resummarize:
        payload = json.loads(args.resummarize.read_text())
        payload["table"] = summarize(payload["runs"], payload["peak_bf16_tflops"], args.discard_repeats)
        payload["summary"] = SUMMARY_NOTE
        write_json(args.resummarize, payload)
        print_table(payload["table"], payload["machine"].get("cuda_device"), payload["peak_bf16_tflops"],
                    args.resummarize)  # fmt: skip
        return 0
    if not args.smoke and not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or use --smoke for the CPU smoke test")
    args.data_path = hh_sample(args.data_path)
    started = time.time()
    tokenizer_dir = prepare_tokenizer(args.data_path, small=args.smoke)
    tokenizer = load_tokenizer(tokenizer_dir)
    means = {data: mean_lengths(data, args.data_path, tokenizer) for data in args.datasets}
    cases = build_cases(args, tokenizer_dir, data_points(args, means))
    machine = machine_info()
    peak = args.peak_tflops or peak_tflops(machine.get("cuda_device"))
    payload = {
        "benchmark": "gpu",
        "preset": args.preset,
        "command": command_line(),
        "smoke": args.smoke,
        "machine": machine,
        "peak_bf16_tflops": peak,
        "peak_assumption": "dense bf16 peak of the device (TRL's get_peak_flops table, or --peak-tflops)",
        "settings": vars(args),
        "model_shapes": {m: MODEL_SHAPES[m] for m in {case.model for case in cases}},
        "mean_lengths": means,
        "plan": plan(cases, means, peak or PLAN_PEAK_TFLOPS),
        "summary": SUMMARY_NOTE,
        "runs": [],
    }
    planned_s = args.repeats * sum(p["planned_s"] for p in payload["plan"] if not p["skipped"])
    assumption = f"{PLAN_MFU:.0%} of {peak or PLAN_PEAK_TFLOPS} TFLOP/s"
    print(f"[bench] {len(cases)} cases; planned {planned_s / 60:.1f} min at {assumption}")
    if args.dry_run:
        for p in payload["plan"]:
            skipped = f"  (skipped: {p['skipped']})" if p["skipped"] else ""
            print(f"{p['planned_s']:6.1f} s  {p['case']['label']}{skipped}")
        if args.output:
            write_json(args.output, payload)
        return 0
    args.output = args.output or RESULTS_DIR / "gpu.json"
    run_plan(payload, cases, args, started)
    print_table(payload["table"], machine.get("cuda_device"), peak, args.output)
    return 1 if payload["errors"] else 0


def run_plan(payload: dict, cases: list[Case], args, started: float) -> None:
    """Run the planned cases `args.repeats` times, leaving out those that would end past `--max-minutes`; the JSON is
    rewritten after every case."""
    budget_s = args.max_minutes * 60 if args.max_minutes is not None else float("inf")
    for repeat in range(args.repeats):
        for case, planned in zip(cases, payload["plan"]):
            if planned["skipped"]:
                continue
            if time.time() - started + planned["planned_s"] > budget_s:
                planned["skipped"] = f"{BUDGET_SKIP} (repeat {repeat + 1})"
                continue
            payload["runs"].append(run_one(case, repeat, args.in_process))
            finish(payload, args, started)
    finish(payload, args, started, done=True)


def run_one(case: Case, repeat: int, in_process: bool) -> dict:
    """One run of `case` (in a fresh subprocess unless `in_process`); a failure is recorded, not raised."""
    try:
        [result] = run_cases([case], 1, in_process)
    except Exception as error:  # e.g. out of memory, an attention backend without 4D masks: record, go on
        return {"case": case.to_dict(), "repeat": repeat, "error": f"{type(error).__name__}: {str(error)[-2000:]}"}
    result["repeat"] = repeat
    return result


def finish(payload: dict, args, started: float, done: bool = False) -> None:
    """Summarise the runs so far and (re)write the JSON, so that a run cut short still leaves its results; `complete`
    once every planned case ran (none left out by the time budget)."""
    payload["table"] = summarize(payload["runs"], payload["peak_bf16_tflops"], discard_repeats=args.discard_repeats)
    payload["errors"] = [r for r in payload["runs"] if "error" in r]
    payload["complete"] = done and not any(BUDGET_SKIP in (p["skipped"] or "") for p in payload["plan"])
    payload["wall_time_s"] = time.time() - started
    write_json(args.output, payload)


if __name__ == "__main__":
    sys.exit(main())
