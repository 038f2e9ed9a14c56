# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The functional losses (`trl_inspo.losses`) against scalar formulas written out independently, and the loss table's
invariants. Tensors in, tensors out: no model, no trainer (this module also runs on the oldest supported TRL)."""

import inspect
import math
import re

import pytest
import torch
from trl.trainer import dpo_trainer

from trl_inspo.losses import (
    DPO_LOSS_TYPES,
    LOSSES,
    REFERENCE_FREE_LOSS_TYPES,
    SUPPORTED_LOSS_TYPES,
    PairLogps,
    combined_preference_loss,
    inspo_logps,
    preference_loss,
)

from .helpers import logsigmoid, sigmoid


OPTIONS = dict(beta=0.3, label_smoothing=0.1, discopop_tau=0.05, simpo_gamma=0.5, rdpo_alpha=0.02)


def scalar_loss(t, cw, cl, rw, rl, lw, ll, *, beta, label_smoothing, discopop_tau, simpo_gamma, rdpo_alpha):
    """One pair's loss, from the papers' formulas (reverse KL), in plain Python floats."""
    eps = label_smoothing
    if t in ("simpo", "orpo"):
        aw, al = cw / lw, cl / ll
        if t == "simpo":
            return -logsigmoid(beta * (aw - al) - simpo_gamma)
        odds = (aw - math.log(-math.expm1(aw))) - (al - math.log(-math.expm1(al)))
        return -logsigmoid(odds)
    pw, pl = cw - rw, cl - rl  # log-ratios
    d = pw - pl
    if t == "sigmoid":
        return -logsigmoid(beta * d + rdpo_alpha * (lw - ll))
    if t == "hinge":
        return max(0.0, 1 - beta * d)
    if t == "ipo":
        return (pw / lw - pl / ll - 1 / (2 * beta)) ** 2
    if t == "sigmoid_norm":
        return -logsigmoid(beta * (pw / lw - pl / ll))
    if t == "exo_pair":
        z = beta * d
        return sigmoid(z) * (logsigmoid(z) - math.log(1 - eps)) + sigmoid(-z) * (logsigmoid(-z) - math.log(eps))
    if t == "nca_pair":
        return -logsigmoid(beta * pw) - 0.5 * logsigmoid(-beta * pw) - 0.5 * logsigmoid(-beta * pl)
    if t == "robust":
        return (-(1 - eps) * logsigmoid(beta * d) + eps * logsigmoid(-beta * d)) / (1 - 2 * eps)
    if t == "bco_pair":
        return -logsigmoid(beta * pw) - logsigmoid(-beta * pl)
    if t == "sppo_hard":
        return (pw - 0.5 / beta) ** 2 + (pl + 0.5 / beta) ** 2
    if t == "apo_zero":
        return 1 - sigmoid(beta * pw) + sigmoid(beta * pl)
    if t == "apo_down":
        return sigmoid(beta * pw) + 1 - sigmoid(beta * d)
    if t == "discopop":
        z = beta * d
        m = sigmoid(z / discopop_tau)
        return -logsigmoid(z) * (1 - m) + math.exp(-z) * m
    raise AssertionError(t)


def random_pairs(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths_w = torch.randint(1, 9, (n,), generator=g).double()
    lengths_l = torch.randint(1, 9, (n,), generator=g).double()
    per_token = lambda lengths: -(0.2 + torch.rand(n, generator=g, dtype=torch.float64)) * lengths  # noqa: E731
    return per_token(lengths_w), per_token(lengths_l), per_token(lengths_w), per_token(lengths_l), lengths_w, lengths_l


@pytest.mark.parametrize("loss_type", [t for t in SUPPORTED_LOSS_TYPES if t not in ("aot", "aot_unpaired", "sft")])
def test_per_pair_losses_match_the_formulas(loss_type):
    cw, cl, rw, rl, lw, ll = random_pairs()
    got = preference_loss(loss_type, cw, cl, rw, rl, lw, ll, **OPTIONS)
    expected = [scalar_loss(loss_type, *(float(x[i]) for x in (cw, cl, rw, rl, lw, ll)), **OPTIONS) for i in range(5)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_sorting_and_sft_losses_read_the_whole_batch():
    cw, cl, rw, rl, lw, ll = random_pairs()
    beta, eps = OPTIONS["beta"], OPTIONS["label_smoothing"]

    def smoothed(z):
        return [-logsigmoid(beta * v) * (1 - eps) - logsigmoid(-beta * v) * eps for v in z]

    policy, ref = sorted((cw - cl).tolist()), sorted((rw - rl).tolist())
    aot = preference_loss("aot", cw, cl, rw, rl, lw, ll, **OPTIONS)
    torch.testing.assert_close(aot, torch.tensor(smoothed([p - r for p, r in zip(policy, ref)]), dtype=torch.float64))
    unpaired = sorted((cw - rw).tolist()), sorted((cl - rl).tolist())
    aot_unpaired = preference_loss("aot_unpaired", cw, cl, rw, rl, lw, ll, **OPTIONS)
    expected = smoothed([a - b for a, b in zip(*unpaired)])
    torch.testing.assert_close(aot_unpaired, torch.tensor(expected, dtype=torch.float64))
    # SFT: token-averaged NLL of the chosen responses over the batch, the same for every pair
    sft = preference_loss("sft", cw, cl, None, None, lw, ll, beta=0.1, sft_logps=cw * 2, sft_lengths=lw)
    torch.testing.assert_close(sft, torch.full((5,), float(-(2 * cw).sum() / lw.sum()), dtype=torch.float64))


def test_combined_loss_weights_losses_and_pairs():
    cw, cl, rw, rl, lw, ll = random_pairs()
    weights = torch.rand(5, dtype=torch.float64)
    policy, reference = PairLogps(cw, cl, lw, ll), PairLogps(rw, rl, None, None)
    got = combined_preference_loss(["sigmoid", "ipo"], [0.7, 0.3], policy, reference, pair_weights=weights, beta=0.2)
    expected = sum(
        w * (preference_loss(t, cw, cl, rw, rl, lw, ll, beta=0.2) * weights).mean()
        for t, w in (("sigmoid", 0.7), ("ipo", 0.3))
    )
    torch.testing.assert_close(got, expected)


def test_inspo_logps_reads_the_four_quantities_from_the_masks():
    # rows [:B] are x + y_l + y_w, rows [B:] are x + y_w + y_l (masks aligned with the per-token values)
    logps = torch.tensor([[1.0, 2.0, 4.0, 8.0], [16.0, 32.0, 64.0, 128.0]])
    completion = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]])
    alternative = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0]])
    values = inspo_logps(logps, completion, alternative)
    assert values.conditional.chosen.tolist() == [12.0] and values.conditional.rejected.tolist() == [128.0]
    assert values.unconditional.chosen.tolist() == [96.0] and values.unconditional.rejected.tolist() == [2.0]
    assert values.chosen_conditional_lengths.tolist() == [2.0] and values.chosen_unconditional_lengths.tolist() == [
        2.0
    ]


def test_the_table_covers_every_trl_loss_type():
    """The loss table holds exactly TRL's `DPOConfig` loss types plus 'simpo' and 'orpo'; a loss type TRL adds fails
    here (docs/trl_internals.md, 'DPOConfig loss types')."""
    source = inspect.getsource(dpo_trainer.DPOTrainer._compute_loss)
    trl_types = set(re.findall(r'loss_type == "(\w+)"', source))
    assert trl_types == set(DPO_LOSS_TYPES), "docs/trl_internals.md, 'DPOConfig loss types'"
    init = inspect.getsource(dpo_trainer.DPOTrainer.__init__)
    f_divergence = set(re.findall(r'"(\w+)"', re.search(r"f_divergence_loss_types = \{([^}]*)\}", init).group(1)))
    assert f_divergence == {t for t, spec in LOSSES.items() if spec.f_divergence}, (
        "docs/trl_internals.md, 'DPOConfig loss types'"
    )
    assert set(SUPPORTED_LOSS_TYPES) == set(DPO_LOSS_TYPES) | {"simpo", "orpo"}
    assert REFERENCE_FREE_LOSS_TYPES == {"sft", "simpo", "orpo"}
    assert {t for t, spec in LOSSES.items() if spec.policy_unconditional} == {"sft"}
    assert {t for t, spec in LOSSES.items() if not spec.per_pair} == {"aot", "aot_unpaired"}
