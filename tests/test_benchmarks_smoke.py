# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The performance benchmarks run (`--smoke`: tiny model, a few steps, seconds) and count what they claim to count.

Each script runs as a subprocess, as a user would run it. The HH-RLHF sample is used when `../shared/data` has it,
otherwise synthetic chat-like rows: nothing is skipped.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu
from benchmarks.common.flops import pair_counts
from benchmarks.common.models import MODEL_SHAPES


ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def run_script(name, tmp_path, *extra):
    output = tmp_path / f"{name}.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--smoke", "--output", str(output), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(output) as f:
        return json.load(f), proc.stdout


def test_throughput_smoke(tmp_path):
    payload, stdout = run_script("throughput", tmp_path)
    assert "| InSPO prefix-shared |" in stdout
    for key in ("cpu_model", "torch", "trl", "date"):
        assert payload["machine"][key]
    assert payload["command"] and payload["load_average_start"] is not None
    # The prefix-shared layout gives the two-row layout's log-probabilities (fp32)
    [exact] = payload["prefix_sharing_exactness"]
    assert exact["max_rel_diff"] < 1e-5 and exact["mean_abs_logp"] > 1

    runs = {(r["case"]["variant"], r["case"]["method"]): r for r in payload["runs"]}
    live = {m: runs[("live", m)] for m in ("dpo", "inspo", "inspo_ps")}
    for r in live.values():
        steps = r["case"]["warmup"] + r["case"]["steps"]
        assert len(r["step_times_s"]) == steps and all(t > 0 for t in r["step_times_s"])
        assert len(r["batches"]) == steps
        assert r["step_peak_increase_mib"] >= 0
    # Same pairs in the same order for the three trainers, and the token counts of the three layouts: per step, with
    # X = prompt tokens, W + L = response tokens, B pairs: DPO = 2X + W + L, two-row = 2X + 2(W + L),
    # prefix-shared = X + 2(W + L) + B (the prompt's last token is copied into both branches), so
    # 2 DPO = 3 two-row - 2 prefix-shared + 2B.
    b = live["dpo"]["case"]["batch_size"]
    for dpo, two_row, shared in zip(*(live[m]["batches"] for m in ("dpo", "inspo", "inspo_ps"))):
        assert 2 * dpo["tokens"] == 3 * two_row["tokens"] - 2 * shared["tokens"] + 2 * b
        assert two_row["rows"] == 2 * b and shared["rows"] == b and dpo["rows"] == 2 * b
        # InSPO scores both responses in both rows: twice DPO's labelled positions, in either layout
        assert two_row["scored"] == shared["scored"] == 2 * dpo["scored"]
        # The tree row needs no attention between the branches and attends to the prompt once per branch
        assert shared["attention_pairs"] < two_row["attention_pairs"]
    # The ratios table is consistent with the runs
    row = next(r for r in payload["ratios"] if r["variant"] == "live" and r["method"] == "inspo")
    assert row["token_ratio"] == pytest.approx(live["inspo"]["tokens_per_step"] / live["dpo"]["tokens_per_step"])
    # max_alternative_length cuts the alternative: fewer tokens than the full two-row layout
    assert runs[("max_alt", "inspo")]["tokens_per_step"] < live["inspo"]["tokens_per_step"]


def test_scaling_smoke(tmp_path):
    payload, _ = run_script("scaling", tmp_path)
    for plot in payload["plots"]:
        assert Path(plot).stat().st_size > 1000
    runs = payload["lengths"]["runs"]
    assert {r["length"] for r in payload["lengths"]["ratios"]} == {16, 32}
    assert {r["case"]["response_tokens"] for r in runs} == {16, 32}  # the smoke sweeps the response length
    for r in runs:
        # synthetic rows of exact lengths: prompt x = 16 tokens, both responses `length` tokens, no padding
        x, y, b = r["case"]["prompt_tokens"], r["case"]["response_tokens"], r["case"]["batch_size"]
        expected = {"dpo": 2 * x + 2 * y, "inspo": 2 * x + 4 * y, "inspo_ps": x + 4 * y + 1}[r["case"]["method"]]
        assert r["tokens_per_step"] == b * expected
        assert r["positions_per_step"] == r["tokens_per_step"]
    attention = payload["attention"]
    assert attention and all("error" not in r for r in attention)
    two_row = {r["case"]["row_tokens"]: r for r in attention if r["case"]["layout"] == "two_row"}
    tree = {r["case"]["row_tokens"]: r for r in attention if r["case"]["layout"] == "tree"}
    for n, r in tree.items():
        # one tree row holds the pair; the two-row layout repeats the prompt
        assert r["rows"] == 1 and two_row[n]["rows"] == 2
        assert r["tokens"] == two_row[n]["tokens"] - r["case"]["prompt_tokens"] + 1
    lm_head = payload["lm_head"]
    assert [r["case"]["n"] for r in lm_head] == [64, 128] and all(r["time_s"] > 0 for r in lm_head)


def test_gpu_smoke(tmp_path):
    payload, stdout = run_script("gpu", tmp_path, "--targets-only")
    assert payload["smoke"] and not payload["errors"]
    runs = {(r["variant"], r["method"]) for r in payload["table"]}
    assert runs == {("default", m) for m in ("dpo", "inspo", "inspo_ps")} | {
        ("targets_only", m) for m in ("inspo", "inspo_ps")
    }
    for r in payload["table"]:
        assert r["tokens_per_s"] > 0 and r["tflops_model"] > 0
    assert "MFU" in stdout


