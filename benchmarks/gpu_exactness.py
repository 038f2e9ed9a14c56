# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Exactness of the prefix-shared layout on a device: `c_w, u_w, c_l, u_l` from one prefix-shared batch (sdpa with a
4D mask, flex attention with a block mask, eager) against the two-row layout (sdpa), fp32, policy = reference.

```bash
python benchmarks/gpu_exactness.py                      # CUDA: llama-32k and qwen2-0.5b shapes, HH sample + long
python benchmarks/gpu_exactness.py --smoke --output /tmp/exactness.json   # CPU, tiny model, 2 pairs (CI)
```
"""

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import perf_common as pc  # noqa: E402


LAYOUTS = (("ps_sdpa", True, "sdpa"), ("ps_flex", True, "flex_attention"), ("ps_eager", True, "eager"))


def inspo_values(rows, tokenizer, shape, device, prefix_sharing, attn):
    """(B, 4) reference-style log-probs `[c_w, u_w, c_l, u_l]` of one batch through `InSPOTrainer`."""
    import torch
    from datasets import Dataset

    from trl_inspo import InSPOConfig, InSPOTrainer
    from trl_inspo.tiny import build_model

    with torch.device(device):
        model = build_model(tokenizer, seed=0, max_position_embeddings=4096, attn_implementation=attn, **shape)
    config = InSPOConfig(
        output_dir="/tmp/inspo-exactness", report_to="none", bf16=False, max_length=None, use_cpu=device == "cpu",
        per_device_train_batch_size=len(rows), prefix_sharing=prefix_sharing,
    )  # fmt: skip
    trainer = InSPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))]))
    with torch.no_grad():
        chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    return torch.cat([chosen, rejected], 1).float().cpu()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=["llama-32k", "qwen2-0.5b"], choices=sorted(pc.MODEL_SHAPES))
    parser.add_argument("--datasets", nargs="+", default=["hh", "long"], choices=["hh", "long", "chat"])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--data-path", type=Path, default=pc.DEFAULT_HH)
    parser.add_argument("--output", type=Path, default=pc.RESULTS_DIR / "gpu_exactness.json")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, HH (or chat-like) data, 2 pairs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.models, args.datasets, args.pairs = "cpu", ["tiny"], ["hh"], 2
    import torch

    hh = args.data_path if args.data_path and Path(args.data_path).exists() else None
    vocab = min([8000] + [pc.MODEL_SHAPES[m]["vocab_size"] // 2 for m in args.models])
    tokenizer = pc.load_tokenizer(
        pc.prepare_tokenizer(hh, vocab_size=vocab, max_hh_rows=None if vocab == 8000 else 50)
    )
    results = []
    for model_key in args.models:
        shape = pc.MODEL_SHAPES[model_key]
        for data in args.datasets:
            rows, used = pc.dataset_rows(data, args.pairs, hh)
            base = inspo_values(rows, tokenizer, shape, args.device, False, "sdpa")
            for name, prefix_sharing, attn in LAYOUTS:
                entry = dict(model=model_key, data=used, layout=name, attn=attn)
                try:
                    values = inspo_values(rows, tokenizer, shape, args.device, prefix_sharing, attn)
                except Exception as error:  # an attention backend this torch/device lacks: record it
                    entry["error"] = f"{type(error).__name__}: {str(error)[:300]}"
                else:
                    diff = (values - base).abs()
                    entry.update(max_abs_diff=diff.max().item(), max_rel_diff=(diff / base.abs()).max().item(),
                                 mean_abs_logp=base.abs().mean().item())  # fmt: skip
                results.append(entry)
                print(json.dumps(entry), flush=True)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    payload = dict(device=device_name, torch=torch.__version__, dtype="float32", pairs=args.pairs,
                   command=" ".join(["python"] + sys.argv), results=results)  # fmt: skip
    pc.write_json(args.output, payload)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
