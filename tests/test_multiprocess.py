# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""`accelerate launch --num_processes 2` on CPU (gloo) trains like one process with twice the per-device batch.

Two processes with per-device batch `B` see, at every step, the same `2B` pairs as one process with batch `2B` (the
Trainer's seeded sampler draws one order, accelerate hands consecutive slices of it to the processes), and DDP
averages their gradients, so each optimizer step is the same. The logged loss is the mean over processes, and every
InSPO metric is gathered across processes before it is averaged, so the logged trajectories match too.

Tolerance: `rel=1e-4, abs=1e-5`. The runs differ only in float32 summation order (a gloo all-reduce of two half-batch
gradients instead of one batch mean) and in padding (each process pads its rows to its own longest row); observed
differences are below 1e-6 over the run. A real discrepancy (e.g. summed instead of averaged gradients, or metrics of
one process only) moves these values by 1e-2 or more.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import make_rows


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "train_tiny.py"
DDP_CONFIG = REPO / "examples" / "accelerate_configs" / "multi_gpu.yaml"
# Keys that depend on wall-clock time, on per-process padding (TRL's FLOP estimate) or on the row layout, not on the
# training computation. `num_tokens` counts the tokens the model processed: with the default `prefix_sharing="auto"`
# each process picks the layout of its own half-batch (tree rows or two rows), so the count depends on the split.
SKIPPED = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "num_tokens")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_script():
    spec = importlib.util.spec_from_file_location("train_tiny", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_processes_match_one_process_with_double_batch(tmp_path, tiny_model_dir):
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_rows(32, seed=9)))
    common = ["--model", tiny_model_dir, "--data", str(data), "--max_steps", "4", "--seed", "3"]
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf-home"),  # no user accelerate/datasets config leaks in
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "CI": "1",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    # The shipped DDP config, on CPU: accelerate starts 2 processes that talk over gloo.
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(DDP_CONFIG),
        "--num_processes", "2",
        "--mixed_precision", "no",
        "--main_process_port", str(free_port()),
        str(SCRIPT), *common, "--batch_size", "2", "--output_json", str(tmp_path / "two.json"),
        "--output_dir", str(tmp_path / "two"),
    ]  # fmt: skip
    two_procs = subprocess.Popen(
        launch, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        # Meanwhile, the single-process baseline runs the same script in this process.
        one_args = ["--batch_size", "4", "--output_json", str(tmp_path / "one.json")]
        one = load_script().run([*common, *one_args, "--output_dir", str(tmp_path / "one")])
        output, _ = two_procs.communicate(timeout=300)
    finally:
        if two_procs.poll() is None:
            two_procs.kill()
    assert two_procs.returncode == 0, output[-4000:]
    two = json.loads((tmp_path / "two.json").read_text())

    assert one["num_processes"] == 1
    assert two["num_processes"] == 2 and two["distributed_type"] == "DistributedType.MULTI_CPU"
    assert two["backend"] == "gloo"
    steps_one = [e for e in one["log_history"] if "loss" in e]
    steps_two = [e for e in two["log_history"] if "loss" in e]
    assert len(steps_one) == len(steps_two) == 4
    assert len(one["log_history"]) == len(two["log_history"])
    for a, b in zip(two["log_history"], one["log_history"]):
        assert a.keys() == b.keys()
        for key in a:
            if key in SKIPPED:
                continue
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a.get("step"), key)
    # The run is not degenerate: the policy moved and the rewards became non-zero.
    assert any(abs(e["rewards/margins"]) > 1e-3 for e in steps_one[1:])
    for steps in (steps_one, steps_two):
        assert steps[-1]["num_tokens"] > steps[0]["num_tokens"] > 0


@pytest.mark.parametrize(
    ("name", "expected_env"),
    [
        ("multi_gpu", {"ACCELERATE_MIXED_PRECISION": "bf16"}),
        (
            "deepspeed_zero2",
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
        ),
        (
            "deepspeed_zero3",
            {
                "ACCELERATE_USE_DEEPSPEED": "true",
                "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
                "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true",
            },
        ),
        (
            "fsdp2",
            {
                "ACCELERATE_USE_FSDP": "true",
                "FSDP_VERSION": "2",
                "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
                "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
            },
        ),
    ],
)
def test_accelerate_configs_parse_as_accelerate_launch_reads_them(name, expected_env):
    """What `accelerate launch --config_file ...` does before starting processes: read the config into launch
    arguments, then into the environment each process gets. DeepSpeed and FSDP need CUDA to run (not here), but their
    configs are checked to select the intended engine and stage."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = REPO / "examples" / "accelerate_configs" / f"{name}.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    assert args.num_processes == 8 and args.num_machines == 1 and args.mixed_precision == "bf16"
    assert sum([args.multi_gpu, args.use_deepspeed, args.use_fsdp]) == 1
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    for key, value in expected_env.items():
        assert env.get(key) == value, key
    if name == "multi_gpu":
        assert args.multi_gpu and "ACCELERATE_USE_FSDP" not in env and "ACCELERATE_USE_DEEPSPEED" not in env


def test_launch_without_a_process_group_is_refused(tmp_path, tiny_model_dir):
    """`accelerate launch --num_processes 2` on CPU without `use_cpu=True`: transformers forms no process group, so
    each process would silently train its own copy on all the data. The trainer refuses, naming the fix."""
    script = tmp_path / "no_group.py"
    script.write_text(
        "import sys\n"
        "from datasets import Dataset\n"
        "from trl_inspo import InSPOConfig, InSPOTrainer\n"
        "rows = [{'prompt': 'hello', 'chosen': ' yes', 'rejected': ' no'}] * 4\n"
        "args = InSPOConfig(output_dir=sys.argv[2], report_to='none', bf16=False, max_steps=1)\n"
        "InSPOTrainer(model=sys.argv[1], args=args, train_dataset=Dataset.from_list(rows))\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "CI": "1"}
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG), "--num_processes", "2",
        "--mixed_precision", "no", "--main_process_port", str(free_port()), str(script), tiny_model_dir,
        str(tmp_path / "out"),
    ]  # fmt: skip
    result = subprocess.run(launch, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "WORLD_SIZE=2" in result.stderr and "--use_cpu true" in result.stderr
