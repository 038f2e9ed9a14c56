# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""InSPO under DeepSpeed ZeRO-2/3 and FSDP2, each compared with plain single-GPU training, in one call.

On one GPU (`accelerate launch --num_processes 1` for every run), with a Qwen2-0.5B-shaped model built once from a
config and saved to a local directory (every run loads it by path, so TRL reloads the reference the normal way):

| case | launcher (config derived from examples/accelerate_configs/) | what it checks |
|---|---|---|
| `plain` | none (`distributed_type: NO`) | the baseline trajectory |
| `zero3` | `deepspeed_zero3.yaml` | live reference sharded like the policy; checkpoint at `--save-step`; 16-bit save |
| `zero3_resume` | `deepspeed_zero3.yaml` | resumes `zero3`'s checkpoint; its later losses must continue `zero3`'s |
| `fsdp2` | `fsdp2.yaml` | live reference under `fully_shard`; full-state-dict save |
| `zero2` | `deepspeed_zero2.yaml` | live reference (ZeRO stage 0 engine, as TRL prepares it) |
| `plain_lora` | none | the LoRA baseline (reference = adapter-disabled policy) |
| `zero3_lora`, `fsdp2_lora` | ZeRO-3 / FSDP2 | adapter-disabled reference under sharding; adapter save |
| `zero3_copied_ref` | `deepspeed_zero3.yaml` | a model instance without a path: InSPO deep-copies the reference |

Every run uses the same seed, data order and hyperparameters. Per step it logs the loss and the policy's sequence
log-probabilities (`logps/chosen`, `logps/rejected`); they are compared with the baseline run step by step. Each
saved final model (or adapter) is reloaded outside the launcher and scored on fixed rows; those log-probabilities are
compared with the baseline's saved model and must lie nearer to it than to the initial model's (the save holds the
trained, gathered weights). One JSON holds every run's losses, step times, peak memory, the comparisons, versions and
the launch commands.

Tolerance ("match within bf16"): every run keeps fp32 master weights and fp32 optimizer states (the checkpoint is
stored in bf16, as Qwen2-0.5B is, and loaded in fp32; `mixed_precision: bf16` computes in bf16: autocast in the plain
run, bf16 parameter copies under DeepSpeed and FSDP2), so runs differ only in where bf16 rounding happens. A value
that flows through `n` bf16 roundings picks up, per run, a relative error that is a sum of `n` roundings of at most `u`
each, `u = 2**-8` (bf16 keeps 8 significant bits). Modelled as independent and uniform on `[-u, u]` (standard deviation
`u / sqrt(3)` each), the difference of two runs has standard deviation `u * sqrt(2n / 3)`; three of them give
`rtol = u * sqrt(6 n)`. `n = 2 L + 2` for a per-token log-probability of an `L`-layer model (the residual stream is
rounded after the attention and after the MLP block of each layer, then the final norm and the LM head), so
`rtol = 2**-8 * sqrt(300) = 0.068` for Qwen2-0.5B's 24 layers. Each optimizer step between the point where two
runs were identical and the compared step adds one more such error (Adam normalises the gradient, so a gradient with
relative error `r` gives an update with relative error about `r`), so at the `t`-th step after that point
`rtol_t = u * sqrt(6 n t)` (0.068 at the first step, 0.19 at the 8th). The check is `|a - b| <= rtol_t * max(|a|, |b|)
+ 1e-6`. It is a statistical bound from a model of rounding, not a proof: the JSON records every observed relative
deviation next to its tolerance, and whether the comparison is informative: whether a broken run would have failed it
(one whose reference follows the policy or whose optimizer never steps keeps the first step's loss, `ln 2`; a resume
that restarted the data replays the first batches). A baseline whose loss barely moved could not tell them apart:
hence `beta = 0.5` rather than DPO's usual 0.1 and a learning rate of 1e-4. Adam's updates do not depend on the scale
of the loss, so the margins grow alike for any `beta`, while the loss responds five times more to them; at `beta = 0.1`
a CPU calibration with a 2-layer variant of the model (1e-4, 8 steps) moved the loss by at most 17%, inside the
tolerance. The CPU dry run uses the same formula with fp32's `u = 2**-24`.

Usage:

```bash
# GPU machine (about 6-8 minutes on one H100/H200): wheels from benchmarks/build_gpu_wheels.sh in .whl/
python benchmarks/distributed_check.py --output $OUT/distributed_check.json
# CPU, no DeepSpeed needed (well under a minute): configs, command lines, comparison logic, and the per-run training
# function end to end on a tiny model (plain, save + resume, LoRA)
python benchmarks/distributed_check.py --dry-run --output /tmp/distributed_check_dry.json
```
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml


REPO = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = REPO / "examples" / "accelerate_configs"
DATA = REPO / "examples" / "data" / "quickstart.jsonl"

# Qwen2-0.5B's config (Qwen/Qwen2-0.5B-Instruct's config.json; the base model's has max_position_embeddings 131072):
# 494,032,768 parameters with the tied embeddings, biases on the q/k/v projections (Qwen2's attention), no sliding
# window. Stored in bf16 (its torch_dtype).
QWEN2_0_5B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
)
# The dry run's model: the same architecture, tiny.
TINY = dict(
    QWEN2_0_5B,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=None,
    max_position_embeddings=512,
)

SHAPES = {"qwen2-0.5b": QWEN2_0_5B, "tiny": TINY}

