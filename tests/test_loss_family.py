# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The DPO family in InSPO form, beyond the single loss types of `test_logps_and_losses.py`.

- The loss options (`loss_weights` multi-loss, `label_smoothing`, `f_divergence_type`, `ld_alpha`, `use_weighting`)
  with `conditional_loss_weight=0, unconditional_loss_weight=1` give exactly `trl.DPOTrainer`'s loss and metrics.
- In InSPO (conditional) form they equal their formulas, written out here from per-token log-probabilities of
  separate, unpadded forwards (tests/helpers.py).
- A few optimizer steps lower every loss type.
- Combinations without meaning are refused at construction, with a message that says why.
"""

import math

import pytest
import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from trl_inspo import InSPOConfig, InSPOConfigError, InSPOTrainer, InSPOWarning
from trl_inspo.losses import DPO_LOSS_TYPES, SUPPORTED_LOSS_TYPES

from .conftest import config_kwargs, make_trainer
from .helpers import continuation_token_logps, logsigmoid, mean, sigmoid


TOL = dict(rel=1e-5, abs=1e-5)
F_DIVERGENCES = ("forward_kl", "js_divergence", "alpha_divergence")
# The loss types with an f-divergence generalization, except "sft", which reads no log-ratio.
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop")
LABEL_SMOOTHING = {"exo_pair": 1e-2, "robust": 0.2, "aot": 0.2, "aot_unpaired": 0.2}

# Hand-built pairs (token ids of the test vocabulary): the chosen response is longer, shorter, and as long as the
# rejected one, so that LD-DPO's shared length min(|y_w|, |y_l|) cuts either response.
PAIRS = [
    {"prompt_ids": [1, 40, 41, 42], "chosen_ids": [50, 51, 52, 53, 54, 2], "rejected_ids": [60, 61, 2]},
    {"prompt_ids": [1, 43], "chosen_ids": [55, 2], "rejected_ids": [62, 63, 64, 65, 2]},
    {"prompt_ids": [1, 44, 45, 46, 47, 48], "chosen_ids": [56, 57, 58, 2], "rejected_ids": [66, 67, 68, 2]},
]


# ---------------------------------------------------------------------------------------------------- builders
def make_inspo(tmp_path, model_factory, tokenizer, dataset, ref=True, **overrides):
    return make_trainer(
        InSPOTrainer, tmp_path, model_factory, tokenizer, dataset, ref=ref, dtype=torch.float64, **overrides
    )


def make_dpo(tmp_path, model_factory, tokenizer, dataset, **overrides):
    return make_trainer(DPOTrainer, tmp_path, model_factory, tokenizer, dataset, dtype=torch.float64, **overrides)


def batch_loss(trainer, batch):
    """Loss and last-logged metrics of one batch, without gradient."""
    trainer._metrics["train"].clear()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    return loss.item(), {k: v[-1] for k, v in trainer._metrics["train"].items()}


def inspo_loss(trainer, pairs=PAIRS):
    return batch_loss(trainer, trainer.data_collator([dict(p) for p in pairs]))


# ---------------------------------------------------------------------------------------------------- formulas
def token_values(model, pairs=PAIRS):
    """Per pair, the per-token `(log p, log sum_v p_v^2)` lists of the four segments, each from its own forward:
    c_w = y_w | x + y_l, c_l = y_l | x + y_w, u_w = y_w | x, u_l = y_l | x."""
    out = []
    for p in pairs:
        x, yw, yl = p["prompt_ids"], p["chosen_ids"], p["rejected_ids"]
        out.append(
            {
                "c_w": continuation_token_logps(model, x + yl, yw),
                "c_l": continuation_token_logps(model, x + yw, yl),
                "u_w": continuation_token_logps(model, x, yw),
                "u_l": continuation_token_logps(model, x, yl),
            }
        )
    return out


def ld_sum(logps, shared, ld_alpha):
    """LD-DPO sequence log-probability: the first `shared` tokens count fully, the rest with weight `ld_alpha`."""
    if ld_alpha is None:
        return sum(logps)
    return sum(logps[:shared]) + ld_alpha * sum(logps[shared:])


def wpo_weight(values):
    """WPO weight of one sequence: exp(mean_t(log p_t - log sum_v p_v^2))."""
    logps, log_sum_sq = values
    return math.exp(mean(a - b for a, b in zip(logps, log_sum_sq)))


def f_score(r, f_divergence_type, alpha):
    """f'(pi/pi_ref) of the f-DPO paper, as a function of the log-ratio r."""
    if f_divergence_type == "reverse_kl":
        return r
    if f_divergence_type == "forward_kl":
        return 1 - math.exp(-r)
    if f_divergence_type == "js_divergence":
        return math.log(2) + logsigmoid(r)
    if f_divergence_type == "alpha_divergence":
        return (math.exp((alpha - 1) * r) - 1) / (alpha - 1)
    raise AssertionError(f_divergence_type)


