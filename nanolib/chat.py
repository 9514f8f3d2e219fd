"""Conversations as token ids and a loss mask: the chat template, its inverse, and a drawing.

A conversation is a list of messages `{"role": "user" | "assistant" | "system", "content": …}`
(or a record `{"messages": [...], …}` carrying it). User and system content is a string; assistant
content is a string or a list of parts `{"type": "text" | "python" | "python_output", "text": …}`.
A system message is folded into the first user message. The template:

    <|bos|> <|user_start|> … <|user_end|> <|assistant_start|> … <|assistant_end|> …

where an assistant's tool call is `<|python_start|> expr <|python_end|>` and the tool's answer
`<|output_start|> result <|output_end|>`. The mask is 1 on what the model must learn to write
(assistant text, its tool calls, its `<|assistant_end|>`) and 0 on everything else, tool outputs
included: at test time the tool writes those, not the model. Message text is always encoded as
ordinary text, so a message that contains the string `<|bos|>` cannot forge a special token.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from nanolib.tokenizer import SPECIAL_TOKENS, Tokenizer

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "python", "python_output")
# part type -> (opening special token, closing special token, mask); plain text has no wrapper
_WRAPPERS = {
    "python": ("<|python_start|>", "<|python_end|>", 1),
    "python_output": ("<|output_start|>", "<|output_end|>", 0),
}


class ConversationError(ValueError):
    """A conversation that the chat template cannot render."""


def messages_of(conv: Sequence[Mapping] | Mapping) -> list[Mapping]:
    """The message list of a conversation given as a list or as a record with `messages`."""
    if isinstance(conv, Mapping):
        if "messages" not in conv:
            raise ConversationError(
                f"a conversation record needs a `messages` list; got keys {sorted(conv)}"
            )
        conv = conv["messages"]
    if isinstance(conv, str | bytes) or not isinstance(conv, Sequence):
        raise ConversationError(f"a conversation is a list of messages, got {type(conv).__name__}")
    return list(conv)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConversationError(f"{where} must be a string, got {type(value).__name__}")
    return value


def _parts(content: Any, where: str) -> list[dict[str, str]]:
    """Assistant content as a list of parts: adjacent text merged, empty text dropped."""
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if isinstance(content, Mapping) or not isinstance(content, Sequence):
        raise ConversationError(
            f"{where}: content must be a string or a list of parts, got {type(content).__name__}"
        )
    parts: list[dict[str, str]] = []
    for j, part in enumerate(content):
        here = f"{where}, part {j}"
        if not isinstance(part, Mapping):
            raise ConversationError(f"{here} must be a dict, got {type(part).__name__}")
        kind = part.get("type")
        if kind not in PART_TYPES:
            raise ConversationError(
                f"{here}: unknown part type {kind!r}; valid types: {', '.join(PART_TYPES)}"
            )
        text = _text(part.get("text"), f"{here} ({kind}) text")
        if kind == "python_output" and (not parts or parts[-1]["type"] != "python"):
            raise ConversationError(f"{here}: a python_output part must follow a python part")
        if kind == "text" and parts and parts[-1]["type"] == "text":
            parts[-1] = {"type": "text", "text": parts[-1]["text"] + text}
        elif kind != "text" or text:
            parts.append({"type": kind, "text": text})
    return parts


def _user_text(content: Any, where: str) -> str:
    """User or system content as one string (a list of text parts is joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping) or not isinstance(content, Sequence):
        raise ConversationError(
            f"{where}: content must be a string or a list of text parts, "
            f"got {type(content).__name__}"
        )
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("python", "python_output"):
            raise ConversationError(
                f"{where}, part {j}: a {kind} part (a tool call or tool output) is only allowed "
                "inside an assistant turn"
            )
        if kind != "text":
            raise ConversationError(
                f"{where}, part {j}: unknown part type {kind!r}; valid types: "
                f"{', '.join(PART_TYPES)}"
            )
        texts.append(_text(part.get("text"), f"{where}, part {j} text"))
    return "".join(texts)


def normalize_conversation(conv: Sequence[Mapping] | Mapping) -> list[dict[str, Any]]:
    """Check a conversation and return its canonical form (what `parse_conversation` gives back).

    The system message is folded into the first user message; user content becomes a string;
    assistant content becomes a string when it is plain text, else a list of parts with adjacent
    text merged and empty text dropped. Raises ConversationError naming the bad message.
    """
    messages = messages_of(conv)
    if not messages:
        raise ConversationError("the conversation is empty")
    out: list[dict[str, Any]] = []
    system: str | None = None
    for i, message in enumerate(messages):
        where = f"message {i}"
        if not isinstance(message, Mapping):
            raise ConversationError(f"{where} must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise ConversationError(
                f"{where}: unknown role {role!r}; valid roles: {', '.join(ROLES)}"
            )
        if "content" not in message:
            raise ConversationError(f"{where} ({role}) has no content")
        content = message["content"]
        if role == "system":
            if i != 0:
                raise ConversationError(f"{where}: a system message may only open the conversation")
            system = _user_text(content, f"{where} (system)")
            continue
        expected = "user" if len(out) % 2 == 0 else "assistant"
        if role != expected:
            if not out:
                raise ConversationError(
                    f"{where}: the conversation must start with a user message, not an assistant"
                )
            raise ConversationError(
                f"{where}: two {role} messages in a row; user and assistant must alternate"
            )
        if role == "user":
            text = _user_text(content, f"{where} (user)")
            if system is not None:
                text, system = f"{system}\n\n{text}", None
            out.append({"role": "user", "content": text})
        else:
            parts = _parts(content, f"{where} (assistant)")
            if all(p["type"] == "text" for p in parts):
                out.append({"role": "assistant", "content": parts[0]["text"] if parts else ""})
            else:
                out.append({"role": "assistant", "content": parts})
    if system is not None:
        raise ConversationError("the system message must be followed by a user message")
    return out