BF16_UNIT_ROUNDOFF = 2.0**-8  # 8 significant bits
FP32_UNIT_ROUNDOFF = 2.0**-24
ATOL = 1e-6  # float32 logging of the per-step means
COMPARED_KEYS = ("loss", "logps/chosen", "logps/rejected")

# The three launchers and the example config each is derived from ("plain" is multi_gpu.yaml without distribution).
LAUNCHERS = {
    "plain": ("multi_gpu.yaml", {"distributed_type": "NO"}),
    "zero2": ("deepspeed_zero2.yaml", {"distributed_type": "DEEPSPEED", "zero_stage": 2}),
    "zero3": ("deepspeed_zero3.yaml", {"distributed_type": "DEEPSPEED", "zero_stage": 3}),
    "fsdp2": ("fsdp2.yaml", {"distributed_type": "FSDP", "fsdp_version": 2}),
}
# What each example config must select (checked in the dry run, before anything is launched).
EXPECTED_EXAMPLES = {
    "multi_gpu.yaml": {"distributed_type": "MULTI_GPU"},
    "deepspeed_zero2.yaml": {"distributed_type": "DEEPSPEED", "zero_stage": 2},
    "deepspeed_zero3.yaml": {"distributed_type": "DEEPSPEED", "zero_stage": 3, "zero3_save_16bit_model": True},
    "fsdp2.yaml": {"distributed_type": "FSDP", "fsdp_version": 2, "fsdp_state_dict_type": "FULL_STATE_DICT"},
}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    launcher: str
    lora: bool = False
    baseline: str | None = None  # compared step by step with this case
    save_checkpoint: bool = False  # a checkpoint at --save-step
    resume_of: str | None = None  # resumes this case's checkpoint at --save-step
    save_final: bool = True
    copied_reference: bool = False  # model instance without a path: InSPO deep-copies the reference

    @property
    def deepspeed(self) -> bool:
        return self.launcher.startswith("zero")


# In priority order: with `--budget-s`, the cases that would start after the budget are skipped.
CASES = (
    Case("plain", "plain"),
    Case("zero3", "zero3", baseline="plain", save_checkpoint=True),
    Case("zero3_resume", "zero3", baseline="plain", resume_of="zero3", save_final=False),
    Case("fsdp2", "fsdp2", baseline="plain"),
    Case("zero2", "zero2", baseline="plain"),
    Case("plain_lora", "plain", lora=True),
    Case("zero3_lora", "zero3", lora=True, baseline="plain_lora"),
    Case("fsdp2_lora", "fsdp2", lora=True, baseline="plain_lora"),
    Case("zero3_copied_ref", "zero3", baseline="plain", save_final=False, copied_reference=True),
)
CASES_BY_NAME = {case.name: case for case in CASES}
# The cases the CPU dry run trains in-process (no sharding there): the baseline, its save + resume, LoRA.
DRY_RUN_CASES = (
    Case("plain", "plain", save_checkpoint=True),
    Case("plain_resume", "plain", baseline="plain", resume_of="plain", save_final=False),
    Case("plain_lora", "plain", lora=True),
)


# ----------------------------------------------------------------------------------------------------- tolerance
def rtol(num_layers: int, steps_since_identical: int, unit_roundoff: float = BF16_UNIT_ROUNDOFF) -> float:
    """Relative tolerance at the `steps_since_identical`-th step after two runs had the same state (see the module
    docstring): `u * sqrt(6 n t)` with `n = 2 L + 2` bf16 roundings per forward."""
    if steps_since_identical < 1:
        raise ValueError("steps_since_identical counts from 1 (the first step after the runs were identical)")
    n = 2 * num_layers + 2
    return unit_roundoff * math.sqrt(6 * n * steps_since_identical)


def compare_series(candidate: dict, baseline: dict, num_layers: int, unit_roundoff: float, first_step: int = 1):
    """Compare per-step values `{step: {key: value}}` of two runs on the steps both have, from `first_step` on (the
    runs were identical before it). Returns the per-step deviations with their tolerances and `ok`."""
    steps = sorted(set(candidate) & set(baseline))
    steps = [s for s in steps if s >= first_step]
    rows, ok = [], bool(steps)
    for step in steps:
        tol = rtol(num_layers, step - first_step + 1, unit_roundoff)
        for key in COMPARED_KEYS:
            if key not in candidate[step] or key not in baseline[step]:
                continue
            a, b = float(candidate[step][key]), float(baseline[step][key])
            diff = abs(a - b)
            scale = max(abs(a), abs(b))
            passed = math.isfinite(a) and diff <= tol * scale + ATOL
            ok = ok and passed
            rel_dev = diff / scale if scale else 0.0
            rows.append(
                {"step": step, "key": key, "value": a, "baseline": b, "rel_dev": rel_dev, "rtol": tol, "ok": passed}
            )
    worst = max(rows, key=lambda r: r["rel_dev"] / r["rtol"], default=None)
    return {"ok": ok, "steps": steps, "first_step": first_step, "worst": worst, "rows": rows}


def would_flag(broken: dict, baseline: dict, num_layers: int, unit_roundoff: float, first_step: int = 1) -> bool:
    """Whether the loss comparison would flag the `broken` trajectory: the test of a comparison's power."""
    losses_only = {s: {"loss": v["loss"]} for s, v in broken.items() if "loss" in v}
    return not compare_series(losses_only, baseline, num_layers, unit_roundoff, first_step)["ok"]


