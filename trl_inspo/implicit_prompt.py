# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Prompt extraction for implicit-prompt datasets (`chosen`/`rejected` only, like HH-RLHF), made safe for InSPO.

TRL's `extract_prompt` takes the longest common *character* prefix of two text responses as the prompt. For DPO that is
harmless: each row is still `prompt + response`, the original text. InSPO rows put one response after the other,
`x + y_l + y_w`, so a prompt that ends inside a word cuts both responses: with
`"...Assistant: four"` / `"...Assistant: five"` TRL's prompt is `"...Assistant: f"`, and the row reads
`"...Assistant: five</s>our</s>"`: the target `"our"` is not the chosen reply. Here the prompt is cut back to the start
of the word in which the responses diverge, so each response begins at a word boundary (with its leading space, as in
TRL). Conversational rows split on whole messages already and keep TRL's rule.
"""

from datasets import Dataset
from trl import extract_prompt as trl_extract_prompt
from trl.trainer.utils import global_then_local_main_first


def extract_prompt(example: dict) -> dict:
    """
    TRL's [`~trl.extract_prompt`], with the prompt of a standard (text) example ending at a word boundary.

    Example:

    ```python
    >>> from trl_inspo.implicit_prompt import extract_prompt

    >>> extract_prompt({"chosen": "Q: 2+2?\\nA: four", "rejected": "Q: 2+2?\\nA: five"})
    {'prompt': 'Q: 2+2?\\nA:', 'chosen': ' four', 'rejected': ' five'}
    ```
    """
    chosen, rejected = example["chosen"], example["rejected"]
    if not (isinstance(chosen, str) and isinstance(rejected, str)):
        return trl_extract_prompt(example)
    shortest = min(len(chosen), len(rejected))
    cut = next((i for i in range(shortest) if chosen[i] != rejected[i]), shortest)
    while cut > 0 and not chosen[cut - 1].isspace():  # back to the start of the word where they diverge
        cut -= 1
    if cut > 0 and chosen[cut - 1] == " ":  # the space before a word stays with the responses, as in TRL
        cut -= 1
    if not chosen[:cut].strip():  # the shared start holds no whole word: leave it to TRL (and to the data checks)
        return trl_extract_prompt(example)
    return {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}


def with_word_boundary_prompts(prepare):
    """Wrap a `_prepare_dataset(dataset, processing_class, args, dataset_name)` function (TRL's) so that a standard
    dataset without a `prompt` column gets its prompt from [`extract_prompt`] above before TRL sees it (TRL then skips
    its own extraction)."""

    def prepare_with_prompts(dataset, processing_class, args, dataset_name):
        example = next(iter(dataset))
        if "prompt" not in example and isinstance(example.get("chosen"), str):
            map_kwargs = {}
            if isinstance(dataset, Dataset):  # IterableDataset.map takes neither num_proc nor desc
                map_kwargs = {
                    "num_proc": args.dataset_num_proc,
                    "desc": f"Extracting prompt from {dataset_name} dataset",
                }
            with global_then_local_main_first():
                dataset = dataset.map(extract_prompt, **map_kwargs)
        return prepare(dataset, processing_class, args, dataset_name)

    return prepare_with_prompts
