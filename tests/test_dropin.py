# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The drop-in promise: whatever trains with `trl.DPOTrainer` trains with `InSPOTrainer`.

The cases are those TRL's own DPOTrainer tests exercise (every loss type, dataset formats, PEFT/LoRA, QLoRA, a
precomputed reference, gradient checkpointing, evaluation during training, `padding_free`, model dtypes, truncation
modes, a model passed as an instance and as a path, no `args`, ...). Each case runs twice:

- **DPO-equivalent** (`conditional_loss_weight=0, unconditional_loss_weight=1, reference_conditioning="prompt_only"`):
  the first training step's loss equals `DPOTrainer`'s on the same model, data and seed. Where `max_length` cuts rows
  the two layouts truncate differently (InSPO rows hold both responses), so those cases check that training runs.
- **InSPO defaults**: the run trains and changes the trainable weights.
"""

import json
import math
from dataclasses import MISSING, dataclass, field, fields

import pytest
import torch
from datasets import Dataset, Features, Json, List
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from trl import DPOConfig, DPOTrainer

from trl_inspo import InSPOConfig, InSPOTrainer
from trl_inspo.losses import DPO_LOSS_TYPES

from .conftest import config_kwargs, make_rows
from .test_trl_contract import fused_lm_head_runs


DPO_EQUIVALENT = dict(conditional_loss_weight=0.0, unconditional_loss_weight=1.0, reference_conditioning="prompt_only")
LORA = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
LABEL_SMOOTHING = {"exo_pair": 1e-3, "robust": 0.1, "aot": 0.1, "aot_unpaired": 0.1}

# A ChatML-style template that also renders tool definitions and tool calls (content may be None on a tool call).
TOOL_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\ntools: ' + (tools | tojson) + '<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% if message.get('tool_calls') %}{% for call in message['tool_calls'] %}"
    "{{ 'call ' + call['function']['name'] + ' ' + (call['function']['arguments'] | tojson) }}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# ---------------------------------------------------------------------------------------------------------- data
def _standard(n=16, seed=0):
    return make_rows(n, seed=seed)


def _messages(row):
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
    }


def _distinct_first_letters(rows):
    """Rows whose responses differ from their first letter on: TRL's character-level prompt extraction and InSPO's
    word-boundary one then take the same prompt."""
    return [r for r in rows if r["chosen"].strip()[0] != r["rejected"].strip()[0]]


def _tool_rows(n=12):
    rows = []
    for i, row in enumerate(make_rows(n, seed=7)):
        call = {"type": "function", "function": {"name": "lookup", "arguments": {"query": row["prompt"][:12], "k": i}}}
        chosen = [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "name": "lookup", "content": row["chosen"].strip()},
            {"role": "assistant", "content": row["chosen"].strip()},
        ]
        rows.append(
            {
                "prompt": [{"role": "user", "content": row["prompt"]}],
                "chosen": chosen,
                "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
                "tools": json.dumps([{"type": "function", "function": {"name": "lookup", "parameters": {}}}]),
            }
        )
    return rows


def _json_typed(rows):
    """Message columns stored as JSON (datasets' `Json` feature): each message keeps its own keys."""
    features = Features({k: List(Json()) for k in ("prompt", "chosen", "rejected")} | {"tools": Json()})
    return Dataset.from_list(rows, features=features)


DATASETS = {
    "standard": lambda: Dataset.from_list(_standard()),
    "conversational": lambda: Dataset.from_list([_messages(r) for r in _standard()]),
    "implicit_prompt": lambda: Dataset.from_list(
        [
            {"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
            for r in _distinct_first_letters(_standard(32))
        ]
    ),
    "implicit_conversational": lambda: Dataset.from_list(
        [
            {"chosen": m["prompt"] + m["chosen"], "rejected": m["prompt"] + m["rejected"]}
            for m in map(_messages, _standard())
        ]
    ),
    "tool_calls": lambda: Dataset.from_list(_tool_rows(), on_mixed_types="use_json"),
    "json_typed_messages": lambda: _json_typed(_tool_rows()),
    "extra_columns": lambda: Dataset.from_list(
        [{**r, "id": i, "score_chosen": 8.5, "source": "x"} for i, r in enumerate(_standard())]
    ),
    "iterable": lambda: Dataset.from_list(_standard()).to_iterable_dataset(),
}


# ---------------------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One DPOTrainer use. `model`: "instance" (built from a config), "path" (saved to disk), "peft_model" (a
    `PeftModel` passed in) or "qlora" (4-bit from a path); `parity`: whether the DPO-equivalent run must match
    DPOTrainer's first-step loss (`rel` tolerance)."""

    config: dict = field(default_factory=dict)
    data: str = "standard"
    model: str = "instance"
    peft: bool = False
    ref: str = "auto"  # "auto": what TRL would pick; "other": an explicit reference model of other weights
    eval: str | None = None  # None, "single" or "dict"
    rel: float = 1e-5
    parity: bool = True
    tool_template: bool = False


CASES = {
    **{
        f"loss-{t}": Case(config=dict(loss_type=[t], label_smoothing=LABEL_SMOOTHING.get(t, 0.0), beta=0.5))
        for t in DPO_LOSS_TYPES
    },
    "loss-mpo": Case(config=dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0])),
    "ld_alpha": Case(config=dict(ld_alpha=0.5)),
    "use_weighting": Case(config=dict(use_weighting=True)),
    "f_divergence": Case(config=dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3)),
    "sync_ref_model": Case(config=dict(sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=0.5)),
    **{
        f"data-{name}": Case(data=name, tool_template=name in ("tool_calls", "json_typed_messages"))
        for name in DATASETS
    },
    "model-path": Case(model="path"),
    "explicit-ref_model": Case(ref="other"),
    "no-dropout-disable": Case(config=dict(disable_dropout=False)),
    "lora": Case(peft=True),
    "lora-path": Case(peft=True, model="path"),
    "peft_model": Case(model="peft_model"),
    "qlora": Case(model="qlora", peft=True, rel=1e-3),
    "precompute_ref_log_probs": Case(config=dict(precompute_ref_log_probs=True, precompute_ref_batch_size=8)),
    "precompute-lora": Case(config=dict(precompute_ref_log_probs=True), peft=True),
    "gradient_checkpointing": Case(config=dict(gradient_checkpointing=True)),
    "gradient_checkpointing-lora": Case(config=dict(gradient_checkpointing=True), peft=True),
    "gradient_accumulation": Case(config=dict(gradient_accumulation_steps=2, per_device_train_batch_size=2)),
    "eval-during-training": Case(config=dict(eval_strategy="steps", eval_steps=1), eval="single"),
    "eval-dataset-dict": Case(config=dict(eval_strategy="steps", eval_steps=1), eval="dict"),
    "padding_free": Case(config=dict(padding_free=True)),
    "pad_to_multiple_of": Case(config=dict(pad_to_multiple_of=8)),
    "dataset_num_proc": Case(config=dict(dataset_num_proc=2)),
    "dtype-float32": Case(config=dict(model_init_kwargs={"dtype": "float32"}), model="path"),
    "dtype-bfloat16": Case(config=dict(model_init_kwargs={"dtype": "bfloat16"}), model="path", rel=2e-2),
    "dtype-float16": Case(config=dict(model_init_kwargs={"dtype": "float16"}), model="path", rel=2e-2),
    "max_length-keep_start": Case(config=dict(max_length=20), parity=False),
    "max_length-keep_end": Case(config=dict(max_length=20, truncation_mode="keep_end"), parity=False),
}


