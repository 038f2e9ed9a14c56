# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Train InSPO on a tiny local model for a few steps and write the log history as JSON (main process only).

Used by tests/test_multiprocess.py, in-process (one process) and under `accelerate launch` (several processes; on a
machine without CUDA the DDP config runs CPU processes over gloo):

```bash
accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml --num_processes 2 --mixed_precision no \\
    tests/scripts/train_tiny.py --model DIR --data prefs.jsonl --batch_size 2 --output_json log.json
```
"""

import argparse
import json
import os


def run(argv: list[str] | None = None) -> dict | None:
    """Train, write the JSON record (main process) and return it (`None` on the other processes)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="directory of a saved causal LM and its tokenizer")
    parser.add_argument("--data", required=True, help="jsonl file of prompt/chosen/rejected rows")
    parser.add_argument("--batch_size", type=int, required=True, help="per-device train batch size")
    parser.add_argument("--output_json", required=True)
    parser.add_argument("--output_dir", default=None)
    parser.add_argument("--max_steps", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    from trl_inspo import InSPOConfig, InSPOTrainer

    dataset = load_dataset("json", data_files=args.data, split="train")
    config = InSPOConfig(
        output_dir=args.output_dir or os.path.join(os.path.dirname(args.output_json), "out"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        unconditional_loss_weight=0.5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        seed=args.seed,
    )
    trainer = InSPOTrainer(model=args.model, args=config, train_dataset=dataset)
    trainer.train()
    if not trainer.accelerator.is_main_process:
        return None
    record = {
        "num_processes": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "backend": trainer.accelerator.state.backend,
        "log_history": trainer.state.log_history,
    }
    with open(args.output_json, "w") as f:
        json.dump(record, f)
    return record


if __name__ == "__main__":
    run()
