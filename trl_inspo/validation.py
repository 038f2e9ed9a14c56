# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Input checks and row accounting for [`InSPOTrainer`], and the non-finite loss guard.

Preparing a preference dataset has three outcomes for a row:

- **error** ([`InSPODataError`]): the dataset cannot be used as given (a column is missing, a value is neither a string
  nor a list of messages, formats are mixed, images are present, no prompt can be extracted, the tokenizer has no EOS
  token for standard text). The message names the column, an example row and the fix.
- **dropped and counted**: the row cannot train. Each dropped row is counted once, under the first reason that applies,
  in the order of [`DROP_REASONS`]:

  - `"empty_response"`: the chosen or the rejected response is empty. A response is empty when its text is empty or
    whitespace-only once the EOS token TRL appends to standard-format responses is removed (for conversational rows:
    no message of the response has non-whitespace content), or when it tokenizes to no token at all.
  - `"identical_responses"`: chosen and rejected tokenize to the same tokens; the pair has no preference signal.
  - `"prompt_too_long"`: with `max_length`, at least one of the pair's two InSPO rows (`x + y_l + y_w`,
    `x + y_w + y_l`) would keep no scored target token, or would not fit, once truncated by the collator (see
    [`inspo_segment_lengths`]). TRL's `DPOTrainer` drops rows whose prompt alone fills `max_length` silently; here they
    are counted.

- **kept and counted** ([`TRUNCATION_REASONS`]): the row trains, but the collator will cut it to fit `max_length`. A
  pair is counted once per reason when either of its two rows is affected: `"prompt_truncated"` (`keep_end` cuts the
  prompt's start), `"alternative_truncated"` (the conditioned-on response loses its end; a cut down to
  `max_alternative_length` is requested, not counted), `"alternative_removed"` (no token of it fits: that row's target
  is scored given the prompt alone), `"target_truncated"` (only a prefix of the scored response is kept).