def flat_run_is_flagged(baseline: dict, num_layers: int, unit_roundoff: float) -> bool:
    """A run whose reference follows the policy or whose optimizer never steps keeps the first step's loss (`ln 2`,
    the margins stay 0) at every step: informative only if the baseline's loss moved out of the tolerance."""
    if 1 not in baseline:
        return False
    return would_flag(dict.fromkeys(baseline, baseline[1]), baseline, num_layers, unit_roundoff)


def restarted_resume_is_flagged(uninterrupted: dict, save_step: int, num_layers: int, unit_roundoff: float) -> bool:
    """A resume that restarted the data order replays the first steps' batches after the checkpoint."""
    shifted = {
        s: uninterrupted[s - save_step] for s in uninterrupted if s > save_step and s - save_step in uninterrupted
    }
    return bool(shifted) and would_flag(shifted, uninterrupted, num_layers, unit_roundoff, save_step + 1)


def initial_margin_check(series: dict, beta: float, num_layers: int, unit_roundoff: float) -> dict:
    """At the first step the policy equals the reference, so the reward margin must be ~0: a reference that was not
    loaded, prepared or adapter-disabled correctly shows up here. Bound: the margin is `beta` times a difference of
    four sequence log-probabilities, each within `rtol_1` of its value."""
    if 1 not in series or "rewards/margins" not in series[1]:
        return {"ok": False, "reason": "no first-step margin logged"}
    first = series[1]
    scale = abs(first.get("logps/chosen", 0.0)) + abs(first.get("logps/rejected", 0.0))
    bound = beta * 2 * scale * rtol(num_layers, 1, unit_roundoff) + ATOL
    margin = float(first["rewards/margins"])
    return {"ok": abs(margin) <= bound, "margin": margin, "bound": bound}


# ------------------------------------------------------------------------------------------- accelerate configs
def load_example_config(filename: str) -> dict:
    with open(ACCELERATE_CONFIGS / filename) as f:
        return yaml.safe_load(f)


def config_facts(config: dict) -> dict:
    """The settings that decide the engine: distributed type, ZeRO stage, FSDP version, ..."""
    ds = config.get("deepspeed_config") or {}
    fsdp = config.get("fsdp_config") or {}
    facts = {
        "distributed_type": config.get("distributed_type"),
        "num_processes": config.get("num_processes"),
        "mixed_precision": config.get("mixed_precision"),
    }
    if ds:
        facts.update(zero_stage=ds.get("zero_stage"), zero3_save_16bit_model=ds.get("zero3_save_16bit_model"))
    if fsdp:
        facts.update(fsdp_version=fsdp.get("fsdp_version"), fsdp_state_dict_type=fsdp.get("fsdp_state_dict_type"))
    return facts


def check_example_configs() -> dict:
    """Each example config parses (YAML, then as `accelerate launch` reads it) and selects the intended engine."""
    from accelerate.commands.config.config_args import load_config_from_file

    report = {}
    for filename, expected in EXPECTED_EXAMPLES.items():
        config = load_example_config(filename)
        facts = config_facts(config)
        problems = [f"{k}={facts.get(k)!r}, expected {v!r}" for k, v in expected.items() if facts.get(k) != v]
        if facts["mixed_precision"] != "bf16":
            problems.append(f"mixed_precision={facts['mixed_precision']!r}, expected 'bf16'")
        parsed = load_config_from_file(str(ACCELERATE_CONFIGS / filename))
        if str(parsed.distributed_type).split(".")[-1] != expected["distributed_type"]:
            problems.append(f"accelerate reads distributed_type={parsed.distributed_type}")
        report[filename] = {"facts": facts, "problems": problems, "ok": not problems}
    return report


def derive_config(launcher: str) -> dict:
    """The accelerate config of one run: the example config users use, on one process."""
    filename, expected = LAUNCHERS[launcher]
    config = load_example_config(filename)
    config["num_processes"] = 1
    if launcher == "plain":
        config["distributed_type"] = "NO"
        config.pop("gpu_ids", None)
    facts = config_facts(config)
    for key, value in expected.items():
        if facts.get(key) != value:
            raise ValueError(f"{filename}: {key}={facts.get(key)!r}, expected {value!r} for the {launcher!r} run")
    return config


def write_configs(config_dir: Path) -> dict:
    config_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for launcher in LAUNCHERS:
        path = config_dir / f"{launcher}.yaml"
        path.write_text(yaml.safe_dump(derive_config(launcher), sort_keys=True))
        paths[launcher] = path
    return paths


def check_launch_arguments(config_path: Path, launcher: str) -> dict:
    """What `accelerate launch --config_file ... --num_processes 1` makes of a derived config (no process started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config_path), "--num_processes", "1", "x.py"])
    args, _, _ = _validate_launch_command(args)
    selected = {
        "use_deepspeed": bool(args.use_deepspeed),
        "use_fsdp": bool(args.use_fsdp),
        "multi_gpu": bool(args.multi_gpu),
        "num_processes": args.num_processes,
        "mixed_precision": args.mixed_precision,
    }
    expected = {"plain": (False, False), "zero2": (True, False), "zero3": (True, False), "fsdp2": (False, True)}
    ok = (selected["use_deepspeed"], selected["use_fsdp"]) == expected[launcher] and not selected["multi_gpu"]
    ok = ok and selected["num_processes"] == 1 and selected["mixed_precision"] == "bf16"
    return {"selected": selected, "ok": ok}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(case: Case, config_path: Path, worker_args: list[str], port: int) -> list[str]:
    """`accelerate launch` (as `python -m accelerate.commands.launch`, the same entry point) of one worker run."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_path),
        "--num_processes",
        "1",
        "--main_process_port",
        str(port),
        str(Path(__file__).resolve()),
        "--worker",
        "--case",
        case.name,
        *worker_args,
    ]


