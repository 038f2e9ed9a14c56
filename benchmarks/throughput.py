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

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import perf_common as pc  # noqa: E402


VARIANTS = ("live", "precomputed", "lora", "max_alt", "qwen2", "compact", "compact_targets")
# Alternative budget of the `max_alt` variant, per data set (tokens)
MAX_ALT = {"hh": 16, "chat": 16, "long": 64}
BATCH_SIZE = {"hh": 4, "chat": 4, "long": 2}
# Variants that change only InSPO, compared with the DPO run of another variant
BASELINE_OF = {"max_alt": "live", "compact_targets": "compact"}


def build_cases(args, tokenizer_dir: str) -> list[dict]:
    cases = []
    model = "tiny" if args.smoke else "llama-32k"
    for data in args.datasets:
        for variant in args.variants:
            if variant == "qwen2" and data == "long" and not args.smoke:
                continue  # Qwen2's shape differs from Llama's by q/k/v biases only: its HH runs show the family
            methods = ("inspo", "inspo_ps") if variant in BASELINE_OF else pc.METHODS
            for method in methods:
                case = dict(
                    label=f"{data}/{variant}/{method}",
                    variant=variant,
                    method=method,
                    model=("qwen2-32k" if not args.smoke else "tiny") if variant == "qwen2" else model,
                    data=data,
                    batch_size=args.batch_size or BATCH_SIZE[data],
                    warmup=args.warmup,
                    steps=args.steps,
                    reference={"precomputed": "precomputed", "lora": "lora"}.get(variant, "live"),
                    max_alternative_length=MAX_ALT[data] if variant == "max_alt" else None,
                    lm_head="compact" if variant.startswith("compact") else args.lm_head,
                    score_targets_only=variant == "compact_targets",
                    attn=args.attn,
                    threads=args.threads,
                    hh_path=str(args.data_path) if args.data_path else None,
                    tokenizer_dir=tokenizer_dir,
                    seed=0,
                )
                if args.smoke and variant == "qwen2":
                    case["model_overrides"] = {"architecture": "qwen2"}
                cases.append(case)
    return cases


def prefix_sharing_exactness(model_key: str, tokenizer_dir: str, data: str, hh_path, batch_size: int, threads: int,
                             smoke: bool) -> dict:  # fmt: skip
    """Max |difference| of `c_w, c_l, u_w, u_l` between the two-row and the prefix-shared layouts (fp32, one batch,
    policy = reference = the benchmark model)."""
    import torch
    from datasets import Dataset

    from trl_inspo import InSPOConfig, InSPOTrainer
    from trl_inspo.tiny import build_model

    torch.set_num_threads(threads)
    tokenizer = pc.load_tokenizer(tokenizer_dir)
    rows, used = pc.dataset_rows(data, batch_size, hh_path)
    shape = dict(pc.MODEL_SHAPES[model_key])
    values = {}
    for prefix_sharing in (False, True):
        model = build_model(tokenizer, seed=0, max_position_embeddings=4096, **shape)
        config = InSPOConfig(
            output_dir="/tmp/inspo-exactness", report_to="none", bf16=False, use_cpu=True, max_length=None,
            per_device_train_batch_size=batch_size, prefix_sharing=prefix_sharing,
        )  # fmt: skip
        trainer = InSPOTrainer(
            model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
        )
        examples = [trainer.train_dataset[i] for i in range(len(rows))]
        batch = trainer.data_collator(examples)
        with torch.no_grad():
            chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
        values[prefix_sharing] = torch.cat([chosen, rejected], dim=1)  # (B, 4): c_w, u_w, c_l, u_l
    diff = (values[True] - values[False]).abs()
    return {
        "model": model_key,
        "data_used": used,
        "pairs": len(rows),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / values[False].abs().clamp(min=1e-6)).max()),
        "mean_abs_logp": float(values[False].abs().mean()),
    }


