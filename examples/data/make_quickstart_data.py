# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Write `quickstart.jsonl`: small synthetic preference pairs (standard prompt/chosen/rejected format) on three toy
tasks with a programmatic answer, so that a tiny model learns something visible in a minute on CPU.

    python examples/data/make_quickstart_data.py  # deterministic: rewrites the same file
"""

import json
import random
from pathlib import Path


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        task = i % 3
        if task == 0:
            a, b = rng.randint(0, 20), rng.randint(0, 20)
            prompt, chosen = f"Add: {a} + {b} =", f" {a + b}"
            rejected = f" {a + b + rng.choice([-2, -1, 1, 2, 10])}"
        elif task == 1:
            xs = rng.sample(range(10), rng.randint(3, 5))
            prompt, chosen = "Sort ascending: " + " ".join(map(str, xs)) + " ->", " " + " ".join(map(str, sorted(xs)))
            wrong = xs[:] if xs != sorted(xs) else sorted(xs, reverse=True)
            rejected = " " + " ".join(map(str, wrong))
        else:
            letters = rng.sample("abcdefghij", rng.randint(3, 5))
            prompt = "Reverse: " + " ".join(letters) + " ->"
            chosen = " " + " ".join(reversed(letters))
            rejected = " " + " ".join(letters)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


if __name__ == "__main__":
    path = Path(__file__).with_name("quickstart.jsonl")
    with path.open("w") as f:
        for row in make_rows(600):
            f.write(json.dumps(row) + "\n")
    print(f"wrote {path}")