def family_formula(
    loss_types,
    pol,
    ref,
    *,
    beta,
    loss_weights=None,
    term="conditional",
    conditioning="conditional",
    ls=0.0,
    f_divergence_type="reverse_kl",
    f_alpha=0.5,
    ld_alpha=None,
    wpo=False,
    tau=0.05,
    pairs=PAIRS,
):
    """The loss of `loss_types`, written out in float64 Python from the per-token values of `token_values`.

    `term="conditional"` scores (c_w, c_l) against the reference values (r_w, r_l) given by `conditioning`
    (conditional: the reference's c_w, c_l; prompt_only: its u_w, u_l); `term="unconditional"` scores (u_w, u_l)
    against the reference's (u_w, u_l). LD-DPO's shared length is min(|y_w|, |y_l|) for every segment of a pair.
    """
    kw, kl = ("c_w", "c_l") if term == "conditional" else ("u_w", "u_l")
    rkw, rkl = ("c_w", "c_l") if (term == "conditional" and conditioning == "conditional") else ("u_w", "u_l")
    loss_weights = loss_weights or [1.0] * len(loss_types)
    n = len(pairs)
    lw = [len(p["chosen_ids"]) for p in pairs]
    ll = [len(p["rejected_ids"]) for p in pairs]
    shared = [min(a, b) for a, b in zip(lw, ll)]
    w = [ld_sum(pol[i][kw][0], shared[i], ld_alpha) for i in range(n)]
    l = [ld_sum(pol[i][kl][0], shared[i], ld_alpha) for i in range(n)]
    if ref is not None:
        rho_w = [w[i] - ld_sum(ref[i][rkw][0], shared[i], ld_alpha) for i in range(n)]
        rho_l = [l[i] - ld_sum(ref[i][rkl][0], shared[i], ld_alpha) for i in range(n)]
        s_w = [f_score(r, f_divergence_type, f_alpha) for r in rho_w]
        s_l = [f_score(r, f_divergence_type, f_alpha) for r in rho_l]
    # WPO: each pair's loss is multiplied by the product of its two rows' weights on the segments this term reads
    weights = [wpo_weight(pol[i][kw]) * wpo_weight(pol[i][kl]) if wpo else 1.0 for i in range(n)]

    total = 0.0
    for loss_type, loss_weight in zip(loss_types, loss_weights):
        if loss_type == "sft":  # token-mean NLL of y_w given x alone, without LD down-weighting (as in TRL)
            nll = -sum(sum(pol[i]["u_w"][0]) for i in range(n)) / sum(lw)
            per_pair = [nll] * n
        elif loss_type in ("aot", "aot_unpaired"):
            if loss_type == "aot":
                a = sorted(w[i] - l[i] for i in range(n))
                b = sorted((w[i] - rho_w[i]) - (l[i] - rho_l[i]) for i in range(n))
            else:
                a, b = sorted(rho_w), sorted(rho_l)
            per_pair = [
                -logsigmoid(beta * (x - y)) * (1 - ls) - logsigmoid(-beta * (x - y)) * ls for x, y in zip(a, b)
            ]
        else:
            per_pair = []
            for i in range(n):
                d = s_w[i] - s_l[i]
                z = beta * d
                if loss_type == "sigmoid":
                    v = -logsigmoid(z)
                elif loss_type == "hinge":
                    v = max(0.0, 1 - z)
                elif loss_type == "ipo":
                    v = (s_w[i] / lw[i] - s_l[i] / ll[i] - 1 / (2 * beta)) ** 2
                elif loss_type == "sigmoid_norm":
                    v = -logsigmoid(beta * (s_w[i] / lw[i] - s_l[i] / ll[i]))
                elif loss_type == "exo_pair":
                    v = sigmoid(z) * (logsigmoid(z) - math.log(1 - ls)) + sigmoid(-z) * (logsigmoid(-z) - math.log(ls))
                elif loss_type == "robust":
                    v = (-(1 - ls) * logsigmoid(z) + ls * logsigmoid(-z)) / (1 - 2 * ls)
                elif loss_type == "discopop":
                    m = sigmoid(z / tau)
                    v = -logsigmoid(z) * (1 - m) + math.exp(-z) * m
                elif loss_type == "bco_pair":
                    v = -logsigmoid(beta * rho_w[i]) - logsigmoid(-beta * rho_l[i])
                else:
                    raise AssertionError(loss_type)
                per_pair.append(v)
        total += loss_weight * mean(v * c for v, c in zip(per_pair, weights))
    return total


