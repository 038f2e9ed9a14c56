# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Bad input and failure handling: one test per failure mode, asserting the message; drop and truncation counts
against independent computations; `strict_data`; the non-finite loss guard."""

import dataclasses
import logging
import math
import re

import pytest
import torch
from datasets import Dataset, IterableDataset
from safetensors.torch import load_file
from transformers import TrainerCallback
from trl import DPOTrainer, TrlParser

from trl_inspo import InSPOConfig, InSPOConfigError, InSPOTrainer, InSPOWarning
from trl_inspo.collator import RowLayout, classify_rows
from trl_inspo.config import DROP_REASONS, TRUNCATION_REASONS
from trl_inspo.errors import InSPODataError, NonFiniteLossError

from .conftest import config_kwargs, make_rows, make_trainer


def trainer_for(tmp_path, model_factory, tokenizer, train, eval_dataset=None, **overrides):
    overrides.setdefault("loss_type", ["simpo"])  # reference-free: no reference copy needed for data checks
    return InSPOTrainer(
        model=model_factory(),
        args=InSPOConfig(**config_kwargs(tmp_path, **overrides)),
        train_dataset=train,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )


def expect(message):
    return re.escape(message)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer_factory):
    """One trainer whose `_prepare_dataset` checks the datasets below (default layout, max_length=1024)."""
    from trl_inspo.tiny import build_model

    tok = tokenizer_factory()
    tmp = tmp_path_factory.mktemp("validation")
    trainer = InSPOTrainer(
        model=build_model(tok, hidden_size=32, num_layers=2),
        args=InSPOConfig(**config_kwargs(tmp, loss_type=["simpo"])),
        train_dataset=Dataset.from_list(make_rows(4)),
        processing_class=tok,
    )
    return trainer


def prepare(trainer, data, name="check"):
    return trainer._prepare_dataset(data, trainer.processing_class, trainer.args, name)


def conv(role, content):
    return [{"role": role, "content": content}]


# ------------------------------------------------------------------------------------------ structural errors
def test_missing_response_column_names_it_and_the_fix(base):
    data = Dataset.from_list([{"prompt": "a", "chosen": "b", "bad": "c"}])
    with pytest.raises(
        InSPODataError,
        match=r"has no 'rejected' column \(columns: \['prompt', 'chosen', 'bad'\]; "
        r"every row, e.g. row 0, lacks it\).*rename_columns",
    ):
        prepare(base, data)


def test_missing_both_columns_and_tokenized_hint(base):
    data = Dataset.from_list([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}])
    with pytest.raises(InSPODataError, match="has no 'chosen' and no 'rejected' column.*already tokenized"):
        prepare(base, data)


def test_non_text_column_type(base):
    data = Dataset.from_list([{"prompt": "a", "chosen": 1, "rejected": 2}])
    with pytest.raises(
        InSPODataError,
        match=expect(
            "Column 'chosen' of the check dataset holds a value that is neither a string nor a list of "
            "messages (row 0: int 1)"
        ),
    ):
        prepare(base, data)


def test_list_of_strings_is_neither_format(base):
    data = Dataset.from_list([{"prompt": "a", "chosen": ["b"], "rejected": ["c"]}])
    with pytest.raises(
        InSPODataError,
        match=expect(
            "Column 'chosen' of the check dataset holds a value that is neither "
            "a string nor a list of messages (row 0: list ['b'])"
        ),
    ):
        prepare(base, data)


def test_missing_value_names_row(base):
    rows = make_rows(6)
    rows[4]["rejected"] = None
    with pytest.raises(
        InSPODataError,
        match=expect(
            "Column 'rejected' of the check dataset holds a value that is "
            "neither a string nor a list of messages (row 4: None"
        ),
    ):
        prepare(base, Dataset.from_list(rows))


def test_mixed_formats_across_columns(base):
    data = Dataset.from_list(
        [{"prompt": "2+2?", "chosen": conv("assistant", "4"), "rejected": conv("assistant", "5")}]
    )
    with pytest.raises(
        InSPODataError,
        match=expect(
            "mixes conversational (lists of messages) and standard (strings) "
            "values ('prompt' is standard, 'chosen' is conversational"
        ),
    ):
        prepare(base, data)


def test_mixed_formats_across_rows_of_a_stream(base):
    rows = make_rows(5)
    rows[3] = {"prompt": conv("user", "hi"), "chosen": conv("assistant", "a"), "rejected": conv("assistant", "b")}

    def gen():
        yield from rows

    data = IterableDataset.from_generator(gen)
    with pytest.raises(
        InSPODataError, match=r"'prompt' is conversational, .* while the first row is standard; row 3\)"
    ):
        list(prepare(base, data))


def test_non_text_value_in_a_stream(base):
    rows = make_rows(3) + [{"prompt": "a", "chosen": 7, "rejected": "b"}]
    data = IterableDataset.from_generator(lambda: iter(rows))
    with pytest.raises(
        InSPODataError,
        match=expect(
            "Column 'chosen' of the check dataset holds a value that is "
            "neither a string nor a list of messages (row 3: int 7)"
        ),
    ):
        list(prepare(base, data))


def test_empty_list_in_a_standard_stream(base):
    rows = make_rows(4)
    rows[2]["chosen"] = []
    data = IterableDataset.from_generator(lambda: iter(rows))
    with pytest.raises(
        InSPODataError,
        match=expect(
            "Column 'chosen' of the check dataset holds a value that is "
            "neither a string nor a list of messages (row 2: list [])"
        ),
    ):
        list(prepare(base, data))


def test_message_content_of_another_type_in_a_stream(base):
    rows = [
        {"prompt": conv("user", "hi"), "chosen": conv("assistant", "a"), "rejected": conv("assistant", "b")},
        {"prompt": conv("user", "hi"), "chosen": conv("assistant", "a"), "rejected": [{"role": "x", "content": 5}]},
    ]
    data = IterableDataset.from_generator(lambda: iter(rows))
    with pytest.raises(
        InSPODataError,
        match=expect(
            "Column 'rejected' of the check dataset holds a value that is neither a string nor a list of messages "
            "(row 1: list [{'role': 'x', 'content': 5}])"
        ),
    ):
        list(prepare(base, data))


def test_vision_train_and_eval_datasets(tmp_path, model_factory, tokenizer, preference_dataset):
    vision = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c", "image": "x.png"}])
    with pytest.raises(
        InSPODataError,
        match=expect("The train dataset has an image column ('image'): InSPOTrainer does not support vision datasets"),
    ):
        trainer_for(tmp_path, model_factory, tokenizer, vision)
    with pytest.raises(InSPODataError, match=expect("The eval dataset has an image column ('image')")):
        trainer_for(tmp_path, model_factory, tokenizer, preference_dataset, eval_dataset=vision)


def test_empty_dataset(tmp_path, model_factory, tokenizer):
    empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    with pytest.raises(InSPODataError, match="The train dataset is empty"):
        trainer_for(tmp_path, model_factory, tokenizer, empty)


def test_prompt_that_cannot_be_extracted(base):
    data = Dataset.from_list(
        [{"chosen": "the cat sat", "rejected": "the cat ran"}, {"chosen": "yes it is", "rejected": "no it is not"}]
    )
    with pytest.raises(
        InSPODataError,
        match=expect("has no 'prompt' column, and at row 1 'chosen' and 'rejected' share no common beginning"),
    ):
        prepare(base, data)
    messages = Dataset.from_list(
        [
            {
                "chosen": conv("user", "q") + conv("assistant", "a"),
                "rejected": conv("user", "r") + conv("assistant", "b"),
            }
        ]
    )
    with pytest.raises(InSPODataError, match="at row 0 'chosen' and 'rejected' share no common beginning"):
        prepare(base, messages)


def test_prompt_extraction_with_empty_response_drops_instead_of_crashing(base):
    # TRL's `extract_prompt` fails on an empty value; the row is dropped and counted instead.
    data = Dataset.from_list(
        [{"chosen": "what is it? yes", "rejected": "what is it? no"}, {"chosen": "", "rejected": "what is it? no"}]
    )
    out = prepare(base, data)
    assert len(out) == 1 and out[0]["prompt"] == "what is it?"
    assert base.inspo_dropped["check"]["empty_response"] == 1


def test_tokenizer_without_pad_or_eos(tmp_path, model_factory, tokenizer, preference_dataset):
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an EOS token, so batches cannot be padded"):
        trainer_for(tmp_path, model_factory, tokenizer, preference_dataset)


def test_standard_data_needs_an_eos_token(tmp_path, model_factory, tokenizer, preference_dataset):
    tokenizer.eos_token = None  # the pad token remains
    with pytest.raises(InSPODataError, match="standard \\(text\\) format and the tokenizer has no EOS token"):
        trainer_for(tmp_path, model_factory, tokenizer, preference_dataset)


def test_pad_token_outside_the_vocabulary(tmp_path, model_factory, tokenizer, preference_dataset):
    with pytest.raises(ValueError, match=expect("The pad token '<nope>' is not in the tokenizer's vocabulary")):
        trainer_for(tmp_path, model_factory, tokenizer, preference_dataset, pad_token="<nope>")


# ------------------------------------------------------------------------------------------ drops and counts
def messy_rows():
    rows = make_rows(10, seed=3)
    rows[1]["chosen"] = ""  # empty
    rows[2]["rejected"] = " \n\t "  # whitespace only
    rows[4]["chosen"] = "</s>"  # only the EOS token TRL would append
    rows[5]["rejected"] = rows[5]["chosen"]  # identical
    rows[7]["chosen"] = ""  # empty *and* identical: counted once, as empty
    rows[7]["rejected"] = ""
    return rows


def test_rows_that_cannot_train_are_dropped_counted_and_logged(base, caplog):
    rows = messy_rows()
    with caplog.at_level(logging.WARNING, logger="trl_inspo.validation"):
        out = prepare(base, Dataset.from_list(rows), name="messy")
    assert base.inspo_dropped["messy"] == {"empty_response": 4, "identical_responses": 1, "prompt_too_long": 0}
    assert base.inspo_truncated["messy"] == dict.fromkeys(TRUNCATION_REASONS, 0)  # max_length=1024: nothing is cut
    kept = [r["prompt"] for i, r in enumerate(rows) if i not in (1, 2, 4, 5, 7)]
    assert out["prompt"] == kept
    assert len(out) + sum(base.inspo_dropped["messy"].values()) == len(rows)
    assert (
        "InSPO, messy dataset: dropped 5 of 10 rows: 4 empty_response (e.g. row 1), 1 identical_responses (e.g. "
        "row 5)" in caplog.text
    )
    assert "Troubleshooting section of the trl-inspo README" in caplog.text


def test_data_warnings_are_logged_by_the_main_process_only(base, caplog, monkeypatch):
    """Every process of a job prepares the data; the summary is logged once per job (global rank 0), while every
    process keeps the counts."""
    monkeypatch.setenv("RANK", "1")
    with caplog.at_level(logging.WARNING, logger="trl_inspo.validation"):
        prepare(base, Dataset.from_list(messy_rows()), name="rank1")
    assert "rank1 dataset" not in caplog.text
    assert base.inspo_dropped["rank1"]["empty_response"] == 4


def test_conversational_empty_and_identical(base):
    rows = [
        {
            "prompt": conv("user", "what is two plus two?"),
            "chosen": conv("assistant", "four"),
            "rejected": conv("assistant", "five"),
        },
        {"prompt": conv("user", "hello"), "chosen": conv("assistant", "  "), "rejected": conv("assistant", "hi")},
        {"prompt": conv("user", "hello"), "chosen": conv("assistant", "hi"), "rejected": conv("assistant", "hi")},
        {"prompt": conv("user", "hello"), "chosen": conv("assistant", "hi"), "rejected": conv("assistant", "")},
    ]
    out = prepare(base, Dataset.from_list(rows), name="chat")
    assert base.inspo_dropped["chat"] == {"empty_response": 2, "identical_responses": 1, "prompt_too_long": 0}
    assert len(out) == 1 and out[0]["chosen"] == conv("assistant", "four")


def test_everything_dropped_is_an_error(base):
    rows = [{"prompt": "a", "chosen": "same", "rejected": "same"}] * 3
    with pytest.raises(
        InSPODataError,
        match=expect(
            "All 3 rows of the check dataset were dropped (dropped 3 of 3 "
            "rows: 3 identical_responses (e.g. row 0)). Most are "
            "'identical_responses'"
        ),
    ):
        prepare(base, Dataset.from_list(rows))


def test_prompt_too_long_counts_exactly_what_dpo_drops_silently(tmp_path, model_factory, tokenizer):
    """Per-row keep_start truncation: InSPO keeps a pair iff both rows keep a target token, i.e. `len(prompt_ids) <
    max_length`, which is TRL's own (silent) rule; here every such row is counted."""
    rows = make_rows(24, seed=5)
    data = Dataset.from_list(rows)
    max_length = 14
    prompt_lengths = [len(tokenizer(r["prompt"])["input_ids"]) for r in rows]
    expected_drops = sum(n >= max_length for n in prompt_lengths)
    assert 0 < expected_drops < len(rows)
    inspo = trainer_for(tmp_path, model_factory, tokenizer, data, max_length=max_length)
    dpo = make_trainer(DPOTrainer, tmp_path, model_factory, tokenizer, data, max_length=max_length)
    assert inspo.inspo_dropped["train"]["prompt_too_long"] == expected_drops
    assert len(inspo.train_dataset) == len(dpo.train_dataset) == len(rows) - expected_drops
    assert inspo.train_dataset["prompt"] == dpo.train_dataset["prompt"]