`InSPOConfig.strict_data` turns any of these reasons into an [`InSPODataError`].
"""

import copy
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from transformers.trainer_utils import get_last_checkpoint

from .collator import DataCollatorForInSPO, inspo_segment_lengths


logger = logging.getLogger(__name__)

DROP_REASONS = ("empty_response", "identical_responses", "prompt_too_long")
TRUNCATION_REASONS = ("prompt_truncated", "alternative_truncated", "alternative_removed", "target_truncated")
STRICT_DATA_CHOICES = DROP_REASONS + TRUNCATION_REASONS + ("all",)
# Reasons that can only occur with `max_length` set.
MAX_LENGTH_REASONS = frozenset({"prompt_too_long", *TRUNCATION_REASONS})
TEXT_COLUMNS = ("prompt", "chosen", "rejected")
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
VISION_COLUMNS = ("image", "images")
ROW_COLUMN = "_inspo_row"  # original row index, carried through the lazy steps of an IterableDataset
TROUBLESHOOTING = "the Troubleshooting section of the trl-inspo README"
_BATCH_SIZE = 65_536

_REASON_TEXT = {
    "empty_response": (
        "the chosen or the rejected response is empty or whitespace-only, so there is nothing to score",
        "Remove or fix these rows.",
    ),
    "identical_responses": (
        "chosen and rejected are the same tokens, so the pair carries no preference",
        "Remove these duplicate pairs.",
    ),
    "prompt_too_long": (
        "the prompt leaves no room within `max_length={max_length}` for a scored target token in both InSPO rows "
        "(each row holds prompt + alternative + target)",
        "Increase `max_length`, shorten these prompts, or use `truncation_mode='keep_end'` (cuts the prompt's start).",
    ),
    "prompt_truncated": (
        "the prompt loses its start to fit `max_length={max_length}` (`truncation_mode='keep_end'`)",
        "Increase `max_length` or shorten the prompts.",
    ),
    "alternative_truncated": (
        "the alternative response (the one conditioned on) loses its end to fit `max_length={max_length}`, so the "
        "target is conditioned on part of it",
        "Increase `max_length`, or cap the alternative on purpose with `max_alternative_length` (not counted).",
    ),
    "alternative_removed": (
        "no token of the alternative response fits in `max_length={max_length}`, so that row's target is scored "
        "given the prompt alone (a DPO term, not InSPO)",
        "Increase `max_length` or shorten the responses.",
    ),
    "target_truncated": (
        "the scored (target) response loses its end to fit `max_length={max_length}`; only its kept prefix is scored",
        "Increase `max_length` or shorten the responses.",
    ),
}


class InSPODataError(ValueError):
    """A training or evaluation dataset that [`InSPOTrainer`] cannot use as given, or a row condition named in
    `InSPOConfig.strict_data`."""


class NonFiniteLossError(RuntimeError):
    """The training loss is NaN or infinite. Raised before the optimizer step, so the batch does not change the
    weights and no checkpoint is written with them."""


# ---------------------------------------------------------------------------------------------------------- config
def normalize_strict_data(value, args) -> list[str]:
    """Validated `strict_data`: a list of names from [`STRICT_DATA_CHOICES`] (a comma-separated string is split).
    Raises `InSPOConfigError` for unknown names, duplicates, `"all"` next to other names, and names that cannot occur
    with the other options (`max_length=None`, `truncation_mode='keep_start'`)."""
    from .config import InSPOConfigError

    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InSPOConfigError(
            f"`strict_data` must be a list of condition names, got {value!r}. Valid names: "
            f"{list(STRICT_DATA_CHOICES)}."
        )
    value = list(value)
    unknown = [v for v in value if v not in STRICT_DATA_CHOICES]
    if unknown:
        raise InSPOConfigError(
            f"Unknown `strict_data` name(s) {unknown}. Valid names: {list(STRICT_DATA_CHOICES)} ('all' = every "
            "condition that can occur with this configuration)."
        )
    if len(set(value)) != len(value):
        raise InSPOConfigError(f"`strict_data` lists a name twice: {value}. Give each name once.")
    if "all" in value and len(value) > 1:
        raise InSPOConfigError(
            f"`strict_data={value}` combines 'all' with other names; 'all' already includes them. Use "
            "`strict_data=['all']` or list the conditions."
        )
    if args.max_length is None:
        moot = [v for v in value if v in MAX_LENGTH_REASONS]
        if moot:
            raise InSPOConfigError(
                f"`strict_data` names {moot}, which cannot happen with `max_length=None` (nothing is truncated or "
                "dropped for length). Remove them, or set `max_length`."
            )
    if "prompt_truncated" in value and args.truncation_mode == "keep_start":
        raise InSPOConfigError(
            "`strict_data` names 'prompt_truncated', which cannot happen with `truncation_mode='keep_start'`: the "
            "prompt is never cut there (rows whose prompt does not fit are 'prompt_too_long'). Remove it, or use "
            "`truncation_mode='keep_end'`."
        )
    return value


def strict_reasons(args) -> frozenset:
    """The reasons that `args.strict_data` turns into errors (`"all"` expanded)."""
    names = list(getattr(args, "strict_data", None) or [])
    if "all" in names:
        return frozenset(DROP_REASONS + TRUNCATION_REASONS)
    return frozenset(names)


# ---------------------------------------------------------------------------------------------------------- schema
def _kind(arrow_type: pa.DataType) -> str | None:
    """`"standard"` (a string), `"conversational"` (a list of messages with `role` and `content`), or `None`."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "standard"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        item = arrow_type.value_type
        if pa.types.is_struct(item) and {"role", "content"} <= {item.field(i).name for i in range(item.num_fields)}:
            return "conversational"
    return None


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80] + '...' if len(text) > 80 else text}"


def _bad_value_error(name: str, column: str, row: int, value) -> InSPODataError:
    if value is None:
        found = "None (missing value)"
        fix = (
            f"Fill or remove the rows with a missing '{column}' (e.g. "
            f"`dataset.filter(lambda r: r['{column}'] is not None)`)."
        )
    else:
        found = _describe(value)
        fix = (
            f"Each '{column}' must be a string (standard format) or a list of messages "
            "`[{'role': ..., 'content': ...}]` (conversational format); convert the column."
        )
    return InSPODataError(
        f"Column '{column}' of the {name} dataset holds a value that is neither a string nor a list of messages "
        f"(row {row}: {found}). {fix}"
    )


