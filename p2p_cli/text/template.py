"""Prompts read through a language model's chat template (Qwen-Image, FLUX.2): the template's prefix and suffix
tokens are not words of the prompt.

A pipeline of an LLM-encoded family formats the prompt into a chat template, tokenizes the whole text and drops
its first `drop` hidden states (the system prefix); the denoiser reads the rest: the prompt's own tokens, then the
template's suffix (`<|im_end|>`, the assistant turn). `TemplateTokenizer` shows the text layer (tokens.py,
mappers.py) that sequence as if it were a tokenizer's output: position 0 is the first position the denoiser reads,
the suffix plays the part of CLIP's end token (`prompt_trail` tokens of it), and words map to the tokens of the
prompt's own characters, split by the model's own tokenizer in the template's context. A token that joins
template and prompt characters is refused (the word would be part of the template).

Positions after a prompt are padding that the denoiser masks out (`masked_padding`): no mapper moves anything onto
them, unlike CLIP's padding, which is made of real end tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2p_cli.text.tokens import PromptError

# Each LLM-encoded pipeline's prompt template and the number of its first tokens the pipeline drops (torch-free,
# for `p2p validate`; the families read them from here). QwenImagePipeline: prompt_template_encode, start_idx 34.
QWEN_IMAGE_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial"
    " relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n")
QWEN_IMAGE_DROP = 34
QWEN_IMAGE_TEXT_LENGTH = 512  # the text length the family pads to: QwenImagePipeline's default max_sequence_length


@dataclass
class Encoded:
    """What tokens.py reads from a tokenizer call: ids, and character spans when asked for."""

    input_ids: list[int]
    offset_mapping: list[tuple[int, int]] | None = None


def chat_template(tokenizer: Any, system: str | None = None, **kwargs: Any) -> str:
    """The text a tokenizer's own chat template makes of one user message, with {} where the message goes: as
    Flux2KleinPipeline renders a prompt (add_generation_prompt, the keyword arguments passed on), or with a system
    message as Flux2Pipeline's format_input does (both messages as text parts, no generation prompt)."""
    sentinel = "\x00p2p-prompt\x00"
    if system is None:
        messages = [{"role": "user", "content": sentinel}]
        kwargs = {"add_generation_prompt": True, **kwargs}
    else:
        messages = [{"role": role, "content": [{"type": "text", "text": text}]}
                    for role, text in (("system", system), ("user", sentinel))]
        kwargs = {"add_generation_prompt": False, **kwargs}
    text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    if text.count(sentinel) != 1:
        raise ValueError("the tokenizer's chat template does not show the message once")
    return text.replace(sentinel, "{}")


class TemplateTokenizer:
    """A tokenizer and a chat template, seen from the denoiser: `drop` first tokens cut, `model_max_length` kept;
    add_special_tokens as the pipeline tokenizes the rendered text (False where the template holds them, as
    Flux2Pipeline's `<s>`)."""

    masked_padding = True

    def __init__(self, tokenizer: Any, template: str, drop: int, length: int, add_special_tokens: bool = True):
        if template.count("{}") != 1:
            raise ValueError("a prompt template holds one {} where the prompt goes")
        self.tokenizer, self.template, self.drop, self.model_max_length = tokenizer, template, drop, length
        self.add_special_tokens = add_special_tokens
        self._prefix_text, self._suffix_text = template.split("{}")
        self._start = len(self._prefix_text)
        ids, spans = self._template_tokens("")
        prefix = sum(1 for _, e in spans if e <= self._start)
        if prefix < drop:
            raise ValueError(f"this tokenizer splits the template's prefix into {prefix} tokens but the pipeline drops"
                             f" the first {drop}: it would drop words of the prompt")
        self.prompt_lead = prefix - drop  # template tokens the denoiser reads before the prompt (0 for the real ones)
        self.prompt_trail = len(ids) - prefix  # the template's suffix after the prompt
        self._prefix = prefix

    def _template_tokens(self, prompt: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(self._prefix_text + prompt + self._suffix_text, return_offsets_mapping=True,
                             truncation=False, verbose=False, add_special_tokens=self.add_special_tokens)
        return list(enc.input_ids), [tuple(o) for o in enc.offset_mapping]

    def sequence(self, prompt: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids the denoiser reads for a prompt (after the dropped prefix) and the prompt's own tokens' character
        spans in the prompt."""
        ids, spans = self._template_tokens(prompt)
        end = self._start + len(prompt)
        inner = [(s, e) for s, e in spans if e > self._start and s < end]
        prefix = sum(1 for _, e in spans if e <= self._start)
        if prefix != self._prefix or any(s < self._start or e > end for s, e in inner):
            raise PromptError("the prompt's first or last characters join the template's tokens (a leading or"
                              " trailing line break or space): remove them")
        return ids[self.drop :], [(s - self._start, e - self._start) for s, e in inner]

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 **_: Any) -> Encoded:
        """The denoiser's ids for a prompt (add_special_tokens: with the template's tokens around it)."""
        ids, spans = self.sequence(text)
        if add_special_tokens:
            return Encoded(ids)
        inner = ids[self.prompt_lead : self.prompt_lead + len(spans)]
        return Encoded(inner, spans if return_offsets_mapping else None)

    def decode(self, ids: list[int], **kwargs: Any) -> str:
        return self.tokenizer.decode(ids, **kwargs)
