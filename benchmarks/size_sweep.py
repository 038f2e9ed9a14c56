# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Size sweep of the learning study: does InSPO's advantage over DPO change with model size, each method tuned fairly?

The sorting study of `benchmarks/learning.py` (same task, SFT recipe, pairs and evaluation), at several model sizes.
Per size, with the same protocol and budget for every method (`dpo`, `inspo`, `inspo+uncond`):

1. **tune**: one SFT checkpoint (seed 100) and its preference pairs; every method trains at every point of the grid
   (beta x learning rate) and is evaluated on a *validation* set of prompts, disjoint from the held-out test prompts.
2. **pick**: per method, the grid point with the best validation greedy exact match (ties: the smaller absolute length
   error, then the smaller learning rate). Whether that point improves on the SFT start is recorded.
3. **final**: seeds 0-4, fresh SFT checkpoints and pairs per seed, each method at its own picked setting, evaluated on
   the held-out test prompts; paired differences to DPO (same seed, SFT start and pairs).
4. **report**: `summary.json`, a Markdown table and one plot of the paired InSPO - DPO differences against parameter
   count.

The HH-RLHF part (`hh`) runs the HH study of `learning.py` (its settings) at given sizes: held-out reward accuracies.

Usage (from the repository root; results under `benchmarks/results/learning_size_sweep/`):

```bash
python benchmarks/size_sweep.py run --sizes h64_l2 h128_l2 h192_l3 h320_l4 --threads 1   # resumes: done files are kept
python benchmarks/size_sweep.py hh --sizes h128_l2 h192_l3 --seeds 0 1 2 --threads 1
python benchmarks/size_sweep.py report
python benchmarks/size_sweep.py --smoke            # seconds: two tiny sizes, a 2-point grid, 1 seed
```
"""

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import learning  # noqa: E402  (first: keeps the libraries off the Hub)
from benchmarks.common.env import RESULTS_DIR, write_json  # noqa: E402


OUT_DIR = RESULTS_DIR / "learning_size_sweep"
# The sizes measured, h<hidden>_l<layers> (4 attention heads): 0.13M, 0.42M, 1.25M, 4.33M parameters (vocabulary 400)
SIZES = ("h64_l2", "h128_l2", "h192_l3", "h320_l4")
# The same grid for every size and method: the learning study's default (beta 0.5, lr 1e-4) and half-decades around it
GRID = [{"beta": beta, "learning_rate": lr} for beta in (0.1, 0.5) for lr in (1e-5, 3e-5, 1e-4, 3e-4)]
TUNE_SEED = 100
FINAL_SEEDS = [0, 1, 2, 3, 4]
METHODS = list(learning.METHODS)
# Reported per size: (key in the learning study's records, label)
METRICS = [
    ("gen_exact_match", "greedy exact match"),
    ("gen_abs_length_error", "abs. length error (tokens)"),
    ("conditional_reward_accuracy", "held-out cond. reward acc."),
    ("unconditional_reward_accuracy", "held-out uncond. reward acc."),
]


def parse_size(name: str) -> tuple[int, int]:
    """`h<hidden>_l<layers>` -> (hidden, layers)."""
    try:
        hidden, layers = name.split("_")
        assert hidden[0] == "h" and layers[0] == "l"
        return int(hidden[1:]), int(layers[1:])
    except (ValueError, AssertionError, IndexError):
        raise argparse.ArgumentTypeError(f"size {name!r}: write it as h<hidden>_l<layers>, e.g. h256_l4") from None


def sized(base: learning.StudyArgs, size: str) -> learning.StudyArgs:
    args = copy.deepcopy(base)
    args.model.hidden_size, args.model.num_layers = parse_size(size)
    return args


# ====================================================================== tune, pick, final
def tune(base: learning.StudyArgs, size: str, grid: list[dict], out_dir: Path, workdir: str, seed: int = TUNE_SEED):
    args = sized(base, size)
    args.seeds, args.eval_split, args.grid = [seed], "validation", list(grid)
    return learning.run_study(args, str(out_dir / f"tune_{size}.json"), os.path.join(workdir, f"tune_{size}"), False)


def pick(tune_result: dict, methods: list[str]) -> dict:
    """Per method, the grid point with the best validation exact match (ties: smaller absolute length error, then
    smaller learning rate), with its validation numbers and the SFT start's."""
    (run,) = tune_result["runs"]
    sft = run["sft"]
    picks = {}
    for method in methods:
        candidates = [rec for name, rec in run["methods"].items() if name.split("|")[0] == method]
        if not candidates:
            raise ValueError(f"the tuning run has no {method!r} runs; it ran {sorted(run['methods'])}")
        best = max(
            candidates,
            key=lambda r: (r["gen_exact_match"], -r["gen_abs_length_error"], -r["setting"]["learning_rate"]),
        )
        picks[method] = {
            "setting": best["setting"],
            "validation_exact_match": best["gen_exact_match"],
            "validation_abs_length_error": best["gen_abs_length_error"],
            "sft_validation_exact_match": sft["gen_exact_match"],
            "improves_on_sft": best["gen_exact_match"] > sft["gen_exact_match"],
            "grid": {
                learning.grid_name("", r["setting"]).lstrip("|"): {
                    "gen_exact_match": r["gen_exact_match"],
                    "gen_abs_length_error": r["gen_abs_length_error"],
                }
                for r in candidates
            },
        }
    return picks


