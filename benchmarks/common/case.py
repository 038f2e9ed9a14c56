# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""`Case`: one training run of `trl.DPOTrainer` or `InSPOTrainer` to measure."""

from dataclasses import asdict, dataclass


# Short names of the runs in results and tables, and the `Case` fields that make them
METHODS = ("dpo", "inspo", "inspo_ps")
METHOD_FIELDS = {
    "dpo": {"trainer": "dpo"},
    "inspo": {"trainer": "inspo", "prefix_sharing": False},
    "inspo_ps": {"trainer": "inspo", "prefix_sharing": True},
    "inspo_ps=auto": {"trainer": "inspo", "prefix_sharing": "auto"},
}
METHOD_LABELS = {"dpo": "DPOTrainer", "inspo": "InSPO two-row", "inspo_ps": "InSPO prefix-shared"}


def method_name(trainer: str, prefix_sharing: bool | str) -> str:
    """`dpo`, `inspo` (two rows per pair), `inspo_ps` (prefix-shared) or `inspo_ps=<value>` for another
    `prefix_sharing` value (e.g. `"auto"`)."""
    if trainer == "dpo":
        return "dpo"
    if prefix_sharing is False:
        return "inspo"
    return "inspo_ps" if prefix_sharing is True else f"inspo_ps={prefix_sharing}"


def method_label(method: str) -> str:
    """The table label of a method name."""
    if method in METHOD_LABELS:
        return METHOD_LABELS[method]
    return f"InSPO prefix_sharing={method.split('=', 1)[1]}"


@dataclass
class Case:
    """One training run: the trainer and its options, the model, the data, and how the run is measured.

    The InSPO options (`prefix_sharing`, `unconditional_metrics`, `max_alternative_length`) go to `InSPOConfig`
    unchanged. `variant` and `label` only name the run (the scripts group and print results by them).
    """

    trainer: str  # "dpo" (trl.DPOTrainer) or "inspo" (InSPOTrainer)
    model: str  # key of MODEL_SHAPES
    tokenizer_dir: str  # from `data.prepare_tokenizer`
    data: str = "hh"  # key of DATASETS; with prompt_tokens/response_tokens, the profile those lengths follow
    prompt_tokens: int | None = None  # with response_tokens: synthetic rows of exactly these lengths
    response_tokens: int | None = None
    hh_path: str | None = None  # the HH-RLHF sample (None: synthetic chat-like rows for "hh")
    batch_size: int = 4  # pairs per step
    warmup: int = 1  # steps run before the measured ones
    steps: int = 5  # measured steps
    prefix_sharing: bool | str = False
    unconditional_metrics: bool = True
    max_alternative_length: int | None = None
    reference: str = "live"  # "live" (a frozen copy), "precomputed", "lora" (LoRA r=16, adapter-disabled reference)
    attn: str = "sdpa"  # attention implementation
    gradient_checkpointing: bool = False
    lm_head: str = "stock"  # "stock", or "compact": TRL's LM head scores only labelled positions on CPU too
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None  # torch.set_num_threads
    seed: int = 0
    profile: bool = False  # run `torch.profiler` over the first measured step
    tmp_dir: str = "/tmp"
    variant: str = "default"
    label: str = ""

    def __post_init__(self):
        if self.hh_path is not None:  # a `Path` from the command line: kept as text, so that the case is JSON
            self.hh_path = str(self.hh_path)

    @property
    def method(self) -> str:
        return method_name(self.trainer, self.prefix_sharing)

    def to_dict(self) -> dict:
        """The case as results record it: every field, plus `method`."""
        return {**asdict(self), "method": self.method}


def run_settings(args, tokenizer_dir: str) -> dict:
    """The `Case` fields that a script's command line (`--warmup`, `--steps`, `--threads`, `--data-path` where it has
    one) sets alike for all its cases, with the benchmark tokenizer."""
    return dict(
        tokenizer_dir=tokenizer_dir,
        hh_path=getattr(args, "data_path", None),
        warmup=args.warmup,
        steps=args.steps,
        threads=args.threads,
    )
