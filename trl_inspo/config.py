# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Configuration for [`InSPOTrainer`]."""

import math
import os
import warnings
from dataclasses import dataclass, field, fields

from trl import DPOConfig

from .errors import InSPOConfigError, InSPOWarning
from .losses import F_DIVERGENCE_TYPES, LOSSES, SUPPORTED_LOSS_TYPES


REFERENCE_CONDITIONING = ("conditional", "prompt_only")
# Row conditions of the data checks (see `trl_inspo.validation`): dropped and counted, or kept and counted.
DROP_REASONS = ("empty_response", "identical_responses", "prompt_too_long")
TRUNCATION_REASONS = ("prompt_truncated", "alternative_truncated", "alternative_removed", "target_truncated")
STRICT_DATA_CHOICES = (*DROP_REASONS, *TRUNCATION_REASONS, "all")
# Options that only some loss types read (see `trl_inspo.losses.LOSSES`), with the value that means "unused".
_LOSS_OPTION_DEFAULTS = {
    "label_smoothing": 0.0,
    "rdpo_alpha": 0.0,
    "simpo_gamma": 0.5,
    "discopop_tau": 0.05,
    "f_divergence_type": "reverse_kl",
    "ld_alpha": None,
}


@dataclass
class InSPOConfig(DPOConfig):
    r"""
    Configuration class for the [`InSPOTrainer`], a drop-in replacement for [`trl.DPOConfig`].

    InSPO (Li, Lan & Qi, 2025, arXiv:2512.23126) scores each response of a preference pair *given the prompt and the
    other response*: the chosen response is conditioned on the rejected one and vice versa. Every field of
    [`trl.DPOConfig`] keeps its meaning; the fields below are added.

    Every configuration that `trl.DPOTrainer` trains with is accepted. An option that has no effect in the
    configuration
    (e.g. `label_smoothing` with the `"sigmoid"` loss) gets one [`~trl_inspo.errors.InSPOWarning`]; an
    [`~trl_inspo.errors.InSPOConfigError`] is raised only for invalid values and for combinations that would make the
    InSPO computation wrong.

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
            (`reference_conditioning="conditional"`, `unconditional_loss_weight=0` and no `"sft"` loss).
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
        prefix_sharing (`bool` or `"auto"`, *optional*, defaults to `"auto"`):
            Pack each pair into one row `x[:-1] | x[-1] y_w | x[-1] y_l | y_l | y_w` whose branches attend to their
            ancestors only (a 4D attention mask) and continue their parent's position ids: the prompt is processed
            once, and the four log-probabilities equal those of the two-row layout. Needs a model that takes a custom
            4D mask (`attn_implementation` `"sdpa"`, `"flex_attention"` or `"eager"`, no sliding-window layers).
            `"auto"` chooses per batch: tree rows when they hold at most 3/4 of the two-row layout's tokens (a prompt
            at least as long as both responses together) and the model runs `"sdpa"` attention without sliding
            windows, the two-row layout otherwise (see `trl_inspo.collator.use_tree_rows`).
        unconditional_metrics (`bool`, *optional*, defaults to `True`):
            Also score the alternative segments of the policy forward to log the unconditional values
            (`rewards_unconditional/*`, `logps_unconditional/*`). With `False`, and when no loss term reads the
            policy's unconditional log-probabilities (`unconditional_loss_weight=0`, no `"sft"` loss), the fused LM
            head scores only the target segments (and the live reference forward too, unless
            `reference_conditioning="prompt_only"` needs its prompt-only values): the loss is unchanged and the LM
            head does half the work, which pays on long responses with a large vocabulary.
        strict_data (`list[str]`, *optional*, defaults to `[]`):
            Row conditions that raise an error when the dataset is prepared, instead of being dropped and counted
            (`"empty_response"`, `"identical_responses"`, `"prompt_too_long"`) or counted (`"prompt_truncated"`,
            `"alternative_truncated"`, `"alternative_removed"`, `"target_truncated"`); `["all"]` names every
            condition. Counts are in `trainer.inspo_data_report` (see `trl_inspo.validation`).

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
    # `True`, `False` or `"auto"`; typed `str` so that the command line passes "auto"/"true"/"false" through (a
    # `bool | str` union would be parsed as a bool), normalised in `__post_init__`.
    prefix_sharing: str = field(
        default="auto",
        metadata={
            "help": "Pack each pair into one row that holds the prompt once, with the two responses as branches of a "
            "tree (4D attention mask, per-branch position ids): the same log-probabilities as the two-row layout for "
            "fewer tokens. Needs attn_implementation 'sdpa', 'flex_attention' or 'eager' and no sliding-window "
            "layers. 'auto': per batch, when the tree rows hold at most 3/4 of the two-row tokens and the model "
            "runs sdpa attention without sliding windows; the two-row layout otherwise."
        },
    )
    unconditional_metrics: bool = field(
        default=True,
        metadata={
            "help": "Also score the alternative segments to log the unconditional metrics (`rewards_unconditional/*`, "
            "`logps_unconditional/*`). `False` skips that LM-head work when no loss reads the policy's unconditional "
            "log-probabilities (unconditional_loss_weight=0, no 'sft' loss); the loss is unchanged."
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
        self._check_inspo_options()

    # ------------------------------------------------------------------ derived properties
    @property
    def reference_free(self) -> bool:
        """Whether no configured loss looks at the reference model (no reference model is loaded or run)."""
        return not any(LOSSES[t].reference for t in self.loss_type)

    @property
    def policy_needs_unconditional_logps(self) -> bool:
        """Whether a loss term reads the policy's unconditional log-probabilities `log pi(y | x)`."""
        return self.unconditional_loss_weight > 0 or any(LOSSES[t].policy_unconditional for t in self.loss_type)

    @property
    def reference_needs_unconditional_logps(self) -> bool:
        """Whether a loss term reads the reference's prompt-only log-probabilities `log pi_ref(y | x)`."""
        return not self.reference_free and (
            self.unconditional_loss_weight > 0 or self.reference_conditioning == "prompt_only"
        )

    @property
    def needs_unconditional_logps(self) -> bool:
        """Whether the loss reads the unconditional log-probabilities `log pi(y | x)` of whole responses."""
        return self.policy_needs_unconditional_logps or self.reference_needs_unconditional_logps

    @property
    def scores_alternatives(self) -> bool:
        """Whether the policy forward scores the alternative segments (unconditional values): for a loss term that
        reads them, or for the `*_unconditional` metrics."""
        return self.unconditional_metrics or self.policy_needs_unconditional_logps

    @property
    def symmetric_truncation(self) -> bool:
        """Whether `max_length` must cut both rows of a pair identically.

        With a prompt-only reference, the reference value of a target response is read from the row where it is the
        alternative, so both rows must keep the same tokens of each response.
        """
        return self.reference_conditioning == "prompt_only" and not self.reference_free

    @property
    def strict_reasons(self) -> frozenset:
        """The row conditions that `strict_data` turns into errors (`"all"` expanded)."""
        if "all" in self.strict_data:
            return frozenset(DROP_REASONS + TRUNCATION_REASONS)
        return frozenset(self.strict_data)

    def _unconditional_readers(self) -> str:
        """The options that read the unconditional log-probabilities, for messages."""
        reasons = []
        if self.reference_needs_unconditional_logps and self.reference_conditioning == "prompt_only":
            reasons.append("reference_conditioning='prompt_only'")
        if self.unconditional_loss_weight > 0:
            reasons.append(f"unconditional_loss_weight={self.unconditional_loss_weight}")
        used = [t for t in self.loss_type if LOSSES[t].policy_unconditional]
        if used:
            reasons.append(f"loss_type {used}")
        return " and ".join(reasons)

    # ------------------------------------------------------------------ checks
    def _check_inspo_options(self):
        self._check_values()
        self._check_loss_options()
        self._check_inspo_combinations()
        self.strict_data = self._normalized_strict_data()

    def _check_values(self):
        """Values that are invalid whatever the rest of the configuration."""
        if self.reference_conditioning not in REFERENCE_CONDITIONING:
            _fail(
                f"`reference_conditioning` must be one of {list(REFERENCE_CONDITIONING)}, got "
                f"{self.reference_conditioning!r}. Use 'conditional' (the reference sees the alternative response, "
                "the paper's DPO setup) or 'prompt_only' (the reference sees the prompt alone)."
            )
        for name in ("conditional_loss_weight", "unconditional_loss_weight"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                _fail(f"`{name}` must be a finite number >= 0, got {value!r}. Set it to 0 to disable that term.")
        if self.conditional_loss_weight == 0 and self.unconditional_loss_weight == 0:
            _fail(
                "`conditional_loss_weight` and `unconditional_loss_weight` are both 0, so there is nothing to train. "
                "Set `conditional_loss_weight=1.0` for InSPO, or `unconditional_loss_weight=1.0` for plain DPO."
            )
        unknown = [t for t in self.loss_type if t not in LOSSES]
        if unknown:
            _fail(f"Unknown `loss_type` {unknown}. Supported loss types: {list(SUPPORTED_LOSS_TYPES)}.")
        if self.f_divergence_type not in F_DIVERGENCE_TYPES:
            _fail(f"Unknown `f_divergence_type` {self.f_divergence_type!r}. Use one of {list(F_DIVERGENCE_TYPES)}.")
        if not _is_number(self.beta):
            _fail(f"`beta` must be a finite number, got {self.beta!r}.")
        if self.loss_weights is not None and not all(_is_number(w) for w in self.loss_weights):
            _fail(f"`loss_weights` must be finite numbers, got {self.loss_weights}.")
        for name in ("rdpo_alpha", "simpo_gamma", "label_smoothing", "discopop_tau", "f_alpha_divergence_coef"):
            if not _is_number(getattr(self, name)):
                _fail(f"`{name}` must be a finite number, got {getattr(self, name)!r}.")
        length = self.max_alternative_length
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            _fail(f"`max_alternative_length` must be a positive integer or None, got {length!r}.")
        if isinstance(self.prefix_sharing, str) and self.prefix_sharing.lower() in ("true", "false", "auto"):
            self.prefix_sharing = {"true": True, "false": False, "auto": "auto"}[self.prefix_sharing.lower()]
        if self.prefix_sharing not in (True, False, "auto"):
            _fail(f"`prefix_sharing` must be True, False or 'auto', got {self.prefix_sharing!r}.")
        if not isinstance(self.unconditional_metrics, bool):
            _fail(f"`unconditional_metrics` must be True or False, got {self.unconditional_metrics!r}.")
        if self.alternative_separator is not None and not isinstance(self.alternative_separator, str):
            _fail(f"`alternative_separator` must be a string or None, got {self.alternative_separator!r}.")

    def _check_loss_options(self):
        """The DPO options against the loss types: `trl.DPOTrainer`'s errors stay errors, options that no configured
        loss reads get a warning, and values for which a loss cannot be finite are errors."""
        losses = {t: LOSSES[t] for t in self.loss_type}
        if self.f_divergence_type != "reverse_kl":
            refused = [t for t, spec in losses.items() if not spec.f_divergence]
            if refused:
                allowed = sorted(t for t, spec in LOSSES.items() if spec.f_divergence)
                _fail(
                    f"`f_divergence_type={self.f_divergence_type!r}` only applies to the loss types built on the "
                    f"chosen-rejected reward difference: {allowed}. `loss_type` has {refused}; use "
                    "f_divergence_type='reverse_kl' with these losses (trl.DPOTrainer refuses this combination too)."
                )
        if self.use_weighting and not all(spec.per_pair for spec in losses.values()):
            _fail(
                "`use_weighting=True` (WPO) cannot be combined with 'aot'/'aot_unpaired': those losses sort the "
                "pairs of a batch, so per-pair weights would no longer match their pairs (trl.DPOTrainer refuses "
                "this combination too). Remove one of them."
            )
        for option, unused in _LOSS_OPTION_DEFAULTS.items():
            value = getattr(self, option)
            if value != unused and not any(option in spec.reads for spec in losses.values()):
                readers = sorted(t for t, spec in LOSSES.items() if option in spec.reads)
                _warn(
                    f"`{option}={value!r}` has no effect: no loss type in {self.loss_type} reads it (it is read by "
                    f"{readers})."
                )
        if self.f_alpha_divergence_coef != 0.5 and self.f_divergence_type != "alpha_divergence":
            _warn(
                f"`f_alpha_divergence_coef={self.f_alpha_divergence_coef}` has no effect: it is only read with "
                "`f_divergence_type='alpha_divergence'`."
            )
        if len(set(self.loss_type)) != len(self.loss_type):
            _warn(f"`loss_type` lists a loss more than once ({self.loss_type}): each is added, as in trl.DPOTrainer.")
        if self.loss_weights is not None and any(w < 0 for w in self.loss_weights):
            _warn(f"`loss_weights` has a negative weight ({self.loss_weights}): that loss is maximised.")
        if self.beta <= 0:
            _warn(f"`beta={self.beta}` is not positive: the DPO-family losses are defined for beta > 0.")
        if self.ld_alpha is not None and not 0.0 <= self.ld_alpha <= 1.0:
            _warn(f"`ld_alpha={self.ld_alpha}` lies outside [0, 1], the LD-DPO range (1 = no down-weighting).")
        eps = self.label_smoothing
        if "exo_pair" in losses and not 0.0 < eps < 1.0:
            _fail(
                f"The 'exo_pair' loss needs `label_smoothing` in (0, 1) (it takes log(eps) and log(1 - eps)), got "
                f"{eps}. The EXO paper recommends 1e-3."
            )
        if {"robust", "aot", "aot_unpaired"} & set(losses) and not 0.0 <= eps < 0.5:
            _warn(
                f"`label_smoothing={eps}`: for 'robust', 'aot' and 'aot_unpaired' it is the probability that a "
                "preference label is flipped, and should lie in [0, 0.5)."
            )
        if "discopop" in losses and self.discopop_tau <= 0:
            _fail(
                f"The 'discopop' loss divides its logits by `discopop_tau`, which must be > 0, got "
                f"{self.discopop_tau}. The DiscoPOP paper uses 0.05."
            )

    def _check_inspo_combinations(self):
        if self.max_alternative_length is not None and self.needs_unconditional_logps:
            _fail(
                f"`max_alternative_length={self.max_alternative_length}` cannot be combined with "
                f"{self._unconditional_readers()}: these need the unconditional log-probabilities of the whole "
                "alternative response, which a shortened alternative does not give. Either set "
                "`max_alternative_length=None`, or use reference_conditioning='conditional' with "
                "unconditional_loss_weight=0 and no 'sft' loss."
            )
        if not self.unconditional_metrics and self.policy_needs_unconditional_logps:
            _warn(
                f"`unconditional_metrics=False` has no effect: {self._unconditional_readers()} reads the policy's "
                "unconditional log-probabilities, so they are computed (and logged) anyway."
            )
        if self.alternative_separator == "":
            _warn("`alternative_separator=''` adds nothing; the responses are concatenated directly (as with None).")
            self.alternative_separator = None
        if self.reference_free:
            for name, value, unused in (
                ("sync_ref_model", self.sync_ref_model, False),
                ("reference_conditioning", self.reference_conditioning, "conditional"),
                ("precompute_ref_log_probs", self.precompute_ref_log_probs, False),
            ):
                if value != unused:
                    _warn(f"`{name}={value!r}` has no effect: the loss types {self.loss_type} use no reference model.")

    def _normalized_strict_data(self) -> list[str]:
        """`strict_data` as a list of known condition names (a comma-separated string is split)."""
        value = self.strict_data
        if value is None:
            return []
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            _fail(
                f"`strict_data` must be a list of condition names, got {value!r}. Valid names: "
                f"{list(STRICT_DATA_CHOICES)}."
            )
        unknown = [v for v in value if v not in STRICT_DATA_CHOICES]
        if unknown:
            _fail(
                f"Unknown `strict_data` name(s) {unknown}. Valid names: {list(STRICT_DATA_CHOICES)} ('all' = every "
                "condition)."
            )
        names = list(dict.fromkeys(value))
        if len(names) != len(value):
            _warn(f"`strict_data` lists a name more than once: {list(value)}.")
        if "all" in names and len(names) > 1:
            _warn(f"`strict_data={names}`: 'all' already includes the other names.")
            names = ["all"]
        if self.max_length is None:
            moot = [v for v in names if v == "prompt_too_long" or v in TRUNCATION_REASONS]
            if moot:
                _warn(f"`strict_data` names {moot}, which cannot happen with `max_length=None` (nothing is cut).")
        if "prompt_truncated" in names and self.truncation_mode == "keep_start":
            _warn(
                "`strict_data` names 'prompt_truncated', which cannot happen with `truncation_mode='keep_start'` "
                "(rows whose prompt does not fit are 'prompt_too_long')."
            )
        return names

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_dpo_config(cls, args: DPOConfig, **overrides) -> "InSPOConfig":
        """Build an [`InSPOConfig`] from a [`trl.DPOConfig`]: every DPO field is kept, InSPO fields take their
        defaults (or `overrides`)."""
        if isinstance(args, cls) and not overrides:
            return args
        values = {f.name: getattr(args, f.name) for f in fields(args) if f.init and hasattr(args, f.name)}
        # `TrainingArguments.__post_init__` stores some fields in resolved form; hand back what the user set.
        if hasattr(args, "accelerator_config") and hasattr(args.accelerator_config, "to_dict"):
            values["accelerator_config"] = args.accelerator_config.to_dict()
        values.update(overrides)
        return cls(**values)


def _fail(message: str):
    raise InSPOConfigError(message)


def on_main_process() -> bool:
    """Whether this is the job's main process (global rank 0): messages meant once per job are shown there only."""
    return int(os.environ.get("RANK", "0")) == 0


def _warn(message: str):
    """One warning per distinct message and process (Python's default filter), on the main process only."""
    if on_main_process():
        warnings.warn(message, InSPOWarning, stacklevel=4)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bf16_accelerator_available() -> bool:
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return is_torch_bf16_gpu_available() or is_torch_xla_available()
