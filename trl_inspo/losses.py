# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Functional InSPO losses: tensors in, tensors out, no Trainer needed.

The InSPO batch holds `2B` rows: rows `[:B]` are `x + y_l + y_w`, rows `[B:]` are `x + y_w + y_l`. One causal-LM
forward over them gives four sequence log-probabilities per pair:

- `c_w = log pi(y_w | x, y_l)`: target segment of rows `[:B]`;
- `c_l = log pi(y_l | x, y_w)`: target segment of rows `[B:]`;
- `u_l = log pi(y_l | x)`: alternative segment of rows `[:B]` (it directly follows the prompt);
- `u_w = log pi(y_w | x)`: alternative segment of rows `[B:]`.

Every DPO-family loss is then the usual formula applied to `(c_w, c_l)` against the reference values (conditional
InSPO term) or to `(u_w, u_l)` against the prompt-only reference values (unconditional term, standard DPO).

Example:

```python
>>> import torch
>>> from trl_inspo.losses import preference_loss

>>> chosen, rejected = torch.tensor([-4.0]), torch.tensor([-6.0])
>>> ref_chosen, ref_rejected = torch.tensor([-5.0]), torch.tensor([-5.0])
>>> lengths = torch.tensor([3.0])
>>> preference_loss("sigmoid", chosen, rejected, ref_chosen, ref_rejected, lengths, lengths, beta=0.1)
tensor([0.5981])
```
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class InSPOLogps(NamedTuple):
    """The four sequence log-probabilities of a batch of pairs, each of shape `(B,)`, and the token counts they sum
    over."""

    chosen_conditional: torch.Tensor  # c_w = log pi(y_w | x, y_l)
    rejected_conditional: torch.Tensor  # c_l = log pi(y_l | x, y_w)
    chosen_unconditional: torch.Tensor  # u_w = log pi(y_w | x)
    rejected_unconditional: torch.Tensor  # u_l = log pi(y_l | x)
    chosen_conditional_lengths: torch.Tensor
    rejected_conditional_lengths: torch.Tensor
    chosen_unconditional_lengths: torch.Tensor
    rejected_unconditional_lengths: torch.Tensor


# What a per-token log-probability scores (`logp_kinds`): one of the four InSPO quantities, or nothing.
CHOSEN_CONDITIONAL, REJECTED_CONDITIONAL, CHOSEN_UNCONDITIONAL, REJECTED_UNCONDITIONAL = 1, 2, 3, 4


def logp_kinds_from_masks(completion_mask: torch.Tensor, alternative_mask: torch.Tensor) -> torch.Tensor:
    """`logp_kinds` of the two-row layout: rows `[:B]` (`x + y_l + y_w`) hold `c_w` (target) and `u_l` (alternative),
    rows `[B:]` (`x + y_w + y_l`) hold `c_l` and `u_w`."""
    first, second = completion_mask.chunk(2)
    alt_first, alt_second = alternative_mask.chunk(2)
    return torch.cat(
        [
            first * CHOSEN_CONDITIONAL + alt_first * REJECTED_UNCONDITIONAL,
            second * REJECTED_CONDITIONAL + alt_second * CHOSEN_UNCONDITIONAL,
        ]
    ).long()