# ------------------------------------------------------------------------------------------------ model and data
def training_texts(path: Path = DATA) -> list[str]:
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return [r["prompt"] + r["chosen"] + r["rejected"] for r in rows]


def build_model_dir(model_dir: Path, shape: dict, dtype_name: str, tokenizer_vocab: int, seed: int = 0) -> dict:
    """Build the model from a config with a fixed seed, once, and save it (and a locally trained tokenizer) to
    `model_dir`; every run loads it by path. The tokenizer's vocabulary can be smaller than the model's: the LM head
    keeps the model's full vocabulary (its cost is the real one), the extra rows are never targets."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from trl_inspo.tiny import build_tokenizer

    tokenizer = build_tokenizer(training_texts(), vocab_size=tokenizer_vocab)
    shape = dict(shape)
    rope_theta = shape.pop("rope_theta")
    vocab_size = shape.pop("vocab_size") or len(tokenizer)
    config = Qwen2Config(
        **shape,
        vocab_size=vocab_size,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        use_sliding_window=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype_name), attn_implementation="sdpa")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return {
        "path": str(model_dir),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": dtype_name,
        "config": {**shape, "vocab_size": vocab_size, "rope_theta": rope_theta},
        "tokenizer_vocab": len(tokenizer),
        "weights_sha256": digest.hexdigest(),
        "seed": seed,
    }


# ------------------------------------------------------------------------------------------------- one run (worker)
def run_case(case: Case, opts: dict) -> dict | None:
    """Train one case for `opts["steps"]` steps and return its record (main process; `None` on the others).

    `opts`: model_dir, output_dir, steps, save_step, learning_rate, batch_size, max_length, beta, seed, bf16, use_cpu,
    resume_dir (the resumed case's output directory).
    """
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from trl_inspo import InSPOConfig, InSPOTrainer

    cuda = torch.cuda.is_available() and not opts["use_cpu"]
    steps, save_step = opts["steps"], opts["save_step"]
    dataset = load_dataset("json", data_files=str(DATA), split="train")
    dataset = dataset.select(range(steps * opts["batch_size"]))
    config = InSPOConfig(
        output_dir=opts["output_dir"],
        max_steps=steps,
        per_device_train_batch_size=opts["batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=opts["learning_rate"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        beta=opts["beta"],
        max_length=opts["max_length"],
        logging_steps=1,
        save_strategy="steps" if case.save_checkpoint else "no",
        save_steps=save_step,
        bf16=opts["bf16"],
        use_cpu=opts["use_cpu"],
        model_init_kwargs={"dtype": "float32", "attn_implementation": "sdpa"},
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=True,
        seed=opts["seed"],
        data_seed=opts["seed"],
    )
    peft_config = None
    if case.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    model, processing_class = opts["model_dir"], None
    if case.copied_reference:
        # A model instance without a name or path, loaded after the config (under ZeRO-3 that is inside zero.Init):
        # InSPOTrainer then deep-copies it for the reference.
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation="sdpa")
        model.config._name_or_path = ""
        processing_class = AutoTokenizer.from_pretrained(opts["model_dir"])  # there is no path to load it from
        partitioned_at_load = hasattr(next(model.parameters()), "ds_id")

    class Recorder(TrainerCallback):
        """Step times, peak memory; a checkpoint at `save_step` only (not at every multiple of it)."""

        def __init__(self):
            self.times, self.start = [], None

        def on_train_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.resident = torch.cuda.memory_allocated()

        def on_step_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.times.append({"step": state.global_step, "seconds": time.perf_counter() - self.start})
            control.should_save = case.save_checkpoint and state.global_step == save_step

    timer = Recorder()
    started = time.perf_counter()
    try:
        trainer = InSPOTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=processing_class,
            peft_config=peft_config,
            callbacks=[timer],
        )
    except ValueError as error:
        if not (case.copied_reference and partitioned_at_load and "ZeRO-3" in str(error)):
            raise
        # A partitioned model cannot be deep-copied into a reference: InSPOTrainer says so (the expected outcome)
        return {"case": case.name, "launcher": case.launcher, "expected_error": str(error), "versions": versions()}
    init_seconds = time.perf_counter() - started
    resume = None
    if case.resume_of:
        resume = str(Path(opts["resume_dir"]) / f"checkpoint-{save_step}")
    trainer.train(resume_from_checkpoint=resume)
    final_dir = None
    if case.save_final:
        final_dir = str(Path(opts["output_dir"]) / "final")
        trainer.save_model(final_dir)
    accelerator = trainer.accelerator
    if not accelerator.is_main_process:
        return None

    series = {}
    for entry in trainer.state.log_history:
        if "loss" in entry and "step" in entry:
            series[int(entry["step"])] = {k: v for k, v in entry.items() if isinstance(v, int | float)}
    state = accelerator.state
    ds_plugin = getattr(state, "deepspeed_plugin", None)
    fsdp_plugin = getattr(state, "fsdp_plugin", None)
    record = {
        "case": case.name,
        "launcher": case.launcher,
        "lora": case.lora,
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "zero_stage": ds_plugin.zero_stage if ds_plugin is not None else None,
        "fsdp_version": fsdp_plugin.fsdp_version if fsdp_plugin is not None else None,
        "policy_class": type(trainer.model_wrapped).__name__,
        "reference_class": type(trainer.ref_model).__name__ if trainer.ref_model is not None else None,
        "reference": "adapter-disabled policy" if trainer.ref_model is None and case.lora else "separate model",
        "resumed_from": resume,
        "zero3_partitioned_at_load": partitioned_at_load if case.copied_reference else None,
        "series": series,
        "step_times": timer.times,
        "init_seconds": init_seconds,
        "train_seconds": time.perf_counter() - started - init_seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "resident_memory_at_train_begin_gib": getattr(timer, "resident", 0) / 2**30 if cuda else None,
        "final_dir": final_dir,
        "saved_files": sorted(p.name for p in Path(final_dir).iterdir()) if final_dir else None,
        "versions": versions(),
    }
    return record


# ------------------------------------------------------------------------------------------- saved-model scoring
def score_saved_model(model_dir: str, adapter_dir: str | None, rows: list[dict], device: str) -> list[float]:
    """Sequence log-probability of each row's chosen response given its prompt, from a saved model (or base model +
    saved adapter) loaded the plain way: checks that a save holds the full, trained weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).to(device)
    model.eval()
    out = []
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    with torch.no_grad(), autocast:
        for row in rows:
            prompt = tokenizer(row["prompt"])["input_ids"]
            full = tokenizer(row["prompt"] + row["chosen"])["input_ids"]
            ids = torch.tensor([full], device=device)
            logits = model(input_ids=ids).logits.float()[0, :-1]
            logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
            out.append(float(logps[len(prompt) - 1 :].sum()))
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def compare_scores(candidate: list[float], baseline: list[float], tol: float) -> dict:
    devs = [abs(a - b) / max(abs(a), abs(b), 1e-12) for a, b in zip(candidate, baseline)]
    return {"ok": bool(devs) and max(devs) <= tol, "max_rel_dev": max(devs, default=None), "rtol": tol}


