# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Data checks and row accounting for [`InSPOTrainer`].

Preparing a preference dataset has three outcomes for a row (the README's Troubleshooting section defines each reason):

- **error** ([`InSPODataError`]): the dataset cannot be used as given (a column is missing, a value is neither a string
  nor a list of messages, formats are mixed, images are present, no prompt can be extracted, the tokenizer has no EOS
  token for standard text). The message names the column, an example row and the fix.
- **dropped and counted** (`DROP_REASONS`: `empty_response`, `identical_responses`, `prompt_too_long`): the row cannot
  train; it is counted once, under the first reason that applies. TRL's `DPOTrainer` drops rows whose prompt fills
  `max_length` silently; here they are counted.
- **kept and counted** (`TRUNCATION_REASONS`): the collator will cut the pair to fit `max_length`; counted once per
  reason when either of its two rows is affected.

`InSPOConfig.strict_data` turns any of these reasons into an [`InSPODataError`].

The checks run as two batched `map` passes that add a reason column, each followed by a filter: one on the raw text
before TRL's `DPOTrainer._prepare_dataset` (value types and formats, rows TRL's prompt extraction cannot handle), one
on its tokens after it (empty and identical responses, lengths: [`classify_rows`]). The same functions serve map-style
and streamed datasets; a dataset's format is decided from its content, as TRL does, not from its Arrow types.
"""

import copy
import functools
import logging
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset
from transformers import ProcessorMixin
from trl.data_utils import is_conversational

from .collator import RowLayout, classify_rows
from .config import DROP_REASONS, TRUNCATION_REASONS, on_main_process
from .errors import InSPODataError, TRLContractError


logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("prompt", "chosen", "rejected")
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
VISION_COLUMNS = ("image", "images")
# Columns the checks add for their own bookkeeping (original row index, drop reason or None, truncation reasons).
ROW, DROP, CUT = "_inspo_row", "_inspo_drop", "_inspo_cut"
TROUBLESHOOTING = "the Troubleshooting section of the trl-inspo README"

_REASON_TEXT = {  # reason: (what happened, the fix)
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


# ---------------------------------------------------------------------------------------------------------- report
@dataclass
class DataReport:
    """What the checks did to one dataset split: rows seen, rows dropped and kept-but-cut per reason, and the first row
    of each reason. For a streamed dataset the counts grow while it is streamed (each pass counts again)."""

    name: str
    strict: frozenset = frozenset()
    max_length: int | None = None
    streaming: bool = False
    rows: int = 0
    dropped: dict = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    truncated: dict = field(default_factory=lambda: dict.fromkeys(TRUNCATION_REASONS, 0))
    examples: dict = field(default_factory=dict)
    live: bool = True  # streamed datasets: False while TRL peeks at the first rows during preparation

    def count(self, batch: dict) -> None:
        """Add a checked batch (its `ROW`, `DROP` and `CUT` columns) to the counts."""
        for row, drop, cuts in zip(batch[ROW], batch[DROP], batch[CUT]):
            for reason in ([drop] if drop else []) + list(cuts):
                counts = self.dropped if reason in self.dropped else self.truncated
                counts[reason] += 1
                if reason not in self.examples:
                    self.examples[reason] = int(row)
                    if self.streaming:
                        self._first_streamed(reason)
        if self.streaming:
            self.raise_if_strict()

    def _first_streamed(self, reason: str) -> None:
        action = "dropping it" if reason in DROP_REASONS else "keeping it"
        if on_main_process():
            logger.warning(
                f"InSPO, streamed {self.name} dataset: row {self.examples[reason]} has '{reason}': "
                f"{self.describe(reason)}; {action}. Further rows are counted in `trainer.inspo_data_report"
                f"['{self.name}']`. See {TROUBLESHOOTING}."
            )

    def describe(self, reason: str) -> str:
        return _REASON_TEXT[reason][0].format(max_length=self.max_length)

    def raise_if_strict(self) -> None:
        for reason in DROP_REASONS + TRUNCATION_REASONS:
            count = self.dropped.get(reason) or self.truncated.get(reason) or 0
            if reason in self.strict and count:
                action = "drop and count" if reason in DROP_REASONS else "count"
                raise InSPODataError(
                    f"{count} row(s) of the {self.name} dataset {'so far ' if self.streaming else ''}have '{reason}' "
                    f"(first: row {self.examples[reason]}): {self.describe(reason)}. {_REASON_TEXT[reason][1]} "
                    f"`strict_data` names '{reason}', so this is an error; remove it from `strict_data` to {action} "
                    "such rows instead."
                )

    def summary(self) -> str:
        def part(counts):
            return ", ".join(f"{n} {r} (e.g. row {self.examples[r]})" for r, n in counts.items() if n)

        text = []
        if any(self.dropped.values()):
            text.append(f"dropped {sum(self.dropped.values())} of {self.rows} rows: {part(self.dropped)}")
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
            error = InSPODataError(
                f"All {self.rows} rows of the {self.name} dataset were dropped ({self.summary()}). Most are "
                f"'{main}': {self.describe(main)}. {_REASON_TEXT[main][1]}"
            )
            error.report = self  # the counts, for a caller that wants them
            raise error
        summary = self.summary()
        if summary and on_main_process():
            logger.warning(
                f"InSPO, {self.name} dataset: {summary}. The counts are in `trainer.inspo_data_report['{self.name}']` "
                "and, once the model is saved, in `inspo_data_report.json` and the model card in `output_dir`; set "
                f"`strict_data` to make these conditions errors. See {TROUBLESHOOTING}."
            )

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "dropped": dict(self.dropped),
            "truncated": dict(self.truncated),
            "first_row": dict(self.examples),
        }


# ---------------------------------------------------------------------------------------------------------- errors
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


def _mixed_error(name: str, kinds: dict, row: int, expected: str | None = None) -> InSPODataError:
    described = ", ".join(f"'{c}' is {k}" for c, k in kinds.items() if k != "empty")
    first = f", while the first row is {expected}" if expected else ""
    return InSPODataError(
        f"The {name} dataset mixes conversational (lists of messages) and standard (strings) values ({described}"
        f"{first}; row {row}). Use one format for every row and for all of 'prompt', 'chosen' and 'rejected': e.g. "
        "wrap a string prompt as `[{'role': 'user', 'content': prompt}]` and each response as "
        "`[{'role': 'assistant', 'content': response}]`, or render the messages to text with the chat template."
    )


def _unextractable_error(name: str, row: int) -> InSPODataError:
    return InSPODataError(
        f"The {name} dataset has no 'prompt' column, and at row {row} 'chosen' and 'rejected' share no common "
        "beginning, so no prompt can be extracted from them (TRL's `extract_prompt` takes the shared start as the "
        "prompt). Add a 'prompt' column, or include the prompt (the same user turn(s)) at the start of both responses."
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


def check_columns(columns, name: str) -> None:
    """Missing `chosen`/`rejected` columns and image columns."""
    columns = list(columns)
    for column in VISION_COLUMNS:
        if column in columns:
            raise vision_error(name, column)
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        hint = ""
        if all(c in columns for c in TOKEN_COLUMNS):
            hint = (
                " The dataset is already tokenized; InSPOTrainer, like trl.DPOTrainer, tokenizes the text itself: "
                "pass the text columns instead."
            )
        elif "completion" in columns and "label" in columns:
            hint = " This looks like an unpaired (KTO-style) dataset; InSPO needs paired preferences."
        raise InSPODataError(
            f"The {name} dataset has no {' and no '.join(repr(c) for c in missing)} column (columns: {columns}; every "
            f"row, e.g. row 0, lacks it). InSPO needs 'chosen' and 'rejected' responses, plus a 'prompt' column or a "
            "prompt shared at the start of both. Rename your columns, e.g. "
            f"`dataset.rename_columns({{'good': 'chosen', 'bad': 'rejected'}})`.{hint}"
        )


# ---------------------------------------------------------------------------------------------------------- checks
def _kind(value) -> str | None:
    """`"standard"` (a string), `"conversational"` (a list of messages), `"empty"` (an empty list), else `None`."""
    if isinstance(value, str):
        return "standard"
    if isinstance(value, list) and all(
        isinstance(m, dict) and "role" in m and isinstance(m.get("content"), (str, list, type(None))) for m in value
    ):
        return "conversational" if value else "empty"
    return None


def _has_content(message: dict) -> bool:
    content = message.get("content")
    if isinstance(content, str):
        return bool(content.strip())
    return bool(content) or bool(message.get("tool_calls"))  # structured content (parts) or a tool call


def _is_empty(value, eos_token: str | None) -> bool:
    if isinstance(value, str):
        return not (value.replace(eos_token, "") if eos_token else value).strip()
    return not any(_has_content(m) for m in value)


def check_text(batch: dict, indices: list[int], *, name: str, conversational: bool, extract: bool) -> dict:
    """Checks of raw rows, before TRL's preparation: every text value must be of the dataset's format (errors), and
    rows whose empty response TRL's prompt extraction cannot handle are dropped."""
    expected = "conversational" if conversational else "standard"
    columns = [c for c in TEXT_COLUMNS if c in batch]
    for i, row in enumerate(indices):
        kinds = {c: _kind(batch[c][i]) for c in columns}
        for column, kind in kinds.items():
            if kind is None or (kind == "empty" and not conversational):
                raise _bad_value_error(name, column, row, batch[column][i])
        found = set(kinds.values()) - {"empty"}
        if len(found) > 1:
            raise _mixed_error(name, kinds, row)
        if found and found != {expected}:
            raise _mixed_error(name, kinds, row, expected)
    drop = [None] * len(indices)
    if extract:
        for i, (row, chosen, rejected) in enumerate(zip(indices, batch["chosen"], batch["rejected"])):
            if not chosen or not rejected:
                drop[i] = "empty_response"
            elif chosen[0] != rejected[0]:
                raise _unextractable_error(name, row)
    return {ROW: list(indices), DROP: drop, CUT: [[] for _ in indices]}