def test_symmetric_truncation_needs_room_for_both_responses(tmp_path, model_factory, tokenizer):
    """With a prompt-only reference both rows are cut identically and keep >= 1 token of each response, so a pair
    needs `len(prompt_ids) + 2 <= max_length` (TRL's rule would keep `len(prompt_ids) == max_length - 1`)."""
    rows = make_rows(24, seed=5)
    prompt_lengths = [len(tokenizer(r["prompt"])["input_ids"]) for r in rows]
    max_length = sorted(prompt_lengths)[12] + 1  # some prompts are exactly max_length - 1
    assert (max_length - 1) in prompt_lengths
    trainer = InSPOTrainer(
        model=model_factory(),
        ref_model=model_factory(),
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(rows),
        args=InSPOConfig(**config_kwargs(tmp_path, max_length=max_length, reference_conditioning="prompt_only")),
    )
    assert trainer.data_collator.symmetric_truncation
    expected = [r["prompt"] for r, n in zip(rows, prompt_lengths) if n + 2 <= max_length]
    assert trainer.train_dataset["prompt"] == expected
    assert trainer.inspo_dropped["train"]["prompt_too_long"] == len(rows) - len(expected)


def segments_of(batch, row):
    """(prompt part, alternative, target) token lists of one collated row, read back through the masks."""
    ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
    comp = batch["completion_mask"][row][: len(ids)].bool().tolist()
    alt = batch["alternative_mask"][row][: len(ids)].bool().tolist()
    return (
        [t for t, c, a in zip(ids, comp, alt) if not c and not a],
        [t for t, a in zip(ids, alt) if a],
        [t for t, c in zip(ids, comp) if c],
    )


