# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Training runs, DPOConfig upgrade, model card, option validation."""

import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from trl_inspo import DataCollatorForInSPO, InSPOConfig, InSPOConfigError, InSPOTrainer, InSPOWarning

from .conftest import config_kwargs


def test_public_api():
    assert issubclass(InSPOTrainer, DPOTrainer)
    assert issubclass(InSPOConfig, DPOConfig)


def test_training_lowers_loss_changes_weights_and_saves(tmp_path, model_factory, tokenizer, preference_dataset):
    model = model_factory(seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = InSPOConfig(
        **config_kwargs(tmp_path, max_steps=24, learning_rate=5e-3, beta=0.5, per_device_train_batch_size=8)
    )
    trainer = InSPOTrainer(
        model=model,
        ref_model=model_factory(seed=0),
        args=args,
        train_dataset=preference_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.05
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0: -log sigmoid(0)
    accuracies = [log["rewards/accuracies"] for log in trainer.state.log_history if "rewards/accuracies" in log]
    assert accuracies[-1] > 0.5
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before)

    out = tmp_path / "saved"
    trainer.save_model(str(out))
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    for name, param in reloaded.named_parameters():
        torch.testing.assert_close(param, trainer.model.get_parameter(name).detach())
    # generation from the prompt alone
    prompt = tok("what is two plus two?", return_tensors="pt")
    generated = reloaded.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    assert generated[0, : prompt["input_ids"].shape[1]].tolist() == prompt["input_ids"][0].tolist()
    trainer.create_model_card(model_name="tiny-inspo")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "inspo" in card and "trl" in card and "2512.23126" in card and "li2025inspo" in card


def test_eval_logs_inspo_metrics(tmp_path, model_factory, tokenizer, preference_dataset):
    args = InSPOConfig(**config_kwargs(tmp_path))
    trainer = InSPOTrainer(
        model=model_factory(seed=0),
        ref_model=model_factory(seed=1),
        args=args,
        train_dataset=preference_dataset,
        eval_dataset=preference_dataset,
        processing_class=tokenizer,
    )
    metrics = trainer.evaluate()
    for key in (
        "eval_loss",
        "eval_rewards/accuracies",
        "eval_rewards_unconditional/accuracies",
        "eval_logps/chosen",
        "eval_logps_unconditional/chosen",
    ):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key]))


def test_plain_dpo_config_is_upgraded(tmp_path, model_factory, tokenizer, preference_dataset):
    dpo_args = DPOConfig(**config_kwargs(tmp_path, beta=0.3, loss_type=["ipo"]))
    trainer = InSPOTrainer(
        model=model_factory(),
        ref_model=model_factory(seed=1),
        args=dpo_args,
        train_dataset=preference_dataset,
        processing_class=tokenizer,
    )
    assert isinstance(trainer.args, InSPOConfig)
    assert trainer.args.beta == 0.3 and trainer.args.loss_type == ["ipo"]
    assert trainer.args.conditional_loss_weight == 1.0 and trainer.args.reference_conditioning == "conditional"
    assert isinstance(trainer.data_collator, DataCollatorForInSPO)


def test_default_args_and_model_by_path(tiny_model_dir, preference_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = InSPOTrainer(model=tiny_model_dir, train_dataset=preference_dataset)
    assert isinstance(trainer.args, InSPOConfig) and trainer.args.output_dir.endswith("-InSPO")
    assert trainer.ref_model is not None  # loaded from the same path, as DPOTrainer does
    assert trainer.ref_model is not trainer.model


@pytest.mark.parametrize("loss_type", [["simpo"], ["sft", "orpo"], ["sft"]], ids=["simpo", "orpo", "sft"])
def test_reference_free_losses_load_no_reference(tiny_model_dir, preference_dataset, tmp_path, loss_type):
    args = InSPOConfig(**config_kwargs(tmp_path, loss_type=loss_type, max_steps=2))
    trainer = InSPOTrainer(model=tiny_model_dir, args=args, train_dataset=preference_dataset)
    assert trainer.ref_model is None
    assert not any("ref" in name for name, _ in trainer.model.named_modules() if name.endswith("ref"))
    trainer.train()
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)


