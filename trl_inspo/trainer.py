# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""[`InSPOTrainer`]: `trl.DPOTrainer` with each response scored given its counterpart."""

import contextlib
import copy
import json
import os
import textwrap
import warnings

import numpy as np
import torch
import trl.trainer.dpo_trainer as _dpo_module
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from datasets import Dataset
from datasets.fingerprint import Hasher
from transformers import AutoProcessor, PreTrainedTokenizerBase, ProcessorMixin
from transformers.trainer_utils import get_last_checkpoint
from trl import DPOConfig, DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, use_adapter

from .collator import PROMPT_ONLY_REF_COLUMNS, REF_COLUMNS, DataCollatorForInSPO
from .config import InSPOConfig, on_main_process
from .errors import InSPOWarning, NonFiniteLossError, TRLContractError
from .implicit_prompt import with_word_boundary_prompts
from .losses import (
    CHOSEN_CONDITIONAL,
    LOSS_OPTIONS,
    REJECTED_CONDITIONAL,
    PairLogps,
    combined_preference_loss,
    logp_kinds_from_masks,
    logps_by_kind,
    wpo_pair_weights,
)
from .prefix_sharing import PREFIX_SHARING_VERIFIED, check_prefix_sharing_support, tree_attention_mask
from .validation import VISION_COLUMNS, RowLayout, first_example, prepare_preference_dataset, vision_error


logger = get_logger(__name__)

# Batch keys that are not model inputs.
_NON_MODEL_KEYS = frozenset(
    {"completion_mask", "alternative_mask", "tree_segment_ids", "shift_labels", "logp_kinds"}
    | set(REF_COLUMNS + PROMPT_ONLY_REF_COLUMNS)
)
DATA_REPORT_FILE = "inspo_data_report.json"
TROUBLESHOOTING = "the Troubleshooting section of the trl-inspo README"

INSPO_CITATION = textwrap.dedent("""\
    @article{li2025inspo,
        title   = {{InSPO: Unlocking Intrinsic Self-Reflection for LLM Preference Optimization}},
        author  = {Yu Li and Tian Lan and Zhengling Qi},
        journal = {arXiv preprint arXiv:2512.23126},
        year    = {2025}
    }""")


