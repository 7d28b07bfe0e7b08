"""The SFT trainer (core.train) on tiny-random: it learns, LoRA touches only the adapter, the
weighted loss matches a hand computation, labels cover the response only, packing does not leak
attention across examples, configs validate, and a stopped run resumes to the same weights."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from core.curate import create_snapshot
from core.llm import builtin
from core.train import Example, TrainConfig, examples_from_parquet, latest_checkpoint, train
from core.train.data import IGNORE, make_batch, pack, tokenize_example, tokenize_examples
from core.train.loss import token_losses, weighted_loss

# Short answers it can memorise in a few steps.
FACTS = [("What is the capital of France?", "Paris."), ("What colour is the sky?", "Blue."),
         ("How many legs has a cat?", "Four."), ("What is 2 + 2?", "4.")]


def facts(weights=(1.0, 1.0, 1.0, 1.0)) -> list[Example]:
    return [Example.from_texts(q, a, system="Answer briefly.", weight=w, id=f"f{i}")
            for i, ((q, a), w) in enumerate(zip(FACTS, weights, strict=True))]


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = builtin.model_path("tiny-random")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return path, AutoTokenizer.from_pretrained(path), model


def tensors(batch):
    # use_cache=False as in training: with a KV cache, transformers never builds the packed mask
    inputs = {"input_ids": torch.tensor(batch.input_ids), "position_ids": torch.tensor(batch.position_ids),
              "use_cache": False}
    if batch.attention_mask is not None:
        inputs["attention_mask"] = torch.tensor(batch.attention_mask)
    return inputs, torch.tensor(batch.targets), torch.tensor(batch.weights)


def config(**kw) -> TrainConfig:
    base = dict(base_model="tiny-random", max_steps=6, batch_size=4, learning_rate=3e-3, max_seq_len=128,
                logging_steps=1, dtype="float32")
    return TrainConfig(**(base | kw))


def weights_of(folder) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def test_full_sft_changes_parameters_and_lowers_the_loss(tiny, tmp_path):
    path = tiny[0]
    records = []
    result = train(config(), facts(), tmp_path / "out", progress=lambda **r: records.append(r), device="cpu")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6] and result.step == result.total_steps == 6
    assert set(records[0]) >= {"step", "loss", "lr", "tokens_per_s", "eta_s", "grad_norm"}
    assert records[-1]["loss"] < 0.5 * records[0]["loss"], [r["loss"] for r in records]
    assert all(math.isfinite(r["grad_norm"]) and r["tokens_per_s"] > 0 for r in records)
    before, after = weights_of(path), weights_of(result.model_dir)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)  # full fine-tuning moves every tensor
    # the config JSON beside the checkpoint and the final model
    ckpt = latest_checkpoint(tmp_path / "out")
    assert ckpt.name == "checkpoint-6" and result.checkpoints == [ckpt]
    assert TrainConfig.load(ckpt) == config() == TrainConfig.load(result.model_dir)
    assert {"optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json"} <= {p.name for p in ckpt.iterdir()}
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_lora_changes_only_the_adapter(tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path, tokenizer, _ = tiny
    base_hash = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    cfg = config(method="lora", learning_rate=2e-2, lora_r=8, lora_alpha=16, lora_dropout=0.0, max_steps=8)
    result = train(cfg, facts(), tmp_path / "out", device="cpu")
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.6 * losses[0], losses
    adapter = weights_of(result.model_dir)
    assert adapter and all("lora_" in k for k in adapter)  # no base weight is saved with the adapter
    assert {k.split(".")[-3] for k in adapter} >= {"q_proj", "v_proj", "down_proj"}  # llama targets by default
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it moved
    assert hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest() == base_hash
    # the optimizer only ever held the adapter's tensors: the base was frozen while training
    optimizer = torch.load(result.checkpoints[-1] / "optimizer.pt", weights_only=True)
    assert sum(len(g["params"]) for g in optimizer["param_groups"]) == len(optimizer["state"]) == len(adapter)
    config_json = json.loads((result.model_dir / "adapter_config.json").read_text())
    assert config_json["r"] == 8 and config_json["base_model_name_or_path"] == str(path)
    # loaded with peft, the adapted model scores the training answers better than the base
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = PeftModel.from_pretrained(base, result.model_dir).eval()
    batch = make_batch(tokenize_examples(facts(), tokenizer, 128)[0], tokenizer.pad_token_id, packed=False)
    inputs, targets, weights = tensors(batch)
    with torch.no_grad():
        tuned_loss = weighted_loss(tuned(**inputs).logits, targets, weights)
        with tuned.disable_adapter():
            base_loss = weighted_loss(tuned(**inputs).logits, targets, weights)
    assert tuned_loss < 0.6 * base_loss
    inner = tuned.get_base_model().state_dict()
    for key, value in reference.items():  # the base weights under the adapter are the originals
        wrapped = key.replace(".weight", ".base_layer.weight")
        assert torch.equal(inner.get(key, inner.get(wrapped)), value), key


def test_stopped_run_resumes_to_the_same_weights(tmp_path):
    cfg = config(method="lora", lora_dropout=0.1, max_steps=4, batch_size=2, learning_rate=1e-2)
    whole = train(cfg, facts(), tmp_path / "whole", device="cpu")
    part = train(cfg, facts(), tmp_path / "part", device="cpu", should_stop=lambda: True)
    assert part.stopped and part.step == 1 and part.model_dir is None
    assert [p.name for p in part.checkpoints] == ["checkpoint-1"]
    # a checkpoint half-written by a killed run is not a checkpoint: ignored, then cleared away
    half = tmp_path / "part" / ".tmp-checkpoint-2-12345"
    half.mkdir()
    (half / "optimizer.pt").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path / "part").name == "checkpoint-1"
    with pytest.raises(ValueError, match=r"learning_rate: 0.01 → 0.02"):
        train(TrainConfig(**(cfg.to_dict() | {"learning_rate": 0.02})), facts(), tmp_path / "part",
              resume_from="latest", device="cpu")
    with pytest.raises(FileExistsError, match="holds checkpoints of an earlier run"):
        train(cfg, facts(), tmp_path / "part", device="cpu")
    rest = train(cfg, facts(), tmp_path / "part", resume_from="latest", device="cpu")
    assert rest.resumed_from.name == "checkpoint-1" and rest.steps == 3 and rest.step == 4 and not half.exists()
    a, b = weights_of(whole.model_dir), weights_of(rest.model_dir)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [r["loss"] for r in whole.history] == pytest.approx(
        [r["loss"] for r in json.loads((rest.checkpoints[-1] / "trainer_state.json").read_text())["log_history"]],
        abs=1e-6)


# --------------------------------------------------------------------------------------------
# Loss and data
# --------------------------------------------------------------------------------------------


def test_weighted_loss_against_hand_computed_values():
    # Vocabulary of 2. Sample A (weight 1): 2 response tokens at uniform logits, ℓ = log 2 each.
    # Sample B (weight 3): 3 response tokens where the target's logit is log 3 against 0, so
    # p = 3/4 and ℓ = log(4/3) each. One prompt position per row (target IGNORE).
    logits = torch.zeros(2, 4, 2)
    logits[1, 1:, 1] = math.log(3)
    targets = torch.tensor([[IGNORE, 0, 1, IGNORE], [IGNORE, 1, 1, 1]])
    weights = torch.tensor([[0, 1, 1, 0], [0, 3, 3, 3]], dtype=torch.float32)
    expected = (1 * 2 * math.log(2) + 3 * 3 * math.log(4 / 3)) / (1 * 2 + 3 * 3)
    assert weighted_loss(logits, targets, weights).item() == pytest.approx(expected, rel=1e-6)
    # scaling every weight changes nothing; a step split in two shares adds up to the whole
    assert weighted_loss(logits, targets, weights * 7).item() == pytest.approx(expected, rel=1e-6)
    halves = [weighted_loss(logits[i:i + 1], targets[i:i + 1], weights[i:i + 1], denominator=11.0) for i in (0, 1)]
    assert sum(h.item() for h in halves) == pytest.approx(expected, rel=1e-6)


def test_weighted_loss_on_tiny_random_and_weight_zero(tiny):
    _, tokenizer, model = tiny
    a, b = facts((1.0, 3.0, 1.0, 1.0))[:2]
    toks, _ = tokenize_examples([a, b], tokenizer, 128)
    inputs, targets, weights = tensors(make_batch(toks, tokenizer.pad_token_id, packed=False))
    with torch.no_grad():
        logits = model(**inputs).logits
    # by hand: -log softmax at each labelled next token, per sample
    sums, counts = [], []
    for row, tok in enumerate(toks):
        logp = torch.log_softmax(logits[row].double(), -1)
        resp = [t for t in range(len(tok.labels) - 1) if tok.labels[t + 1] != IGNORE]
        sums.append(-sum(logp[t, tok.labels[t + 1]].item() for t in resp))
        counts.append(len(resp))
    expected = (1 * sums[0] + 3 * sums[1]) / (1 * counts[0] + 3 * counts[1])
    assert weighted_loss(logits, targets, weights).item() == pytest.approx(expected, rel=1e-5)
    assert counts == [toks[0].n_response, toks[1].n_response]

    # weight 0: sample B has no influence on the loss or the gradient
    def loss_and_grad(examples):
        model.zero_grad()
        toks = [tokenize_example(e, tokenizer, 128, i)[0] for i, e in enumerate(examples)]
        i, t, w = tensors(make_batch(toks, tokenizer.pad_token_id, packed=False))
        loss = weighted_loss(model(**i).logits, t, w)
        loss.backward()
        return loss.item(), model.model.embed_tokens.weight.grad.clone()

    zero_b = Example(b.messages, 0.0)
    alone, with_zero = loss_and_grad([a]), loss_and_grad([a, zero_b])
    model.zero_grad()
    # A batch of two (padded) and a batch of one may take different float32 kernels: a few ulps
    # apart, where a weight-0 sample that counted would move the loss by its share of it.
    assert with_zero[0] == pytest.approx(alone[0], rel=1e-5)
    assert torch.allclose(with_zero[1], alone[1], atol=1e-6)
    # and the trainer drops a weight-0 sample before it costs any compute
    used, stats = tokenize_examples([a, zero_b], tokenizer, 128)
    assert len(used) == 1 and stats.n_zero_weight == 1


def test_labels_cover_the_response_and_its_end_token_only(tiny):
    _, tokenizer, _ = tiny
    example = Example.from_texts("Name a colour.", "Blue, like the sky.", input="One word is fine.",
                                 system="Answer briefly.",
                                 history=json.dumps([{"role": "user", "content": "Hi."},
                                                     {"role": "assistant", "content": "Hello there."}]))
    tok, cut = tokenize_example(example, tokenizer, 512)
    assert not cut and len(tok.input_ids) == len(tok.labels)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    first = next(i for i, t in enumerate(tok.labels) if t != IGNORE)
    prompt_text = tokenizer.decode(tok.input_ids[:first])
    assert prompt_text.endswith("<|im_start|>assistant\n") and "Hello there." in prompt_text
    assert "One word is fine." in prompt_text and "Answer briefly." in prompt_text
    assert all(t == IGNORE for t in tok.labels[:first])  # the earlier answer is context, not a target
    assert tok.labels[first:] == tok.input_ids[first:]
    assert tok.labels[-1] == end and tok.input_ids[-1] == end  # the template's trailing newline is dropped
    assert tokenizer.decode(tok.labels[first:]) == "Blue, like the sky.<|im_end|>"
    # shifted inside the example: the last position predicts nothing
    batch = make_batch([tok], tokenizer.pad_token_id, packed=False)
    assert batch.targets[0][first - 1] == tok.labels[first] and batch.targets[0][-1] == IGNORE
    # too long: the response is cut at max_seq_len; a prompt that fills it is skipped
    short, cut = tokenize_example(example, tokenizer, first + 2)
    assert cut and len(short.input_ids) == first + 2 and short.n_response == 2
    assert tokenize_example(example, tokenizer, first) == (None, False)


def test_packing_gives_the_same_per_example_losses(tiny):
    _, tokenizer, model = tiny
    toks, _ = tokenize_examples(facts(), tokenizer, 128)
    rows = pack(toks, 256)
    assert len(rows) == 1 and len(rows[0]) == 4  # all four in one row
    packed = make_batch(rows, tokenizer.pad_token_id, packed=True)
    padded = make_batch(toks, tokenizer.pad_token_id, packed=False)
    assert packed.attention_mask is None and sum(map(len, packed.position_ids)) < sum(map(len, padded.position_ids))

    def per_example(batch, attention_mask=None):
        inputs, targets, _ = tensors(batch)
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        with torch.no_grad():
            losses = token_losses(model(**inputs).logits, targets)
        index, mask = torch.tensor(batch.example_index), targets != IGNORE
        return [losses[(index == tok.index) & mask].mean().item() for tok in toks]

    a, b = per_example(padded), per_example(packed)
    assert b == pytest.approx(a, abs=1e-4)
    # the control: with one plain causal mask over the packed row, later examples see earlier ones
    leaky = per_example(packed, attention_mask=torch.ones(1, len(packed.input_ids[0]), dtype=torch.long))
    assert leaky[0] == pytest.approx(a[0], abs=1e-4) and max(abs(x - y) for x, y in zip(leaky[1:], a[1:], strict=True)) > 1e-2
    # the same batch weighted loss both ways
    (pi, pt, pw), (qi, qt, qw) = tensors(packed), tensors(padded)
    with torch.no_grad():
        assert weighted_loss(model(**pi).logits, pt, pw).item() == pytest.approx(
            weighted_loss(model(**qi).logits, qt, qw).item(), abs=1e-4)


def test_first_step_is_the_same_packed_padded_or_accumulated(tmp_path):
    """One optimizer step over the same four weighted examples: one padded batch, one packed row,
    or two accumulated micro-batches of two give the same loss and gradient norm."""
    examples = facts((1.0, 3.0, 0.5, 2.0))
    runs = {name: train(config(max_steps=1, **kw), examples, tmp_path / name, device="cpu").history[0]
            for name, kw in {"padded": {}, "packed": {"packing": True, "max_seq_len": 256},
                             "accumulated": {"batch_size": 2, "grad_accum": 2}}.items()}
    for name in ("packed", "accumulated"):
        assert runs[name]["loss"] == pytest.approx(runs["padded"]["loss"], abs=1e-4), name
        assert runs[name]["grad_norm"] == pytest.approx(runs["padded"]["grad_norm"], rel=1e-3), name


def test_examples_from_a_real_snapshot(seeded_workspace, tiny):
    spec = {"kind": "sft", "roles": ["seed"], "weights": {"default": 1.0, "rules": [
        {"when": {"tasks": ["math"]}, "weight": 2.5}]}, "system_tags": {"default": "Be helpful."}}
    snap = create_snapshot(seeded_workspace, spec, "s1")
    examples = examples_from_parquet(snap.parquet_path)
    assert len(examples) == snap.n_members == 6
    by_prompt = {e.messages[1]["content"]: e for e in examples}
    assert by_prompt["What is 12 * 7?"].weight == 2.5 and by_prompt["Name three primary colours."].weight == 1.0
    summary = by_prompt["Summarise the passage.\n\nThe cat sat on the mat all day long."]
    assert summary.messages[0] == {"role": "system", "content": "Be helpful."}
    assert summary.messages[-1] == {"role": "assistant", "content": "A cat spent the day on a mat."}
    toks, stats = tokenize_examples(examples, tiny[1], 256)
    assert stats.n_used == 6 and stats.n_response_tokens == sum(t.n_response for t in toks)


def test_parquet_without_responses_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"instruction_id": ["a"], "instruction": ["Hi"]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="not an SFT snapshot.*response"):
        examples_from_parquet(tmp_path / "p.parquet")


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_config_round_trip_and_defaults():
    cfg = TrainConfig("tiny-random", method="lora", target_modules=["q_proj", "v_proj"], packing=True, max_steps=3)
    assert cfg.target_modules == ("q_proj", "v_proj")
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["target_modules"] == ["q_proj", "v_proj"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"method": "qlora"}, "method must be one of full, lora, not 'qlora'"),
    ({"learning_rate": 0}, r"learning_rate must be a number in \(0, 1\), not 0"),
    ({"batch_size": 0}, "batch_size must be an integer ≥ 1, not 0"),
    ({"grad_accum": 1.5}, "grad_accum must be an integer ≥ 1, not 1.5"),
    ({"max_seq_len": 4}, "max_seq_len must be an integer ≥ 8, not 4"),
    ({"lora_dropout": 1.0}, r"lora_dropout must be a number in \[0, 1\), not 1.0"),
    ({"dtype": "float16"}, "dtype must be one of auto, float32, bfloat16, not 'float16'"),
    ({"lr_scheduler": "step"}, "lr_scheduler must be one of linear, cosine, constant, not 'step'"),
    ({"warmup_steps": 5, "warmup_ratio": 0.1}, r"warmup_steps \(5\) or warmup_ratio \(0.1\)"),
    ({"packing": "yes"}, "packing must be true or false, not 'yes'"),
    ({"target_modules": []}, "target_modules must be a non-empty list"),
    ({"base_model": ""}, "base_model must be a model name or a local folder, not ''"),
    ({"save_total_limit": 0}, "save_total_limit must be an integer ≥ 1 or None, not 0"),
])
def test_config_errors_name_the_bad_value(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**({"base_model": "tiny-random"} | changes))


def test_config_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match="unknown trainer setting.*learning_rat"):
        TrainConfig.from_dict({"base_model": "tiny-random", "learning_rat": 1e-4})
    with pytest.raises(ValueError, match="weight must be a finite number ≥ 0, not -1"):
        Example.from_texts("q", "a", weight=-1)


def test_unknown_base_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="base_model 'no-such-model' is neither a built-in"):
        train(TrainConfig("no-such-model"), facts(), tmp_path / "out", device="cpu")