def logps_by_kind(
    per_token_logps: torch.Tensor, logp_kinds: torch.Tensor, num_pairs: int, ld_alpha: float | None = None
) -> InSPOLogps:
    """Sum per-token log-probabilities into `c_w, c_l, u_w, u_l` per pair, for any batch layout.

    `logp_kinds` (aligned with `per_token_logps`) says what each position scores. The `N` rows hold `N / num_pairs`
    rows per pair, row `r` belonging to pair `r % num_pairs` (`N = 2B` for the two-row layout, `N = B` for
    prefix-shared rows). With `ld_alpha` (LD-DPO), tokens of a conditional (resp. unconditional) response beyond the
    shorter response's length are weighted by `ld_alpha`.
    """
    dtype = per_token_logps.dtype
    masks = [(logp_kinds == kind).to(dtype) for kind in range(1, 5)]

    def per_pair(x):  # (N,) -> (num_pairs,)
        return x.view(-1, num_pairs).sum(dim=0)

    lengths = [per_pair(m.sum(dim=1)) for m in masks]
    sums = []
    for kind, mask in enumerate(masks):
        weights = mask
        if ld_alpha is not None:
            partner = kind ^ 1  # chosen <-> rejected of the same (conditional or unconditional) term
            shared = torch.minimum(lengths[kind], lengths[partner]).repeat(per_token_logps.size(0) // num_pairs)
            weights = torch.where(mask.cumsum(dim=1) <= shared.unsqueeze(1), 1.0, ld_alpha) * mask
        sums.append(per_pair((per_token_logps * weights).sum(dim=1)))
    c_w, c_l, u_w, u_l = sums
    return InSPOLogps(c_w, c_l, u_w, u_l, *lengths)


def inspo_logps(
    per_token_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    alternative_mask: torch.Tensor,
    ld_alpha: float | None = None,
) -> InSPOLogps:
    """Read `c_w, c_l, u_w, u_l` from the per-token log-probabilities of a two-row InSPO batch.

    `completion_mask` and `alternative_mask` must be aligned with `per_token_logps` (for a causal LM whose log-probs
    are computed on shifted labels, pass `mask[:, 1:]`).
    """
    kinds = logp_kinds_from_masks(completion_mask, alternative_mask)
    return logps_by_kind(per_token_logps, kinds, completion_mask.size(0) // 2, ld_alpha)


def f_divergence_scores(
    logratios: torch.Tensor, f_divergence_type: str = "reverse_kl", alpha: float = 0.5
) -> torch.Tensor:
    """f'(pi/pi_ref) for the f-DPO generalisation (reverse KL gives the log-ratio itself)."""
    if f_divergence_type == "reverse_kl":
        return logratios
    if f_divergence_type == "forward_kl":
        return 1 - torch.exp(-logratios)
    if f_divergence_type == "js_divergence":
        return math.log(2) + F.logsigmoid(logratios)
    if f_divergence_type == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:  # limit alpha -> 1 is the reverse KL
            return logratios
        dtype = logratios.dtype
        clamp_max = {torch.float16: 11.0}.get(dtype, 80.0)  # keep exp() representable
        t = torch.clamp(((alpha - 1.0) * logratios).float(), max=clamp_max)
        return (torch.exp(t) - 1.0).to(dtype) / (alpha - 1.0)
    raise ValueError(f"Unknown f_divergence_type: {f_divergence_type!r}")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, numerically stable."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def preference_loss(
    loss_type: str,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None,
    ref_rejected_logps: torch.Tensor | None,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    discopop_tau: float = 0.05,
    simpo_gamma: float = 0.5,
    rdpo_alpha: float = 0.0,
    sft_logps: torch.Tensor | None = None,
    sft_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair loss of one DPO-family objective, shape `(B,)`.

    `chosen_logps`/`rejected_logps` are the policy's sequence log-probabilities (conditional `c_w, c_l` for the InSPO
    term, unconditional `u_w, u_l` for the DPO term); `ref_*` the matching reference values (ignored by the
    reference-free `"simpo"`, `"orpo"` and `"sft"`). `*_lengths` are the token counts the log-probabilities sum over.
    `"sft"` is the token-averaged negative log-likelihood of the chosen response given the prompt alone, i.e. of
    `sft_logps` (defaults to `chosen_logps`) over `sft_lengths` tokens; it is constant across the batch.
    """
    if loss_type in ("simpo", "orpo", "sft"):
        chosen_logratios = rejected_logratios = delta = None
    else:
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        chosen_scores = f_divergence_scores(chosen_logratios, f_divergence_type, f_alpha_divergence_coef)
        rejected_scores = f_divergence_scores(rejected_logratios, f_divergence_type, f_alpha_divergence_coef)
        delta = chosen_scores - rejected_scores

    if loss_type == "sigmoid":
        # DPO. R-DPO (Park et al., 2024) maximises E[r - alpha |y|] - beta KL, so r = beta log(pi/pi_ref) + alpha |y|
        # + const and the Bradley-Terry margin gains + alpha (|y_w| - |y_l|): a longer chosen response needs a smaller
        # log-ratio margin, i.e. the implicit reward is penalised by alpha per token
        logits = beta * delta + rdpo_alpha * (chosen_lengths - rejected_lengths)
        return -F.logsigmoid(logits)
    if loss_type == "hinge":  # SLiC (Zhao et al., 2023)
        return torch.relu(1 - beta * delta)
    if loss_type in ("ipo", "sigmoid_norm"):
        # Per-token average of the log-ratios (IPO as in TRL, Azar et al. 2023 Eq. 17; sigmoid_norm: the DPO sigmoid)
        norm_delta = chosen_scores / chosen_lengths.clamp(min=1) - rejected_scores / rejected_lengths.clamp(min=1)
        if loss_type == "ipo":
            return (norm_delta - 1 / (2 * beta)) ** 2
        return -F.logsigmoid(beta * norm_delta)
    if loss_type == "exo_pair":  # EXO-pref, Ji et al. 2024 Eq. 16
        eps = torch.tensor(label_smoothing, dtype=delta.dtype, device=delta.device)
        logits = beta * delta
        return torch.sigmoid(logits) * (F.logsigmoid(logits) - torch.log1p(-eps)) + torch.sigmoid(-logits) * (
            F.logsigmoid(-logits) - torch.log(eps)
        )
    if loss_type == "nca_pair":  # NCA, Chen et al. 2024
        cr, rr = beta * chosen_logratios, beta * rejected_logratios
        return -F.logsigmoid(cr) - 0.5 * F.logsigmoid(-cr) - 0.5 * F.logsigmoid(-rr)
    if loss_type == "robust":  # rDPO, Chowdhury et al. 2024
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
        flipped = -label_smoothing * F.logsigmoid(-beta * delta)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    if loss_type == "bco_pair":  # BCO, Jung et al. 2024 (paired form)
        return -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-beta * rejected_logratios)
    if loss_type == "sppo_hard":  # SPPO with hard win probabilities, Wu et al. 2024
        return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    if loss_type in ("aot", "aot_unpaired"):  # AOT, Melnyk et al. 2024: sorted (optimal-transport) comparison
        if loss_type == "aot":
            policy = torch.sort(chosen_logps - rejected_logps, dim=0).values
            ref = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0).values
            d = policy - ref
        else:
            d = torch.sort(chosen_logratios, dim=0).values - torch.sort(rejected_logratios, dim=0).values
        return -F.logsigmoid(beta * d) * (1 - label_smoothing) - F.logsigmoid(-beta * d) * label_smoothing
    if loss_type == "apo_zero":  # APO-zero, D'Oosterlinck et al. 2024 Eq. 7
        return (1 - torch.sigmoid(beta * chosen_logratios)) + torch.sigmoid(beta * rejected_logratios)
    if loss_type == "apo_down":  # APO-down, Eq. 8
        return torch.sigmoid(beta * chosen_logratios) + (
            1 - torch.sigmoid(beta * (chosen_logratios - rejected_logratios))
        )
    if loss_type == "discopop":  # DiscoPOP (log-ratio modulated loss), Chris Lu et al. 2024 Eq. 5
        logits = beta * delta
        mix = torch.sigmoid(logits / discopop_tau)
        return -F.logsigmoid(logits) * (1 - mix) + torch.exp(-logits) * mix
    if loss_type == "sft":
        logps = chosen_logps if sft_logps is None else sft_logps
        lengths = chosen_lengths if sft_lengths is None else sft_lengths
        nll = -logps.sum() / lengths.sum().clamp(min=1)
        return nll.expand(chosen_logps.shape[0])
    if loss_type == "simpo":  # SimPO, Meng et al. 2024: reference-free, length-normalised, margin gamma
        margin = beta * chosen_logps / chosen_lengths.clamp(min=1) - beta * rejected_logps / rejected_lengths.clamp(
            min=1
        )
        return -F.logsigmoid(margin - simpo_gamma)
    if loss_type == "orpo":  # ORPO odds-ratio term, Hong et al. 2024, on length-normalised probabilities
        avg_chosen = chosen_logps / chosen_lengths.clamp(min=1)
        avg_rejected = rejected_logps / rejected_lengths.clamp(min=1)
        log_odds = (avg_chosen - _log1mexp(avg_chosen)) - (avg_rejected - _log1mexp(avg_rejected))
        return -F.logsigmoid(log_odds)
    raise ValueError(f"Unknown loss_type {loss_type!r}")


def combined_preference_loss(
    loss_types: list[str],
    loss_weights: list[float],
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None,
    ref_rejected_logps: torch.Tensor | None,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    pair_weights: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """Weighted sum over `loss_types` of the batch-mean per-pair loss (a scalar). `pair_weights` (e.g. WPO weights)
    multiply each pair's loss before the mean."""
    total = 0.0
    for loss_type, weight in zip(loss_types, loss_weights, strict=True):
        per_pair = preference_loss(
            loss_type,
            chosen_logps,
            rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            chosen_lengths,
            rejected_lengths,
            **kwargs,
        )
        if pair_weights is not None:
            per_pair = per_pair * pair_weights
        total = total + weight * per_pair.mean()
    return total


def wpo_pair_weights(
    per_token_logps: torch.Tensor, log_sum_sq_probs: torch.Tensor, logp_kinds: torch.Tensor, num_pairs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """WPO (Zhou et al., 2024, Eq. 2) pair weights, without gradient: each response weighs
    `exp(mean_t(log p_t - log sum_v p_v^2))` over its tokens, a pair the product of its two responses' weights.

    Returns `(conditional, unconditional)` pair weights, each `(num_pairs,)`: from the target segments (`c_w`, `c_l`)
    and from the alternative segments (`u_w`, `u_l`)."""
    with torch.no_grad():
        sums = logps_by_kind(per_token_logps - log_sum_sq_probs, logp_kinds, num_pairs)

        def weight(total, length):
            return torch.exp(total / length.clamp(min=1))

        conditional = weight(sums.chosen_conditional, sums.chosen_conditional_lengths) * weight(
            sums.rejected_conditional, sums.rejected_conditional_lengths
        )
        unconditional = weight(sums.chosen_unconditional, sums.chosen_unconditional_lengths) * weight(
            sums.rejected_unconditional, sums.rejected_unconditional_lengths
        )
    return conditional, unconditional
