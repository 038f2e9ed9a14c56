# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Learning study: does InSPO train a better *deployed* policy (prompt alone) than DPO, on the same budget?

Two studies, each over several seeds, each comparing three methods trained from the same SFT checkpoint on the same
preference pairs with the same hyperparameters (steps, batch, learning-rate schedule, beta, data order):

- `dpo`: `trl.DPOTrainer` (sigmoid loss).
- `inspo`: `InSPOTrainer`, `conditional_loss_weight=1`, `unconditional_loss_weight=0` (the paper's objective).
- `inspo+uncond`: `InSPOTrainer`, `conditional_loss_weight=1`, `unconditional_loss_weight=1` (InSPO plus the DPO term
  read from the same forward).

Studies:

- `sort` (synthetic, programmatic oracle, see `benchmarks/tasks.py`): a tiny Llama is SFT-trained (`trl.SFTTrainer`)
  on sorting short lists until it is right on about half of the held-out prompts; preference pairs are chosen = the
  correct answer, rejected = a wrong answer *sampled from the SFT model* (a programmatic near-miss only when none of
  the samples for a prompt is wrong; the counts are reported). Held-out evaluation on unseen prompts: conditional and
  unconditional implicit-reward accuracy on held-out pairs built the same way, and exact-match accuracy and mean length
  of greedy generations from the prompt alone.
- `hh`: the Anthropic HH-RLHF harmless-base sample (first 1,000 pairs train, last 200 held out): a tokenizer trained on
  the training texts, a tiny Llama from config with a short SFT on the chosen conversations, then the three methods;
  held-out conditional and unconditional implicit-reward accuracy.

Implicit-reward accuracies are computed directly, by independent forwards of every sequence (`pair_logps`): the
unconditional reward margin is `beta * ((u_w - ref_u_w) - (u_l - ref_u_l))` with `u = log pi(y | x)`, the conditional
one `beta * ((c_w - ref_c_w) - (c_l - ref_c_l))` with `c_w = log pi(y_w | x, y_l)`, `c_l = log pi(y_l | x, y_w)`; the
reference is the SFT checkpoint. They are cross-checked against an `InSPOTrainer.evaluate()` of every trained model
(DPO's too) with the SFT checkpoint as reference (`eval_rewards/accuracies`, `eval_rewards_unconditional/accuracies`).

Usage (from the repository root):

```bash
python benchmarks/learning.py sort --seeds 0 1 2          # -> benchmarks/results/learning_sort.json + PNG
python benchmarks/learning.py hh --seeds 0 1 2            # reads ../shared/data/hh_rlhf_harmless_base_sample.jsonl
python benchmarks/learning.py plot benchmarks/results/learning_sort.json
python benchmarks/learning.py --smoke                     # seconds: tiny sizes, 1 seed, both studies
```
"""

import argparse
import datetime
import json
import os
import random
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# First: importing benchmarks.common keeps the libraries below off the Hugging Face Hub
from benchmarks.common.env import DEFAULT_HH, RESULTS_DIR, write_json  # noqa: E402
from benchmarks.common.machine import machine_info as machine_description  # noqa: E402


# isort: split
import datasets  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # noqa: E402
from trl.data_utils import common_prefix_length, extract_prompt  # noqa: E402

from benchmarks.tasks import SortTask, load_hh, synthetic_conversations  # noqa: E402
from trl_inspo import InSPOConfig, InSPOTrainer  # noqa: E402
from trl_inspo.tiny import build_model, build_tokenizer  # noqa: E402


METHODS = ("dpo", "inspo", "inspo+uncond")
# Not run by default: InSPO with the prompt-only reference log pi_ref(y | x) (the paper's IPO / R-DPO setup).
EXTRA_METHODS = ("inspo+prompt_ref",)


# ====================================================================== configuration
@dataclass
class ModelArgs:
    vocab_size: int = 400
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    max_position_embeddings: int = 128


@dataclass
class SFTArgs:
    num_examples: int = 12000
    batch_size: int = 32
    learning_rate: float = 1.5e-3
    epochs: float = 1.0
    max_length: int | None = 128
    text_only: bool = False  # HH: language-model the whole chosen conversation instead of completion-only loss


@dataclass
class PrefArgs:
    """Shared by every method: only the method switch differs between runs."""

    beta: float = 0.5
    learning_rate: float = 1e-4
    batch_size: int = 16
    epochs: float = 2.0
    max_steps: int = -1
    warmup_ratio: float = 0.1
    lr_scheduler_type: str = "linear"
    max_length: int | None = 128
    eval_batch_size: int = 32


@dataclass
class StudyArgs:
    study: str = "sort"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    model: ModelArgs = field(default_factory=ModelArgs)
    sft: SFTArgs = field(default_factory=SFTArgs)
    pref: PrefArgs = field(default_factory=PrefArgs)
    # sort
    num_train_prompts: int = 1024
    num_eval_prompts: int = 512
    samples_per_prompt: int = 4
    sample_temperature: float = 0.7
    max_new_tokens: int = 24
    # hh
    data: str = str(DEFAULT_HH)
    n_train: int = 1000
    n_eval: int = 200
    synthetic_hh: bool = False  # smoke: small synthetic conversations instead of the HH file
    threads: int | None = None  # torch.set_num_threads (1 is fastest on a loaded 2-core machine)
    # sort: "test" evaluates on the held-out prompts; "validation" on a second disjoint set, for choosing settings
    eval_split: str = "test"
    # Per-method overrides of `pref` ({"dpo": {"beta": 0.1, "learning_rate": 3e-4}}): each method at its tuned setting
    method_pref: dict = field(default_factory=dict)
    # Settings grid ([{"beta": 0.1, "learning_rate": 1e-4}, ...]): every method runs at every point (see `method_runs`)
    grid: list = field(default_factory=list)


def grid_name(method: str, point: dict) -> str:
    return method + "".join(f"|{k}={v:g}" for k, v in sorted(point.items()))


def method_runs(args: StudyArgs) -> list[tuple[str, str, "PrefArgs"]]:
    """`(name, method, pref)` of every preference run of a seed: each method with its `method_pref` overrides, at
    every `grid` point when a grid is given (named `method|beta=..|learning_rate=..`)."""
    runs = []
    for method in args.methods:
        base = replace(args.pref, **args.method_pref.get(method, {}))
        if not args.grid:
            runs.append((method, method, base))
        runs += [(grid_name(method, point), method, replace(base, **point)) for point in args.grid]
    return runs


# ====================================================================== helpers
def tokenize_like_trl(tokenizer, prompt: str, chosen: str, rejected: str) -> tuple[list[int], list[int], list[int]]:
    """Token ids of a standard-format pair as `DPOTrainer._prepare_dataset` makes them: EOS text appended to each
    response, prompt and prompt+response tokenized separately, responses start where the tokenizations diverge."""
    eos = tokenizer.eos_token
    chosen = chosen if chosen.endswith(eos) else chosen + eos
    rejected = rejected if rejected.endswith(eos) else rejected + eos
    p = tokenizer(prompt)["input_ids"]
    pc = tokenizer(prompt + chosen)["input_ids"]
    pr = tokenizer(prompt + rejected)["input_ids"]
    n = min(common_prefix_length(p, pc), common_prefix_length(p, pr))
    return pc[:n], pc[n:], pr[n:]


@torch.no_grad()
def sequence_logps(model, items: list[tuple[list[int], list[int]]], batch_size: int = 32) -> list[float]:
    """`log p(target | context)` for each `(context, target)`, from plain right-padded forwards (an explicit float32
    log-softmax; nothing of the trainers' batching or masks)."""
    model.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
    out = [0.0] * len(items)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs = [items[i][0] + items[i][1] for i in idx]
        width = max(map(len, seqs))
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        logprobs = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        for r, i in enumerate(idx):
            ctx, tgt = items[i]
            out[i] = float(logprobs[r, len(ctx) - 1 : len(ctx) - 1 + len(tgt)].sum())
    return out


def pair_logps(model, pairs: list[tuple[list[int], list[int], list[int]]], batch_size: int = 32) -> dict:
    """The four InSPO quantities for each `(prompt_ids, chosen_ids, rejected_ids)`, each from its own sequence:
    `u_w = log p(y_w|x)`, `u_l = log p(y_l|x)`, `c_w = log p(y_w|x,y_l)`, `c_l = log p(y_l|x,y_w)`."""
    items = []
    for p, w, l in pairs:
        items += [(p, w), (p, l), (p + l, w), (p + w, l)]
    values = sequence_logps(model, items, batch_size)
    return {k: values[j::4] for j, k in enumerate(("u_w", "u_l", "c_w", "c_l"))}


def reward_accuracies(policy_logps: dict, ref_logps: dict, beta: float) -> dict:
    """Held-out implicit-reward accuracies (strictly positive margin) and mean margins, conditional and
    unconditional."""
    out = {}
    for kind, (w, l) in {"unconditional": ("u_w", "u_l"), "conditional": ("c_w", "c_l")}.items():
        margins = [
            beta * ((pw - rw) - (pl - rl))
            for pw, rw, pl, rl in zip(policy_logps[w], ref_logps[w], policy_logps[l], ref_logps[l])
        ]
        out[f"{kind}_reward_accuracy"] = sum(m > 0 for m in margins) / len(margins)
        out[f"{kind}_reward_margin"] = sum(margins) / len(margins)
    # The deployed policy's own preference, without a reference: log p(y_w|x) > log p(y_l|x)
    out["policy_prefers_chosen"] = sum(a > b for a, b in zip(policy_logps["u_w"], policy_logps["u_l"])) / len(
        policy_logps["u_w"]
    )
    return out


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    num_return_sequences: int = 1,
    temperature: float | None = None,
    seed: int = 0,
    batch_size: int = 128,
) -> list[list[list[int]]]:
    """Generated token ids (EOS and anything after it removed) for each prompt, `num_return_sequences` each; greedy
    when `temperature` is None. Prompts are batched by token length, so no padding is involved."""
    model.eval()
    torch.manual_seed(seed)
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    out: list[list[list[int]]] = [[] for _ in prompts]
    eos = tokenizer.eos_token_id
    sampling = (
        dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature else dict(do_sample=False)
    )
    for length in sorted(groups):
        idx = groups[length]
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            ids = torch.tensor([encoded[i] for i in chunk])
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_return_sequences,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
                **sampling,
            )[:, length:]
            for r, row in enumerate(gen.tolist()):
                if eos in row:
                    row = row[: row.index(eos)]
                out[chunk[r // num_return_sequences]].append(row)
    return out


def summarize(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


# ====================================================================== training
def common_training_kwargs(output_dir: str, seed: int) -> dict:
    return dict(
        output_dir=output_dir,
        report_to="none",
        bf16=False,
        save_strategy="no",
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        logging_steps=10,
        seed=seed,
        data_seed=seed,
    )


def sft_train(model, tokenizer, rows: list[dict], args: SFTArgs, seed: int, output_dir: str) -> dict:
    config = SFTConfig(
        **common_training_kwargs(output_dir, seed),
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        num_train_epochs=args.epochs,
        max_length=args.max_length,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    start = time.perf_counter()
    result = trainer.train()
    return {"train_loss": result.training_loss, "steps": result.global_step, "runtime_s": time.perf_counter() - start}


def preference_config(method: str, args: PrefArgs, seed: int, output_dir: str):
    """The config of `method`: every field equal across methods but the method switch (trainer class and loss
    weights)."""
    kwargs = dict(
        **common_training_kwargs(output_dir, seed),
        beta=args.beta,
        loss_type=["sigmoid"],
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type=args.lr_scheduler_type,
        max_length=args.max_length,
    )
    if method == "dpo":
        return DPOConfig(**kwargs)
    if method == "inspo":
        return InSPOConfig(**kwargs, conditional_loss_weight=1.0, unconditional_loss_weight=0.0)
    if method == "inspo+uncond":
        return InSPOConfig(**kwargs, conditional_loss_weight=1.0, unconditional_loss_weight=1.0)
    if method == "inspo+prompt_ref":
        return InSPOConfig(
            **kwargs, conditional_loss_weight=1.0, unconditional_loss_weight=0.0, reference_conditioning="prompt_only"
        )
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS + EXTRA_METHODS}.")


def load_checkpoint(path: str):
    """A fresh instance of a saved checkpoint.

    Not `copy.deepcopy`: TRL's trainers patch `model.forward` with a closure over the *original* model's forward (the
    fused LM head), so the plain forward (and `generate`) of a deep copy of a model that went through a TRL trainer
    would run the original's weights.
    """
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def preference_train(
    method: str, sft_path: str, tokenizer, train_rows: list[dict], args: PrefArgs, seed: int, output_dir: str
):
    """Train a fresh copy of the SFT checkpoint with `method` against another fresh, frozen copy of it; returns the
    trained model and a record."""
    config = preference_config(method, args, seed, os.path.join(output_dir, method.replace("+", "_")))
    trainer_cls = DPOTrainer if method == "dpo" else InSPOTrainer
    policy = load_checkpoint(sft_path).train()
    ref = load_checkpoint(sft_path).eval().requires_grad_(False)
    trainer = trainer_cls(
        model=policy,
        ref_model=ref,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tokenizer,
    )
    start = time.perf_counter()
    result = trainer.train()
    record = {
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "runtime_s": time.perf_counter() - start,
        "train_rows_used": len(trainer.train_dataset),
        "log_history": [h for h in trainer.state.log_history if "loss" in h],
    }
    if isinstance(trainer, InSPOTrainer):
        record["inspo_dropped"] = trainer.inspo_dropped.get("train")
        record["inspo_truncated"] = trainer.inspo_truncated.get("train")
    return trainer.model.eval(), record


def trainer_eval(model, sft_path: str, tokenizer, eval_rows: list[dict], args: PrefArgs, seed: int, output_dir: str):
    """`InSPOTrainer.evaluate()` of `model` (whichever method trained it) with the SFT checkpoint as reference: its
    `eval_rewards/accuracies` (conditional) and `eval_rewards_unconditional/accuracies`."""
    config = preference_config("inspo", args, seed, os.path.join(output_dir, "eval"))
    config.per_device_eval_batch_size = largest_divisor(len(eval_rows), args.eval_batch_size)
    evaluator = InSPOTrainer(
        model=model,
        ref_model=load_checkpoint(sft_path).eval().requires_grad_(False),
        args=config,
        train_dataset=Dataset.from_list(eval_rows),  # required by DPOTrainer; never trained on
        eval_dataset=Dataset.from_list(eval_rows),
        processing_class=tokenizer,
    )
    metrics = evaluator.evaluate()
    keep = (
        "eval_rewards/accuracies",
        "eval_rewards_unconditional/accuracies",
        "eval_rewards/margins",
        "eval_rewards_unconditional/margins",
        "eval_loss",
    )
    out = {k: metrics[k] for k in keep if k in metrics}
    out["eval_rows_used"] = len(evaluator.eval_dataset)
    out["inspo_dropped"] = evaluator.inspo_dropped.get("eval")
    return out


def sft_checkpoint(args: StudyArgs, tokenizer, sft_rows: list[dict], seed: int, workdir: str):
    """A freshly built model of `args.model`, SFT-trained on `sft_rows` and saved: `(record, path, reloaded model)`."""
    model = build_model(
        tokenizer,
        hidden_size=args.model.hidden_size,
        num_layers=args.model.num_layers,
        num_heads=args.model.num_heads,
        max_position_embeddings=args.model.max_position_embeddings,
        seed=seed,
    )
    record = sft_train(model, tokenizer, sft_rows, args.sft, seed, os.path.join(workdir, "sft"))
    record["parameters"] = sum(p.numel() for p in model.parameters())
    path = os.path.join(workdir, "sft_checkpoint")
    model.save_pretrained(path)
    return record, path, load_checkpoint(path).eval()


def train_methods(
    args: StudyArgs,
    sft_path: str,
    tokenizer,
    train_rows: list[dict],
    eval_rows: list[dict],
    eval_ids: list,
    ref_logps: dict,
    seed: int,
    workdir: str,
    log,
    generation=None,
) -> dict:
    """Every run of `method_runs(args)` from the SFT checkpoint, with its held-out metrics (and `generation(model)`'s
    when given), keyed by run name. `eval_ids` are the token ids of `eval_rows`, `ref_logps` their SFT log-probs."""
    methods = {}
    for name, method, pref in method_runs(args):
        run_dir = os.path.join(workdir, name.replace("|", "_"))
        model_m, record = preference_train(method, sft_path, tokenizer, train_rows, pref, seed, run_dir)
        record["setting"] = {"beta": pref.beta, "learning_rate": pref.learning_rate}
        record.update(reward_accuracies(pair_logps(model_m, eval_ids, pref.eval_batch_size), ref_logps, pref.beta))
        if generation is not None:
            record.update(generation(model_m))
        record["trainer_eval"] = trainer_eval(model_m, sft_path, tokenizer, eval_rows, pref, seed, run_dir)
        log(f"[seed {seed}] {name}: {fmt(record)}")
        methods[name] = record
    return methods


# ====================================================================== sort study
def sort_generation_metrics(task: SortTask, model, tokenizer, eval_prompts, max_new_tokens: int) -> dict:
    gens = generate(model, tokenizer, [p for p, _ in eval_prompts], max_new_tokens)
    scores = {"exact": [], "valid": [], "position_acc": []}
    lengths, gold_lengths, no_eos = [], [], 0
    for (prompt, items), (ids,) in zip(eval_prompts, gens):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        for k, v in task.score(items, text).items():
            scores[k].append(v)
        lengths.append(len(ids))
        gold_lengths.append(len(tokenize_like_trl(tokenizer, prompt, task.answer(items), " x")[1]) - 1)
        no_eos += len(ids) >= max_new_tokens
    n = len(eval_prompts)
    return {
        "gen_exact_match": statistics.fmean(scores["exact"]),
        "gen_valid_format": statistics.fmean(scores["valid"]),
        "gen_position_accuracy": statistics.fmean(scores["position_acc"]),
        "gen_mean_length": statistics.fmean(lengths),
        "gold_mean_length": statistics.fmean(gold_lengths),
        "gen_abs_length_error": statistics.fmean(abs(a - b) for a, b in zip(lengths, gold_lengths)),
        "gen_no_eos_fraction": no_eos / n,
    }


def sort_pairs(
    task: SortTask, model, tokenizer, prompts, k: int, temperature: float, max_new_tokens: int, seed: int
) -> tuple[list[dict], dict]:
    """Preference pairs for `prompts`: chosen = the correct answer, rejected = a wrong answer sampled from `model`
    (`k` samples per prompt, one wrong sample picked at random), or a programmatic near-miss when every sample is
    right."""
    rng = random.Random(seed)
    samples = generate(
        model,
        tokenizer,
        [p for p, _ in prompts],
        max_new_tokens,
        num_return_sequences=k,
        temperature=temperature,
        seed=seed,
    )
    rows, sampled, near_miss, correct_samples = [], 0, 0, 0
    for (prompt, items), outs in zip(prompts, samples):
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in outs]
        wrong = []
        for t in texts:
            if task.is_correct(items, t):
                correct_samples += 1
            elif t.strip() and t not in wrong:
                wrong.append(t)
        if wrong:
            rejected, sampled = rng.choice(wrong), sampled + 1
            if not rejected.startswith(" "):
                rejected = " " + rejected
        else:
            rejected, near_miss = task.near_miss(items, rng), near_miss + 1
        rows.append({"prompt": prompt, "chosen": task.answer(items), "rejected": rejected})
    stats = {
        "pairs": len(rows),
        "rejected_sampled_from_sft": sampled,
        "rejected_programmatic_near_miss": near_miss,
        "sample_accuracy": correct_samples / (k * len(prompts)),
    }
    return rows, stats


def run_sort_seed(args: StudyArgs, seed: int, workdir: str, log) -> dict:
    task = SortTask()
    tokenizer = build_tokenizer(task.corpus(), vocab_size=args.model.vocab_size)
    # Disjoint prompt sets: SFT, preference training, held-out evaluation (the held-out set is the same for every seed;
    # the validation set, for choosing settings, is disjoint from it and from the seed's SFT and preference prompts)
    eval_prompts = task.prompts(args.num_eval_prompts, seed=10_000)
    seen = {p for p, _ in eval_prompts}
    if args.eval_split == "validation":
        eval_prompts = task.prompts(args.num_eval_prompts, seed=20_000, exclude=seen)
        seen |= {p for p, _ in eval_prompts}
    elif args.eval_split != "test":
        raise ValueError(f"eval_split must be 'test' or 'validation', not {args.eval_split!r}")
    sft_prompts = task.prompts(args.sft.num_examples, seed=1000 + seed, exclude=seen)
    seen |= {p for p, _ in sft_prompts}
    pref_prompts = task.prompts(args.num_train_prompts, seed=2000 + seed, exclude=seen)

    sft_rows = [{"prompt": p, "completion": task.answer(items)} for p, items in sft_prompts]
    sft_record, sft_path, sft_model = sft_checkpoint(args, tokenizer, sft_rows, seed, workdir)
    sft_record.update(sort_generation_metrics(task, sft_model, tokenizer, eval_prompts, args.max_new_tokens))
    log(f"[seed {seed}] SFT: {fmt(sft_record)}")

    train_rows, train_stats = sort_pairs(
        task,
        sft_model,
        tokenizer,
        pref_prompts,
        args.samples_per_prompt,
        args.sample_temperature,
        args.max_new_tokens,
        seed=3000 + seed,
    )
    eval_rows, eval_stats = sort_pairs(
        task,
        sft_model,
        tokenizer,
        eval_prompts,
        args.samples_per_prompt,
        args.sample_temperature,
        args.max_new_tokens,
        seed=4000 + seed,
    )
    log(f"[seed {seed}] pairs: train {train_stats}, eval {eval_stats}")
    eval_ids = [tokenize_like_trl(tokenizer, r["prompt"], r["chosen"], r["rejected"]) for r in eval_rows]
    ref_logps = pair_logps(sft_model, eval_ids, args.pref.eval_batch_size)

    def generation(model_m) -> dict:
        return sort_generation_metrics(task, model_m, tokenizer, eval_prompts, args.max_new_tokens)

    methods = train_methods(
        args, sft_path, tokenizer, train_rows, eval_rows, eval_ids, ref_logps, seed, workdir, log, generation
    )  # fmt: skip
    return {
        "seed": seed,
        "sft": sft_record,
        "pairs": {"train": train_stats, "eval": eval_stats, "examples": train_rows[:5]},
        "methods": methods,
    }


# ====================================================================== hh study
def hh_usable(tokenizer, row: dict, max_length: int | None) -> str | None:
    """Why a pair cannot be given to every method unchanged (`None` when it can): `"empty_response"` (a response is
    empty after TRL's prompt extraction; `InSPOTrainer` drops such rows, `DPOTrainer` keeps them),
    `"identical_responses"`, or `"too_long"` (the InSPO row x + y_l + y_w, with TRL's tokenization and EOS on both
    responses, does not fit `max_length`, so some method would truncate or drop it)."""
    example = extract_prompt(row)
    if not example["chosen"].strip() or not example["rejected"].strip():
        return "empty_response"
    p, w, l = tokenize_like_trl(tokenizer, **example)
    if w == l:
        return "identical_responses"
    if max_length is not None and len(p) + len(w) + len(l) > max_length:
        return "too_long"
    return None


def largest_divisor(n: int, at_most: int) -> int:
    """The largest batch size <= `at_most` that divides `n`: the trainers' eval metrics are means over batches, which
    equal the mean over pairs only when every batch is full."""
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def run_hh_seed(args: StudyArgs, seed: int, workdir: str, log, data_cache: dict) -> dict:
    if "rows" not in data_cache:
        if args.synthetic_hh:
            train_all = synthetic_conversations(args.n_train, seed=1)
            eval_all = synthetic_conversations(args.n_eval, seed=2)
            source = "synthetic conversations (benchmarks/tasks.py: synthetic_conversations)"
        else:
            train_all, eval_all = load_hh(args.data, args.n_train, args.n_eval)
            source = os.path.abspath(args.data)
        tokenizer = build_tokenizer(
            [r["chosen"] for r in train_all] + [r["rejected"] for r in train_all], vocab_size=args.model.vocab_size
        )
        reasons = {"train": {}, "eval": {}}
        kept = {"train": [], "eval": []}
        for split, rows in (("train", train_all), ("eval", eval_all)):
            for r in rows:
                why = hh_usable(tokenizer, r, args.pref.max_length)
                if why is None:
                    kept[split].append(r)
                else:
                    reasons[split][why] = reasons[split].get(why, 0) + 1
        train_rows, eval_rows = kept["train"], kept["eval"]
        data_cache.update(
            rows=(train_rows, eval_rows),
            tokenizer=tokenizer,
            data_stats={
                "source": source,
                "train_pairs_in": len(train_all),
                "eval_pairs_in": len(eval_all),
                "train_pairs_used": len(train_rows),
                "eval_pairs_used": len(eval_rows),
                "left_out": reasons,
                "filter": "pairs every method can use unchanged: non-empty, different responses, and the InSPO row "
                f"x + y_l + y_w (with EOS) <= max_length={args.pref.max_length} tokens",
            },
        )
        log(f"HH data: {data_cache['data_stats']}")
    train_rows, eval_rows = data_cache["rows"]
    tokenizer = data_cache["tokenizer"]

    if args.sft.text_only:
        sft_rows = [{"text": r["chosen"]} for r in train_rows]
    else:
        sft_rows = [{"prompt": e["prompt"], "completion": e["chosen"]} for e in map(extract_prompt, train_rows)]
    sft_record, sft_path, sft_model = sft_checkpoint(args, tokenizer, sft_rows, seed, workdir)
    eval_ids = [tokenize_like_trl(tokenizer, **extract_prompt(r)) for r in eval_rows]
    ref_logps = pair_logps(sft_model, eval_ids, args.pref.eval_batch_size)
    sft_record["policy_prefers_chosen"] = reward_accuracies(ref_logps, ref_logps, args.pref.beta)[
        "policy_prefers_chosen"
    ]
    log(f"[seed {seed}] SFT: {fmt(sft_record)}")

    methods = train_methods(
        args, sft_path, tokenizer, train_rows, eval_rows, eval_ids, ref_logps, seed, workdir, log
    )  # fmt: skip
    return {"seed": seed, "sft": sft_record, "data": data_cache["data_stats"], "methods": methods}


# ====================================================================== driver
SUMMARY_KEYS = (
    "unconditional_reward_accuracy",
    "conditional_reward_accuracy",
    "unconditional_reward_margin",
    "conditional_reward_margin",
    "policy_prefers_chosen",
    "gen_exact_match",
    "gen_position_accuracy",
    "gen_valid_format",
    "gen_mean_length",
    "gold_mean_length",
    "gen_abs_length_error",
    "gen_no_eos_fraction",
    "train_loss",
    "runtime_s",
)


def fmt(record: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in record.items()
        if isinstance(v, (int, float)) and k in SUMMARY_KEYS + ("steps", "train_rows_used")
    )


def summarize_runs(runs: list[dict], methods: list[str]) -> dict:
    summary = {}
    for name in ["sft", *methods]:
        records = [run["sft"] if name == "sft" else run["methods"][name] for run in runs]
        summary[name] = {k: summarize([r.get(k) for r in records]) for k in SUMMARY_KEYS if k in records[0]}
        trainer_keys = records[0].get("trainer_eval", {})
        for k in ("eval_rewards/accuracies", "eval_rewards_unconditional/accuracies"):
            if k in trainer_keys:
                summary[name][f"trainer_{k}"] = summarize([r["trainer_eval"][k] for r in records])
    # Paired differences against the SFT checkpoint the method started from
    if "gen_exact_match" in runs[0]["sft"]:
        for name in methods:
            diffs = [run["methods"][name]["gen_exact_match"] - run["sft"]["gen_exact_match"] for run in runs]
            summary[name]["gen_exact_match_minus_sft"] = summarize(diffs)
    # Paired differences against DPO (same seed, same SFT checkpoint, same pairs)
    if "dpo" in methods:
        for name in methods:
            if name == "dpo":
                continue
            for k in (
                "unconditional_reward_accuracy",
                "conditional_reward_accuracy",
                "gen_exact_match",
                "gen_mean_length",
                "gen_abs_length_error",
            ):
                if k in runs[0]["methods"]["dpo"]:
                    diffs = [run["methods"][name][k] - run["methods"]["dpo"][k] for run in runs]
                    summary[name][f"{k}_minus_dpo"] = summarize(diffs)
    return summary


def run_study(args: StudyArgs, output: str | None, workdir: str, plot: bool = True, quiet: bool = False) -> dict:
    """Run every seed of a study; write `output` (JSON) and its PNG when given; return the result dict."""
    log = (lambda *_: None) if quiet else (lambda msg: print(msg, flush=True))
    verbosity = hf_logging.get_verbosity()
    progress_bars = datasets.is_progress_bar_enabled()
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            hf_logging.set_verbosity_error()
            datasets.disable_progress_bars()
            if args.threads:
                torch.set_num_threads(args.threads)
            result = _run_study(args, workdir, log)
    finally:  # leave the process as it was (the smoke test runs in-process)
        hf_logging.set_verbosity(verbosity)
        if progress_bars:
            datasets.enable_progress_bars()
        torch.set_num_threads(threads)
    if output:
        write_json(output, result)
        log(f"wrote {output}")
        if plot:
            for path in plot_result(result, str(Path(output).with_suffix(""))):
                log(f"wrote {path}")
    print_summary(result, log)
    return result


def _run_study(args: StudyArgs, workdir: str, log) -> dict:
    started = time.perf_counter()
    runs, data_cache = [], {}
    for seed in args.seeds:
        seed_dir = os.path.join(workdir, f"seed{seed}")
        if args.study == "sort":
            runs.append(run_sort_seed(args, seed, seed_dir, log))
        else:
            runs.append(run_hh_seed(args, seed, seed_dir, log, data_cache))
    return {
        "study": args.study,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "", *sys.argv[1:]]),
        "machine": machine_description(),
        "config": asdict(args),
        "wall_time_s": time.perf_counter() - started,
        "summary": summarize_runs(runs, [name for name, _, _ in method_runs(args)]),
        "runs": runs,
    }


def print_summary(result: dict, log=print):
    log(f"\n{result['study']}: mean ± std over {len(result['runs'])} seed(s)")
    for name, metrics in result["summary"].items():
        cells = [f"{k}={v['mean']:.3f}±{v['std']:.3f}" for k, v in metrics.items() if v["mean"] is not None]
        log(f"  {name:14s} " + "  ".join(cells))


# ====================================================================== markdown
TABLE_COLUMNS = {
    "sort": [
        ("unconditional_reward_accuracy", "held-out uncond. reward acc."),
        ("conditional_reward_accuracy", "held-out cond. reward acc."),
        ("gen_exact_match", "greedy exact match"),
        ("gen_exact_match_minus_sft", "exact match − SFT (paired)"),
        ("gen_mean_length", "mean gen. length (tokens)"),
        ("gen_no_eos_fraction", "no EOS within limit"),
    ],
    "hh": [
        ("unconditional_reward_accuracy", "held-out uncond. reward acc."),
        ("conditional_reward_accuracy", "held-out cond. reward acc."),
        ("unconditional_reward_margin", "uncond. margin"),
        ("conditional_reward_margin", "cond. margin"),
        ("policy_prefers_chosen", "policy prefers y_w (no reference)"),
    ],
}


def markdown_table(result: dict) -> str:
    """The summary of a result as a Markdown table (mean ± std over seeds), then the paired differences to DPO."""
    columns = TABLE_COLUMNS[result["study"]]
    lines = ["| method | " + " | ".join(title for _, title in columns) + " |", "|---|" + "---|" * len(columns)]
    for name, metrics in result["summary"].items():
        cells = []
        for key, _ in columns:
            value = metrics.get(key)
            cells.append("–" if not value or value["mean"] is None else f"{value['mean']:.3f} ± {value['std']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    diff_keys = [k for k, _ in columns if any(f"{k}_minus_dpo" in m for m in result["summary"].values())]
    if diff_keys:
        lines += [
            "",
            "Paired difference to DPO (same seed, SFT checkpoint and pairs), mean ± std over seeds:",
            "",
            "| method | " + " | ".join(dict(columns)[k] for k in diff_keys) + " |",
            "|---|" + "---|" * len(diff_keys),
        ]
        for name, metrics in result["summary"].items():
            if f"{diff_keys[0]}_minus_dpo" in metrics:
                cells = [
                    f"{metrics[f'{k}_minus_dpo']['mean']:+.3f} ± {metrics[f'{k}_minus_dpo']['std']:.3f}"
                    for k in diff_keys
                ]
                lines.append(f"| {name} − dpo | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ====================================================================== plots
def plot_result(result: dict, prefix: str) -> list[str]:
    """Bar charts (mean ± std over seeds, seeds as dots) of the held-out metrics; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result["runs"][0]["methods"]) if result["runs"] else []
    panels = [
        ("unconditional_reward_accuracy", "held-out unconditional\nreward accuracy"),
        ("conditional_reward_accuracy", "held-out conditional\nreward accuracy"),
    ]
    if result["study"] == "sort":
        panels += [
            ("gen_exact_match", "greedy exact match\n(prompt alone)"),
            ("gen_mean_length", "mean generated length\n(tokens)"),
        ]
    else:
        panels += [("policy_prefers_chosen", "held-out log p(y_w|x) > log p(y_l|x)\n(no reference)")]
    names = ["sft"] + methods
    colors = {
        "sft": "#999999",
        "dpo": "#4C72B0",
        "inspo": "#DD8452",
        "inspo+uncond": "#55A868",
        "inspo+prompt_ref": "#C44E52",
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4))
    for ax, (key, title) in zip(axes, panels):
        xs, labels = [], []
        for i, name in enumerate(names):
            records = [run["sft"] if name == "sft" else run["methods"][name] for run in result["runs"]]
            values = [r[key] for r in records if key in r]
            if not values:
                continue
            mean = statistics.fmean(values)
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.bar(i, mean, yerr=std, color=colors.get(name, "#8172B2"), capsize=4, alpha=0.85)
            ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
            xs.append(i)
            labels.append(name)
        if key == "gen_mean_length" and result["runs"] and "gold_mean_length" in result["runs"][0]["sft"]:
            gold = statistics.fmean(run["sft"]["gold_mean_length"] for run in result["runs"])
            ax.axhline(gold, color="black", ls="--", lw=1, label="correct answers")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(xs, labels, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
        if "accuracy" in key or "exact" in key or "prefers" in key:
            ax.set_ylim(0, 1.05)
        if "accuracy" in key or "prefers" in key:
            ax.axhline(0.5, color="gray", ls=":", lw=1)
    n = len(result["runs"])
    title = {"sort": "Sorting task (tiny Llama)", "hh": "HH-RLHF harmless-base sample (tiny Llama)"}[result["study"]]
    fig.suptitle(f"{title}: mean ± std over {n} seed(s), dots = seeds", fontsize=10)
    fig.tight_layout()
    path = f"{prefix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


# ====================================================================== CLI
def smoke_args(study: str) -> StudyArgs:
    """Seconds-long settings: tiny sizes, 1 seed, a few steps (checks that the pipeline runs, not what it learns)."""
    args = StudyArgs(study=study, seeds=[0])
    args.model = ModelArgs(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=128)
    args.sft = SFTArgs(
        num_examples=64, batch_size=16, learning_rate=3e-3, epochs=1, max_length=128, text_only=study == "hh"
    )
    args.pref = PrefArgs(batch_size=8, max_steps=2, max_length=128, eval_batch_size=16, learning_rate=1e-3)
    args.num_train_prompts, args.num_eval_prompts, args.samples_per_prompt = 16, 16, 2
    args.max_new_tokens = 12
    args.n_train, args.n_eval, args.synthetic_hh = 16, 8, True
    args.threads = 1  # tiny matrices: a second thread only adds synchronisation
    return args


def study_args_from_cli(ns) -> StudyArgs:
    args = StudyArgs(study=ns.study, seeds=ns.seeds, methods=ns.methods)
    if ns.study == "hh":
        args.model = ModelArgs(
            vocab_size=2000, hidden_size=128, num_layers=2, num_heads=4, max_position_embeddings=512
        )
        args.sft = SFTArgs(
            batch_size=16, learning_rate=1e-3, epochs=2, max_length=ns.max_length or 384, text_only=True
        )
        args.pref = PrefArgs(
            beta=0.1, learning_rate=1e-4, batch_size=8, epochs=1, max_length=ns.max_length or 384, eval_batch_size=32
        )
        args.data = ns.data
    for group, names in (
        ("model", ("hidden_size", "num_layers", "vocab_size")),
        ("sft", ("sft_epochs", "sft_lr", "sft_examples")),
        ("pref", ("beta", "lr", "batch_size", "epochs", "max_steps", "max_length")),
    ):
        target = getattr(args, group)
        for name in names:
            value = getattr(ns, name, None)
            if value is None:
                continue
            attr = {
                "sft_epochs": "epochs",
                "sft_lr": "learning_rate",
                "sft_examples": "num_examples",
                "lr": "learning_rate",
            }.get(name, name)
            setattr(target, attr, value)
    if ns.max_length is not None:
        args.sft.max_length = ns.max_length
    args.threads = ns.threads
    if ns.temperature is not None:
        args.sample_temperature = ns.temperature
    if ns.study == "sort":
        for name in ("num_train_prompts", "num_eval_prompts", "samples_per_prompt"):
            if getattr(ns, name) is not None:
                setattr(args, name, getattr(ns, name))
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds-long run of both studies at tiny sizes (1 seed, 2 steps; the HH part uses "
        "synthetic conversations); checks the pipeline, not what it learns",
    )
    parser.add_argument("--output_dir", default=None, help="--smoke: write learning_smoke_{sort,hh}.json (+ PNG) here")
    sub = parser.add_subparsers(dest="command")
    for study in ("sort", "hh"):
        p = sub.add_parser(study, help=f"run the {study} study")
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + EXTRA_METHODS)
        p.add_argument("--output", default=str(RESULTS_DIR / f"learning_{study}.json"))
        p.add_argument("--no_plot", action="store_true")
        p.add_argument("--workdir", default=f"/tmp/trl-inspo-learning/{study}")
        p.add_argument("--data", default=str(DEFAULT_HH), help="HH-RLHF jsonl (hh study)")
        p.add_argument("--hidden_size", type=int)
        p.add_argument("--num_layers", type=int)
        p.add_argument("--vocab_size", type=int)
        p.add_argument("--sft_epochs", type=float)
        p.add_argument("--sft_lr", type=float)
        p.add_argument("--sft_examples", type=int)
        p.add_argument("--beta", type=float)
        p.add_argument("--lr", type=float)
        p.add_argument("--batch_size", type=int)
        p.add_argument("--epochs", type=float)
        p.add_argument("--max_steps", type=int)
        p.add_argument("--max_length", type=int)
        p.add_argument("--num_train_prompts", type=int)
        p.add_argument("--num_eval_prompts", type=int)
        p.add_argument("--samples_per_prompt", type=int)
        p.add_argument("--temperature", type=float, help="sampling temperature of the rejected answers (sort)")
        p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
        p.set_defaults(study=study)
    p = sub.add_parser("plot", help="redraw the PNG of a results JSON")
    p.add_argument("results", nargs="+")
    p = sub.add_parser("table", help="print the Markdown summary table of a results JSON")
    p.add_argument("results", nargs="+")
    return parser


def main(argv=None):
    parser = build_parser()
    ns = parser.parse_args(argv)

    if ns.smoke:
        import tempfile

        results = {}
        with tempfile.TemporaryDirectory(prefix="trl-inspo-learning-smoke-") as workdir:
            for study in ("sort", "hh"):
                output = os.path.join(ns.output_dir, f"learning_smoke_{study}.json") if ns.output_dir else None
                results[study] = run_study(smoke_args(study), output, os.path.join(workdir, study))
        return results
    if ns.command is None:
        parser.error("give a study (sort, hh), plot, or --smoke")
    if ns.command == "table":
        for path in ns.results:
            with open(path) as f:
                print(markdown_table(json.load(f)) + "\n")
        return None
    if ns.command == "plot":
        for path in ns.results:
            with open(path) as f:
                print(plot_result(json.load(f), str(Path(path).with_suffix(""))))
        return None
    return run_study(study_args_from_cli(ns), ns.output, ns.workdir, plot=not ns.no_plot)


if __name__ == "__main__":
    main()