@pytest.mark.parametrize("truncation_mode", ["keep_start", "keep_end"])
def test_truncation_counts_match_what_the_collator_does(tmp_path, model_factory, tokenizer, truncation_mode):
    rows = make_rows(32, seed=7)
    trainer = trainer_for(
        tmp_path,
        model_factory,
        tokenizer,
        Dataset.from_list(rows),
        max_length=22,
        truncation_mode=truncation_mode,
        alternative_separator=" |",
    )
    collator = dataclasses.replace(trainer.data_collator, prefix_sharing=False)  # read the two-row layout
    sep = len(collator.separator_ids)
    counts = dict.fromkeys(TRUNCATION_REASONS, 0)
    for ex in trainer.train_dataset:  # an independent pass: collate each kept pair alone and compare the tokens
        ex = {k: ex[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
        batch = collator([ex])
        flags = dict.fromkeys(TRUNCATION_REASONS, False)
        for row, (target, alternative) in enumerate(
            [(ex["chosen_ids"], ex["rejected_ids"]), (ex["rejected_ids"], ex["chosen_ids"])]
        ):
            prompt_part, alt, tgt = segments_of(batch, row)
            assert len(batch["input_ids"][row]) <= 22 and tgt  # every kept row fits and has a target
            flags["target_truncated"] |= tgt != target
            flags["alternative_removed"] |= not alt
            flags["alternative_truncated"] |= bool(alt) and alt != alternative
            prompt_part = prompt_part[: len(prompt_part) - (sep if alt else 0)]
            flags["prompt_truncated"] |= prompt_part != ex["prompt_ids"]
        for k, v in flags.items():
            counts[k] += v
    assert trainer.inspo_truncated["train"] == counts
    assert counts["target_truncated"] > 0 and counts["alternative_removed"] > 0
    assert (counts["prompt_truncated"] > 0) == (truncation_mode == "keep_end")


def test_classify_rows_drop_reasons_are_exclusive_and_cover_the_drops():
    keep, reasons = classify_rows(
        [3, 9, 2, 5, 0], [2, 1, 0, 4, 1], [2, 3, 1, 4, 1], RowLayout(max_length=10), identical=[1, 0, 1, 0, 0]
    )
    assert keep.tolist() == [False, True, False, True, True]
    assert reasons["empty_response"].tolist() == [False, False, True, False, False]
    assert reasons["identical_responses"].tolist() == [True, False, False, False, False]
    dropped = sum(reasons[r].astype(int) for r in DROP_REASONS)
    assert dropped.tolist() == (~keep).astype(int).tolist()
    # pair 1: prompt 9 leaves one token under max_length=10: no alternative, and the 3-token target loses 2 tokens
    assert reasons["target_truncated"].tolist() == [False, True, False, False, False]
    assert reasons["alternative_removed"].tolist() == [False, True, False, False, False]
    # pair 3: 5 + 4 + 4 > 10: the alternative is shortened to 1 token, the target is whole
    assert reasons["alternative_truncated"].tolist() == [False, False, False, True, False]
    # row 4: empty prompt, so the target starts after the alternative; nothing is cut
    assert not any(reasons[r][4] for r in TRUNCATION_REASONS)


def test_streamed_dataset_counts_and_drops_like_a_map_style_one(base):
    rows = messy_rows()
    expected = prepare(base, Dataset.from_list(rows), name="map")
    streamed = prepare(base, Dataset.from_list(rows).to_iterable_dataset(num_shards=1), name="stream")
    assert base.inspo_dropped["stream"] == dict.fromkeys(DROP_REASONS, 0)  # nothing counted before streaming
    out = list(streamed)
    assert [r["prompt"] for r in out] == expected["prompt"]
    assert [r["chosen_ids"] for r in out] == expected["chosen_ids"]
    assert base.inspo_dropped["stream"] == base.inspo_dropped["map"]
    assert "_inspo_row" not in out[0]


def test_eval_dataset_dict_is_counted_per_split(tmp_path, model_factory, tokenizer, preference_dataset):
    rows = messy_rows()
    trainer = trainer_for(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        eval_dataset={"messy": Dataset.from_list(rows), "clean": preference_dataset},
    )
    assert trainer.inspo_dropped["messy"]["empty_response"] == 4
    assert trainer.inspo_dropped["clean"] == dict.fromkeys(DROP_REASONS, 0)
    assert set(trainer.inspo_dropped) == {"train", "messy", "clean"}
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_messy_loss"])


# ------------------------------------------------------------------------------------------ strict_data
@pytest.mark.parametrize(
    ("reason", "overrides", "message"),
    [
        ("empty_response", {}, "1 row(s) of the train dataset have 'empty_response' (first: row 2)"),
        ("identical_responses", {}, "1 row(s) of the train dataset have 'identical_responses' (first: row 3)"),
        ("prompt_too_long", {"max_length": 12}, "'prompt_too_long' (first: row"),
        ("target_truncated", {"max_length": 24}, "'target_truncated' (first: row"),
        ("alternative_removed", {"max_length": 24}, "'alternative_removed' (first: row"),
        ("alternative_truncated", {"max_length": 24}, "'alternative_truncated' (first: row"),
        ("prompt_truncated", {"max_length": 12, "truncation_mode": "keep_end"}, "'prompt_truncated' (first: row"),
    ],
)
def test_strict_data_turns_a_condition_into_an_error(tmp_path, model_factory, tokenizer, reason, overrides, message):
    rows = make_rows(16, seed=11)
    rows[2]["chosen"] = "  "
    rows[3]["rejected"] = rows[3]["chosen"]
    data = Dataset.from_list(rows)
    # Without strict_data: dropped or counted.
    trainer = trainer_for(tmp_path, model_factory, tokenizer, data, **overrides)
    counts = {**trainer.inspo_dropped["train"], **trainer.inspo_truncated["train"]}
    assert counts[reason] > 0
    with pytest.raises(InSPODataError, match=expect(message)) as info:
        trainer_for(tmp_path, model_factory, tokenizer, data, strict_data=[reason], **overrides)
    assert f"{counts[reason]} row(s)" in str(info.value)
    assert f"`strict_data` names '{reason}', so this is an error; remove it from `strict_data`" in str(info.value)
    with pytest.raises(InSPODataError, match="so this is an error"):  # 'all' includes it (the first found is reported)
        trainer_for(tmp_path, model_factory, tokenizer, data, strict_data=["all"], **overrides)


def test_strict_data_raises_while_streaming(tmp_path, model_factory, tokenizer):
    rows = make_rows(8)
    rows[5]["chosen"] = ""
    trainer = trainer_for(
        tmp_path, model_factory, tokenizer, Dataset.from_list(rows).to_iterable_dataset(), strict_data=["all"]
    )
    with pytest.raises(
        InSPODataError, match=expect("1 row(s) of the train dataset so far have 'empty_response' (first: row 5)")
    ):
        list(trainer.train_dataset)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strict_data": ["empty"]}, "Unknown `strict_data` name(s) ['empty']"),
        ({"strict_data": [3]}, "`strict_data` must be a list of condition names, got [3]"),
    ],
)
def test_strict_data_config_validation(tmp_path, overrides, message):
    with pytest.raises(InSPOConfigError, match=expect(message)):
        InSPOConfig(**config_kwargs(tmp_path, **overrides))


