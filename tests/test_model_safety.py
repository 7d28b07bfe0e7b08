"""Model folders and chat templates are untrusted (issue 15): safetensors only, no code from a
model folder unless the user turns trust_remote_code on for that model (with a warning), and
chat templates render in jinja2's sandbox, so a template cannot reach Python objects or the OS."""

from __future__ import annotations

import json
import shutil

import pytest

from core.llm import builtin
from core.llm.chat import ChatFormat
from core.llm.registry import ModelSpec


@pytest.fixture
def tiny_folder(tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(builtin.model_path("tiny-random"), folder)
    return folder


def test_a_folder_with_pickled_weights_only_is_refused(workspace, tiny_folder):
    for weights in tiny_folder.glob("*.safetensors"):
        weights.unlink()
    (tiny_folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        workspace.add_model({"name": "pickled", "path": str(tiny_folder)})
    assert workspace.store.model_spec("pickled") is None


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_an_auto_map_is_refused_unless_trusted_and_then_warned_about(workspace, tiny_folder, file):
    data = json.loads((tiny_folder / file).read_text())
    data["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (tiny_folder / file).write_text(json.dumps(data))
    (tiny_folder / "modeling_evil.py").write_text("raise SystemExit('ran remote code')\n")
    with pytest.raises(ValueError, match=f"{file} in .* name custom Python code.*trust_remote_code"):
        workspace.add_model({"name": "custom", "path": str(tiny_folder)})
    assert workspace.store.model_spec("custom") is None
    spec = workspace.add_model({"name": "custom", "path": str(tiny_folder), "trust_remote_code": True})
    assert spec.trust_remote_code and "runs Python code from its folder" in spec.warning


def test_trust_remote_code_is_off_by_default_and_has_no_warning(workspace, tiny_folder):
    spec = workspace.add_model({"name": "plain", "path": str(tiny_folder)})
    assert spec.trust_remote_code is False and spec.warning is None
    assert ModelSpec.from_json(workspace.store.model_spec("plain")).trust_remote_code is False


@pytest.mark.parametrize("template", [
    "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% for m in messages %}{{ m.__class__.__init__.__globals__ }}{% endfor %}",
])
def test_a_hostile_chat_template_is_refused_by_the_sandbox(tiny_folder, tmp_path, template):
    from transformers import AutoTokenizer

    marker = tmp_path / "pwned"
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder, local_files_only=True)
    chat = ChatFormat(tokenizer, template.replace("{marker}", str(marker)))
    with pytest.raises(ValueError, match="sandbox refuses"):
        chat.prompt_text([{"role": "user", "content": "hi"}])
    assert not marker.exists()


def test_an_ordinary_template_still_renders(tiny_folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_folder, local_files_only=True)
    chat = ChatFormat(tokenizer, "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>")
    assert chat.prompt_text([{"role": "user", "content": "hi"}]) == "<user>hi<assistant>"
