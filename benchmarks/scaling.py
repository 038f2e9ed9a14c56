# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""How InSPO's cost against `trl.DPOTrainer` scales with the response and the prompt length.

Part `lengths`: synthetic pairs of exact token lengths (no padding), the Llama-shaped 32k-vocabulary model of
`throughput.py`, a live reference model, one training step timed as in `throughput.py` (mean of `--steps` steps after
`--warmup`, each run in a fresh subprocess, `--repeats` interleaved repeats; every step has the same lengths here).
Two sweeps:

- response length 64 .. 1024 tokens at a 64-token prompt;
- prompt length 64 .. 1024 tokens at 64-token responses.

For every point it records the InSPO/DPO time ratio of the two-row and the prefix-shared layouts, the token ratio
(`2(x + y_w + y_l) / (2x + y_w + y_l)` and `(x + 2y_w + 2y_l + 1) / (2x + y_w + y_l)`) and the peak-memory ratio, and
plots them (`scaling_response.png`, `scaling_prompt.png`).

Part `attention`: memory and time of the backbone alone (no LM head, so attention is what changes) over prefix-shared
rows of growing length, with `sdpa` (dense boolean 4D mask), `eager` (additive 4D mask, `T x T` scores per head) and
`flex_attention` (block mask; compiled on first use), against the same pairs in the two-row layout with `sdpa`
(`scaling_attention.png`): forward + backward (training) and no-grad forward (reference model). PyTorch's
FlexAttention has no backward on CPU, so on CPU it appears in the forward-only measurements only.

Part `lm_head`: TRL's chunked log-prob LM head alone (the function its fused LM head calls), forward + backward over a
growing number of positions (`lm_head_cpu.png`): on CPU it is the largest cost of a step at a 32k vocabulary.

Usage (from the repository root; `--smoke` runs a seconds-long version on a tiny model):

```bash
python benchmarks/scaling.py --output benchmarks/results/scaling.json
python benchmarks/scaling.py --parts attention --attention-impls sdpa flex_attention --output /tmp/attention.json
python benchmarks/scaling.py --smoke --output /tmp/scaling_smoke.json
```
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common.case import METHOD_FIELDS, METHOD_LABELS, METHODS, Case, run_settings  # noqa: E402
from benchmarks.common.data import prepare_tokenizer  # noqa: E402
from benchmarks.common.env import RESULTS_DIR, command_line, write_json  # noqa: E402
from benchmarks.common.machine import MemoryProbe, QuietMachine, load_average, machine_info  # noqa: E402
from benchmarks.common.models import MODEL_SHAPES, build_model  # noqa: E402
from benchmarks.common.runner import ratio, run_cases, run_in_subprocess, summarize  # noqa: E402


LENGTHS = (64, 128, 256, 512, 1024)
# Summary key of the length sweeps: the sweep is the case's variant, its point the prompt and response lengths
LENGTH_KEY = ("variant", "prompt_tokens", "response_tokens", "lm_head", "method")


def length_cases(args, tokenizer_dir: str) -> list[Case]:
    settings = dict(
        run_settings(args, tokenizer_dir),
        model="tiny" if args.smoke else "llama-32k",
        data="fixed",
        batch_size=args.batch_size,
    )
    lengths = (16, 32) if args.smoke else args.lengths
    base = 16 if args.smoke else 64
    cases = []
    for sweep in args.sweeps:
        for length in lengths:
            prompt, response = (base, length) if sweep == "response" else (length, base)
            for lm_head in args.lm_head:
                for method in METHODS:
                    label = f"{sweep}={length}/{lm_head}/{method}"
                    fields = dict(prompt_tokens=prompt, response_tokens=response, lm_head=lm_head, variant=sweep)
                    cases.append(Case(**METHOD_FIELDS[method], **settings, **fields, label=label))
    return cases