# ------------------------------------------------------------------------------------------------ DPOTrainer parity
PARITY_CASES = {
    # every loss type of trl.DPOConfig
    **{t: dict(loss_type=[t], label_smoothing=LABEL_SMOOTHING.get(t, 0.0)) for t in DPO_LOSS_TYPES},
    # multi-loss: MPO-like mixture and a second mixture of unrelated losses
    "mpo": dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]),
    "hinge+nca+apo_down": dict(loss_type=["hinge", "nca_pair", "apo_down"], loss_weights=[0.5, 1.0, 2.0]),
    # label smoothing
    **{f"{t}-ls{ls}": dict(loss_type=[t], label_smoothing=ls) for t, ls in LABEL_SMOOTHING.items()},
    "robust-ls0.4": dict(loss_type=["robust"], label_smoothing=0.4),
    # f-divergences, on every loss type that has one
    **{
        f"{t}-{f}": dict(
            loss_type=[t],
            f_divergence_type=f,
            f_alpha_divergence_coef=0.3,
            label_smoothing=LABEL_SMOOTHING.get(t, 0.0),
        )
        for f in F_DIVERGENCES
        for t in F_DIVERGENCE_LOSSES
    },
    "sigmoid+sft-js_divergence": dict(loss_type=["sigmoid", "sft"], f_divergence_type="js_divergence"),
    # LD-DPO
    "sigmoid-ld": dict(loss_type=["sigmoid"], ld_alpha=0.4),
    "sft-ld": dict(loss_type=["sigmoid", "sft"], ld_alpha=0.4),
    "ipo-ld": dict(loss_type=["ipo"], ld_alpha=0.4),
    "sigmoid-ld0": dict(loss_type=["sigmoid"], ld_alpha=0.0),
    # WPO
    "sigmoid-wpo": dict(loss_type=["sigmoid"], use_weighting=True),
    "sigmoid+bco_pair-wpo": dict(loss_type=["sigmoid", "bco_pair"], loss_weights=[1.0, 0.5], use_weighting=True),
    # (TRL 1.16's DPOTrainer fails on use_weighting with "sft": it multiplies the expanded SFT loss in place. The
    # InSPO form of that combination is checked against its formula below.)
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_unconditional_term_matches_dpo_trainer(tmp_path, model_factory, tokenizer, preference_dataset, case):
    """With the conditional term off and a prompt-only reference, InSPO is DPO: same loss and metrics as
    trl.DPOTrainer on the same float64 models and tokenized examples."""
    overrides = dict(PARITY_CASES[case], beta=0.5)
    dpo = make_dpo(tmp_path, model_factory, tokenizer, preference_dataset, **overrides)
    inspo = make_inspo(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        conditional_loss_weight=0.0,
        unconditional_loss_weight=1.0,
        reference_conditioning="prompt_only",
        **overrides,
    )
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    examples = [{k: dpo.train_dataset[i][k] for k in keys} for i in range(6)]
    if "ld_alpha" in overrides:  # LD-DPO only acts where the two responses differ in length
        assert any(len(e["chosen_ids"]) != len(e["rejected_ids"]) for e in examples)
    dpo_loss, dpo_metrics = batch_loss(dpo, DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(examples))
    loss, metrics = batch_loss(inspo, inspo.data_collator(examples))
    assert math.isfinite(dpo_loss)
    assert loss == pytest.approx(dpo_loss, **TOL)
    if overrides["loss_type"] != ["sft"]:  # reference-free here: rewards are length-normalised, DPO's use a reference
        for name in ("chosen", "rejected", "accuracies", "margins"):
            assert metrics[f"rewards_unconditional/{name}"] == pytest.approx(dpo_metrics[f"rewards/{name}"], **TOL)
    for name in ("chosen", "rejected"):
        assert metrics[f"logps_unconditional/{name}"] == pytest.approx(dpo_metrics[f"logps/{name}"], **TOL)