def test_reference_free_ignores_a_reference_model_with_a_warning(
    tmp_path, model_factory, tokenizer, preference_dataset
):
    args = InSPOConfig(**config_kwargs(tmp_path, loss_type=["simpo"]))
    with pytest.warns(InSPOWarning, match="`ref_model` has no effect"):
        trainer = InSPOTrainer(
            model=model_factory(),
            ref_model=model_factory(),
            args=args,
            train_dataset=preference_dataset,
            processing_class=tokenizer,
        )
    assert trainer.ref_model is None
    trainer.train()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reference_conditioning": "both"}, "reference_conditioning"),
        ({"conditional_loss_weight": -1.0}, "conditional_loss_weight"),
        ({"unconditional_loss_weight": float("nan")}, "unconditional_loss_weight"),
        ({"conditional_loss_weight": 0.0, "unconditional_loss_weight": 0.0}, "nothing to train"),
        ({"max_alternative_length": 0}, "max_alternative_length"),
        ({"max_alternative_length": 8, "reference_conditioning": "prompt_only"}, "prompt_only"),
        ({"max_alternative_length": 8, "unconditional_loss_weight": 0.5}, "unconditional_loss_weight=0.5"),
        ({"max_alternative_length": 8, "loss_type": ["sigmoid", "sft"]}, "'sft'"),
        ({"alternative_separator": 3}, "alternative_separator"),
        ({"loss_type": ["kto"]}, "Unknown `loss_type`"),
        ({"loss_type": ["bco_pair"], "f_divergence_type": "js_divergence"}, "f_divergence_type"),
        ({"f_divergence_type": "hellinger"}, "f_divergence_type"),
        ({"loss_type": ["exo_pair"]}, "label_smoothing"),
        ({"loss_type": ["exo_pair"], "label_smoothing": 1.0}, "label_smoothing"),
        ({"loss_type": ["discopop"], "discopop_tau": 0.0}, "discopop_tau"),
        ({"loss_type": ["aot"], "use_weighting": True}, "use_weighting"),
        ({"beta": float("inf")}, "beta"),
        ({"strict_data": ["empty"]}, "strict_data"),
    ],
)
def test_invalid_options_fail_at_construction(tmp_path, overrides, message):
    with pytest.raises(InSPOConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        InSPOConfig(**config_kwargs(tmp_path, **overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"alternative_separator": ""}, "alternative_separator"),
        ({"rdpo_alpha": 0.1, "loss_type": ["ipo"]}, "`rdpo_alpha=0.1` has no effect"),
        ({"label_smoothing": 0.1}, "`label_smoothing=0.1` has no effect"),
        ({"simpo_gamma": 1.0}, "`simpo_gamma=1.0` has no effect"),
        ({"discopop_tau": 0.1}, "`discopop_tau=0.1` has no effect"),
        ({"ld_alpha": 0.5, "loss_type": ["sft"]}, "`ld_alpha=0.5` has no effect"),
        ({"f_divergence_type": "js_divergence", "loss_type": ["sft"]}, "`f_divergence_type='js_divergence'`"),
        ({"f_alpha_divergence_coef": 0.3}, "f_alpha_divergence_coef"),
        ({"loss_type": ["simpo"], "reference_conditioning": "prompt_only"}, "use no reference model"),
        ({"loss_type": ["sft"], "sync_ref_model": True}, "use no reference model"),
        ({"loss_type": ["sft"], "precompute_ref_log_probs": True}, "use no reference model"),
        ({"unconditional_metrics": False, "loss_type": ["sigmoid", "sft"]}, "unconditional_metrics=False"),
        ({"loss_type": ["sigmoid", "sigmoid"]}, "more than once"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, -0.5]}, "negative"),
        ({"beta": 0.0}, "beta=0.0"),
        ({"ld_alpha": 1.5}, "ld_alpha=1.5"),
        ({"loss_type": ["robust"], "label_smoothing": 0.6}, "label_smoothing=0.6"),
        ({"strict_data": ["prompt_too_long"], "max_length": None}, "max_length=None"),
        ({"strict_data": ["all", "empty_response"]}, "'all' already includes"),
    ],
)
def test_options_without_effect_warn_instead_of_failing(tmp_path, overrides, message):
    """What trl.DPOTrainer accepts is accepted: an option that has no effect (or a value outside its documented range)
    gets one `InSPOWarning`, not an error."""
    with pytest.warns(InSPOWarning, match=message.replace("[", r"\[").replace("(", r"\(")):
        InSPOConfig(**config_kwargs(tmp_path, **overrides))


def test_vision_dataset_is_refused(tmp_path, model_factory, tokenizer):
    from datasets import Dataset

    data = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c", "images": ["x.png"]}])
    with pytest.raises(ValueError, match="vision datasets"):
        InSPOTrainer(
            model=model_factory(),
            args=InSPOConfig(**config_kwargs(tmp_path)),
            train_dataset=data,
            processing_class=tokenizer,
        )


