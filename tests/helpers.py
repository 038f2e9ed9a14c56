# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Independent reference computations for the tests: one plain forward per hand-built sequence, explicit
log-softmax sums. Nothing here uses the trainer's batching, masks or fused LM head."""

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def continuation_logp(model, context: list[int], continuation: list[int]) -> float:
    """log p(continuation | context) from a single unpadded forward of `context + continuation`."""
    ids = torch.tensor([context + continuation])
    logits = model(input_ids=ids, use_cache=False).logits[0].double()
    logprobs = F.log_softmax(logits, dim=-1)
    start = len(context)
    return float(sum(logprobs[start + i - 1, tok] for i, tok in enumerate(continuation)))


@torch.no_grad()
def continuation_token_logps(model, context: list[int], continuation: list[int]) -> tuple[list[float], list[float]]:
    """Per-token values of `continuation` given `context`, from a single unpadded forward of `context + continuation`.

    Returns `(logps, log_sum_sq)`: `logps[i] = log p(continuation[i] | context, continuation[:i])` and `log_sum_sq[i] =
    log sum_v p(v | context, continuation[:i])^2` (the WPO normaliser), both from an explicit float64 log-softmax.
    """
    ids = torch.tensor([context + continuation])
    logits = model(input_ids=ids, use_cache=False).logits[0].double()
    logprobs = F.log_softmax(logits, dim=-1)
    start = len(context)
    rows = [logprobs[start + i - 1] for i in range(len(continuation))]
    logps = [float(row[tok]) for row, tok in zip(rows, continuation)]
    log_sum_sq = [float(torch.logsumexp(2 * row, dim=-1)) for row in rows]
    return logps, log_sum_sq


def pair_logps(model, prompt, chosen, rejected, separator=()) -> dict:
    """The four InSPO quantities for one pair, each from its own sequence."""
    sep = list(separator)
    return {
        "c_w": continuation_logp(model, prompt + rejected + sep, chosen),
        "c_l": continuation_logp(model, prompt + chosen + sep, rejected),
        "u_w": continuation_logp(model, prompt, chosen),
        "u_l": continuation_logp(model, prompt, rejected),
    }


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return math.exp(logsigmoid(x))


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)