@pytest.mark.parametrize(
    ("overrides", "message", "normalized"),
    [
        ({"strict_data": ["empty_response", "empty_response"]}, "lists a name more than once", ["empty_response"]),
        ({"strict_data": ["all", "empty_response"]}, "'all' already includes", ["all"]),
        (
            {"strict_data": ["target_truncated"], "max_length": None},
            "cannot happen with `max_length=None`",
            ["target_truncated"],
        ),
        (
            {"strict_data": ["prompt_truncated"]},
            "cannot happen with `truncation_mode='keep_start'`",
            ["prompt_truncated"],
        ),
    ],
)
def test_strict_data_names_without_effect_warn(tmp_path, overrides, message, normalized):
    with pytest.warns(InSPOWarning, match=expect(message)):
        args = InSPOConfig(**config_kwargs(tmp_path, **overrides))
    assert args.strict_data == normalized


def test_strict_data_accepted_forms(tmp_path):
    assert InSPOConfig(**config_kwargs(tmp_path)).strict_data == []
    assert InSPOConfig(**config_kwargs(tmp_path, strict_data="empty_response, identical_responses")).strict_data == [
        "empty_response",
        "identical_responses",
    ]
    assert InSPOConfig(**config_kwargs(tmp_path, strict_data=["all"], max_length=None)).strict_data == ["all"]
    assert InSPOConfig(**config_kwargs(tmp_path, strict_data=["prompt_truncated"], truncation_mode="keep_end"))
    (args,) = TrlParser((InSPOConfig,)).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--report_to", "none", "--strict_data", "empty_response", "target_truncated"]
    )
    assert args.strict_data == ["empty_response", "target_truncated"]