def test_model_built_from_config_gets_a_frozen_reference_copy(tmp_path, model_factory, tokenizer, preference_dataset):
    model = model_factory()
    trainer = InSPOTrainer(
        model=model,
        args=InSPOConfig(**config_kwargs(tmp_path)),
        train_dataset=preference_dataset,
        processing_class=tokenizer,
    )
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    for (n, a), (_, b) in zip(trainer.model.named_parameters(), trainer.ref_model.named_parameters()):
        assert torch.equal(a, b), n
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_reference_copy_of_a_patched_model_runs_its_own_weights(
    tmp_path, model_factory, tokenizer, preference_dataset
):
    """A model that went through a TRL trainer before carries a patched `forward` whose closure holds that model's
    forward: the frozen reference copy must not inherit it (its plain forward would run the trained policy)."""
    from trl.trainer.utils import add_fused_lm_head

    model = model_factory()
    add_fused_lm_head(model)  # what an earlier SFTTrainer/DPOTrainer run in the same process leaves behind
    args = InSPOConfig(**config_kwargs(tmp_path, max_steps=3, learning_rate=1e-2))
    trainer = InSPOTrainer(model=model, args=args, train_dataset=preference_dataset, processing_class=tokenizer)
    trainer.train()
    ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        ref_logits = trainer.ref_model(input_ids=ids).logits
        policy_logits = trainer.model(input_ids=ids).logits
        fresh_logits = model_factory()(input_ids=ids).logits  # the initial weights, unpatched
    torch.testing.assert_close(ref_logits, fresh_logits)
    assert not torch.allclose(ref_logits, policy_logits)


def test_zero3_partitioned_model_without_a_path_asks_for_a_reference(
    tmp_path, model_factory, tokenizer, preference_dataset
):
    """A model built in memory under DeepSpeed ZeRO-3 holds empty placeholders that `copy.deepcopy` cannot turn into
    a reference model (found by benchmarks/distributed_check.py): a clear error instead of a failure inside
    DeepSpeed."""
    model = model_factory()
    for i, param in enumerate(model.parameters()):
        param.ds_id = i  # what ZeRO-3's partitioning leaves on every parameter
    with pytest.raises(ValueError, match="ZeRO-3.*Pass `ref_model`"):
        InSPOTrainer(
            model=model,
            args=InSPOConfig(**config_kwargs(tmp_path)),
            train_dataset=preference_dataset,
            processing_class=tokenizer,
        )


def test_fsdp_precompute_copies_the_reference_where_dpo_trainer_loads_one(
    tmp_path, model_factory, tokenizer, preference_dataset, monkeypatch
):
    """Under FSDP, TRL loads a reference even with `precompute_ref_log_probs` (the policy is not sharded yet); a model
    without a path must then get its frozen copy, as without precompute."""
    import trl_inspo.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "_fsdp_requested", lambda args: True)
    trainer = InSPOTrainer(
        model=model_factory(),
        args=InSPOConfig(**config_kwargs(tmp_path, precompute_ref_log_probs=True)),
        train_dataset=preference_dataset,
        processing_class=tokenizer,
    )
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    assert "ref_chosen_prompt_only_logps" in trainer.train_dataset.column_names


def test_config_warnings_come_from_the_main_process_only(tmp_path, monkeypatch):
    import warnings

    monkeypatch.setenv("RANK", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InSPOWarning)
        InSPOConfig(**config_kwargs(tmp_path, label_smoothing=0.1))  # no effect with 'sigmoid': warned on rank 0 only


def test_reference_free_loss_on_a_peft_model_keeps_no_ref_adapter(
    tmp_path, model_factory, tokenizer, preference_dataset
):
    """DPOTrainer copies a passed PeftModel's adapter into a frozen "ref" adapter; a reference-free loss never reads
    it, so InSPOTrainer deletes it (and trains the default adapter)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model_factory(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainer = InSPOTrainer(
        model=model,
        args=InSPOConfig(**config_kwargs(tmp_path, loss_type=["simpo"])),
        train_dataset=preference_dataset,
        processing_class=tokenizer,
    )
    assert list(trainer.model.peft_config) == ["default"] and trainer.ref_model is None
    assert not any(".ref." in name for name, _ in trainer.model.named_parameters())
    trainer.train()
