# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""`unconditional_metrics=False`: the LM head scores only the target segments, the loss and the conditional metrics
are unchanged, the unconditional metrics are not logged, and combinations that need the skipped values are refused."""

import pytest
import torch

from trl_inspo import InSPOConfig, InSPOTrainer, InSPOWarning

from .conftest import config_kwargs
from .test_logps_and_losses import PAIRS


def _trainer(tmp_path, model_factory, tokenizer, dataset, unconditional_metrics, prefix_sharing=False, **kw):
    args = InSPOConfig(
        **config_kwargs(
            tmp_path / f"{unconditional_metrics}-{prefix_sharing}",
            unconditional_metrics=unconditional_metrics,
            prefix_sharing=prefix_sharing,
            **kw,
        )
    )
    return InSPOTrainer(
        model=model_factory(seed=0),
        ref_model=None if kw.get("loss_type") == ["simpo"] else model_factory(seed=1),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )


def _loss_and_metrics(trainer):
    trainer._metrics["train"].clear()
    batch = trainer.data_collator([dict(e) for e in PAIRS])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    return loss.item(), {k: v[-1] for k, v in trainer._metrics["train"].items()}, batch


CASES = [("sigmoid", "conditional"), ("sigmoid", "prompt_only"), ("ipo", "conditional"), ("ipo", "prompt_only"),
         ("simpo", None)]  # fmt: skip


@pytest.mark.parametrize("prefix_sharing", [False, True])
@pytest.mark.parametrize(("loss_type", "conditioning"), CASES)
def test_same_loss_fewer_scored_positions(
    tmp_path, model_factory, tokenizer, preference_dataset, prefix_sharing, conditioning, loss_type
):
    kw = dict(loss_type=[loss_type], beta=0.5)
    if conditioning:
        kw["reference_conditioning"] = conditioning
    full = _trainer(tmp_path, model_factory, tokenizer, preference_dataset, True, prefix_sharing, **kw)
    lean = _trainer(tmp_path, model_factory, tokenizer, preference_dataset, False, prefix_sharing, **kw)
    loss_full, metrics_full, batch = _loss_and_metrics(full)
    loss_lean, metrics_lean, _ = _loss_and_metrics(lean)
    assert loss_lean == pytest.approx(loss_full, abs=1e-6)
    for key, value in metrics_full.items():
        if "_unconditional" in key:
            assert key not in metrics_lean
        elif key.startswith(("rewards", "logps")):
            assert metrics_lean[key] == pytest.approx(value, abs=1e-6), key
    assert "rewards/accuracies" in metrics_lean

    # The policy forward labels the target segments only: half the scored positions of the default
    if prefix_sharing:
        scored_full = (full._forward_kwargs(full.model, batch)["shift_labels"] != -100).sum()
        scored_lean = (lean._forward_kwargs(lean.model, batch, score_alternatives=False)["shift_labels"] != -100).sum()
        targets = ((batch["logp_kinds"] == 1) | (batch["logp_kinds"] == 2)).sum()
    else:
        scored_full = (full._forward_kwargs(full.model, batch)["labels"] != -100).sum()
        scored_lean = (lean._forward_kwargs(lean.model, batch, score_alternatives=False)["labels"] != -100).sum()
        targets = batch["completion_mask"].sum()
    assert scored_lean == targets
    assert scored_full == 2 * targets  # each response is once the target and once the alternative


def test_reference_forward_keeps_prompt_only_values_when_needed(
    tmp_path, model_factory, tokenizer, preference_dataset
):
    trainer = _trainer(
        tmp_path, model_factory, tokenizer, preference_dataset, False, reference_conditioning="prompt_only"
    )
    batch = trainer.data_collator([dict(e) for e in PAIRS])
    _, prompt_only = trainer._reference_values(batch)
    full = trainer._ref_logps(trainer.ref_model, batch, score_alternatives=True)
    torch.testing.assert_close(prompt_only.chosen, full.chosen_unconditional)
    torch.testing.assert_close(prompt_only.rejected, full.rejected_unconditional)
    ref_u_w = prompt_only.chosen
    assert (ref_u_w < 0).all()  # really scored, not the zeros of a skipped segment


def test_training_runs_and_logs_no_unconditional_metrics(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = _trainer(tmp_path, model_factory, tokenizer, preference_dataset, False, max_steps=3, logging_steps=1)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all("rewards/margins" in h and "rewards_unconditional/margins" not in h for h in logged)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (dict(unconditional_loss_weight=0.5), "unconditional_loss_weight=0.5"),
        (dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0]), "loss_type ['sft']"),
        (dict(loss_type=["sft", "orpo"], loss_weights=[1.0, 0.1]), "loss_type ['sft']"),
    ],
)
def test_without_effect_when_a_loss_reads_the_unconditional_values(tmp_path, options, needle):
    """A loss that reads `log pi(y | x)` needs the alternative segments scored: `unconditional_metrics=False` then has
    no effect (a warning), and they are scored and logged."""
    with pytest.warns(InSPOWarning) as record:
        args = InSPOConfig(**config_kwargs(tmp_path, unconditional_metrics=False, **options))
    message = " ".join(str(w.message) for w in record)
    assert "`unconditional_metrics=False` has no effect" in message and needle in message
    assert args.scores_alternatives


def test_orpo_alone_reads_no_unconditional_values(tmp_path):
    """ORPO's odds-ratio term reads the conditional values only (its NLL is the separate 'sft' loss)."""
    args = InSPOConfig(**config_kwargs(tmp_path, unconditional_metrics=False, loss_type=["orpo"]))
    assert not args.scores_alternatives
