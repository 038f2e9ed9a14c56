# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The `trl-inspo` command: TRL's DPO script with `InSPOTrainer`/`InSPOConfig`.

```bash
trl-inspo --config examples/configs/quickstart.yaml
trl-inspo --model_name_or_path Qwen/Qwen2-0.5B-Instruct --dataset_name trl-lib/ultrafeedback_binarized \\
    --output_dir Qwen2-0.5B-InSPO --learning_rate 5e-7 --per_device_train_batch_size 2 --use_peft
```

Every `DPOConfig`, `ModelConfig` and `ScriptArguments` option works as in `trl dpo`, plus the InSPO options
(`--reference_conditioning`, `--conditional_loss_weight`, `--unconditional_loss_weight`, `--max_alternative_length`,
`--alternative_separator`, `--simpo_gamma`, `--rdpo_alpha`). `--dataset_name` also takes a local `.json`/`.jsonl`/
`.csv`/`.parquet` file or a directory of such files.
"""

import enum
import os
from dataclasses import dataclass, field

from trl import ScriptArguments

from .errors import InSPODataError


_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class InSPOScriptArguments(ScriptArguments):
    """TRL's `ScriptArguments`, with the local data that `trl-inspo` also reads."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset to load: a Hugging Face Hub id, or a local .json/.jsonl/.csv/.parquet file or a folder "
            "of such files (a folder holding train.jsonl and test.jsonl gives a 'train' and a 'test' split). If "
            "`datasets` is provided, this is ignored."
        },
    )


def load_preference_dataset(script_args, dataset_args):
    """The dataset as `trl dpo` loads it, plus local data files."""
    from datasets import DatasetDict, load_dataset
    from trl import get_dataset

    if dataset_args.datasets:
        return get_dataset(dataset_args)
    name = script_args.dataset_name
    if not name:
        raise ValueError(
            "No dataset given: pass `--dataset_name` (a Hub dataset id, or a local .json/.jsonl/.csv/.parquet file or "
            "directory) or a `datasets:` mixture in the YAML config."
        )
    extension = os.path.splitext(name)[1].lower()
    if os.path.isfile(name):
        if extension not in _FILE_BUILDERS:
            raise ValueError(
                f"Cannot read the local dataset file {name!r}: use a .json, .jsonl, .csv or .parquet file."
            )
    if os.path.exists(name) and _blank(name):
        raise _empty_data_error(name)
    try:
        if os.path.isfile(name):
            dataset = load_dataset(_FILE_BUILDERS[extension], data_files=name)
        else:
            dataset = load_dataset(name, name=script_args.dataset_config, streaming=script_args.dataset_streaming)
    except StopIteration:  # `datasets` reads no row from an empty local file
        raise _empty_data_error(name) from None
    if not isinstance(dataset, DatasetDict) and not hasattr(dataset, "keys"):
        dataset = DatasetDict({script_args.dataset_train_split: dataset})
    return dataset


def _blank(path: str) -> bool:
    """Whether a local data file (or every data file of a folder) holds nothing but whitespace."""
    if os.path.isdir(path):
        files = [os.path.join(path, f) for f in os.listdir(path) if os.path.splitext(f)[1].lower() in _FILE_BUILDERS]
        return bool(files) and all(_blank(f) for f in files)
    if os.path.getsize(path) > 1 << 20:
        return False
    with open(path, "rb") as f:
        return not f.read().strip()


def _empty_data_error(name: str) -> InSPODataError:
    return InSPODataError(
        f"The dataset {name!r} is empty: it holds no preference row. Pass a file (or folder) with rows that have "
        "'chosen' and 'rejected' (and 'prompt') fields."
    )


def main(script_args, training_args, model_args, dataset_args):
    """Train with `InSPOTrainer` as `trl dpo` trains with `DPOTrainer`, then save (and push) the model."""
    from trl import get_peft_config, get_quantization_config

    from .trainer import InSPOTrainer

    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    if training_args.model_init_kwargs is not None:
        model_init_kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = model_init_kwargs

    dataset = load_preference_dataset(script_args, dataset_args)
    if script_args.dataset_train_split not in dataset:
        raise ValueError(
            f"The dataset has no {script_args.dataset_train_split!r} split (it has {list(dataset.keys())}); set "
            "`--dataset_train_split`."
        )
    eval_dataset = None
    strategy = training_args.eval_strategy
    strategy = strategy.value if isinstance(strategy, enum.Enum) else strategy
    if strategy != "no":
        if script_args.dataset_test_split not in dataset:
            local = script_args.dataset_name and os.path.exists(script_args.dataset_name)
            fix = (
                "A local file has one split ('train'): put a train.jsonl and a test.jsonl (or .json/.csv/.parquet) in "
                "one folder and pass the folder as `--dataset_name`"
                if local
                else f"Set `--dataset_test_split` to one of {list(dataset.keys())}"
            )
            raise ValueError(
                f"Evaluation is on (`eval_strategy={strategy!r}`) but the dataset has no "
                f"{script_args.dataset_test_split!r} split (it has {list(dataset.keys())}). {fix}, or set "
                "`--eval_strategy no`."
            )
        eval_dataset = dataset[script_args.dataset_test_split]

    trainer = InSPOTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )

    if script_args.ignore_bias_buffers:
        import torch

        # torch distributed hack, as in `trl dpo`
        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]

    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.print("Training completed.")

    trainer.save_model(training_args.output_dir)
    dataset_name = script_args.dataset_name
    trainer.create_model_card(dataset_name=dataset_name)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
        trainer.accelerator.print(f"Model pushed to the Hub in https://huggingface.co/{trainer.hub_model_id}.")
    if hasattr(trainer, "end"):
        trainer.end()
    return trainer


def make_parser(prog: str | None = None):
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser

    from .config import InSPOConfig

    return TrlParser((InSPOScriptArguments, InSPOConfig, ModelConfig, DatasetMixtureConfig), prog=prog)


def cli_main(argv: list[str] | None = None):
    """Entry point of the `trl-inspo` console script."""
    parser = make_parser(prog="trl-inspo")
    script_args, training_args, model_args, dataset_args = parser.parse_args_and_config(
        args=argv, fail_with_unknown_args=True
    )
    main(script_args, training_args, model_args, dataset_args)


if __name__ == "__main__":
    cli_main()
