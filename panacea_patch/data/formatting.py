"""Prompt formatting and response-only label masking.

A prompt is rendered with the tokenizer's chat template when it has one, otherwise with an
Alpaca-style template. Training examples are ``prompt tokens + response tokens`` where the prompt
tokens are exactly the ones generation would start from, and only response tokens carry loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from panacea_patch.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from panacea_patch.data.pairs import Pair

ALPACA_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"
IGNORE_INDEX = -100  # the label value torch's cross-entropy skips


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one example; ``labels`` is ``IGNORE_INDEX`` on every non-response token."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether formatting goes through the tokenizer's chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The text a model is given to answer ``prompt``: chat template or Alpaca fallback.

    Tokenize it with :func:`encode_prompt` (or use ``build_generation_batches``) rather than
    calling the tokenizer directly, which would add a second BOS to chat-templated text.
    """
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return str(text)
    return ALPACA_TEMPLATE.format(prompt=prompt)


def _tokenize(tokenizer: PreTrainedTokenizerBase, text: str, *, chat: bool) -> list[int]:
    # Chat templates write their own BOS, so special tokens are added only for the Alpaca text
    # (as transformers does in apply_chat_template(tokenize=True)).
    ids = list(tokenizer(text, add_special_tokens=not chat)["input_ids"])
    eos_id, eos = tokenizer.eos_token_id, tokenizer.eos_token
    # Some tokenizers append EOS to everything (add_eos_token); a prompt must not end with one.
    if not chat and ids and ids[-1] == eos_id and not (eos and text.endswith(eos)):
        ids.pop()
    return ids


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, max_length: int | None = None
) -> list[int]:
    """Token ids of the formatted prompt; when longer than ``max_length``, keep the end.

    The end is kept because it holds the assistant header the model answers after.
    """
    ids = _tokenize(tokenizer, format_prompt(tokenizer, prompt), chat=has_chat_template(tokenizer))
    if max_length is None:
        return ids
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    return ids[-max_length:]


def _completion_text(
    tokenizer: PreTrainedTokenizerBase, prompt: str, prompt_text: str, response: str
) -> tuple[str, bool]:
    """The text after the prompt in a full conversation, and whether EOS must be appended."""
    if not has_chat_template(tokenizer):
        return response, True
    conversation = [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": response},
    ]
    full = str(tokenizer.apply_chat_template(conversation, tokenize=False))
    if not full.startswith(prompt_text):
        # The template renders a finished conversation differently from a generation prompt
        # (reasoning templates do): train on what generation continues with instead.
        return response, True
    completion = full[len(prompt_text) :]
    at = completion.find(response)
    # A template that closes the turn (<|im_end|>, EOS...) supplies the stop signal itself.
    needs_eos = at >= 0 and not completion[at + len(response) :].strip()
    return completion, needs_eos


def _response_ids(
    tokenizer: PreTrainedTokenizerBase, prompt_text: str, prompt_ids: list[int], completion: str
) -> list[int]:
    chat = has_chat_template(tokenizer)
    full_ids = _tokenize(tokenizer, prompt_text + completion, chat=chat)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return full_ids[len(prompt_ids) :]
    # A merge across the prompt/response boundary: tokenize the parts apart, which is also what
    # the model sees when it generates after the prompt.
    return list(tokenizer(completion, add_special_tokens=False)["input_ids"])


def encode_pair(tokenizer: PreTrainedTokenizerBase, pair: Pair, max_length: int) -> EncodedPair:
    """Encode one pair for a response-only loss.

    ``input_ids`` is the formatted prompt followed by the response (with EOS appended when the
    template does not end the turn itself); ``labels`` copies the response tokens and is
    ``IGNORE_INDEX`` elsewhere. When too long, the response is cut, never the prompt. A pair
    without a response encodes the prompt only (last ``max_length`` tokens, no label).

    Raises ``InputError`` (naming the pair's source and line) when the response is empty after
    templating or no response token fits in ``max_length``.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if pair.response is None:
        ids = encode_prompt(tokenizer, pair.prompt, max_length)
        return EncodedPair(ids, [IGNORE_INDEX] * len(ids), len(ids))
    prompt_text = format_prompt(tokenizer, pair.prompt)
    prompt_ids = _tokenize(tokenizer, prompt_text, chat=has_chat_template(tokenizer))
    completion, needs_eos = _completion_text(tokenizer, pair.prompt, prompt_text, pair.response)
    response_ids = _response_ids(tokenizer, prompt_text, prompt_ids, completion)
    eos_id = tokenizer.eos_token_id
    if needs_eos and eos_id is not None and (not response_ids or response_ids[-1] != eos_id):
        response_ids.append(eos_id)
    if not pair.response.strip() or not response_ids:
        raise InputError(
            f"{pair.where}: the response is empty after templating",
            hint="check the response text and the tokenizer's chat template",
        )
    room = max_length - len(prompt_ids)
    if room < 1:
        raise InputError(
            f"{pair.where}: the prompt alone is {len(prompt_ids)} tokens, so max_length="
            f"{max_length} leaves no room for the response",
            hint="raise max_length (CLI: --max-length) or shorten the prompt",
        )
    response_ids = response_ids[:room]
    return EncodedPair(
        input_ids=prompt_ids + response_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + response_ids,
        prompt_length=len(prompt_ids),
    )
