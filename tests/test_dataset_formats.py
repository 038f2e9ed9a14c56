# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Dataset formats: conversational (chat template, multi-turn prompt) and implicit-prompt (`chosen`/`rejected` only,
like HH-RLHF), as strings and as message lists.

The segment layout is checked on the rendered conversations: each collated row decodes to
`prompt (ending with the generation prompt) + alternative turn + target turn`, where the alternative segment is exactly
the rendered alternative assistant turn, ending with the template's end-of-turn token.
"""

import dataclasses

import pytest
import torch
from datasets import Dataset

from trl_inspo import InSPOConfig, InSPOTrainer

from .conftest import config_kwargs


END_OF_TURN = "<|im_end|>"
GENERATION_PROMPT = "<|im_start|>assistant\n"
# The test's own template: every turn ends with the end-of-turn token (no trailing newline), the generation prompt
# opens an assistant turn. `<|im_start|>`/`<|im_end|>` are special tokens of the tiny tokenizer.
TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A ChatML variant whose turns end with the end-of-turn token and a newline.
TEMPLATE_NEWLINE = TEMPLATE.replace("'<|im_end|>' }}", "'<|im_end|>' + '\n' }}")


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# Multi-turn prompts (with a system turn and an earlier assistant turn), then the two candidate replies.
CONVERSATIONS = [
    (
        [
            {"role": "system", "content": "be good"},
            user("what is two plus two?"),
            assistant("four"),
            user("and three?"),
        ],
        "five",
        "six",
    ),
    ([user("hello"), assistant("hello world"), user("what is the cat on?")], "the cat sat on the mat", "the dog"),
    ([user("please help me with this question")], "sure, what is the question?", "no"),
    ([user("red or blue?"), assistant("maybe"), user("yes or no?")], "yes, thank you", "yes maybe"),
]


def conversational_rows(implicit: bool):
    if implicit:
        return [{"chosen": p + [assistant(c)], "rejected": p + [assistant(r)]} for p, c, r in CONVERSATIONS]
    return [{"prompt": p, "chosen": [assistant(c)], "rejected": [assistant(r)]} for p, c, r in CONVERSATIONS]


# HH-RLHF-style implicit-prompt strings: (question, chosen reply, rejected reply, words both replies start with). With
# no prompt column, the prompt is the common start of chosen and rejected, cut back to a word boundary: replies that
# share their first letters ("four"/"five", "sure"/"sorry") stay whole (TRL's character-level rule would cut them
# inside the word, e.g. "...Assistant: f" + "ive" + "our"), and shared first words ("the") are part of the prompt, as
# in TRL.
HH = [
    ("what is two plus two?", " four", " five", ""),
    ("what is the cat on?", " the cat sat on the mat", " the dog", " the"),
    ("hello", " hello world", " good bad", ""),
    ("please help me with this", " sure", " sorry no", ""),
]


def hh_text(question, reply):
    return f"\n\nHuman: {question}\n\nAssistant:{reply}"


def make_trainer(tmp_path, model_factory, tokenizer, rows, **overrides):
    args = InSPOConfig(**config_kwargs(tmp_path, per_device_train_batch_size=4, max_steps=3, **overrides))
    return InSPOTrainer(
        model=model_factory(seed=0),
        ref_model=model_factory(seed=0),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def decoded_segments(trainer, tokenizer):
    """For every pair: the decoded (prompt, alternative, separator, target) of both collated rows."""
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = dataclasses.replace(trainer.data_collator, prefix_sharing=False)(rows)  # read the two-row layout
    n = len(rows)
    out = []
    for j in range(2 * n):
        ids = batch["input_ids"][j]
        alt = batch["alternative_mask"][j].bool()
        tgt = batch["completion_mask"][j].bool()
        length = int(batch["attention_mask"][j].sum())
        alt_pos, tgt_pos = alt.nonzero().flatten(), tgt.nonzero().flatten()
        prompt_ids = ids[: int(alt_pos[0])]
        separator_ids = ids[int(alt_pos[-1]) + 1 : int(tgt_pos[0])]
        assert int(tgt_pos[-1]) + 1 == length  # the target ends the row
        out.append(
            {
                "prompt": tokenizer.decode(prompt_ids),
                "alternative": tokenizer.decode(ids[alt]),
                "alternative_ids": ids[alt].tolist(),
                "separator": tokenizer.decode(separator_ids),
                "target": tokenizer.decode(ids[tgt]),
                "row": tokenizer.decode(ids[:length]),
            }
        )
    return out[:n], out[n:]


def assert_trains(trainer):
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0
    assert any(not torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters())


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit_prompt", "implicit_prompt"])
@pytest.mark.parametrize("template", [TEMPLATE, TEMPLATE_NEWLINE], ids=["eot", "eot_newline"])
def test_conversational_layout_and_training(tmp_path, model_factory, tokenizer, implicit, template):
    tokenizer.chat_template = template
    trainer = make_trainer(tmp_path, model_factory, tokenizer, conversational_rows(implicit))
    end_of_turn_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    turn_end = END_OF_TURN + ("\n" if template is TEMPLATE_NEWLINE else "")

    chosen_rows, rejected_rows = decoded_segments(trainer, tokenizer)
    for (prompt, chosen, rejected), row_w, row_l in zip(CONVERSATIONS, chosen_rows, rejected_rows):
        rendered_prompt = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        for row, target, alternative in ((row_w, chosen, rejected), (row_l, rejected, chosen)):
            # x: the rendered multi-turn prompt, ending with the generation prompt
            assert row["prompt"] == rendered_prompt and row["prompt"].endswith(GENERATION_PROMPT)
            # the alternative: exactly the rendered alternative assistant turn, closed by the end-of-turn token
            rendered_alternative = tokenizer.apply_chat_template(prompt + [assistant(alternative)], tokenize=False)
            assert rendered_alternative.startswith(rendered_prompt)
            assert row["alternative"] == rendered_alternative[len(rendered_prompt) :]
            assert row["alternative"] == alternative + turn_end
            assert end_of_turn_id in row["alternative_ids"][-2:]
            assert row["alternative_ids"][-1 if template is TEMPLATE else -2] == end_of_turn_id
            # no separator by default; the target is the rendered target turn and ends the row
            assert row["separator"] == ""
            assert row["target"] == target + turn_end
            assert row["row"] == rendered_prompt + alternative + turn_end + target + turn_end
    if template is TEMPLATE:  # training does not depend on the template's whitespace: train once per prompt format
        assert_trains(trainer)


def test_implicit_conversational_prompt_matches_the_explicit_one(tmp_path, model_factory, tokenizer):
    tokenizer.chat_template = TEMPLATE
    explicit = make_trainer(tmp_path / "e", model_factory, tokenizer, conversational_rows(implicit=False))
    implicit = make_trainer(tmp_path / "i", model_factory, tokenizer, conversational_rows(implicit=True))
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert implicit.train_dataset[column] == explicit.train_dataset[column]


def test_conversational_with_separator(tmp_path, model_factory, tokenizer):
    tokenizer.chat_template = TEMPLATE
    trainer = make_trainer(
        tmp_path, model_factory, tokenizer, conversational_rows(implicit=False), alternative_separator="\n\n"
    )
    chosen_rows, _ = decoded_segments(trainer, tokenizer)
    for (_, chosen, rejected), row in zip(CONVERSATIONS, chosen_rows):
        assert row["alternative"] == rejected + END_OF_TURN
        assert row["separator"] == "\n\n"
        assert row["target"] == chosen + END_OF_TURN


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit_prompt", "implicit_prompt"])
def test_standard_strings_hh_style(tmp_path, model_factory, tokenizer, implicit):
    if implicit:
        rows = [{"chosen": hh_text(q, c), "rejected": hh_text(q, r)} for q, c, r, _ in HH]
    else:
        rows = [{"prompt": hh_text(q, ""), "chosen": c, "rejected": r} for q, c, r, _ in HH]
    trainer = make_trainer(tmp_path, model_factory, tokenizer, rows)
    eos = tokenizer.eos_token
    chosen_rows, rejected_rows = decoded_segments(trainer, tokenizer)
    for (question, chosen, rejected, shared), row_w, row_l in zip(HH, chosen_rows, rejected_rows):
        shared = shared if implicit else ""
        chosen, rejected = chosen[len(shared) :], rejected[len(shared) :]
        # The prompt ends at a word boundary; each reply (its part after the prompt) is whole, and ends with the EOS
        # token TRL appends to text responses.
        for row, target, alternative in ((row_w, chosen, rejected), (row_l, rejected, chosen)):
            assert row["prompt"] == tokenizer.bos_token + hh_text(question, shared)
            assert row["alternative"] == alternative + eos
            assert row["alternative_ids"][-1] == tokenizer.eos_token_id
            assert row["target"] == target + eos
    assert_trains(trainer)


@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        ("Q? A: four", "Q? A: five", ("Q? A:", " four", " five")),  # TRL: "Q? A: f" + "our" / "ive"
        ("Q? A: yes", "Q? A: no", ("Q? A:", " yes", " no")),  # diverge at a word start: as TRL
        ("Q?\nsure", "Q?\nsorry", ("Q?\n", "sure", "sorry")),  # a newline stays with the prompt, as in TRL
        ("Q? the cat sat", "Q? the cat", ("Q? the", " cat sat", " cat")),  # one reply extends the other
        ("four", "five", ("f", "our", "ive")),  # no whole shared word: TRL's rule (the data checks judge the row)
    ],
)
def test_implicit_text_prompt_ends_at_a_word_boundary(chosen, rejected, expected):
    from trl_inspo.implicit_prompt import extract_prompt

    result = extract_prompt({"chosen": chosen, "rejected": rejected})
    assert (result["prompt"], result["chosen"], result["rejected"]) == expected
    assert result["prompt"] + result["chosen"] == chosen and result["prompt"] + result["rejected"] == rejected
