# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Where the benchmarks find things and write results, and the environment they run in (no Hub access).

Only the standard library is imported here, so `use_offline_hub()` can run before `transformers` and `datasets`
are imported (they read these variables at import time).
"""

import json
import os
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_HH = REPO_ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_sample.jsonl"

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TQDM_DISABLE": "1",
    "CI": "1",  # TRL skips its telemetry on CI
}


def use_offline_hub() -> None:
    """Keep every library off the Hugging Face Hub (and quiet), unless the caller's environment says otherwise."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)


def command_line() -> str:
    """The command that started this process, as it is recorded in the results."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def write_json(path: Path, payload: dict) -> None:
    """Write `payload` to `path` (folders created; paths and other objects written as strings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)
        f.write("\n")
