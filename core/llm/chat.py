"""Chat template → token ids, shared by the local backends (hf, vllm).

The prompt is the template applied with the generation prompt; a response's tokens are what
follows it. Scoring and generation use the same split, so log P(response | prompt) from `score`
equals the sum of the log-probabilities the model gave those tokens while generating them.
"""

from __future__ import annotations

from core.llm.base import Conversation, as_conversation, open_turn

# End-of-turn markers of common chat templates; one counts as an end token when the template uses it.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>",
                      "<|end_of_text|>", "<|return|>")


class ChatFormat:
    def __init__(self, tokenizer, chat_template: str | None = None, extra_eos_ids=()):
        self.tokenizer = tokenizer
        if chat_template:
            tokenizer.chat_template = chat_template
        self.template = tokenizer.chat_template
        self.eos_ids = self._end_ids(extra_eos_ids)

    def _end_ids(self, extra) -> set[int]:
        ids = {int(i) for i in extra if i is not None}
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        vocab = self.tokenizer.get_vocab()
        for token in END_OF_TURN_TOKENS:
            if token in vocab and self.template and token in self.template:
                ids.add(int(vocab[token]))
        return ids

    def _check_template(self) -> None:
        if not self.template:
            raise ValueError("this model's tokenizer has no chat template: give one in the model spec "
                             "(chat_template)")

    def prompt_text(self, conversation: Conversation) -> str:
        self._check_template()
        conversation = as_conversation(conversation)
        generation_prompt = conversation[-1]["role"] != "assistant"
        from jinja2.exceptions import SecurityError

        try:  # transformers renders templates in jinja2's ImmutableSandboxedEnvironment
            return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                      add_generation_prompt=generation_prompt)
        except SecurityError as exc:
            raise ValueError(f"the chat template tried something the sandbox refuses ({exc}); "
                             "a chat template formats messages and cannot reach Python objects") from None

    def encode(self, text: str) -> list[int]:
        # The template writes any BOS itself; the tokenizer must not add another.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        return self.encode(self.prompt_text(conversation))

    def count_tokens(self, conversation: Conversation) -> int:
        return len(self.prompt_ids(conversation))

    def response_ids(self, prompt_text: str, prompt_ids: list[int], response: str | list[int]) -> list[int]:
        """The response's tokens as they follow the prompt. Given as ids, they are taken as is."""
        if not isinstance(response, str):
            ids = [int(t) for t in response]
            return ids
        joint = self.encode(prompt_text + response)
        if joint[: len(prompt_ids)] == prompt_ids:
            return joint[len(prompt_ids):]
        # The response merged with the prompt's last token: tokenise it on its own.
        return self.encode(response)

    def prefilled_text(self, conversation: Conversation, prefill: str = "") -> str:
        """The prompt with the assistant's turn opened and started with `prefill` (what a
        server's `continue_final_message` gives): the model's next token continues that text."""
        return self.prompt_text(open_turn(conversation)) + prefill

    def label_tokens(self, conversation: Conversation, labels: list[str], prefill: str = ""
                     ) -> tuple[list[int], list[tuple[int, ...]]]:
        """The prompt's ids and each label's ids as they follow the (pre-filled) prompt."""
        text = self.prefilled_text(conversation, prefill)
        prompt = self.encode(text)
        return prompt, [tuple(self.response_ids(text, prompt, label)) for label in labels]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
