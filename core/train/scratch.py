"""Students built from a config, trained from scratch: no hub, no download (issue 13, item 7).

`build_char_student(folder)` writes a Hugging Face folder (config.json, safetensors, tokenizer)
of a small Llama over characters: the tokenizer is byte-level BPE with no merges, so every ASCII
character is one token, and the chat template is as short as a template can be: the user's text,
then the answer and an end token. A synthetic prompt like "47+38=" and its answer "58" are then
nine tokens, which is what lets a two-layer model learn 2-digit addition in a CPU minute. The
folder loads through the hf backend like any other model (Workspace.add_model, backend "hf").
"""

from __future__ import annotations

from pathlib import Path

END = "<|im_end|>"
PAD = "<|pad|>"
# User (and system) text as written, the assistant's answer followed by END; the generation
# prompt adds nothing, so a prompt ends where its answer starts.
CHAR_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- message['content'] }}"
    "{%- if message['role'] == 'assistant' %}{{- '" + END + "' }}{%- endif %}"
    "{%- endfor %}"
)


def build_char_tokenizer(context: int = 64):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # A vocabulary of exactly the byte alphabet and the specials: the trainer learns no merge.
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + 2, special_tokens=[PAD, END], show_progress=False,
                                  initial_alphabet=alphabet)
    tok.train_from_iterator(["0123456789+="], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=END, unk_token=None,
                                   bos_token=None, chat_template=CHAR_TEMPLATE, model_max_length=context,
                                   padding_side="left")


def build_char_student(folder: str | Path, hidden: int = 96, layers: int = 2, heads: int = 4,
                       context: int = 64, seed: int = 0) -> Path:
    """A randomly initialised character-level Llama saved as a Hugging Face folder; returns it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_char_tokenizer(context)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads,
        max_position_embeddings=context, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