def final(base: learning.StudyArgs, size: str, picks: dict, seeds: list[int], out_dir: Path, workdir: str) -> dict:
    args = sized(base, size)
    args.seeds, args.eval_split = list(seeds), "test"
    args.method_pref = {method: dict(p["setting"]) for method, p in picks.items()}
    result = learning.run_study(args, None, os.path.join(workdir, f"final_{size}"), plot=False)
    result["size"], result["parameters"] = size, result["runs"][0]["sft"]["parameters"]
    result["picks"] = picks
    write_json(out_dir / f"final_{size}.json", result)
    return result


def run_size(base, size: str, grid, seeds, out_dir: Path, workdir: str, log=print) -> dict:
    """Tune, pick and run the final seeds of one size; files already written are read instead of re-run."""
    tune_path, final_path = out_dir / f"tune_{size}.json", out_dir / f"final_{size}.json"
    if final_path.exists():
        log(f"{size}: {final_path} exists, kept")
        return json.loads(final_path.read_text())
    if tune_path.exists():
        log(f"{size}: {tune_path} exists, kept")
        tuned = json.loads(tune_path.read_text())
    else:
        tuned = tune(base, size, grid, out_dir, workdir)
    picks = pick(tuned, base.methods)
    log(f"{size}: picks " + ", ".join(f"{m}: {p['setting']}" for m, p in picks.items()))
    return final(base, size, picks, seeds, out_dir, workdir)


def run_hh(base: learning.StudyArgs, size: str, out_dir: Path, workdir: str) -> dict:
    args = sized(base, size)
    result = learning.run_study(args, None, os.path.join(workdir, f"hh_{size}"), plot=False)
    result["size"], result["parameters"] = size, result["runs"][0]["sft"]["parameters"]
    write_json(out_dir / f"hh_{size}.json", result)
    return result


# ====================================================================== report
def per_method(result: dict, keys: list[str]) -> tuple[dict, dict]:
    """From the study's own summary (`learning.summarize_runs`): per method, the mean ± std of `keys`, and for every
    method but DPO the paired differences to DPO."""
    methods = list(result["runs"][0]["methods"])
    summary = result["summary"]
    values = {m: {k: summary[m][k] for k in keys} for m in methods}
    minus_dpo = {m: {k: summary[m][f"{k}_minus_dpo"] for k in keys} for m in methods if m != "dpo"}
    return values, minus_dpo