def length_table(summary: dict) -> list[dict]:
    rows = []
    for (sweep, prompt, response, lm_head, method), s in summary.items():
        base = summary.get((sweep, prompt, response, lm_head, "dpo"))
        if base is None:
            continue
        rows.append(
            {
                "sweep": sweep,
                "length": response if sweep == "response" else prompt,
                "lm_head": lm_head,
                "method": method,
                "step_time_s": s["step_time_s"],
                "step_time_spread_s": s["step_time_spread_s"],
                "tokens_per_step": s["tokens_per_step"],
                "positions_per_step": s["positions_per_step"],
                "scored_per_step": s["scored_per_step"],
                "tokens_per_s": s["tokens_per_s"],
                "step_peak_increase_mib": s["step_peak_increase_mib"],
                "time_ratio": ratio(s["step_time_s"], base["step_time_s"]),
                "token_ratio": ratio(s["tokens_per_step"], base["tokens_per_step"]),
                "memory_ratio": ratio(s["step_peak_increase_mib"], base["step_peak_increase_mib"]),
            }
        )
    rows.sort(key=lambda r: (r["sweep"], r["lm_head"], r["length"], METHODS.index(r["method"])))
    return rows


# ---------------------------------------------------------------------------------------------------------- attention
def attention_case(case: dict) -> dict:
    """One forward + backward (`case['mode'] == 'train'`) or one no-grad forward (`'forward'`, as the reference
    model runs) of the backbone over `case['pairs']` pairs of total prefix-shared row length ~`case['row_tokens']`
    (prompt 64 tokens, equal responses), in layout `case['layout']` (`tree` or `two_row`) with attention implementation
    `case['attn']`. Returns the median time and the peak memory increase of the measured calls
    (the first `flex_attention` call compiles and is not measured)."""
    import torch

    from trl_inspo import DataCollatorForInSPO
    from trl_inspo.prefix_sharing import tree_attention_mask

    torch.set_num_threads(case["threads"])
    prompt = case["prompt_tokens"]
    response = max(1, (case["row_tokens"] - prompt - 1) // 4)
    g = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(10, 1000, (n,), generator=g).tolist()

    examples = [{"prompt_ids": ids(prompt), "chosen_ids": ids(response), "rejected_ids": ids(response)}
                for _ in range(case["pairs"])]  # fmt: skip
    collator = DataCollatorForInSPO(pad_token_id=0, prefix_sharing=case["layout"] == "tree")
    batch = collator(examples)

    cuda = torch.cuda.is_available() and not case.get("cpu", False)
    device = "cuda" if cuda else "cpu"
    model = build_model(
        MODEL_SHAPES[case["model"]],
        attn_implementation=case["attn"],
        max_position_embeddings=max(8192, 2 * case["row_tokens"]),
        dtype=torch.bfloat16 if cuda else torch.float32,  # bf16, as a GPU run trains
        device=device,
    )
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    backbone = model.model
    memory = MemoryProbe(cuda)
    memory_after_load = memory.current()

    def step():
        kwargs = {"input_ids": batch["input_ids"], "use_cache": False}
        if case["layout"] == "tree":
            kwargs["attention_mask"] = tree_attention_mask(batch["tree_segment_ids"], case["attn"], model.dtype)
            kwargs["position_ids"] = batch["position_ids"]
        else:
            kwargs["attention_mask"] = batch["attention_mask"]
        if case["mode"] == "forward":  # a reference forward: no graph kept
            with torch.no_grad():
                backbone(**kwargs)
        else:
            hidden = backbone(**kwargs).last_hidden_state
            hidden.float().pow(2).mean().backward()
            model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    compile_s = None
    if case["attn"] == "flex_attention" or cuda:  # compile / CUDA warm-up, not measured
        t0 = time.perf_counter()
        step()
        compile_s = time.perf_counter() - t0
    times, peaks = measure_calls(step, case["calls"], memory)
    result = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "mem_unit": memory.unit,
        "case": case,
        "row_width": int(batch["input_ids"].size(1)),
        "rows": int(batch["input_ids"].size(0)),
        "tokens": int(batch["attention_mask"].sum()),
        "response_tokens": response,
        "time_s": statistics.median(times),
        "first_call_s": compile_s,
        "peak_increase_mib": max(peaks),
        "rss_after_load_mib": memory_after_load,
    }
    print("[attention] " + json.dumps({k: result[k] for k in ("time_s", "peak_increase_mib")} | {
        k: case[k] for k in ("layout", "attn", "mode", "row_tokens")}), flush=True)  # fmt: skip
    return result


