# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.

# /// script
# dependencies = [
#     "trl-inspo",
#     "peft",
# ]
# ///

"""
InSPO training in the style of TRL's `trl/scripts/dpo.py`: `TrlParser` over `ScriptArguments`, `InSPOConfig`,
`ModelConfig`; YAML configs with `--config`; `--use_peft` / `--load_in_4bit` handled by TRL's helpers.

# Quickstart (CPU, about a minute, no Hub access)
```bash
python examples/scripts/inspo.py --config examples/configs/quickstart.yaml
```

# Full training
```bash
python examples/scripts/inspo.py \
    --dataset_name trl-lib/ultrafeedback_binarized \
    --model_name_or_path Qwen/Qwen2-0.5B-Instruct \
    --learning_rate 5.0e-7 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 2 \
    --gradient_accumulation_steps 8 \
    --max_length 2048 \
    --output_dir Qwen2-0.5B-InSPO
```

# LoRA / QLoRA
```bash
python examples/scripts/inspo.py \
    --dataset_name trl-lib/ultrafeedback_binarized \
    --model_name_or_path Qwen/Qwen2-0.5B-Instruct \
    --learning_rate 5.0e-6 \
    --per_device_train_batch_size 2 \
    --gradient_accumulation_steps 8 \
    --output_dir Qwen2-0.5B-InSPO-LoRA \
    --use_peft --lora_r 32 --lora_alpha 16 \
    --load_in_4bit  # QLoRA
```
"""

from trl_inspo.cli import main, make_parser


if __name__ == "__main__":
    parser = make_parser()
    script_args, training_args, model_args, dataset_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args, dataset_args)
