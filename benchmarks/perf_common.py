# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Shared machinery of the performance benchmarks (`throughput.py`, `scaling.py`, `gpu.py`).

One *case* is one training run of `trl.DPOTrainer` or `InSPOTrainer` (two-row or prefix-shared layout) on a model built
from a config, with a fixed batch size and number of steps. `run_case(case)` runs it in the current process and returns
its measurements: the wall time of every optimizer step (from one `on_step_end` to the next, so collation, forward,
backward and optimizer step are all inside), the tokens fed to the model in each step (non-pad tokens, padded positions
and the positions the LM head scores), and memory (CPU: peak RSS of each step over the RSS at its start, read from
`/proc/self/status` after resetting the high-water mark; CUDA: `torch.cuda.max_memory_allocated`).

`run_cases(cases, ...)` runs each case in a fresh subprocess (clean peak-RSS numbers, no allocator state carried over),
interleaving the cases of each repeat so slow phases of a shared machine hit all of them alike.

Nothing here touches the Hugging Face Hub: tokenizers are trained locally, models are built from configs.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("CI", "1")  # TRL skips its telemetry on CI

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HH = REPO_ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_sample.jsonl"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

# glibc keeps freed blocks below its (dynamic) mmap threshold in its heap, so RSS would not drop after a step and the
# next step's peak would be hidden. A fixed threshold returns every large tensor to the OS when it is freed, which
# makes RSS track live memory. Set for the benchmark subprocesses only, identically for every method.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}

# Model shapes (built from config, random weights)
MODEL_SHAPES = {
    # Llama-shaped, realistic proportions at small width: 32k vocabulary, 4 layers, GQA, SwiGLU 8/3 h
    "llama-32k": dict(architecture="llama", hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                      intermediate_size=688, vocab_size=32000),
    "qwen2-32k": dict(architecture="qwen2", hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                      intermediate_size=688, vocab_size=32000),
    # Qwen2-0.5B's shape (494M parameters), for the GPU benchmark
    "qwen2-0.5b": dict(architecture="qwen2", hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2,
                       intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    # Tiny shape for --smoke runs
    "tiny": dict(architecture="llama", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 intermediate_size=64, vocab_size=4096),
}  # fmt: skip

METHODS = ("dpo", "inspo", "inspo_ps")
METHOD_LABELS = {"dpo": "DPOTrainer", "inspo": "InSPO two-row", "inspo_ps": "InSPO prefix-shared"}


# ---------------------------------------------------------------------------------------------------------- machine
def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def wait_for_quiet_machine(max_load: float, max_wait_s: float, poll_s: float = 30.0) -> dict:
    """Sleep until the 1-minute load average is below `max_load` (or `max_wait_s` passed); return what happened."""
    start = time.time()
    load = load_average()
    while load and load[0] >= max_load and time.time() - start < max_wait_s:
        print(f"[bench] load average {load[0]:.2f} >= {max_load}: waiting", file=sys.stderr, flush=True)
        time.sleep(poll_s)
        load = load_average()
    return {"waited_s": round(time.time() - start, 1), "load_after_wait": load, "max_load": max_load}


def other_runnable_tasks(samples: int = 20, interval_s: float = 0.1) -> float:
    """Mean number of runnable tasks on the machine other than this process, sampled from `/proc/loadavg` over about
    `samples * interval_s` seconds (an instantaneous gauge; the load averages lag by minutes)."""
    values = []
    for _ in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return 0.0
        values.append(max(running - 1, 0))
        time.sleep(interval_s)
    return sum(values) / len(values)


def machine_busy_cpu_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores: user, nice, system, irq, softirq, steal)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_between_cases(max_busy: float, max_wait_s: float) -> dict:
    """Before a case: wait (up to `max_wait_s`) while other processes keep the CPUs busy."""
    start = time.time()
    busy = other_runnable_tasks()
    while busy >= max_busy and time.time() - start < max_wait_s:
        time.sleep(10)
        busy = other_runnable_tasks()
    return {"waited_s": round(time.time() - start, 1), "other_runnable": busy}


