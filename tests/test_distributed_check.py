# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""`benchmarks/distributed_check.py --dry-run`: everything of the GPU check except the sharding itself.

The dry run checks the accelerate configs users use, derives the one-process config of every launcher, plans the
`accelerate launch` command of every case, self-tests the comparison logic, and trains the per-run function in-process
on CPU on a tiny model (plain, save + resume, LoRA) and compares those runs as the GPU run compares its cases. Here we
read its JSON and probe the comparison logic with real and deliberately perturbed trajectories.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "distributed_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("distributed_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dc():
    return load_script()


@pytest.fixture(scope="module")
def dry(dc, tmp_path_factory):
    work = tmp_path_factory.mktemp("dcheck")
    output = work / "report.json"
    deepspeed_before = "deepspeed" in sys.modules
    code = dc.main(["--dry-run", "--work-dir", str(work / "work"), "--output", str(output)])
    report = json.loads(output.read_text())
    imported_deepspeed = "deepspeed" in sys.modules and not deepspeed_before
    return {"code": code, "report": report, "work": work / "work", "imported_deepspeed": imported_deepspeed}


def test_dry_run_passes_without_deepspeed(dry):
    assert dry["code"] == 0 and dry["report"]["ok"] is True
    assert not dry["imported_deepspeed"]
    assert dry["report"]["mode"] == "dry-run"


def test_example_configs_select_the_intended_engine(dry):
    configs = dry["report"]["example_configs"]
    assert set(configs) == {"multi_gpu.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp2.yaml"}
    assert all(c["ok"] and not c["problems"] for c in configs.values())
    assert configs["deepspeed_zero2.yaml"]["facts"]["zero_stage"] == 2
    assert configs["deepspeed_zero3.yaml"]["facts"]["zero_stage"] == 3
    assert configs["deepspeed_zero3.yaml"]["facts"]["zero3_save_16bit_model"] is True
    assert configs["fsdp2.yaml"]["facts"]["fsdp_version"] == 2
    # the one-process configs derived from them, as `accelerate launch --num_processes 1` reads them
    launch = dry["report"]["launch_arguments"]
    assert launch["plain"]["selected"]["use_deepspeed"] is False and launch["plain"]["selected"]["use_fsdp"] is False
    assert launch["zero3"]["selected"]["use_deepspeed"] is True
    assert launch["fsdp2"]["selected"]["use_fsdp"] is True
    assert all(v["ok"] and v["selected"]["num_processes"] == 1 for v in launch.values())


def test_every_gpu_case_is_planned_with_its_launch_command(dc, dry):
    planned = dry["report"]["planned"]
    assert set(planned) == {case.name for case in dc.CASES}
    for case in dc.CASES:
        cmd = planned[case.name]["command"]
        assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
        assert cmd[4].endswith(f"{case.launcher}.yaml")
        assert cmd[cmd.index("--num_processes") + 1] == "1"
        assert cmd[cmd.index("--case") + 1] == case.name
        assert planned[case.name]["status"] == "not run (dry run)"
    resume = planned["zero3_resume"]["command"]
    assert resume[resume.index("--resume-dir") + 1].endswith("runs/zero3")
    assert {"zero3", "fsdp2"} <= {c.launcher for c in dc.CASES if c.lora}


def test_dry_run_trains_saves_and_resumes(dry):
    runs, analysis = dry["report"]["runs"], dry["report"]["analysis"]
    assert set(runs) == {"plain", "plain_resume", "plain_lora"}
    for name, run in runs.items():
        assert sorted(int(s) for s in run["series"]) == [1, 2, 3], name
        assert [t["step"] for t in run["step_times"]] == ([3] if name == "plain_resume" else [1, 2, 3])
        assert analysis[name]["ok"], (name, analysis[name])
    assert runs["plain"]["reference_class"] == "Qwen2ForCausalLM"  # a separately loaded reference
    assert runs["plain_lora"]["reference_class"] is None  # the adapter-disabled policy
    assert runs["plain_resume"]["resumed_from"].endswith("checkpoint-2")
    resume = analysis["plain_resume"]["checks"]["resume"]
    assert resume["resumed_steps"] == [3] and resume["steps"] == [3]
    # the saves hold the trained weights: they score differently from the initial model
    assert analysis["plain"]["checks"]["saved_model"]["differs_from_initial"]
    assert "adapter_model.safetensors" in runs["plain_lora"]["saved_files"]