def _render(tokenizer: Tokenizer, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    special = tokenizer.special_id
    ids, mask = [tokenizer.bos_id], [0]

    def add(new: list[int], bit: int) -> None:
        ids.extend(new)
        mask.extend([bit] * len(new))

    for message in messages:
        if message["role"] == "user":
            user = tokenizer.encode(message["content"])
            add([special("<|user_start|>"), *user, special("<|user_end|>")], 0)
            continue
        add([special("<|assistant_start|>")], 0)
        content = message["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            body = tokenizer.encode(part["text"])
            if part["type"] == "text":
                add(body, 1)
            else:
                start, end, bit = _WRAPPERS[part["type"]]
                add([special(start), *body, special(end)], bit)
        add([special("<|assistant_end|>")], 1)
    return ids, mask


def render_conversation(
    tokenizer: Tokenizer, conv: Sequence[Mapping] | Mapping, max_tokens: int | None = None
) -> tuple[list[int], list[int]]:
    """Token ids of a whole conversation and its loss mask (1 = the model learns to write it).

    With max_tokens the two lists are cropped to that length (the end is dropped).
    """
    ids, mask = _render(tokenizer, normalize_conversation(conv))
    if max_tokens is not None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be ≥ 1, got {max_tokens}")
        ids, mask = ids[:max_tokens], mask[:max_tokens]
    return ids, mask


def render_for_completion(tokenizer: Tokenizer, conv: Sequence[Mapping] | Mapping) -> list[int]:
    """Ids that prime the model to write the last assistant turn, ending at <|assistant_start|>.

    A conversation ending with an assistant message (say, the reference answer) loses it; one
    ending with a user message is primed for the reply to it.
    """
    messages = normalize_conversation(conv)
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    ids, _ = _render(tokenizer, messages)
    return [*ids, tokenizer.special_id("<|assistant_start|>")]


def parse_conversation(tokenizer: Tokenizer, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Invert `render_conversation`: ids of whole turns back to the canonical conversation."""
    names = {tokenizer.special_id(t): t for t in SPECIAL_TOKENS}
    ids = list(ids)
    if not ids or ids[0] != tokenizer.bos_id:
        raise ConversationError("rendered ids must start with <|bos|>")
    messages: list[dict[str, Any]] = []
    i = 1

    def take_until(end: str) -> str:
        nonlocal i
        j = i
        while j < len(ids) and names.get(ids[j]) != end:
            if ids[j] in names:
                raise ConversationError(f"unexpected {names[ids[j]]} at position {j}")
            j += 1
        if j == len(ids):
            raise ConversationError(f"missing {end} after position {i}")
        text, i = tokenizer.decode(ids[i:j]), j + 1
        return text

    while i < len(ids):
        opener, i = names.get(ids[i]), i + 1
        if opener == "<|user_start|>":
            messages.append({"role": "user", "content": take_until("<|user_end|>")})
        elif opener == "<|assistant_start|>":
            parts: list[dict[str, Any]] = []
            while True:
                j = i
                while j < len(ids) and ids[j] not in names:
                    j += 1
                parts.append({"type": "text", "text": tokenizer.decode(ids[i:j])})
                i = j
                if i == len(ids):
                    raise ConversationError("the last assistant turn has no <|assistant_end|>")
                token, i = names[ids[i]], i + 1
                if token == "<|assistant_end|>":
                    break
                if token == "<|python_start|>":
                    parts.append({"type": "python", "text": take_until("<|python_end|>")})
                elif token == "<|output_start|>":
                    parts.append({"type": "python_output", "text": take_until("<|output_end|>")})
                else:
                    raise ConversationError(f"unexpected {token} inside an assistant turn")
            messages.append({"role": "assistant", "content": parts})
        else:
            raise ConversationError(f"expected a turn to start at position {i - 1}, got {opener}")
    return normalize_conversation(messages)


def conversation_html(tokenizer: Tokenizer, ids: Sequence[int], mask: Sequence[int]) -> str:
    """HTML drawing of rendered ids: one box per token, green where the mask is 1."""
    if len(ids) != len(mask):
        raise ValueError(f"ids ({len(ids)}) and mask ({len(mask)}) differ in length")
    specials = {tokenizer.special_id(t) for t in SPECIAL_TOKENS}
    boxes = []
    for token, bit in zip(ids, mask):
        text = tokenizer.decode([token])
        style = "background:#c8f0c8" if bit else "background:#eeeeee;color:#555"
        if token in specials:
            style += ";font-weight:bold"
        shown = html.escape(text).replace("\n", "↵<br>")
        boxes.append(
            f'<span title="id {token}, mask {bit}" style="{style};border:1px solid #fff;'
            f'padding:0 1px;white-space:pre-wrap">{shown}</span>'
        )
    legend = (
        '<div style="font-size:0.85em;margin-bottom:4px">'
        '<span style="background:#c8f0c8">trained on (mask 1)</span> '
        '<span style="background:#eeeeee;color:#555">context only (mask 0)</span></div>'
    )
    body = "".join(boxes)
    return f'<div style="font-family:monospace;line-height:1.8">{legend}{body}</div>'
