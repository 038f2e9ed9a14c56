# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Exactness of the prefix-shared layout: the four log-probabilities of one batch in either layout, and how far apart
they are."""

from datasets import Dataset

from trl_inspo import InSPOConfig, InSPOTrainer

from .models import build_model


def four_logps(rows: list[dict], tokenizer, shape: dict, device: str, prefix_sharing: bool, attn: str):
    """`(B, 4)` log-probabilities `[c_w, u_w, c_l, u_l]` of `rows` in one batch through `InSPOTrainer` (its reference
    forward, fp32, with a model of `shape` as policy and reference)."""
    import torch

    model = build_model(shape, tokenizer, max_position_embeddings=4096, attn_implementation=attn, device=device)
    config = InSPOConfig(
        output_dir="/tmp/inspo-exactness",
        report_to="none",
        bf16=False,
        max_length=None,
        use_cpu=device == "cpu",
        per_device_train_batch_size=len(rows),
        prefix_sharing=prefix_sharing,
    )
    trainer = InSPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))]))
    values = trainer._ref_logps(trainer.model, batch, score_alternatives=True)  # no_grad inside
    return torch.stack([values[0], values[2], values[1], values[3]], dim=1).float().cpu()


def differences(values, base) -> dict:
    """Largest absolute and relative difference of `values` from `base`, and the mean |log p| for scale."""
    diff = (values - base).abs()
    return {
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / base.abs().clamp(min=1e-6)).max()),
        "mean_abs_logp": float(base.abs().mean()),
    }