# ---------------------------------------------------------------------------------------------- formulas, InSPO form
@pytest.fixture(scope="module")
def values(tokenizer_factory):
    """Independent per-token values of the policy (seed 0) and the reference (seed 1), float64 models."""
    from trl_inspo.tiny import build_model

    tok = tokenizer_factory()
    models = [build_model(tok, seed=s, hidden_size=32, num_layers=2, dtype=torch.float64) for s in (0, 1)]
    return token_values(models[0]), token_values(models[1])


def check_formula(tmp_path, model_factory, tokenizer, preference_dataset, values, *, ref=True, **options):
    """Build an InSPO trainer with `options` and compare its loss on PAIRS with `family_formula`."""
    pol, ref_values = values
    trainer = make_inspo(tmp_path, model_factory, tokenizer, preference_dataset, ref=ref, **options)
    loss, metrics = inspo_loss(trainer)
    weights = {
        "conditional": options.get("conditional_loss_weight", 1.0),
        "unconditional": options.get("unconditional_loss_weight", 0.0),
    }
    formula_options = dict(
        beta=options["beta"],
        loss_weights=options.get("loss_weights"),
        conditioning=options.get("reference_conditioning", "conditional"),
        ls=options.get("label_smoothing", 0.0),
        f_divergence_type=options.get("f_divergence_type", "reverse_kl"),
        f_alpha=options.get("f_alpha_divergence_coef", 0.5),
        ld_alpha=options.get("ld_alpha"),
        wpo=options.get("use_weighting", False),
    )
    expected = sum(
        weight * family_formula(options["loss_type"], pol, ref_values if ref else None, term=term, **formula_options)
        for term, weight in weights.items()
        if weight
    )
    assert loss == pytest.approx(expected, **TOL)
    return loss, metrics


