# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Training-step cost of InSPO against `trl.DPOTrainer`: time, tokens and peak memory, on the same model, data and
batch size.

Methods: `trl.DPOTrainer` (`dpo`), `InSPOTrainer` with the two-row layout (`inspo`: `x + y_l + y_w` and
`x + y_w + y_l`) and with prefix sharing (`inspo_ps`: one tree row per pair, the prompt once). Each variant changes one
thing against the baseline (Llama-shaped model, 32k vocabulary, live reference model, fp32 on CPU):

- `live`: a frozen reference model runs a forward on every step;
- `precomputed`: `precompute_ref_log_probs=True` (reference values computed before training, not timed);
- `lora`: LoRA adapters (r=16 on every linear layer), reference = the base model with the adapter disabled;
- `max_alt`: InSPO with `max_alternative_length` (the alternative cut to a few tokens), against the live DPO baseline;
- `qwen2`: the same shape as a Qwen2 model (q/k/v biases), live reference;
- `compact`: like `live`, with TRL's fused LM head scoring only labelled positions also on CPU (what it does on CUDA),
  for DPO and InSPO alike;
- `compact_targets`: like `compact`, with InSPO's `unconditional_metrics=False`: the LM head scores only the target
  segments (`c_w`, `c_l`, all a default-config loss reads), not the alternative segments that give the unconditional
  values `u_w`, `u_l` (the `*_unconditional` metrics).

Every (variant, method) runs in a fresh subprocess (clean peak-RSS numbers), `--repeats` times, interleaved. A step is
timed from one `on_step_end` to the next (collation, forward passes, backward, optimizer step). Every method sees the
same pairs in the same order (same seed and data), and batches differ in length from step to step, so a run's step
time is the mean over its `--steps` measured steps after `--warmup` (the per-run median is recorded too, and the
paired per-step ratio), and the reported value is the median over repeats. Memory is the peak RSS during a step over
the RSS at its start, maximum over the measured steps (CPU), or the peak allocated CUDA memory; tokens are the non-pad
tokens fed to the model (`attention_mask.sum()`), counted by wrapping the collator.

Ratios are InSPO / DPO; the token ratio is what a compute-bound step would cost if every token cost the same, so the
targets are time ratio <= 1.1 x token ratio and peak-memory ratio <= 1.1 x token ratio.

It also checks that the prefix-shared layout gives the same four log-probabilities as the two-row layout on the
benchmark models (Llama and Qwen2 shapes, fp32).

Usage (from the repository root; `--smoke` runs a seconds-long version on a tiny model):