def test_comparison_flags_a_perturbed_real_trajectory(dc, dry):
    plain = dc.load_record(dry["work"] / "results" / "plain.json")["series"]
    num_layers = 24
    tol = dc.rtol(num_layers, 2)
    same = dc.compare_series(plain, plain, num_layers, dc.BF16_UNIT_ROUNDOFF)
    assert same["ok"] and same["worst"]["rel_dev"] == 0.0

    def perturbed(factor):
        series = {s: dict(v) for s, v in plain.items()}
        series[2]["loss"] *= 1 + factor * tol
        return dc.compare_series(series, plain, num_layers, dc.BF16_UNIT_ROUNDOFF)

    assert perturbed(0.5)["ok"]  # inside the bf16 tolerance of step 2
    flagged = perturbed(2.0)
    assert not flagged["ok"] and flagged["worst"]["step"] == 2 and flagged["worst"]["key"] == "loss"
    # fp32 tolerances (the dry run's) flag the same perturbation scaled down to fp32 rounding
    fp32 = dc.rtol(num_layers, 2, dc.FP32_UNIT_ROUNDOFF)
    series = {s: dict(v) for s, v in plain.items()}
    series[2]["logps/chosen"] *= 1 + 100 * fp32
    assert not dc.compare_series(series, plain, num_layers, dc.FP32_UNIT_ROUNDOFF)["ok"]
    # no common step: not a pass
    assert not dc.compare_series({}, plain, num_layers, dc.BF16_UNIT_ROUNDOFF)["ok"]


def test_analysis_flags_a_stuck_reference_and_a_restarted_resume(dc, dry):
    plain = dc.load_record(dry["work"] / "results" / "plain.json")
    resumed = dc.load_record(dry["work"] / "results" / "plain_resume.json")
    cases = (dc.Case("plain", "plain"), dc.Case("plain_resume", "plain", baseline="plain", resume_of="plain"))
    u = dc.FP32_UNIT_ROUNDOFF
    assert dc.analyse({"plain": plain, "plain_resume": resumed}, cases, 2, u, 0.1, 2)["plain_resume"]["ok"]
    # a resume that restarted the data: its step 3 is the uninterrupted run's step 1
    restarted = json.loads(json.dumps(resumed))
    restarted["series"] = {int(s): v for s, v in restarted["series"].items()}
    restarted["series"][3] = {**plain["series"][1], "step": 3}
    result = dc.analyse({"plain": plain, "plain_resume": restarted}, cases, 2, u, 0.1, 2)["plain_resume"]
    assert not result["ok"] and not result["checks"]["resume"]["ok"]
    # a first-step margin away from 0: the reference is not the initial policy
    broken = json.loads(json.dumps(plain))
    broken["series"] = {int(s): v for s, v in broken["series"].items()}
    broken["series"][1]["rewards/margins"] = 0.5
    assert not dc.analyse({"plain": broken}, cases[:1], 2, u, 0.1, 2)["plain"]["checks"]["initial_margin"]["ok"]
    # a case that did not run is not a pass
    missing = dc.analyse({"plain": plain}, cases, 2, u, 0.1, 2)
    assert missing["plain_resume"]["ok"] is False


def test_tolerance_follows_the_bf16_rounding_model(dc):
    # u * sqrt(6 (2L + 2) t), u = 2^-8: 0.068 at the first step of a 24-layer model, growing like sqrt(t)
    assert dc.rtol(24, 1) == pytest.approx(2**-8 * 300**0.5)
    assert dc.rtol(24, 1) == pytest.approx(0.0677, abs=1e-4)
    assert dc.rtol(24, 4) == pytest.approx(2 * dc.rtol(24, 1))
    assert dc.rtol(2, 1, dc.FP32_UNIT_ROUNDOFF) < 1e-5
    with pytest.raises(ValueError):
        dc.rtol(24, 0)
    assert dc.self_test()["ok"]


def test_derived_config_refuses_an_example_with_the_wrong_engine(dc, monkeypatch):
    original = dc.load_example_config

    def wrong_stage(filename):
        config = original(filename)
        if filename == "deepspeed_zero3.yaml":
            config["deepspeed_config"]["zero_stage"] = 2
        return config

    monkeypatch.setattr(dc, "load_example_config", wrong_stage)
    with pytest.raises(ValueError, match="zero_stage=2"):
        dc.derive_config("zero3")
    assert not dc.check_example_configs()["deepspeed_zero3.yaml"]["ok"]
