# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Batch layout for InSPO: each preference pair becomes two rows, ``x + y_l + y_w`` and ``x + y_w + y_l``."""

from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import torch
from transformers.data.data_collator import DataCollatorMixin

from .prefix_sharing import build_prefix_shared_batch


# Precomputed reference columns, passed through to the batch: TRL's names hold the conditional values
# (`InSPOTrainer.compute_ref_log_probs`), the other two the prompt-only values from the same reference forward.
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
PROMPT_ONLY_REF_COLUMNS = ("ref_chosen_prompt_only_logps", "ref_rejected_prompt_only_logps")


@dataclass
class SegmentLengths:
    """Kept length of each segment of the `2B` rows, as `(2B,)` integer tensors (row `i < B` is `x + y_l + y_w`,
    row `B + i` is `x + y_w + y_l`)."""

    prompt_start: torch.Tensor  # first kept prompt token (> 0 only under keep_end truncation)
    prompt: torch.Tensor
    alternative: torch.Tensor
    separator: torch.Tensor
    target: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.prompt + self.alternative + self.separator + self.target


def inspo_segment_lengths(
    prompt_lengths: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    *,
    separator_length: int = 0,
    max_length: int | None = None,
    max_alternative_length: int | None = None,
    truncation_mode: str = "keep_start",
    symmetric: bool = False,
) -> SegmentLengths:
    """Decide, with tensor arithmetic only, how many tokens of each segment the `2B` rows keep.

    Rows `[:B]` are `x + y_l + y_w` (target chosen), rows `[B:]` are `x + y_w + y_l` (target rejected).

    Per-row truncation (`symmetric=False`): the alternative is capped at `max_alternative_length`, then, if the row
    exceeds `max_length`, the alternative is shortened first (the separator goes with it when the alternative is
    gone), then the target's end (`keep_start`) or the prompt's start (`keep_end`, cut by the same amount in both rows
    of a pair; then the target's end if the target alone is too long). A target keeps at least one token as long as
    the prompt leaves room for it.

    Symmetric truncation (`symmetric=True`): both rows of a pair keep the same tokens of `x`, `y_w` and `y_l`, so the
    alternative segment of one row scores exactly the target of the other (needed for prompt-only reference values).
    The longer response is shortened first, down to the length of the shorter; then both are shortened evenly.
    """
    if truncation_mode not in ("keep_start", "keep_end"):
        raise ValueError(f"Unsupported truncation_mode {truncation_mode!r}: use 'keep_start' or 'keep_end'.")
    prompt = torch.cat([prompt_lengths, prompt_lengths])
    target = torch.cat([chosen_lengths, rejected_lengths])
    alternative = torch.cat([rejected_lengths, chosen_lengths])
    if max_alternative_length is not None:
        alternative = alternative.clamp(max=max_alternative_length)
    separator = (alternative > 0).long() * separator_length
    prompt_start = torch.zeros_like(prompt)

    if max_length is not None:
        if symmetric:
            prompt, target, alternative, separator, prompt_start = _symmetric_truncation(
                prompt, target, alternative, separator, max_length, truncation_mode
            )
        else:
            # 1. shorten the alternative (and drop the separator with it once it is empty)
            room = (max_length - prompt - target - separator).clamp(min=0)
            alternative = torch.minimum(alternative, room)
            separator = torch.where(alternative > 0, separator, torch.zeros_like(separator))
            excess = (prompt + alternative + separator + target - max_length).clamp(min=0)
            if truncation_mode == "keep_start":
                # 2. shorten the target's end, never below one token
                target = torch.where(excess > 0, (target - excess).clamp(min=1), target)
            else:
                # 2. shorten the prompt's start, by the same amount in both rows of a pair (they share the prompt,
                #    which prefix sharing relies on), then the target's end
                n = prompt.numel() // 2
                cut = torch.minimum(excess, prompt)
                cut = torch.maximum(cut[:n], cut[n:]).repeat(2)
                prompt_start = cut
                prompt = prompt - cut
                target = (target - (excess - cut).clamp(min=0)).clamp(min=1)
    return SegmentLengths(prompt_start, prompt, alternative, separator, target)