def test_gpu_preset_llama3_8b_smoke(tmp_path):
    """The 8B preset's own code path on CPU: the GPU run's case list with tiny shapes, every case run (flex attention
    has no backward on CPU: those are listed as skipped), counting what the FLOP model assumes."""
    payload, stdout = run_script("gpu", tmp_path, "--preset", "llama3-8b")
    assert payload["preset"] == "llama3-8b" and payload["smoke"] and not payload["errors"] and payload["complete"]
    assert "| InSPO prefix-shared |" in stdout

    # The GPU run's cases (same data proportions), in the same order, on tiny shapes of the same architectures
    _, args = gpu.parse_args(["--preset", "llama3-8b"])
    means = {data: tuple(m) for data, m in payload["mean_lengths"].items()}
    gpu_plan = gpu.plan(gpu.build_cases(args, "tokenizer", gpu.data_points(args, means)), means, 989.0)
    fields = ("data", "batch_size", "method", "attn", "unconditional_metrics", "reference", "gradient_checkpointing")
    assert len(payload["plan"]) == len(gpu_plan) == 48
    for smoke, planned in zip(payload["plan"], gpu_plan):
        assert [smoke["case"][k] for k in fields] == [planned["case"][k] for k in fields]
        arch = MODEL_SHAPES[smoke["case"]["model"]]["architecture"]
        assert arch == MODEL_SHAPES[planned["case"]["model"]]["architecture"]
    assert {p["case"]["model"] for p in gpu_plan} == {"llama3-8b", "qwen2-0.5b"}
    assert {p["case"]["prompt_tokens"] + 2 * p["case"]["response_tokens"] for p in gpu_plan} == {1024, 2048}
    for p in gpu_plan:
        assert p["case"]["reference"] == "lora" and p["case"]["gradient_checkpointing"] and not p["skipped"]
        assert p["case"]["prefix_sharing"] is (p["case"]["method"] == "inspo_ps")
    # The planned GPU time fits the preset's budget (an H100's peak)
    assert sum(p["planned_s"] for p in gpu_plan) / 60 < args.max_minutes

    skipped = [p for p in payload["plan"] if p["skipped"]]
    assert skipped and all(p["case"]["attn"] == "flex_attention" for p in skipped)
    assert len(payload["runs"]) == len(payload["plan"]) - len(skipped)
    for r in payload["runs"]:
        c = r["case"]
        assert c["reference"] == "lora" and c["gradient_checkpointing"]
        assert 0 < r["trainable_parameters"] < r["num_parameters"]  # LoRA adapters only
        # Every step fed what the planning FLOP model counts for pairs of these lengths
        expected = pair_counts(c["method"], c["prompt_tokens"], c["response_tokens"], c["unconditional_metrics"])
        for batch in r["batches"]:
            assert {k: batch[k] for k in expected} == {k: c["batch_size"] * v for k, v in expected.items()}
    for row in payload["table"]:
        assert row["tokens_per_s"] > 0 and row["tflops_model"] > 0 and row["time_ratio"] > 0


def test_gpu_max_minutes_leaves_a_partial_result(tmp_path):
    """Cases that would end past `--max-minutes` are left out, and the JSON says so."""
    _, args = gpu.parse_args(["--preset", "llama3-8b", "--output", str(tmp_path / "gpu.json")])
    cases = gpu.build_cases(args, "tokenizer", [{"data": "hh", "batch_size": 1}])
    payload = {"peak_bf16_tflops": None, "runs": [], "plan": gpu.plan(cases, {"hh": ("hh", 100, 50)}, 989.0)}
    gpu.run_plan(payload, cases, args, started=time.time() - 60 * args.max_minutes)  # the budget is spent
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert not written["runs"] and not written["complete"]
    assert all("--max-minutes" in p["skipped"] for p in written["plan"])


def test_gpu_prefix_sharing_value_is_passed_through():
    """A `--prefix-sharing` value other than true/false reaches the case unchanged (for `InSPOConfig`)."""
    _, args = gpu.parse_args(["--preset", "llama3-8b", "--prefix-sharing", "auto"])
    cases = gpu.build_cases(args, "tokenizer", [{"data": "hh", "batch_size": 1}])
    assert {c.method: c.prefix_sharing for c in cases} == {"dpo": False, "inspo": False, "inspo_ps=auto": "auto"}
    _, args = gpu.parse_args(["--prefix-sharing", "true"])
    assert args.prefix_sharing is True


def test_gpu_exactness_smoke(tmp_path):
    payload, _ = run_script("gpu_exactness", tmp_path)
    layouts = {r["layout"] for r in payload["results"]}
    assert layouts == {"ps_sdpa", "ps_flex", "ps_eager"}
    for r in payload["results"]:
        assert "error" not in r, r
        assert r["max_rel_diff"] < 1e-5 and r["mean_abs_logp"] > 1.0


def test_profile_step_smoke(tmp_path):
    payload, _ = run_script("profile_step", tmp_path)
    rows = {r["label"]: r for r in payload["results"]}
    assert set(rows) == {"DPOTrainer", "InSPO two-row", "InSPO two-row (unconditional_metrics=False)",
                         "InSPO prefix-shared"}  # fmt: skip
    for r in rows.values():
        assert r["self_cpu_ms"]["lm_head"] > 0 and r["self_cpu_ms"]["attention"] > 0
    # unconditional_metrics=False scores the target segments only: half the positions of the default
    assert 2 * rows["InSPO two-row (unconditional_metrics=False)"]["scored"] == rows["InSPO two-row"]["scored"]
