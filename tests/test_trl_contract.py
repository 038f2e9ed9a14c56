# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Contract tests: one per entry of `docs/trl_internals.md`, the TRL and transformers internals trl-inspo relies on.

Each test checks the behaviour the package assumes, on TRL and transformers directly (not through `InSPOTrainer`), and
its failure message names the entry, so that a TRL release that changes one of them fails here, loudly, rather than
silently in a user's run. The runtime self-checks of the hooks (the reference skip, the row count of dataset
preparation, the shape of precomputed values) are tested at the end.
"""

import inspect

import pytest
import torch
import trl
import trl.trainer.dpo_trainer as dpo_module
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer
from trl import DPOConfig, DPOTrainer

from trl_inspo import InSPOConfig, InSPOTrainer, TRLContractError

from .conftest import config_kwargs, make_rows


def entry(name):
    """The failure message of a broken contract."""
    return f"docs/trl_internals.md, '{name}': TRL {trl.__version__} no longer behaves as trl-inspo assumes"


def fused_lm_head_runs():
    """TRL < 1.16 computes the fused LM head with Triton kernels only, which a CPU-only torch build lacks."""
    from trl.trainer.utils import add_fused_lm_head

    try:
        from trl_inspo.tiny import build_model, build_tokenizer

        tok = build_tokenizer(["a b c d e f"], vocab_size=40)
        model = build_model(tok, hidden_size=16, num_layers=1)
        add_fused_lm_head(model)
        model(input_ids=torch.tensor([[3, 4, 5]]), labels=torch.tensor([[3, 4, 5]]), fused_lm_head=True)
        return True
    except AttributeError:
        return False


needs_fused_lm_head = pytest.mark.skipif(
    not fused_lm_head_runs(),
    reason=f"TRL {trl.__version__}'s fused LM head needs Triton, absent from this torch build",
)


def dpo_trainer(tmp_path, model, tokenizer, data=None, no_ref=False, **overrides):
    """A DPOTrainer; a model instance gets a reference of random weights unless `no_ref`."""
    return DPOTrainer(
        model=model,
        ref_model=None if isinstance(model, str) or no_ref else AutoModelForCausalLM.from_config(model.config),
        args=DPOConfig(**config_kwargs(tmp_path, **overrides)),
        train_dataset=data if data is not None else Dataset.from_list(make_rows(8)),
        processing_class=tokenizer,
    )


# ---------------------------------------------------------------------------------------------------------- entries
def test_create_model_from_path_loads_policy_then_reference(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    name = "trl.trainer.dpo_trainer.create_model_from_path"
    calls = []
    original = dpo_module.create_model_from_path

    def spy(path, **kwargs):
        calls.append(path)
        return original(path, **kwargs)

    monkeypatch.setattr(dpo_module, "create_model_from_path", spy)
    trainer = dpo_trainer(tmp_path, tiny_model_dir, tokenizer)
    assert calls == [tiny_model_dir, tiny_model_dir], entry(name)  # the policy, then the reference
    assert trainer.ref_model is not None, entry(name)


def test_prepare_dataset_tokenizes_and_keeps_every_row_without_max_length(tmp_path, model_factory, tokenizer):
    name = "DPOTrainer._prepare_dataset"
    signature = list(inspect.signature(DPOTrainer._prepare_dataset).parameters)
    assert signature == ["self", "dataset", "processing_class", "args", "dataset_name"], entry(name)
    trainer = dpo_trainer(tmp_path, model_factory(), tokenizer)
    rows = [dict(r, extra=i) for i, r in enumerate(make_rows(12, seed=3))]
    args = DPOConfig(**config_kwargs(tmp_path, max_length=None))
    out = trainer._prepare_dataset(Dataset.from_list(rows), tokenizer, args, "contract")
    assert len(out) == len(rows) and out["extra"] == list(range(len(rows))), entry(name)  # no row dropped, order kept
    for row, ex in zip(rows, out):
        whole = tokenizer(row["prompt"] + row["chosen"] + tokenizer.eos_token)["input_ids"]
        assert ex["prompt_ids"] + ex["chosen_ids"] == whole, entry(name)  # EOS appended, nothing cut
        assert ex["chosen_ids"][-1] == ex["rejected_ids"][-1] == tokenizer.eos_token_id, entry(name)
    # with max_length, TRL drops the rows whose prompt fills it (the rule InSPO counts as 'prompt_too_long')
    short = DPOConfig(**config_kwargs(tmp_path, max_length=6))
    kept = trainer._prepare_dataset(Dataset.from_list(rows), tokenizer, short, "contract")
    assert len(kept) == sum(len(tokenizer(r["prompt"])["input_ids"]) < 6 for r in rows), entry(name)


@needs_fused_lm_head
def test_precompute_loop_stores_what_compute_ref_log_probs_returns(tmp_path, model_factory, tokenizer):
    name = "DPOTrainer._precompute_ref_logps"

    class Spy(DPOTrainer):
        def compute_ref_log_probs(self, model, inputs):
            b = inputs["input_ids"].size(0) // 2
            return torch.arange(3.0).repeat(b, 1), -torch.arange(3.0).repeat(b, 1)

    data = Dataset.from_list(make_rows(6))
    args = DPOConfig(**config_kwargs(tmp_path, precompute_ref_log_probs=True, precompute_ref_batch_size=4))
    trainer = Spy(model=model_factory(), args=args, train_dataset=data, processing_class=tokenizer)
    assert trainer.train_dataset["ref_chosen_logps"] == [[0.0, 1.0, 2.0]] * 6, entry(name)
    assert trainer.train_dataset["ref_rejected_logps"] == [[-0.0, -1.0, -2.0]] * 6, entry(name)
    signature = list(inspect.signature(DPOTrainer._precompute_ref_logps).parameters)
    assert signature == ["self", "dataset", "name", "batch_size"], entry(name)


@needs_fused_lm_head
def test_precompute_cache_is_keyed_on_the_model_hash(tmp_path, model_factory, tokenizer):
    name = "DPOTrainer._precompute_model_hash"
    data = Dataset.from_list(make_rows(6))
    trainer = dpo_trainer(tmp_path, model_factory(), tokenizer, data, precompute_ref_log_probs=True, no_ref=True)
    assert isinstance(trainer._precompute_model_hash, str), entry(name)
    prepared = trainer._prepare_dataset(data, tokenizer, trainer.args, "x")
    paths = []
    for key in ("a", "b", "a"):
        trainer._precompute_model_hash = key
        paths.append(trainer._precompute_ref_logps(prepared, "x", 4).cache_files[-1]["filename"])
    assert paths[0] == paths[2] != paths[1], entry(name)


def test_compute_loss_goes_through_compute_loss_private(tmp_path, model_factory, tokenizer):
    name = "DPOTrainer._compute_loss"
    source = inspect.getsource(DPOTrainer.compute_loss)
    assert "self._compute_loss(" in source, entry(name)
    assert list(inspect.signature(DPOTrainer._compute_loss).parameters) == [
        "self",
        "model",
        "inputs",
        "return_outputs",
    ], entry(name)


def test_compute_ref_log_probs_signature(tmp_path):
    name = "DPOTrainer.compute_ref_log_probs"
    assert list(inspect.signature(DPOTrainer.compute_ref_log_probs).parameters) == ["self", "model", "inputs"], entry(
        name
    )


def test_signature_columns_keep_the_reference_columns(tmp_path, model_factory, tokenizer):
    name = "DPOTrainer._set_signature_columns_if_needed"
    trainer = dpo_trainer(tmp_path, model_factory(), tokenizer)
    trainer._signature_columns = None
    trainer._set_signature_columns_if_needed()
    expected = {"prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps"}
    assert expected <= set(trainer._signature_columns), entry(name)
    extra = Dataset.from_list([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3], "other": 1}])
    assert "other" not in trainer._remove_unused_columns(extra).column_names, entry(name)


@needs_fused_lm_head
def test_fused_lm_head_scores_labelled_positions(model_factory):
    name = "fused LM head (trl.trainer.utils.add_fused_lm_head)"
    from trl.trainer.utils import add_fused_lm_head

    model = model_factory(dtype=torch.float64)
    ids = torch.tensor([[5, 9, 12, 7, 30, 8], [6, 11, 13, 14, 15, 16]])
    with torch.no_grad():
        expected = torch.log_softmax(model(input_ids=ids).logits.double(), -1)[:, :-1].gather(-1, ids[:, 1:, None])[
            ..., 0
        ]
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs"))
    labels = ids.masked_fill(torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]]) == 0, -100)
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        shifted = model(
            input_ids=ids, shift_labels=torch.cat([labels[:, 1:], torch.full((2, 1), -100)], 1), fused_lm_head=True
        )
    scored = labels[:, 1:] != -100
    assert out.log_probs.shape == (2, 5), entry(name)  # aligned with positions 1..T (the predicted tokens)
    torch.testing.assert_close(out.log_probs[scored].double(), expected[scored], rtol=1e-5, atol=1e-5, msg=entry(name))
    assert (out.log_probs[~scored] == 0).all(), entry(name)
    torch.testing.assert_close(shifted.log_probs[:, :5], out.log_probs, msg=entry(name))  # shift_labels: pre-shifted
    for field in ("entropy", "mean_logits", "is_top1", "log_sum_sq_probs"):
        assert getattr(out, field).shape == (2, 5), entry(name)


def test_trainer_state_attributes(tmp_path, model_factory, tokenizer):
    name = "DPOTrainer attributes"
    trainer = dpo_trainer(tmp_path, model_factory(), tokenizer, loss_type=["sigmoid", "sft"], ld_alpha=0.5)
    assert trainer.loss_types == ["sigmoid", "sft"] and trainer.loss_weights == [1.0, 1.0], entry(name)
    assert (trainer.beta, trainer.ld_alpha, trainer.use_weighting) == (0.1, 0.5, False), entry(name)
    assert trainer.precompute_ref_logps is False and trainer.aux_loss_enabled is False, entry(name)
    assert isinstance(trainer.router_aux_loss_coef, float), entry(name)
    assert trainer._metrics["train"]["x"] == [] and trainer._total_train_tokens == 0, entry(name)
    assert trainer._tp_size == 1, entry(name)


def test_init_training_state_signature():
    name = "Trainer._init_training_state"
    parameters = list(inspect.signature(Trainer._init_training_state).parameters)
    assert parameters == [
        "self",
        "max_steps",
        "num_update_steps_per_epoch",
        "num_train_epochs",
        "resume_from_checkpoint",
        "trial",
    ], entry(name)


def test_save_model_signature():
    name = "Trainer.save_model"
    assert list(inspect.signature(Trainer.save_model).parameters) == ["self", "output_dir", "_internal_call"], entry(
        name
    )


def test_helpers_importable_with_their_signatures():
    name = "TRL helpers in non-public modules"
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import get_config_model_id, global_then_local_main_first, use_adapter

    assert list(inspect.signature(use_adapter).parameters)[:2] == ["model", "adapter_name"], entry(name)
    assert list(inspect.signature(disable_gradient_checkpointing).parameters)[:2] == [
        "model",
        "gradient_checkpointing_kwargs",
    ], entry(name)
    assert callable(get_config_model_id) and callable(global_then_local_main_first), entry(name)


def test_peft_model_gets_a_ref_adapter(tmp_path, model_factory, tokenizer):
    name = "TRL's 'ref' adapter"
    model = get_peft_model(model_factory(), LoraConfig(r=4, target_modules=["q_proj"]))
    trainer = dpo_trainer(tmp_path, model, tokenizer, no_ref=True)
    assert "ref" in trainer.model.peft_config and trainer.ref_model is None, entry(name)


def test_model_card_template(tmp_path, model_factory, tokenizer):
    name = "TRL's model card template"
    trainer = dpo_trainer(tmp_path, model_factory(), tokenizer)
    trainer.create_model_card(model_name="m")
    card = (tmp_path / "out" / "README.md").read_text()
    for text in (
        "[None](https://huggingface.co/None)",
        "## Quick start",
        "## Training procedure",
        "### Framework versions",
    ):
        assert text in card, entry(name) + f": the card has no {text!r}"
    assert card.index("## Quick start") < card.index("## Training procedure"), entry(name)


def test_attn_implementation_attribute(model_factory):
    name = "PretrainedConfig._attn_implementation"
    for implementation in ("sdpa", "eager"):
        model = model_factory(attn_implementation=implementation)
        assert model.config._attn_implementation == implementation, entry(name)


# ---------------------------------------------------------------------------------------------------------- self-check
def test_reference_skip_checks_itself(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    """If TRL stops loading models through `create_model_from_path`, the reference-free skip notices instead of
    training with a stray reference model."""
    original_init = DPOTrainer.__init__

    def init_loading_the_policy_elsewhere(self, model, *args, **kwargs):
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model)
        original_init(self, model, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "__init__", init_loading_the_policy_elsewhere)
    args = InSPOConfig(**config_kwargs(tmp_path, loss_type=["simpo"]))
    data = Dataset.from_list(make_rows(4))
    with pytest.raises(TRLContractError, match="create_model_from_path"):
        InSPOTrainer(model=tiny_model_dir, args=args, train_dataset=data, processing_class=tokenizer)


def test_dataset_preparation_checks_the_row_count(tmp_path, model_factory, tokenizer, monkeypatch):
    original = DPOTrainer._prepare_dataset

    def drops_a_row(self, dataset, processing_class, args, dataset_name):
        return original(self, dataset, processing_class, args, dataset_name).select(range(len(dataset) - 1))

    monkeypatch.setattr(DPOTrainer, "_prepare_dataset", drops_a_row)
    args = InSPOConfig(**config_kwargs(tmp_path, loss_type=["simpo"]))
    with pytest.raises(TRLContractError, match="DPOTrainer._prepare_dataset"):
        InSPOTrainer(
            model=model_factory(), args=args, train_dataset=Dataset.from_list(make_rows(6)), processing_class=tokenizer
        )


@needs_fused_lm_head
def test_precompute_checks_what_trl_stored(tmp_path, model_factory, tokenizer, monkeypatch):
    original = DPOTrainer._precompute_ref_logps

    def one_value_per_row(self, dataset, name, batch_size):  # a TRL that ignores compute_ref_log_probs' shape
        out = original(self, dataset, name, batch_size)
        return out.map(lambda r: {"ref_chosen_logps": r["ref_chosen_logps"][0], "ref_rejected_logps": 0.0})

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", one_value_per_row)
    args = InSPOConfig(**config_kwargs(tmp_path, precompute_ref_log_probs=True))
    with pytest.raises(TRLContractError, match="_precompute_ref_logps"):
        InSPOTrainer(
            model=model_factory(), args=args, train_dataset=Dataset.from_list(make_rows(6)), processing_class=tokenizer
        )


@needs_fused_lm_head
def test_precompute_cache_never_matches_dpo_or_another_layout(tmp_path, model_factory, tokenizer):
    """The same data and reference through DPOTrainer, InSPOTrainer, and InSPOTrainer with another pair layout: three
    different cache files, so none can read another's values."""
    data = Dataset.from_list(make_rows(6)).map(lambda r: r)  # cache-backed, as in real runs

    def precompute(cls, **overrides):
        config = (InSPOConfig if cls is InSPOTrainer else DPOConfig)(
            **config_kwargs(tmp_path / cls.__name__, precompute_ref_log_probs=True, max_length=None, **overrides)
        )
        return cls(model=model_factory(), args=config, train_dataset=data, processing_class=tokenizer)

    dpo = precompute(DPOTrainer)
    inspo = precompute(InSPOTrainer)
    other = precompute(InSPOTrainer, alternative_separator="\n")
    files = [
        dpo.train_dataset.cache_files[-1]["filename"],
        inspo.reference_cache_files["train"],
        other.reference_cache_files["train"],
    ]
    assert len(set(files)) == 3
    assert inspo.train_dataset["ref_chosen_logps"] != dpo.train_dataset["ref_chosen_logps"]