# ---------------------------------------------------------------------------------------------------------- runner
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer_factory):
    """A tiny Llama (64 wide: bitsandbytes quantizes in blocks of 64 values) saved with its tokenizer."""
    from trl_inspo.tiny import build_model

    path = tmp_path_factory.mktemp("dropin-model")
    tokenizer = tokenizer_factory()
    build_model(tokenizer, seed=0, hidden_size=64, num_layers=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def build_trainer(trainer_cls, case: Case, tmp_path, model_dir, inspo_options: dict, steps: int):
    config_cls = InSPOConfig if trainer_cls is InSPOTrainer else DPOConfig
    options = dict(case.config, **(inspo_options if trainer_cls is InSPOTrainer else {}))
    options.setdefault("max_steps", steps)
    options.setdefault("learning_rate", 1e-2)
    args = config_cls(**config_kwargs(tmp_path / trainer_cls.__name__, per_device_eval_batch_size=4, **options))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if case.tool_template:
        tokenizer.chat_template = TOOL_TEMPLATE
    kwargs = dict(args=args, processing_class=tokenizer, train_dataset=DATASETS[case.data]())
    if case.eval == "single":
        kwargs["eval_dataset"] = Dataset.from_list(_standard(8, seed=2))
    elif case.eval == "dict":
        kwargs["eval_dataset"] = {
            "a": Dataset.from_list(_standard(4, seed=2)),
            "b": Dataset.from_list(_standard(4, 3)),
        }
    if case.peft:
        kwargs["peft_config"] = LoraConfig(**LORA)
    if case.model == "instance":
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        model.config._name_or_path = ""  # built in memory: no path to reload a reference from
        if trainer_cls is DPOTrainer and not case.peft and not args.precompute_ref_log_probs:
            kwargs["ref_model"] = AutoModelForCausalLM.from_pretrained(model_dir)  # DPOTrainer cannot copy one
    elif case.model == "peft_model":
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(**LORA))
    else:
        model = model_dir
        if case.model == "qlora":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    if case.ref == "other":
        reference = AutoModelForCausalLM.from_pretrained(model_dir)
        with torch.no_grad():
            for p in reference.parameters():
                p.mul_(0.9)
        kwargs["ref_model"] = reference
    return trainer_cls(model=model, **kwargs)


