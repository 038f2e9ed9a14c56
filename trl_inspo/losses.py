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

[`LOSSES`] is the one table of loss types: each entry holds the per-pair loss function and what it reads (a reference
model, the deployed policy's `log pi(y_w | x)`, which options). The supported list, the reference-free set and the
configuration rules of [`InSPOConfig`] are derived from it.

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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch
import torch.nn.functional as F


# What a per-token log-probability scores (`logp_kinds`): one of the four InSPO quantities, or nothing.
NONE, CHOSEN_CONDITIONAL, REJECTED_CONDITIONAL, CHOSEN_UNCONDITIONAL, REJECTED_UNCONDITIONAL = 0, 1, 2, 3, 4


class PairLogps(NamedTuple):
    """Sequence log-probabilities of the chosen and rejected responses of `B` pairs, each `(B,)`, and the token
    counts they sum over."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor


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

    @property
    def conditional(self) -> PairLogps:
        """`(c_w, c_l)`: each response given the prompt and the other response (the InSPO term)."""
        return PairLogps(self[0], self[1], self[4], self[5])

    @property
    def unconditional(self) -> PairLogps:
        """`(u_w, u_l)`: each response given the prompt alone (the deployed policy; the DPO term)."""
        return PairLogps(self[2], self[3], self[6], self[7])


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
    return InSPOLogps(*sums, *lengths)


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


F_DIVERGENCE_TYPES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, numerically stable."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@dataclass
class _Pairs:
    """One batch of pairs and the loss options, with the quantities the losses share computed on first use."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor | None
    ref_rejected: torch.Tensor | None
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    beta: float
    label_smoothing: float
    f_divergence_type: str
    f_alpha_divergence_coef: float
    discopop_tau: float
    simpo_gamma: float
    rdpo_alpha: float
    sft_logps: torch.Tensor
    sft_lengths: torch.Tensor

    @cached_property
    def chosen_logratios(self):
        return self.chosen - self.ref_chosen

    @cached_property
    def rejected_logratios(self):
        return self.rejected - self.ref_rejected

    def _scores(self, logratios):
        return f_divergence_scores(logratios, self.f_divergence_type, self.f_alpha_divergence_coef)

    @cached_property
    def delta(self):  # f-DPO score difference; the log-ratio margin for the reverse KL
        return self._scores(self.chosen_logratios) - self._scores(self.rejected_logratios)

    @cached_property
    def normalized_delta(self):  # per-token average of the scores (IPO as in TRL, sigmoid_norm)
        chosen = self._scores(self.chosen_logratios) / self.chosen_lengths.clamp(min=1)
        return chosen - self._scores(self.rejected_logratios) / self.rejected_lengths.clamp(min=1)

    def smoothed_logsigmoid(self, logits):  # -log sigma(z) with labels flipped with probability label_smoothing
        eps = self.label_smoothing
        return -F.logsigmoid(logits) * (1 - eps) - F.logsigmoid(-logits) * eps


def _sigmoid(p: _Pairs) -> torch.Tensor:
    # DPO. R-DPO (Park et al., 2024) maximises E[r - alpha |y|] - beta KL, so r = beta log(pi/pi_ref) + alpha |y| +
    # const
    # and the Bradley-Terry margin gains + alpha (|y_w| - |y_l|): a longer chosen response needs a smaller log-ratio
    # margin, i.e. the implicit reward is penalised by alpha per token
    return -F.logsigmoid(p.beta * p.delta + p.rdpo_alpha * (p.chosen_lengths - p.rejected_lengths))


def _exo_pair(p: _Pairs) -> torch.Tensor:  # EXO-pref, Ji et al. 2024 Eq. 16
    eps = torch.tensor(p.label_smoothing, dtype=p.delta.dtype, device=p.delta.device)
    logits = p.beta * p.delta
    return torch.sigmoid(logits) * (F.logsigmoid(logits) - torch.log1p(-eps)) + torch.sigmoid(-logits) * (
        F.logsigmoid(-logits) - torch.log(eps)
    )


def _nca_pair(p: _Pairs) -> torch.Tensor:  # NCA, Chen et al. 2024
    cr, rr = p.beta * p.chosen_logratios, p.beta * p.rejected_logratios
    return -F.logsigmoid(cr) - 0.5 * F.logsigmoid(-cr) - 0.5 * F.logsigmoid(-rr)


def _robust(p: _Pairs) -> torch.Tensor:  # rDPO, Chowdhury et al. 2024
    eps = p.label_smoothing
    return (-(1 - eps) * F.logsigmoid(p.beta * p.delta) + eps * F.logsigmoid(-p.beta * p.delta)) / (1 - 2 * eps)


def _aot(p: _Pairs) -> torch.Tensor:  # AOT, Melnyk et al. 2024: sorted (optimal-transport) comparison
    policy = torch.sort(p.chosen - p.rejected, dim=0).values
    ref = torch.sort(p.ref_chosen - p.ref_rejected, dim=0).values
    return p.smoothed_logsigmoid(p.beta * (policy - ref))


def _aot_unpaired(p: _Pairs) -> torch.Tensor:
    d = torch.sort(p.chosen_logratios, dim=0).values - torch.sort(p.rejected_logratios, dim=0).values
    return p.smoothed_logsigmoid(p.beta * d)


def _apo_down(p: _Pairs) -> torch.Tensor:  # APO-down, D'Oosterlinck et al. 2024 Eq. 8
    return torch.sigmoid(p.beta * p.chosen_logratios) + (
        1 - torch.sigmoid(p.beta * (p.chosen_logratios - p.rejected_logratios))
    )


def _discopop(p: _Pairs) -> torch.Tensor:  # DiscoPOP (log-ratio modulated loss), Chris Lu et al. 2024 Eq. 5
    logits = p.beta * p.delta
    mix = torch.sigmoid(logits / p.discopop_tau)
    return -F.logsigmoid(logits) * (1 - mix) + torch.exp(-logits) * mix


def _sft(p: _Pairs) -> torch.Tensor:  # token-averaged NLL of y_w given x alone, constant across the batch (as in TRL)
    return (-p.sft_logps.sum() / p.sft_lengths.sum().clamp(min=1)).expand(p.chosen.shape[0])


def _simpo(p: _Pairs) -> torch.Tensor:  # SimPO, Meng et al. 2024: reference-free, length-normalised, margin gamma
    margin = p.beta * (p.chosen / p.chosen_lengths.clamp(min=1) - p.rejected / p.rejected_lengths.clamp(min=1))
    return -F.logsigmoid(margin - p.simpo_gamma)


def _orpo(p: _Pairs) -> torch.Tensor:  # ORPO odds-ratio term, Hong et al. 2024, on length-normalised probabilities
    avg_chosen = p.chosen / p.chosen_lengths.clamp(min=1)
    avg_rejected = p.rejected / p.rejected_lengths.clamp(min=1)
    return -F.logsigmoid((avg_chosen - _log1mexp(avg_chosen)) - (avg_rejected - _log1mexp(avg_rejected)))


@dataclass(frozen=True)
class LossSpec:
    """One loss type: its per-pair loss and what it reads.

    Attributes:
        fn: per-pair loss `(B,)` of a batch of pairs.
        reads: the `InSPOConfig` options the loss reads (an option that no configured loss reads has no effect).
        reference: whether it compares against a reference model (a configuration of reference-free losses loads
            none).
        policy_unconditional: whether it reads the deployed policy's `log pi(y_w | x)` whatever the term (`"sft"`).
        f_divergence: whether `f_divergence_type` other than the reverse KL is allowed (TRL's rule: the losses built on
            the chosen-rejected score difference, plus `"sft"`, which ignores it).
        per_pair: whether each pair's loss depends on that pair alone (not for the sorting AOT losses, which per-pair
            WPO weights would misalign).
        trl: whether it is a `trl.DPOConfig` loss type (the others are added by trl-inspo).
    """

    fn: Callable[[_Pairs], torch.Tensor]
    reads: frozenset = frozenset({"beta", "ld_alpha"})
    reference: bool = True
    policy_unconditional: bool = False
    f_divergence: bool = False
    per_pair: bool = True
    trl: bool = True


_BASE = frozenset({"beta", "ld_alpha"})
_F_DIV = _BASE | {"f_divergence_type", "f_alpha_divergence_coef"}

LOSSES: dict[str, LossSpec] = {
    "sigmoid": LossSpec(_sigmoid, _F_DIV | {"rdpo_alpha"}, f_divergence=True),
    "hinge": LossSpec(lambda p: torch.relu(1 - p.beta * p.delta), _F_DIV, f_divergence=True),  # SLiC
    "ipo": LossSpec(lambda p: (p.normalized_delta - 1 / (2 * p.beta)) ** 2, _F_DIV, f_divergence=True),  # Eq. 17
    "exo_pair": LossSpec(_exo_pair, _F_DIV | {"label_smoothing"}, f_divergence=True),
    "nca_pair": LossSpec(_nca_pair),
    "robust": LossSpec(_robust, _F_DIV | {"label_smoothing"}, f_divergence=True),
    "bco_pair": LossSpec(  # BCO, Jung et al. 2024 (paired form)
        lambda p: -F.logsigmoid(p.beta * p.chosen_logratios) - F.logsigmoid(-p.beta * p.rejected_logratios)
    ),
    "sppo_hard": LossSpec(  # SPPO with hard win probabilities, Wu et al. 2024
        lambda p: (p.chosen_logratios - 0.5 / p.beta) ** 2 + (p.rejected_logratios + 0.5 / p.beta) ** 2
    ),
    "aot": LossSpec(_aot, _BASE | {"label_smoothing"}, per_pair=False),
    "aot_unpaired": LossSpec(_aot_unpaired, _BASE | {"label_smoothing"}, per_pair=False),
    "apo_zero": LossSpec(  # APO-zero, D'Oosterlinck et al. 2024 Eq. 7
        lambda p: (1 - torch.sigmoid(p.beta * p.chosen_logratios)) + torch.sigmoid(p.beta * p.rejected_logratios)
    ),
    "apo_down": LossSpec(_apo_down),
    "discopop": LossSpec(_discopop, _F_DIV | {"discopop_tau"}, f_divergence=True),
    "sft": LossSpec(_sft, frozenset(), reference=False, policy_unconditional=True, f_divergence=True),
    "sigmoid_norm": LossSpec(lambda p: -F.logsigmoid(p.beta * p.normalized_delta), _F_DIV, f_divergence=True),
    "simpo": LossSpec(_simpo, _BASE | {"simpo_gamma"}, reference=False, trl=False),
    "orpo": LossSpec(_orpo, frozenset({"ld_alpha"}), reference=False, trl=False),
}
SUPPORTED_LOSS_TYPES = tuple(LOSSES)
# The `InSPOConfig` options `preference_loss` takes (besides `beta` and the SFT values)
LOSS_OPTIONS = (
    "label_smoothing",
    "f_divergence_type",
    "f_alpha_divergence_coef",
    "discopop_tau",
    "simpo_gamma",
    "rdpo_alpha",
)
DPO_LOSS_TYPES = tuple(name for name, spec in LOSSES.items() if spec.trl)
REFERENCE_FREE_LOSS_TYPES = frozenset(name for name, spec in LOSSES.items() if not spec.reference)


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
    reference-free losses, see [`LOSSES`]). `*_lengths` are the token counts the log-probabilities sum over. `"sft"` is
    the token-averaged negative log-likelihood of the chosen response given the prompt alone, i.e. of `sft_logps`
    (defaults to `chosen_logps`) over `sft_lengths` tokens; it is constant across the batch.
    """
    spec = LOSSES.get(loss_type)
    if spec is None:
        raise ValueError(f"Unknown loss_type {loss_type!r}. Supported: {list(SUPPORTED_LOSS_TYPES)}.")
    pairs = _Pairs(
        chosen_logps,
        rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_lengths,
        rejected_lengths,
        beta=beta,
        label_smoothing=label_smoothing,
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef,
        discopop_tau=discopop_tau,
        simpo_gamma=simpo_gamma,
        rdpo_alpha=rdpo_alpha,
        sft_logps=chosen_logps if sft_logps is None else sft_logps,
        sft_lengths=chosen_lengths if sft_lengths is None else sft_lengths,
    )
    return spec.fn(pairs)


def combined_preference_loss(
    loss_types: list[str],
    loss_weights: list[float],
    policy: PairLogps,
    reference: PairLogps | None = None,
    pair_weights: torch.Tensor | None = None,
    **options,
) -> torch.Tensor:
    """Weighted sum over `loss_types` of the batch-mean per-pair loss (a scalar), for the `policy` values of one term
    against the matching `reference` values (`None` for reference-free losses; their lengths are not read).
    `pair_weights` (e.g. WPO weights) multiply each pair's loss before the mean; `options` are those of
    [`preference_loss`]."""
    ref_chosen, ref_rejected = (None, None) if reference is None else reference[:2]
    total = 0.0
    for loss_type, weight in zip(loss_types, loss_weights, strict=True):
        per_pair = preference_loss(
            loss_type, policy.chosen, policy.rejected, ref_chosen, ref_rejected, *policy[2:], **options
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
        return tuple(
            torch.exp(term.chosen / term.chosen_lengths.clamp(min=1))
            * torch.exp(term.rejected / term.rejected_lengths.clamp(min=1))
            for term in (sums.conditional, sums.unconditional)
        )