def measure_calls(call, n: int, memory: MemoryProbe) -> tuple[list[float], list[float]]:
    """Time and peak memory increase (MiB) of `n` calls of `call`."""
    times, peaks = [], []
    for _ in range(n):
        memory.reset_peak()
        start = memory.current()
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        peaks.append(memory.peak() - start)
    return times, peaks


# ---------------------------------------------------------------------------------------------------------- LM head
def lm_head_case(case: dict) -> dict:
    """TRL's chunked log-prob LM head alone (`trl.kernels.ChunkedLogProbFunction`, the function its fused LM head
    calls, with DPOTrainer's outputs: log-probs, entropy, mean logit, top-1): forward + backward over `case['n']`
    positions, hidden size and vocabulary of `case['model']`, on CPU. Returns the median time and the peak RSS
    increase."""
    import torch
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    torch.set_num_threads(case["threads"])
    shape = MODEL_SHAPES[case["model"]]
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(case["n"], shape["hidden_size"], generator=g, requires_grad=True)
    weight = (torch.randn(shape["vocab_size"], shape["hidden_size"], generator=g) * 0.02).requires_grad_(True)
    targets = torch.randint(0, shape["vocab_size"], (case["n"],), generator=g)

    def call():
        outputs = ChunkedLogProbFunction.apply(
            hidden, weight, None, targets, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0,
            ("log_probs", "entropy", "mean_logits", "is_top1"),
        )  # fmt: skip
        outputs[0].sum().backward()
        hidden.grad = weight.grad = None

    call()  # warm-up
    times, peaks = measure_calls(call, case["calls"], MemoryProbe(cuda=False))
    return {"case": case, "time_s": statistics.median(times), "peak_increase_mib": max(peaks)}


def run_each(function, cases: list[dict], in_process: bool, quiet: QuietMachine) -> list[dict]:
    """`function(case)` (a function of this module) for each case, each in a fresh subprocess unless `in_process`; a
    failing subprocess (e.g. flex attention failing to compile) is recorded as an error and the next case runs."""
    results = []
    for case in cases:
        quiet.wait_before_case()
        print(f"[bench] {function.__name__} {case}", file=sys.stderr, flush=True)
        if in_process:
            results.append(function(case))
            continue
        try:
            results.append(run_in_subprocess("benchmarks.scaling", function.__name__, case))
        except RuntimeError as error:
            results.append({"case": case, "error": str(error)[-2000:]})
    return results