def train(trainer) -> tuple[float, bool]:
    """First logged training loss, and whether the trainable weights changed."""
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert before, "nothing to train"
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    changed = any(not torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters() if n in before)
    return losses[0], changed


@pytest.mark.parametrize("name", list(CASES))
def test_dpo_equivalent_settings_match_dpo_trainer(name, tmp_path, model_dir):
    case = CASES[name]
    dpo_loss, _ = train(build_trainer(DPOTrainer, case, tmp_path / "dpo", model_dir, {}, steps=1))
    inspo = build_trainer(InSPOTrainer, case, tmp_path / "inspo", model_dir, DPO_EQUIVALENT, steps=1)
    inspo_loss, changed = train(inspo)
    assert math.isfinite(dpo_loss) and math.isfinite(inspo_loss) and changed
    if case.parity:
        assert inspo_loss == pytest.approx(dpo_loss, rel=case.rel, abs=case.rel)
    else:  # the layouts truncate differently; the data checks say what was cut
        assert any(inspo.inspo_truncated["train"].values()) or any(inspo.inspo_dropped["train"].values())


@pytest.mark.parametrize("name", list(CASES))
def test_inspo_defaults_train(name, tmp_path, model_dir):
    trainer = build_trainer(InSPOTrainer, CASES[name], tmp_path, model_dir, {}, steps=2)
    loss, changed = train(trainer)
    assert math.isfinite(loss) and changed
    if CASES[name].eval:
        assert any(
            k.startswith("eval_") and k.endswith("rewards_unconditional/accuracies")
            for e in trainer.state.log_history
            for k in e
        )


@pytest.mark.parametrize("name", list(CASES))
def test_every_case_constructs(name, tmp_path, model_dir):
    """Construction alone (no forward pass, so that it also runs where TRL's fused LM head cannot, e.g. TRL 1.15 on a
    CPU-only torch): both trainers accept the case, with the same prepared rows."""
    case = CASES[name]
    if case.config.get("precompute_ref_log_probs") and not fused_lm_head_runs():
        pytest.skip("the precompute runs the fused LM head, which needs Triton on this TRL release")
    dpo = build_trainer(DPOTrainer, case, tmp_path / "dpo", model_dir, {}, steps=1)
    inspo = build_trainer(InSPOTrainer, case, tmp_path / "inspo", model_dir, DPO_EQUIVALENT, steps=1)
    if case.parity and case.data != "iterable":
        assert len(inspo.train_dataset) == len(dpo.train_dataset)
        assert inspo.train_dataset["prompt_ids"] == dpo.train_dataset["prompt_ids"]


def test_no_args(tmp_path, model_dir, monkeypatch):
    """`args` omitted, as in `DPOTrainer(model, train_dataset=...)`: a default config named after the model, with
    DPOConfig's defaults. (DPOTrainer itself cannot start without `args` on a CPU-only machine: its default config
    turns bf16 on; InSPOConfig leaves bf16 off where no bf16 accelerator exists.)"""
    monkeypatch.chdir(tmp_path)
    inspo = InSPOTrainer(model=model_dir, train_dataset=Dataset.from_list(_standard(8)))
    defaults = {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(DPOConfig)}
    assert isinstance(inspo.args, InSPOConfig) and inspo.args.output_dir.endswith("dropin-model0-InSPO")
    for name in ("beta", "loss_type", "learning_rate", "max_length", "truncation_mode", "per_device_train_batch_size"):
        assert getattr(inspo.args, name) == defaults[name], name
    inspo.args.max_steps, inspo.args.logging_steps = 1, 1
    loss, changed = train(inspo)
    assert math.isfinite(loss) and changed


def test_a_plain_dpo_config_is_accepted_as_is(tmp_path, model_dir):
    """`args=DPOConfig(...)`: upgraded to an InSPOConfig that keeps every DPO field."""
    args = DPOConfig(**config_kwargs(tmp_path, beta=0.3, loss_type=["ipo"], max_steps=1))
    trainer = InSPOTrainer(model=model_dir, args=args, train_dataset=Dataset.from_list(_standard(8)))
    assert isinstance(trainer.args, InSPOConfig)
    assert (trainer.args.beta, trainer.args.loss_type, trainer.args.max_steps) == (0.3, ["ipo"], 1)
    assert train(trainer)[1]
