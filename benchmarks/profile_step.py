# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Where a training step's CPU time goes, for `trl.DPOTrainer` and `InSPOTrainer` (two-row, prefix-shared, and with
`unconditional_metrics=False`): one step after warm-up under `torch.profiler`, self CPU time summed into the LM head
(ops on a vocabulary-sized tensor), attention kernels, the optimizer and the rest (the backbone's linear layers, norms,
copies, the collator), on the benchmark model and data of `throughput.py`.

```bash
python benchmarks/profile_step.py --output benchmarks/results/profile.json
python benchmarks/profile_step.py --smoke --output /tmp/profile_smoke.json
```
"""

import argparse
import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import perf_common as pc  # noqa: E402


RUNS = (("dpo", False), ("inspo", False), ("inspo", True), ("inspo_ps", False))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, HH (or chat-like) data, seconds")
    parser.add_argument("--datasets", nargs="+", default=["hh", "long"], choices=["hh", "long", "chat"])
    parser.add_argument("--data-path", type=Path, default=pc.DEFAULT_HH)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=pc.RESULTS_DIR / "profile.json")
    args = parser.parse_args(argv)
    hh = args.data_path if args.data_path and Path(args.data_path).exists() else None
    if args.smoke:
        args.datasets = args.datasets[:1]
    tokenizer_dir = pc.prepare_tokenizer(hh, vocab_size=2000 if args.smoke else 8000,
                                         max_hh_rows=50 if args.smoke else None)  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.datasets:
            for method, targets_only in RUNS:
                case = dict(
                    method=method, model="tiny" if args.smoke else "llama-32k", data=data,
                    batch_size=2 if args.smoke else {"hh": 4, "chat": 4, "long": 2}[data], warmup=1, steps=1,
                    reference="live", lm_head="stock", attn="sdpa", threads=args.threads,
                    hh_path=str(hh) if hh else None, tokenizer_dir=tokenizer_dir, seed=0, profile=True,
                    score_targets_only=targets_only, tmp_dir=tmp,
                )  # fmt: skip
                r = pc.run_case(case)
                label = pc.METHOD_LABELS[method] + (" (unconditional_metrics=False)" if targets_only else "")
                by_cat = r["profile"]["self_cpu_ms_by_category"]
                results.append(dict(data=r["data_used"], method=method, label=label, tokens=r["batches"][1]["tokens"],
                                    scored=r["batches"][1]["scored"], self_cpu_ms=by_cat,
                                    top_ops=r["profile"]["top_ops"][:12]))  # fmt: skip
                print(f"{r['data_used']:5s} {label:50s} " + ", ".join(f"{k} {v:.0f} ms" for k, v in by_cat.items()),
                      flush=True)  # fmt: skip
    payload = dict(benchmark="profile", command=" ".join(["python"] + sys.argv), machine=pc.machine_info(),
                   results=results)  # fmt: skip
    pc.write_json(args.output, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
