# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Exact token layout and masks of DataCollatorForInSPO on hand-made examples."""

import pytest
import torch

from trl_inspo import DataCollatorForInSPO


P = 0  # pad id


def ex(prompt, chosen, rejected, **extra):
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected, **extra}


def rows_of(batch):
    """Each row as (prompt part, alternative, target) read back through the masks."""
    out = []
    for ids, att, comp, alt in zip(
        batch["input_ids"], batch["attention_mask"], batch["completion_mask"], batch["alternative_mask"]
    ):
        ids = ids[att.bool()].tolist()
        n = len(ids)
        comp, alt = comp[:n].bool(), alt[:n].bool()
        out.append(
            (
                [t for t, c, a in zip(ids, comp, alt) if not c and not a],
                [t for t, a in zip(ids, alt) if a],
                [t for t, c in zip(ids, comp) if c],
            )
        )
    return out


def test_layout_and_padding():
    batch = DataCollatorForInSPO(pad_token_id=P)([ex([1, 2, 3], [10, 11], [20]), ex([4], [12], [21, 22, 23])])
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 20, 10, 11],  # x + y_l + y_w
        [4, 21, 22, 23, 12, P],
        [1, 2, 3, 10, 11, 20],  # x + y_w + y_l
        [4, 12, 21, 22, 23, P],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1] * 5 + [0], [1] * 6, [1] * 5 + [0]]
    assert batch["completion_mask"].tolist() == [
        [0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 1],
        [0, 0, 1, 1, 1, 0],
    ]
    assert batch["alternative_mask"].tolist() == [
        [0, 0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 1, 0, 0, 0, 0],
    ]
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask", "alternative_mask"}
    assert batch["input_ids"].dtype == torch.long


def test_pad_to_multiple_of_and_ref_passthrough():
    batch = DataCollatorForInSPO(pad_token_id=P, pad_to_multiple_of=4)(
        [
            ex([1], [2], [3], ref_chosen_logps=[-1.0, -2.0], ref_rejected_logps=[-3.0, -4.0]),
            ex([1, 1], [2, 2], [3], ref_chosen_logps=[-5.0, -6.0], ref_rejected_logps=[-7.0, -8.0]),
        ]
    )
    assert batch["input_ids"].shape == (4, 8)
    assert batch["input_ids"][1].tolist() == [1, 1, 3, 2, 2, P, P, P]
    assert batch["attention_mask"][:, 5:].sum() == 0
    assert batch["ref_chosen_logps"].tolist() == [[-1.0, -2.0], [-5.0, -6.0]]
    assert batch["ref_rejected_logps"].tolist() == [[-3.0, -4.0], [-7.0, -8.0]]


def test_separator_between_alternative_and_target():
    batch = DataCollatorForInSPO(pad_token_id=P, separator_ids=[90, 91])([ex([1, 2], [10], [20, 21])])
    assert batch["input_ids"].tolist() == [[1, 2, 20, 21, 90, 91, 10], [1, 2, 10, 90, 91, 20, 21]]
    # the separator is neither target nor alternative
    assert rows_of(batch) == [([1, 2, 90, 91], [20, 21], [10]), ([1, 2, 90, 91], [10], [20, 21])]


def test_max_alternative_length():
    batch = DataCollatorForInSPO(pad_token_id=P, max_alternative_length=2)([ex([1], [10, 11, 12], [20, 21, 22, 23])])
    assert rows_of(batch) == [([1], [20, 21], [10, 11, 12]), ([1], [10, 11], [20, 21, 22, 23])]


def test_keep_start_shortens_alternative_first():
    # rows have 2 + 3 + 2 = 7 tokens; max_length 5 leaves 1 alternative token in the first row
    collator = DataCollatorForInSPO(pad_token_id=P, max_length=5)
    batch = collator([ex([1, 2], [10, 11], [20, 21, 22])])
    assert rows_of(batch) == [([1, 2], [20], [10, 11]), ([1, 2], [], [20, 21, 22])]
    assert batch["input_ids"].tolist() == [[1, 2, 20, 10, 11], [1, 2, 20, 21, 22]]


def test_keep_start_then_cuts_target_end_never_empty():
    collator = DataCollatorForInSPO(pad_token_id=P, max_length=4, separator_ids=[9])
    batch = collator([ex([1, 2, 3], [10, 11], [20, 21, 22])])
    # alternative and separator removed, target cut to one token
    assert rows_of(batch) == [([1, 2, 3], [], [10]), ([1, 2, 3], [], [20])]


def test_keep_end_cuts_prompt_start():
    collator = DataCollatorForInSPO(pad_token_id=P, max_length=4, truncation_mode="keep_end")
    batch = collator([ex([1, 2, 3], [10, 11], [20])])
    # row 0: the alternative [20] is dropped, then the prompt loses its first token; row 1 fits once its
    # alternative is gone, but both rows of a pair keep the same prompt
    assert batch["input_ids"].tolist() == [[2, 3, 10, 11], [2, 3, 20, P]]
    assert rows_of(batch) == [([2, 3], [], [10, 11]), ([2, 3], [], [20])]


def test_keep_end_target_longer_than_max_length_keeps_its_start():
    collator = DataCollatorForInSPO(pad_token_id=P, max_length=3, truncation_mode="keep_end")
    batch = collator([ex([1, 2], [10, 11, 12, 13], [20])])
    assert rows_of(batch)[0] == ([], [], [10, 11, 12])


def test_symmetric_truncation_keeps_the_same_tokens_in_both_rows():
    collator = DataCollatorForInSPO(pad_token_id=P, max_length=7, symmetric_truncation=True)
    batch = collator([ex([1, 2], [10, 11, 12, 13, 14, 15], [20, 21]), ex([1], [10, 11, 12, 13], [20, 21, 22, 23])])
    rows = rows_of(batch)
    # pair 0: budget 5, shorter response (2) kept whole, the longer cut to 3
    assert rows[0] == ([1, 2], [20, 21], [10, 11, 12])
    assert rows[2] == ([1, 2], [10, 11, 12], [20, 21])
    # pair 1: budget 6, both longer than 3: 3 each
    assert rows[1] == ([1], [20, 21, 22], [10, 11, 12])
    assert rows[3] == ([1], [10, 11, 12], [20, 21, 22])


def test_symmetric_truncation_keep_end_cuts_prompt_first():
    collator = DataCollatorForInSPO(
        pad_token_id=P, max_length=5, symmetric_truncation=True, truncation_mode="keep_end"
    )
    batch = collator([ex([1, 2, 3], [10, 11], [20])])
    assert rows_of(batch) == [([2, 3], [20], [10, 11]), ([2, 3], [10, 11], [20])]


def test_no_truncation_below_max_length():
    collator = DataCollatorForInSPO(pad_token_id=P, max_length=8)
    batch = collator([ex([1, 2], [10, 11], [20, 21, 22])])
    assert rows_of(batch) == [([1, 2], [20, 21, 22], [10, 11]), ([1, 2], [10, 11], [20, 21, 22])]


def test_empty_response_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="empty chosen or rejected"):
        DataCollatorForInSPO(pad_token_id=P)([ex([1], [], [2])])


def test_layout_key_tracks_what_changes_the_rows():
    a = DataCollatorForInSPO(pad_token_id=P, max_length=8)
    assert a.layout_key() == DataCollatorForInSPO(pad_token_id=P, max_length=8).layout_key()
    assert a.layout_key() != DataCollatorForInSPO(pad_token_id=P, max_length=9).layout_key()
    assert a.layout_key() != DataCollatorForInSPO(pad_token_id=P, max_length=8, separator_ids=[3]).layout_key()