class _ReferenceLoadSkipped:
    """`DPOTrainer.__init__` loads a reference model whenever none is given, with no switch for reference-free losses.
    While active, TRL's `create_model_from_path` (docs/trl_internals.md) loads the policy (its first call, when the
    policy is a path) and answers every later call, the reference load, with `None`. `calls` counts the calls, so the
    trainer can check afterwards that the hook did its job."""

    def __init__(self, policy_is_path: bool):
        self.policy_is_path = policy_is_path
        self.calls = 0

    def __enter__(self):
        self.original = _dpo_module.create_model_from_path

        def load(*args, **kwargs):
            self.calls += 1
            return self.original(*args, **kwargs) if (self.policy_is_path and self.calls == 1) else None

        _dpo_module.create_model_from_path = load
        return self

    def __exit__(self, *exc):
        _dpo_module.create_model_from_path = self.original


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
    [`~trl_inspo.errors.InSPODataError`] naming the column, an example row and the fix; rows that cannot train are
    dropped and counted, rows that the collator will truncate are counted, and a warning summarises both.
    `InSPOConfig.strict_data` turns any of these conditions into an error. A NaN or infinite training loss stops
    training with a [`~trl_inspo.errors.NonFiniteLossError`] before the optimizer step.

    Attributes:
        inspo_data_report (`dict[str, trl_inspo.validation.DataReport]`):
            For each prepared dataset split (`"train"`, `"eval"`, or the key of an `eval_dataset` dict): the rows seen,
            the rows dropped per reason (`dropped`: `"empty_response"`, `"identical_responses"`, `"prompt_too_long"`;
            each dropped row counted once, so `rows = kept + sum(dropped.values())`), the kept pairs the collator
            cuts per reason (`truncated`), and the first row of each reason. Saving the model writes it to
            `inspo_data_report.json` in the output directory, and the model card lists it. For an `IterableDataset`
            the counts grow while the data is streamed (with `dataloader_num_workers > 0` they grow in the worker
            processes and are not seen here).
        inspo_dropped, inspo_truncated (`dict[str, dict[str, int]]`):
            The `dropped` and `truncated` counts of every split.

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
            if on_main_process():
                warnings.warn(
                    f"`ref_model` has no effect: the loss types {args.loss_type} use no reference model, so it is not "
                    "used (nor prepared, nor kept in memory).",
                    InSPOWarning,
                    stacklevel=2,
                )
            ref_model = None

        # The default collator needs the tokenizer's pad token and the separator tokens: resolve the processing class
        # here, the way DPOTrainer does (model id, `revision` of `model_init_kwargs`, `trust_remote_code`).
        if processing_class is None:
            model_id = model if isinstance(model, str) else get_config_model_id(model.config)
            revision = (args.model_init_kwargs or {}).get("revision") if isinstance(model, str) else None
            processing_class = AutoProcessor.from_pretrained(
                model_id, revision=revision, trust_remote_code=args.trust_remote_code
            )
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
        # The rows `_prepare_dataset` counts as dropped or cut follow the default layout unless the collator is ours
        self._inspo_layout = RowLayout.from_collator(
            data_collator if isinstance(data_collator, DataCollatorForInSPO) else self.build_collator(args, tokenizer)
        )
        self.inspo_data_report = {}
        self.reference_cache_files = {}  # split -> the cache file of its precomputed reference values

        # A model instance built from a config has no path to reload the reference from: copy it instead, wherever
        # DPOTrainer would load one (it keeps none with PEFT, nor with a precomputed reference outside FSDP).
        if (
            ref_model is None
            and not isinstance(model, str)
            and not get_config_model_id(model.config)
            and not args.reference_free
            and peft_config is None
            and not is_peft_model(model)
            and not (args.precompute_ref_log_probs and not _fsdp_requested(args))
        ):
            if any(hasattr(p, "ds_id") for p in model.parameters()):
                raise ValueError(
                    "The model was built in memory (it has no name or path to reload a reference from) and its "
                    "parameters are partitioned by DeepSpeed ZeRO-3, so it cannot be copied into a reference model. "
                    "Pass `ref_model`, save the model and pass its path, or set `precompute_ref_log_probs=True`."
                )
            logger.info("The model has no name or path to reload a reference from; using a frozen copy of it.")
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
            # A model that went through a TRL trainer carries a patched `forward` whose closure holds the original
            # model's forward; drop it so that the copy runs its own weights (TRL patches the reference again).
            ref_model.__dict__.pop("forward", None)

        skip_reference = _ReferenceLoadSkipped(isinstance(model, str)) if args.reference_free else None
        with skip_reference or contextlib.nullcontext():
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
        if skip_reference is not None:
            self._drop_reference(skip_reference)
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

    def _drop_reference(self, hook: _ReferenceLoadSkipped):
        """Reference-free losses: remove the frozen "ref" adapter TRL copies from a `PeftModel`'s adapter, then check
        that no reference model or adapter is left (TRL's reference loading went through the skipped hook)."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if is_peft_model(unwrapped) and "ref" in unwrapped.peft_config:
            unwrapped.delete_adapter("ref")
            unwrapped.set_adapter("default")
        if self.ref_model is not None or (hook.policy_is_path and hook.calls == 0):
            what = "a reference model was loaded anyway" if self.ref_model is not None else "it was never called"
            raise TRLContractError(
                "docs/trl_internals.md, 'trl.trainer.dpo_trainer.create_model_from_path': InSPOTrainer skips TRL's "
                f"reference-model load for reference-free losses by answering it with None, but {what} (calls: "
                f"{hook.calls}). This TRL release loads models differently; pin a supported TRL release (see the "
                "README)."
            )

    def _check_prefix_sharing(self):
        """`prefix_sharing=True`: every model must run tree rows exactly (clear error otherwise). `"auto"`: tree rows
        only where they pay and are exact, i.e. with sdpa attention and no sliding windows; two rows otherwise."""
        # (a DeepSpeed engine's `config` is DeepSpeed's: check the model inside)
        models = [self.accelerator.unwrap_model(m) for m in (self.model, self.ref_model) if m is not None]
        if self.args.prefix_sharing is True:
            for model in models:
                check_prefix_sharing_support(model)
        collator = getattr(self, "data_collator", None)
        if self.args.prefix_sharing == "auto" and isinstance(collator, DataCollatorForInSPO):
            try:
                for model in models:
                    check_prefix_sharing_support(model)
                usable = all(
                    _attn_implementation(m) == "sdpa" and _model_type(m) in PREFIX_SHARING_VERIFIED for m in models
                )
            except ValueError:
                usable = False
            collator.prefix_sharing = "auto" if usable else False

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

    @property
    def inspo_dropped(self) -> dict:
        return {name: report.dropped for name, report in self.inspo_data_report.items()}

    @property
    def inspo_truncated(self) -> dict:
        return {name: report.truncated for name, report in self.inspo_data_report.items()}

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

    # ------------------------------------------------------------------ saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """`Trainer.save_model`, plus `inspo_data_report.json` (rows dropped and cut per split) beside the weights."""
        super().save_model(output_dir, _internal_call=_internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.inspo_data_report and self.is_world_process_zero():
            os.makedirs(output_dir, exist_ok=True)
            report = {name: r.to_dict() for name, r in self.inspo_data_report.items()}
            with open(os.path.join(output_dir, DATA_REPORT_FILE), "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)

    # ------------------------------------------------------------------ model card
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ):
        """
        Write `README.md` in `args.output_dir`: TRL's model card (metadata, tags `trl` and `inspo`, the InSPO citation)
        with a quick start that calls the trained model from the prompt alone, an "InSPO training options" section that
        names the base model, the dataset and every InSPO option of the run, and the rows the data checks dropped or
        cut. [`~transformers.Trainer.push_to_hub`] calls this before uploading the output directory.

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
        card = _replace_between(card, "## Quick start", "## Training procedure", self._quick_start())
        section = self._model_card_section(base_model, dataset_name) + self._data_report_section()
        card = _insert_before(card, "### Framework versions", section)
        with open(path, "w", encoding="utf-8") as f:
            f.write(card)

    def _model_card_section(self, base_model: str | None, dataset_name: str | None) -> str:
        """The "InSPO training options" section of the model card, as Markdown."""
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

    def _quick_start(self) -> str:
        """The model card's quick start: the trained model answers from the prompt alone, with the chat template when
        it was trained on conversations."""
        model_id = self.hub_model_id if self.args.push_to_hub and self.hub_model_id else self.args.output_dir
        sample = next(iter(self.train_dataset)) if self.train_dataset is not None else {}
        chat = isinstance(sample.get("prompt"), list) or getattr(self.processing_class, "chat_template", None)
        if chat:
            prompt = (
                'messages = [{"role": "user", "content": "Your question here"}]\n'
                'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
                "return_dict=True)"
            )
        else:
            prompt = 'inputs = tokenizer("Your prompt here", return_tensors="pt")'
        return (
            "## Quick start\n\n"
            "The model was trained with InSPO, which conditions each response on the other one during training only; "
            "at inference it is an ordinary causal LM that answers from the prompt alone (no second response).\n\n"
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"model = AutoModelForCausalLM.from_pretrained({model_id!r})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({model_id!r})\n"
            f"{prompt}\n"
            "output = model.generate(**inputs, max_new_tokens=128)\n"
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))\n'
            "```\n\n"
        )

    def _data_report_section(self) -> str:
        """The rows the data checks dropped or cut, per split, as Markdown (empty when nothing was)."""
        lines = []
        for name, report in self.inspo_data_report.items():
            summary = report.summary()
            if summary:
                lines.append(f"- {name}: {summary}")
        if not lines:
            return ""
        return (
            "\n### Data checks\n\nRows that could not train were dropped, and rows longer than `max_length` were cut "
            f"(counts also in `{DATA_REPORT_FILE}`):\n\n" + "\n".join(lines) + "\n"
        )

    # ------------------------------------------------------------------ data checks
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """TRL's preparation (prompt extraction, EOS, tokenization) between InSPO's checks: clear errors for unusable
        datasets, rows that cannot train dropped and counted, truncated rows counted, in `inspo_data_report` (see
        `trl_inspo.validation`)."""
        # Implicit prompts of text datasets end at a word boundary (see `trl_inspo.implicit_prompt`)
        base_prepare = with_word_boundary_prompts(super()._prepare_dataset)
        dataset, report = prepare_preference_dataset(
            base_prepare, dataset, processing_class, args, dataset_name, self._inspo_layout
        )
        self.inspo_data_report[dataset_name] = report
        return dataset

    def _set_signature_columns_if_needed(self):
        """TRL's model-input columns, plus the precomputed prompt-only reference columns."""
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *PROMPT_ONLY_REF_COLUMNS]))

    # ------------------------------------------------------------------ training step
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """`DPOTrainer.compute_loss`, stopped with a [`~trl_inspo.errors.NonFiniteLossError`] (before the backward
        pass and the optimizer step) when the training loss is NaN or infinite."""
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            self._check_finite_loss(result[0] if return_outputs else result)
        return result

    def _check_finite_loss(self, loss: torch.Tensor) -> None:
        """Raise [`NonFiniteLossError`] when the training loss of any process is NaN or infinite."""
        finite = torch.isfinite(loss.detach()).all()
        if self.accelerator.num_processes > 1:
            finite = self.accelerator.gather(finite.reshape(1)).all()
        if bool(finite):
            return
        args, state = self.args, self.state
        local = loss.detach().float().reshape(-1)
        local = local[~torch.isfinite(local)]
        value = f"{local[0].item()}" if local.numel() else "non-finite on another process"
        bad_params = [n for n, p in self.model.named_parameters() if p.numel() and not torch.isfinite(p).all()]
        if bad_params:
            weights = (
                f"The model's weights are already non-finite (e.g. '{bad_params[0]}', {len(bad_params)} tensor(s)): "
                "an earlier optimizer step wrote them (e.g. from a non-finite gradient). Restart from a checkpoint "
                "written before that step."
            )
        else:
            weights = "The weights are still finite: the overflow happened in this step's forward pass."
        last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        dtype = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
        advice = (
            ": fp16 overflows easily (values above 65504), prefer bf16=True or fp32"
            if dtype == "fp16"
            else "; if the model was trained in another dtype, load it in that dtype"
        )
        raise NonFiniteLossError(
            f"The training loss is {value} at step {state.global_step + 1} (optimizer steps completed: "
            f"{state.global_step}, epoch {state.epoch or 0:.2f}). Training stopped before the optimizer step, so this "
            f"batch did not change the weights. {weights}{f' Last checkpoint: {last}.' if last else ''} Hints: lower "
            f"the learning rate (learning_rate={args.learning_rate:g}) or add warmup; keep gradient clipping on "
            f"(max_grad_norm={args.max_grad_norm}); the compute dtype is {dtype}{advice}. Also check the batch's data "
            f"(very long rows, unusual tokens). See {TROUBLESHOOTING}."
        )

    # ------------------------------------------------------------------ reference values
    def _precompute_ref_logps(self, dataset, name, batch_size):
        """TRL's precompute loop, storing InSPO's reference values: `ref_chosen_logps` / `ref_rejected_logps` hold the
        conditional values (what [`compute_ref_log_probs`] returns), `ref_chosen_prompt_only_logps` /
        `ref_rejected_prompt_only_logps` the prompt-only ones, from the same forward."""
        if self.args.reference_free:
            return dataset
        self._check_prefix_sharing()  # the reference forward below already uses the tree layout
        # TRL caches on (dataset, model). InSPO's values also depend on the pair layout and on LD-DPO's `ld_alpha` (it
        # weights the reference tokens), and are stored differently: key on all of it, so that neither a cache written
        # by DPOTrainer nor one written for another InSPO layout can be read back.
        model_hash = self._precompute_model_hash
        # TRL's hash of a ZeRO-3-partitioned model covers only empty placeholders: the model's id and revision tell
        # two checkpoints of the same architecture apart there.
        config = self.accelerator.unwrap_model(self.ref_model or self.model).config
        model_id = (
            get_config_model_id(config),
            getattr(config, "_commit_hash", None),
            str(getattr(config, "dtype", "")),
        )
        self._precompute_model_hash = Hasher.hash(
            (model_hash, "trl-inspo/v2", model_id, self._layout_key(), self.ld_alpha)
        )
        # TRL's loop stores, for each row, what `compute_ref_log_probs` returns: the four values, here
        self.compute_ref_log_probs = self._stacked_ref_log_probs
        try:
            dataset = super()._precompute_ref_logps(dataset, name, batch_size)
        finally:
            self._precompute_model_hash = model_hash
            del self.compute_ref_log_probs
        self.reference_cache_files[name] = dataset.cache_files[-1]["filename"] if dataset.cache_files else None
        return _split_reference_columns(dataset)

    def _layout_key(self) -> tuple:
        collator = self.data_collator
        return collator.layout_key() if isinstance(collator, DataCollatorForInSPO) else (type(collator).__name__,)

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probabilities of one InSPO batch, as `trl.DPOTrainer.compute_ref_log_probs` returns them:
        `(ref_chosen, ref_rejected)`, each of shape `(B,)`, the conditional values `log pi_ref(y_w | x, y_l)` and
        `log pi_ref(y_l | x, y_w)` (the prompt-only values come from the same forward; see
        `_precompute_ref_logps`)."""
        return self._ref_logps(model, inputs, score_alternatives=False).conditional[:2]

    def _stacked_ref_log_probs(self, model, inputs):
        """`(ref_chosen, ref_rejected)`, each `(B, 2)`: `[conditional, prompt-only]` per pair."""
        ref = self._ref_logps(model, inputs, score_alternatives=True)
        return (
            torch.stack([ref.chosen_conditional, ref.chosen_unconditional], dim=1),
            torch.stack([ref.rejected_conditional, ref.rejected_unconditional], dim=1),
        )

    def _ref_logps(self, model, inputs, score_alternatives):
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
        return self._sequence_logps(outputs.log_probs, inputs)

    def _reference_values(self, inputs) -> tuple[PairLogps | None, PairLogps | None]:
        """The reference values `(conditional, prompt_only)` of a batch, from the precomputed columns or from a
        reference forward (lengths are not needed and left as `None`)."""
        if self.args.reference_free:
            return None, None
        if self.precompute_ref_logps:
            missing = [key for key in REF_COLUMNS + PROMPT_ONLY_REF_COLUMNS if key not in inputs]
            if missing:
                raise ValueError(
                    f"The precomputed reference columns {missing} are missing from the batch. InSPOTrainer writes "
                    f"four columns ({list(REF_COLUMNS + PROMPT_ONLY_REF_COLUMNS)}); a dataset precomputed by "
                    "DPOTrainer has only the first two, which hold DPO's values. Remove these columns and let "
                    "InSPOTrainer precompute them."
                )
            chosen, rejected, chosen_prompt, rejected_prompt = (
                inputs[k] for k in REF_COLUMNS + PROMPT_ONLY_REF_COLUMNS
            )
        else:
            # Prompt-only values only when a loss or the unconditional metrics read them
            score = self.args.unconditional_metrics or self.args.reference_needs_unconditional_logps
            ref = self._ref_logps(self.ref_model or self.model, inputs, score_alternatives=score)
            chosen, rejected, chosen_prompt, rejected_prompt = ref[:4]
        return PairLogps(chosen, rejected, None, None), PairLogps(chosen_prompt, rejected_prompt, None, None)

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

    def _sequence_logps(self, log_probs, inputs):
        kinds, num_pairs = self._logp_kinds(inputs)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        return logps_by_kind(log_probs[:, -kinds.size(1) :], kinds, num_pairs, self.ld_alpha)

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        args = self.args
        model_kwargs = self._forward_kwargs(model, inputs, score_alternatives=args.scores_alternatives)
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        outputs = model(**model_kwargs, fused_lm_head=True)
        kinds, num_pairs = self._logp_kinds(inputs)
        per_token_logps = outputs.log_probs[:, -kinds.size(1) :]
        policy = logps_by_kind(per_token_logps, kinds, num_pairs, self.ld_alpha)
        ref_conditional, ref_prompt_only = self._reference_values(inputs)
        if args.reference_conditioning == "prompt_only":
            ref_conditional = ref_prompt_only
        pair_weights = (None, None)
        if self.use_weighting:
            log_sum_sq = outputs.log_sum_sq_probs[:, -kinds.size(1) :]
            pair_weights = wpo_pair_weights(per_token_logps, log_sum_sq, kinds, num_pairs)
        # SFT reads the deployed policy, log pi(y_w | x), without LD-DPO down-weighting (as in TRL)
        sft = policy if self.ld_alpha is None else logps_by_kind(per_token_logps, kinds, num_pairs)
        options = {name: getattr(args, name) for name in LOSS_OPTIONS}
        options.update(
            beta=self.beta, sft_logps=sft.chosen_unconditional, sft_lengths=sft.chosen_unconditional_lengths
        )
        # The InSPO term on (c_w, c_l) and the DPO term on (u_w, u_l): (metric prefix, weight, policy, reference, WPO)
        terms = [
            ("", args.conditional_loss_weight, policy.conditional, ref_conditional, pair_weights[0]),
            ("_unconditional", args.unconditional_loss_weight, policy.unconditional, ref_prompt_only, pair_weights[1]),
        ]
        loss = 0.0
        for _, weight, logps, ref, wpo in terms:
            if weight:
                loss = loss + weight * combined_preference_loss(
                    self.loss_types, self.loss_weights, logps, ref, pair_weights=wpo, **options
                )

        if self.aux_loss_enabled:
            aux_loss = outputs.aux_loss
            loss = loss + self.router_aux_loss_coef * aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        logged = [(prefix, logps, ref) for prefix, _, logps, ref, _ in terms if not prefix or args.scores_alternatives]
        self._log_metrics(mode, inputs, outputs, kinds, logged)

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
    def _log_metrics(self, mode, inputs, outputs, kinds, terms):
        """TRL's metrics, on the target segments, and the rewards and log-probabilities of each term (`terms`:
        `(metric prefix, policy values, reference values or None)`)."""
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        width = kinds.size(1)
        chosen_mask, rejected_mask = kinds == CHOSEN_CONDITIONAL, kinds == REJECTED_CONDITIONAL

        def token_mean(values, mask):
            total = gather((values[:, -width:] * mask).sum().detach()).sum()
            count = gather(mask.sum()).sum()
            return (total / count).item() if count > 0 else 0.0

        metrics["entropy"].append(token_mean(outputs.entropy, chosen_mask | rejected_mask))
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        metrics["logits/chosen"].append(token_mean(outputs.mean_logits, chosen_mask))
        metrics["logits/rejected"].append(token_mean(outputs.mean_logits, rejected_mask))
        metrics["mean_token_accuracy"].append(token_mean(outputs.is_top1, chosen_mask))

        for prefix, logps, ref in terms:
            w, l = logps.chosen.detach(), logps.rejected.detach()
            if ref is None:  # reference-free: length-normalised implicit rewards (as in SimPO/ORPO)
                chosen_rewards = self.beta * w / logps.chosen_lengths.clamp(min=1)
                rejected_rewards = self.beta * l / logps.rejected_lengths.clamp(min=1)
            else:
                chosen_rewards = self.beta * (w - ref.chosen)
                rejected_rewards = self.beta * (l - ref.rejected)
            chosen_rewards, rejected_rewards = gather(chosen_rewards), gather(rejected_rewards)
            metrics[f"rewards{prefix}/chosen"].append(chosen_rewards.mean().item())
            metrics[f"rewards{prefix}/rejected"].append(rejected_rewards.mean().item())
            metrics[f"rewards{prefix}/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
            metrics[f"rewards{prefix}/margins"].append((chosen_rewards - rejected_rewards).mean().item())
            metrics[f"logps{prefix}/chosen"].append(gather(w).mean().item())
            metrics[f"logps{prefix}/rejected"].append(gather(l).mean().item())


def _fsdp_requested(args) -> bool:
    """Whether the run is sharded with FSDP (the Trainer is not built yet: read the arguments and the launcher)."""
    return bool(args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1")


def _attn_implementation(model) -> str | None:
    unwrapped = model.get_base_model() if is_peft_model(model) else model
    return getattr(unwrapped.config, "_attn_implementation", None)


def _model_type(model) -> str | None:
    unwrapped = model.get_base_model() if is_peft_model(model) else model
    return getattr(unwrapped.config.get_text_config(), "model_type", None)


def _split_reference_columns(dataset: Dataset) -> Dataset:
    """The two `[conditional, prompt-only]` columns TRL's precompute loop stored, as four one-value columns."""
    values = dataset.select_columns(list(REF_COLUMNS)).with_format("numpy")
    chosen, rejected = (np.asarray(values[c]) for c in REF_COLUMNS)
    if chosen.ndim != 2 or chosen.shape[1:] != (2,):
        raise TRLContractError(
            "docs/trl_internals.md, 'DPOTrainer._precompute_ref_logps': TRL's precompute loop was expected to store "
            f"what `compute_ref_log_probs` returns for each row (2 values), but stored shape {chosen.shape}. This TRL "
            "release changed its precompute loop; pin a supported TRL release (see the README)."
        )
    dataset = dataset.remove_columns(list(REF_COLUMNS))
    for column, array in zip(
        REF_COLUMNS + PROMPT_ONLY_REF_COLUMNS, (chosen[:, 0], rejected[:, 0], chosen[:, 1], rejected[:, 1])
    ):
        dataset = dataset.add_column(column, array.tolist())
    return dataset


def _replace_between(card: str, start: str, end: str, text: str) -> str:
    """`card` with its part from the `start` heading up to the `end` heading replaced by `text`; unchanged (with a
    warning) when TRL's template lacks them (docs/trl_internals.md, 'TRL's model card template')."""
    i, j = card.find(start), card.find(end)
    if i < 0 or j < i:
        logger.warning(f"TRL's model card has no '{start}' ... '{end}' section; the InSPO quick start is not added.")
        return card
    return card[:i] + text + card[j:]


def _insert_before(card: str, marker: str, text: str) -> str:
    """`card` with `text` inserted before the `marker` heading (appended when TRL's template lacks it)."""
    i = card.find(marker)
    return card + "\n" + text if i < 0 else card[:i] + text + "\n" + card[i:]
