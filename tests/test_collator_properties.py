# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Property-based tests (hypothesis) of the collator's invariants on random preference rows, filtered and counted the
way `InSPOTrainer` prepares a dataset:

- no row disappears without being counted: rows in == rows kept + sum of the drop counts, and every dropped row really
  cannot train;
- every kept row has a scored, non-empty target and fits in `max_length`;
- prompt / alternative / separator / target masks are disjoint, cover the row, come in this order, and padding lies
  outside all of them;
- the target is the original response or a prefix of it, the alternative a prefix of the other response, the prompt
  part the prompt or (keep_end) a suffix of it, and each shortening is exactly what the preparation-time counts say.
"""

import string

import numpy as np
import pytest
import torch
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trl_inspo import DataCollatorForInSPO, InSPOConfig, InSPOTrainer
from trl_inspo.collator import RowLayout, classify_rows
from trl_inspo.config import DROP_REASONS, TRUNCATION_REASONS
from trl_inspo.errors import InSPODataError
from trl_inspo.validation import ROW, DataReport, check_tokens, prepare_preference_dataset

from .conftest import config_kwargs


PAD = 0
SEPARATORS = ([], [1], [1, 2])
N = 8  # maximum tokens per segment


@st.composite
def layouts(draw):
    """Collator settings; symmetric truncation (prompt-only reference) excludes `max_alternative_length`, as in
    `InSPOConfig`."""
    symmetric = draw(st.booleans())
    return {
        "max_length": draw(st.one_of(st.none(), st.integers(1, 3 * N + 3))),
        "truncation_mode": draw(st.sampled_from(["keep_start", "keep_end"])),
        "symmetric_truncation": symmetric,
        "max_alternative_length": None if symmetric else draw(st.one_of(st.none(), st.integers(1, N))),
        "separator_ids": draw(st.sampled_from(SEPARATORS)),
    }


@st.composite
def token_rows(draw):
    """Random pairs of token lists (0..N tokens each, empty responses included; small alphabet, so that identical
    responses occur)."""
    tokens = st.lists(st.integers(3, 6), max_size=N)
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        chosen = draw(tokens)
        rejected = draw(st.one_of(st.just(list(chosen)), tokens))
        rows.append({"prompt_ids": draw(tokens), "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


def prepare_rows(rows, collator, name="prop"):
    """The trainer's token-level check (`check_tokens`) over one batch; returns (kept rows, keep mask, report,
    per-pair reason masks)."""
    batch = {
        ROW: list(range(len(rows))),
        "chosen": ["x"] * len(rows),
        "rejected": ["x"] * len(rows),
        **{k: [r[k] for r in rows] for k in ("prompt_ids", "chosen_ids", "rejected_ids")},
    }
    layout = RowLayout.from_collator(collator)
    report = DataReport(name, max_length=layout.max_length, rows=len(rows))
    checked = check_tokens(batch, name=name, layout=layout)
    report.count({**batch, **checked})
    keep = np.array([drop is None for drop in checked["_inspo_drop"]])
    _, reasons = classify_rows(
        [len(r["prompt_ids"]) for r in rows],
        [len(r["chosen_ids"]) for r in rows],
        [len(r["rejected_ids"]) for r in rows],
        layout,
        identical=[r["chosen_ids"] == r["rejected_ids"] for r in rows],
    )
    return [r for r, k in zip(rows, keep) if k], keep, report, reasons


def read_rows(batch, separator_ids):
    """Split every collated row into its segments through the masks, checking the mask invariants on the way."""
    ids, attention = batch["input_ids"], batch["attention_mask"].bool()
    target_mask, alternative_mask = batch["completion_mask"].bool(), batch["alternative_mask"].bool()
    out = []
    for j in range(ids.size(0)):
        length = int(attention[j].sum())
        assert attention[j, :length].all() and not attention[j, length:].any()  # right padding only
        assert (ids[j, length:] == PAD).all()
        target = target_mask[j].nonzero().flatten().tolist()
        alternative = alternative_mask[j].nonzero().flatten().tolist()
        assert target and target == list(range(target[0], length))  # the target ends the row, contiguous
        assert target[-1] >= 1  # at least one target token is scored (position 0 is never predicted)
        t0 = target[0]
        if alternative:
            a0, a1 = alternative[0], alternative[-1] + 1
            assert alternative == list(range(a0, a1))
            separator = list(range(a1, t0))
            assert ids[j, a1:t0].tolist() == list(separator_ids)
        else:
            a0 = a1 = t0
            separator = []
        prompt = list(range(0, a0))
        # disjoint masks that cover exactly the attended positions
        masks = torch.zeros(4, ids.size(1), dtype=torch.bool)
        for k, positions in enumerate((prompt, alternative, separator, target)):
            masks[k, positions] = True
        assert (masks.sum(0) <= 1).all() and torch.equal(masks.any(0), attention[j])
        assert not (target_mask[j] & alternative_mask[j]).any()
        row = ids[j].tolist()
        out.append(
            {
                k: [row[i] for i in v]
                for k, v in zip(
                    ("prompt", "alternative", "separator", "target"), (prompt, alternative, separator, target)
                )
            }
        )
    return out


def check_collated(kept, collator, reasons_kept):
    """Collate the kept pairs in one batch and compare every segment with the original tokens and the counts."""
    if not kept:
        return
    batch = collator(kept)
    rows = read_rows(batch, collator.separator_ids)
    n = len(kept)
    observed = {k: [False] * n for k in TRUNCATION_REASONS}
    cap = collator.max_alternative_length
    for i, ex in enumerate(kept):
        for j, (target, alternative) in (
            (i, (ex["chosen_ids"], ex["rejected_ids"])),
            (n + i, (ex["rejected_ids"], ex["chosen_ids"])),
        ):
            seg = rows[j]
            if collator.max_length is not None:
                assert len(seg["prompt"]) + len(seg["alternative"]) + len(seg["separator"]) + len(seg["target"]) <= (
                    collator.max_length
                )
            assert seg["target"] == target[: len(seg["target"])]
            assert seg["alternative"] == alternative[: len(seg["alternative"])]
            full_alternative = alternative[:cap] if cap else alternative
            observed["target_truncated"][i] |= seg["target"] != target
            observed["alternative_removed"][i] |= not seg["alternative"]
            observed["alternative_truncated"][i] |= 0 < len(seg["alternative"]) < len(full_alternative)
            prompt = ex["prompt_ids"]
            if collator.truncation_mode == "keep_start":
                assert seg["prompt"] == prompt
            else:
                assert seg["prompt"] == prompt[len(prompt) - len(seg["prompt"]) :]
            observed["prompt_truncated"][i] |= seg["prompt"] != prompt
        if collator.symmetric_truncation:  # both rows keep the same tokens of each response
            assert rows[i]["target"] == rows[n + i]["alternative"] and rows[n + i]["target"] == rows[i]["alternative"]
    for reason in TRUNCATION_REASONS:
        assert observed[reason] == reasons_kept[reason].tolist(), reason


@settings(max_examples=200, deadline=None)
@given(rows=token_rows(), layout=layouts())
def test_kept_rows_satisfy_the_collator_invariants_and_drops_are_counted(rows, layout):
    collator = DataCollatorForInSPO(pad_token_id=PAD, **layout)
    kept, keep, tally, reasons = prepare_rows(rows, collator)
    # no row disappears without being counted; each dropped row under exactly one reason
    assert len(kept) + sum(tally.dropped.values()) == len(rows)
    assert sum(reasons[r].astype(int) for r in DROP_REASONS).tolist() == (~keep).astype(int).tolist()
    for reason in DROP_REASONS + TRUNCATION_REASONS:
        assert {**tally.dropped, **tally.truncated}[reason] == int(reasons[reason].sum())
    # every dropped row really cannot train
    for row, is_kept, too_long in zip(rows, keep, reasons["prompt_too_long"]):
        if is_kept:
            continue
        if not row["chosen_ids"] or not row["rejected_ids"]:
            assert reasons["empty_response"][rows.index(row)]
        elif row["chosen_ids"] == row["rejected_ids"]:
            assert reasons["identical_responses"][rows.index(row)]
        else:
            assert too_long
            batch = collator([row])
            lengths = batch["attention_mask"].sum(1)
            scored = batch["completion_mask"][:, 1:].sum(1)
            assert (lengths > collator.max_length).any() or (scored == 0).any()
    check_collated(kept, collator, {k: v[keep] for k, v in reasons.items()})


@settings(max_examples=100, deadline=None)
@given(rows=token_rows(), max_length=st.integers(1, 2 * N + 2))
def test_max_length_edges_keep_exactly_the_rows_that_fit(rows, max_length):
    """Per-row keep_start: a pair is kept iff it is non-empty, not identical and `len(prompt_ids) < max_length` (the
    rule TRL applies silently), and a row holds at least 2 tokens (the first token is never scored); symmetric
    truncation needs `len(prompt_ids) + 2 <= max_length` (one token of each response)."""
    for symmetric, room in ((False, 1), (True, 2)):
        collator = DataCollatorForInSPO(pad_token_id=PAD, max_length=max_length, symmetric_truncation=symmetric)
        kept, _, tally, _ = prepare_rows(rows, collator)
        expected = [
            r
            for r in rows
            if r["chosen_ids"]
            and r["rejected_ids"]
            and r["chosen_ids"] != r["rejected_ids"]
            and len(r["prompt_ids"]) + room <= max_length
            and max_length >= 2
        ]
        assert kept == expected
        assert len(kept) + sum(tally.dropped.values()) == len(rows)


# ------------------------------------------------------------------------------------------ real tokenizer
@pytest.fixture(scope="module")
def text_trainer(tmp_path_factory, tokenizer_factory):
    from trl_inspo.tiny import build_model

    tok = tokenizer_factory()
    return InSPOTrainer(
        model=build_model(tok, hidden_size=16, num_layers=1),
        args=InSPOConfig(**config_kwargs(tmp_path_factory.mktemp("props"), loss_type=["simpo"])),
        train_dataset=Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}]),
        processing_class=tok,
    )


texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(string.ascii_lowercase[:6] + "  \n\t")),
        st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=("Cs",)),
        st.sampled_from(["é", "ß", "中", "文", "😀", "\u00a0", "\u3000", "\u200b"]),
    ),
    max_size=12,
)


@st.composite
def text_rows(draw):
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        chosen = draw(texts)
        rows.append({"prompt": draw(texts), "chosen": chosen, "rejected": draw(st.one_of(st.just(chosen), texts))})
    return rows


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=text_rows(), layout=layouts())
def test_unicode_text_through_the_tokenizer(text_trainer, rows, layout):
    """Unicode rows prepared by the trainer (TRL's EOS and tokenization included) with a random layout: empty and
    identical responses are dropped and counted, the rest collates with every invariant."""
    trainer = text_trainer
    tok = trainer.processing_class
    collator = DataCollatorForInSPO(pad_token_id=tok.pad_token_id, **layout)
    base_prepare = super(InSPOTrainer, trainer)._prepare_dataset
    layout = RowLayout.from_collator(collator)
    data = Dataset.from_list(rows)
    try:
        out, report = prepare_preference_dataset(base_prepare, data, tok, trainer.args, "unicode", layout)
    except InSPODataError as error:  # only when every row is dropped
        assert str(error).startswith(f"All {len(rows)} rows of the unicode dataset were dropped")
        out, report = data.select([]), error.report
    dropped, truncated = report.dropped, report.truncated
    assert len(out) + sum(dropped.values()) == len(rows)
    empty = [not r["chosen"].strip() or not r["rejected"].strip() for r in rows]
    identical = [not e and r["chosen"] == r["rejected"] for r, e in zip(rows, empty)]
    assert dropped["empty_response"] == sum(empty)
    assert dropped["identical_responses"] == sum(identical)
    survivors = [r for r, e, i in zip(rows, empty, identical) if not e and not i]
    assert len(out) + dropped["prompt_too_long"] == len(survivors)
    kept = [{k: ex[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for ex in out]
    for ex in kept:  # responses end with the EOS token TRL appends
        assert ex["chosen_ids"][-1] == tok.eos_token_id and ex["rejected_ids"][-1] == tok.eos_token_id
    # the kept rows are the survivors' texts, recovered exactly (byte-level BPE is lossless)
    decoded = [tok.decode(ex["prompt_ids"] + ex["chosen_ids"], skip_special_tokens=True) for ex in kept]
    assert set(decoded) <= {r["prompt"] + r["chosen"] for r in survivors}
    if kept:
        _, _, tally, reasons = prepare_rows(kept, collator, name="again")
        assert sum(tally.dropped.values()) == 0  # preparing twice drops nothing more
        assert tally.truncated == truncated
        check_collated(kept, collator, reasons)
