# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The `trl-inspo` command and the example script, end to end on local files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from .conftest import make_rows


REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", "CI": "1"}


def run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def assert_trained_model(output_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    prompt = tokenizer("what is two plus", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    card = (output_dir / "README.md").read_text()
    assert "inspo" in card and "2512.23126" in card


def test_cli_trains_on_local_jsonl(tmp_path, tiny_model_dir):
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_rows(24)))
    out = tmp_path / "run"
    run(
        [
            shutil.which("trl-inspo") or "trl-inspo",
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_name",
            str(data),
            "--output_dir",
            str(out),
            "--max_steps",
            "3",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "1e-3",
            "--unconditional_loss_weight",
            "0.5",
            "--reference_conditioning",
            "prompt_only",
            "--alternative_separator",
            "\n",
            "--bf16",
            "false",
            "--gradient_checkpointing",
            "false",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
        ],
        cwd=tmp_path,
    )
    assert_trained_model(out)
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert not torch.equal(
        before.model.layers[0].self_attn.q_proj.weight, after.model.layers[0].self_attn.q_proj.weight
    )


def test_example_script_with_yaml_config_and_eval(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in make_rows(16)))
    (data / "test.jsonl").write_text("\n".join(json.dumps(r) for r in make_rows(8, seed=1)))
    config = {
        "model_name_or_path": tiny_model_dir,
        "dataset_name": str(data),
        "output_dir": str(tmp_path / "run"),
        "max_steps": 2,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "per_device_train_batch_size": 4,
        "loss_type": ["sigmoid", "sft"],
        "loss_weights": [1.0, 0.5],
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "save_strategy": "no",
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run(
        [sys.executable, str(REPO / "examples/scripts/inspo.py"), "--config", str(tmp_path / "config.yaml")],
        cwd=tmp_path,
    )
    assert "eval_rewards_unconditional/accuracies" in result.stdout + result.stderr
    assert_trained_model(tmp_path / "run")


def test_cli_rejects_unknown_options(tmp_path):
    result = subprocess.run(
        ["trl-inspo", "--not_an_option", "1"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0 and "not_an_option" in result.stderr


def test_quickstart_config_runs(tmp_path):
    """The README's quickstart (shortened to one epoch), from the repository root as documented."""
    out = tmp_path / "quickstart"
    run(
        [
            "trl-inspo",
            "--config",
            "examples/configs/quickstart.yaml",
            "--output_dir",
            str(out),
            "--num_train_epochs",
            "1",
        ],
        cwd=REPO,
    )
    assert_trained_model(out)


@pytest.mark.parametrize("path", ["examples/tiny-llama"])
def test_shipped_tiny_model_is_the_deterministic_build(tmp_path, path):
    """`python -m trl_inspo.tiny` reproduces the shipped quickstart model's tokenizer and config."""
    run(
        [
            sys.executable,
            "-m",
            "trl_inspo.tiny",
            "--output_dir",
            str(tmp_path / "tiny"),
            "--texts",
            "examples/data/quickstart.jsonl",
            "--hidden_size",
            "128",
            "--num_layers",
            "4",
        ],
        cwd=REPO,
    )
    shipped = json.loads((REPO / path / "tokenizer.json").read_text())
    rebuilt = json.loads((tmp_path / "tiny" / "tokenizer.json").read_text())
    assert shipped["model"]["vocab"] == rebuilt["model"]["vocab"]
    a = AutoModelForCausalLM.from_pretrained(REPO / path)
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    assert a.config.to_dict() == b.config.to_dict() | {"_name_or_path": a.config._name_or_path}
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa, pb, msg=name)


def test_first_hour_paper_cuts(tmp_path, tiny_model_dir, capsys):
    """What a new user hits first: an empty local file, evaluation on a single local file, and the help text."""
    from trl_inspo.cli import cli_main, make_parser
    from trl_inspo.errors import InSPODataError

    base = ["--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    for path in (empty, blank):  # `datasets` itself ends in a bare StopIteration on these
        with pytest.raises(InSPODataError, match=f"The dataset '{path}' is empty"):
            cli_main(base + ["--dataset_name", str(path)])

    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_rows(8)))
    with pytest.raises(ValueError) as error:
        cli_main(base + ["--dataset_name", str(data), "--eval_strategy", "steps"])
    message = str(error.value)
    assert "`eval_strategy='steps'`" in message and "IntervalStrategy" not in message
    assert "train.jsonl and a test.jsonl" in message and "--eval_strategy no" in message

    make_parser().print_help()
    help_text = " ".join(capsys.readouterr().out.split())
    assert "local .json/.jsonl/.csv/.parquet file or a folder" in help_text
