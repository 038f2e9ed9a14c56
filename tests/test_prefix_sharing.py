# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Prefix-shared rows (`prefix_sharing=True`): exact layout, and the same numbers as the two-row layout."""

import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PrefixTuningConfig
from transformers import MistralConfig, MistralForCausalLM

from trl_inspo import DataCollatorForInSPO, InSPOConfig, InSPOTrainer
from trl_inspo.losses import SUPPORTED_LOSS_TYPES
from trl_inspo.prefix_sharing import tree_attention_allowed

from .conftest import config_kwargs
from .helpers import pair_logps
from .test_logps_and_losses import LABEL_SMOOTHING, PAIRS


P = 0


def test_tree_row_layout():
    batch = DataCollatorForInSPO(pad_token_id=P, prefix_sharing=True, separator_ids=[9])(
        [{"prompt_ids": [1, 2, 3], "chosen_ids": [10, 11], "rejected_ids": [20]}]
    )
    # x[:-1] | x[-1] y_w | x[-1] y_l | sep y_l | sep y_w
    assert batch["input_ids"].tolist() == [[1, 2, 3, 10, 11, 3, 20, 9, 20, 9, 10, 11]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 3, 5, 6, 4, 5, 6]]
    assert batch["tree_segment_ids"].tolist() == [[1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 5]]
    # position i predicts its child in the tree; kinds: 1 c_w, 2 c_l, 3 u_w, 4 u_l
    assert batch["shift_labels"].tolist() == [[-100, -100, 10, 11, -100, 20, -100, 20, -100, 10, 11, -100]]
    assert batch["logp_kinds"].tolist() == [[0, 0, 3, 3, 0, 4, 0, 2, 0, 1, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 12]
    allowed = tree_attention_allowed(batch["tree_segment_ids"])[0, 0]
    # the y_l branch (position 5) sees the shared prompt and itself, not the y_w branch
    assert allowed[5].tolist() == [1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    # y_w after sep (position 10) sees x[:-1], branch B (x[-1] y_l), its own sep and earlier tokens
    assert allowed[10].tolist() == [1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0]
    # y_l after y_w (position 8) sees x[:-1], branch A, its own branch
    assert allowed[8].tolist() == [1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]


def test_tree_rows_are_padded_and_keep_reference_columns():
    batch = DataCollatorForInSPO(pad_token_id=P, prefix_sharing=True, pad_to_multiple_of=8)(
        [
            {"prompt_ids": [1], "chosen_ids": [10], "rejected_ids": [20], "ref_chosen_logps": [-1.0, -2.0],
             "ref_rejected_logps": [-3.0, -4.0]},
            {"prompt_ids": [1, 2], "chosen_ids": [10, 11], "rejected_ids": [20, 21], "ref_chosen_logps": [-5.0, -6.0],
             "ref_rejected_logps": [-7.0, -8.0]},
        ]
    )  # fmt: skip
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0].tolist()[:6] == [1, 10, 1, 20, 20, 10] and batch["attention_mask"][0].sum() == 6
    assert (batch["tree_segment_ids"][0, 6:] == 0).all() and (batch["shift_labels"][0, 6:] == -100).all()
    assert batch["ref_chosen_logps"].tolist() == [[-1.0, -2.0], [-5.0, -6.0]]


def _trainer(tmp_path, model_factory, tokenizer, dataset, prefix_sharing, attn="sdpa", ref=True, peft=None, **kw):
    args = InSPOConfig(**config_kwargs(tmp_path / str(prefix_sharing), prefix_sharing=prefix_sharing, **kw))
    return InSPOTrainer(
        model=model_factory(seed=0, attn_implementation=attn),
        ref_model=model_factory(seed=1, attn_implementation=attn) if ref else None,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft,
    )


def _loss_and_metrics(trainer, examples):
    trainer._metrics["train"].clear()
    batch = trainer.data_collator([dict(e) for e in examples])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    return loss.item(), {k: v[-1] for k, v in trainer._metrics["train"].items()}


def assert_same(a, b, tol=1e-5):
    loss_a, metrics_a = a
    loss_b, metrics_b = b
    assert loss_a == pytest.approx(loss_b, abs=tol, rel=tol)
    for key in metrics_b:
        if key.startswith(("rewards", "logps")):
            assert metrics_a[key] == pytest.approx(metrics_b[key], abs=tol, rel=tol), key


LOSS_CASES = [(t, "conditional") for t in SUPPORTED_LOSS_TYPES] + [
    (t, "prompt_only") for t in SUPPORTED_LOSS_TYPES if t not in ("simpo", "orpo", "sft")
]


@pytest.mark.parametrize(("loss_type", "conditioning"), LOSS_CASES)
def test_same_loss_as_two_row_layout(tmp_path, model_factory, tokenizer, preference_dataset, loss_type, conditioning):
    ref = loss_type not in ("simpo", "orpo", "sft")
    kw = dict(loss_type=[loss_type], beta=0.5, label_smoothing=LABEL_SMOOTHING.get(loss_type, 0.0),
              reference_conditioning=conditioning, unconditional_loss_weight=0.5 if ref else 0.0)  # fmt: skip
    shared = _trainer(tmp_path, model_factory, tokenizer, preference_dataset, True, ref=ref, **kw)
    plain = _trainer(tmp_path, model_factory, tokenizer, preference_dataset, False, ref=ref, **kw)
    assert_same(_loss_and_metrics(shared, PAIRS), _loss_and_metrics(plain, PAIRS))


@pytest.mark.parametrize(
    "options",
    [
        {"alternative_separator": "\n\n"},
        {"max_alternative_length": 2},
        {"max_length": 9},
        {"max_length": 9, "truncation_mode": "keep_end"},
        {"max_length": 9, "reference_conditioning": "prompt_only"},
        {"ld_alpha": 0.5, "unconditional_loss_weight": 1.0},
        {"use_weighting": True, "unconditional_loss_weight": 1.0},
    ],
    ids=lambda o: ",".join(f"{k}={v!r}" for k, v in o.items()),
)
def test_same_numbers_with_options(tmp_path, model_factory, tokenizer, options):
    # the dataset only initialises the trainers (short rows, so that none is dropped at max_length=9)
    dataset = Dataset.from_list([{"prompt": "hello", "chosen": " yes", "rejected": " no"}] * 4)
    shared = _trainer(tmp_path, model_factory, tokenizer, dataset, True, beta=0.5, **options)
    plain = _trainer(tmp_path, model_factory, tokenizer, dataset, False, beta=0.5, **options)
    assert_same(_loss_and_metrics(shared, PAIRS), _loss_and_metrics(plain, PAIRS))


def test_tree_values_match_separate_forwards(tmp_path, model_factory, tokenizer, preference_dataset):
    trainer = _trainer(tmp_path, model_factory, tokenizer, preference_dataset, True)
    for pair in PAIRS:
        want = pair_logps(trainer.model, pair["prompt_ids"], pair["chosen_ids"], pair["rejected_ids"])
        _, m = _loss_and_metrics(trainer, [pair])
        assert m["logps/chosen"] == pytest.approx(want["c_w"], abs=1e-5)
        assert m["logps/rejected"] == pytest.approx(want["c_l"], abs=1e-5)
        assert m["logps_unconditional/chosen"] == pytest.approx(want["u_w"], abs=1e-5)
        assert m["logps_unconditional/rejected"] == pytest.approx(want["u_l"], abs=1e-5)


@pytest.mark.parametrize("attn", ["eager", "flex_attention"])
def test_attention_backends(tmp_path, model_factory, tokenizer, preference_dataset, attn):
    shared = _trainer(tmp_path, model_factory, tokenizer, preference_dataset, True, attn=attn, beta=0.5)
    plain = _trainer(tmp_path, model_factory, tokenizer, preference_dataset, False, beta=0.5)
    assert_same(_loss_and_metrics(shared, PAIRS), _loss_and_metrics(plain, PAIRS))


def _random_segments(g, B, T, contiguous):
    if not contiguous:  # any arrangement of segment types (pad = 5 included)
        return torch.randint(0, 6, (B, T), generator=g)
    rows = []
    for _ in range(B):
        lengths = torch.randint(0, max(2, T // 4), (5,), generator=g).tolist()
        row = [s for s, n in zip(range(5), lengths) for _ in range(n)]
        rows.append((row + [5] * T)[:T])
    return torch.tensor(rows)


@pytest.mark.parametrize("T", [1, 5, 127, 128, 129, 300, 513])
@pytest.mark.parametrize("contiguous", [True, False])
def test_tree_block_mask_equals_create_block_mask(T, contiguous):
    from torch.nn.attention.flex_attention import create_block_mask

    from trl_inspo.prefix_sharing import _ANCESTORS, tree_block_mask

    g = torch.Generator().manual_seed(T)
    seg = _random_segments(g, 3, T, contiguous)

    def mask_mod(b, h, q, kv):
        return ((kv <= q) & _ANCESTORS[seg[b, q], seg[b, kv]]) | (q == kv)

    ours, ref = tree_block_mask(seg), create_block_mask(mask_mod, 3, None, T, T, device="cpu")
    assert torch.equal(ours.to_dense(), ref.to_dense())
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    # and the block mask's element-level mask is the dense tree mask
    dense = tree_attention_allowed(seg)[:, 0]
    q, kv = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    for b in range(3):
        assert torch.equal(ours.mask_mod(b, 0, q, kv), dense[b])


def test_tree_block_mask_memory_does_not_grow_with_t_squared():
    # 65,536 tokens: a dense T x T boolean mask alone would be 4 GiB
    code = (
        "import resource, torch\n"
        "from trl_inspo.prefix_sharing import tree_block_mask\n"
        "T = 65536\n"
        "seg = torch.zeros(1, T, dtype=torch.long)\n"
        "for i, s in enumerate((1, 2, 3, 4)): seg[:, 64 + i * (T // 4):] = s\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "mask = tree_block_mask(seg)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, mask.kv_num_blocks.shape[-1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    growth_mib, q_blocks = out.stdout.split()[-2:]
    assert int(q_blocks) == 512
    assert float(growth_mib) < 256


@pytest.mark.parametrize("architecture", ["qwen2", "qwen3", "mistral", "gemma"])
def test_model_families(tmp_path, model_factory, tokenizer, preference_dataset, architecture):
    """The families `prefix_sharing="auto"` packs as trees (`PREFIX_SHARING_VERIFIED`): the same numbers as two
    rows."""
    from trl_inspo.prefix_sharing import PREFIX_SHARING_VERIFIED

    extra = {"sliding_window": None} if architecture == "mistral" else {}  # Mistral-7B-v0.2+ configs; v0.1 is refused

    def family(seed=0, **kw):
        return model_factory(seed=seed, architecture=architecture, num_kv_heads=2, **extra, **kw)

    shared = _trainer(tmp_path, family, tokenizer, preference_dataset, True, beta=0.5, unconditional_loss_weight=0.5)
    plain = _trainer(tmp_path, family, tokenizer, preference_dataset, False, beta=0.5, unconditional_loss_weight=0.5)
    assert shared.model.config.model_type == architecture in PREFIX_SHARING_VERIFIED
    assert_same(_loss_and_metrics(shared, PAIRS), _loss_and_metrics(plain, PAIRS))


def test_lora_and_training_trajectory(tmp_path, model_factory, tokenizer, preference_dataset):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    runs = {}
    for flag in (True, False):
        trainer = _trainer(
            tmp_path, model_factory, tokenizer, preference_dataset, flag, ref=False, peft=lora, max_steps=3,
            learning_rate=1e-2, unconditional_loss_weight=0.5,
        )  # fmt: skip
        assert trainer.ref_model is None
        trainer.train()
        runs[flag] = (
            [log["loss"] for log in trainer.state.log_history if "loss" in log],
            {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad},
        )
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-5)
    for name, param in runs[True][1].items():
        torch.testing.assert_close(param, runs[False][1][name], atol=1e-5, rtol=1e-4)


def test_precomputed_reference_with_prefix_sharing(tmp_path, model_factory, tokenizer, preference_dataset):
    live = _trainer(tmp_path / "live", model_factory, tokenizer, preference_dataset, True, beta=0.5)
    pre = _trainer(tmp_path / "pre", model_factory, tokenizer, preference_dataset, True, beta=0.5,
                   precompute_ref_log_probs=True)  # fmt: skip
    examples = [pre.train_dataset[i] for i in range(4)]
    assert all(isinstance(e["ref_chosen_prompt_only_logps"], float) for e in examples)
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    assert_same(_loss_and_metrics(pre, examples), _loss_and_metrics(live, [{k: e[k] for k in keys} for e in examples]))


def test_conversational_data(tmp_path, model_factory, tokenizer):
    rows = [
        {
            "prompt": [{"role": "user", "content": "what is two plus two"}],
            "chosen": [{"role": "assistant", "content": "four"}],
            "rejected": [{"role": "assistant", "content": "five maybe"}],
        },
        {
            "prompt": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hello world"},
                {"role": "user", "content": "red or blue"},
            ],
            "chosen": [{"role": "assistant", "content": "blue"}],
            "rejected": [{"role": "assistant", "content": "green please"}],
        },
    ] * 2
    dataset = Dataset.from_list(rows)
    shared = _trainer(tmp_path, model_factory, tokenizer, dataset, True, beta=0.5)
    plain = _trainer(tmp_path, model_factory, tokenizer, dataset, False, beta=0.5)
    examples = [
        {k: shared.train_dataset[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for i in range(4)
    ]
    assert_same(_loss_and_metrics(shared, examples), _loss_and_metrics(plain, examples))


def test_unsupported_attention_is_refused(tmp_path, model_factory, tokenizer, preference_dataset):
    model = model_factory()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'.*prefix_sharing=False"):
        InSPOTrainer(
            model=model, ref_model=model_factory(seed=1), train_dataset=preference_dataset, processing_class=tokenizer,
            args=InSPOConfig(**config_kwargs(tmp_path, prefix_sharing=True)),
        )  # fmt: skip


def test_sliding_window_model_is_refused(tmp_path, tokenizer, preference_dataset):
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, sliding_window=16, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    with pytest.raises(ValueError, match="sliding-window"):
        InSPOTrainer(
            model=MistralForCausalLM(config), ref_model=MistralForCausalLM(config), train_dataset=preference_dataset,
            processing_class=tokenizer, args=InSPOConfig(**config_kwargs(tmp_path, prefix_sharing=True)),
        )  # fmt: skip


def test_prompt_learning_adapter_is_refused(tmp_path, model_factory, tokenizer, preference_dataset):
    with pytest.raises(ValueError, match="PrefixTuningConfig"):
        _trainer(
            tmp_path, model_factory, tokenizer, preference_dataset, True, ref=False,
            peft=PrefixTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM"),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- "auto"
def test_auto_rule_follows_the_token_share():
    """Tree rows when they hold at most 3/4 of the two-row tokens: a prompt at least as long as both responses."""
    from trl_inspo.collator import inspo_segment_lengths, use_tree_rows

    def rule(prompt, chosen, rejected, pad=None):
        seg = inspo_segment_lengths(torch.tensor(prompt), torch.tensor(chosen), torch.tensor(rejected))
        return use_tree_rows(seg, pad)

    assert rule([40], [10], [10])  # tree 61 tokens vs 2 x 60
    assert rule([22], [10], [10])  # at the break-even point: tree 22 + 40 + 1 (the prompt's last token, copied) = 63
    assert not rule([20], [10], [10])  # one token short of it: tree 61 > 0.75 x 2 x 40
    assert not rule([10], [20], [20])  # long responses: tree 51 vs 0.75 x 100
    assert not rule([30, 2], [5, 30], [5, 30])  # padding counts: the second pair sets both row lengths
    assert rule([30], [8], [8], pad=64) is (64 <= 0.75 * 2 * 64)  # padded to one block each: both 64 long


def test_auto_packs_prompt_heavy_batches_as_trees_with_the_same_numbers(tmp_path, model_factory, tokenizer):
    long_prompt = " ".join(["the cat sat on the mat"] * 4)
    dataset = Dataset.from_list([{"prompt": long_prompt, "chosen": " yes", "rejected": " no"}] * 4)
    auto = _trainer(tmp_path, model_factory, tokenizer, dataset, "auto", beta=0.5, unconditional_loss_weight=0.5)
    plain = _trainer(tmp_path, model_factory, tokenizer, dataset, False, beta=0.5, unconditional_loss_weight=0.5)
    examples = [auto.train_dataset[i] for i in range(4)]
    assert "tree_segment_ids" in auto.data_collator(examples)
    assert_same(_loss_and_metrics(auto, examples), _loss_and_metrics(plain, examples))
    # response-heavy pairs stay two rows
    assert "tree_segment_ids" not in auto.data_collator([dict(e, chosen_ids=e["prompt_ids"] * 3) for e in examples])


@pytest.mark.parametrize("attn", ["eager", "flash_attention_2"])
def test_auto_keeps_two_rows_where_tree_rows_are_not_measured_to_pay(tmp_path, model_factory, tokenizer, attn):
    long_prompt = " ".join(["the cat sat on the mat"] * 4)
    dataset = Dataset.from_list([{"prompt": long_prompt, "chosen": " yes", "rejected": " no"}] * 4)
    model, ref = model_factory(seed=0), model_factory(seed=1)
    for m in (model, ref):
        m.config._attn_implementation = attn
    trainer = InSPOTrainer(
        model=model, ref_model=ref, train_dataset=dataset, processing_class=tokenizer,
        args=InSPOConfig(**config_kwargs(tmp_path, prefix_sharing="auto")),
    )  # fmt: skip
    assert trainer.data_collator.prefix_sharing is False
    assert "tree_segment_ids" not in trainer.data_collator([trainer.train_dataset[i] for i in range(4)])


def test_auto_falls_back_on_sliding_window_models(tmp_path, tokenizer, preference_dataset):
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, sliding_window=16, pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa",
    )  # fmt: skip
    trainer = InSPOTrainer(
        model=MistralForCausalLM(config), ref_model=MistralForCausalLM(config), train_dataset=preference_dataset,
        processing_class=tokenizer, args=InSPOConfig(**config_kwargs(tmp_path, prefix_sharing="auto")),
    )  # fmt: skip
    assert trainer.data_collator.prefix_sharing is False


def test_prefix_sharing_values_from_the_command_line(tmp_path):
    from trl import TrlParser

    for text, value in (("auto", "auto"), ("true", True), ("false", False)):
        (args,) = TrlParser((InSPOConfig,)).parse_args_into_dataclasses(
            ["--output_dir", str(tmp_path), "--report_to", "none", "--prefix_sharing", text]
        )
        assert args.prefix_sharing == value
    with pytest.raises(ValueError, match="prefix_sharing"):
        InSPOConfig(**config_kwargs(tmp_path, prefix_sharing="sometimes"))
