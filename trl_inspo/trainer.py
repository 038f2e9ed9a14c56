# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""[`InSPOTrainer`]: `trl.DPOTrainer` with each response scored given its counterpart."""

import contextlib
import copy
import os
import textwrap
import warnings

import torch
import trl.trainer.dpo_trainer as _dpo_module
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from datasets.fingerprint import Hasher
from transformers import AutoProcessor, PreTrainedTokenizerBase, ProcessorMixin
from trl import DPOConfig, DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, use_adapter

from .collator import DataCollatorForInSPO
from .config import InSPOConfig
from .implicit_prompt import with_word_boundary_prompts
from .losses import (
    CHOSEN_CONDITIONAL,
    REJECTED_CONDITIONAL,
    combined_preference_loss,
    logp_kinds_from_masks,
    logps_by_kind,
    wpo_pair_weights,
)
from .prefix_sharing import check_prefix_sharing_support, tree_attention_mask
from .validation import VISION_COLUMNS, check_finite_loss, first_example, prepare_preference_dataset, vision_error


logger = get_logger(__name__)

# Batch keys that are not model inputs.
_NON_MODEL_KEYS = frozenset(
    {
        "completion_mask",
        "alternative_mask",
        "ref_chosen_logps",
        "ref_rejected_logps",
        "tree_segment_ids",
        "shift_labels",
        "logp_kinds",
    }
)

INSPO_CITATION = textwrap.dedent("""\
    @article{li2025inspo,
        title   = {{InSPO: Unlocking Intrinsic Self-Reflection for LLM Preference Optimization}},
        author  = {Yu Li and Tian Lan and Zhengling Qi},
        journal = {arXiv preprint arXiv:2512.23126},
        year    = {2025}
    }""")


@contextlib.contextmanager
def _reference_model_load_skipped(policy_is_path: bool):
    """`DPOTrainer.__init__` (TRL 1.16) loads a reference model whenever none is given and has no switch for
    reference-free losses: let its policy load through and answer the reference load with `None`."""
    original = _dpo_module.create_model_from_path
    calls = 0

    def load(*args, **kwargs):
        nonlocal calls
        calls += 1
        return original(*args, **kwargs) if (policy_is_path and calls == 1) else None

    _dpo_module.create_model_from_path = load
    try:
        yield
    finally:
        _dpo_module.create_model_from_path = original


