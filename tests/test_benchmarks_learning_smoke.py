# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The learning study (`benchmarks/learning.py`) cannot rot: its `--smoke` mode runs both studies end to end at tiny
sizes (the HH part on synthetic conversations, so nothing outside the repository is needed), and its measuring
helpers agree with independent computations."""

import json
import random
import sys
from pathlib import Path

import pytest
import torch

from .helpers import pair_logps as independent_pair_logps


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import learning  # noqa: E402
from benchmarks.tasks import SortTask  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("learning-smoke")
    results = learning.main(["--smoke", "--output_dir", str(out)])
    return out, results


def test_smoke_writes_results_and_plots(smoke):
    out, results = smoke
    for study in ("sort", "hh"):
        path = out / f"learning_smoke_{study}.json"
        data = json.loads(path.read_text())
        assert (out / f"learning_smoke_{study}.png").stat().st_size > 0
        assert data["study"] == study and data["command"] and data["date"] and data["machine"]["torch"]
        assert data["config"]["methods"] == list(learning.METHODS)
        assert len(data["runs"]) == 1
        for method in learning.METHODS:
            record = data["runs"][0]["methods"][method]
            assert record["steps"] == 2
            # Every method really trained: the held-out implicit rewards moved away from the reference (0 at step 0)
            assert record["unconditional_reward_margin"] != 0.0
            assert record["conditional_reward_margin"] != 0.0
            assert 0.0 <= record["unconditional_reward_accuracy"] <= 1.0
            summary = data["summary"][method]["unconditional_reward_accuracy"]
            assert summary["n"] == 1 and summary["mean"] == record["unconditional_reward_accuracy"]
        assert results[study]["summary"] == data["summary"]


def test_smoke_direct_rewards_match_inspo_trainer_eval(smoke):
    """The held-out accuracies and margins computed by independent forwards equal `InSPOTrainer.evaluate()`'s
    `eval_rewards/*` (conditional) and `eval_rewards_unconditional/*`, for the DPO-trained model too."""
    _, results = smoke
    for study in ("sort", "hh"):
        for record in results[study]["runs"][0]["methods"].values():
            trainer = record["trainer_eval"]
            assert trainer["inspo_dropped"] == {"empty_response": 0, "identical_responses": 0, "prompt_too_long": 0}
            assert trainer["eval_rewards/accuracies"] == pytest.approx(record["conditional_reward_accuracy"], abs=1e-6)
            assert trainer["eval_rewards_unconditional/accuracies"] == pytest.approx(
                record["unconditional_reward_accuracy"], abs=1e-6
            )
            assert trainer["eval_rewards/margins"] == pytest.approx(record["conditional_reward_margin"], abs=1e-4)
            assert trainer["eval_rewards_unconditional/margins"] == pytest.approx(
                record["unconditional_reward_margin"], abs=1e-4
            )


def test_smoke_sort_pairs_and_generation(smoke):
    _, results = smoke
    run = results["sort"]["runs"][0]
    stats = run["pairs"]["train"]
    assert stats["pairs"] == stats["rejected_sampled_from_sft"] + stats["rejected_programmatic_near_miss"] == 16
    task = SortTask()
    for row in run["pairs"]["examples"]:
        items = [int(v) for v in row["prompt"].split()[1:-1]]
        assert task.is_correct(items, row["chosen"]) and not task.is_correct(items, row["rejected"])
    for record in [run["sft"], *run["methods"].values()]:
        assert 0.0 <= record["gen_exact_match"] <= 1.0
        assert 0 <= record["gen_mean_length"] <= results["sort"]["config"]["max_new_tokens"]
    hh = results["hh"]["runs"][0]["data"]
    assert hh["source"].startswith("synthetic") and hh["train_pairs_used"] == 16 and hh["eval_pairs_used"] == 8


def test_sort_oracle_and_near_misses():
    task = SortTask()
    assert task.score([41, 7, 93], " 7 41 93") == {"exact": 1.0, "valid": 1.0, "position_acc": 1.0}
    assert task.score([41, 7, 93], " 7 41") == {"exact": 0.0, "valid": 1.0, "position_acc": 2 / 3}
    assert task.score([41, 7, 93], " 7 x 93")["valid"] == 0.0
    rng = random.Random(0)
    for _, items in task.prompts(50, seed=3):
        miss = task.near_miss(items, rng)
        assert not task.is_correct(items, miss) and task.parse(miss) is not None


def test_pair_logps_match_single_unpadded_forwards(model_factory, tokenizer):
    """The study's batched, right-padded log-probabilities equal one plain forward per sequence (tests/helpers.py)."""
    model = model_factory(seed=3).eval()
    rows = [("what is two plus two", " four", " five six"), ("hello", " the cat sat on the mat", " no")]
    pairs = [learning.tokenize_like_trl(tokenizer, *row) for row in rows]
    batched = learning.pair_logps(model, pairs, batch_size=8)
    for i, (p, w, l) in enumerate(pairs):
        expected = independent_pair_logps(model, p, w, l)
        for key in ("u_w", "u_l", "c_w", "c_l"):
            assert batched[key][i] == pytest.approx(expected[key], abs=1e-4)
    # The study's tokenization is DPOTrainer's: prompt ids keep BOS, each response ends with EOS
    assert pairs[0][0][0] == tokenizer.bos_token_id and pairs[0][1][-1] == tokenizer.eos_token_id
    assert torch.tensor(pairs[0][1][:-1]).tolist() == tokenizer(" four", add_special_tokens=False)["input_ids"]
