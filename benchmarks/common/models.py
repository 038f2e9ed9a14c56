# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Model shapes of the benchmarks, built from a config with random weights (nothing is downloaded)."""

# Shape keys: architecture, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, vocab_size and,
# optionally, tie_word_embeddings and rope_theta (the config's default otherwise).
MODEL_SHAPES = {
    # Llama-shaped, realistic proportions at small width: 32k vocabulary, 4 layers, GQA, SwiGLU 8/3 h
    "llama-32k": dict(architecture="llama", hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                      intermediate_size=688, vocab_size=32000),
    "qwen2-32k": dict(architecture="qwen2", hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                      intermediate_size=688, vocab_size=32000),
    # Qwen2-0.5B's shape (494M parameters), for the GPU benchmark
    "qwen2-0.5b": dict(architecture="qwen2", hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2,
                       intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    # Llama-3-8B's shape (8.03B parameters), for the GPU benchmark
    "llama3-8b": dict(architecture="llama", hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                      intermediate_size=14336, vocab_size=128256, rope_theta=500000.0),
    # Tiny shapes for --smoke runs
    "tiny": dict(architecture="llama", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 intermediate_size=64, vocab_size=4096),
    "tiny-qwen2": dict(architecture="qwen2", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=64, vocab_size=4096),
}  # fmt: skip

# Shape key -> transformers config field
_CONFIG_FIELDS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
    "tie_word_embeddings": "tie_word_embeddings",
    "rope_theta": "rope_theta",
}


def build_model(
    shape: dict,
    tokenizer=None,
    *,
    seed: int = 0,
    dtype=None,
    attn_implementation: str = "sdpa",
    max_position_embeddings: int = 2048,
    device: str = "cpu",
):
    """A causal LM of `shape` (see `MODEL_SHAPES`) with random weights drawn from `seed`, initialised directly on
    `device` (a multi-billion-parameter model initialised on CPU takes minutes). `tokenizer` gives the BOS, EOS and
    padding ids when set."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[shape["architecture"]]
    special = {}
    if tokenizer is not None:
        special = dict(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    config = config_cls(
        **{_CONFIG_FIELDS[k]: v for k, v in shape.items() if k != "architecture"},
        max_position_embeddings=max_position_embeddings,
        **special,
    )
    with torch.random.fork_rng(), torch.device(device):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(
            config, dtype=dtype or torch.float32, attn_implementation=attn_implementation
        )


def count_parameters(shape: dict) -> int:
    """Parameters of a model of `shape` (embeddings, attention with Qwen2's q/k/v biases, SwiGLU MLP, RMS norms)."""
    h, layers, v = shape["hidden_size"], shape["num_layers"], shape["vocab_size"]
    heads, kv = shape["num_heads"], shape["num_kv_heads"]
    d = h // heads
    attention = 2 * h * heads * d + 2 * h * kv * d
    if shape["architecture"] == "qwen2":
        attention += heads * d + 2 * kv * d
    per_layer = attention + 3 * h * shape["intermediate_size"] + 2 * h
    return layers * per_layer + h + v * h * (1 if shape.get("tie_word_embeddings") else 2)