def _mixed_error(name: str, kinds: dict[str, str], row: int, detail: str = "") -> InSPODataError:
    described = ", ".join(f"'{c}' is {k}" for c, k in kinds.items())
    return InSPODataError(
        f"The {name} dataset mixes conversational (lists of messages) and standard (strings) values ({described}"
        f"{detail}; row {row}). Use one format for every row and for all of 'prompt', 'chosen' and 'rejected': e.g. "
        "wrap a string prompt as `[{'role': 'user', 'content': prompt}]` and each response as "
        "`[{'role': 'assistant', 'content': response}]`, or render the messages to text with the chat template."
    )


def vision_error(name: str, column: str) -> InSPODataError:
    return InSPODataError(
        f"The {name} dataset has an image column ('{column}'): InSPOTrainer does not support vision datasets, because "
        "the alternative response cannot be placed inside a vision-language model's processed input. Remove the "
        f"'{column}' column to train on the text alone, or use trl.DPOTrainer for vision data."
    )


def first_example(dataset, name: str) -> dict:
    """The first row, with a clear error for an empty dataset."""
    try:
        return next(iter(dataset))
    except StopIteration:
        raise InSPODataError(
            f"The {name} dataset is empty. Pass a dataset with at least one preference row "
            "('prompt', 'chosen', 'rejected')."
        ) from None


def check_columns(column_names, name: str) -> None:
    """Missing `chosen`/`rejected` columns and image columns."""
    columns = list(column_names)
    for column in VISION_COLUMNS:
        if column in columns:
            raise vision_error(name, column)
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        hint = ""
        if all(c in columns for c in TOKEN_COLUMNS):
            hint = (
                " The dataset is already tokenized; InSPOTrainer, like trl.DPOTrainer, tokenizes the text itself: pass "
                "the text columns instead."
            )
        elif "completion" in columns and "label" in columns:
            hint = " This looks like an unpaired (KTO-style) dataset; InSPO needs paired preferences."
        raise InSPODataError(
            f"The {name} dataset has no {' and no '.join(repr(c) for c in missing)} column (columns: {columns}; every "
            f"row, e.g. row 0, lacks it). InSPO needs 'chosen' and 'rejected' responses, plus a 'prompt' column or a "
            "prompt shared at the start of both. Rename your columns, e.g. "
            f"`dataset.rename_columns({{'good': 'chosen', 'bad': 'rejected'}})`.{hint}"
        )


def check_tokenizer(tokenizer, conversational: bool, name: str) -> None:
    """Standard-format responses get the EOS token appended by TRL: the tokenizer must have one."""
    if not conversational and tokenizer.eos_token is None:
        raise InSPODataError(
            f"The {name} dataset is in standard (text) format and the tokenizer has no EOS token: TRL appends EOS to "
            "every response so that the model learns to stop. Set one before creating the trainer, e.g. "
            "`tokenizer.eos_token = '</s>'` (a token of the vocabulary), or use a conversational dataset with a chat "
            "template."
        )


def arrow_kinds(schema: pa.Schema, columns, name: str) -> dict[str, str]:
    """Format of each text column from the Arrow schema; errors for other types and for mixed formats."""
    kinds = {}
    for column in columns:
        arrow_type = schema.field(column).type
        kind = _kind(arrow_type)
        if kind is None:
            if pa.types.is_null(arrow_type):
                raise _bad_value_error(name, column, 0, None)
            raise InSPODataError(
                f"Column '{column}' of the {name} dataset has type {arrow_type} (row 0 and every other row): it must "
                "hold strings (standard format) or lists of messages `[{'role': ..., 'content': ...}]` "
                "(conversational format). Convert the column."
            )
        kinds[column] = kind
    if len(set(kinds.values())) > 1:
        raise _mixed_error(name, kinds, 0)
    return kinds


def python_kind(value) -> str | None:
    if isinstance(value, str):
        return "standard"
    if isinstance(value, list) and value and isinstance(value[0], dict) and "role" in value[0]:
        return "conversational"
    if isinstance(value, list) and not value:
        return "empty_list"
    return None