def report(out_dir: Path, log=print) -> dict:
    """`summary.json`, `summary.md` and `size_sweep.png` from the `final_*.json` and `hh_*.json` files of `out_dir`."""
    finals = sorted((json.loads(p.read_text()) for p in out_dir.glob("final_*.json")), key=lambda r: r["parameters"])
    hhs = sorted((json.loads(p.read_text()) for p in out_dir.glob("hh_*.json")), key=lambda r: r["parameters"])
    if not finals:
        raise FileNotFoundError(f"no final_*.json in {out_dir}: run `size_sweep.py run` first")
    keys, hh_keys = [k for k, _ in METRICS], [k for k, _ in METRICS[2:]]
    sizes = []
    for result in finals:
        methods = list(result["runs"][0]["methods"])
        values, minus_dpo = per_method(result, keys)
        entry = {
            "size": result["size"],
            "parameters": result["parameters"],
            "seeds": [run["seed"] for run in result["runs"]],
            "settings": {m: result["picks"][m]["setting"] for m in methods},
            "improves_on_sft_in_validation": {m: result["picks"][m]["improves_on_sft"] for m in methods},
            "validation": {
                "sft_exact_match": result["picks"][methods[0]]["sft_validation_exact_match"],
                "exact_match": {
                    m: {k: v["gen_exact_match"] for k, v in result["picks"][m]["grid"].items()} for m in methods
                },
            },
            "sft": {k: result["summary"]["sft"][k] for k in keys[:2]},
            "methods": values,
            "minus_dpo": minus_dpo,
        }
        sizes.append(entry)
    hh = []
    for r in hhs:
        values, minus_dpo = per_method(r, hh_keys)
        seeds = [run["seed"] for run in r["runs"]]
        hh.append(
            {
                "size": r["size"],
                "parameters": r["parameters"],
                "seeds": seeds,
                "methods": values,
                "minus_dpo": minus_dpo,
            }
        )
    summary = {"protocol": __doc__.split("Usage")[0].strip(), "grid": GRID, "sort": sizes, "hh": hh}
    write_json(out_dir / "summary.json", summary)
    (out_dir / "summary.md").write_text(markdown(summary) + "\n")
    plot(summary, out_dir / "size_sweep.png")
    log(markdown(summary))
    return summary


def fmt(v: dict, signed: bool = False) -> str:
    return f"{v['mean']:+.3f} ± {v['std']:.3f}" if signed else f"{v['mean']:.3f} ± {v['std']:.3f}"


