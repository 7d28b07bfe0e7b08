"""A student built from a config (core/train/scratch.py) and the short addition prompts it learns
from (core.synthetic "addition-short"): one character per token, a template that adds nothing but
an end token, loaded and run by the hf backend, and trainable by core.train."""

from __future__ import annotations

import pytest

from core import synthetic
from core.llm.base import GenerationParams
from core.llm.registry import ModelSpec, load_backend
from core.train import Example, TrainConfig, train
from core.train.scratch import END, build_char_student


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return build_char_student(tmp_path_factory.mktemp("student") / "char", hidden=32, layers=1, heads=2)


def test_every_character_is_one_token_and_the_template_adds_only_the_end(student):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student)
    ids = tok("47+38=", add_special_tokens=False)["input_ids"]
    assert len(ids) == 6 and tok.decode(ids) == "47+38="
    chat = [{"role": "user", "content": "47+38="}, {"role": "assistant", "content": "58"}]
    assert tok.apply_chat_template(chat, tokenize=False) == "47+38=58" + END
    assert tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True) == "47+38="


def test_the_hf_backend_runs_it_and_core_train_lowers_its_loss(student, tmp_path):
    spec = ModelSpec("char-student", backend="hf", path=str(student), context_length=64)
    with load_backend(spec) as backend:
        [[out]] = backend.generate([[{"role": "user", "content": "12+34="}]], GenerationParams(max_tokens=4))
    assert out.error is None and out.n_tokens >= 1
    task = synthetic.get_task("addition-short")
    train_set, _ = synthetic.split_problems(task, 64, 8, seed=0)
    examples = [Example(messages=({"role": "user", "content": task.prompt(p)},
                                  {"role": "assistant", "content": task.answer(p)})) for p in train_set]
    cfg = TrainConfig(str(student), method="full", max_steps=30, batch_size=16, learning_rate=3e-3, max_seq_len=16,
                      logging_steps=1, seed=0)
    result = train(cfg, examples, tmp_path / "run", threads=1)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.75 * losses[0], losses


def test_short_addition_prompts_are_served_by_the_generic_teacher_and_judge(tmp_path):
    assert synthetic.reference_answer("47+38=") == "58"
    assert synthetic.teacher_answer("47+38=", error_rate=1.0) == "57"  # the dropped carry
    assert synthetic.teacher_answer("41+38=", error_rate=1.0) == "97"  # no carry: nothing to drop
    assert synthetic.exact_match_judge("47+38=", "58") == 5 and synthetic.exact_match_judge("47+38=", "57") == 1
    files = synthetic.write_prompt_files(tmp_path, "addition-short", n_train=20, n_heldout=5, seed=1)
    first = files.train.read_text().splitlines()[0]
    assert '"task": "math"' in first and '"synthetic": "addition-short"' in first