def example_kinds(example: dict, columns, name: str, row: int = 0) -> dict[str, str]:
    """Format of each text column from one example (for datasets without known features)."""
    kinds = {}
    for column in columns:
        kind = python_kind(example[column])
        if kind is None:
            raise _bad_value_error(name, column, row, example[column])
        kinds[column] = kind
    known = {k for k in kinds.values() if k != "empty_list"}
    if len(known) > 1:
        raise _mixed_error(name, {c: k for c, k in kinds.items() if k != "empty_list"}, row)
    kind = known.pop() if known else "conversational"
    if kind == "standard":  # an empty list is not an empty string
        for column, column_kind in kinds.items():
            if column_kind == "empty_list":
                raise _bad_value_error(name, column, row, example[column])
    return dict.fromkeys(kinds, kind)


# ---------------------------------------------------------------------------------------------------------- tallies
@dataclass
class RowTally:
    """Counts for one dataset split. `dropped` and `truncated` are the dicts exposed by the trainer as
    `inspo_dropped[name]` and `inspo_truncated[name]` (updated in place, so streamed datasets update them lazily)."""

    name: str
    strict: frozenset
    max_length: int | None
    dropped: dict = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    truncated: dict = field(default_factory=lambda: dict.fromkeys(TRUNCATION_REASONS, 0))
    examples: dict = field(default_factory=dict)
    rows: int = 0
    streaming: bool = False
    live: bool = True  # streamed datasets: False while TRL peeks at the first rows during preparation

    def add(self, reason: str, mask: np.ndarray, rows: np.ndarray) -> None:
        count = int(mask.sum())
        if not count or not self.live:
            return
        target = self.dropped if reason in self.dropped else self.truncated
        target[reason] += count
        first = self.examples.get(reason)
        if first is None:
            self.examples[reason] = int(rows[mask.nonzero()[0][0]])
            if self.streaming:
                action = "dropping it" if reason in DROP_REASONS else "keeping it"
                logger.warning(
                    f"InSPO, streamed {self.name} dataset: row {self.examples[reason]} has '{reason}': "
                    f"{self.describe(reason)}; {action}. Further rows are counted in "
                    f"`trainer.inspo_{'dropped' if reason in DROP_REASONS else 'truncated'}['{self.name}']`. See "
                    f"{TROUBLESHOOTING}."
                )
        if self.streaming:
            self.raise_if_strict()

    def describe(self, reason: str) -> str:
        return _REASON_TEXT[reason][0].format(max_length=self.max_length)

    def raise_if_strict(self) -> None:
        for reason in DROP_REASONS + TRUNCATION_REASONS:
            count = self.dropped.get(reason) or self.truncated.get(reason) or 0
            if reason in self.strict and count:
                description, fix = _REASON_TEXT[reason]
                action = "drop and count" if reason in DROP_REASONS else "count"
                where = "so far " if self.streaming else ""
                raise InSPODataError(
                    f"{count} row(s) of the {self.name} dataset {where}have '{reason}' (first: row "
                    f"{self.examples[reason]}): {description.format(max_length=self.max_length)}. {fix} "
                    f"`strict_data` names '{reason}', so this is an error; remove it from `strict_data` to {action} "
                    "such rows instead."
                )

    def summary(self) -> str:
        def part(counts):
            return ", ".join(f"{n} {r} (e.g. row {self.examples[r]})" for r, n in counts.items() if n)

        total_dropped = sum(self.dropped.values())
        text = []
        if total_dropped:
            text.append(f"dropped {total_dropped} of {self.rows} rows: {part(self.dropped)}")
        if any(self.truncated.values()):
            text.append(
                f"kept rows that the collator cuts to fit max_length={self.max_length}: {part(self.truncated)}"
            )
        return "; ".join(text)

    def finish(self) -> None:
        """After a full pass (map-style datasets): strict errors, the all-dropped error, the warning."""
        self.raise_if_strict()
        if self.rows and sum(self.dropped.values()) == self.rows:
            main = max(self.dropped, key=self.dropped.get)
            raise InSPODataError(
                f"All {self.rows} rows of the {self.name} dataset were dropped ({self.summary()}). Most are "
                f"'{main}': {self.describe(main)}. {_REASON_TEXT[main][1]}"
            )
        summary = self.summary()
        if summary:
            logger.warning(
                f"InSPO, {self.name} dataset: {summary}. Counts are in `trainer.inspo_dropped['{self.name}']` and "
                f"`trainer.inspo_truncated['{self.name}']`; set `strict_data` to make these conditions errors. See "
                f"{TROUBLESHOOTING}."
            )