def plot_lm_head(results: list[dict], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = sorted((r for r in results if "error" not in r), key=lambda r: r["case"]["n"])
    n = [r["case"]["n"] for r in rs]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].plot(n, [1000 * r["time_s"] / r["case"]["n"] for r in rs], "o-")
    axes[0].set_ylabel("ms per position (forward + backward)")
    axes[1].plot(n, [r["peak_increase_mib"] for r in rs], "o-")
    axes[1].set_ylabel("peak RSS increase (MiB)")
    for ax in axes:
        ax.set_xlabel("positions scored")
        ax.grid(alpha=0.3)
    shape = MODEL_SHAPES[rs[0]["case"]["model"]] if rs else {}
    fig.suptitle(f"TRL chunked log-prob LM head on CPU (hidden {shape.get('hidden_size')}, vocab "
                 f"{shape.get('vocab_size')}; {machine})", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------- plots
def plot_lengths(table: list[dict], sweep: str, lm_head: str, path: Path, machine: str, other: str, model: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"inspo": "tab:blue", "inspo_ps": "tab:orange"}
    for method in ("inspo", "inspo_ps"):
        rows = [r for r in table if r["sweep"] == sweep and r["lm_head"] == lm_head and r["method"] == method]
        if not rows:
            continue
        x = [r["length"] for r in rows]
        label = METHOD_LABELS[method]
        axes[0].plot(x, [r["time_ratio"] for r in rows], "o-", color=colors[method], label=f"{label}: time")
        axes[0].plot(x, [r["token_ratio"] for r in rows], "--", color=colors[method], label=f"{label}: tokens")
        axes[1].plot(x, [r["memory_ratio"] for r in rows], "o-", color=colors[method], label=f"{label}: peak memory")
        axes[1].plot(x, [r["token_ratio"] for r in rows], "--", color=colors[method], label=f"{label}: tokens")
    lengths = sorted({r["length"] for r in table if r["sweep"] == sweep})
    for ax, title in zip(axes, ("step time / DPO step time", "step peak memory / DPO's")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.set_xlabel(f"{sweep} length (tokens; {other})")
        ax.set_ylabel("InSPO / DPOTrainer")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"InSPO vs DPOTrainer, {sweep} sweep ({model}; {machine}; LM head: {lm_head})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_attention(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row, mode in enumerate(("train", "forward")):
        series = {}
        for r in results:
            if "error" in r or r["case"]["mode"] != mode:
                continue
            series.setdefault(f"{r['case']['layout']} / {r['case']['attn']}", []).append(r)
        for key, rs in sorted(series.items()):
            rs.sort(key=lambda r: r["case"]["row_tokens"])
            x = [r["case"]["row_tokens"] for r in rs]
            axes[row, 0].plot(x, [max(r["peak_increase_mib"], 1) for r in rs], "o-", label=key)
            axes[row, 1].plot(x, [r["time_s"] for r in rs], "o-", label=key)
        what = "forward + backward" if mode == "train" else "no-grad forward (reference)"
        for ax, ylabel in zip(axes[row], (f"peak RSS increase, MiB ({what})", f"seconds ({what})")):
            ax.set_xscale("log", base=2)
            rows_measured = sorted({r["case"]["row_tokens"] for r in results})
            ax.set_xticks(rows_measured, [str(n) for n in rows_measured])
            ax.set_yscale("log")
            ax.set_xlabel("tokens of the pair's prefix-shared row")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Backbone over one pair (Llama 4x256): one tree row (4D mask) vs two rows", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long run: tiny model, short lengths, in-process")
    parser.add_argument(
        "--parts", nargs="+", default=["lengths", "attention", "lm_head"], choices=["lengths", "attention", "lm_head"]
    )
    parser.add_argument("--lm-head-positions", nargs="+", type=int, default=[256, 512, 1024, 2048, 3072, 4096])
    parser.add_argument("--sweeps", nargs="+", default=["response", "prompt"], choices=["response", "prompt"])
    parser.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    parser.add_argument("--lm-head", nargs="+", default=["stock"], choices=["stock", "compact"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1, help="pairs per step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attention-rows", nargs="+", type=int, default=[1024, 2048, 4096, 8192])
    parser.add_argument("--attention-impls", nargs="+", default=["sdpa", "eager", "flex_attention"])
    parser.add_argument("--eager-max-row", type=int, default=4096, help="longest row measured with eager attention")
    parser.add_argument("--in-process", action="store_true")
    QuietMachine.add_arguments(parser)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "scaling.json")
    parser.add_argument("--plots-dir", type=Path, default=None, help="where the PNGs go (default: next to --output)")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.smoke:
        args.repeats, args.warmup, args.steps, args.in_process = 1, 1, 2, True
        args.sweeps = args.sweeps[:1]
        args.attention_rows = [128, 256]
        args.attention_impls = ["sdpa", "eager"]
        args.lm_head_positions = [64, 128]
        args.threads = 1
    plots_dir = args.plots_dir or args.output.parent
    plots_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tokenizer_dir = prepare_tokenizer(None, small=True)  # synthetic data only: pseudo-words
    quiet = QuietMachine.from_args(args)
    wait = quiet.wait_at_start()
    load_start = load_average()
    machine = machine_info()
    machine_label = f"{machine.get('cpu_model', 'CPU')}, {args.threads} threads"
    shape = MODEL_SHAPES["tiny" if args.smoke else "llama-32k"]
    model_label = (f"{shape['architecture']} {shape['num_layers']}x{shape['hidden_size']}, "
                   f"vocab {shape['vocab_size']}, fp32, batch {args.batch_size} pair(s)")  # fmt: skip

    payload = {
        "benchmark": "scaling",
        "command": command_line(),
        "machine": machine,
        "load_average_start": load_start,
        "wait_for_quiet": wait,
        "settings": vars(args),
        "model_shape": shape,
    }
    plots = []
    if "lengths" in args.parts:
        cases = length_cases(args, tokenizer_dir)
        # raw runs, appended as they finish (survives a crash)
        log_path = None if args.smoke else Path(tempfile.gettempdir()) / (args.output.stem + ".runs.jsonl")
        if log_path is not None and log_path.exists():
            log_path.unlink()
        results = run_cases(cases, args.repeats, args.in_process, log_path, quiet)
        table = length_table(summarize(results, LENGTH_KEY))
        payload["lengths"] = {"ratios": table, "runs": results}
        for sweep in args.sweeps:
            for lm_head in args.lm_head:
                suffix = "" if lm_head == "stock" else f"_{lm_head}"
                path = plots_dir / f"scaling_{sweep}{suffix}.png"
                base = 16 if args.smoke else 64
                other = f"prompt {base} tokens" if sweep == "response" else f"responses {base} tokens"
                plot_lengths(table, sweep, lm_head, path, machine_label, other, model_label)
                plots.append(str(path))
        for r in table:
            if r["method"] != "dpo":
                print(
                    f"{r['sweep']:8s} {r['length']:5d} {r['lm_head']:7s} {r['method']:9s} "
                    f"time {r['time_ratio']:.2f} tokens {r['token_ratio']:.2f} memory {r['memory_ratio']:.2f}"
                )
    if "attention" in args.parts:
        cases = []
        cpu = args.smoke or not __import__("torch").cuda.is_available()
        for mode in ("train", "forward"):
            for row_tokens in args.attention_rows:
                for layout, attn in [("two_row", "sdpa")] + [("tree", a) for a in args.attention_impls]:
                    if mode == "train" and attn == "flex_attention" and cpu:
                        continue  # no FlexAttention backward on CPU
                    if attn == "eager" and row_tokens > args.eager_max_row:
                        continue  # eager keeps T x T scores per head and layer: gigabytes beyond this
                    cases.append(
                        dict(
                            model="tiny" if args.smoke else "llama-32k",
                            layout=layout,
                            attn=attn,
                            mode=mode,
                            row_tokens=row_tokens,
                            prompt_tokens=16 if args.smoke else 64,
                            pairs=1,
                            calls=2 if args.smoke else 3,
                            threads=args.threads,
                            cpu=cpu,
                        )  # fmt: skip
                    )
        results = run_each(attention_case, cases, args.in_process, quiet)
        payload["attention"] = results
        path = plots_dir / "scaling_attention.png"
        plot_attention(results, path)
        plots.append(str(path))
        for r in results:
            c = r["case"]
            if "error" in r:
                print(f"attention {c['mode']}/{c['layout']}/{c['attn']}/{c['row_tokens']}: ERROR")
            else:
                print(f"attention {c['mode']:7s} {c['layout']:7s} {c['attn']:14s} {c['row_tokens']:5d} "
                      f"peak +{r['peak_increase_mib']:.0f} MiB, {r['time_s']:.3f} s")  # fmt: skip
    if "lm_head" in args.parts:
        cases = [dict(model="tiny" if args.smoke else "llama-32k", n=n, calls=2 if args.smoke else 3,
                      threads=args.threads) for n in args.lm_head_positions]  # fmt: skip
        results = run_each(lm_head_case, cases, args.in_process, quiet)
        payload["lm_head"] = results
        path = plots_dir / "lm_head_cpu.png"
        plot_lm_head(results, path, machine_label)
        plots.append(str(path))
        for r in results:
            if "error" not in r:
                print(f"lm head {r['case']['n']:5d} positions: {1000 * r['time_s'] / r['case']['n']:.3f} ms/position, "
                      f"peak +{r['peak_increase_mib']:.0f} MiB")  # fmt: skip
    payload["load_average_end"] = load_average()
    payload["wall_time_s"] = time.time() - started
    payload["plots"] = plots
    write_json(args.output, payload)
    print(f"wrote {args.output} and {', '.join(plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