@pytest.mark.parametrize("conditioning", ["conditional", "prompt_only"])
@pytest.mark.parametrize(
    "loss_type", [["sigmoid"], ["ipo"], ["sigmoid", "sft"]], ids=["sigmoid", "ipo", "sigmoid+sft"]
)
def test_ld_alpha_on_the_conditional_term(
    tmp_path, model_factory, tokenizer, preference_dataset, values, loss_type, conditioning
):
    """LD-DPO in InSPO form: in c_w, c_l (and in the reference values) the tokens beyond min(|y_w|, |y_l|) count with
    weight ld_alpha; the SFT term reads u_w undiminished."""
    common = dict(beta=0.5, loss_type=loss_type, reference_conditioning=conditioning)
    loss, metrics = check_formula(
        tmp_path, model_factory, tokenizer, preference_dataset, values, ld_alpha=0.3, **common
    )
    pol, _ = values
    shared = [min(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in PAIRS]
    assert metrics["logps/chosen"] == pytest.approx(
        mean(ld_sum(v["c_w"][0], m, 0.3) for v, m in zip(pol, shared)), **TOL
    )
    assert metrics["logps/rejected"] == pytest.approx(
        mean(ld_sum(v["c_l"][0], m, 0.3) for v, m in zip(pol, shared)), **TOL
    )
    # the option acts: the same trainer without it gives a different loss
    plain, _ = check_formula(tmp_path, model_factory, tokenizer, preference_dataset, values, **common)
    assert abs(loss - plain) > 1e-4


@pytest.mark.parametrize("conditioning", ["conditional", "prompt_only"])
def test_wpo_weights_on_the_conditional_term(
    tmp_path, model_factory, tokenizer, preference_dataset, values, conditioning
):
    """WPO in InSPO form: each pair's conditional loss is weighted by w(y_w | x, y_l) * w(y_l | x, y_w), the
    unconditional term by w(y_w | x) * w(y_l | x), w = exp(mean_t(log p_t - log sum_v p_v^2)) of the policy."""
    common = dict(beta=0.5, loss_type=["sigmoid"], reference_conditioning=conditioning)
    loss, _ = check_formula(
        tmp_path, model_factory, tokenizer, preference_dataset, values, use_weighting=True, **common
    )
    plain, _ = check_formula(tmp_path, model_factory, tokenizer, preference_dataset, values, **common)
    assert abs(loss - plain) > 1e-4  # the weights act
    # both terms at once, each weighted by its own segments; the SFT term is weighted too (as in TRL)
    check_formula(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        values,
        use_weighting=True,
        conditional_loss_weight=1.0,
        unconditional_loss_weight=0.5,
        **{**common, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
    )


@pytest.mark.parametrize("loss_type", F_DIVERGENCE_LOSSES)
@pytest.mark.parametrize("f_divergence_type", F_DIVERGENCES)
def test_f_divergence_on_the_conditional_term(
    tmp_path, model_factory, tokenizer, preference_dataset, values, f_divergence_type, loss_type
):
    """f-DPO in InSPO form: f'(exp(rho)) replaces the log-ratio rho = c - r in the chosen-rejected difference."""
    check_formula(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        values,
        beta=0.5,
        loss_type=[loss_type],
        label_smoothing=LABEL_SMOOTHING.get(loss_type, 0.0),
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=0.3,
    )


@pytest.mark.parametrize("f_divergence_type", F_DIVERGENCES)
def test_f_divergence_with_prompt_only_reference_and_both_terms(
    tmp_path, model_factory, tokenizer, preference_dataset, values, f_divergence_type
):
    check_formula(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        values,
        beta=0.5,
        loss_type=["sigmoid", "ipo"],
        loss_weights=[1.0, 0.1],
        reference_conditioning="prompt_only",
        conditional_loss_weight=1.0,
        unconditional_loss_weight=0.7,
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=0.7,
    )


@pytest.mark.parametrize(
    ("loss_type", "smoothing"),
    [("robust", 0.3), ("robust", 0.45), ("exo_pair", 0.2), ("exo_pair", 0.9), ("aot", 0.25), ("aot_unpaired", 0.25)],
)
def test_label_smoothing_on_the_conditional_term(
    tmp_path, model_factory, tokenizer, preference_dataset, values, loss_type, smoothing
):
    """Label smoothing (rDPO's flip probability, EXO's epsilon, AOT's smoothing) on the conditional values."""
    common = dict(beta=0.5, loss_type=[loss_type])
    loss, _ = check_formula(
        tmp_path, model_factory, tokenizer, preference_dataset, values, label_smoothing=smoothing, **common
    )
    other, _ = check_formula(
        tmp_path, model_factory, tokenizer, preference_dataset, values, label_smoothing=smoothing / 3, **common
    )
    assert abs(loss - other) > 1e-4


def test_multi_loss_on_both_terms(tmp_path, model_factory, tokenizer, preference_dataset, values):
    """`loss_weights` mixes the losses inside each term; the terms add with their own weights."""
    check_formula(
        tmp_path,
        model_factory,
        tokenizer,
        preference_dataset,
        values,
        beta=0.5,
        loss_type=["sigmoid", "bco_pair", "sft"],
        loss_weights=[0.8, 0.2, 1.0],
        conditional_loss_weight=1.0,
        unconditional_loss_weight=0.3,
        reference_conditioning="prompt_only",
    )


# ---------------------------------------------------------------------------------------------------- training
TRAIN_CASES = [[t] for t in SUPPORTED_LOSS_TYPES] + [["sft", "orpo"]]


@pytest.mark.parametrize("loss_type", TRAIN_CASES, ids=["+".join(t) for t in TRAIN_CASES])
def test_training_lowers_every_loss(tmp_path, model_factory, tokenizer, loss_type):
    """A few AdamW steps on one repeated batch lower the training loss and change every weight tensor."""
    from datasets import Dataset

    from .conftest import make_rows

    dataset = Dataset.from_list(make_rows(4, seed=7))
    reference_free = set(loss_type) <= {"sft", "simpo", "orpo"}
    options = dict(
        loss_type=loss_type,
        beta={"simpo": 2.0}.get(loss_type[0], 0.5),
        label_smoothing=LABEL_SMOOTHING.get(loss_type[0], 0.0),
        loss_weights=[1.0, 0.5] if loss_type == ["sft", "orpo"] else None,
        max_steps=8,
        learning_rate=5e-3,
        per_device_train_batch_size=4,
    )
    model = model_factory(seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = InSPOTrainer(
        model=model,
        ref_model=None if reference_free else model_factory(seed=0),
        args=InSPOConfig(**config_kwargs(tmp_path, **options)),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 1e-3, losses
    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged


# ---------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # f-divergences only exist for losses built on the chosen-rejected score difference (trl.DPOTrainer's rule)
        ({"loss_type": ["sigmoid", "nca_pair"], "f_divergence_type": "forward_kl"}, "f_divergence_type='forward_kl'"),
        ({"loss_type": ["simpo"], "f_divergence_type": "alpha_divergence"}, "f_divergence_type"),
        ({"loss_type": ["sft", "orpo"], "f_divergence_type": "js_divergence"}, "f_divergence_type"),
        ({"f_divergence_type": "kl"}, "Unknown `f_divergence_type`"),
        # WPO weights would not follow their pairs through AOT's sorting (trl.DPOTrainer's rule)
        ({"loss_type": ["aot_unpaired"], "use_weighting": True, "label_smoothing": 0.1}, "use_weighting"),
        ({"loss_type": ["sigmoid", "aot"], "use_weighting": True}, "sort"),
        # values for which a loss cannot be finite
        ({"loss_type": ["exo_pair"], "label_smoothing": 1.0}, "exo_pair"),
        ({"loss_type": ["discopop"], "discopop_tau": 0.0}, "discopop_tau"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float("inf")]}, "loss_weights"),
        ({"loss_type": ["orpo", "kto"]}, "Unknown `loss_type`"),
    ],
)
def test_meaningless_combinations_are_refused(tmp_path, overrides, message):
    with pytest.raises(InSPOConfigError, match=message):
        InSPOConfig(**config_kwargs(tmp_path, **overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss_type": ["sft"], "f_divergence_type": "js_divergence"}, "no loss type in \\['sft'\\] reads it"),
        ({"rdpo_alpha": 0.1, "loss_type": ["simpo"]}, "rdpo_alpha"),
        ({"rdpo_alpha": 0.1, "loss_type": ["hinge", "ipo"]}, "read by \\['sigmoid'\\]"),
        ({"loss_type": ["sft", "orpo"], "reference_conditioning": "prompt_only"}, "no reference model"),
        ({"loss_type": ["sft"], "reference_conditioning": "prompt_only"}, "no reference model"),
        ({"loss_type": ["simpo"], "sync_ref_model": True}, "sync_ref_model"),
        ({"loss_type": ["robust"], "label_smoothing": 0.5}, r"\[0, 0.5\)"),
        ({"loss_type": ["aot"], "label_smoothing": -0.1}, "label_smoothing"),
        ({"loss_type": ["sigmoid"], "label_smoothing": 0.1}, "no loss type in"),
        ({"loss_type": ["simpo", "sft"], "label_smoothing": 0.1}, "'robust'"),
        ({"ld_alpha": 1.5}, "ld_alpha"),
        ({"ld_alpha": -0.1}, r"\[0, 1\]"),
        ({"loss_type": ["sft"], "ld_alpha": 0.5}, "ld_alpha"),
        ({"loss_type": ["sigmoid", "sigmoid"]}, "more than once"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, -0.5]}, "loss_weights"),
    ],
)
def test_combinations_without_effect_warn(tmp_path, overrides, message):
    """Combinations trl.DPOTrainer trains with are accepted; where an option has no effect (or lies outside its
    documented range) an `InSPOWarning` says so."""
    with pytest.warns(InSPOWarning, match=message):
        InSPOConfig(**config_kwargs(tmp_path, **overrides))


def test_loss_weights_length_must_match(tmp_path):
    with pytest.raises(ValueError, match="loss_weights"):
        InSPOConfig(**config_kwargs(tmp_path, loss_type=["sigmoid", "sft"], loss_weights=[1.0]))


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss_type": ["sigmoid", "sft"], "f_divergence_type": "js_divergence"},
        {"loss_type": ["sigmoid", "sft"], "ld_alpha": 0.5},
        {"loss_type": ["robust", "sigmoid"], "label_smoothing": 0.1},
        {"loss_type": ["simpo"], "ld_alpha": 0.5, "use_weighting": True},
        {"loss_type": ["sigmoid"], "rdpo_alpha": 0.01, "ld_alpha": 0.5, "use_weighting": True},
        {"loss_type": ["sigmoid"], "ld_alpha": 1.0},
    ],
)
def test_meaningful_combinations_are_accepted(tmp_path, overrides):
    config = InSPOConfig(**config_kwargs(tmp_path, **overrides))
    assert config.loss_type == overrides["loss_type"]
