# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Running benchmark cases, and the medians over their repeats.

`run_case(case)` runs one `Case` in this process and returns its measurements: the wall time of every optimizer step
(from one `on_step_end` to the next, so collation, forward, backward and optimizer step are all inside), what each
step fed the model (non-pad tokens, padded positions, the positions the LM head scores, attention pairs; counted by
wrapping the collator), and memory (per step, the peak over the memory at the step's start; see `MemoryProbe`).

`run_cases(cases, ...)` runs every case `repeats` times, the cases of one repeat back to back (so slow phases of a
shared machine hit all of them alike), each in a fresh subprocess unless told otherwise (clean peak-RSS numbers, no
allocator state carried over).
"""

import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
import transformers
import trl.trainer.utils as trl_utils
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer

from trl_inspo import InSPOConfig, InSPOTrainer

from .case import Case
from .data import dataset_rows, load_tokenizer
from .env import REPO_ROOT
from .flops import attention_pairs
from .machine import MemoryProbe, OtherCpuMeter, QuietMachine
from .models import MODEL_SHAPES, build_model


# glibc keeps freed blocks below its (dynamic) mmap threshold in its heap, so RSS would not drop after a step and the
# next step's peak would be hidden. A fixed threshold returns every large tensor to the OS when it is freed, which
# makes RSS track live memory. Set for the benchmark subprocesses only, identically for every method.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------------------------------------------------- one case
def run_case(case: Case) -> dict:
    """Run `case` in this process and return its measurements, undoing its benchmark-only patches afterwards so that
    in-process runs do not leak them into the next case.

    What is alive before the case (the libraries' objects) is frozen out of garbage collection: a full collection
    would otherwise rescan it, ~1 s with transformers and TRL loaded, inside a timed step or at the end of `train()`.
    """
    gc.collect()
    gc.freeze()
    saved = trl_utils._use_triton  # `_apply_lm_head_mode` may patch it
    try:
        return _measure(case)
    finally:
        trl_utils._use_triton = saved
        gc.collect()  # free this case's models before the next in-process case measures its memory
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_case_fields(fields: dict) -> dict:
    """`run_case` of the case with these fields (what a benchmark subprocess runs)."""
    return run_case(Case(**fields))


def _measure(case: Case) -> dict:
    if case.threads:
        torch.set_num_threads(case.threads)
    _apply_lm_head_mode(case.lm_head)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    memory = MemoryProbe(case.device == "cuda")

    started = time.perf_counter()
    tokenizer = load_tokenizer(case.tokenizer_dir)
    n_rows = (case.warmup + case.steps) * case.batch_size
    hh_path = Path(case.hh_path) if case.hh_path else None
    rows, data_used = dataset_rows(case.data, n_rows, hh_path, case.seed, case.prompt_tokens, case.response_tokens)
    shape = MODEL_SHAPES[case.model]
    positions = max_positions(tokenizer, rows)
    model = _model(case, shape, tokenizer, positions)
    ref_model = None
    if case.reference == "live":
        ref_model = _model(case, shape, tokenizer, positions).eval().requires_grad_(False)
    mem_after_load = memory.current()

    meter = StepMeter(memory)
    callbacks = [meter]
    profiler = ProfileStep(case.warmup, shape["vocab_size"]) if case.profile else None
    if profiler is not None:
        callbacks.append(profiler)
    trainer = _trainer(case, model, ref_model, tokenizer, rows, callbacks)
    counter = CountingCollator(trainer.data_collator, case.trainer == "dpo", case.unconditional_metrics)
    trainer.data_collator = counter
    setup_s = time.perf_counter() - started
    mem_before_train = memory.current()

    cpu = OtherCpuMeter()
    cpu.start()
    trainer.train()
    machine_during_train = cpu.stop()

    w, total = case.warmup, case.warmup + case.steps
    ends = [meter.train_begin, *meter.ends]
    step_times = [ends[i + 1] - ends[i] for i in range(len(meter.ends))]
    compute_times = [e - b for b, e in zip(meter.begins, meter.ends)]
    step_mem = [p - s for s, p in zip(meter.mem_start, meter.mem_peak)]
    batches = counter.batches[:total]
    measured = batches[w:total]
    tokens = statistics.mean(b["tokens"] for b in measured)
    step_mean = statistics.mean(step_times[w:])
    return {
        "case": case.to_dict(),
        "data_used": data_used,
        "model_shape": shape,
        "num_parameters": sum(p.numel() for p in trainer.model.parameters()),
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "setup_s": setup_s,
        "step_times_s": step_times,
        "compute_times_s": compute_times,
        "step_time_median_s": statistics.median(step_times[w:]),
        "step_time_mean_s": step_mean,
        "compute_time_median_s": statistics.median(compute_times[w:]),
        "collate_time_median_s": statistics.median(b["collate_s"] for b in measured),
        "tokens_per_step": tokens,
        "positions_per_step": statistics.mean(b["positions"] for b in measured),
        "scored_per_step": statistics.mean(b["scored"] for b in measured),
        "rows_per_step": statistics.mean(b["rows"] for b in measured),
        "width_per_step": statistics.mean(b["width"] for b in measured),
        "tokens_per_s": tokens / step_mean,
        "pairs_per_s": case.batch_size / step_mean,
        "mem_unit": memory.unit,
        "mem_after_load_mib": mem_after_load,
        "mem_before_train_mib": mem_before_train,
        "step_peak_increase_mib": max(step_mem[w:]),
        "step_peak_increase_all_mib": step_mem,
        "peak_mib": max(meter.mem_peak),
        "peak_increase_over_load_mib": max(meter.mem_peak) - mem_after_load,
        **machine_during_train,
        "batches": batches,
        "profile": profiler.report if profiler is not None else None,
    }


def _apply_lm_head_mode(mode: str) -> None:
    """`"stock"`: TRL as shipped (on CPU the fused LM head scores every position, on CUDA only the labelled ones).
    `"compact"`: score only labelled positions on every device (what TRL does on CUDA), for DPO and InSPO alike."""
    if mode == "compact":
        trl_utils._use_triton = lambda device: True  # only decides compaction; the kernels keep their own check
    elif mode != "stock":
        raise ValueError(f"Unknown lm_head mode {mode!r}")


def max_positions(tokenizer, rows: list[dict]) -> int:
    """Position embeddings with room for the longest InSPO row of `rows` (prompt and both responses), twice over."""
    longest = max(
        len(tokenizer(r["prompt"])["input_ids"])
        + sum(len(tokenizer(r[k], add_special_tokens=False)["input_ids"]) for k in ("chosen", "rejected"))
        for r in rows
    )
    return max(2048, 2 * (longest + 8))


def _model(case: Case, shape: dict, tokenizer, positions: int):
    return build_model(
        shape,
        tokenizer,
        seed=case.seed,
        dtype=getattr(torch, case.dtype),
        attn_implementation=case.attn,
        max_position_embeddings=positions,
        device=case.device,
    )


def _trainer(case: Case, model, ref_model, tokenizer, rows: list[dict], callbacks: list):
    common = dict(
        output_dir=os.path.join(case.tmp_dir, f"bench-{os.getpid()}-{case.method}"),
        report_to="none",
        per_device_train_batch_size=case.batch_size,
        max_steps=case.warmup + case.steps,
        learning_rate=1e-6,
        logging_steps=10_000,
        save_strategy="no",
        bf16=case.dtype == "bfloat16",
        use_cpu=case.device != "cuda",
        gradient_checkpointing=case.gradient_checkpointing,
        dataloader_pin_memory=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=case.seed,
        max_length=None,
        precompute_ref_log_probs=case.reference == "precomputed",
        precompute_ref_batch_size=case.batch_size,
        beta=0.1,
    )
    if case.trainer == "dpo":
        args, trainer_cls = DPOConfig(**common), DPOTrainer
    else:
        args = InSPOConfig(
            **common,
            prefix_sharing=case.prefix_sharing,
            max_alternative_length=case.max_alternative_length,
            unconditional_metrics=case.unconditional_metrics,
        )
        trainer_cls = InSPOTrainer
    peft_config = None
    if case.reference == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=LORA_TARGETS
        )
    dataset = Dataset.from_list(rows)
    trainer = trainer_cls(model, ref_model, args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=callbacks, peft_config=peft_config)  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # no log printing inside the timed loop
    return trainer


class CountingCollator:
    """Wraps a collator: records, per batch, non-pad tokens, padded positions, LM-head-scored positions, attention
    pairs, rows, width and the collation time."""

    def __init__(self, inner, dpo: bool, unconditional_metrics: bool = True):
        self.inner, self.dpo, self.unconditional_metrics, self.batches = inner, dpo, unconditional_metrics, []

    def __call__(self, examples):
        t0 = time.perf_counter()
        out = self.inner(examples)
        dt = time.perf_counter() - t0
        self.batches.append(
            {
                "attention_pairs": attention_pairs(out),
                "tokens": int(out["attention_mask"].sum()),
                "positions": int(out["input_ids"].numel()),
                "rows": int(out["input_ids"].size(0)),
                "width": int(out["input_ids"].size(1)),
                "scored": self._scored(out),
                "collate_s": dt,
            }
        )
        return out

    def _scored(self, out) -> int:
        """Positions whose label the LM head scores."""
        if self.dpo or (not self.unconditional_metrics and "completion_mask" in out):
            return int(out["completion_mask"][:, 1:].sum())
        if not self.unconditional_metrics:  # prefix-shared: the target segments' kinds
            return int(((out["logp_kinds"] == 1) | (out["logp_kinds"] == 2)).sum())
        if "shift_labels" in out:
            return int((out["shift_labels"] != -100).sum())
        return int(((out["completion_mask"] + out["alternative_mask"])[:, 1:] > 0).sum())

    def __getattr__(self, name):
        return getattr(self.inner, name)


class StepMeter(TrainerCallback):
    """Timestamps at each step's begin and end; per-step peak memory over the memory at the step's start."""

    def __init__(self, memory: MemoryProbe):
        self.memory = memory
        self.train_begin = None
        self.begins, self.ends, self.mem_start, self.mem_peak = [], [], [], []

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_begin = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self.memory.reset_peak()
        self.mem_start.append(self.memory.current())
        self.begins.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.mem_peak.append(self.memory.peak())
        self.ends.append(time.perf_counter())


class ProfileStep(TrainerCallback):
    """Runs `torch.profiler` over step `step_index` and sums the self CPU time of its ops into categories (see
    `summarize_profile`)."""

    def __init__(self, step_index: int, vocab_size: int):
        self.step_index, self.vocab_size = step_index, vocab_size
        self.prof, self.step, self.report = None, 0, None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.step == self.step_index:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
            self.prof.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.step == self.step_index:
            self.prof.stop()
            self.report = summarize_profile(self.prof, self.vocab_size)
        self.step += 1


def summarize_profile(prof, vocab_size: int) -> dict:
    """Self CPU time (ms) per category and the top ops of a CPU profile: the LM head (ops on a tensor with a
    vocabulary-sized dimension), attention (the sdpa/eager attention kernels), the optimizer and the rest."""
    vocab_dims = {vocab_size, min(vocab_size, 32768)}
    categories: dict[str, float] = {}
    top = []
    for event in prof.key_averages(group_by_input_shape=True):
        shapes = event.input_shapes or []
        name = event.key
        if any(isinstance(s, (list, tuple)) and any(d in vocab_dims for d in s) for s in shapes):
            category = "lm_head"
        elif "attention" in name or "scaled_dot_product" in name or "softmax" in name:
            category = "attention"
        elif "Optimizer" in name or "adam" in name.lower() or "_foreach" in name:
            category = "optimizer"
        else:
            category = "other"
        ms = event.self_cpu_time_total / 1000
        categories[category] = categories.get(category, 0.0) + ms
        top.append((ms, name, str(shapes)[:120], category))
    top.sort(reverse=True)
    return {
        "self_cpu_ms_by_category": {k: round(v, 1) for k, v in sorted(categories.items(), key=lambda kv: -kv[1])},
        "top_ops": [{"self_cpu_ms": round(ms, 1), "op": n, "shapes": sh, "category": c} for ms, n, sh, c in top[:25]],
    }


# ---------------------------------------------------------------------------------------------------------- many cases
def run_in_subprocess(module: str, function: str, argument: dict) -> dict:
    """`module.function(argument)` in a fresh Python process (with `MALLOC_ENV`), its JSON result returned; raises
    `RuntimeError` with the end of its stderr when it fails."""
    env = dict(os.environ, **MALLOC_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    code = (
        "import importlib, json, sys; "
        "function = getattr(importlib.import_module(sys.argv[1]), sys.argv[2]); "
        "print('@@RESULT@@' + json.dumps(function(json.loads(sys.argv[3]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, module, function, json.dumps(argument)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@") :])
    raise RuntimeError(f"{module}.{function}({argument}) failed:\n{proc.stderr[-4000:]}")


def run_cases(
    cases: list[Case],
    repeats: int,
    in_process: bool,
    log_path: Path | None = None,
    quiet: QuietMachine | None = None,
) -> list[dict]:
    """Run every case `repeats` times; the cases of one repeat run back to back, each in a fresh subprocess unless
    `in_process`. With `quiet`, each run first waits for a quiet machine, and a run disturbed by other processes is
    run again (the least disturbed attempt is kept) until `quiet.patience` runs out. Returns one result per (case,
    repeat), with `repeat`, `attempts` and `wait_before` set; appends each to `log_path` (JSON lines) when given."""
    started = time.time()
    results = []
    for repeat in range(repeats):
        for i, case in enumerate(cases):
            print(f"[bench] repeat {repeat + 1}/{repeats} case {i + 1}/{len(cases)}: {case.label or case.method}",
                  file=sys.stderr, flush=True)  # fmt: skip
            attempts = []
            for _ in range(max(1, quiet.max_attempts) if quiet else 1):
                patient = quiet is not None and (quiet.patience is None or time.time() - started < quiet.patience)
                wait = quiet.wait_before_case() if patient else None
                if in_process:
                    attempt = run_case(case)
                else:
                    attempt = run_in_subprocess(__name__, "run_case_fields", asdict(case))
                attempt["wait_before"] = wait
                attempts.append(attempt)
                if not (patient and quiet.disturbed(attempt)):
                    break
                print(f"[bench]   disturbed ({attempt['other_cpu_cores_during_train']:.2f} other cores): again",
                      file=sys.stderr, flush=True)  # fmt: skip
            result = min(attempts, key=lambda a: a["other_cpu_cores_during_train"])
            result["repeat"] = repeat
            result["attempts"] = [round(a["other_cpu_cores_during_train"], 3) for a in attempts]
            results.append(result)
            if log_path is not None:
                with open(log_path, "a") as f:
                    f.write(json.dumps(result) + "\n")
    return results


def summarize(results: list[dict], key_fields: tuple[str, ...]) -> dict:
    """Group results by `key_fields` of their case and take medians over repeats."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault(tuple(r["case"].get(k) for k in key_fields), []).append(r)
    summary = {}
    for key, rs in groups.items():

        def med(name, rs=rs):
            return statistics.median(r[name] for r in rs)

        summary[key] = {
            "n_repeats": len(rs),
            # Every method sees the same batches in the same order, which differ in length from step to step: the
            # mean over the measured steps compares like with like (and matches the token means); the median of
            # the per-step times is kept too.
            "step_time_s": med("step_time_mean_s"),
            "step_time_spread_s": [min(r["step_time_mean_s"] for r in rs), max(r["step_time_mean_s"] for r in rs)],
            "step_time_median_s": med("step_time_median_s"),
            "step_times_by_repeat_s": [r["step_times_s"][r["case"]["warmup"] :] for r in rs],
            "compute_time_s": med("compute_time_median_s"),
            "collate_time_s": med("collate_time_median_s"),
            "tokens_per_step": med("tokens_per_step"),
            "positions_per_step": med("positions_per_step"),
            "scored_per_step": med("scored_per_step"),
            "tokens_per_s": med("tokens_per_s"),
            "pairs_per_s": med("pairs_per_s"),
            "step_peak_increase_mib": med("step_peak_increase_mib"),
            "step_peak_increase_mean_mib": statistics.median(
                statistics.mean(r["step_peak_increase_all_mib"][r["case"]["warmup"] :]) for r in rs
            ),
            "peak_increase_over_load_mib": med("peak_increase_over_load_mib"),
            "data_used": rs[0]["data_used"],
            "other_cpu_cores_max": max(r.get("other_cpu_cores_during_train", float("nan")) for r in rs),
        }
    return summary


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")
