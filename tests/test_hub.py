# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""Model card and Hub upload.

The card is TRL's (metadata, tags, citation) plus an "InSPO training options" section. Uploads go through
`Trainer.push_to_hub` -> `HfApi.create_repo` / `HfApi.upload_folder` -> `create_commit` of `huggingface_hub`,
unchanged; only the HTTP layer underneath is replaced by an in-process fake Hub (`huggingface_hub.set_client_factory`
with an `httpx2.MockTransport`), which records what a real push would send. Nothing leaves the machine.
"""

import base64
import json
import os
import re

import httpx2
import huggingface_hub
import pytest
import yaml
from datasets import Dataset
from huggingface_hub.utils import _http as hf_http
from peft import LoraConfig

from trl_inspo import InSPOConfig, InSPOTrainer
from trl_inspo.cli import cli_main

from .conftest import config_kwargs, make_rows


class FakeHub:
    """The Hub endpoints a model push uses, answered in-process: repo creation, README metadata validation, the
    preupload check (every file as a regular git blob, so that contents travel in the commit payload) and the
    commit."""

    def __init__(self):
        self.created = []  # repo ids
        self.commits = []  # {"repo_id", "summary", "files": {path: bytes}}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method == "POST" and path == "/api/repos/create":
            payload = json.loads(request.content)
            repo_id = f"{payload.get('organization') or 'fake-user'}/{payload['name']}"
            self.created.append(repo_id)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{repo_id}"})
        if request.method == "POST" and path == "/api/validate-yaml":
            content = json.loads(request.content)["content"]
            yaml.safe_load(content.split("---")[1])  # the card's metadata block must be valid YAML
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if request.method == "POST" and "/preupload/" in path:
            files = json.loads(request.content)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes})
        if request.method == "POST" and "/commit/" in path:
            repo_id = path.split("/api/models/")[1].split("/commit/")[0]
            items = [json.loads(line) for line in request.content.splitlines() if line.strip()]
            header = next(item["value"] for item in items if item["key"] == "header")
            files = {
                item["value"]["path"]: base64.b64decode(item["value"]["content"])
                for item in items
                if item["key"] == "file"
            }
            assert not any(item["key"] == "lfsFile" for item in items)
            self.commits.append({"repo_id": repo_id, "summary": header["summary"], "files": files})
            oid = f"{len(self.commits):040x}"
            return httpx2.Response(
                200, json={"commitUrl": f"https://huggingface.co/{repo_id}/commit/{oid}", "commitOid": oid}
            )
        return httpx2.Response(404, json={"error": f"FakeHub: unexpected {request.method} {path}"})


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub()
    # The transport replaces the network; xet (a separate Rust HTTP client) is turned off so that uploads take the
    # plain HTTP commit path that the transport answers.
    monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False)
    monkeypatch.setattr("huggingface_hub._commit_api.is_xet_available", lambda: False)
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(hf_http.default_client_factory)


def card_sections(card: str) -> tuple[dict, str]:
    _, metadata, body = card.split("---", 2)
    return yaml.safe_load(metadata), body


def test_model_card_names_base_model_dataset_options_and_cites_the_paper(tmp_path, tiny_model_dir):
    args = InSPOConfig(
        **config_kwargs(
            tmp_path,
            beta=0.25,
            loss_type=["sigmoid", "sft"],
            loss_weights=[1.0, 0.5],
            reference_conditioning="prompt_only",
            unconditional_loss_weight=0.3,
            alternative_separator="\n\n",
            max_length=256,
        )
    )
    trainer = InSPOTrainer(model=tiny_model_dir, args=args, train_dataset=Dataset.from_list(make_rows(8)))
    trainer.create_model_card(dataset_name="trl-lib/ultrafeedback_binarized")
    metadata, body = card_sections((tmp_path / "out" / "README.md").read_text())

    assert {"trl", "inspo"} <= set(metadata["tags"])
    assert metadata["datasets"] == "trl-lib/ultrafeedback_binarized"
    assert metadata["model_name"] == "out"
    # TRL keeps a local directory out of the `base_model` metadata (not a Hub id); the card still names it.
    assert "base_model" not in metadata
    assert f"fine-tuned version of `{tiny_model_dir}`" in body and "[None]" not in body
    assert 'model="None"' not in body

    section = body.split("## InSPO training options")[1].split("###")[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| "):
            cells = re.split(r"(?<!\\)\|", line)  # cells are separated by unescaped pipes
            rows[cells[1].strip()] = cells[2].strip()
    assert rows["Base model"] == f"`{tiny_model_dir}` (local path)"
    assert rows["Dataset"] == "`trl-lib/ultrafeedback_binarized`"
    assert rows["`reference_conditioning`"] == "`'prompt_only'`"
    assert rows["`conditional_loss_weight`"] == "`1.0`"
    assert rows["`unconditional_loss_weight`"] == "`0.3`"
    assert rows["`loss_type`"] == "`['sigmoid', 'sft']`"
    assert rows["`loss_weights`"] == "`[1.0, 0.5]`"
    assert rows["`beta`"] == "`0.25`"
    assert rows["`max_alternative_length`"] == "`None`"
    assert rows["`alternative_separator`"] == "`'\\n\\n'`"
    assert rows["`max_length`"] == "`256`"
    assert rows["Reference model"].startswith("a separate frozen model")
    assert "from the prompt alone" in section

    assert "https://huggingface.co/papers/2512.23126" in body
    assert "@article{li2025inspo" in body and "arXiv:2512.23126" in body
    assert "@software{vonwerra2020trl" in body


def test_model_card_for_lora_names_the_adapter_and_its_reference(tmp_path, tiny_model_dir):
    args = InSPOConfig(**config_kwargs(tmp_path, precompute_ref_log_probs=True))
    trainer = InSPOTrainer(
        model=tiny_model_dir,
        args=args,
        train_dataset=Dataset.from_list(make_rows(8)),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    data_file = tmp_path / "prefs.jsonl"
    data_file.write_text("{}")
    trainer.create_model_card(dataset_name=str(data_file))
    metadata, body = card_sections((tmp_path / "out" / "README.md").read_text())
    assert "datasets" not in metadata  # a local file is no Hub dataset id
    assert f"| Dataset | `{data_file}` (local path) |" in body
    assert (
        "| Reference model | the base model with the adapter disabled, log-probabilities precomputed before training |"
        in body
    )
    assert "| Adapter | LORA (r=4, alpha=8) |" in body
    assert f"fine-tuned version of `{tiny_model_dir}`" in body


EXPECTED_MODEL_FILES = {
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_args.bin",
}


def test_push_to_hub_uploads_model_tokenizer_and_inspo_card(tmp_path, model_factory, tokenizer, fake_hub):
    args = InSPOConfig(
        **config_kwargs(
            tmp_path, push_to_hub=True, hub_model_id="someone/tiny-inspo", hub_token="hf_fake", max_steps=2
        )
    )
    trainer = InSPOTrainer(
        model=model_factory(),
        ref_model=model_factory(seed=1),
        args=args,
        train_dataset=Dataset.from_list(make_rows(8)),
        processing_class=tokenizer,
    )
    assert fake_hub.created == ["someone/tiny-inspo"]  # Trainer.init_hf_repo at construction
    trainer.train()
    (tmp_path / "out" / "_scratch.txt").write_text("not uploaded: TRL's ignore pattern `_*`")
    trainer.push_to_hub(dataset_name="trl-lib/ultrafeedback_binarized")

    commit = fake_hub.commits[-1]
    assert commit["repo_id"] == "someone/tiny-inspo" and commit["summary"] == "End of training"
    assert EXPECTED_MODEL_FILES <= set(commit["files"]) and "_scratch.txt" not in commit["files"]
    assert not any(name.startswith("checkpoint-") for name in commit["files"])
    # The uploaded weights are the trained ones.
    from safetensors.torch import load as load_safetensors

    weights = load_safetensors(commit["files"]["model.safetensors"])
    for name, param in trainer.model.named_parameters():
        assert weights[name].equal(param.detach()), name
    card = commit["files"]["README.md"].decode()
    metadata, body = card_sections(card)
    assert {"trl", "inspo"} <= set(metadata["tags"]) and metadata["model_name"] == "tiny-inspo"
    assert "## InSPO training options" in body and "`reference_conditioning` | `'conditional'`" in body
    # the quick start loads the pushed repo and answers from the prompt alone (no second response)
    quick_start = body[body.index("## Quick start") : body.index("## Training procedure")]
    assert "AutoModelForCausalLM.from_pretrained('someone/tiny-inspo')" in quick_start
    assert "from the prompt alone" in quick_start and "model.generate(**inputs" in quick_start
    assert "time machine" not in quick_start  # not TRL's generic chat example
    assert "@article{li2025inspo" in body


def test_cli_push_to_hub(tmp_path, tiny_model_dir, fake_hub):
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_rows(8)))
    out = tmp_path / "run"
    cli_main(
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_name",
            str(data),
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--bf16",
            "false",
            "--gradient_checkpointing",
            "false",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
            "--use_peft",
            "--lora_r",
            "4",
            "--lora_target_modules",
            "q_proj",
            "v_proj",
            "--push_to_hub",
            "--hub_model_id",
            "someone/cli-inspo",
            "--hub_token",
            "hf_fake",
            "--alternative_separator",
            " | ",
        ]
    )
    assert fake_hub.created and set(fake_hub.created) == {"someone/cli-inspo"}
    final = fake_hub.commits[-1]
    assert final["summary"] == "End of training"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= set(final["files"])
    assert "model.safetensors" not in final["files"]  # LoRA: only the adapter is pushed
    adapter_config = json.loads(final["files"]["adapter_config.json"])
    assert adapter_config["base_model_name_or_path"] == tiny_model_dir and adapter_config["r"] == 4
    card = final["files"]["README.md"].decode()
    assert "## InSPO training options" in card
    assert "| `alternative_separator` | `' \\| '` |" in card
    assert f"| Dataset | `{data}` (local path) |" in card
    assert os.path.exists(out / "README.md") and (out / "README.md").read_text() == card


def test_dropped_rows_reach_the_card_and_a_json_file(tmp_path, tiny_model_dir):
    """A command-line user cannot reach `trainer.inspo_data_report`: the counts are written beside the model and in
    the card."""
    rows = make_rows(8)
    rows[2]["rejected"] = rows[2]["chosen"]  # identical responses
    rows[5]["chosen"] = "  "  # empty response
    args = InSPOConfig(**config_kwargs(tmp_path, max_steps=1))
    trainer = InSPOTrainer(model=tiny_model_dir, args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    report = json.loads((tmp_path / "out" / "inspo_data_report.json").read_text())
    assert report["train"]["rows"] == 8
    assert report["train"]["dropped"] == {"empty_response": 1, "identical_responses": 1, "prompt_too_long": 0}
    assert report["train"]["first_row"] == {"identical_responses": 2, "empty_response": 5}
    _, body = card_sections((tmp_path / "out" / "README.md").read_text())
    checks = body.split("### Data checks")[1]
    assert "dropped 2 of 8 rows: 1 empty_response (e.g. row 5), 1 identical_responses (e.g. row 2)" in checks
    assert body.index("### Data checks") < body.index("### Framework versions")