def check_tokens(
    batch: dict, *, name: str, layout: RowLayout, eos_token: str | None = None, extracted: bool = False
) -> dict:
    """Checks of tokenized rows, after TRL's preparation: empty and identical responses and rows that cannot fit are
    dropped, rows the collator will cut are marked (see [`classify_rows`])."""
    if extracted:  # TRL took the common start of chosen and rejected as the prompt: it must hold something
        for row, prompt in zip(batch[ROW], batch["prompt"]):
            if not (prompt.strip() if isinstance(prompt, str) else prompt):
                raise _unextractable_error(name, row)
    empty = [_is_empty(c, eos_token) or _is_empty(r, eos_token) for c, r in zip(batch["chosen"], batch["rejected"])]
    identical = [a == b for a, b in zip(batch["chosen_ids"], batch["rejected_ids"])]
    lengths = ([len(ids) for ids in batch[column]] for column in TOKEN_COLUMNS)
    _, reasons = classify_rows(*lengths, layout, empty=empty, identical=identical)
    drop = [None] * len(empty)
    for reason in reversed(DROP_REASONS):  # the first reason wins
        for i in np.flatnonzero(reasons[reason]):
            drop[i] = reason
    cut = [[r for r in TRUNCATION_REASONS if reasons[r][i]] for i in range(len(empty))]
    return {DROP: drop, CUT: cut}