class InSPOTrainer(DPOTrainer):
    """
    Trainer for InSPO (Intrinsic Self-reflective Preference Optimization, [arXiv:2512.23126](
    https://huggingface.co/papers/2512.23126)), a drop-in replacement for [`trl.DPOTrainer`].

    Each preference pair `(x, y_w, y_l)` becomes two rows, `x + y_l + y_w` and `x + y_w + y_l`. One policy forward over
    the `2B` rows gives the conditional log-probabilities `log pi(y_w | x, y_l)`, `log pi(y_l | x, y_w)` (target
    segments), which feed the InSPO loss, and the unconditional ones `log pi(y_w | x)`, `log pi(y_l | x)` (alternative
    segments, which follow the prompt directly), which feed the optional DPO term and the `*_unconditional` metrics.
    One reference forward over the same rows gives both the conditional and the prompt-only reference values. At
    inference the model is used as usual, from the prompt alone.

    Arguments are those of [`trl.DPOTrainer`]; `args` may be an [`InSPOConfig`] or a plain [`trl.DPOConfig`] (upgraded
    with the InSPO defaults).

    Datasets are checked when they are prepared (see `trl_inspo.validation`): a dataset that cannot be used raises an
    [`~trl_inspo.validation.InSPODataError`] naming the column, an example row and the fix; rows that cannot train are
    dropped and counted, rows that the collator will truncate are counted, and a warning summarises both.
    `InSPOConfig.strict_data` turns any of these conditions into an error. A NaN or infinite training loss stops
    training with a [`~trl_inspo.validation.NonFiniteLossError`] before the optimizer step.

    Attributes:
        inspo_dropped (`dict[str, dict[str, int]]`):
            For each prepared dataset split (`"train"`, `"eval"`, or the key of an `eval_dataset` dict), the number of
            rows dropped for each reason: `"empty_response"` (chosen or rejected empty or whitespace-only, the EOS token
            TRL appends not counting as content), `"identical_responses"` (chosen and rejected are the same tokens),
            `"prompt_too_long"` (with `max_length`, one of the pair's two rows keeps no scored target token, or does not
            fit). Each dropped row is counted once, under the first reason in this order, so `rows in = rows kept +
            sum(inspo_dropped[split].values())`.
        inspo_truncated (`dict[str, dict[str, int]]`):
            For each split, the number of kept pairs that the collator will cut to fit `max_length`:
            `"prompt_truncated"`, `"alternative_truncated"`, `"alternative_removed"`, `"target_truncated"` (a pair is
            counted once per reason if either of its two rows is affected).

        For an `IterableDataset` both are updated in place while rows are streamed (each pass over the data counts
        again; with `dataloader_num_workers > 0` the counting happens in the worker processes and is not seen here).

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_inspo import InSPOConfig, InSPOTrainer

    >>> dataset = Dataset.from_list([{"prompt": "2+2=", "chosen": "4", "rejected": "5"}] * 8)
    >>> trainer = InSPOTrainer(
    ...     model="path/to/causal-lm",
    ...     args=InSPOConfig(output_dir="inspo-out", report_to="none"),
    ...     train_dataset=dataset,
    ... )
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "inspo"]
    _name = "InSPO"
    _paper = {
        "title": "InSPO: Unlocking Intrinsic Self-Reflection for LLM Preference Optimization",
        "id": "2512.23126",
        "citation": INSPO_CITATION,
    }

    def __init__(
        self,
        model,
        ref_model=None,
        args: InSPOConfig | DPOConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = InSPOConfig(f"{(model_name or 'model').split('/')[-1]}-InSPO")
        elif not isinstance(args, InSPOConfig):
            if not isinstance(args, DPOConfig):
                raise TypeError(f"`args` must be an InSPOConfig or a trl.DPOConfig, got {type(args).__name__}.")
            args = InSPOConfig.from_dpo_config(args)

        if train_dataset is not None:
            sample = first_example(train_dataset, "train")
            for column in VISION_COLUMNS:
                if column in sample:
                    raise vision_error("train", column)

        if args.reference_free and ref_model is not None:
            raise ValueError(
                f"The loss types {args.loss_type} use no reference model, but `ref_model` was given. Drop `ref_model`, "
                "or add a reference-based loss type."
            )

        # The default collator needs the tokenizer's pad token and the separator tokens, so resolve the processing
        # class here the same way DPOTrainer does.
        if processing_class is None:
            model_id = model if isinstance(model, str) else get_config_model_id(model.config)
            processing_class = AutoProcessor.from_pretrained(model_id, trust_remote_code=args.trust_remote_code)
        tokenizer = processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class
        if args.pad_token is not None:
            tokenizer.pad_token = args.pad_token
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "The tokenizer has neither a pad token nor an EOS token, so batches cannot be padded. Set one "
                    "before creating the trainer, e.g. `tokenizer.pad_token = tokenizer.eos_token = '</s>'`, or pass "
                    "`pad_token='<token>'` in the config (a token of the vocabulary)."
                )
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.pad_token not in tokenizer.get_vocab():
            raise ValueError(
                f"The pad token {tokenizer.pad_token!r} is not in the tokenizer's vocabulary. Use a token of the "
                "vocabulary (e.g. `pad_token=tokenizer.eos_token`), or add it with `tokenizer.add_special_tokens` and "
                "resize the model's embeddings."
            )
        if data_collator is None:
            data_collator = self.build_collator(args, tokenizer)
        self._inspo_collator = data_collator  # its truncation rules decide which rows `_prepare_dataset` counts

        # A model instance built from a config has no path to reload the reference from: copy it instead.
        if (
            ref_model is None
            and not isinstance(model, str)
            and not get_config_model_id(model.config)
            and not args.reference_free
            and peft_config is None
            and not is_peft_model(model)
            and not args.precompute_ref_log_probs
        ):
            logger.info("The model has no name or path to reload a reference from; using a frozen copy of it.")
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
            # A model that went through a TRL trainer carries a patched `forward` whose closure holds the original
            # model's forward; drop it so that the copy runs its own weights (TRL patches the reference again).
            ref_model.__dict__.pop("forward", None)

        skip_reference = _reference_model_load_skipped(isinstance(model, str))
        with skip_reference if args.reference_free else contextlib.nullcontext():
            super().__init__(
                model=model,
                ref_model=ref_model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                quantization_config=quantization_config,
                peft_config=peft_config,
            )
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1 and self.accelerator.num_processes == 1:
            # e.g. `accelerate launch --num_processes 2` on a machine without GPUs and without `use_cpu=True`:
            # transformers then sets up no process group, and every process would train alone on all the data
            raise RuntimeError(
                f"This process was launched as one of {world_size} (WORLD_SIZE={world_size}), but the trainer runs as "
                "a single process, so each process would train its own copy on all the data. On CPU, set "
                "`use_cpu=True` in the config (`--use_cpu true`) so the processes join over gloo; on GPUs, check that "
                "the GPUs are visible (CUDA_VISIBLE_DEVICES)."
            )
        self._check_prefix_sharing()

    def _check_prefix_sharing(self):
        if self.args.prefix_sharing:
            for model in (self.model, self.ref_model):
                if model is not None:
                    check_prefix_sharing_support(model)

    @staticmethod
    def build_collator(args: InSPOConfig, tokenizer: PreTrainedTokenizerBase) -> DataCollatorForInSPO:
        """The default [`DataCollatorForInSPO`] for `args`."""
        separator_ids = []
        if args.alternative_separator is not None:
            separator_ids = tokenizer(args.alternative_separator, add_special_tokens=False)["input_ids"]
        return DataCollatorForInSPO(
            pad_token_id=tokenizer.pad_token_id,
            max_length=args.max_length,
            truncation_mode=args.truncation_mode,
            max_alternative_length=args.max_alternative_length,
            separator_ids=separator_ids,
            symmetric_truncation=args.symmetric_truncation,
            pad_to_multiple_of=args.pad_to_multiple_of,
            prefix_sharing=args.prefix_sharing,
        )

    # ------------------------------------------------------------------ resume
    def _init_training_state(
        self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
    ):
        result = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if resume_from_checkpoint is not None:
            # The running `num_tokens` count is not part of a checkpoint (nor in trl.DPOTrainer): continue it from the
            # last value the interrupted run logged, instead of restarting at 0. Exact when the checkpoint step is a
            # logging step (e.g. `save_steps` a multiple of `logging_steps`).
            logged = [entry["num_tokens"] for entry in self.state.log_history if "num_tokens" in entry]
            if logged:
                self._total_train_tokens = int(logged[-1])
        return result

    # ------------------------------------------------------------------ model card
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ):
        """
        Write `README.md` in `args.output_dir`: TRL's model card (metadata, tags `trl` and `inspo`, the InSPO citation)
        with an "InSPO training options" section that names the base model, the dataset and every InSPO option of the
        run. [`~transformers.Trainer.push_to_hub`] calls this before uploading the output directory.

        TRL leaves the base model out of the card when it is a local directory (not a Hub id); the section still names
        the local path. A local dataset file or directory is handled the same way.

        Args:
            model_name (`str`, *optional*):
                Name of the model; defaults to the last part of `hub_model_id` or of `output_dir`.
            dataset_name (`str`, *optional*):
                Name of the dataset used for training (a Hub id or a local path).
            tags (`str` or `list[str]`, *optional*):
                Tags added to `trl` and `inspo`.
        """
        import os

        if not self.is_world_process_zero():
            return
        if model_name is None:
            model_name = (self.args.hub_model_id or os.path.abspath(self.args.output_dir)).rstrip("/").split("/")[-1]
        dataset_is_local = dataset_name is not None and os.path.exists(dataset_name)
        super().create_model_card(
            model_name=model_name, dataset_name=None if dataset_is_local else dataset_name, tags=tags
        )

        path = os.path.join(self.args.output_dir, "README.md")
        with open(path, encoding="utf-8") as f:
            card = f.read()
        base_model = get_config_model_id(self.model.config) or None
        # TRL renders a base model it cannot link to the Hub as a link to "None".
        card = card.replace(
            "a fine-tuned version of [None](https://huggingface.co/None)",
            f"a fine-tuned version of `{base_model}`" if base_model else "a fine-tuned model",
        )
        # ... and a model that is not on the Hub (yet) as `model="None"` in the quick start: load it from output_dir.
        card = card.replace('model="None"', f"model={self.args.output_dir!r}")
        section = self._model_card_section(base_model, dataset_name)
        marker = "### Framework versions"
        card = card.replace(marker, f"{section}\n{marker}", 1) if marker in card else f"{card}\n{section}"
        with open(path, "w", encoding="utf-8") as f:
            f.write(card)

    def _model_card_section(self, base_model: str | None, dataset_name: str | None) -> str:
        """The "InSPO training options" section of the model card, as Markdown."""
        import os
        from dataclasses import fields

        args = self.args

        def cell(value) -> str:
            text = repr(value) if isinstance(value, str) else str(value)
            return "`" + text.replace("|", "\\|").replace("`", "'") + "`"

        unwrapped = self.accelerator.unwrap_model(self.model)
        if args.reference_free:
            reference = "none (reference-free loss)"
        elif self.ref_model is not None:
            reference = "a separate frozen model"
            ref_config = getattr(self.accelerator.unwrap_model(self.ref_model), "config", None)
            ref_id = get_config_model_id(ref_config) if ref_config is not None else None
            if ref_id:
                reference += f" (`{ref_id}`)"
        elif is_peft_model(unwrapped):
            reference = "the base model with the adapter disabled"
        else:
            reference = "the initial policy"
        if self.precompute_ref_logps and not args.reference_free:
            reference += ", log-probabilities precomputed before training"

        if base_model:
            base_model_cell = f"`{base_model}`" + (" (local path)" if os.path.isdir(base_model) else "")
        else:
            base_model_cell = "not recorded (model built in memory)"
        if dataset_name:
            dataset_cell = f"`{dataset_name}`" + (" (local path)" if os.path.exists(dataset_name) else "")
        else:
            dataset_cell = "not recorded"
        rows = [("Base model", base_model_cell), ("Dataset", dataset_cell), ("Reference model", reference)]
        if is_peft_model(unwrapped):
            peft_config = unwrapped.peft_config[unwrapped.active_adapter]
            adapter = f"{peft_config.peft_type.value}"
            if getattr(peft_config, "r", None) is not None:
                adapter += f" (r={peft_config.r}, alpha={peft_config.lora_alpha})"
            rows.append(("Adapter", adapter))
        base = unwrapped.get_base_model() if is_peft_model(unwrapped) else unwrapped
        if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
            quantization = getattr(base.config, "quantization_config", None)
            quant_type = getattr(quantization, "bnb_4bit_quant_type", None) if quantization is not None else None
            bits = 4 if getattr(base, "is_loaded_in_4bit", False) else 8
            rows.append(("Quantization", f"{bits}-bit" + (f" {quant_type.upper()}" if quant_type else "")))

        dpo_options = ["loss_type", "loss_weights", "beta", "label_smoothing", "ld_alpha", "use_weighting"]
        dpo_options += ["max_length", "truncation_mode", "precompute_ref_log_probs"]
        dpo_names = {f.name for f in fields(DPOConfig)}
        inspo_options = [f.name for f in fields(InSPOConfig) if f.name not in dpo_names]
        names = [name for name in inspo_options + dpo_options if hasattr(args, name)]
        rows += [(f"`{name}`", cell(getattr(args, name))) for name in names]
        rows += [
            (f"`{name}`", cell(getattr(args, name)))
            for name in ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps")
        ]
        rows.append(("Processes", cell(self.accelerator.num_processes)))

        table = "\n".join(f"| {name} | {value} |" for name, value in rows)
        return (
            "## InSPO training options\n\n"
            "InSPO scores each response of a preference pair given the prompt and the other response: the chosen "
            "response given the rejected one, and the rejected response given the chosen one. At inference the model "
            "is used as usual, from the prompt alone.\n\n"
            f"| Option | Value |\n|---|---|\n{table}\n"
        )

    # ------------------------------------------------------------------ data checks
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """TRL's preparation (prompt extraction, EOS, tokenization) inside InSPO's checks: clear errors for unusable
        datasets, rows that cannot train dropped and counted in `inspo_dropped`, truncated rows counted in
        `inspo_truncated` (see `trl_inspo.validation`)."""
        collator = getattr(self, "data_collator", None)
        if not isinstance(collator, DataCollatorForInSPO):
            collator = getattr(self, "_inspo_collator", None)
        if not isinstance(collator, DataCollatorForInSPO):  # a custom collator: count with the default layout
            tokenizer = (
                processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class
            )
            collator = self.build_collator(args, tokenizer)
        # Implicit prompts of text datasets end at a word boundary (see `trl_inspo.implicit_prompt`)
        base_prepare = with_word_boundary_prompts(super()._prepare_dataset)
        return prepare_preference_dataset(self, base_prepare, dataset, processing_class, args, dataset_name, collator)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """`DPOTrainer.compute_loss`, stopped with a [`~trl_inspo.validation.NonFiniteLossError`] (before the backward
        pass and the optimizer step) when the training loss is NaN or infinite."""
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            check_finite_loss(self, result[0] if return_outputs else result)
        return result

    # ------------------------------------------------------------------ reference values
    def _precompute_ref_logps(self, dataset, name, batch_size):
        if self.args.reference_free:
            return dataset
        self._check_prefix_sharing()  # the reference forward below already uses the tree layout
        # TRL caches on (dataset, model); InSPO's reference values also depend on the pair layout and on LD-DPO's
        # `ld_alpha` (it weights the reference tokens), so key on them too.
        model_hash = self._precompute_model_hash
        layout = getattr(self.data_collator, "layout_key", lambda: type(self.data_collator).__name__)()
        self._precompute_model_hash = Hasher.hash((model_hash, "trl-inspo/v1", layout, self.ld_alpha))
        try:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        finally:
            self._precompute_model_hash = model_hash

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probabilities of one InSPO batch.

        Returns `(ref_chosen, ref_rejected)`, each of shape `(B, 2)`: column 0 is the conditional value
        (`log pi_ref(y_w | x, y_l)`, `log pi_ref(y_l | x, y_w)`), column 1 the prompt-only value (`log pi_ref(y_w | x)`,
        `log pi_ref(y_l | x)`). This is also the layout of the precomputed `ref_chosen_logps` / `ref_rejected_logps`
        columns.
        """
        return self._ref_log_probs(model, inputs, score_alternatives=True)

    def _ref_log_probs(self, model, inputs, score_alternatives):
        adapter_context = contextlib.nullcontext()
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter_context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            adapter_context,
            self.accelerator.autocast(),
        ):
            outputs = model(**self._forward_kwargs(model, inputs, score_alternatives), fused_lm_head=True)
        ref = self._sequence_logps(outputs.log_probs, inputs)
        return (
            torch.stack([ref.chosen_conditional, ref.chosen_unconditional], dim=1),
            torch.stack([ref.rejected_conditional, ref.rejected_unconditional], dim=1),
        )

    def _reference_values(self, inputs):
        """`(ref_c_w, ref_c_l, ref_u_w, ref_u_l)`, from the batch when precomputed, else from a reference forward."""
        if self.args.reference_free:
            return None
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            if ref_chosen.dim() != 2 or ref_chosen.size(1) != 2:
                raise ValueError(
                    "The precomputed `ref_chosen_logps`/`ref_rejected_logps` columns must hold two values per example "
                    "([conditional, prompt_only]), as InSPOTrainer writes them; this dataset holds one (e.g. it was "
                    "precomputed by DPOTrainer). Remove these columns and let InSPOTrainer precompute them."
                )
        else:
            # Prompt-only values only when a loss or the unconditional metrics read them (`unconditional_metrics`)
            score_alternatives = self.args.unconditional_metrics or self.args.reference_needs_unconditional_logps
            ref_chosen, ref_rejected = self._ref_log_probs(self.ref_model or self.model, inputs, score_alternatives)
        return ref_chosen[:, 0], ref_rejected[:, 0], ref_chosen[:, 1], ref_rejected[:, 1]

    # ------------------------------------------------------------------ helpers
    def _forward_kwargs(self, model, inputs, score_alternatives=True):
        """Model inputs of an InSPO batch for a fused-LM-head forward that scores exactly the needed positions: the
        target segments (conditional values) and, with `score_alternatives`, the alternative segments (unconditional
        values; the others then read 0)."""
        kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        kwargs["use_cache"] = False
        if "tree_segment_ids" in inputs:  # prefix-shared rows: tree attention mask, pre-shifted labels
            unwrapped = self.accelerator.unwrap_model(model)
            kwargs["attention_mask"] = tree_attention_mask(
                inputs["tree_segment_ids"], unwrapped.config._attn_implementation, unwrapped.dtype
            )
            kwargs["shift_labels"] = inputs["shift_labels"]
            if not score_alternatives:
                kinds = inputs["logp_kinds"]
                targets = (kinds == CHOSEN_CONDITIONAL) | (kinds == REJECTED_CONDITIONAL)
                kwargs["shift_labels"] = kwargs["shift_labels"].masked_fill(~targets, -100)
        else:
            # Score the target (and alternative) segments; the fused LM head skips every other position.
            scored = inputs["completion_mask"] > 0
            if score_alternatives:
                scored = scored | (inputs["alternative_mask"] > 0)
            kwargs["labels"] = inputs["input_ids"].masked_fill(~scored, -100)
        return kwargs

    @staticmethod
    def _logp_kinds(inputs):
        """What each per-token log-probability scores (see `trl_inspo.losses.logps_by_kind`), and the pair count."""
        if "logp_kinds" in inputs:
            return inputs["logp_kinds"], inputs["logp_kinds"].size(0)
        kinds = logp_kinds_from_masks(inputs["completion_mask"][:, 1:], inputs["alternative_mask"][:, 1:])
        return kinds, kinds.size(0) // 2

    def _sequence_logps(self, log_probs, inputs, ld_alpha="config"):
        kinds, num_pairs = self._logp_kinds(inputs)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        return logps_by_kind(
            log_probs[:, -kinds.size(1) :], kinds, num_pairs, self.ld_alpha if ld_alpha == "config" else ld_alpha
        )

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        args = self.args
        model_kwargs = self._forward_kwargs(model, inputs, score_alternatives=args.unconditional_metrics)
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        outputs = model(**model_kwargs, fused_lm_head=True)
        kinds, num_pairs = self._logp_kinds(inputs)
        width = kinds.size(1)
        per_token_logps = outputs.log_probs[:, -width:]
        policy = logps_by_kind(per_token_logps, kinds, num_pairs, self.ld_alpha)
        ref = self._reference_values(inputs)
        if ref is None:
            ref_c_w = ref_c_l = ref_u_w = ref_u_l = None
        else:
            ref_c_w, ref_c_l, ref_u_w, ref_u_l = ref
            if args.reference_conditioning == "prompt_only":
                ref_c_w, ref_c_l = ref_u_w, ref_u_l

        # SFT reads the deployed policy, log pi(y_w | x), without LD-DPO down-weighting (as in TRL)
        sft_logps = policy.chosen_unconditional
        if self.ld_alpha is not None and "sft" in self.loss_types:
            sft_logps = logps_by_kind(per_token_logps, kinds, num_pairs).chosen_unconditional
        loss_kwargs = dict(
            beta=self.beta,
            label_smoothing=args.label_smoothing,
            f_divergence_type=args.f_divergence_type,
            f_alpha_divergence_coef=args.f_alpha_divergence_coef,
            discopop_tau=args.discopop_tau,
            simpo_gamma=args.simpo_gamma,
            rdpo_alpha=args.rdpo_alpha,
            sft_logps=sft_logps,
            sft_lengths=policy.chosen_unconditional_lengths,
        )
        pair_weights = {"conditional": None, "unconditional": None}
        if self.use_weighting:
            log_sum_sq = outputs.log_sum_sq_probs[:, -width:]
            pair_weights["conditional"], pair_weights["unconditional"] = wpo_pair_weights(
                per_token_logps, log_sum_sq, kinds, num_pairs
            )

        loss = 0.0
        if args.conditional_loss_weight:
            loss = loss + args.conditional_loss_weight * combined_preference_loss(
                self.loss_types,
                self.loss_weights,
                policy.chosen_conditional,
                policy.rejected_conditional,
                ref_c_w,
                ref_c_l,
                policy.chosen_conditional_lengths,
                policy.rejected_conditional_lengths,
                pair_weights=pair_weights["conditional"],
                **loss_kwargs,
            )
        if args.unconditional_loss_weight:
            loss = loss + args.unconditional_loss_weight * combined_preference_loss(
                self.loss_types,
                self.loss_weights,
                policy.chosen_unconditional,
                policy.rejected_unconditional,
                ref_u_w,
                ref_u_l,
                policy.chosen_unconditional_lengths,
                policy.rejected_unconditional_lengths,
                pair_weights=pair_weights["unconditional"],
                **loss_kwargs,
            )

        if self.aux_loss_enabled:
            aux_loss = outputs.aux_loss
            loss = loss + self.router_aux_loss_coef * aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        self._log_metrics(mode, inputs, outputs, kinds, policy, (ref_c_w, ref_c_l, ref_u_w, ref_u_l))

        if return_outputs:
            warnings.warn(
                "`return_outputs=True` is deprecated in TRL and will be removed in v2.0.0; the logits are recomputed "
                "with an extra forward pass.",
                FutureWarning,
                stacklevel=2,
            )
            with torch.no_grad():
                plain = {k: v for k, v in model_kwargs.items() if k not in ("labels", "shift_labels")}
                outputs = model(**plain)
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ metrics
    def _log_metrics(self, mode, inputs, outputs, kinds, policy, ref):
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        width = kinds.size(1)
        chosen_mask, rejected_mask = kinds == CHOSEN_CONDITIONAL, kinds == REJECTED_CONDITIONAL

        def token_mean(values, mask):
            total = gather((values[:, -width:] * mask).sum().detach()).sum()
            count = gather(mask.sum()).sum()
            return (total / count).item() if count > 0 else 0.0

        # TRL's token-level metrics, on the target segments
        metrics["entropy"].append(token_mean(outputs.entropy, chosen_mask | rejected_mask))
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        metrics["logits/chosen"].append(token_mean(outputs.mean_logits, chosen_mask))
        metrics["logits/rejected"].append(token_mean(outputs.mean_logits, rejected_mask))
        metrics["mean_token_accuracy"].append(token_mean(outputs.is_top1, chosen_mask))

        ref_c_w, ref_c_l, ref_u_w, ref_u_l = ref
        for prefix, w, l, ref_w, ref_l, len_w, len_l in (
            (
                "",
                policy.chosen_conditional,
                policy.rejected_conditional,
                ref_c_w,
                ref_c_l,
                policy.chosen_conditional_lengths,
                policy.rejected_conditional_lengths,
            ),
            (
                "_unconditional",
                policy.chosen_unconditional,
                policy.rejected_unconditional,
                ref_u_w,
                ref_u_l,
                policy.chosen_unconditional_lengths,
                policy.rejected_unconditional_lengths,
            ),
        ):
            if prefix and not self.args.unconditional_metrics:
                continue  # not scored (`unconditional_metrics=False`)
            w, l = w.detach(), l.detach()
            if ref_w is None:  # reference-free: length-normalised implicit rewards (as in SimPO/ORPO)
                chosen_rewards = self.beta * w / len_w.clamp(min=1)
                rejected_rewards = self.beta * l / len_l.clamp(min=1)
            else:
                chosen_rewards = self.beta * (w - ref_w)
                rejected_rewards = self.beta * (l - ref_l)
            chosen_rewards, rejected_rewards = gather(chosen_rewards), gather(rejected_rewards)
            metrics[f"rewards{prefix}/chosen"].append(chosen_rewards.mean().item())
            metrics[f"rewards{prefix}/rejected"].append(rejected_rewards.mean().item())
            metrics[f"rewards{prefix}/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
            metrics[f"rewards{prefix}/margins"].append((chosen_rewards - rejected_rewards).mean().item())
            metrics[f"logps{prefix}/chosen"].append(gather(w).mean().item())
            metrics[f"logps{prefix}/rejected"].append(gather(l).mean().item())
