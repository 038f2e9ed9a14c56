# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Shared fixtures: a locally trained tokenizer, tiny Llama models built from a config, small preference data.

Nothing here touches the Hugging Face Hub.
"""

import os

import pytest
import torch
from datasets import Dataset


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("CI", "1")  # TRL skips telemetry on CI

from trl_inspo.tiny import build_model, build_tokenizer  # noqa: E402


WORDS = (
    "the cat dog sat on mat red blue green yes no maybe sure answer question what is two three four five six "
    "seven eight nine ten plus minus equals please help me with this thank you hello world good bad better worse"
).split()


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Deterministic standard-format preference rows of varied lengths."""
    g = torch.Generator().manual_seed(seed)

    def sentence(lo, hi):
        k = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (k,), generator=g))

    rows = []
    for _ in range(n):
        chosen = " " + sentence(1, 6)
        rejected = " " + sentence(1, 6)
        while rejected == chosen:
            rejected = " " + sentence(1, 6)
        rows.append({"prompt": sentence(2, 8) + "?", "chosen": chosen, "rejected": rejected})
    return rows


CORPUS = [" ".join(WORDS)] * 3 + [r["prompt"] + r["chosen"] + r["rejected"] for r in make_rows(200, seed=123)]


@pytest.fixture(scope="session")
def tokenizer_factory():
    def factory():
        return build_tokenizer(CORPUS, vocab_size=200)

    return factory


@pytest.fixture
def tokenizer(tokenizer_factory):
    return tokenizer_factory()


@pytest.fixture
def model_factory(tokenizer_factory):
    """`model_factory(seed=0, **kwargs)` -> a tiny Llama; the same seed gives the same weights."""
    tok = tokenizer_factory()

    def factory(seed: int = 0, **kwargs):
        kwargs.setdefault("hidden_size", 32)
        kwargs.setdefault("num_layers", 2)
        return build_model(tok, seed=seed, **kwargs)

    return factory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_factory):
    """A tiny Llama and its tokenizer saved to disk, for code paths that load models by path."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = tokenizer_factory()
    build_model(tok, seed=0, hidden_size=32, num_layers=2).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def preference_dataset():
    return Dataset.from_list(make_rows(16))


def config_kwargs(tmp_path, **overrides):
    """Arguments for a fast, exact, quiet CPU config."""
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        bf16=False,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        seed=0,
    )
    kwargs.update(overrides)
    return kwargs


def make_trainer(
    trainer_cls, tmp_path, model_factory, tokenizer, dataset, *, ref=True, dtype=torch.float32, **overrides
):
    """An `InSPOTrainer` or a `trl.DPOTrainer` (with its own config class) on the tiny policy of seed 0 and, with
    `ref`,
    a separate reference of seed 1: the same models for both trainers, so that their numbers can be compared."""
    from trl import DPOConfig, DPOTrainer

    from trl_inspo import InSPOConfig

    config_cls = DPOConfig if trainer_cls is DPOTrainer else InSPOConfig
    return trainer_cls(
        model=model_factory(seed=0, dtype=dtype),
        ref_model=model_factory(seed=1, dtype=dtype) if ref else None,
        args=config_cls(**config_kwargs(tmp_path / trainer_cls.__name__, **overrides)),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
