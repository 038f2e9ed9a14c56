# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Tiny models and tokenizers built locally and deterministically, for tests, examples and benchmarks.

Nothing here touches the Hugging Face Hub: the tokenizer is trained with `tokenizers` on the given texts, the model is
built from a config with a fixed seed.

Example:

```python
>>> from trl_inspo.tiny import build_tokenizer, build_model

>>> tokenizer = build_tokenizer(["The cat sat on the mat.", "Two plus two is four."], vocab_size=300)
>>> model = build_model(tokenizer, "llama", hidden_size=32, num_layers=2)
>>> model.config.num_hidden_layers
2
```
"""

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)


BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# A ChatML-style template: every turn ends with <|im_end|> and a newline; the generation prompt opens an assistant
# turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1000, add_bos: bool = True) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` (deterministic for the same texts), with BOS/EOS/PAD tokens and a
    ChatML-style chat template. A BOS token is prepended to every encoded text when `add_bos` is set."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, UNK, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    if add_bos:
        bos_id = tok.token_to_id(BOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


ARCHITECTURES = {
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
    "qwen3": Qwen3Config,
    "mistral": MistralConfig,
    "gemma": GemmaConfig,
}


def build_model(
    tokenizer,
    architecture: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    vocab_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    tie_word_embeddings: bool = False,
    **config_kwargs,
):
    """A randomly initialised causal LM (`"llama"`, `"qwen2"`, `"qwen3"`, `"mistral"` or `"gemma"`) built from a
    config,
    seeded for reproducibility; `config_kwargs` go to the config (e.g. `rope_theta`)."""
    config_cls = ARCHITECTURES[architecture]
    config = config_cls(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
        **config_kwargs,
    )
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_tiny(output_dir: str, texts: Iterable[str], vocab_size: int = 1000, **model_kwargs) -> str:
    """Build a tokenizer on `texts` and a tiny model for it, and save both to `output_dir` (loadable with
    `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`)."""
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    model = build_model(tokenizer, **model_kwargs)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def _texts_from_jsonl(path: str) -> list[str]:
    import json

    texts = []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            texts.extend(str(row[k]) for k in ("prompt", "chosen", "rejected") if k in row)
    return texts


def main(argv=None):
    """`python -m trl_inspo.tiny --output_dir DIR --texts data.jsonl`: build and save a tiny model for that data."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--texts", required=True, help="jsonl file whose prompt/chosen/rejected train the tokenizer")
    parser.add_argument("--vocab_size", type=int, default=512)
    parser.add_argument("--architecture", default="llama", choices=["llama", "qwen2"])
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    save_tiny(
        args.output_dir,
        _texts_from_jsonl(args.texts),
        vocab_size=args.vocab_size,
        architecture=args.architecture,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        seed=args.seed,
        max_position_embeddings=512,
    )
    print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    main()