def machine_info() -> dict:
    import torch
    import transformers
    import trl

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "cpu_count_os": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo)
        info["cpu_model"] = names[0].strip() if names else platform.processor()
        info["cpu_logical_cores"] = len(names)
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        meminfo = Path("/proc/meminfo").read_text()
        info["mem_total_gib"] = round(int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) / 2**20, 1)
    except (OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "trl_inspo"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        info["trl_inspo_uncommitted_changes"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def _proc_status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1))


def current_rss_mib() -> float:
    try:
        return _proc_status_kib("VmRSS") / 1024
    except (OSError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0); False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    try:
        return _proc_status_kib("VmHWM") / 1024
    except (OSError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------------- data
def _pseudo_words(n: int = 300) -> list[str]:
    """Deterministic pronounceable pseudo-words (each becomes one token of the benchmark tokenizer)."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]  # 70
    words = [a + b for a in syllables for b in syllables]  # 4900 two-syllable words
    return words[::13][:n]  # spread over the syllables


WORDS = _pseudo_words()


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def hh_rows(path: Path | None) -> list[dict] | None:
    """HH-RLHF rows in explicit-prompt form (the shared prefix of chosen and rejected is the prompt, as TRL's
    `extract_prompt` does), without rows whose responses are empty or identical. None when the file is absent."""
    if path is None or not Path(path).exists():
        return None
    from trl.data_utils import extract_prompt

    rows = []
    for row in read_jsonl(Path(path)):
        if "prompt" not in row:
            row = extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
        prompt, chosen, rejected = (row[k] for k in ("prompt", "chosen", "rejected"))
        if chosen.strip() and rejected.strip() and chosen != rejected:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def synthetic_rows(
    n: int,
    prompt_tokens: int,
    chosen_tokens: int,
    rejected_tokens: int,
    jitter: float = 0.0,
    seed: int = 0,
) -> list[dict]:
    """Preference rows of controlled token lengths: every pseudo-word is one token, the tokenizer adds BOS to the
    prompt and TRL adds EOS to each response, so a row has `prompt_tokens` prompt tokens and `chosen_tokens` /
    `rejected_tokens` response tokens (each varied uniformly by +-`jitter` of itself)."""
    import random

    rng = random.Random(seed)

    def length(mean):
        spread = int(mean * jitter)
        return max(1, mean + rng.randint(-spread, spread)) if spread else mean

    def text(k, leading_space):  # every word with its leading space is one token
        words = " ".join(rng.choice(WORDS) for _ in range(k))
        return (" " + words) if leading_space else words

    rows = []
    for _ in range(n):
        p, c, r = length(prompt_tokens), length(chosen_tokens), length(rejected_tokens)
        chosen, rejected = text(max(c - 1, 1), True), text(max(r - 1, 1), True)
        while rejected == chosen:
            rejected = text(max(r - 1, 1), True)
        rows.append({"prompt": text(max(p - 1, 1), True), "chosen": chosen, "rejected": rejected})
    return rows


# Data sets of the benchmarks: name -> description
DATASETS = {
    "hh": "HH-RLHF harmless-base sample (../shared/data): multi-turn chat prompts that dominate the row",
    "long": "synthetic, UltraFeedback-like: short prompt (~64 tokens), long responses (~384 tokens, +-25%)",
    "chat": "synthetic stand-in for HH-RLHF when the file is absent: prompt ~120 tokens, responses ~45 (+-50%)",
}


def dataset_rows(name: str, n: int, hh_path: Path | None, seed: int = 0, **lengths) -> tuple[list[dict], str]:
    """`n` rows of data set `name` (`"hh"` falls back to `"chat"` when the HH file is absent); returns the rows and the
    name of what was actually used."""
    if name == "hh":
        rows = hh_rows(hh_path)
        if rows is not None:
            if len(rows) < n:
                rows = (rows * (n // len(rows) + 1))[:n]
            return rows[:n], "hh"
        name = "chat"
    if name == "chat":
        return synthetic_rows(n, 120, 45, 45, jitter=0.5, seed=seed), "chat"
    if name == "long":
        return synthetic_rows(n, 64, 384, 384, jitter=0.25, seed=seed), "long"
    if name == "fixed":
        return synthetic_rows(n, lengths["prompt_tokens"], lengths["response_tokens"], lengths["response_tokens"],
                              seed=seed), "fixed"  # fmt: skip
    raise ValueError(f"Unknown data set {name!r}")


def build_benchmark_tokenizer(hh_path: Path | None, vocab_size: int = 8000, max_hh_rows: int | None = None):
    """A byte-level BPE tokenizer trained on the HH-RLHF sample (when present; its first `max_hh_rows` rows) and the
    pseudo-words, in which every pseudo-word (with its leading space) is a single token. Deterministic for the same
    inputs."""
    from trl_inspo.tiny import build_tokenizer

    texts = [" " + " ".join(WORDS[i::3] + WORDS[:i:3]) for i in range(3)] * 100
    rows = hh_rows(hh_path)
    if rows is not None:
        texts += [r["prompt"] + r["chosen"] + r["rejected"] for r in rows[:max_hh_rows]]
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    multi = [w for w in WORDS if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) != 1]
    if multi:
        raise RuntimeError(f"the benchmark tokenizer splits the pseudo-words {multi[:5]}: synthetic lengths are off")
    return tokenizer


def prepare_tokenizer(hh_path: Path | None, vocab_size: int = 8000, max_hh_rows: int | None = None) -> str:
    """Train the benchmark tokenizer once and save it under the system temp directory (reused by later calls and by
    the benchmark subprocesses); returns its directory."""
    import hashlib
    import tempfile

    stamp = f"{hh_path if hh_path and Path(hh_path).exists() else None}|{vocab_size}|{max_hh_rows}|{len(WORDS)}|v1"
    key = hashlib.sha1(stamp.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"trl-inspo-bench-tokenizer-{key}"
    if not (path / "tokenizer_config.json").exists():
        tokenizer = build_benchmark_tokenizer(hh_path, vocab_size, max_hh_rows)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tokenizer.save_pretrained(tmp)
        if path.exists():  # another process saved it meanwhile
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, path)
    return str(path)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# ---------------------------------------------------------------------------------------------------------- tokens
def token_counts(method: str, prompt: int, chosen: int, rejected: int, alt_cap: int | None = None) -> int:
    """Tokens one pair feeds to the model (no padding): DPO `2x + y_w + y_l`, InSPO two-row `2(x + y_w + y_l)` (with
    the alternative capped at `alt_cap`), prefix-shared `x + 2 y_w + 2 y_l + 1` (the prompt's last token is copied
    into both top-level branches, the rest of the prompt is shared)."""
    if method == "dpo":
        return 2 * prompt + chosen + rejected
    cw = chosen if alt_cap is None else min(chosen, alt_cap)
    cl = rejected if alt_cap is None else min(rejected, alt_cap)
    if method == "inspo":
        return 2 * prompt + chosen + rejected + cw + cl
    return prompt + chosen + rejected + cw + cl + 1


def model_flops_per_token_linear(shape: dict, lm_head_positions_fraction: float = 1.0) -> float:
    """Training FLOPs per token of the dense parts (6 x parameters touched), the LM head weighted by the fraction of
    positions it scores."""
    h, layers, v = shape["hidden_size"], shape["num_layers"], shape["vocab_size"]
    heads, kv = shape["num_heads"], shape.get("num_kv_heads") or shape["num_heads"]
    d = h // heads
    inter = shape.get("intermediate_size") or 2 * h
    per_layer = h * (heads * d) * 2 + h * (kv * d) * 2 + 3 * h * inter
    return 6 * (layers * per_layer) + 6 * h * v * lm_head_positions_fraction


# ---------------------------------------------------------------------------------------------------------- one case
def _apply_lm_head_mode(mode: str):
    """`"stock"`: TRL as shipped (on CPU the fused LM head scores every position, on CUDA only the labelled ones).
    `"compact"`: score only labelled positions on every device (what TRL does on CUDA), for DPO and InSPO alike."""
    import trl.trainer.utils as trl_utils

    if mode == "compact":
        trl_utils._use_triton = lambda device: True  # only decides compaction; the kernels keep their own check
    elif mode != "stock":
        raise ValueError(f"Unknown lm_head mode {mode!r}")


def attention_pairs(batch: dict) -> int:
    """(query, key) pairs a causal attention needs for `batch` (padding excluded): `L (L + 1) / 2` per causal row; for
    a prefix-shared tree row, each token's ancestors and its own branch up to itself."""
    import torch

    if "tree_segment_ids" not in batch:
        lengths = batch["attention_mask"].sum(dim=1).double()
        return int((lengths * (lengths + 1) / 2).sum())
    from trl_inspo.prefix_sharing import BRANCH_A, BRANCH_A2, BRANCH_B, BRANCH_B2, SHARED

    seg = batch["tree_segment_ids"]
    n = {k: (seg == k).sum(dim=1).double() for k in (SHARED, BRANCH_A, BRANCH_B, BRANCH_A2, BRANCH_B2)}
    tri = {k: v * (v + 1) / 2 for k, v in n.items()}
    s, a, b, a2, b2 = (n[k] for k in (SHARED, BRANCH_A, BRANCH_B, BRANCH_A2, BRANCH_B2))
    pairs = sum(tri.values()) + a * s + b * s + a2 * (s + a) + b2 * (s + b)
    return int(torch.as_tensor(pairs).sum())


class _CountingCollator:
    """Wraps a collator: records, per batch, non-pad tokens, padded positions, LM-head-scored positions, rows and the
    collation time."""

    def __init__(self, inner, method, targets_only=False):
        self.inner, self.method, self.targets_only, self.batches = inner, method, targets_only, []

    def __call__(self, examples):
        t0 = time.perf_counter()
        out = self.inner(examples)
        dt = time.perf_counter() - t0
        if self.method == "dpo":
            scored = int(out["completion_mask"][:, 1:].sum())
        elif self.targets_only:
            scored = (
                int(out["completion_mask"][:, 1:].sum())
                if "completion_mask" in out
                else int(((out["logp_kinds"] == 1) | (out["logp_kinds"] == 2)).sum())
            )
        elif "shift_labels" in out:
            scored = int((out["shift_labels"] != -100).sum())
        else:
            scored = int(((out["completion_mask"] + out["alternative_mask"])[:, 1:] > 0).sum())
        self.batches.append(
            {
                "attention_pairs": attention_pairs(out),
                "tokens": int(out["attention_mask"].sum()),
                "positions": int(out["input_ids"].numel()),
                "rows": int(out["input_ids"].size(0)),
                "width": int(out["input_ids"].size(1)),
                "scored": scored,
                "collate_s": dt,
            }
        )
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _make_step_callback(cuda: bool):
    from transformers import TrainerCallback

    class StepMeter(TrainerCallback):
        """Timestamps at each step's begin and end; per-step peak memory over the memory at the step's start."""

        def __init__(self):
            self.train_begin = None
            self.begins, self.ends, self.mem_start, self.mem_peak = [], [], [], []

        def on_train_begin(self, args, state, control, **kwargs):
            self.train_begin = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            if cuda:
                import torch

                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.mem_start.append(torch.cuda.memory_allocated() / 2**20)
            else:
                reset_peak_rss()
                self.mem_start.append(current_rss_mib())
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                import torch

                torch.cuda.synchronize()
                self.mem_peak.append(torch.cuda.max_memory_allocated() / 2**20)
            else:
                self.mem_peak.append(peak_rss_mib())
            self.ends.append(time.perf_counter())

    return StepMeter()


def _make_profiler_callback(step_index: int, vocab_size: int):
    """A callback that runs `torch.profiler` over step `step_index` and sums the self CPU time of its ops into
    categories: the LM head (ops on a tensor with a vocabulary-sized dimension), attention (the sdpa/eager attention
    kernels), the rest of the model and the optimizer."""
    import torch
    from transformers import TrainerCallback

    class ProfileStep(TrainerCallback):
        def __init__(self):
            self.prof, self.step, self.report = None, 0, None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.step == step_index:
                activities = [torch.profiler.ProfilerActivity.CPU]
                self.prof = torch.profiler.profile(activities=activities, record_shapes=True)
                self.prof.start()

        def on_step_end(self, args, state, control, **kwargs):
            if self.step == step_index:
                self.prof.stop()
                self.report = summarize_profile(self.prof, vocab_size)
            self.step += 1

    return ProfileStep()


def summarize_profile(prof, vocab_size: int) -> dict:
    """Self CPU time (ms) per category and the top ops of a CPU profile."""
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


def run_case(case: dict) -> dict:
    """Run one benchmark case in this process (see `_run_case`), undoing its benchmark-only patches afterwards so that
    in-process runs do not leak them into the next case."""
    import trl.trainer.utils as trl_utils

    saved = trl_utils._use_triton  # `_apply_lm_head_mode` may patch it
    try:
        return _run_case(case)
    finally:
        trl_utils._use_triton = saved
        import gc

        import torch

        gc.collect()  # free this case's models before the next in-process case measures its memory
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _run_case(case: dict) -> dict:
    """Run one benchmark case in this process and return its measurements (see the module docstring).

    Keys of `case`: `method` (`dpo`, `inspo`, `inspo_ps`), `model` (a key of `MODEL_SHAPES`), `data` (a key of
    `DATASETS` or `"fixed"` with `prompt_tokens`/`response_tokens`), `batch_size`, `warmup`, `steps`, `reference`
    (`live`, `precomputed`, `lora`), `max_alternative_length`, `lm_head` (`stock`/`compact`), `attn` (attention
    implementation), `threads`, `hh_path`, `device` (`cpu`/`cuda`), `dtype` (`float32`/`bfloat16`),
    `gradient_checkpointing`, `seed`, `tokenizer_dir` (from `prepare_tokenizer`).
    """
    import torch

    threads = case.get("threads")
    if threads:
        torch.set_num_threads(threads)
    _apply_lm_head_mode(case.get("lm_head", "stock"))
    import warnings

    import transformers
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from trl_inspo import InSPOConfig, InSPOTrainer
    from trl_inspo.tiny import build_model

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    device = case.get("device", "cpu")
    cuda = device == "cuda"
    dtype = getattr(torch, case.get("dtype", "float32"))
    method = case["method"]
    hh_path = Path(case["hh_path"]) if case.get("hh_path") else None
    seed = case.get("seed", 0)
    total_steps = case["warmup"] + case["steps"]
    n_rows = total_steps * case["batch_size"]

    t_setup = time.perf_counter()
    tokenizer = load_tokenizer(case["tokenizer_dir"])
    rows, data_used = dataset_rows(
        case["data"], n_rows, hh_path, seed=seed,
        prompt_tokens=case.get("prompt_tokens"), response_tokens=case.get("response_tokens"),
    )  # fmt: skip
    shape = dict(MODEL_SHAPES[case["model"]])
    shape.update(case.get("model_overrides") or {})
    attn = case.get("attn", "sdpa")
    reference = case.get("reference", "live")
    max_len = max(
        len(tokenizer(r["prompt"])["input_ids"]) + len(tokenizer(r["chosen"], add_special_tokens=False)["input_ids"])
        + len(tokenizer(r["rejected"], add_special_tokens=False)["input_ids"]) for r in rows
    ) + 8  # fmt: skip

    def make_model():
        with torch.device(device):  # initialise on the device (a 0.5B model initialised on CPU takes seconds)
            return build_model(
                tokenizer, seed=seed, dtype=dtype, attn_implementation=attn,
                max_position_embeddings=max(2048, 2 * max_len), **shape,
            )  # fmt: skip

    model = make_model()
    ref_model = make_model().eval().requires_grad_(False) if reference == "live" else None
    if cuda:
        torch.cuda.synchronize()
        mem_after_load = torch.cuda.memory_allocated() / 2**20
    else:
        mem_after_load = current_rss_mib()

    peft_config = None
    if reference == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        )  # fmt: skip

    common = dict(
        output_dir=os.path.join(case.get("tmp_dir", "/tmp"), f"bench-{os.getpid()}-{method}"),
        report_to="none",
        per_device_train_batch_size=case["batch_size"],
        max_steps=total_steps,
        learning_rate=1e-6,
        logging_steps=10_000,
        save_strategy="no",
        bf16=dtype == torch.bfloat16,
        use_cpu=not cuda,
        gradient_checkpointing=bool(case.get("gradient_checkpointing", False)),
        dataloader_pin_memory=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=seed,
        max_length=None,
        precompute_ref_log_probs=reference == "precomputed",
        precompute_ref_batch_size=case["batch_size"],
        beta=0.1,
    )
    if method == "dpo":
        args = DPOConfig(**common)
        trainer_cls = DPOTrainer
    else:
        args = InSPOConfig(
            **common,
            prefix_sharing=method == "inspo_ps",
            max_alternative_length=case.get("max_alternative_length"),
            unconditional_metrics=not case.get("score_targets_only"),
        )
        trainer_cls = InSPOTrainer
    meter = _make_step_callback(cuda)
    callbacks = [meter]
    profiler = None
    if case.get("profile"):
        profiler = _make_profiler_callback(case["warmup"], shape["vocab_size"])
        callbacks.append(profiler)
    trainer = trainer_cls(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # no log printing inside the timed loop
    counter = _CountingCollator(trainer.data_collator, method, bool(case.get("score_targets_only")))
    trainer.data_collator = counter
    setup_s = time.perf_counter() - t_setup
    if cuda:
        mem_before_train = torch.cuda.memory_allocated() / 2**20
    else:
        mem_before_train = current_rss_mib()

    load_start = load_average()
    busy_start, own_start, wall_start = machine_busy_cpu_seconds(), process_cpu_seconds(), time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - wall_start
    # CPU used by other processes while this run trained (cores, averaged over the run): what distorted it
    other_cores = (machine_busy_cpu_seconds() - busy_start - (process_cpu_seconds() - own_start)) / wall
    load_end = load_average()

    ends = [meter.train_begin] + meter.ends
    step_times = [ends[i + 1] - ends[i] for i in range(len(meter.ends))]
    compute_times = [e - b for b, e in zip(meter.begins, meter.ends)]
    step_mem = [p - s for s, p in zip(meter.mem_start, meter.mem_peak)]
    w = case["warmup"]
    batches = counter.batches[:total_steps]
    measured = batches[w:total_steps]
    tokens = statistics.mean(b["tokens"] for b in measured)
    step_median = statistics.median(step_times[w:])
    return {
        "case": {k: v for k, v in case.items() if k != "hh_path"},
        "data_used": data_used,
        "model_shape": shape,
        "num_parameters": sum(p.numel() for p in trainer.model.parameters()),
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "setup_s": setup_s,
        "step_times_s": step_times,
        "compute_times_s": compute_times,
        "step_time_median_s": step_median,
        "step_time_mean_s": statistics.mean(step_times[w:]),
        "compute_time_median_s": statistics.median(compute_times[w:]),
        "collate_time_median_s": statistics.median(b["collate_s"] for b in measured),
        "tokens_per_step": tokens,
        "positions_per_step": statistics.mean(b["positions"] for b in measured),
        "scored_per_step": statistics.mean(b["scored"] for b in measured),
        "rows_per_step": statistics.mean(b["rows"] for b in measured),
        "width_per_step": statistics.mean(b["width"] for b in measured),
        "tokens_per_s": tokens / statistics.mean(step_times[w:]),
        "pairs_per_s": case["batch_size"] / statistics.mean(step_times[w:]),
        "mem_unit": "MiB allocated (CUDA)" if cuda else "MiB RSS",
        "mem_after_load_mib": mem_after_load,
        "mem_before_train_mib": mem_before_train,
        "step_peak_increase_mib": max(step_mem[w:]),
        "step_peak_increase_all_mib": step_mem,
        "peak_mib": max(meter.mem_peak),
        "peak_increase_over_load_mib": max(meter.mem_peak) - mem_after_load,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "other_cpu_cores_during_train": other_cores,
        "own_cpu_cores_during_train": (process_cpu_seconds() - own_start) / wall,
        "batches": batches,
        "profile": profiler.report if profiler is not None else None,
    }


# ---------------------------------------------------------------------------------------------------------- runner
def run_cases(
    cases: list[dict],
    repeats: int,
    in_process: bool,
    log_path: Path | None = None,
    max_busy: float | None = None,
    max_wait_s: float = 600.0,
    max_other_cores: float | None = None,
    max_attempts: int = 1,
    patience_s: float | None = None,
) -> list[dict]:
    """Run every case `repeats` times; the cases of one repeat run back to back (interleaved), each in a fresh
    subprocess unless `in_process`. With `max_busy`, each case waits (up to `max_wait_s`) until fewer than `max_busy`
    other tasks are runnable on average. With `max_other_cores`, a run during which other processes used more CPU
    than that (cores, averaged) is run again, up to `max_attempts` times in all; the least disturbed attempt is kept.
    After `patience_s` seconds in all, runs neither wait nor repeat any more. Returns one result per (case, repeat),
    with `repeat` and `attempts` set."""
    started = time.time()
    results = []
    for repeat in range(repeats):
        for i, case in enumerate(cases):
            label = case.get("label") or case["method"]
            print(f"[bench] repeat {repeat + 1}/{repeats} case {i + 1}/{len(cases)}: {label}", file=sys.stderr,
                  flush=True)  # fmt: skip
            attempts = []
            for _ in range(max(1, max_attempts)):
                patient = patience_s is None or time.time() - started < patience_s
                quiet = wait_between_cases(max_busy, max_wait_s) if max_busy is not None and patient else None
                attempt = run_case(case) if in_process else _run_in_subprocess(case)
                attempt["wait_before"] = quiet
                attempts.append(attempt)
                calm = max_other_cores is None or attempt["other_cpu_cores_during_train"] <= max_other_cores
                if calm or not patient:
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


def _run_in_subprocess(case: dict) -> dict:
    env = dict(os.environ, **MALLOC_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "benchmarks"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", "import json, sys, perf_common; "
         "print('@@RESULT@@' + json.dumps(perf_common.run_case(json.loads(sys.argv[1]))))", json.dumps(case)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@") :])
    raise RuntimeError(f"benchmark case failed ({case}):\n{proc.stderr[-4000:]}")


def summarize(results: list[dict], key_fields: tuple[str, ...]) -> dict:
    """Group results by `key_fields` of their case and take medians over repeats."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        key = tuple(r["case"].get(k) for k in key_fields)
        groups.setdefault(key, []).append(r)
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
    return a / b if b else math.nan


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)
        f.write("\n")