def ratio_table(summary: dict, datasets, variants) -> list[dict]:
    """One row per (data set, variant, InSPO method): the InSPO/DPO ratios."""
    rows = []
    for data in datasets:
        for variant in variants:
            base = summary.get((data, BASELINE_OF.get(variant, variant), "dpo"))
            if base is None:
                continue
            for method in ("dpo", "inspo", "inspo_ps"):
                s = summary.get((data, variant, method))
                if s is None:
                    continue
                token_ratio = pc.ratio(s["tokens_per_step"], base["tokens_per_step"])
                paired = [
                    t / b
                    for ts, bs in zip(s["step_times_by_repeat_s"], base["step_times_by_repeat_s"])
                    for t, b in zip(ts, bs)
                ]
                time_ratio = pc.ratio(s["step_time_s"], base["step_time_s"])
                mem_ratio = pc.ratio(s["step_peak_increase_mib"], base["step_peak_increase_mib"])
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
                        "position_ratio": pc.ratio(s["positions_per_step"], base["positions_per_step"]),
                        "scored_ratio": pc.ratio(s["scored_per_step"], base["scored_per_step"]),
                        "memory_ratio": mem_ratio,
                        "memory_ratio_mean_step": pc.ratio(
                            s["step_peak_increase_mean_mib"], base["step_peak_increase_mean_mib"]
                        ),
                        "whole_run_memory_ratio": pc.ratio(
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
            f"| {r['data_used']} | {r['variant']} | {pc.METHOD_LABELS[r['method']]} | {r['step_time_s']:.3f} | "
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
        default=pc.DEFAULT_HH,
        help="HH-RLHF sample (jsonl); synthetic chat-like data is used when it is absent",
    )
    parser.add_argument("--datasets", nargs="+", default=["hh", "long"], choices=["hh", "long", "chat"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: 4 on hh, 2 on long)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--lm-head", default="stock", choices=["stock", "compact"])
    parser.add_argument("--in-process", action="store_true", help="run every case in this process (no subprocess)")
    parser.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="wait until the 1-minute load average is below this before measuring",
    )
    parser.add_argument("--max-wait", type=float, default=2400.0)
    parser.add_argument(
        "--max-busy",
        type=float,
        default=None,
        help="before each run, wait while this many other tasks are runnable on average",
    )
    parser.add_argument("--case-wait", type=float, default=600.0, help="longest wait before one run (s)")
    parser.add_argument(
        "--max-other-cores",
        type=float,
        default=None,
        help="run again when other processes used more CPU cores than this during a run",
    )
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument(
        "--patience",
        type=float,
        default=None,
        help="after this many seconds, stop waiting for a quiet machine and stop re-running",
    )
    parser.add_argument("--output", type=Path, default=pc.RESULTS_DIR / "throughput.json")
    parser.add_argument(
        "--resummarize",
        action="store_true",
        help="recompute the ratios of an existing --output file from its runs (no new runs)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.resummarize:
        import json

        payload = json.loads(args.output.read_text())
        settings = payload["settings"]
        summary = pc.summarize(payload["runs"], ("data", "variant", "method"))
        payload["ratios"] = ratio_table(summary, settings["datasets"], settings["variants"])
        pc.write_json(args.output, payload)
        print(format_table(payload["ratios"]))
        return 0
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)

    if args.smoke:
        args.repeats, args.warmup, args.steps, args.in_process, args.threads = 1, 1, 2, True, 1
        args.batch_size = args.batch_size or 2
        if args.datasets == ["hh", "long"]:
            args.datasets = ["hh"]
        if args.variants == list(VARIANTS):
            args.variants = ["live", "max_alt"]
    command = " ".join([Path(sys.executable).name] + sys.argv)
    if args.data_path is not None and not Path(args.data_path).exists():
        print(f"[bench] {args.data_path} not found: using synthetic chat-like data instead", file=sys.stderr)
        args.data_path = None

    started = time.time()
    tokenizer_dir = pc.prepare_tokenizer(
        args.data_path, vocab_size=2000 if args.smoke else 8000, max_hh_rows=50 if args.smoke else None
    )
    wait = pc.wait_for_quiet_machine(args.max_load, args.max_wait) if args.max_load else None
    load_start = pc.load_average()

    exactness = []
    for model_key in ["tiny"] if args.smoke else ["llama-32k", "qwen2-32k"]:
        exactness.append(
            prefix_sharing_exactness(
                model_key,
                tokenizer_dir,
                args.datasets[0],
                args.data_path,
                2 if args.smoke else 4,
                args.threads,
                args.smoke,
            )  # fmt: skip
        )
    cases = build_cases(args, tokenizer_dir)
    # raw runs, appended as they finish (survives a crash)
    log_path = None if args.smoke else Path(tempfile.gettempdir()) / (args.output.stem + ".runs.jsonl")
    if log_path is not None and log_path.exists():
        log_path.unlink()
    results = pc.run_cases(
        cases,
        args.repeats,
        args.in_process,
        log_path,
        args.max_busy,
        args.case_wait,
        args.max_other_cores,
        args.max_attempts,
        args.patience,
    )
    summary = pc.summarize(results, ("data", "variant", "method"))
    table = ratio_table(summary, args.datasets, args.variants)
    load_end = pc.load_average()

    payload = {
        "benchmark": "throughput",
        "command": command,
        "machine": pc.machine_info(),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "wait_for_quiet": wait,
        "wall_time_s": time.time() - started,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model_shapes": {k: pc.MODEL_SHAPES[k] for k in {c["model"] for c in cases}},
        "datasets": {d: pc.DATASETS.get(d, d) for d in args.datasets},
        "prefix_sharing_exactness": exactness,
        "ratios": table,
        "runs": results,
    }
    pc.write_json(args.output, payload)
    print(format_table(table))
    for e in exactness:
        print(f"prefix sharing exactness ({e['model']}, {e['data_used']}): max |diff| {e['max_abs_diff']:.2e} "
              f"(|logp| ~ {e['mean_abs_logp']:.0f})")  # fmt: skip
    print(f"wrote {args.output}")
    bad = [r for r in results if not all(math.isfinite(t) for t in r["step_times_s"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