# ------------------------------------------------------------------------------------------ non-finite loss
class Snapshot(TrainerCallback):
    def __init__(self, at_step):
        self.at_step, self.weights = at_step, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at_step:
            self.weights = {n: p.detach().clone() for n, p in model.named_parameters()}


def test_nan_loss_stops_before_the_optimizer_step(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = trainer_for(tmp_path, model_factory, tokenizer, preference_dataset, max_steps=5, loss_type=["sigmoid"])
    snapshot = Snapshot(at_step=2)
    trainer.add_callback(snapshot)
    compute = trainer._compute_loss

    def nan_at_step_3(model, inputs, return_outputs):
        loss = compute(model, inputs, return_outputs)
        return loss * float("nan") if trainer.state.global_step == 2 else loss

    trainer._compute_loss = nan_at_step_3
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    message = str(info.value)
    assert "The training loss is nan at step 3 (optimizer steps completed: 2" in message
    assert "learning_rate=0.001" in message and "compute dtype is fp32" in message
    assert "The weights are still finite" in message
    assert trainer.state.global_step == 2
    for name, param in trainer.model.named_parameters():  # no optimizer step after step 2
        assert torch.isfinite(param).all(), name
        assert torch.equal(param.detach(), snapshot.weights[name]), name


class Poison(TrainerCallback):
    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 1:
            with torch.no_grad():
                model.get_input_embeddings().weight.fill_(float("inf"))


def test_inf_weights_stop_training_without_a_nan_checkpoint(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = trainer_for(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        max_steps=4,
        save_strategy="steps",
        save_steps=1,
        save_only_model=True,
    )
    trainer.add_callback(Poison())
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    message = str(info.value)
    assert "at step 2 (optimizer steps completed: 1" in message
    assert "The model's weights are already non-finite (e.g. 'model.embed_tokens.weight'" in message
    assert f"Last checkpoint: {tmp_path / 'out' / 'checkpoint-1'}" in message
    checkpoints = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-1"]
    saved = load_file(str(tmp_path / "out" / "checkpoint-1" / "model.safetensors"))
    assert saved and all(torch.isfinite(t).all() for t in saved.values())


def test_non_finite_loss_in_evaluation_does_not_raise(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = trainer_for(tmp_path, model_factory, tokenizer, preference_dataset, eval_dataset=preference_dataset)
    compute = trainer._compute_loss
    trainer._compute_loss = lambda *a: compute(*a) * float("nan")
    assert math.isnan(trainer.evaluate()["eval_loss"])
