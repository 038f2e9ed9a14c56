# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The trainer's four log-probabilities and every loss, against independent computations and trl.DPOTrainer."""

import math

import pytest
import torch

from trl_inspo import InSPOTrainer
from trl_inspo.losses import SUPPORTED_LOSS_TYPES

from .conftest import make_trainer as make_inspo_or_dpo
from .helpers import logsigmoid, mean, pair_logps, sigmoid


# Hand-built pairs (token ids of the test tokenizer's vocabulary), of different lengths so that padding is exercised.
PAIRS = [
    {"prompt_ids": [1, 40, 41, 42], "chosen_ids": [50, 51, 2], "rejected_ids": [60, 2]},
    {"prompt_ids": [1, 43], "chosen_ids": [52, 53, 54, 55, 2], "rejected_ids": [61, 62, 63, 2]},
    {"prompt_ids": [1, 44, 45, 46, 47, 48], "chosen_ids": [56, 2], "rejected_ids": [64, 65, 66, 67, 68, 69, 2]},
]
LABEL_SMOOTHING = {"exo_pair": 1e-3, "robust": 0.1, "aot": 0.1, "aot_unpaired": 0.1}


def make_trainer(tmp_path, model_factory, tokenizer, preference_dataset, **kwargs):
    return make_inspo_or_dpo(InSPOTrainer, tmp_path, model_factory, tokenizer, preference_dataset, **kwargs)


def run_loss(trainer, pairs=PAIRS):
    trainer._metrics["train"].clear()
    batch = trainer.data_collator([dict(p) for p in pairs])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.item(), metrics


def independent(model, pairs=PAIRS, separator=()):
    model_plain = model
    return [pair_logps(model_plain, p["prompt_ids"], p["chosen_ids"], p["rejected_ids"], separator) for p in pairs]


def formula(loss_type, pol, ref, cond, beta, ls=0.0, gamma=0.5, alpha=0.0, tau=0.05):
    """Per-batch loss of `loss_type` written out from the papers' formulas, in float64 Python."""
    w, l = ("c_w", "c_l") if cond else ("u_w", "u_l")
    rw, rl = (("c_w", "c_l") if cond else ("u_w", "u_l")) if ref is not None else (None, None)
    losses = []
    n = len(pol)
    lens_w = [len(p["chosen_ids"]) for p in PAIRS[:n]]
    lens_l = [len(p["rejected_ids"]) for p in PAIRS[:n]]
    if loss_type == "sft":
        return -sum(p["u_w"] for p in pol) / sum(lens_w)
    if loss_type in ("aot", "aot_unpaired"):
        if loss_type == "aot":
            a = sorted(p[w] - p[l] for p in pol)
            b = sorted(r[rw] - r[rl] for r in ref)
        else:
            a = sorted(p[w] - r[rw] for p, r in zip(pol, ref))
            b = sorted(p[l] - r[rl] for p, r in zip(pol, ref))
        return mean(-logsigmoid(beta * (x - y)) * (1 - ls) - logsigmoid(-beta * (x - y)) * ls for x, y in zip(a, b))
    for i in range(n):
        p, Lw, Ll = pol[i], lens_w[i], lens_l[i]
        if ref is not None:
            rho_w, rho_l = p[w] - ref[i][rw], p[l] - ref[i][rl]
            d = rho_w - rho_l
        if loss_type == "sigmoid":
            v = -logsigmoid(beta * d + alpha * (Lw - Ll))
        elif loss_type == "hinge":
            v = max(0.0, 1 - beta * d)
        elif loss_type == "ipo":
            v = (rho_w / Lw - rho_l / Ll - 1 / (2 * beta)) ** 2
        elif loss_type == "sigmoid_norm":
            v = -logsigmoid(beta * (rho_w / Lw - rho_l / Ll))
        elif loss_type == "exo_pair":
            z = beta * d
            v = sigmoid(z) * (logsigmoid(z) - math.log(1 - ls)) + sigmoid(-z) * (logsigmoid(-z) - math.log(ls))
        elif loss_type == "nca_pair":
            v = -logsigmoid(beta * rho_w) - 0.5 * logsigmoid(-beta * rho_w) - 0.5 * logsigmoid(-beta * rho_l)
        elif loss_type == "robust":
            v = (-(1 - ls) * logsigmoid(beta * d) + ls * logsigmoid(-beta * d)) / (1 - 2 * ls)
        elif loss_type == "bco_pair":
            v = -logsigmoid(beta * rho_w) - logsigmoid(-beta * rho_l)
        elif loss_type == "sppo_hard":
            v = (rho_w - 0.5 / beta) ** 2 + (rho_l + 0.5 / beta) ** 2
        elif loss_type == "apo_zero":
            v = 1 - sigmoid(beta * rho_w) + sigmoid(beta * rho_l)
        elif loss_type == "apo_down":
            v = sigmoid(beta * rho_w) + 1 - sigmoid(beta * (rho_w - rho_l))
        elif loss_type == "discopop":
            z = beta * d
            m = sigmoid(z / tau)
            v = -logsigmoid(z) * (1 - m) + math.exp(-z) * m
        elif loss_type == "simpo":
            v = -logsigmoid(beta * p[w] / Lw - beta * p[l] / Ll - gamma)
        elif loss_type == "orpo":
            aw, al = p[w] / Lw, p[l] / Ll
            v = -logsigmoid((aw - math.log(1 - math.exp(aw))) - (al - math.log(1 - math.exp(al))))
        else:
            raise AssertionError(loss_type)
        losses.append(v)
    return mean(losses)


