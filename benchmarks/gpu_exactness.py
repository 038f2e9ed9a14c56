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


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common.data import dataset_rows, hh_sample, load_tokenizer, prepare_tokenizer  # noqa: E402
from benchmarks.common.env import DEFAULT_HH, RESULTS_DIR, command_line, write_json  # noqa: E402
from benchmarks.common.exactness import differences, four_logps  # noqa: E402
from benchmarks.common.models import MODEL_SHAPES  # noqa: E402


LAYOUTS = (("ps_sdpa", True, "sdpa"), ("ps_flex", True, "flex_attention"), ("ps_eager", True, "eager"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=["llama-32k", "qwen2-0.5b"], choices=sorted(MODEL_SHAPES))
    parser.add_argument("--datasets", nargs="+", default=["hh", "long"], choices=["hh", "long", "chat"])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--data-path", type=Path, default=DEFAULT_HH)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "gpu_exactness.json")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, HH (or chat-like) data, 2 pairs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.models, args.datasets, args.pairs = "cpu", ["tiny"], ["hh"], 2
    import torch

    hh = hh_sample(args.data_path)
    small = any(MODEL_SHAPES[m]["vocab_size"] < 8000 for m in args.models)  # the tokenizer must fit the vocabulary
    tokenizer = load_tokenizer(prepare_tokenizer(hh, small=small))
    results = []
    for model_key in args.models:
        shape = MODEL_SHAPES[model_key]
        for data in args.datasets:
            rows, used = dataset_rows(data, args.pairs, hh)
            base = four_logps(rows, tokenizer, shape, args.device, False, "sdpa")
            for name, prefix_sharing, attn in LAYOUTS:
                entry = dict(model=model_key, data=used, layout=name, attn=attn)
                try:
                    values = four_logps(rows, tokenizer, shape, args.device, prefix_sharing, attn)
                except Exception as error:  # an attention backend this torch/device lacks: record it
                    entry["error"] = f"{type(error).__name__}: {str(error)[:300]}"
                else:
                    entry.update(differences(values, base))
                results.append(entry)
                print(json.dumps(entry), flush=True)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    payload = dict(device=device_name, torch=torch.__version__, dtype="float32", pairs=args.pairs,
                   command=command_line(), results=results)  # fmt: skip
    write_json(args.output, payload)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