```bash
python benchmarks/throughput.py --output benchmarks/results/throughput.json
python benchmarks/throughput.py --smoke --output /tmp/throughput_smoke.json
```
"""

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common.case import METHOD_FIELDS, METHODS, Case, method_label, run_settings  # noqa: E402
from benchmarks.common.data import DATASETS, dataset_rows, hh_sample, load_tokenizer, prepare_tokenizer  # noqa: E402
from benchmarks.common.env import DEFAULT_HH, RESULTS_DIR, command_line, write_json  # noqa: E402
from benchmarks.common.exactness import differences, four_logps  # noqa: E402
from benchmarks.common.machine import QuietMachine, load_average, machine_info  # noqa: E402
from benchmarks.common.models import MODEL_SHAPES  # noqa: E402
from benchmarks.common.runner import ratio, run_cases, summarize  # noqa: E402


VARIANTS = ("live", "precomputed", "lora", "max_alt", "qwen2", "compact", "compact_targets")
# Alternative budget of the `max_alt` variant, per data set (tokens)
MAX_ALT = {"hh": 16, "chat": 16, "long": 64}
BATCH_SIZE = {"hh": 4, "chat": 4, "long": 2}
# Variants that change only InSPO, compared with the DPO run of another variant
BASELINE_OF = {"max_alt": "live", "compact_targets": "compact"}


def variant_fields(variant: str, data: str, smoke: bool) -> dict:
    """The `Case` fields a variant changes against the baseline (`live`)."""
    return {
        "live": {},
        "precomputed": {"reference": "precomputed"},
        "lora": {"reference": "lora"},
        "max_alt": {"max_alternative_length": MAX_ALT[data]},
        "qwen2": {"model": "tiny-qwen2" if smoke else "qwen2-32k"},
        "compact": {"lm_head": "compact"},
        "compact_targets": {"lm_head": "compact", "unconditional_metrics": False},
    }[variant]


def build_cases(args, tokenizer_dir: str) -> list[Case]:
    settings = dict(run_settings(args, tokenizer_dir), attn=args.attn)
    cases = []
    for data in args.datasets:
        for variant in args.variants:
            if variant == "qwen2" and data == "long" and not args.smoke:
                continue  # Qwen2's shape differs from Llama's by q/k/v biases only: its HH runs show the family
            methods = ("inspo", "inspo_ps") if variant in BASELINE_OF else args.methods
            for method in methods:
                fields = dict(METHOD_FIELDS[method], model="tiny" if args.smoke else "llama-32k", lm_head=args.lm_head)
                fields.update(variant_fields(variant, data, args.smoke))
                batch_size = args.batch_size or BATCH_SIZE[data]
                label = f"{data}/{variant}/{method}"
                cases.append(
                    Case(**fields, **settings, data=data, batch_size=batch_size, variant=variant, label=label)
                )
    return cases


def prefix_sharing_exactness(model_key: str, tokenizer_dir: str, data: str, hh_path, batch_size: int) -> dict:
    """Max |difference| of `c_w, c_l, u_w, u_l` between the two-row and the prefix-shared layouts (fp32, one batch,
    policy = reference = the benchmark model)."""
    tokenizer = load_tokenizer(tokenizer_dir)
    rows, used = dataset_rows(data, batch_size, hh_path)
    shape = MODEL_SHAPES[model_key]
    two_row, shared = (four_logps(rows, tokenizer, shape, "cpu", layout, "sdpa") for layout in (False, True))
    return {"model": model_key, "data_used": used, "pairs": len(rows), **differences(shared, two_row)}


def ratio_table(summary: dict, datasets, variants) -> list[dict]:
    """One row per (data set, variant, InSPO method): the InSPO/DPO ratios."""
    rows = []
    for data in datasets:
        for variant in variants:
            base = summary.get((data, BASELINE_OF.get(variant, variant), "dpo"))
            if base is None:
                continue
            for method in METHOD_FIELDS:
                s = summary.get((data, variant, method))
                if s is None:
                    continue
                token_ratio = ratio(s["tokens_per_step"], base["tokens_per_step"])
                paired = [
                    t / b
                    for ts, bs in zip(s["step_times_by_repeat_s"], base["step_times_by_repeat_s"])
                    for t, b in zip(ts, bs)
                ]
                time_ratio = ratio(s["step_time_s"], base["step_time_s"])
                mem_ratio = ratio(s["step_peak_increase_mib"], base["step_peak_increase_mib"])
                rows.append(
                    {
                        "data": data,
                        "data_used": s["data_used"],
                        "variant": variant,
                        "method": method,
                        "step_time_s": s["step_time_s"],
                        "step_time_spread_s": s["step_time_spread_s"],
                        "step_time_median_s": s["step_time_median_s"],
                        "compute_time_s": s["compute_time_s"],
                        "collate_time_s": s["collate_time_s"],
                        "tokens_per_step": s["tokens_per_step"],
                        "positions_per_step": s["positions_per_step"],
                        "scored_per_step": s["scored_per_step"],
                        "tokens_per_s": s["tokens_per_s"],
                        "pairs_per_s": s["pairs_per_s"],
                        "step_peak_increase_mib": s["step_peak_increase_mib"],
                        "peak_increase_over_load_mib": s["peak_increase_over_load_mib"],
                        "other_cpu_cores_max": max(s["other_cpu_cores_max"], base["other_cpu_cores_max"]),
                        "time_ratio": time_ratio,
                        "paired_step_time_ratio_median": statistics.median(paired),
                        "token_ratio": token_ratio,
                        "position_ratio": ratio(s["positions_per_step"], base["positions_per_step"]),
                        "scored_ratio": ratio(s["scored_per_step"], base["scored_per_step"]),
                        "memory_ratio": mem_ratio,
                        "memory_ratio_mean_step": ratio(
                            s["step_peak_increase_mean_mib"], base["step_peak_increase_mean_mib"]
                        ),
                        "whole_run_memory_ratio": ratio(
                            s["peak_increase_over_load_mib"], base["peak_increase_over_load_mib"]
                        ),
                        "time_target_met": time_ratio <= 1.1 * token_ratio,
                        "memory_target_met": mem_ratio <= 1.1 * token_ratio,
                    }
                )
    return rows


def format_table(rows: list[dict]) -> str:
    header = (
        "| data | variant | method | step s | tokens/step | tokens/s | step peak MiB | time ratio | token ratio | "
        "padded-position ratio | memory ratio | time <= 1.1 x tokens | memory <= 1.1 x tokens |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['data_used']} | {r['variant']} | {method_label(r['method'])} | {r['step_time_s']:.3f} | "
            f"{r['tokens_per_step']:.0f} | {r['tokens_per_s']:.0f} | {r['step_peak_increase_mib']:.0f} | "
            f"{r['time_ratio']:.2f} | {r['token_ratio']:.2f} | {r['position_ratio']:.2f} | {r['memory_ratio']:.2f} | "
            f"{'yes' if r['time_target_met'] else 'no'} | {'yes' if r['memory_target_met'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long run: tiny model, 3 steps, in-process")
    parser.add_argument(
        "--data-path",
        type=Path,
        default=DEFAULT_HH,
        help="HH-RLHF sample (jsonl); synthetic chat-like data is used when it is absent",
    )
    parser.add_argument("--datasets", nargs="+", default=["hh", "long"], choices=sorted(DATASETS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHOD_FIELDS), help="e.g. add inspo_ps=auto"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: 4 on hh, 2 on long)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--lm-head", default="stock", choices=["stock", "compact"])
    parser.add_argument("--in-process", action="store_true", help="run every case in this process (no subprocess)")
    QuietMachine.add_arguments(parser)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "throughput.json")
    parser.add_argument(
        "--resummarize",
        action="store_true",
        help="recompute the ratios of an existing --output file from its runs (no new runs)",
    )
    args = parser.parse_args(argv)
    if args.resummarize:
        payload = json.loads(args.output.read_text())
        settings = payload["settings"]
        summary = summarize(payload["runs"], ("data", "variant", "method"))
        payload["ratios"] = ratio_table(summary, settings["datasets"], settings["variants"])
        write_json(args.output, payload)
        print(format_table(payload["ratios"]))
        return 0
    if args.smoke:
        args.repeats, args.warmup, args.steps, args.in_process, args.threads = 1, 1, 2, True, 1
        args.batch_size = args.batch_size or 2
        if args.datasets == ["hh", "long"]:
            args.datasets = ["hh"]
        if args.variants == list(VARIANTS):
            args.variants = ["live", "max_alt"]
    args.data_path = hh_sample(args.data_path)

    started = time.time()
    tokenizer_dir = prepare_tokenizer(args.data_path, small=args.smoke)
    quiet = QuietMachine.from_args(args)
    wait = quiet.wait_at_start()
    load_start = load_average()

    import torch

    torch.set_num_threads(args.threads)
    exactness = [
        prefix_sharing_exactness(model_key, tokenizer_dir, args.datasets[0], args.data_path, 2 if args.smoke else 4)
        for model_key in (["tiny"] if args.smoke else ["llama-32k", "qwen2-32k"])
    ]
    cases = build_cases(args, tokenizer_dir)
    # raw runs, appended as they finish (survives a crash)
    log_path = None if args.smoke else Path(tempfile.gettempdir()) / (args.output.stem + ".runs.jsonl")
    if log_path is not None and log_path.exists():
        log_path.unlink()
    results = run_cases(cases, args.repeats, args.in_process, log_path, quiet)
    summary = summarize(results, ("data", "variant", "method"))
    table = ratio_table(summary, args.datasets, args.variants)

    payload = {
        "benchmark": "throughput",
        "command": command_line(),
        "machine": machine_info(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "wait_for_quiet": wait,
        "wall_time_s": time.time() - started,
        "settings": vars(args),
        "model_shapes": {k: MODEL_SHAPES[k] for k in {c.model for c in cases}},
        "datasets": {d: DATASETS[d] for d in args.datasets},
        "prefix_sharing_exactness": exactness,
        "ratios": table,
        "runs": results,
    }
    write_json(args.output, payload)
    print(format_table(table))
    for e in exactness:
        print(f"prefix sharing exactness ({e['model']}, {e['data_used']}): max |diff| {e['max_abs_diff']:.2e} "
              f"(|logp| ~ {e['mean_abs_logp']:.0f})")  # fmt: skip
    print(f"wrote {args.output}")
    bad = [r for r in results if not all(math.isfinite(t) for t in r["step_times_s"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