def markdown(summary: dict) -> str:
    lines = [
        "| size | parameters | method | setting (beta, lr) | exact match | abs. length error | cond. acc. "
        "| uncond. acc. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary["sort"]:
        lines.append(
            f"| {s['size']} | {s['parameters'] / 1e6:.2f}M | sft | – | {fmt(s['sft']['gen_exact_match'])} | "
            f"{fmt(s['sft']['gen_abs_length_error'])} | – | – |"
        )
        for m, metrics in s["methods"].items():
            st = s["settings"][m]
            lines.append(
                f"| {s['size']} | {s['parameters'] / 1e6:.2f}M | {m} | {st['beta']:g}, {st['learning_rate']:g} | "
                + " | ".join(fmt(metrics[k]) for k, _ in METRICS)
                + " |"
            )
    lines += [
        "",
        "Paired difference to DPO (same seed, SFT start and pairs; each method at its own tuned setting), mean ± std:",
        "",
        "| size | parameters | method | " + " | ".join(label for _, label in METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    for s in summary["sort"]:
        for m, diffs in s["minus_dpo"].items():
            lines.append(
                f"| {s['size']} | {s['parameters'] / 1e6:.2f}M | {m} − dpo | "
                + " | ".join(fmt(diffs[k], signed=True) for k, _ in METRICS)
                + " |"
            )
    points = list(summary["sort"][0]["validation"]["exact_match"]["dpo"])
    lines += [
        "",
        "Validation greedy exact match at every grid point (tuning seed, validation prompts; the pick in bold):",
        "",
        "| size | method | SFT start | "
        + " | ".join(p.replace("beta=", "β ").replace("|learning_rate=", ", lr ") for p in points)
        + " |",
        "|---|---|---|" + "---|" * len(points),
    ]
    for s in summary["sort"]:
        for m, row in s["validation"]["exact_match"].items():
            pick = learning.grid_name("", s["settings"][m]).lstrip("|")
            cells = [f"**{row[p]:.3f}**" if p == pick else f"{row[p]:.3f}" for p in points]
            lines.append(
                f"| {s['size']} | {m} | {s['validation']['sft_exact_match']:.3f} | " + " | ".join(cells) + " |"
            )
    if summary["hh"]:
        lines += [
            "",
            "HH-RLHF sample (HH study settings), held-out reward accuracies, mean ± std; paired difference to DPO:",
            "",
            "| size | parameters | method | cond. acc. | uncond. acc. | cond. acc. − dpo | uncond. acc. − dpo |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in summary["hh"]:
            for m, metrics in s["methods"].items():
                d = s["minus_dpo"].get(m)
                diff = " | ".join(fmt(d[k], signed=True) for k, _ in METRICS[2:]) if d else "– | –"
                lines.append(
                    f"| {s['size']} | {s['parameters'] / 1e6:.2f}M | {m} | "
                    + " | ".join(fmt(metrics[k]) for k, _ in METRICS[2:])
                    + f" | {diff} |"
                )
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> Path:
    """The absolute exact match of SFT and every method, then one panel per metric with the paired (method - DPO)
    difference; mean ± std over seeds, against parameter count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sft": "#999999", "dpo": "#4C72B0", "inspo": "#DD8452", "inspo+uncond": "#55A868"}
    fig, axes = plt.subplots(1, len(METRICS) + 1, figsize=(3.6 * (len(METRICS) + 1), 3.4))
    sizes = summary["sort"]
    first = axes[0]
    for name in ["sft", *sizes[0]["methods"]]:
        values = [s["sft"] if name == "sft" else s["methods"][name] for s in sizes]
        first.errorbar(
            [s["parameters"] for s in sizes],
            [v["gen_exact_match"]["mean"] for v in values],
            yerr=[v["gen_exact_match"]["std"] for v in values],
            marker="o",
            capsize=3,
            color=colors.get(name),
            label=name,
        )
    first.set_title("greedy exact match\n(held-out prompts)", fontsize=9)
    first.legend(fontsize=7)
    for ax, (key, label) in zip(axes[1:], METRICS):
        for offset, method in zip((0.97, 1.03), sizes[0]["minus_dpo"]):
            xs = [s["parameters"] * offset for s in sizes]
            ys = [s["minus_dpo"][method][key]["mean"] for s in sizes]
            es = [s["minus_dpo"][method][key]["std"] for s in sizes]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colors.get(method), label=f"{method} − dpo")
        ax.axhline(0, color="gray", ls=":", lw=1)
        ax.set_title(f"{label}\n(method − DPO, paired)", fontsize=9)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([s["parameters"] for s in sizes], [f"{s['parameters'] / 1e6:.2g}M" for s in sizes], fontsize=7)
        ax.set_xlabel("parameters")
    n = len(sizes[0]["seeds"])
    title = f"Sorting task, size sweep: each method tuned on validation prompts; mean ± std over {n} seeds"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ====================================================================== CLI
def smoke(out_dir: Path) -> dict:
    """Seconds-long: two tiny sizes, a 2-point grid, one final seed, the HH part on synthetic conversations."""
    with tempfile.TemporaryDirectory(prefix="trl-inspo-size-sweep-smoke-") as workdir:
        base = learning.smoke_args("sort")
        for size in ("h16_l1", "h32_l1"):
            run_size(base, size, GRID[:1] + GRID[-1:], [0], out_dir, workdir)
        run_hh(learning.smoke_args("hh"), "h16_l1", out_dir, workdir)
    return report(out_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long run of the whole pipeline at tiny sizes")
    parser.add_argument("--output_dir", help=f"where results go (default {OUT_DIR}; --smoke: a temp dir)")
    sub = parser.add_subparsers(dest="command")
    for name in ("run", "hh"):
        p = sub.add_parser(name, help={"run": "tune + final seeds of the sorting study", "hh": "the HH study"}[name])
        p.add_argument("--sizes", nargs="+", required=True, help=f"h<hidden>_l<layers>, e.g. {' '.join(SIZES)}")
        p.add_argument("--seeds", type=int, nargs="+", default=FINAL_SEEDS if name == "run" else [0, 1, 2])
        p.add_argument("--threads", type=int, help="torch threads (1 is fastest on a loaded 2-core machine)")
        p.add_argument("--workdir", default=f"/tmp/trl-inspo-size-sweep/{name}")
        if name == "hh":
            p.add_argument("--data", default=str(learning.DEFAULT_HH), help="HH-RLHF jsonl")
    sub.add_parser("report", help="summary.json, summary.md and the plot from the result files")
    ns = parser.parse_args(argv)

    if ns.smoke:
        out_dir = Path(ns.output_dir or tempfile.mkdtemp(prefix="trl-inspo-size-sweep-"))
        return smoke(out_dir)
    out_dir = Path(ns.output_dir or OUT_DIR)
    if ns.command is None:
        parser.error("give run, hh, report or --smoke")
    if ns.command == "report":
        return report(out_dir)
    for size in ns.sizes:
        parse_size(size)
    if ns.command == "run":
        base = learning.StudyArgs(study="sort", methods=METHODS, threads=ns.threads)
        return [run_size(base, size, GRID, ns.seeds, out_dir, ns.workdir) for size in ns.sizes]
    cli = ["hh", "--seeds", *map(str, ns.seeds), "--data", ns.data]
    base = learning.study_args_from_cli(learning.build_parser().parse_args(cli))
    base.threads = ns.threads
    return [run_hh(base, size, out_dir, ns.workdir) for size in ns.sizes]


if __name__ == "__main__":
    main()