# ---------------------------------------------------------------------------------------------------- analysis
def analyse(records: dict, cases, num_layers: int, unit_roundoff: float, beta: float, save_step: int) -> dict:
    """Every comparison: each case with its baseline, the resumed case with the uninterrupted one after the resume,
    the first-step margin, the reference kind, and the informativeness of each baseline."""
    out = {}
    for case in cases:
        record = records.get(case.name)
        if record is not None and "expected_error" in record:  # the clear error InSPOTrainer gives for this case
            out[case.name] = {"ok": True, "status": "raised the expected error", "error": record["expected_error"]}
            continue
        if record is None or "series" not in record:
            out[case.name] = {"ok": False, "status": (record or {}).get("status", "not run")}
            continue
        series = record["series"]
        checks = {"initial_margin": initial_margin_check(series, beta, num_layers, unit_roundoff)}
        if case.lora:
            checks["reference"] = {"ok": record["reference_class"] is None, "kind": record["reference"]}
        else:
            checks["reference"] = {"ok": record["reference_class"] is not None, "kind": record["reference_class"]}
        if case.baseline is not None:
            base = records.get(case.baseline, {})
            if "series" in base:
                # a resumed run carries the divergence of the run that saved its checkpoint: compared from step 1
                checks["vs_baseline"] = compare_series(series, base["series"], num_layers, unit_roundoff)
                checks["vs_baseline"]["baseline"] = case.baseline
                # would a stuck run (reference = policy, or no optimizer step) fail this comparison?
                checks["vs_baseline"]["informative"] = flat_run_is_flagged(base["series"], num_layers, unit_roundoff)
            else:
                checks["vs_baseline"] = {"ok": False, "reason": f"baseline {case.baseline} did not run"}
        if case.resume_of is not None:
            uninterrupted = records.get(case.resume_of, {})
            if "series" in uninterrupted:
                resumed_steps = sorted(s for s in series if s > save_step)
                checks["resume"] = compare_series(
                    series, uninterrupted["series"], num_layers, unit_roundoff, first_step=save_step + 1
                )
                checks["resume"]["resumed_steps"] = resumed_steps
                checks["resume"]["informative"] = restarted_resume_is_flagged(
                    uninterrupted["series"], save_step, num_layers, unit_roundoff
                )
                checks["resume"]["ok"] = checks["resume"]["ok"] and resumed_steps == checks["resume"]["steps"]
            else:
                checks["resume"] = {"ok": False, "reason": f"{case.resume_of} did not run"}
        if "saved_model" in record:
            checks["saved_model"] = record["saved_model"]
        out[case.name] = {"ok": all(c.get("ok", False) for c in checks.values()), "checks": checks}
    return out


