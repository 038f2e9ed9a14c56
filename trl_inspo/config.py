# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Configuration for [`InSPOTrainer`]."""

import math
from dataclasses import dataclass, field, fields

from trl import DPOConfig


# Loss types of `trl.DPOConfig` (TRL 1.16), all supported in InSPO form.
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
# Loss types this plugin adds.
INSPO_LOSS_TYPES = ("simpo", "orpo")
SUPPORTED_LOSS_TYPES = DPO_LOSS_TYPES + INSPO_LOSS_TYPES
# Losses that never look at the reference model: a configuration made only of these loads none.
REFERENCE_FREE_LOSS_TYPES = frozenset({"sft", "simpo", "orpo"})
# Losses built on the chosen-rejected score difference, the only ones with an f-divergence generalization (f-DPO).
F_DIVERGENCE_LOSS_TYPES = frozenset(
    {"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"}
)
REFERENCE_CONDITIONING = ("conditional", "prompt_only")


class InSPOConfigError(ValueError):
    """Invalid InSPO option or option combination."""


@dataclass
class InSPOConfig(DPOConfig):
    r"""
    Configuration class for the [`InSPOTrainer`], a drop-in replacement for [`trl.DPOConfig`].

    InSPO (Li, Lan & Qi, 2025, arXiv:2512.23126) scores each response of a preference pair *given the prompt and the
    other response*: the chosen response is conditioned on the rejected one and vice versa. Every field of
    [`trl.DPOConfig`] keeps its meaning; the fields below are added.

    Parameters:
        reference_conditioning (`str`, *optional*, defaults to `"conditional"`):
            What the reference model sees. `"conditional"`: the prompt and the alternative response, like the policy,
            i.e. `log pi_ref(y_w | x, y_l)`. `"prompt_only"`: the prompt alone, `log pi_ref(y_w | x)`, as in DPO.
            Both values come from the same reference forward.
        conditional_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the loss computed on the conditional log-probabilities `log pi(y_w | x, y_l)` and
            `log pi(y_l | x, y_w)` (the InSPO objective).
        unconditional_loss_weight (`float`, *optional*, defaults to `0.0`):
            Weight of the same loss computed on the unconditional log-probabilities `log pi(y_w | x)` and
            `log pi(y_l | x)` against the prompt-only reference (standard DPO). They are read from the same policy
            forward, so this term costs no extra forward pass.
        max_alternative_length (`int`, *optional*):
            Keep only the first `max_alternative_length` tokens of the alternative response (the one conditioned on).
            Only valid when nothing needs the unconditional log-probabilities of the whole response
            (`reference_conditioning="conditional"`, `unconditional_loss_weight=0` and no `"sft"`/`"orpo"` loss).
        alternative_separator (`str`, *optional*):
            Text placed between the alternative and the target response, tokenized once without special tokens.
            `None` concatenates the token sequences directly, as in the paper.
        simpo_gamma (`float`, *optional*, defaults to `0.5`):
            Target reward margin gamma of the `"simpo"` loss.
        rdpo_alpha (`float`, *optional*, defaults to `0.0`):
            R-DPO length penalty (Park et al., 2024): the `"sigmoid"` margin becomes `beta * (rho_w - rho_l) +
            rdpo_alpha * (|y_w| - |y_l|)`, the Bradley-Terry margin of the length-regularised reward
            `r - rdpo_alpha * |y|`: the implicit reward `beta * rho` of a longer response is penalised by `rdpo_alpha`
            per token, so a longer chosen response earns less push.
        prefix_sharing (`bool`, *optional*, defaults to `False`):
            Pack each pair into one row `x[:-1] | x[-1] y_w | x[-1] y_l | y_l | y_w` whose branches attend to their
            ancestors only (a 4D attention mask) and continue their parent's position ids: the prompt is processed
            once, and the four log-probabilities equal those of the two-row layout. Needs a model that takes a custom
            4D mask (`attn_implementation` `"sdpa"`, `"flex_attention"` or `"eager"`, no sliding-window layers).
        unconditional_metrics (`bool`, *optional*, defaults to `True`):
            Also score the alternative segments of the policy forward to log the unconditional values
            (`rewards_unconditional/*`, `logps_unconditional/*`). With `False`, and when no loss term reads the
            policy's unconditional log-probabilities (`unconditional_loss_weight=0`, no `"sft"`/`"orpo"` loss), the
            fused LM head scores only the target segments (and the live reference forward too, unless
            `reference_conditioning="prompt_only"` needs its prompt-only values): the loss is unchanged and the LM
            head does half the work, which pays on long responses with a large vocabulary.
        strict_data (`list[str]`, *optional*, defaults to `[]`):
            Row conditions that raise an error when the dataset is prepared, instead of being dropped and counted
            (`"empty_response"`, `"identical_responses"`, `"prompt_too_long"`) or counted (`"prompt_truncated"`,
            `"alternative_truncated"`, `"alternative_removed"`, `"target_truncated"`); `["all"]` names every
            condition. Counts are in `trainer.inspo_dropped` / `trainer.inspo_truncated` (see `trl_inspo.validation`).

    Example:

    ```python
    >>> from trl_inspo import InSPOConfig

    >>> config = InSPOConfig(output_dir="out", beta=0.1, unconditional_loss_weight=0.5, report_to="none")
    >>> config.needs_unconditional_logps
    True
    ```
    """

    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata={
            "help": "Type of loss to use, applied to the conditional log-probabilities (and to the unconditional ones "
            "for the unconditional term). Every `DPOConfig` loss type plus `'simpo'` and `'orpo'`: "
            + ", ".join(f"`'{t}'`" for t in SUPPORTED_LOSS_TYPES)
            + ". Several types are combined with `loss_weights`."
        },
    )
    reference_conditioning: str = field(
        default="conditional",
        metadata={
            "help": "What the reference model sees: `'conditional'` (the prompt and the alternative response, like "
            "the policy) or `'prompt_only'` (the prompt alone, as in DPO).",
            "choices": list(REFERENCE_CONDITIONING),
        },
    )
    conditional_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the loss on the conditional log-probabilities (the InSPO objective)."},
    )
    unconditional_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the same loss on the unconditional log-probabilities (standard DPO), read from the "
            "same policy forward pass."
        },
    )
    max_alternative_length: int | None = field(
        default=None,
        metadata={
            "help": "Keep only the first N tokens of the alternative response. Not compatible with anything that "
            "needs the unconditional log-probabilities of the whole response."
        },
    )
    alternative_separator: str | None = field(
        default=None,
        metadata={
            "help": "Text placed between the alternative and the target response (tokenized once, without special "
            "tokens). `None` concatenates directly, as in the paper."
        },
    )
    simpo_gamma: float = field(
        default=0.5,
        metadata={"help": "Target reward margin gamma of the `'simpo'` loss."},
    )
    rdpo_alpha: float = field(
        default=0.0,
        metadata={
            "help": "R-DPO length penalty on the `'sigmoid'` margin: `beta * (rho_w - rho_l) + rdpo_alpha * (|y_w| - "
            "|y_l|)`, the margin of the length-regularised reward `r - rdpo_alpha * |y|` (Park et al., 2024)."
        },
    )
    prefix_sharing: bool = field(
        default=False,
        metadata={
            "help": "Pack each pair into one row that holds the prompt once, with the two responses as branches of a "
            "tree (4D attention mask, per-branch position ids): the same log-probabilities as the two-row layout for "
            "fewer tokens. Needs attn_implementation 'sdpa', 'flex_attention' or 'eager' and no sliding-window layers."
        },
    )
    unconditional_metrics: bool = field(
        default=True,
        metadata={
            "help": "Also score the alternative segments to log the unconditional metrics (`rewards_unconditional/*`, "
            "`logps_unconditional/*`). `False` skips that LM-head work when no loss reads the policy's unconditional "
            "log-probabilities (unconditional_loss_weight=0, no 'sft'/'orpo' loss); the loss is unchanged."
        },
    )
    strict_data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Row conditions that raise an error when the dataset is prepared instead of being dropped and "
            "counted ('empty_response', 'identical_responses', 'prompt_too_long') or counted ('prompt_truncated', "
            "'alternative_truncated', 'alternative_removed', 'target_truncated'); 'all' names every condition."
        },
    )

    def __post_init__(self):
        if self.bf16 is None and not self.fp16 and not self.use_cpu and not _bf16_accelerator_available():
            # TRL resolves an unset `bf16` to True, which transformers then rejects on a machine without a bf16 GPU
            # unless `use_cpu=True`; leave it off there so that a plain config also runs on CPU.
            self.bf16 = False
        super().__post_init__()
        self._validate_inspo_options()

    # ------------------------------------------------------------------ derived properties
    @property
    def reference_free(self) -> bool:
        """Whether no configured loss looks at the reference model (no reference model is loaded or run)."""
        return set(self.loss_type) <= REFERENCE_FREE_LOSS_TYPES

    @property
    def needs_unconditional_logps(self) -> bool:
        """Whether the loss reads the unconditional log-probabilities `log pi(y | x)` of whole responses."""
        return self.policy_needs_unconditional_logps or self.reference_conditioning == "prompt_only"

    def _unconditional_readers(self, reference: bool) -> str:
        """The options that read the unconditional log-probabilities (the reference's too with `reference`), for
        error messages."""
        reasons = []
        if reference and self.reference_conditioning == "prompt_only":
            reasons.append("reference_conditioning='prompt_only'")
        if self.unconditional_loss_weight > 0:
            reasons.append(f"unconditional_loss_weight={self.unconditional_loss_weight}")
        used = sorted({"sft", "orpo"} & set(self.loss_type))
        if used:
            reasons.append(f"loss_type {used}")
        return " and ".join(reasons)

    @property
    def policy_needs_unconditional_logps(self) -> bool:
        """Whether a loss term reads the policy's unconditional log-probabilities `log pi(y | x)`."""
        return self.unconditional_loss_weight > 0 or bool({"sft", "orpo"} & set(self.loss_type))

    @property
    def reference_needs_unconditional_logps(self) -> bool:
        """Whether a loss term reads the reference's prompt-only log-probabilities `log pi_ref(y | x)`."""
        return not self.reference_free and (
            self.unconditional_loss_weight > 0 or self.reference_conditioning == "prompt_only"
        )

    @property
    def symmetric_truncation(self) -> bool:
        """Whether `max_length` must cut both rows of a pair identically.

        With a prompt-only reference, the reference value of a target response is read from the row where it is the
        alternative, so both rows must keep the same tokens of each response.
        """
        return self.reference_conditioning == "prompt_only" and not self.reference_free

    # ------------------------------------------------------------------ validation
    def _validate_inspo_options(self):
        def fail(msg):
            raise InSPOConfigError(msg)

        if self.reference_conditioning not in REFERENCE_CONDITIONING:
            fail(
                f"`reference_conditioning` must be one of {list(REFERENCE_CONDITIONING)}, got "
                f"{self.reference_conditioning!r}. Use 'conditional' (the reference sees the alternative response, "
                "the paper's DPO setup) or 'prompt_only' (the reference sees the prompt alone)."
            )
        for name in ("conditional_loss_weight", "unconditional_loss_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                fail(f"`{name}` must be a finite number >= 0, got {value!r}. Set it to 0 to disable that term.")
        if self.conditional_loss_weight == 0 and self.unconditional_loss_weight == 0:
            fail(
                "`conditional_loss_weight` and `unconditional_loss_weight` are both 0, so there is nothing to train. "
                "Set `conditional_loss_weight=1.0` for InSPO, or `unconditional_loss_weight=1.0` for plain DPO."
            )
        unknown = [t for t in self.loss_type if t not in SUPPORTED_LOSS_TYPES]
        if unknown:
            fail(f"Unknown `loss_type` {unknown}. Supported loss types: {list(SUPPORTED_LOSS_TYPES)}.")
        if len(set(self.loss_type)) != len(self.loss_type):
            fail(
                f"`loss_type` lists a loss twice: {self.loss_type}. Give each loss once and weight it with "
                "`loss_weights`."
            )
        if self.loss_weights is not None and any(not math.isfinite(w) or w < 0 for w in self.loss_weights):
            fail(f"`loss_weights` must be finite and >= 0, got {self.loss_weights}.")
        if self.max_alternative_length is not None:
            if (
                isinstance(self.max_alternative_length, bool)
                or not isinstance(self.max_alternative_length, int)
                or (self.max_alternative_length < 1)
            ):
                fail(
                    f"`max_alternative_length` must be a positive integer or None, got "
                    f"{self.max_alternative_length!r}."
                )
            if self.needs_unconditional_logps:
                fail(
                    f"`max_alternative_length={self.max_alternative_length}` cannot be combined with "
                    f"{self._unconditional_readers(reference=True)}: these need the unconditional log-probabilities of "
                    "the whole alternative response, which a shortened alternative does not give. Either set "
                    "`max_alternative_length=None`, or use reference_conditioning='conditional' with "
                    "unconditional_loss_weight=0 and no 'sft'/'orpo' loss."
                )
        if not isinstance(self.unconditional_metrics, bool):
            fail(f"`unconditional_metrics` must be True or False, got {self.unconditional_metrics!r}.")
        if not self.unconditional_metrics and self.policy_needs_unconditional_logps:
            fail(
                f"`unconditional_metrics=False` skips the policy's unconditional log-probabilities, but "
                f"{self._unconditional_readers(reference=False)} reads them, so nothing could be skipped. Set "
                "`unconditional_metrics=True` (the default), or drop the unconditional term / 'sft' / 'orpo' loss."
            )
        if self.alternative_separator is not None and not isinstance(self.alternative_separator, str):
            fail(f"`alternative_separator` must be a string or None, got {self.alternative_separator!r}.")
        if self.alternative_separator == "":
            fail("`alternative_separator=''` adds nothing; use `alternative_separator=None` for direct concatenation.")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta > 0):
            fail(f"`beta` must be a finite number > 0, got {self.beta!r}.")
        if self.rdpo_alpha != 0 and "sigmoid" not in self.loss_type:
            fail(
                f"`rdpo_alpha={self.rdpo_alpha}` is the R-DPO length penalty on the 'sigmoid' margin, but `loss_type` "
                f"is {self.loss_type}. Add 'sigmoid' to `loss_type` or set `rdpo_alpha=0`."
            )
        if self.f_divergence_type not in ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"):
            fail(
                f"Unknown `f_divergence_type` {self.f_divergence_type!r}. Use 'reverse_kl', 'forward_kl', "
                "'js_divergence' or 'alpha_divergence'."
            )
        if self.f_divergence_type != "reverse_kl" and not set(self.loss_type) <= F_DIVERGENCE_LOSS_TYPES:
            fail(
                f"`f_divergence_type={self.f_divergence_type!r}` only applies to the loss types built on the "
                f"chosen-rejected reward difference: {sorted(F_DIVERGENCE_LOSS_TYPES)}. You set `loss_type` to "
                f"{self.loss_type}; use f_divergence_type='reverse_kl' with these losses."
            )
        if self.f_divergence_type != "reverse_kl" and set(self.loss_type) <= {"sft"}:
            fail(
                f"`f_divergence_type={self.f_divergence_type!r}` has no effect: no loss reads it ('sft' uses no "
                "reference log-ratio). Use f_divergence_type='reverse_kl', or add a preference loss such as 'sigmoid'."
            )
        if self.ld_alpha is not None and not (0.0 <= self.ld_alpha <= 1.0):
            fail(f"`ld_alpha` must lie in [0, 1] (1 = no down-weighting), got {self.ld_alpha}.")
        if self.ld_alpha is not None and set(self.loss_type) <= {"sft"}:
            fail(
                f"`ld_alpha={self.ld_alpha}` has no effect: no loss reads it ('sft' scores the whole chosen response, "
                "as in TRL). Set `ld_alpha=None`, or add a preference loss such as 'sigmoid'."
            )
        if "discopop" in self.loss_type and not (math.isfinite(self.discopop_tau) and self.discopop_tau > 0):
            fail(
                f"The 'discopop' loss divides its logits by `discopop_tau`, which must be a finite number > 0, got "
                f"{self.discopop_tau}. The DiscoPOP paper uses 0.05."
            )
        smoothed = {"robust", "exo_pair", "aot", "aot_unpaired"}
        if self.label_smoothing != 0 and not smoothed & set(self.loss_type):
            fail(
                f"`label_smoothing={self.label_smoothing}` has no effect: no loss reads it. Only 'robust', "
                f"'exo_pair', 'aot' and 'aot_unpaired' use label smoothing, and `loss_type` is {self.loss_type} (TRL "
                "1.16's 'sigmoid' ignores it too). Set `label_smoothing=0`, or use one of these losses."
            )
        if "exo_pair" in self.loss_type and not (0.0 < self.label_smoothing < 1.0):
            fail(
                f"The 'exo_pair' loss needs `label_smoothing` in (0, 1), got {self.label_smoothing}. The EXO paper "
                "recommends 1e-3."
            )
        if {"robust", "aot", "aot_unpaired"} & set(self.loss_type) and not (0.0 <= self.label_smoothing < 0.5):
            fail(
                f"`label_smoothing` is the probability that a preference label is flipped and must lie in [0, 0.5) "
                f"for the 'robust', 'aot' and 'aot_unpaired' losses, got {self.label_smoothing}."
            )
        if self.use_weighting and {"aot", "aot_unpaired"} & set(self.loss_type):
            fail(
                "`use_weighting=True` (WPO) cannot be combined with 'aot'/'aot_unpaired': those losses sort the "
                "pairs of a batch, so per-pair weights would no longer match their pairs. Remove one of them."
            )
        if self.reference_free:
            if self.sync_ref_model:
                fail(
                    f"`sync_ref_model=True` has no effect: the loss types {self.loss_type} use no reference model. "
                    "Set `sync_ref_model=False`."
                )
            if self.reference_conditioning == "prompt_only":
                fail(
                    f"`reference_conditioning='prompt_only'` has no effect: the loss types {self.loss_type} use no "
                    "reference model. Leave `reference_conditioning` at its default."
                )
        from .validation import normalize_strict_data

        self.strict_data = normalize_strict_data(self.strict_data, self)

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_dpo_config(cls, args: DPOConfig, **overrides) -> "InSPOConfig":
        """Build an [`InSPOConfig`] from a [`trl.DPOConfig`]: every DPO field is kept, InSPO fields take their
        defaults (or `overrides`)."""
        if isinstance(args, cls) and not overrides:
            return args
        values = {f.name: getattr(args, f.name) for f in fields(args) if f.init and hasattr(args, f.name)}
        # `TrainingArguments.__post_init__` stores some fields in resolved form; hand back what the user set.
        values.update(_unresolved_training_arguments(args))
        values.update(overrides)
        return cls(**values)


def _bf16_accelerator_available() -> bool:
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return is_torch_bf16_gpu_available() or is_torch_xla_available()


def _unresolved_training_arguments(args) -> dict:
    """Fields that `TrainingArguments.__post_init__` rewrites and that cannot go through it a second time."""
    out = {}
    # The resolved accelerator config is a dataclass; post-init accepts it back as a dict.
    if hasattr(args, "accelerator_config") and hasattr(args.accelerator_config, "to_dict"):
        out["accelerator_config"] = args.accelerator_config.to_dict()
    # DeepSpeed: the plugin is rebuilt from the original `deepspeed` value.
    return out
