# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Prefix-shared InSPO batches: each preference pair in **one** row that holds the prompt once.

The two InSPO sequences `x + y_l + y_w` and `x + y_w + y_l` share the prompt. Packed as a tree, a pair needs one row:

```
shared  | A            | B            | A2          | B2
x[:-1]  | x[-1] + y_w  | x[-1] + y_l  | sep + y_l   | sep + y_w
```

`A` and `B` are children of the shared prompt, `A2` a child of `A`, `B2` a child of `B`. Each token attends causally to
its own branch and its ancestors only (a 4D attention mask), and its position id continues its parent's, so:

- `A` scores `y_w` given `x` (`u_w`), `B` scores `y_l` given `x` (`u_l`),
- `A2` scores `y_l` given `x, y_w` (`c_l`), `B2` scores `y_w` given `x, y_l` (`c_w`),

exactly as the two separate rows do, with the prompt processed once. The prompt's last token is copied into each
top-level branch (one extra token per branch) because it predicts the first token of two branches, while a causal LM
head takes one label per position. Labels are pre-shifted (`shift_labels`: position `i` predicts its child in the
tree),
which TRL's fused LM head accepts.

Segment lengths (truncation) are those of the unshared layout, so the four log-probabilities are the same numbers.
"""

from itertools import chain

import torch

from .losses import CHOSEN_CONDITIONAL, CHOSEN_UNCONDITIONAL, NONE, REJECTED_CONDITIONAL, REJECTED_UNCONDITIONAL


# Tree segments (attention): which segment each token belongs to.
PAD, SHARED, BRANCH_A, BRANCH_B, BRANCH_A2, BRANCH_B2 = 0, 1, 2, 3, 4, 5
# Which segments each segment attends to (its ancestors and itself).
_ANCESTORS = torch.zeros(6, 6, dtype=torch.bool)
for _q, _kvs in {
    SHARED: (SHARED,),
    BRANCH_A: (SHARED, BRANCH_A),
    BRANCH_B: (SHARED, BRANCH_B),
    BRANCH_A2: (SHARED, BRANCH_A, BRANCH_A2),
    BRANCH_B2: (SHARED, BRANCH_B, BRANCH_B2),
}.items():
    _ANCESTORS[_q, list(_kvs)] = True


def build_prefix_shared_batch(examples, seg, separator_ids, pad_token_id, pad_to_multiple_of=None) -> dict:
    """Pack each pair of `examples` into one tree row, keeping the segment lengths `seg` of the unshared layout
    (`trl_inspo.collator.SegmentLengths` over `2B` rows).

    Returns `input_ids`, `attention_mask` (2D, 1 on real tokens), `position_ids`, `tree_segment_ids` (attention
    structure, see the module docstring), `shift_labels` (the token each position predicts, `-100` where nothing is
    scored) and `logp_kinds` (which of `c_w, c_l, u_w, u_l` each position's label scores).
    """
    n = len(examples)
    prompt_start = seg.prompt_start[:n]
    prompt = seg.prompt[:n]
    has_prompt = (prompt > 0).long()  # the prompt's last token is copied into each top-level branch
    alt_w, alt_l = seg.alternative[:n], seg.alternative[n:]  # row x+y_l+y_w keeps y_l[:alt_w]; the other y_w[:alt_l]
    sep_w, sep_l = seg.separator[:n], seg.separator[n:]
    tgt_w, tgt_l = seg.target[:n], seg.target[n:]

    # Sub-segments, in row order: (tree segment, what the tokens are scored as when predicted, length)
    lengths = torch.stack(
        [
            prompt - has_prompt,  # shared prompt x[:-1]
            has_prompt,
            alt_l,  # A: x[-1] copy, y_w[:alt_l]
            has_prompt,
            alt_w,  # B: x[-1] copy, y_l[:alt_w]
            sep_l,
            tgt_l,  # A2: separator, y_l[:tgt_l]
            sep_w,
            tgt_w,  # B2: separator, y_w[:tgt_w]
        ],
        dim=1,
    )  # (n, 9)
    tree_kind = torch.tensor(
        [SHARED, BRANCH_A, BRANCH_A, BRANCH_B, BRANCH_B, BRANCH_A2, BRANCH_A2, BRANCH_B2, BRANCH_B2]
    )
    token_kind = torch.tensor(
        [NONE, NONE, CHOSEN_UNCONDITIONAL, NONE, REJECTED_UNCONDITIONAL, NONE, REJECTED_CONDITIONAL, NONE,
         CHOSEN_CONDITIONAL]
    )  # fmt: skip
    # Position of each sub-segment's first token in its own (virtual, unshared) sequence
    first_position = torch.stack(
        [
            torch.zeros_like(prompt),
            prompt - has_prompt, prompt,
            prompt - has_prompt, prompt,
            prompt + alt_l, prompt + alt_l + sep_l,
            prompt + alt_w, prompt + alt_w + sep_w,
        ],
        dim=1,
    )  # fmt: skip

    # Token ids: C-level list slicing per pair
    sep = list(separator_ids)
    p0, pl, aw, al, tw, tl, sw, sl = (
        t.tolist() for t in (prompt_start, prompt, alt_w, alt_l, tgt_w, tgt_l, sep_w, sep_l)
    )
    rows = []
    for i, ex in enumerate(examples):
        x = list(ex["prompt_ids"][p0[i] : p0[i] + pl[i]])
        last = x[-1:]
        chosen, rejected = ex["chosen_ids"], ex["rejected_ids"]
        rows.append(
            x[:-1]
            + last + list(chosen[: al[i]])
            + last + list(rejected[: aw[i]])
            + sep[: sl[i]] + list(rejected[: tl[i]])
            + sep[: sw[i]] + list(chosen[: tw[i]])
        )  # fmt: skip

    row_lengths = lengths.sum(dim=1)
    length = int(row_lengths.max())
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    flat_lengths = lengths.flatten()
    total = int(flat_lengths.sum())

    # Per flat token: its sub-segment index, and its offset within the sub-segment
    sub = torch.arange(9).repeat(n)
    sub_of_token = torch.repeat_interleave(sub, flat_lengths)
    sub_starts = torch.cumsum(flat_lengths, 0) - flat_lengths  # flat index of each sub-segment's first token
    offset = torch.arange(total) - torch.repeat_interleave(sub_starts, flat_lengths)
    positions_flat = torch.repeat_interleave(first_position.flatten(), flat_lengths) + offset
    tree_flat = tree_kind[sub_of_token]
    scored_flat = token_kind[sub_of_token]

    # Successor of each token in the tree: the next token of its branch, or the first token of its child branch
    successor = torch.arange(1, total + 1)
    starts = sub_starts.view(n, 9)
    lens = lengths
    seg_len = {  # tree segment lengths and starts per pair
        "shared": (lens[:, 0], starts[:, 0]),
        "A": (lens[:, 1] + lens[:, 2], starts[:, 1]),
        "B": (lens[:, 3] + lens[:, 4], starts[:, 3]),
        "A2": (lens[:, 5] + lens[:, 6], starts[:, 5]),
        "B2": (lens[:, 7] + lens[:, 8], starts[:, 7]),
    }
    for name, child in (("shared", None), ("A", "A2"), ("B", "B2"), ("A2", None), ("B2", None)):
        seg_length, seg_start = seg_len[name]
        present = seg_length > 0
        last = (seg_start + seg_length - 1)[present]
        if child is None:
            successor[last] = -1
        else:
            child_length, child_start = seg_len[child]
            successor[last] = torch.where(child_length[present] > 0, child_start[present], -1)
    ids_flat = torch.tensor(list(chain.from_iterable(rows)), dtype=torch.long)
    has_successor = successor >= 0
    label_kind_flat = torch.where(has_successor, scored_flat[successor.clamp(min=0, max=total - 1)], NONE)
    label_kind_flat = torch.where(tree_flat == SHARED, NONE, label_kind_flat)
    shift_labels_flat = torch.where(label_kind_flat > 0, ids_flat[successor.clamp(min=0, max=total - 1)], -100)

    valid = torch.arange(length).unsqueeze(0) < row_lengths.unsqueeze(1)

    def padded(values, fill):
        out = torch.full((n, length), fill, dtype=values.dtype)
        out[valid] = values
        return out

    return {
        "input_ids": padded(ids_flat, pad_token_id),
        "attention_mask": valid.long(),
        "position_ids": padded(positions_flat, 0),
        "tree_segment_ids": padded(tree_flat, PAD),
        "shift_labels": padded(shift_labels_flat, -100),
        "logp_kinds": padded(label_kind_flat, NONE),
    }


def tree_attention_allowed(tree_segment_ids: torch.Tensor) -> torch.Tensor:
    """Dense `(B, 1, T, T)` boolean mask: query `q` may attend to key `k` iff `k <= q` and `k`'s segment is an
    ancestor of (or is) `q`'s segment. Padding queries attend to themselves only (keeps softmax finite)."""
    seg = tree_segment_ids
    T = seg.size(1)
    ancestors = _ANCESTORS.to(seg.device)
    allowed = ancestors[seg.unsqueeze(2), seg.unsqueeze(1)]  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()
    allowed = (allowed & causal) | torch.eye(T, dtype=torch.bool, device=seg.device)
    return allowed.unsqueeze(1)


def tree_attention_mask(tree_segment_ids: torch.Tensor, attn_implementation: str, dtype: torch.dtype):
    """The 4D attention mask for `attn_implementation`: boolean for sdpa, additive for eager, a `BlockMask` for flex
    attention (memory grows with the number of 128-token blocks, not with `T^2`)."""
    if attn_implementation == "sdpa":
        return tree_attention_allowed(tree_segment_ids)
    if attn_implementation == "eager":
        allowed = tree_attention_allowed(tree_segment_ids)
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
    if attn_implementation == "flex_attention":
        return tree_block_mask(tree_segment_ids)
    raise ValueError(f"No tree attention mask for attn_implementation={attn_implementation!r}")


def tree_block_mask(tree_segment_ids: torch.Tensor, block_size: int = 128):
    """The flex-attention `BlockMask` of `tree_attention_allowed`, without ever building a `T x T` tensor
    (`create_block_mask` evaluates the whole grid unless compiled): memory and work grow with `T * block_size` and
    with the number of block pairs.

    Below the diagonal every key precedes every query, so a block pair's status follows from which segment types each
    block holds: some (query type, key type) pair allowed -> the block is needed; all allowed -> it is full. Diagonal
    blocks are evaluated densely (`block_size x block_size` each). Positions past `T` are masked, as in
    `create_block_mask`."""
    from torch.nn.attention.flex_attention import BlockMask

    seg = tree_segment_ids
    B, T = seg.shape
    device = seg.device
    ancestors = _ANCESTORS.to(device)
    n_types = ancestors.size(0)
    out_of_range = n_types  # an extra type that allows nothing and that nothing may see
    allowed_types = torch.zeros(n_types + 1, n_types + 1, dtype=torch.bool, device=device)
    allowed_types[:n_types, :n_types] = ancestors
    n_blocks = -(-T // block_size)
    padded = torch.full((B, n_blocks * block_size), out_of_range, dtype=seg.dtype, device=device)
    padded[:, :T] = seg
    blocks = padded.view(B, n_blocks, block_size)

    # Off-diagonal block pairs, from the segment types present in each block
    present = torch.zeros(B, n_blocks, n_types + 1, device=device)
    present.scatter_(2, blocks, 1.0)
    allow = allowed_types.float()
    some = (present @ allow @ present.transpose(1, 2)) > 0  # (B, query block, key block)
    every = (present @ (1 - allow) @ present.transpose(1, 2)) == 0
    below = torch.ones(n_blocks, n_blocks, dtype=torch.bool, device=device).tril(-1)
    some, every = some & below, every & below

    # Diagonal blocks, densely: (B, n_blocks, block, block)
    in_block = torch.arange(block_size, device=device)
    causal = in_block.unsqueeze(1) >= in_block.unsqueeze(0)
    diag = allowed_types[blocks.unsqueeze(3), blocks.unsqueeze(2)] & causal
    in_range = (torch.arange(n_blocks * block_size, device=device) < T).view(n_blocks, block_size)
    diag |= torch.diag_embed(in_range).unsqueeze(0)  # each in-range query sees itself
    eye = torch.eye(n_blocks, dtype=torch.bool, device=device)
    some = some | (eye & diag.flatten(2).any(-1).unsqueeze(-1))
    every = every | (eye & diag.flatten(2).all(-1).unsqueeze(-1))
    partial = some & ~every

    def ordered(dense):  # (B, query blocks, key blocks) -> counts and block indices, the marked ones first
        num = dense.sum(-1, dtype=torch.int32).unsqueeze(1)
        idx = torch.argsort(dense.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32).unsqueeze(1)
        return num, idx

    def mask_mod(b, h, q, kv):
        return ((kv <= q) & ancestors[seg[b, q], seg[b, kv]]) | (q == kv)

    kv_num, kv_idx = ordered(partial)
    full_num, full_idx = ordered(every)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size, mask_mod=mask_mod, seq_lengths=(T, T)
    )


SUPPORTED_ATTENTION = ("sdpa", "eager", "flex_attention")
# Model families whose tree rows give the two-row log-probabilities in the test suite (`tests/test_prefix_sharing.py`):
# `prefix_sharing="auto"` packs trees for these only (`True` accepts any model that passes the checks below).
PREFIX_SHARING_VERIFIED = frozenset({"llama", "qwen2", "qwen3", "mistral", "gemma"})


def check_prefix_sharing_support(model) -> None:
    """Raise a clear error when `model` cannot run prefix-shared rows exactly (no 4D mask support, sliding windows,
    prompt-learning adapters)."""
    from accelerate.utils import is_peft_model

    fallback = "Set `prefix_sharing=False` (the two-row layout works with any model)."
    if is_peft_model(model) and getattr(model, "peft_config", None):
        config = next(iter(model.peft_config.values()))
        if getattr(config, "is_prompt_learning", False):
            raise ValueError(
                f"`prefix_sharing=True` cannot be used with the prompt-learning adapter {type(config).__name__}: its "
                f"virtual tokens are not part of the tree attention mask. {fallback}"
            )
        model = model.get_base_model()
    config = model.config.get_text_config()
    attn = getattr(model.config, "_attn_implementation", None)
    if attn not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"`prefix_sharing=True` needs a custom 4D attention mask, which attn_implementation={attn!r} does not "
            f"take. "
            f"Load the model with attn_implementation='sdpa' (or 'flex_attention' for long rows, or 'eager'), e.g. "
            f"`model_init_kwargs={{'attn_implementation': 'sdpa'}}` / `--attn_implementation sdpa`. {fallback}"
        )
    layer_types = getattr(config, "layer_types", None) or []
    sliding = any(t not in ("full_attention",) for t in layer_types)
    if not layer_types and getattr(config, "sliding_window", None) is not None:
        sliding = getattr(config, "use_sliding_window", True)
    if sliding:
        raise ValueError(
            f"`prefix_sharing=True` does not support {type(model).__name__}: it uses sliding-window or non-standard "
            f"attention layers (layer_types={sorted(set(layer_types)) or 'sliding_window'}), which a custom tree mask "
            f"would silently override. {fallback}"
        )
    if getattr(config, "model_type", "") in ("gemma3", "gemma3_text", "paligemma"):
        raise ValueError(
            f"`prefix_sharing=True` does not support {config.model_type} (bidirectional image attention). {fallback}"
        )