def self_test(num_layers: int = 24) -> dict:
    """The comparison logic on made-up trajectories: identical ones pass, a loss perturbed by 10x its tolerance is
    flagged, a stuck (never-updated) run is flagged against a moving baseline, a resume that restarted its data is
    flagged, and the tolerance grows with the steps."""
    u = BF16_UNIT_ROUNDOFF
    base = {
        s: {"loss": 0.693 - 0.04 * (s - 1), "logps/chosen": -50.0 + s, "logps/rejected": -60.0 - s}
        for s in range(1, 9)
    }
    perturbed = {s: dict(v) for s, v in base.items()}
    perturbed[5]["loss"] *= 1 + 10 * rtol(num_layers, 5, u)
    stuck = {s: dict(base[1]) for s in base}
    restarted = {s: dict(base[s - 4]) for s in range(5, 9)}
    results = {
        "identical_passes": compare_series(base, base, num_layers, u)["ok"],
        "perturbed_flagged": not compare_series(perturbed, base, num_layers, u)["ok"],
        "perturbed_worst_step": compare_series(perturbed, base, num_layers, u)["worst"]["step"],
        "stuck_flagged": not compare_series(stuck, base, num_layers, u)["ok"],
        "restarted_resume_flagged": not compare_series(restarted, base, num_layers, u, first_step=5)["ok"],
        "tolerance_grows": rtol(num_layers, 1, u) < rtol(num_layers, 8, u),
        "baseline_informative": flat_run_is_flagged(base, num_layers, u),
        "flat_baseline_uninformative": not flat_run_is_flagged(stuck, num_layers, u),
        "restart_detectable": restarted_resume_is_flagged(base, 4, num_layers, u),
    }
    results["ok"] = all(v for k, v in results.items() if k != "perturbed_worst_step")
    results["ok"] = results["ok"] and results["perturbed_worst_step"] == 5
    return results


def versions() -> dict:
    import importlib.metadata as metadata

    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "deepspeed", "pyarrow"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    try:
        import torch

        if torch.cuda.is_available():
            found["cuda"] = torch.version.cuda
            found["device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return found


def requirement_problems(names=("trl", "transformers", "peft", "datasets", "deepspeed")) -> list[str]:
    """Unmet requirements of the packages the runs import (the GPU image holds some of their dependencies in other
    versions): found before anything is built or launched."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    problems = []
    for name in names:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                found = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name} needs {req}, not installed")
                continue
            if req.specifier and not req.specifier.contains(found, prereleases=True):
                problems.append(f"{name} needs {req}, found {req.name} {found}")
    return problems


# ----------------------------------------------------------------------------------------------------- modes
# Hyperparameters every run shares, passed to the launched workers as `--steps 8 --save-step 4 ...`.
SHARED_OPTIONS = ("steps", "save_step", "learning_rate", "batch_size", "max_length", "beta", "seed")


def run_opts(args, work: Path, model_dir: Path, case: Case, **overrides) -> dict:
    opts = {key: getattr(args, key) for key in SHARED_OPTIONS}
    resume_dir = str(work / "runs" / case.resume_of) if case.resume_of else None
    opts.update(model_dir=str(model_dir), output_dir=str(work / "runs" / case.name), resume_dir=resume_dir)
    opts.update(bf16=True, use_cpu=False)
    opts.update(overrides)
    return opts


def worker_args(opts: dict, result: Path) -> list[str]:
    args = ["--result", str(result)]
    for key in ("model_dir", "output_dir", "resume_dir", *SHARED_OPTIONS):
        if opts[key] is not None:
            args += [f"--{key.replace('_', '-')}", str(opts[key])]
    return args


def score_all(records: dict, cases, model_dir: Path, rows: list[dict], device: str, tol: float) -> None:
    """Reload every final save outside the launcher and score it; compare with the baseline's save and the initial
    model (stored in each record under `saved_model`)."""
    initial = score_saved_model(str(model_dir), None, rows, device)
    scores = {}
    for case in cases:
        record = records.get(case.name) or {}
        if not record.get("final_dir"):
            continue
        try:
            # a LoRA save holds the adapter: scored on the initial base model
            full, adapter = (str(model_dir), record["final_dir"]) if case.lora else (record["final_dir"], None)
            scores[case.name] = score_saved_model(full, adapter, rows, device)
        except Exception as exc:  # a save that cannot be reloaded is a failed check, not a crash of the whole check
            record["saved_model"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    for case in cases:
        record = records.get(case.name) or {}
        if case.name not in scores:
            continue
        mine = scores[case.name]
        from_initial = [abs(a - b) for a, b in zip(mine, initial)]
        check = {"scores": mine, "initial_scores": initial, "vs_initial_max_abs_dev": max(from_initial)}
        check["differs_from_initial"] = max(from_initial) > 0
        ok = check["differs_from_initial"]
        if case.baseline is not None:
            if case.baseline in scores:
                theirs = scores[case.baseline]
                check["vs_baseline"] = compare_scores(mine, theirs, tol)
                # the save holds the trained weights: nearer the baseline's trained model than the initial one
                from_baseline = sum(abs(a - b) for a, b in zip(mine, theirs))
                check["tracks_training"] = from_baseline < sum(from_initial)
                ok = ok and check["vs_baseline"]["ok"] and check["tracks_training"]
            else:
                check["vs_baseline"] = {"ok": False, "reason": f"{case.baseline} has no saved model"}
                ok = False
        check["ok"] = ok
        record["saved_model"] = check


def summary_lines(analysis: dict) -> list[str]:
    lines = []
    for name, result in analysis.items():
        if "checks" not in result:
            lines.append(f"{name:18s} {result.get('status')}")
            continue
        parts = []
        for check_name, check in result["checks"].items():
            text = f"{check_name}={'ok' if check.get('ok') else 'FAIL'}"
            worst = check.get("worst")
            if worst:
                text += f"(worst {worst['key']}@{worst['step']}: {worst['rel_dev']:.2e} vs {worst['rtol']:.2e})"
            parts.append(text)
        lines.append(f"{name:18s} {'PASS' if result['ok'] else 'FAIL'}  " + " ".join(parts))
    return lines


def load_record(path: Path) -> dict:
    """A run's record as written by the worker, with integer step keys again (JSON keys are strings)."""
    record = json.loads(Path(path).read_text())
    if "series" in record:
        record["series"] = {int(step): values for step, values in record["series"].items()}
    return record


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)


