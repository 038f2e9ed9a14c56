# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""`precompute_ref_log_probs=True`: reference values computed once before training, cached like TRL caches its own.

InSPOTrainer stores the conditional reference values in TRL's `ref_chosen_logps` / `ref_rejected_logps` columns and the
prompt-only ones, from the same forward, in `ref_chosen_prompt_only_logps` / `ref_rejected_prompt_only_logps`, so one
precompute serves both `reference_conditioning` values, the unconditional loss term and the unconditional metrics.
"""

import json
import math

import pytest
import torch
from datasets import Dataset, load_dataset

from trl_inspo import InSPOConfig, InSPOTrainer
from trl_inspo.collator import PROMPT_ONLY_REF_COLUMNS, REF_COLUMNS

from .conftest import config_kwargs, make_rows
from .helpers import pair_logps


# Keys of the log history that depend on wall-clock time, not on the computation.
TIMING_KEYS = ("runtime", "per_second")


def comparable(log_history):
    return [{k: v for k, v in entry.items() if not any(t in k for t in TIMING_KEYS)} for entry in log_history]


def assert_same_history(got, expected):
    got, expected = comparable(got), comparable(expected)
    assert len(got) == len(expected) and len(got) > 0
    for step, (a, b) in enumerate(zip(got, expected)):
        assert a.keys() == b.keys(), step
        for key in a:
            # Same data, same batches, same reference values; only the reference forward's batch composition (and
            # hence float summation order) differs between precompute and live, hence the float32-level tolerance.
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (step, key)


@pytest.mark.parametrize("reference_conditioning", ["conditional", "prompt_only"])
@pytest.mark.parametrize("reference", ["initial_policy", "other_model"])
def test_precomputed_equals_live_reference(tmp_path, model_factory, tokenizer, reference_conditioning, reference):
    train = Dataset.from_list(make_rows(16, seed=1))
    evaluation = Dataset.from_list(make_rows(8, seed=2))
    overrides = dict(
        reference_conditioning=reference_conditioning,
        unconditional_loss_weight=0.5,  # also reads the prompt-only values
        max_steps=3,
        eval_strategy="steps",
        eval_steps=1,
        learning_rate=5e-3,
    )
    histories = {}
    for precompute in (False, True):
        args = InSPOConfig(
            **config_kwargs(tmp_path / str(precompute), precompute_ref_log_probs=precompute, **overrides)
        )
        if reference == "initial_policy":
            # Precompute with no `ref_model`: the policy before training is the reference, and none is kept.
            ref_model = None if precompute else model_factory(seed=0)
        else:
            ref_model = model_factory(seed=1)
        trainer = InSPOTrainer(
            model=model_factory(seed=0),
            ref_model=ref_model,
            args=args,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
        )
        if precompute:
            assert trainer.precompute_ref_logps
            for split in (trainer.train_dataset, trainer.eval_dataset):
                row = split[0]
                assert all(isinstance(row[k], float) for k in REF_COLUMNS + PROMPT_ONLY_REF_COLUMNS)
            if reference == "initial_policy":
                assert trainer.ref_model is None  # the reference model is not kept in memory
        trainer.train()
        histories[precompute] = trainer.state.log_history

    assert any("eval_loss" in entry for entry in histories[True])
    assert any("eval_rewards_unconditional/margins" in entry for entry in histories[True])
    assert_same_history(histories[True], histories[False])
    # Not a trivial match: the policy moved away from its reference during training.
    margins = [e["rewards/margins"] for e in histories[True] if "rewards/margins" in e]
    assert any(abs(m) > 1e-4 for m in margins[1:])


def _expected_ref_values(ref_model, row, separator=()):
    return pair_logps(ref_model, row["prompt_ids"], row["chosen_ids"], row["rejected_ids"], separator=separator)


def test_precomputed_values_are_the_reference_log_probs(tmp_path, model_factory, tokenizer):
    train = Dataset.from_list(make_rows(6, seed=3))
    args = InSPOConfig(**config_kwargs(tmp_path, precompute_ref_log_probs=True, precompute_ref_batch_size=4))
    reference = model_factory(seed=1)
    trainer = InSPOTrainer(
        model=model_factory(seed=0), ref_model=reference, args=args, train_dataset=train, processing_class=tokenizer
    )
    for row in trainer.train_dataset:
        expected = _expected_ref_values(reference, row)
        got = [row[k] for k in REF_COLUMNS + PROMPT_ONLY_REF_COLUMNS]
        assert got == pytest.approx([expected[k] for k in ("c_w", "c_l", "u_w", "u_l")], abs=1e-4)


@pytest.fixture
def disk_dataset(tmp_path):
    """A dataset backed by cache files, so that `datasets` (and TRL's precompute) cache map results on disk and reuse
    them across trainers, as in real runs."""
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in make_rows(8, seed=4)))
    return load_dataset("json", data_files=str(path), cache_dir=str(tmp_path / "hf-cache"), split="train")


def _ref_cache_file(trainer):
    return trainer.reference_cache_files["train"]


def test_layout_changes_do_not_reuse_a_stale_cache(tmp_path, model_factory, tokenizer, disk_dataset):
    def precompute(name, **overrides):
        # `max_length=None`: TRL's length filter hashes the whole config into the tokenized dataset's fingerprint,
        # which would give every config its own cache and hide a stale one; without it, only the data, the reference
        # model and InSPO's layout key decide whether the cache is reused.
        overrides.setdefault("max_length", None)
        args = InSPOConfig(**config_kwargs(tmp_path / name, precompute_ref_log_probs=True, **overrides))
        return InSPOTrainer(
            model=model_factory(seed=0),
            ref_model=model_factory(seed=1),
            args=args,
            train_dataset=disk_dataset,
            processing_class=tokenizer,
        )

    reference = model_factory(seed=1)
    base = precompute("base")
    again = precompute("again")
    # Same data, model and layout: TRL's cache is reused (same cache file, same values), even with another output_dir.
    assert _ref_cache_file(again) == _ref_cache_file(base)
    assert again.train_dataset["ref_chosen_logps"] == base.train_dataset["ref_chosen_logps"]

    separated = precompute("separator", alternative_separator="\n")
    assert _ref_cache_file(separated) != _ref_cache_file(base)
    separator_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    for row in separated.train_dataset:
        expected = _expected_ref_values(reference, row, separator=separator_ids)
        assert row["ref_chosen_logps"] == pytest.approx(expected["c_w"], abs=1e-4)
        assert row["ref_rejected_logps"] == pytest.approx(expected["c_l"], abs=1e-4)

    # A shorter max_length truncates rows: the cached values must be those of the truncated rows.
    lengths = [len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in base.train_dataset]
    max_length = sorted(lengths)[len(lengths) // 2]
    truncated = precompute("truncated", max_length=max_length)
    assert _ref_cache_file(truncated) != _ref_cache_file(base)
    rows = [truncated.train_dataset[i] for i in range(len(truncated.train_dataset))]
    live_chosen, live_rejected = truncated.compute_ref_log_probs(truncated.ref_model, truncated.data_collator(rows))
    got_chosen = torch.tensor([r["ref_chosen_logps"] for r in rows])
    got_rejected = torch.tensor([r["ref_rejected_logps"] for r in rows])
    torch.testing.assert_close(got_chosen, live_chosen, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_rejected, live_rejected, rtol=1e-5, atol=1e-5)
    base_chosen = torch.tensor(base.train_dataset["ref_chosen_logps"])
    assert not torch.allclose(got_chosen, base_chosen)  # some rows were truncated

    capped = precompute("max_alternative_length", max_alternative_length=2)
    assert _ref_cache_file(capped) != _ref_cache_file(base)

    # LD-DPO's ld_alpha changes how reference tokens are weighted: no reuse either.
    ld = precompute("ld", ld_alpha=0.5)
    assert _ref_cache_file(ld) != _ref_cache_file(base)
    rows = [ld.train_dataset[i] for i in range(len(ld.train_dataset))]
    live_chosen, _ = ld.compute_ref_log_probs(ld.ref_model, ld.data_collator(rows))
    torch.testing.assert_close(torch.tensor([r["ref_chosen_logps"] for r in rows]), live_chosen, rtol=1e-5, atol=1e-5)


def test_reference_free_losses_precompute_nothing(tmp_path, model_factory, tokenizer):
    args = InSPOConfig(**config_kwargs(tmp_path, precompute_ref_log_probs=True, loss_type=["simpo"]))
    trainer = InSPOTrainer(
        model=model_factory(), args=args, train_dataset=Dataset.from_list(make_rows(8)), processing_class=tokenizer
    )
    assert trainer.ref_model is None
    assert "ref_chosen_logps" not in trainer.train_dataset.column_names
    trainer.train()
    assert all(math.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def test_cache_key_tells_checkpoints_apart_when_trl_hashes_placeholders(
    tmp_path, model_factory, tokenizer, monkeypatch
):
    """Under ZeRO-3, TRL's hash of a partitioned model covers only empty placeholders, so two checkpoints of one
    architecture hash alike; InSPO's key also holds the model id, so their caches differ."""
    import trl.trainer.dpo_trainer as dpo_module

    monkeypatch.setattr(dpo_module, "hash_module", lambda module: "same-placeholders")
    data = Dataset.from_list(make_rows(6)).map(lambda r: r)
    files = []
    for name in ("org/checkpoint-a", "org/checkpoint-b"):
        model, reference = model_factory(seed=0), model_factory(seed=1)
        reference.config._name_or_path = name
        args = InSPOConfig(**config_kwargs(tmp_path / name, precompute_ref_log_probs=True, max_length=None))
        trainer = InSPOTrainer(
            model=model, ref_model=reference, args=args, train_dataset=data, processing_class=tokenizer
        )
        files.append(trainer.reference_cache_files["train"])
    assert files[0] != files[1]
