# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The size sweep (`benchmarks/size_sweep.py`) cannot rot: `--smoke` runs tune -> pick -> final -> report at two tiny
sizes (and the HH part on synthetic conversations), and what it reports is checked against the per-seed records."""

import json
import statistics
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import learning, size_sweep  # noqa: E402


SIZES = ("h16_l1", "h32_l1")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("size-sweep-smoke")
    summary = size_sweep.main(["--smoke", "--output_dir", str(out)])
    return out, summary


def load(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def test_smoke_writes_every_file(smoke):
    out, summary = smoke
    for size in SIZES:
        assert load(out, f"tune_{size}.json")["config"]["eval_split"] == "validation"
        assert load(out, f"final_{size}.json")["config"]["eval_split"] == "test"
    assert load(out, "hh_h16_l1.json")["study"] == "hh"
    assert (out / "size_sweep.png").stat().st_size > 0
    assert "inspo − dpo" in (out / "summary.md").read_text()
    assert load(out, "summary.json") == json.loads(json.dumps(summary))
    assert [s["size"] for s in summary["sort"]] == list(SIZES)
    assert summary["sort"][0]["parameters"] < summary["sort"][1]["parameters"]


def test_every_method_runs_at_every_grid_point_when_tuning(smoke):
    out, _ = smoke
    tuned = load(out, "tune_h16_l1.json")
    (run,) = tuned["runs"]
    grid = tuned["config"]["grid"]
    assert len(grid) == 2
    expected = {learning.grid_name(m, point) for m in size_sweep.METHODS for point in grid}
    assert set(run["methods"]) == expected
    for name, record in run["methods"].items():
        point = grid[[learning.grid_name(name.split("|")[0], p) for p in grid].index(name)]
        assert record["setting"] == point


def test_final_runs_use_each_methods_pick_and_the_pick_is_the_validation_best(smoke):
    out, _ = smoke
    for size in SIZES:
        (run,) = load(out, f"tune_{size}.json")["runs"]
        final = load(out, f"final_{size}.json")
        for method in size_sweep.METHODS:
            candidates = [r for name, r in run["methods"].items() if name.split("|")[0] == method]
            best_em = max(r["gen_exact_match"] for r in candidates)
            pick = final["picks"][method]
            assert pick["validation_exact_match"] == best_em
            assert pick["setting"] in [r["setting"] for r in candidates if r["gen_exact_match"] == best_em]
            assert pick["improves_on_sft"] == (best_em > run["sft"]["gen_exact_match"])
            for seed_run in final["runs"]:
                assert seed_run["methods"][method]["setting"] == pick["setting"]


def test_pick_breaks_ties_by_length_error_then_smaller_learning_rate():
    def rec(em, err, lr):
        return {"gen_exact_match": em, "gen_abs_length_error": err, "setting": {"beta": 0.1, "learning_rate": lr}}

    tuned = {
        "runs": [
            {
                "sft": {"gen_exact_match": 0.5},
                "methods": {
                    "dpo|a": rec(0.6, 1.0, 1e-4),
                    "dpo|b": rec(0.6, 0.5, 3e-4),
                    "dpo|c": rec(0.6, 0.5, 1e-5),
                    "dpo|d": rec(0.4, 0.0, 3e-5),
                    "inspo|a": rec(0.3, 0.0, 1e-5),
                    "inspo|b": rec(0.4, 2.0, 1e-4),
                },
            }
        ]
    }
    picks = size_sweep.pick(tuned, ["dpo", "inspo"])
    assert picks["dpo"]["setting"]["learning_rate"] == 1e-5 and picks["dpo"]["improves_on_sft"]
    assert picks["inspo"]["setting"]["learning_rate"] == 1e-4 and not picks["inspo"]["improves_on_sft"]
    with pytest.raises(ValueError, match="no 'inspo\\+uncond' runs"):
        size_sweep.pick(tuned, ["inspo+uncond"])


def test_reported_differences_are_the_paired_differences_of_the_seeds(smoke):
    out, summary = smoke
    for entry in summary["sort"]:
        final = load(out, f"final_{entry['size']}.json")
        for method in ("inspo", "inspo+uncond"):
            for key, _ in size_sweep.METRICS:
                diffs = [r["methods"][method][key] - r["methods"]["dpo"][key] for r in final["runs"]]
                assert entry["minus_dpo"][method][key]["mean"] == pytest.approx(statistics.fmean(diffs))
                values = [r["methods"][method][key] for r in final["runs"]]
                assert entry["methods"][method][key]["mean"] == pytest.approx(statistics.fmean(values))
        assert entry["settings"] == {m: final["picks"][m]["setting"] for m in size_sweep.METHODS}
        (tune_run,) = load(out, f"tune_{entry['size']}.json")["runs"]
        for name, record in tune_run["methods"].items():
            method, point = name.split("|", 1)
            assert entry["validation"]["exact_match"][method][point] == record["gen_exact_match"]


def test_finished_sizes_are_kept_not_rerun(smoke, monkeypatch):
    out, _ = smoke
    kept = load(out, "final_h16_l1.json")

    def fail(*args, **kwargs):
        raise AssertionError("a finished size was run again")

    monkeypatch.setattr(learning, "run_study", fail)
    again = size_sweep.run_size(learning.smoke_args("sort"), "h16_l1", size_sweep.GRID, [0], out, "/unused", log=str)
    assert again == kept


def test_size_names_are_checked():
    assert size_sweep.parse_size("h320_l4") == (320, 4)
    assert size_sweep.parse_size("h48_l3") == (48, 3)
    with pytest.raises(Exception, match="h<hidden>_l<layers>"):
        size_sweep.parse_size("320x4")
