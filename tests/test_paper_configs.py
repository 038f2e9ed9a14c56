# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Every YAML config under examples/configs/ parses through the `trl-inspo` parser into a valid `InSPOConfig`; the
paper configs (examples/configs/paper/<model>/<variant>.yaml) set the loss and reference conditioning their name
claims, and say how to launch them. Parsing only: no model or dataset is loaded."""

import re
import shlex
import warnings
from pathlib import Path

import pytest
from transformers.utils import is_torch_bf16_gpu_available

from trl_inspo import InSPOConfig, InSPOWarning
from trl_inspo.cli import make_parser


REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "examples" / "configs").rglob("*.y*ml"))
PAPER = REPO / "examples" / "configs" / "paper"
PAPER_CONFIGS = sorted(PAPER.rglob("*.yaml"))

MODELS = {
    "llama3-8b-instruct": "meta-llama/Meta-Llama-3-8B-Instruct",
    "mistral-7b-instruct": "mistralai/Mistral-7B-Instruct-v0.2",
    "gemma2-9b-it": "google/gemma-2-9b-it",
}
# variant -> (loss_type, reference_conditioning or None for reference-free), per the InSPO method notes
VARIANTS = {
    "dpo": (["sigmoid"], "conditional"),
    "ipo": (["ipo"], "prompt_only"),
    "rdpo": (["sigmoid"], "prompt_only"),
    "simpo": (["simpo"], None),
    "orpo": (["sft", "orpo"], None),
}
ACCELERATE_CONFIGS = {"multi_gpu.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp2.yaml"}
GPUS = 8  # what the paper configs' headers assume


def parse(path: Path):
    args = ["--config", str(path)]
    if not is_torch_bf16_gpu_available():
        # transformers refuses `bf16: true` on a machine without a bf16 GPU unless told the run is on CPU; this only
        # lifts that device check, every field still comes from the file.
        args += ["--use_cpu", "true"]
    return make_parser().parse_args_and_config(args=args, fail_with_unknown_args=True)


def test_the_expected_configs_exist():
    names = {p.relative_to(PAPER).as_posix() for p in PAPER_CONFIGS}
    assert names == {f"{m}/{v}.yaml" for m in MODELS for v in VARIANTS}
    assert REPO.joinpath("examples", "configs", "quickstart.yaml") in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.relative_to(REPO).as_posix() for p in CONFIGS])
def test_every_config_parses_into_a_valid_inspo_config(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative output_dir values stay out of the repository
    script_args, training_args, model_args, dataset_args = parse(path)
    assert isinstance(training_args, InSPOConfig)
    assert model_args.model_name_or_path and (script_args.dataset_name or dataset_args.datasets)
    # The parsed config is consistent: re-checking it raises nothing and warns about nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error", InSPOWarning)
        training_args._check_inspo_options()


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=[p.relative_to(PAPER).as_posix() for p in PAPER_CONFIGS])
def test_paper_config_matches_its_name(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_dir, variant = path.parent.name, path.stem
    script_args, args, model_args, _ = parse(path)
    loss_type, conditioning = VARIANTS[variant]

    assert model_args.model_name_or_path == MODELS[model_dir]
    assert args.loss_type == loss_type
    assert args.conditional_loss_weight == 1.0 and args.unconditional_loss_weight == 0.0
    if conditioning is None:
        assert args.reference_free
        assert args.reference_conditioning == "conditional"  # the default; prompt_only is refused without a reference
    else:
        assert not args.reference_free and args.reference_conditioning == conditioning
    assert (args.rdpo_alpha > 0) == (variant == "rdpo")
    if variant == "orpo":  # ORPO = SFT + lambda * odds ratio
        assert args.loss_weights[0] == 1.0 and 0 < args.loss_weights[1] <= 1
    if variant == "simpo":
        assert args.simpo_gamma > 0 and args.beta >= 1  # SimPO's beta is on average log-probabilities
    else:
        assert args.loss_weights is None or variant == "orpo"

    # GPU setup the papers use
    assert args.bf16 and args.gradient_checkpointing
    assert args.num_train_epochs == 1
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * GPUS == 128
    assert 1e-7 <= args.learning_rate <= 2e-6
    assert script_args.dataset_name == "trl-lib/ultrafeedback_binarized"


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=[p.relative_to(PAPER).as_posix() for p in PAPER_CONFIGS])
def test_paper_config_header_says_gpu_hardware_and_launch_command(path, tmp_path, monkeypatch):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").rstrip())
    assert header[0].startswith("GPU config:")
    assert any(line.startswith("Hardware:") and "GPU" in line for line in header)
    assert any("Where the hyperparameters come from" in line for line in header)
    launch = [line for line in header if line.startswith("accelerate launch")]
    assert len(launch) == 1
    argv = shlex.split(launch[0])
    config_file = argv[argv.index("--config_file") + 1]
    assert Path(config_file).parent.as_posix() == "examples/accelerate_configs"
    assert Path(config_file).name in ACCELERATE_CONFIGS and (REPO / config_file).is_file()
    script = argv[argv.index("--config_file") + 2]
    assert (REPO / script).is_file() and script == "examples/scripts/inspo.py"
    assert argv[argv.index("--config") + 1] == path.relative_to(REPO).as_posix()

    # The values the header attributes to a source are the values the file sets.
    monkeypatch.chdir(tmp_path)
    _, args, _, _ = parse(path)
    text = " ".join(header)

    def stated(pattern):
        values = {float(v) for v in re.findall(pattern, text)}
        assert values, f"{path.name}: the header does not state {pattern!r}"
        return values

    assert stated(r"learning_rate ([0-9.]+e-[0-9]+)") == {args.learning_rate}
    assert stated(r"(?<![/\w])beta (?:\(IPO's tau\) )?([0-9.]+)") == {args.beta}
    if args.rdpo_alpha:
        assert stated(r"rdpo_alpha ([0-9.]+)") == {args.rdpo_alpha}
    if "simpo" in args.loss_type:
        assert stated(r"simpo_gamma = [0-9.]+ x [0-9.]+ = ([0-9.]+)") == {args.simpo_gamma}
    if "orpo" in args.loss_type:
        assert stated(r"lambda ([0-9.]+)") == {args.loss_weights[1]}
