# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""What a training step computes: tokens, scored positions and attention pairs of a batch, the FLOPs of a step, and
the device's peak.

Model FLOPs of a step (what `mfu_model` divides by the step time and the peak):

- a forward pass: `2 * N_body * tokens` for the backbone (`N_body`: parameters without the embedding/LM-head
  matrices), `2 * V * h * scored` for the LM head on the positions it scores (on CUDA TRL scores only labelled
  positions), and `4 * layers * h * pairs` for attention scores and values over the (query, key) pairs causal
  attention needs (padding excluded; in a tree row, each token's ancestors and its own branch);
- the policy's training step: 3 forwards (forward, and a backward that computes gradients for activations and
  weights); with LoRA the base weights take no gradient, so the dense parts cost 2 forwards and attention 3 (the
  adapters, <1% of the FLOPs at r=16, are not counted); recomputation by gradient checkpointing is not counted either
  (the MFU convention);
- the reference forward (a frozen copy, or the adapter-disabled base with LoRA): 1 forward; none when precomputed.

`flops_6n` is the usual convention, `6 * N * tokens` (all parameters, LM head on every token, no attention, no
reference).
"""


def causal_pairs(length):
    """(query, key) pairs of one causal row of `length` tokens (a number or a tensor)."""
    return length * (length + 1) / 2


def tree_pairs(shared, a, b, a2, b2):
    """(query, key) pairs of one prefix-shared tree row with segments `x[:-1] | A | B | A2 | B2` of these lengths:
    causal within each segment, plus each segment's ancestors (see `trl_inspo.prefix_sharing`)."""
    within = sum(causal_pairs(n) for n in (shared, a, b, a2, b2))
    return within + (a + b) * shared + a2 * (shared + a) + b2 * (shared + b)


def attention_pairs(batch: dict) -> int:
    """(query, key) pairs causal attention needs for a collated `batch` (padding excluded)."""
    import torch

    if "tree_segment_ids" not in batch:
        return int(causal_pairs(batch["attention_mask"].sum(dim=1).double()).sum())
    from trl_inspo.prefix_sharing import BRANCH_A, BRANCH_A2, BRANCH_B, BRANCH_B2, SHARED

    seg = batch["tree_segment_ids"]
    n = [(seg == k).sum(dim=1).double() for k in (SHARED, BRANCH_A, BRANCH_B, BRANCH_A2, BRANCH_B2)]
    return int(torch.as_tensor(tree_pairs(*n)).sum())


def pair_counts(method: str, prompt: int, response: int, unconditional_metrics: bool = True) -> dict:
    """Tokens, LM-head-scored positions and attention pairs that one pair of these lengths (prompt with BOS, each
    response with EOS) feeds the policy, for `method` `"dpo"`, `"inspo"` (two rows `x + y_l + y_w`, `x + y_w + y_l`)
    or `"inspo_ps"` (one tree row, the prompt's last token copied into both top-level branches)."""
    x, y = prompt, response
    if method == "dpo":
        return {"tokens": 2 * (x + y), "scored": 2 * y, "attention_pairs": 2 * causal_pairs(x + y)}
    scored = 4 * y if unconditional_metrics else 2 * y
    if method == "inspo":
        return {"tokens": 2 * (x + 2 * y), "scored": scored, "attention_pairs": 2 * causal_pairs(x + 2 * y)}
    return {"tokens": x + 4 * y + 1, "scored": scored, "attention_pairs": tree_pairs(x - 1, y + 1, y + 1, y, y)}


def step_flops(
    shape: dict, num_parameters: int, tokens: float, scored: float, pairs: float, reference: str = "live"
) -> dict:
    """Model FLOPs and 6N FLOPs of one training step, and the FLOPs of one policy forward (see the module docstring);
    `reference` is `"live"`, `"precomputed"` or `"lora"` (LoRA adapters on a frozen base, whose adapter-disabled
    forward is the reference)."""
    h, layers, v = shape["hidden_size"], shape["num_layers"], shape["vocab_size"]
    n_body = num_parameters - v * h * (1 if shape.get("tie_word_embeddings") else 2)
    dense = 2 * n_body * tokens + 2 * v * h * scored
    attention = 4 * layers * h * pairs
    policy = (2 if reference == "lora" else 3) * dense + 3 * attention
    reference_forward = 0.0 if reference == "precomputed" else dense + attention
    return {
        "flops_6n": 6 * num_parameters * tokens,
        "flops_model": policy + reference_forward,
        "flops_forward": dense + attention,
    }


def peak_tflops(device_name: str | None) -> float | None:
    """Dense bf16 peak of the device, TFLOP/s, from TRL's table (`trl.trainer.utils.get_peak_flops`); None when the
    device is not in it."""
    from trl.trainer.utils import get_peak_flops

    peak = get_peak_flops(device_name, "bfloat16") if device_name else None
    return peak / 1e12 if peak else None