# ---------------------------------------------------------------------------------------------------------- rows
@dataclass
class RowLayout:
    """The collator settings that decide how rows are truncated."""

    max_length: int | None = None
    truncation_mode: str = "keep_start"
    max_alternative_length: int | None = None
    separator_length: int = 0
    symmetric: bool = False

    @classmethod
    def from_collator(cls, collator: DataCollatorForInSPO) -> "RowLayout":
        return cls(
            max_length=collator.max_length,
            truncation_mode=collator.truncation_mode,
            max_alternative_length=collator.max_alternative_length,
            separator_length=len(collator.separator_ids),
            symmetric=collator.symmetric_truncation,
        )


def classify_rows(
    prompt_lengths,
    chosen_lengths,
    rejected_lengths,
    layout: RowLayout,
    *,
    empty=None,
    identical=None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Decide, with array arithmetic only, which pairs train and which are cut.

    Args:
        prompt_lengths, chosen_lengths, rejected_lengths: token counts of each pair (array-likes of length `B`).
        layout: the collator's truncation settings.
        empty, identical: optional boolean arrays (text-level empty responses, identical token lists).

    Returns:
        `(keep, reasons)`: `keep` is a `(B,)` boolean array; `reasons` maps every name of [`DROP_REASONS`] and
        [`TRUNCATION_REASONS`] to a `(B,)` boolean array. Drop reasons are exclusive (first reason wins) and cover
        exactly `~keep`; truncation reasons are only set on kept rows.
    """
    p = torch.as_tensor(np.asarray(prompt_lengths, dtype=np.int64))
    c = torch.as_tensor(np.asarray(chosen_lengths, dtype=np.int64))
    r = torch.as_tensor(np.asarray(rejected_lengths, dtype=np.int64))
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
    scored_target = seg.target - ((total - seg.target) == 0).long()
    fits = scored_target >= 1
    if layout.max_length is not None:
        fits &= total <= layout.max_length
    pair_fits = fits[:n] & fits[n:]
    too_long = ~pair_fits & ~is_empty & ~is_identical
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


def _array(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _lengths(column) -> np.ndarray:
    return pc.list_value_length(_array(column)).to_numpy(zero_copy_only=False).astype(np.int64)


def identical_lists(a, b) -> np.ndarray:
    """Row-wise equality of two list columns, vectorized (only rows of equal length are compared)."""
    a, b = _array(a), _array(b)
    la, lb = _lengths(a), _lengths(b)
    out = la == lb
    candidates = out.nonzero()[0]
    if len(candidates):
        idx = pa.array(candidates)
        fa = pc.list_flatten(a.take(idx)).to_numpy(zero_copy_only=False)
        fb = pc.list_flatten(b.take(idx)).to_numpy(zero_copy_only=False)
        parents = np.repeat(np.arange(len(candidates)), la[candidates])
        mismatches = np.bincount(parents, weights=(fa != fb), minlength=len(candidates))
        out[candidates] = mismatches == 0
    return out


def empty_text(column, kind: str, eos_token: str | None) -> np.ndarray:
    """Rows whose text is empty or whitespace-only, with the EOS token removed (standard format); rows whose messages
    have no non-whitespace content (conversational format)."""
    column = _array(column)
    if kind == "standard":
        text = pc.replace_substring(column, eos_token, "") if eos_token else column
        return pc.utf8_length(pc.utf8_trim_whitespace(text)).to_numpy(zero_copy_only=False) == 0
    n = len(column)
    flat = pc.list_flatten(column)
    content_type = flat.type.field("content").type
    if not (pa.types.is_string(content_type) or pa.types.is_large_string(content_type)):
        return _lengths(column) == 0  # structured content (e.g. parts): only an empty message list counts as empty
    content = pc.struct_field(flat, "content")
    filled = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(content)), 0), False)
    parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
    non_empty = np.bincount(parents, weights=filled.to_numpy(zero_copy_only=False), minlength=n)
    return non_empty == 0


def first_null(table: pa.Table, columns, name: str, rows: np.ndarray) -> None:
    for column in columns:
        col = table.column(column)
        if col.null_count:
            i = pc.index(pc.is_null(col), True).as_py()
            raise _bad_value_error(name, column, int(rows[i]), None)


def zero_length(table: pa.Table, columns) -> np.ndarray:
    """Values that TRL's `extract_prompt` cannot handle: an empty string or an empty message list."""
    out = np.zeros(table.num_rows, dtype=bool)
    for column in columns:
        col = _array(table.column(column))
        lengths = pc.utf8_length(col) if _kind(col.type) == "standard" else pc.list_value_length(col)
        out |= lengths.to_numpy(zero_copy_only=False) == 0
    return out


def _first_item(column, kind: str):
    column = _array(column)
    if kind == "standard":
        return [pc.utf8_slice_codeunits(column, 0, 1)]
    first = pc.list_element(column, 0)
    return [pc.struct_field(first, "role"), pc.struct_field(first, "content")]


def check_common_start(table: pa.Table, kind: str, name: str, rows: np.ndarray, skip: np.ndarray) -> None:
    """Before TRL's `extract_prompt`: chosen and rejected must start with the same character (standard) or message
    (conversational; role and content compared), else no prompt can be extracted (rows in `skip` are not checked)."""
    differ = np.zeros(table.num_rows, dtype=bool)
    for a, b in zip(_first_item(table.column("chosen"), kind), _first_item(table.column("rejected"), kind)):
        differ |= pc.fill_null(pc.not_equal(a, b), True).to_numpy(zero_copy_only=False)
    _raise_unextractable(differ & ~skip, name, rows)


def check_extracted_prompt(table: pa.Table, kind: str, name: str, rows: np.ndarray) -> None:
    """With no 'prompt' column, TRL takes the common start of chosen and rejected as the prompt; none (or only
    whitespace) means the prompt cannot be extracted."""
    prompt = _array(table.column("prompt"))
    if kind == "standard":
        empty = pc.utf8_length(pc.utf8_trim_whitespace(prompt)).to_numpy(zero_copy_only=False) == 0
    else:
        empty = _lengths(prompt) == 0
    _raise_unextractable(empty, name, rows)


def _raise_unextractable(bad: np.ndarray, name: str, rows: np.ndarray) -> None:
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise InSPODataError(
            f"The {name} dataset has no 'prompt' column, and at row {int(rows[i])} 'chosen' and 'rejected' share no "
            "common beginning, so no prompt can be extracted from them (TRL's `extract_prompt` takes the shared "
            "start as the prompt). Add a 'prompt' column, or include the prompt (the same user turn(s)) at the start "
            "of both responses."
        )


def token_stage(
    table: pa.Table,
    rows: np.ndarray,
    tally: RowTally,
    layout: RowLayout,
    kind: str,
    eos_token: str | None,
    extracted_prompt: bool,
) -> np.ndarray:
    """Classify one batch of a tokenized dataset, update the tally, return the keep mask."""
    if extracted_prompt:
        check_extracted_prompt(table, kind, tally.name, rows)
    empty = empty_text(table.column("chosen"), kind, eos_token) | empty_text(table.column("rejected"), kind, eos_token)
    identical = identical_lists(table.column("chosen_ids"), table.column("rejected_ids"))
    keep, reasons = classify_rows(
        _lengths(table.column("prompt_ids")),
        _lengths(table.column("chosen_ids")),
        _lengths(table.column("rejected_ids")),
        layout,
        empty=empty,
        identical=identical,
    )
    for reason, mask in reasons.items():
        tally.add(reason, mask, rows)
    return keep


def arrow_batches(dataset, columns, batch_size: int = _BATCH_SIZE) -> Iterator[tuple[int, pa.Table]]:
    """`(offset, table)` batches of a map-style dataset's columns as Arrow tables (indices mappings respected)."""
    offset = 0
    for table in dataset.select_columns(list(columns)).with_format("arrow").iter(batch_size=batch_size):
        yield offset, table
        offset += table.num_rows


def python_batch_to_arrow(batch: dict, columns, kinds: dict, name: str, rows: np.ndarray) -> pa.Table:
    """Convert the text columns of a streamed batch, with clear errors for bad or mixed values."""
    arrays = {}
    for column in columns:
        values = batch[column]
        expected = kinds.get(column)
        for i, value in enumerate(values):
            kind = python_kind(value)
            if kind is None:
                raise _bad_value_error(name, column, int(rows[i]), value)
            if kind == "empty_list" and expected == "standard":
                raise _bad_value_error(name, column, int(rows[i]), value)
            if kind != "empty_list" and kind != expected:
                raise _mixed_error(name, {column: kind}, int(rows[i]), detail=f", while earlier rows are {expected}")
        try:
            arrays[column] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # e.g. messages whose fields have different types
            raise InSPODataError(
                f"Column '{column}' of the {name} dataset holds values that cannot be read as one type in the rows "
                f"{int(rows[0])}-{int(rows[-1])} ({error}). Give every message the same fields with the same types."
            ) from error
    return pa.table(arrays)


def check_finite_loss(trainer, loss: torch.Tensor) -> None:
    """Raise [`NonFiniteLossError`] when the training loss of any process is NaN or infinite."""
    finite = torch.isfinite(loss.detach()).all()
    accelerator = trainer.accelerator
    if accelerator.num_processes > 1:
        finite = accelerator.gather(finite.reshape(1)).all()
    if bool(finite):
        return
    args, state = trainer.args, trainer.state
    local = loss.detach().float().reshape(-1)
    local = local[~torch.isfinite(local)]
    value = f"{local[0].item()}" if local.numel() else "non-finite on another process"
    step = state.global_step + 1
    bad_params = [n for n, p in trainer.model.named_parameters() if p.numel() and not torch.isfinite(p).all()]
    if bad_params:
        weights = (
            f"The model's weights are already non-finite (e.g. '{bad_params[0]}', {len(bad_params)} tensor(s)): an "
            "earlier optimizer step wrote them (e.g. from a non-finite gradient). Restart from a checkpoint written "
            "before that step."
        )
    else:
        weights = "The weights are still finite: the overflow happened in this step's forward pass."
    last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    checkpoint = f" Last checkpoint: {last}." if last else ""
    dtype = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
    raise NonFiniteLossError(
        f"The training loss is {value} at step {step} (optimizer steps completed: {state.global_step}, epoch "
        f"{state.epoch or 0:.2f}). Training stopped before the optimizer step, so this batch did not change the "
        f"weights. {weights}{checkpoint} Hints: lower the learning rate (learning_rate={args.learning_rate:g}) or add "
        f"warmup; keep gradient clipping on (max_grad_norm={args.max_grad_norm}); the compute dtype is {dtype}"
        + (
            ": fp16 overflows easily (values above 65504), prefer bf16=True or fp32"
            if dtype == "fp16"
            else "; if the model was trained in another dtype, load it in that dtype"
        )
        + f". Also check the batch's data (very long rows, unusual tokens). See {TROUBLESHOOTING}."
    )


# ---------------------------------------------------------------------------------------------------------- driver
def prepare_preference_dataset(trainer, base_prepare, dataset, processing_class, args, name: str, collator):
    """Run TRL's `DPOTrainer._prepare_dataset` (`base_prepare`) inside InSPO's checks.

    Map-style datasets are checked in vectorized Arrow passes (errors and strict conditions raise here, counts are
    final); streamed datasets get their first row checked now and every row checked lazily as it is streamed (counts
    grow in place, strict conditions raise while streaming). TRL's own silent filter of prompts that fill
    `max_length` is replaced by the counted `"prompt_too_long"` rule.
    """
    from datasets import Dataset
    from transformers import ProcessorMixin

    tokenizer = processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class
    layout = RowLayout.from_collator(collator)
    tally = RowTally(name, strict_reasons(args), layout.max_length, streaming=not isinstance(dataset, Dataset))
    if not hasattr(trainer, "inspo_dropped"):
        trainer.inspo_dropped, trainer.inspo_truncated = {}, {}
    trainer.inspo_dropped[name], trainer.inspo_truncated[name] = tally.dropped, tally.truncated
    # TRL would drop the rows whose prompt fills `max_length` without a trace; the rule is applied (and counted) below.
    inner_args = copy.copy(args)
    inner_args.max_length = None

    example = first_example(dataset, name)
    columns = (dataset.column_names if isinstance(dataset, Dataset) else None) or list(example)
    check_columns(columns, name)
    extract = "prompt" not in columns
    text_columns = [c for c in TEXT_COLUMNS if c in columns]
    if isinstance(dataset, Dataset):
        kinds = arrow_kinds(dataset.features.arrow_schema, text_columns, name)
    else:
        kinds = example_kinds(example, text_columns, name)
    kind = next(iter(kinds.values()))
    check_tokenizer(tokenizer, kind == "conversational", name)
    eos_token = tokenizer.eos_token
    stage_b_columns = ["chosen", "rejected", *TOKEN_COLUMNS] + (["prompt"] if extract else [])

    if isinstance(dataset, Dataset):
        rows = np.arange(len(dataset))
        tally.rows = len(dataset)
        dropped = []
        for offset, table in arrow_batches(dataset, text_columns):
            batch_rows = rows[offset : offset + table.num_rows]
            first_null(table, text_columns, name, batch_rows)
            if extract:  # TRL's `extract_prompt` fails on an empty value: drop (and count) those rows first
                mask = zero_length(table, ("chosen", "rejected"))
                tally.add("empty_response", mask, batch_rows)
                check_common_start(table, kind, name, batch_rows, skip=mask)
                dropped.append(mask)
        if dropped and np.concatenate(dropped).any():
            rows = np.flatnonzero(~np.concatenate(dropped))
            tally.raise_if_strict()
            if len(rows) == 0:
                tally.finish()
            dataset = dataset.select(rows)
        dataset = base_prepare(dataset, processing_class, inner_args, name)
        keep = [
            token_stage(table, rows[offset : offset + table.num_rows], tally, layout, kind, eos_token, extract)
            for offset, table in arrow_batches(dataset, stage_b_columns)
        ]
        keep = np.concatenate(keep) if keep else np.zeros(0, dtype=bool)
        tally.finish()
        if not keep.all():
            dataset = dataset.select(np.flatnonzero(keep))
        return dataset

    # Streamed dataset: every step is lazy.
    def add_row_index(batch, indices):
        return {ROW_COLUMN: list(indices)}

    def stage_a(batch):
        batch_rows = np.asarray(batch[ROW_COLUMN], dtype=np.int64)
        if tally.live:
            tally.rows += len(batch_rows)
        table = python_batch_to_arrow(batch, text_columns, kinds, name, batch_rows)
        first_null(table, text_columns, name, batch_rows)
        if not extract:
            return [True] * len(batch_rows)
        mask = zero_length(table, ("chosen", "rejected"))
        tally.add("empty_response", mask, batch_rows)
        check_common_start(table, kind, name, batch_rows, skip=mask)
        return (~mask).tolist()

    def stage_b(batch):
        batch_rows = np.asarray(batch[ROW_COLUMN], dtype=np.int64)
        arrays = {c: pa.array(batch[c]) for c in stage_b_columns}
        for c in TOKEN_COLUMNS:  # an all-empty batch of token lists is inferred as list<null>
            if pa.types.is_null(arrays[c].type.value_type):
                arrays[c] = arrays[c].cast(pa.list_(pa.int64()))
        return token_stage(pa.table(arrays), batch_rows, tally, layout, kind, eos_token, extract).tolist()

    tally.live = False  # TRL peeks at the first rows while preparing: do not count those
    dataset = dataset.map(add_row_index, with_indices=True, batched=True)
    dataset = dataset.filter(stage_a, batched=True)
    dataset = base_prepare(dataset, processing_class, inner_args, name)
    dataset = dataset.filter(stage_b, batched=True)
    dataset = dataset.remove_columns(ROW_COLUMN)
    tally.live = True
    return dataset
