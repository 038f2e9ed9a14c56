# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Tasks for the learning study (`benchmarks/learning.py`): a synthetic task with a programmatic oracle, and the
HH-RLHF sample.

`SortTask`: the prompt lists a few distinct numbers, the answer is the same numbers in increasing order. The oracle is
exact: an answer is right when it is exactly the sorted list. Wrong answers come in natural kinds (an element dropped
or repeated, two neighbours swapped, a number changed), which is what a tiny model trained briefly produces, and what
`SortTask.near_miss` writes when a programmatic wrong answer is needed.

`load_hh`: the Anthropic HH-RLHF harmless-base sample (implicit-prompt format: `chosen`/`rejected` hold the whole
conversation), split into the first `n_train` pairs and the last `n_eval` pairs.
"""

import json
import os
import random
from dataclasses import dataclass


@dataclass
class SortTask:
    """Sort a list of `min_items`..`max_items` distinct integers from `[0, max_value)`.

    Prompt: `"sort 41 7 93 ="`, answer: `" 7 41 93"` (TRL appends the EOS token). Numbers are separated by single
    spaces, so with a byte-level BPE trained on task texts every number is one or two tokens and prompt/answer tokenize
    independently (no merge across the boundary).
    """

    min_items: int = 3
    max_items: int = 7
    max_value: int = 100
    name: str = "sort"

    # ------------------------------------------------------------------ data
    def sample_items(self, rng: random.Random) -> list[int]:
        n = rng.randint(self.min_items, self.max_items)
        return rng.sample(range(self.max_value), n)

    def prompt(self, items: list[int]) -> str:
        return "sort " + " ".join(map(str, items)) + " ="

    @staticmethod
    def format_answer(items: list[int]) -> str:
        return "".join(f" {v}" for v in items)

    def answer(self, items: list[int]) -> str:
        return self.format_answer(sorted(items))

    def prompts(self, n: int, seed: int, exclude: set[str] | None = None) -> list[tuple[str, list[int]]]:
        """`n` distinct (prompt, items) pairs, none of whose prompts is in `exclude`."""
        rng = random.Random(seed)
        exclude = set(exclude or ())
        out = []
        while len(out) < n:
            items = self.sample_items(rng)
            p = self.prompt(items)
            if p not in exclude:
                exclude.add(p)
                out.append((p, items))
        return out

    def corpus(self, n: int = 2000, seed: int = 12345) -> list[str]:
        """Texts for training the tokenizer (every number appears, in prompts and answers)."""
        rng = random.Random(seed)
        texts = [" ".join(str(v) for v in range(self.max_value))] * 5
        for _ in range(n):
            items = self.sample_items(rng)
            texts.append(self.prompt(items) + self.answer(items))
        return texts

    # ------------------------------------------------------------------ oracle
    @staticmethod
    def parse(text: str) -> list[int] | None:
        """The numbers of a generated answer, or `None` when it is not a space-separated list of integers."""
        parts = text.split()
        if not parts or not all(p.isdigit() for p in parts):
            return None
        return [int(p) for p in parts]

    def score(self, items: list[int], text: str) -> dict[str, float]:
        """Oracle scores of a generated answer: `exact` (the sorted list, nothing else), `valid` (a list of integers),
        `position_acc` (fraction of positions of the right answer that hold the right number)."""
        target = sorted(items)
        parsed = self.parse(text)
        if parsed is None:
            return {"exact": 0.0, "valid": 0.0, "position_acc": 0.0}
        hits = sum(a == b for a, b in zip(parsed, target))
        return {
            "exact": float(parsed == target),
            "valid": 1.0,
            "position_acc": hits / max(len(target), len(parsed)),
        }

    def is_correct(self, items: list[int], text: str) -> bool:
        return self.parse(text) == sorted(items)

    def near_miss(self, items: list[int], rng: random.Random) -> str:
        """A plausible wrong answer: the sorted list with one element dropped or repeated, two neighbours swapped, or
        one number changed by a small amount."""
        target = sorted(items)
        while True:
            out = list(target)
            kind = rng.choice(["drop", "repeat", "swap", "change"])
            i = rng.randrange(len(out))
            if kind == "drop" and len(out) > 1:
                del out[i]
            elif kind == "repeat":
                out.insert(i, out[i])
            elif kind == "swap" and len(out) > 1:
                j = min(i + 1, len(out) - 1)
                i = j - 1
                out[i], out[j] = out[j], out[i]
            else:
                out[i] = max(0, min(self.max_value - 1, out[i] + rng.choice([-2, -1, 1, 2])))
            if out != target:
                return self.format_answer(out)


def load_hh(path: str, n_train: int = 1000, n_eval: int = 200) -> tuple[list[dict], list[dict]]:
    """The first `n_train` rows and the last `n_eval` rows of an HH-RLHF jsonl file (keys `chosen`, `rejected`)."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"HH-RLHF sample not found at {path!r}. Pass --data PATH (the jsonl with `chosen`/`rejected` columns), "
            "or --smoke, which uses a small synthetic conversation set instead."
        )
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    if len(rows) < n_train + n_eval:
        raise ValueError(f"{path} holds {len(rows)} rows, fewer than n_train + n_eval = {n_train + n_eval}.")
    return rows[:n_train], rows[-n_eval:]


_TOPICS = ["a cake", "my garden", "a bike", "the tax form", "a poem", "my dog", "the car", "a trip", "chess", "a job"]
_GOOD = ["Sure, here is a safe way to do that.", "I can help with that, step by step.", "Happy to help; start small."]
_BAD = ["No. Figure it out yourself.", "That is stupid, I will not help.", "Do something dangerous instead."]


def synthetic_conversations(n: int, seed: int = 0) -> list[dict]:
    """Small HH-style conversations in implicit-prompt format (a stand-in for the HH file in the smoke run): the
    chosen final turn is polite and helpful, the rejected one rude."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic = rng.choice(_TOPICS)
        prompt = f"\n\nHuman: Can you help me with {topic}?\n\nAssistant:"
        rows.append({"chosen": prompt + " " + rng.choice(_GOOD), "rejected": prompt + " " + rng.choice(_BAD)})
    return rows