def dry_run(args) -> dict:
    """CPU: configs, command lines, comparison logic, and the per-run function end to end on a tiny model."""
    import tempfile

    started = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="inspo-dcheck-"))
    payload = {"mode": "dry-run", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": versions()}
    payload["example_configs"] = check_example_configs()
    config_paths = write_configs(work / "configs")
    payload["launch_arguments"] = {name: check_launch_arguments(path, name) for name, path in config_paths.items()}
    model_dir = work / "model"
    payload["planned"] = {}
    for case in CASES:
        opts = run_opts(args, work, model_dir, case)
        cmd = launch_command(
            case, config_paths[case.launcher], worker_args(opts, work / "results" / f"{case.name}.json"), 29500
        )
        payload["planned"][case.name] = {**dataclasses.asdict(case), "command": cmd, "status": "not run (dry run)"}
    payload["self_test"] = self_test()

    # The per-run function, in-process on CPU (fp32), on a tiny model of the same architecture.
    payload["model"] = build_model_dir(model_dir, TINY, "float32", tokenizer_vocab=300, seed=args.seed)
    num_layers = TINY["num_hidden_layers"]
    records = {}
    dry = argparse.Namespace(**{**vars(args), "steps": 3, "save_step": 2, "batch_size": 4, "max_length": 64})
    for case in DRY_RUN_CASES:
        opts = run_opts(dry, work, model_dir, case, bf16=False, use_cpu=True, learning_rate=1e-3)
        write_json(work / "results" / f"{case.name}.json", run_case(case, opts))
        records[case.name] = load_record(work / "results" / f"{case.name}.json")
    rows = load_rows(4)
    score_all(records, DRY_RUN_CASES, model_dir, rows, "cpu", rtol(num_layers, dry.steps, FP32_UNIT_ROUNDOFF))
    payload["runs"] = records
    payload["analysis"] = analyse(records, DRY_RUN_CASES, num_layers, FP32_UNIT_ROUNDOFF, args.beta, dry.save_step)
    payload["tolerance"] = tolerance_summary(QWEN2_0_5B["num_hidden_layers"], args.steps)
    payload["seconds"] = time.perf_counter() - started
    payload["ok"] = (
        all(r["ok"] for r in payload["example_configs"].values())
        and all(r["ok"] for r in payload["launch_arguments"].values())
        and payload["self_test"]["ok"]
        and all(r["ok"] for r in payload["analysis"].values())
    )
    return payload


def load_rows(n: int) -> list[dict]:
    with open(DATA) as f:
        return [json.loads(next(f)) for _ in range(n)]


def tolerance_summary(num_layers: int, steps: int) -> dict:
    return {
        "formula": "rtol_t = u * sqrt(6 * (2L + 2) * t); |a - b| <= rtol_t * max(|a|, |b|) + 1e-6",
        "u_bf16": BF16_UNIT_ROUNDOFF,
        "layers": num_layers,
        "rtol_by_step": {t: rtol(num_layers, t) for t in range(1, steps + 1)},
    }


SCORING_RESERVE_S = 60  # reloading and scoring the saved models at the end
MIN_CASE_S = 40  # no case starts with less time than this left


def import_errors(modules) -> dict:
    import importlib

    errors = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure to import is reported, whatever its kind
            errors[name] = f"{type(exc).__name__}: {exc}"
    return errors


def run_process_group(cmd: list[str], env: dict, cwd: Path, timeout: float) -> tuple:
    """Run `cmd` in its own process group and kill the whole group on a time-out: the launcher's worker processes
    must not outlive it (they hold the GPU)."""
    import signal

    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return f"timeout after {timeout:.0f} s", out.decode(errors="replace")


def gpu_run(args) -> dict:
    """The real check: build the model once, launch every case, compare, score the saves. The JSON is rewritten after
    each step, and a crash of the check itself is recorded in it with its traceback."""
    import traceback

    payload = {
        "mode": "gpu",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "dry_run")},
    }
    try:
        return _gpu_run(args, payload)
    except Exception:
        payload["status"] = "crashed"
        payload["traceback"] = traceback.format_exc()
        payload["ok"] = False
        write_json(Path(args.output), payload)
        print(payload["traceback"], file=sys.stderr)
        return payload