def _checked(dataset, check, report: DataReport, map_kwargs: dict, first: bool = False):
    """`dataset` with the reason columns of `check` added, counted into `report`, and the dropped rows removed. The
    `first` check also numbers the rows (`ROW`)."""
    if isinstance(dataset, Dataset):
        dataset = dataset.map(check, batched=True, with_indices=first, **map_kwargs)
        report.count(dataset.select_columns([ROW, DROP, CUT]).to_dict())
        drops = dataset[DROP]
        if any(drops):
            dataset = dataset.select([i for i, drop in enumerate(drops) if drop is None])
        return dataset.remove_columns([DROP, CUT])

    def keep(batch):
        if report.live:
            report.rows += len(batch[ROW]) if first else 0
            report.count(batch)
        return [drop is None for drop in batch[DROP]]

    return dataset.map(check, batched=True, with_indices=first).filter(keep, batched=True).remove_columns([DROP, CUT])


def prepare_preference_dataset(base_prepare, dataset, processing_class, args, name: str, layout: RowLayout):
    """Run TRL's `DPOTrainer._prepare_dataset` (`base_prepare`) between InSPO's checks; returns `(dataset, report)`.

    Map-style datasets are checked when they are prepared (errors and strict conditions raise here, counts are final);
    streamed datasets get their first row checked now and every row checked lazily as it is streamed (counts grow in
    place, strict conditions raise while streaming). TRL's own silent filter of prompts that fill `max_length` is
    replaced by the counted `"prompt_too_long"` rule: TRL prepares with `max_length=None`.
    """
    tokenizer = processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class
    streaming = not isinstance(dataset, Dataset)
    report = DataReport(name, args.strict_reasons, layout.max_length, streaming=streaming)
    example = first_example(dataset, name)
    columns = (None if streaming else dataset.column_names) or list(example)
    check_columns(columns, name)
    conversational = is_conversational(example)
    if not conversational and tokenizer.eos_token is None:
        raise InSPODataError(
            f"The {name} dataset is in standard (text) format and the tokenizer has no EOS token: TRL appends EOS to "
            "every response so that the model learns to stop. Set one before creating the trainer, e.g. "
            "`tokenizer.eos_token = '</s>'` (a token of the vocabulary), or use a conversational dataset with a chat "
            "template."
        )
    extract = "prompt" not in columns
    text_check = functools.partial(check_text, name=name, conversational=conversational, extract=extract)
    eos_token = None if conversational else tokenizer.eos_token
    token_check = functools.partial(check_tokens, name=name, layout=layout, eos_token=eos_token, extracted=extract)
    map_kwargs = {} if streaming else {"num_proc": args.dataset_num_proc, "desc": f"Checking {name} dataset"}
    # TRL would drop the rows whose prompt fills `max_length` without a trace; the rule is applied (and counted) here.
    inner_args = copy.copy(args)
    inner_args.max_length = None

    report.live = not streaming  # TRL peeks at the first rows of a stream while preparing: do not count those
    report.rows = 0 if streaming else len(dataset)
    dataset = _checked(dataset, text_check, report, map_kwargs, first=True)
    if not streaming and len(dataset) == 0:
        report.finish()  # every row was dropped: raises
    rows = None if streaming else len(dataset)
    dataset = base_prepare(dataset, processing_class, inner_args, name)
    if rows is not None and len(dataset) != rows:
        raise TRLContractError(
            f"docs/trl_internals.md, 'DPOTrainer._prepare_dataset': TRL's preparation of the {name} dataset turned "
            f"{rows} rows into {len(dataset)} with max_length=None, so the InSPO row counts would be wrong. This TRL "
            "release changed how it prepares datasets; pin a supported TRL release (see the README)."
        )
    dataset = _checked(dataset, token_check, report, map_kwargs).remove_columns(ROW)
    if streaming:
        report.live = True
    else:
        report.finish()
    return dataset, report