def test_four_logps_match_separate_forwards(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = make_trainer(tmp_path, model_factory, tokenizer, preference_dataset)
    want = independent(trainer.model)
    # one pair at a time: exact values
    for pair, exp in zip(PAIRS, want):
        _, m = run_loss(trainer, [pair])
        assert m["logps/chosen"] == pytest.approx(exp["c_w"], abs=1e-5)
        assert m["logps/rejected"] == pytest.approx(exp["c_l"], abs=1e-5)
        assert m["logps_unconditional/chosen"] == pytest.approx(exp["u_w"], abs=1e-5)
        assert m["logps_unconditional/rejected"] == pytest.approx(exp["u_l"], abs=1e-5)
        # conditioning on the alternative really changes the values
        assert abs(exp["c_w"] - exp["u_w"]) > 1e-3
    # the padded batch gives the same values
    _, m = run_loss(trainer)
    for key, name in (("c_w", "logps/chosen"), ("c_l", "logps/rejected"), ("u_w", "logps_unconditional/chosen")):
        assert m[name] == pytest.approx(mean(e[key] for e in want), abs=1e-5)


def test_logps_with_separator(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = make_trainer(tmp_path, model_factory, tokenizer, preference_dataset, alternative_separator="\n\n")
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    assert trainer.data_collator.separator_ids == sep and len(sep) >= 1
    want = independent(trainer.model, separator=sep)
    _, m = run_loss(trainer, PAIRS[:1])
    assert m["logps/chosen"] == pytest.approx(want[0]["c_w"], abs=1e-5)
    assert m["logps/rejected"] == pytest.approx(want[0]["c_l"], abs=1e-5)
    assert m["logps_unconditional/chosen"] == pytest.approx(want[0]["u_w"], abs=1e-5)


REF_FREE = ("simpo", "orpo", "sft")
LOSS_CASES = [(t, "conditional") for t in SUPPORTED_LOSS_TYPES] + [
    (t, "prompt_only") for t in SUPPORTED_LOSS_TYPES if t not in REF_FREE
]


@pytest.mark.parametrize(("loss_type", "conditioning"), LOSS_CASES)
def test_loss_equals_formula(tmp_path, model_factory, tokenizer, preference_dataset, loss_type, conditioning):
    ref_free = loss_type in REF_FREE
    beta = 2.0 if loss_type == "simpo" else 0.5
    ls = LABEL_SMOOTHING.get(loss_type, 0.0)
    trainer = make_trainer(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        ref=not ref_free,
        loss_type=[loss_type],
        beta=beta,
        label_smoothing=ls,
        reference_conditioning=conditioning,
        simpo_gamma=0.3,
    )
    pol = independent(trainer.model)
    ref = None if ref_free else independent(trainer.ref_model)
    if conditioning == "prompt_only":  # the reference sees the prompt alone
        ref = [{"c_w": r["u_w"], "c_l": r["u_l"], "u_w": r["u_w"], "u_l": r["u_l"]} for r in ref]
    loss, metrics = run_loss(trainer)
    expected = formula(loss_type, pol, ref, cond=True, beta=beta, ls=ls, gamma=0.3)
    assert loss == pytest.approx(expected, abs=1e-5)
    if not ref_free:  # rewards are beta * (policy - reference) on the conditional values
        assert metrics["rewards/chosen"] == pytest.approx(
            mean(beta * (p["c_w"] - r["c_w"]) for p, r in zip(pol, ref)), abs=1e-5
        )
        assert metrics["rewards/margins"] == pytest.approx(
            mean(beta * ((p["c_w"] - r["c_w"]) - (p["c_l"] - r["c_l"])) for p, r in zip(pol, ref)), abs=1e-5
        )


def test_conditional_plus_unconditional_term(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = make_trainer(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        beta=0.5,
        conditional_loss_weight=0.7,
        unconditional_loss_weight=0.4,
    )
    pol, ref = independent(trainer.model), independent(trainer.ref_model)
    loss, metrics = run_loss(trainer)
    expected = 0.7 * formula("sigmoid", pol, ref, cond=True, beta=0.5) + 0.4 * formula(
        "sigmoid", pol, ref, cond=False, beta=0.5
    )
    assert loss == pytest.approx(expected, abs=1e-5)
    assert metrics["rewards_unconditional/chosen"] == pytest.approx(
        mean(0.5 * (p["u_w"] - r["u_w"]) for p, r in zip(pol, ref)), abs=1e-5
    )


def test_rdpo_length_penalty(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = make_trainer(tmp_path, model_factory, tokenizer, preference_dataset, beta=0.5, rdpo_alpha=0.2)
    pol, ref = independent(trainer.model), independent(trainer.ref_model)
    loss, _ = run_loss(trainer)
    assert loss == pytest.approx(formula("sigmoid", pol, ref, cond=True, beta=0.5, alpha=0.2), abs=1e-5)
    # R-DPO penalises length in the implicit reward. Pair 1's chosen response is the longer one: part of the preference
    # is explained by length, so its loss (and the push towards the long answer) shrinks with alpha. Pair 2's chosen
    # response is the shorter one: its loss grows.
    plain = make_trainer(tmp_path, model_factory, tokenizer, preference_dataset, beta=0.5)
    assert len(PAIRS[1]["chosen_ids"]) > len(PAIRS[1]["rejected_ids"])
    assert run_loss(trainer, PAIRS[1:2])[0] < run_loss(plain, PAIRS[1:2])[0]
    assert len(PAIRS[2]["chosen_ids"]) < len(PAIRS[2]["rejected_ids"])
    assert run_loss(trainer, PAIRS[2:3])[0] > run_loss(plain, PAIRS[2:3])[0]


def test_orpo_as_sft_plus_odds_ratio(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = make_trainer(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        ref=False,
        loss_type=["sft", "orpo"],
        loss_weights=[1.0, 0.25],
    )
    assert trainer.ref_model is None
    pol = independent(trainer.model)
    loss, _ = run_loss(trainer)
    expected = formula("sft", pol, None, True, 0.5) + 0.25 * formula("orpo", pol, None, True, 0.5)
    assert loss == pytest.approx(expected, abs=1e-5)
