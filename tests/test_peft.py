# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""LoRA and QLoRA (4-bit NF4, bitsandbytes on CPU) through TRL's `peft_config` path.

The reference is the base model with the adapter disabled: no second model is kept in memory. Each test trains a few
steps, checks that only adapter weights moved, saves the adapter, reloads it on the base model read from disk, merges
it and generates from the prompt alone.
"""

from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM, LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from trl_inspo import InSPOConfig, InSPOTrainer

from .conftest import config_kwargs
from .helpers import pair_logps


LORA = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


@pytest.fixture(scope="module")
def qlora_model_dir(tmp_path_factory, tokenizer_factory):
    """A tiny Llama saved to disk for 4-bit loading. bitsandbytes quantizes in blocks of 64 values and its CPU
    inference kernel repacks weights per block, so the layers are 64 wide (a 32-wide layer holds less than one
    block)."""
    from trl_inspo.tiny import build_model

    path = tmp_path_factory.mktemp("tiny-llama-64")
    tokenizer = tokenizer_factory()
    build_model(tokenizer, seed=0, hidden_size=64, num_layers=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed_parameters(model, before):
    return {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}


def first_batch(trainer, n=4):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def assert_adapter_roundtrip(trainer, adapter_dir, base_dir, prompt_text, **base_kwargs):
    """Save the adapter, reload it on the base model from `base_dir`, merge it and generate from the prompt alone."""
    trainer.save_model(adapter_dir)
    saved = {p.name for p in Path(adapter_dir).iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= saved
    assert "model.safetensors" not in saved  # only the adapter is written, not a copy of the base model

    # The adapter reloads onto a fresh base model with the weights that were trained.
    reloaded = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, **base_kwargs)
    trained = {n: p for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert trained
    for name, param in reloaded.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(param.float(), trained[name].detach().float(), rtol=0, atol=0)

    # The same adapter applied explicitly with PeftModel, merged into the base, gives the same outputs.
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    prompt = tokenizer(prompt_text, return_tensors="pt")
    with torch.no_grad():
        adapted_logits = peft_model(**prompt).logits
        with peft_model.disable_adapter():
            base_logits = peft_model(**prompt).logits
    assert not torch.allclose(adapted_logits, base_logits, atol=1e-5)  # the adapter matters
    adapted_generation = peft_model.generate(**prompt, max_new_tokens=6, do_sample=False)
    merged = peft_model.merge_and_unload().eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**prompt).logits, adapted_logits, rtol=1e-4, atol=1e-4)

    # Inference from the prompt alone: no alternative response anywhere.
    generated = merged.generate(**prompt, max_new_tokens=6, do_sample=False)
    n_prompt = prompt["input_ids"].shape[1]
    assert generated.shape[1] > n_prompt
    assert generated[0, :n_prompt].tolist() == prompt["input_ids"][0].tolist()
    assert generated.tolist() == adapted_generation.tolist()


def test_lora_reference_is_the_base_model(tmp_path, tiny_model_dir, preference_dataset):
    args = InSPOConfig(**config_kwargs(tmp_path, max_steps=3, learning_rate=1e-2))
    trainer = InSPOTrainer(
        model=tiny_model_dir, args=args, train_dataset=preference_dataset, peft_config=LoraConfig(**LORA)
    )
    assert trainer.ref_model is None  # reference = adapter disabled, no second model
    before = snapshot(trainer.model)
    trainer.train()

    changed = changed_parameters(trainer.model, before)
    assert changed and all("lora_" in name for name in changed)
    assert any("lora_A" in name for name in changed) and any("lora_B" in name for name in changed)
    assert all(not p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" not in n)

    # Live reference values under LoRA are those of the untouched base model, for every quantity InSPO reads, while the
    # policy (adapter on) has moved away from them.
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    trainer.model.eval()
    ref = trainer._ref_logps(trainer.model, batch, score_alternatives=True)
    assert torch.equal(torch.stack(trainer.compute_ref_log_probs(trainer.model, batch)), torch.stack(ref[:2]))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for i, row in enumerate(rows):
        expected = pair_logps(base, row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])
        got = {"c_w": ref[0][i], "c_l": ref[1][i], "u_w": ref[2][i], "u_l": ref[3][i]}
        for key, value in expected.items():
            assert float(got[key]) == pytest.approx(value, abs=1e-4), (i, key)
        policy = pair_logps(trainer.model, row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])
        assert abs(policy["c_w"] - expected["c_w"]) > 1e-4

    assert_adapter_roundtrip(trainer, str(tmp_path / "adapter"), tiny_model_dir, "what is two plus two?")


def test_qlora_4bit_nf4(tmp_path, qlora_model_dir, preference_dataset):
    quantization_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.float32,
        bnb_4bit_use_double_quant=True,
    )
    args = InSPOConfig(**config_kwargs(tmp_path, max_steps=3, learning_rate=1e-2))
    trainer = InSPOTrainer(
        model=qlora_model_dir,
        args=args,
        train_dataset=preference_dataset,
        peft_config=LoraConfig(**LORA),
        quantization_config=quantization_config,
    )
    assert trainer.ref_model is None
    assert getattr(trainer.model.get_base_model(), "is_loaded_in_4bit", False)
    q_proj = trainer.model.get_base_model().model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == "Linear4bit"
    assert q_proj.base_layer.weight.quant_type == "nf4"

    before = snapshot(trainer.model)
    trainer.train()
    changed = changed_parameters(trainer.model, before)
    assert changed and all("lora_" in name for name in changed)
    assert any("lora_B" in name for name in changed)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))

    # Reference = the quantized base with the adapter disabled (an independent forward of each hand-built sequence).
    batch = first_batch(trainer)
    trainer.model.eval()
    ref = trainer._ref_logps(trainer.model, batch, score_alternatives=True)
    with trainer.model.disable_adapter():
        rows = [trainer.train_dataset[i] for i in range(4)]
        for i, row in enumerate(rows):
            expected = pair_logps(trainer.model, row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])
            assert float(ref.chosen_conditional[i]) == pytest.approx(expected["c_w"], abs=1e-3)
            assert float(ref.rejected_unconditional[i]) == pytest.approx(expected["u_l"], abs=1e-3)

    # QLoRA adapters are merged into the full-precision base for deployment.
    assert_adapter_roundtrip(
        trainer, str(tmp_path / "adapter"), qlora_model_dir, "what is two plus two?", dtype=torch.float32
    )