def _gpu_run(args, payload: dict) -> dict:
    started = time.perf_counter()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    output = Path(args.output)
    payload["versions"] = versions()
    # Version mismatches are reported (the wheels travel with --no-deps); only a failing import stops the check.
    payload["requirement_problems"] = requirement_problems()
    payload["import_errors"] = import_errors(("torch", "transformers", "trl", "accelerate", "peft", "datasets"))
    deepspeed_error = import_errors(("deepspeed",))
    payload["import_errors"].update(deepspeed_error)
    payload["example_configs"] = check_example_configs()
    config_paths = write_configs(work / "configs")
    payload["launch_arguments"] = {name: check_launch_arguments(path, name) for name, path in config_paths.items()}
    shape = SHAPES[args.shape]
    payload["tolerance"] = tolerance_summary(shape["num_hidden_layers"], args.steps)
    write_json(output, payload)
    if set(payload["import_errors"]) - {"deepspeed"}:
        payload["status"] = "aborted: imports fail (add wheels with benchmarks/build_gpu_wheels.sh)"
        payload["ok"] = False
        write_json(output, payload)
        return payload
    model_dir = work / "model"
    payload["model"] = build_model_dir(
        model_dir, shape, "bfloat16", tokenizer_vocab=args.tokenizer_vocab, seed=args.seed
    )
    payload["model"]["build_seconds"] = time.perf_counter() - started
    write_json(output, payload)
    selected = [CASES_BY_NAME[name] for name in args.cases] if args.cases else list(CASES)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "HF_HOME": str(work / "hf-home"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    records = {}
    payload["runs"] = records
    log = Path(args.log) if args.log else work / "runs.log"
    log.write_text("")
    for case in selected:
        elapsed = time.perf_counter() - started
        # what is left of the budget once the saves are scored (SCORING_RESERVE_S)
        left = args.budget_s - SCORING_RESERVE_S - elapsed
        if left < MIN_CASE_S:
            records[case.name] = {"status": f"skipped: time budget ({elapsed:.0f} s of {args.budget_s:.0f} s used)"}
            continue
        if case.deepspeed and deepspeed_error:
            records[case.name] = {"status": f"not run: {deepspeed_error['deepspeed']}"}
            continue
        if case.resume_of and "series" not in records.get(case.resume_of, {}):
            records[case.name] = {"status": f"not run: {case.resume_of} (the checkpoint) did not run"}
            continue
        opts = run_opts(args, work, model_dir, case)
        result = work / "results" / f"{case.name}.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        cmd = launch_command(case, config_paths[case.launcher], worker_args(opts, result), free_port())
        launch_started = time.perf_counter()
        returncode, text = run_process_group(cmd, env, work, timeout=min(args.case_timeout_s, left))
        wall = time.perf_counter() - launch_started
        with open(log, "a") as f:
            f.write(f"\n===== {case.name} (exit {returncode}, {wall:.0f} s) =====\n{text[-20000:]}")
        if returncode == 0 and result.exists():
            records[case.name] = load_record(result)
            records[case.name]["launch_seconds"] = wall
        else:
            records[case.name] = {"status": f"failed (exit {returncode}) after {wall:.0f} s", "log_tail": text[-4000:]}
        records[case.name]["command"] = cmd
        print(
            f"[{time.perf_counter() - started:6.0f} s] {case.name}: "
            f"{'ok' if 'series' in records[case.name] else records[case.name]['status']} ({wall:.0f} s)",
            flush=True,
        )
        write_json(output, payload)  # partial results survive a time-out

    num_layers = shape["num_hidden_layers"]
    device = "cuda" if payload["versions"].get("device") else "cpu"
    try:
        score_all(records, selected, model_dir, load_rows(16), device, rtol(num_layers, args.steps))
    except Exception as exc:
        payload["scoring_error"] = f"{type(exc).__name__}: {exc}"
    payload["analysis"] = analyse(records, selected, num_layers, BF16_UNIT_ROUNDOFF, args.beta, args.save_step)
    payload["seconds"] = time.perf_counter() - started
    payload["ok"] = all(r["ok"] for r in payload["analysis"].values())
    write_json(output, payload)
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU checks, no GPU and no DeepSpeed needed")
    parser.add_argument("--output", default="distributed_check.json", help="the JSON report")
    parser.add_argument("--log", default=None, help="also write every run's log (tail) to this file")
    parser.add_argument("--work-dir", default=None, help="model, configs, runs (default: a temporary directory)")
    parser.add_argument("--cases", nargs="*", default=None, choices=[c.name for c in CASES])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--save-step", type=int, default=4, help="zero3 checkpoints here; zero3_resume resumes it")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=8, help="preference pairs per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--beta", type=float, default=0.5, help="see the module docstring")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-vocab", type=int, default=512, help="at most (the data needs 339)")
    parser.add_argument(
        "--shape", default="qwen2-0.5b", choices=sorted(SHAPES), help="tiny: CPU smoke test of launches"
    )
    parser.add_argument("--budget-s", type=float, default=480, help="the whole check ends within about this")
    parser.add_argument("--case-timeout-s", type=float, default=180)
    # worker (one launched run)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--resume-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        case = CASES_BY_NAME[args.case]
        opts = {key: getattr(args, key) for key in SHARED_OPTIONS}
        opts.update(model_dir=args.model_dir, output_dir=args.output_dir, resume_dir=args.resume_dir)
        import torch

        cuda = torch.cuda.is_available()  # without CUDA (a CPU smoke test of the launches): fp32 on CPU
        opts.update(bf16=cuda, use_cpu=not cuda)
        record = run_case(case, opts)
        if record is not None:
            write_json(Path(args.result), record)
        return 0
    if args.dry_run:
        payload = dry_run(args)
        write_json(Path(args.output), payload)
    else:
        if args.work_dir is None:
            import tempfile

            args.work_dir = tempfile.mkdtemp(prefix="inspo-dcheck-")
        payload = gpu_run(args)
    print("\n".join(summary_lines(payload.get("analysis", {}))))
    print(f"{'PASS' if payload.get('ok') else 'FAIL'}: wrote {args.output} ({payload.get('seconds', 0):.0f} s)")
    return 0 if payload.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
