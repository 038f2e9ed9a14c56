# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Preference rows for the benchmarks, and the benchmark tokenizer.

Data sets (`DATASETS`): `hh`, the HH-RLHF harmless-base sample (`../shared/data`, implicit prompts made explicit as
TRL's `extract_prompt` does); `long`, synthetic UltraFeedback-like pairs; `chat`, a synthetic stand-in for `hh` when
the sample is absent. Synthetic rows are made of pseudo-words that the benchmark tokenizer keeps as one token each, so
their token lengths are exact: `synthetic_rows` gives pairs of any prompt and response length, and `scale_lengths`
scales a data set's mean prompt/response proportions (`mean_lengths`) to a given row length.
"""

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path


def _pseudo_words(n: int = 300) -> list[str]:
    """Deterministic pronounceable pseudo-words (each becomes one token of the benchmark tokenizer)."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]  # 70
    words = [a + b for a in syllables for b in syllables]  # 4900 two-syllable words
    return words[::13][:n]  # spread over the syllables


WORDS = _pseudo_words()

DATASETS = {
    "hh": "HH-RLHF harmless-base sample (../shared/data): multi-turn chat prompts that dominate the row",
    "long": "synthetic, UltraFeedback-like: short prompt (~64 tokens), long responses (~384 tokens, +-25%)",
    "chat": "synthetic stand-in for HH-RLHF when the file is absent: prompt ~120 tokens, responses ~45 (+-50%)",
}
# Synthetic data sets: (mean prompt tokens, mean response tokens, relative jitter of each length)
SYNTHETIC_LENGTHS = {"long": (64, 384, 0.25), "chat": (120, 45, 0.5)}


def hh_sample(path: Path | None) -> Path | None:
    """`path` when the HH-RLHF sample is there; otherwise None, with a note (the benchmarks then use `chat` rows)."""
    if path is not None and Path(path).exists():
        return Path(path)
    if path is not None:
        print(f"[bench] {path} not found: using synthetic chat-like data instead", file=sys.stderr)
    return None


def hh_rows(path: Path | None) -> list[dict] | None:
    """HH-RLHF rows in explicit-prompt form (the shared prefix of chosen and rejected is the prompt, as TRL's
    `extract_prompt` does), without rows whose responses are empty or identical. None when the file is absent."""
    if path is None or not Path(path).exists():
        return None
    from trl.data_utils import extract_prompt

    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "prompt" not in row:
                row = extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
            prompt, chosen, rejected = (row[k] for k in ("prompt", "chosen", "rejected"))
            if chosen.strip() and rejected.strip() and chosen != rejected:
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def synthetic_rows(
    n: int,
    prompt_tokens: int,
    chosen_tokens: int,
    rejected_tokens: int,
    jitter: float = 0.0,
    seed: int = 0,
) -> list[dict]:
    """Preference rows of controlled token lengths: every pseudo-word is one token, the tokenizer adds BOS to the
    prompt and TRL adds EOS to each response, so a row has `prompt_tokens` prompt tokens and `chosen_tokens` /
    `rejected_tokens` response tokens (each varied uniformly by +-`jitter` of itself)."""
    rng = random.Random(seed)

    def length(mean):
        spread = int(mean * jitter)
        return max(1, mean + rng.randint(-spread, spread)) if spread else mean

    def text(k):  # every word with its leading space is one token
        return " " + " ".join(rng.choice(WORDS) for _ in range(k))

    rows = []
    for _ in range(n):
        p, c, r = length(prompt_tokens), length(chosen_tokens), length(rejected_tokens)
        chosen, rejected = text(max(c - 1, 1)), text(max(r - 1, 1))
        while rejected == chosen:
            rejected = text(max(r - 1, 1))
        rows.append({"prompt": text(max(p - 1, 1)), "chosen": chosen, "rejected": rejected})
    return rows


def dataset_rows(
    name: str,
    n: int,
    hh_path: Path | None,
    seed: int = 0,
    prompt_tokens: int | None = None,
    response_tokens: int | None = None,
) -> tuple[list[dict], str]:
    """`n` rows of data set `name`, and the name of what was used (`"hh"` falls back to `"chat"` when the HH file is
    absent). With `prompt_tokens` and `response_tokens`, synthetic rows of exactly those lengths instead; `name` then
    only labels them."""
    if prompt_tokens is not None and response_tokens is not None:
        return synthetic_rows(n, prompt_tokens, response_tokens, response_tokens, seed=seed), name
    if name == "hh":
        rows = hh_rows(hh_path)
        if rows is not None:
            return (rows * (n // len(rows) + 1))[:n], "hh"
        name = "chat"
    if name not in SYNTHETIC_LENGTHS:
        raise ValueError(f"Unknown data set {name!r}; choose from {sorted(DATASETS)}")
    prompt, response, spread = SYNTHETIC_LENGTHS[name]
    return synthetic_rows(n, prompt, response, response, jitter=spread, seed=seed), name


def mean_lengths(name: str, hh_path: Path | None, tokenizer) -> tuple[str, float, float]:
    """Mean prompt and response lengths (tokens) of data set `name`, and the data set used (`"chat"` for `"hh"`
    without the sample): HH measured on the sample with `tokenizer`, BOS on the prompt and EOS on each response as
    TRL tokenizes; the synthetic sets' design values."""
    rows = hh_rows(hh_path) if name == "hh" else None
    if rows is None:
        name = "chat" if name == "hh" else name
        prompt, response, _ = SYNTHETIC_LENGTHS[name]
        return name, prompt, response
    prompts = tokenizer([r["prompt"] for r in rows])["input_ids"]
    responses = tokenizer([r[k] for r in rows for k in ("chosen", "rejected")], add_special_tokens=False)["input_ids"]
    prompt, response = (sum(map(len, ids)) / len(ids) for ids in (prompts, responses))
    return name, prompt, response + 1  # EOS


def lengths_label(prompt_tokens: int | None, response_tokens: int | None) -> str:
    """` (x+y+y)`: the token lengths of synthetic rows of set lengths, to follow the data set's name; else empty."""
    return f" ({prompt_tokens}+{response_tokens}+{response_tokens})" if prompt_tokens else ""


def scale_lengths(prompt: float, response: float, row_tokens: int) -> tuple[int, int]:
    """Prompt and response lengths (tokens) in the proportions `prompt : response` whose InSPO row `x + y_l + y_w`
    holds `row_tokens` tokens."""
    response_tokens = max(1, round(row_tokens * response / (prompt + 2 * response)))
    return row_tokens - 2 * response_tokens, response_tokens


# ---------------------------------------------------------------------------------------------------------- tokenizer
def build_benchmark_tokenizer(hh_path: Path | None, vocab_size: int = 8000, max_hh_rows: int | None = None):
    """A byte-level BPE tokenizer trained on the HH-RLHF sample (when present; its first `max_hh_rows` rows) and the
    pseudo-words, in which every pseudo-word (with its leading space) is a single token. Deterministic for the same
    inputs."""
    from trl_inspo.tiny import build_tokenizer

    texts = [" " + " ".join(WORDS[i::3] + WORDS[:i:3]) for i in range(3)] * 100
    rows = hh_rows(hh_path)
    if rows is not None:
        texts += [r["prompt"] + r["chosen"] + r["rejected"] for r in rows[:max_hh_rows]]
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    multi = [w for w in WORDS if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) != 1]
    if multi:
        raise RuntimeError(f"the benchmark tokenizer splits the pseudo-words {multi[:5]}: synthetic lengths are off")
    return tokenizer


def prepare_tokenizer(hh_path: Path | None, small: bool = False) -> str:
    """Train the benchmark tokenizer once (8,000 tokens; `small`: 2,000 tokens on the first 50 HH rows, for smoke
    runs) and save it under the system temp directory, reused by later calls and by the benchmark subprocesses;
    returns its directory."""
    vocab_size, max_hh_rows = (2000, 50) if small else (8000, None)
    stamp = f"{hh_path if hh_path and Path(hh_path).exists() else None}|{vocab_size}|{max_hh_rows}|{len(WORDS)}|v1"
    path = Path(tempfile.gettempdir()) / f"trl-inspo-bench-tokenizer-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}"
    if not (path / "tokenizer_config.json").exists():
        tokenizer = build_benchmark_tokenizer(hh_path, vocab_size, max_hh_rows)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tokenizer.save_pretrained(tmp)
        if path.exists():  # another process saved it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, path)
    return str(path)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