def _symmetric_truncation(prompt, target, alternative, separator, max_length, truncation_mode):
    n = prompt.numel() // 2
    p, w, r, s = prompt[:n], target[:n], target[n:], separator[:n]
    prompt_start = torch.zeros_like(p)
    if truncation_mode == "keep_end":
        cut = (p + s + w + r - max_length).clamp(min=0).clamp(max=p)
        prompt_start, p = cut, p - cut
    budget = (max_length - p - s).clamp(min=2)  # at least one token per response
    over = (w + r) > budget
    shorter, longer = torch.minimum(w, r), torch.maximum(w, r)
    keep_short = torch.minimum(shorter, budget // 2)
    keep_long = torch.minimum(longer, budget - keep_short)
    w_is_short = w <= r
    w_new = torch.where(over, torch.where(w_is_short, keep_short, keep_long), w)
    r_new = torch.where(over, torch.where(w_is_short, keep_long, keep_short), r)
    two = lambda a, b: torch.cat([a, b])  # noqa: E731
    return two(p, p), two(w_new, r_new), two(r_new, w_new), two(s, s), two(prompt_start, prompt_start)


@dataclass(frozen=True)
class RowLayout:
    """The collator settings that decide how rows are truncated."""

    max_length: int | None = None
    truncation_mode: str = "keep_start"
    max_alternative_length: int | None = None
    separator_length: int = 0
    symmetric: bool = False

    @classmethod
    def from_collator(cls, collator: "DataCollatorForInSPO") -> "RowLayout":
        return cls(
            max_length=collator.max_length,
            truncation_mode=collator.truncation_mode,
            max_alternative_length=collator.max_alternative_length,
            separator_length=len(collator.separator_ids),
            symmetric=collator.symmetric_truncation,
        )


def classify_rows(
    prompt_lengths, chosen_lengths, rejected_lengths, layout: RowLayout, *, empty=None, identical=None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Decide, with array arithmetic only, which pairs train and which are cut.

    Args:
        prompt_lengths, chosen_lengths, rejected_lengths: token counts of each pair (array-likes of length `B`).
        layout: the collator's truncation settings.
        empty, identical: optional boolean arrays (text-level empty responses, identical token lists).

    Returns:
        `(keep, reasons)`: `keep` is a `(B,)` boolean array; `reasons` maps every drop and truncation reason (see
        `trl_inspo.validation`) to a `(B,)` boolean array. Drop reasons are exclusive (first reason wins) and cover
        exactly `~keep`; truncation reasons are only set on kept rows.
    """
    p, c, r = (
        torch.as_tensor(np.asarray(x, dtype=np.int64)) for x in (prompt_lengths, chosen_lengths, rejected_lengths)
    )
    n = p.numel()
    is_empty = (c == 0) | (r == 0)
    if empty is not None:
        is_empty |= torch.as_tensor(np.asarray(empty, dtype=bool))
    is_identical = torch.zeros(n, dtype=torch.bool)
    if identical is not None:
        is_identical = torch.as_tensor(np.asarray(identical, dtype=bool)) & ~is_empty
    # Segment lengths of the 2B rows, computed on at least one token per response so that empty rows (dropped above)
    # do not disturb the arithmetic.
    seg = inspo_segment_lengths(
        p,
        c.clamp(min=1),
        r.clamp(min=1),
        separator_length=layout.separator_length,
        max_length=layout.max_length,
        max_alternative_length=layout.max_alternative_length,
        truncation_mode=layout.truncation_mode,
        symmetric=layout.symmetric,
    )
    total = seg.total
    # A target token is scored when a token precedes it (position 0 is never predicted).
    fits = seg.target - ((total - seg.target) == 0).long() >= 1
    if layout.max_length is not None:
        fits &= total <= layout.max_length
    too_long = ~(fits[:n] & fits[n:]) & ~is_empty & ~is_identical
    keep = ~(is_empty | is_identical | too_long)

    full_target = torch.cat([c, r]).clamp(min=1)
    full_alternative = torch.cat([r, c]).clamp(min=1)
    if layout.max_alternative_length is not None:
        full_alternative = full_alternative.clamp(max=layout.max_alternative_length)

    def pair(row_flags):
        return (row_flags[:n] | row_flags[n:]) & keep

    reasons = {
        "empty_response": is_empty,
        "identical_responses": is_identical,
        "prompt_too_long": too_long,
        "prompt_truncated": pair(seg.prompt_start > 0),
        "alternative_truncated": pair((seg.alternative > 0) & (seg.alternative < full_alternative)),
        "alternative_removed": pair(seg.alternative == 0),
        "target_truncated": pair(seg.target < full_target),
    }
    return keep.numpy(), {k: v.numpy() for k, v in reasons.items()}


TREE_TOKEN_SHARE = 0.75  # `prefix_sharing="auto"`: tree rows when they hold at most this share of two-row tokens


def use_tree_rows(seg: SegmentLengths, pad_to_multiple_of: int | None = None) -> bool:
    """`prefix_sharing="auto"`'s rule for one batch: prefix-shared rows when the `B` tree rows hold at most 3/4 of the
    tokens of the `2B` two-row rows, padding included. Unpadded, that is a prompt at least as long as the two
    responses together: the tree row saves the prompt once, and pays for a dense 4D mask over a row about twice as long
    (attention grows with the square of the row length), which the measurements in docs/benchmarks_performance.md put
    at about this break-even point. Both layouts give the same log-probabilities."""
    n = seg.prompt.numel() // 2

    def padded(length):
        return -(-length // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else length

    tree = seg.total[:n] + seg.total[n:] - seg.prompt[n:] + (seg.prompt[:n] > 0).long()
    return n * padded(int(tree.max())) <= TREE_TOKEN_SHARE * 2 * n * padded(int(seg.total.max()))


@dataclass
class DataCollatorForInSPO(DataCollatorMixin):
    """
    Data collator for InSPO. From TRL's tokenized preference columns (`prompt_ids`, `chosen_ids`, `rejected_ids`) it
    builds, for a batch of `B` pairs, `2B` right-padded rows:

    - rows `[:B]`: `x + y_l + y_w` (target: the chosen response `y_w`, alternative: the rejected `y_l`);
    - rows `[B:]`: `x + y_w + y_l` (target: `y_l`, alternative: `y_w`).

    It returns `input_ids`, `attention_mask`, `completion_mask` (the target segment), `alternative_mask` (the
    alternative segment; it follows the prompt directly, so its log-probabilities are the unconditional ones) and
    passes `ref_chosen_logps` / `ref_rejected_logps` through when the examples carry them. Truncation rules are those
    of
    [`inspo_segment_lengths`]; no Python loop runs per token.

    Args:
        pad_token_id (`int`): Token used for padding.
        max_length (`int`, *optional*): Maximum row length.
        truncation_mode (`str`, *optional*, defaults to `"keep_start"`): `"keep_start"` or `"keep_end"`.
        max_alternative_length (`int`, *optional*): Keep only the first N tokens of the alternative.
        separator_ids (`list[int]`, *optional*): Tokens placed between the alternative and the target.
        symmetric_truncation (`bool`, *optional*, defaults to `False`): Truncate both rows of a pair identically.
        pad_to_multiple_of (`int`, *optional*): Pad the length to a multiple of this value.
        prefix_sharing (`bool` or `"auto"`, *optional*, defaults to `False`): Pack each pair into one tree row instead
            (see `trl_inspo.prefix_sharing.build_prefix_shared_batch`), with the same segment lengths. `"auto"` packs
            a batch as tree rows when they hold at most 3/4 of the two-row layout's tokens, padding included (see
            [`use_tree_rows`]).

    Example:

    ```python
    >>> from trl_inspo import DataCollatorForInSPO

    >>> collator = DataCollatorForInSPO(pad_token_id=0)
    >>> batch = collator([{"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5]}])
    >>> batch["input_ids"]
    tensor([[1, 2, 5, 3, 4],
            [1, 2, 3, 4, 5]])
    >>> batch["completion_mask"]
    tensor([[0, 0, 0, 1, 1],
            [0, 0, 0, 0, 1]])
    >>> batch["alternative_mask"]
    tensor([[0, 0, 1, 0, 0],
            [0, 0, 1, 1, 0]])
    ```
    """

    pad_token_id: int
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    max_alternative_length: int | None = None
    separator_ids: list[int] = field(default_factory=list)
    symmetric_truncation: bool = False
    pad_to_multiple_of: int | None = None
    prefix_sharing: bool | str = False
    return_tensors: str = "pt"

    def layout_key(self) -> tuple:
        """Everything that changes which tokens a row holds (reference values cached for one layout are only valid
        for the same layout)."""
        return (
            self.max_length,
            self.truncation_mode,
            self.max_alternative_length,
            tuple(self.separator_ids),
            self.symmetric_truncation,
            self.prefix_sharing,
        )

    def segment_lengths(self, examples: list[dict[str, Any]]) -> SegmentLengths:
        lens = torch.tensor(
            [[len(ex["prompt_ids"]), len(ex["chosen_ids"]), len(ex["rejected_ids"])] for ex in examples],
            dtype=torch.long,
        ).reshape(-1, 3)
        if (lens[:, 1:] == 0).any():
            bad = int((lens[:, 1:] == 0).any(dim=1).nonzero()[0])
            raise ValueError(
                f"Example {bad} of the batch has an empty chosen or rejected response: InSPO needs a non-empty target "
                "in both rows of a pair. Remove such rows from the dataset (InSPOTrainer drops them when it prepares "
                "the dataset)."
            )
        return inspo_segment_lengths(
            lens[:, 0],
            lens[:, 1],
            lens[:, 2],
            separator_length=len(self.separator_ids),
            max_length=self.max_length,
            max_alternative_length=self.max_alternative_length,
            truncation_mode=self.truncation_mode,
            symmetric=self.symmetric_truncation,
        )

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(examples)
        seg = self.segment_lengths(examples)
        if self.prefix_sharing is True or (
            self.prefix_sharing == "auto" and use_tree_rows(seg, self.pad_to_multiple_of)
        ):
            output = build_prefix_shared_batch(
                examples, seg, self.separator_ids, self.pad_token_id, self.pad_to_multiple_of
            )
            output.update(self._reference_columns(examples))
            return output
        total = seg.total
        length = int(total.max())
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        # Token ids: one flat list per row (C-level list slicing), written into the padded tensor in one go.
        p0, pl, al, tl = (t.tolist() for t in (seg.prompt_start, seg.prompt, seg.alternative, seg.target))
        sep = list(self.separator_ids)
        rows = []
        for j in range(2 * n):
            ex = examples[j % n]
            target, alternative = (
                (ex["chosen_ids"], ex["rejected_ids"]) if j < n else (ex["rejected_ids"], ex["chosen_ids"])
            )
            rows.append(
                list(ex["prompt_ids"][p0[j] : p0[j] + pl[j]])
                + list(alternative[: al[j]])
                + (sep if al[j] > 0 else [])
                + list(target[: tl[j]])
            )
        input_ids = torch.full((2 * n, length), self.pad_token_id, dtype=torch.long)
        flat = torch.tensor(list(chain.from_iterable(rows)), dtype=torch.long)
        positions = torch.arange(length)
        valid = positions.unsqueeze(0) < total.unsqueeze(1)
        input_ids[valid] = flat

        # Masks from the segment boundaries
        alt_start = seg.prompt.unsqueeze(1)
        alt_end = alt_start + seg.alternative.unsqueeze(1)
        tgt_start = alt_end + seg.separator.unsqueeze(1)
        tgt_end = tgt_start + seg.target.unsqueeze(1)
        pos = positions.unsqueeze(0)
        output = {
            "input_ids": input_ids,
            "attention_mask": valid.long(),
            "completion_mask": ((pos >= tgt_start) & (pos < tgt_end)).long(),
            "alternative_mask": ((pos >= alt_start) & (pos < alt_end)).long(),
        }
        output.update(self._reference_columns(examples))
        return output

    @staticmethod
    def _reference_columns(examples):
        return {
            key: torch.tensor([ex[key] for ex in examples], dtype=torch.float32)
            for key in REF_COLUMNS + PROMPT_ONLY_REF_COLUMNS
            if key in examples[0]
        }
