# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Gradient checkpointing and checkpoint resume, through `transformers.Trainer`'s own machinery."""

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback

from trl_inspo import InSPOConfig, InSPOTrainer

from .conftest import config_kwargs, make_rows


LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
TIMING_KEYS = ("runtime", "per_second")


def losses_and_metrics(log_history):
    return [
        {k: v for k, v in entry.items() if not any(t in k for t in TIMING_KEYS)}
        for entry in log_history
        if "loss" in entry
    ]


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_trains_like_without(tmp_path, tiny_model_dir, use_peft):
    data = Dataset.from_list(make_rows(12, seed=5))
    runs = {}
    for checkpointing in (False, True):
        args = InSPOConfig(
            **config_kwargs(
                tmp_path / str(checkpointing),
                gradient_checkpointing=checkpointing,
                max_steps=3,
                learning_rate=1e-2,
                unconditional_loss_weight=0.5,
            )
        )
        trainer = InSPOTrainer(
            model=tiny_model_dir,
            args=args,
            train_dataset=data,
            peft_config=LoraConfig(**LORA) if use_peft else None,
        )
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        trainer.train()
        base = trainer.model.get_base_model() if use_peft else trainer.model
        assert base.is_gradient_checkpointing == checkpointing  # the Trainer turns it on when training starts
        changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
        assert changed and (not use_peft or all("lora_" in n for n in changed))
        runs[checkpointing] = (losses_and_metrics(trainer.state.log_history), trainer.model)

    # Recomputing activations in the backward pass changes nothing but memory: same losses, metrics and weights.
    (plain_logs, plain_model), (ckpt_logs, ckpt_model) = runs[False], runs[True]
    assert len(ckpt_logs) == 3
    for a, b in zip(ckpt_logs, plain_logs):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    for (name, a), (_, b) in zip(ckpt_model.named_parameters(), plain_model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


class StopAfter(TrainerCallback):
    """Simulates an interruption: stop training (without finishing the schedule) at a given step."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_resume_from_checkpoint_reaches_the_same_weights(tmp_path, tiny_model_dir, use_peft):
    data = Dataset.from_list(make_rows(24, seed=6))  # 6 steps of 4 pairs, shuffled by the Trainer's seeded sampler

    def make_trainer(name, callbacks=None):
        args = InSPOConfig(
            **config_kwargs(
                tmp_path / name,
                max_steps=6,
                save_strategy="steps",
                save_steps=3,
                learning_rate=5e-3,
                lr_scheduler_type="linear",
                warmup_steps=2,
                seed=7,
            )
        )
        return InSPOTrainer(
            model=tiny_model_dir,
            args=args,
            train_dataset=data,
            peft_config=LoraConfig(**LORA) if use_peft else None,
            callbacks=callbacks,
        )

    uninterrupted = make_trainer("uninterrupted")
    uninterrupted.train()

    interrupted = make_trainer("interrupted", callbacks=[StopAfter(3)])
    interrupted.train()
    assert interrupted.state.global_step == 3
    checkpoint = tmp_path / "interrupted" / "out" / "checkpoint-3"
    assert (checkpoint / "optimizer.pt").exists() and (checkpoint / "rng_state.pth").exists()

    resumed = make_trainer("interrupted")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6

    final = dict(uninterrupted.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        torch.testing.assert_close(param, final[name], rtol=0, atol=0, msg=name)  # bit-exact
    # Steps 4-6 saw the same batches, so they logged the same losses and metrics.
    expected = losses_and_metrics(uninterrupted.state.log_history)[3:]
    got = losses_and_metrics(resumed.state.log_history)[-3:]
    assert [e["epoch"] for e in got] == [e["epoch"] for e in expected]
    for a, b in zip(got, expected):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    # A non-trivial run: training moved the weights.
    start = make_trainer("fresh").model
    assert any(not torch.equal(p, final[n]) for n, p in start.named_parameters())
