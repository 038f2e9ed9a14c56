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


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common.case import METHOD_FIELDS, METHOD_LABELS, Case  # noqa: E402
from benchmarks.common.data import hh_sample, prepare_tokenizer  # noqa: E402
from benchmarks.common.env import DEFAULT_HH, RESULTS_DIR, command_line, write_json  # noqa: E402
from benchmarks.common.machine import machine_info  # noqa: E402
from benchmarks.common.runner import run_case  # noqa: E402


# (method, unconditional_metrics)
RUNS = (("dpo", True), ("inspo", True), ("inspo", False), ("inspo_ps", True))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, HH (or chat-like) data, seconds")
    parser.add_argument("--datasets", nargs="+", default=["hh", "long"], choices=["hh", "long", "chat"])
    parser.add_argument("--data-path", type=Path, default=DEFAULT_HH)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "profile.json")
    args = parser.parse_args(argv)
    hh = hh_sample(args.data_path)
    if args.smoke:
        args.datasets = args.datasets[:1]
    tokenizer_dir = prepare_tokenizer(hh, small=args.smoke)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.datasets:
            for method, unconditional_metrics in RUNS:
                case = Case(
                    **METHOD_FIELDS[method],
                    model="tiny" if args.smoke else "llama-32k",
                    tokenizer_dir=tokenizer_dir,
                    data=data,
                    hh_path=hh,
                    batch_size=2 if args.smoke else {"hh": 4, "chat": 4, "long": 2}[data],
                    warmup=1,
                    steps=1,
                    unconditional_metrics=unconditional_metrics,
                    threads=args.threads,
                    profile=True,
                    tmp_dir=tmp,
                )
                r = run_case(case)
                label = METHOD_LABELS[method] + ("" if unconditional_metrics else " (unconditional_metrics=False)")
                by_cat = r["profile"]["self_cpu_ms_by_category"]
                results.append(
                    dict(
                        data=r["data_used"],
                        method=method,
                        label=label,
                        tokens=r["batches"][1]["tokens"],
                        scored=r["batches"][1]["scored"],
                        self_cpu_ms=by_cat,
                        top_ops=r["profile"]["top_ops"][:12],
                    )
                )
                print(f"{r['data_used']:5s} {label:50s} " + ", ".join(f"{k} {v:.0f} ms" for k, v in by_cat.items()),
                      flush=True)  # fmt: skip
    payload = dict(benchmark="profile", command=command_line(), machine=machine_info(), results=results)
    write_json(args.output, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
