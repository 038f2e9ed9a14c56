# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""What the benchmark scripts of `benchmarks/` share.

- `env`: where things are (repository, results, the HH sample), the offline Hub set-up, the command line and the JSON
  writing of a run;
- `machine`: the machine a run measured on, and how busy it was (load, CPU used by other processes, memory probes);
- `data`: preference rows (the HH-RLHF sample, synthetic rows of controlled token lengths) and the benchmark tokenizer;
- `models`: model shapes built from a config (random weights);
- `flops`: the FLOPs a training step needs, and the device's peak;
- `case`: `Case`, one training run to measure;
- `runner`: runs cases (in this process or a fresh one) and summarises repeats.

Nothing here touches the Hugging Face Hub: tokenizers are trained locally, models are built from configs, and
importing this package keeps the libraries offline (`env.use_offline_hub`), so it is imported before them.
"""

from .env import use_offline_hub


use_offline_hub()
