"""A conversation with a model: prompts cropped to its context, replies streamed as text events.

`ChatSession.reply(text)` renders the conversation so far plus the new user message — with the
chat template for a chat model, as plain text for a base model — runs `Engine.stream`, and
yields `Event`s as tokens are sampled: ``text`` (the model's words), ``python`` (code it sends to
a tool), ``output`` (the tool's answer, forced by the engine) and a last ``end`` carrying what
happened. Text is decoded incrementally, so a character split across tokens is never shown
half-made. When the conversation plus the reply would not fit in the model's ``seq_len``, the
oldest turns are dropped first, then the reply is shortened; a message that cannot fit at all is
a `ValueError` saying how long it may be. The reply (whole, or as far as it got if the caller
stopped reading) joins the conversation.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nanolib.chat import normalize_conversation, render_for_completion
from nanolib.engine import Column, Engine

# The special tokens that open and close what a tool reads and writes, as event kinds.
_OPEN = {"<|python_start|>": "python", "<|output_start|>": "output"}
_CLOSE = ("<|python_end|>", "<|output_end|>")
PART_OF_KIND = {"text": "text", "python": "python", "output": "python_output"}


@dataclass(frozen=True)
class Event:
    """A piece of a reply as it is sampled; ``info`` only on the last one (kind ``end``)."""

    kind: str  # "text" | "python" | "output" | "end"
    text: str = ""
    info: dict[str, Any] | None = None


@dataclass
class _Parts:
    """The reply so far as message parts, and the incremental decoder of the current part."""

    parts: list[dict[str, str]] = field(default_factory=list)
    kind: str = "text"
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def add(self, kind: str, text: str) -> None:
        if not text:
            return
        part = PART_OF_KIND[kind]
        after = self.parts[-1]["type"] if self.parts else None
        if part == "python_output" and after not in ("python", "python_output"):
            part = "text"  # an output the model wrote itself, not after a call: plain text
        if self.parts and self.parts[-1]["type"] == part:
            self.parts[-1]["text"] += text
        else:
            self.parts.append({"type": part, "text": text})

    def switch(self, kind: str) -> tuple[str, str]:
        """Close the current part and start one of `kind`: (closed kind, its undecoded tail)."""
        closed, tail = self.kind, self.decoder.decode(b"", final=True)
        self.decoder.reset()
        self.kind = kind
        return closed, tail


class ChatSession:
    """A conversation with one model; `reply` streams the model's next turn (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        chat: bool = True,
        messages: Sequence[Mapping] | None = None,
    ) -> None:
        if engine.tokenizer is None:
            raise ValueError("a chat needs an engine with a tokenizer")
        self.engine, self.tokenizer, self.chat = engine, engine.tokenizer, chat
        self.messages: list[dict[str, Any]] = normalize_conversation(messages) if messages else []
        self.seq_len = engine.config.seq_len
        self.turns = 0  # replies so far: the default seed of the next one

    def clear(self) -> None:
        """Forget the conversation."""
        self.messages = []

    def render(self, messages: list[dict[str, Any]]) -> list[int]:
        """Prompt ids for a conversation that ends with a user message."""
        if self.chat:
            return render_for_completion(self.tokenizer, messages)
        # A base model continues a document: the turns as one text after <|bos|>, a reply
        # continuing its user message and each new user message on a new line.
        text = "".join(
            ("\n" if m["role"] == "user" and i else "") + _plain_message(m)
            for i, m in enumerate(messages)
        )
        return self.tokenizer.encode(text, prepend=self.tokenizer.bos_id)

    def prompt(self, text: str, max_tokens: int) -> tuple[list[int], int, int]:
        """(prompt ids, reply tokens that fit, old turns dropped) for a new user message."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be ≥ 1, got {max_tokens}")
        history = list(self.messages)
        dropped = 0
        while True:
            ids = self.render(normalize_conversation([*history, {"role": "user", "content": text}]))
            if len(ids) + max_tokens <= self.seq_len or not history:
                break
            history, dropped = history[2:], dropped + 1  # the oldest user turn and its reply
        room = self.seq_len - len(ids)
        if room < 1:
            frame = len(self.render([{"role": "user", "content": ""}]))
            raise ValueError(
                f"the message is {len(self.tokenizer.encode(text))} tokens long; this model "
                f"reads {self.seq_len} tokens, so a message may be at most "
                f"{self.seq_len - frame - 1} tokens"
            )
        return ids, min(max_tokens, room), dropped

    def reply(
        self,
        text: str,
        max_tokens: int = 256,
        temperature: float = 0.6,
        top_k: int | None = 50,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Iterator[Event]:
        """Stream the model's reply to a user message; the turn joins the conversation."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the message is empty")
        ids, max_tokens, dropped = self.prompt(text, max_tokens)
        seed = self.turns if seed is None else seed
        self.turns += 1
        stops = self.engine.default_stop_tokens if self.chat else (self.tokenizer.bos_id,)
        columns = self.engine.stream(
            ids, 1, max_tokens, temperature, top_k, top_p, seed=seed, stop_tokens=stops
        )
        return self._events(text, ids, columns, set(stops), max_tokens, dropped)

    def _events(
        self,
        text: str,
        ids: list[int],
        columns: Iterator[Column],
        stops: set[int],
        max_tokens: int,
        dropped: int,
    ) -> Iterator[Event]:
        specials = {self.tokenizer.special_id(s): s for s in (*_OPEN, *_CLOSE)}
        reply, n, stopped, t0 = _Parts(), 0, False, time.perf_counter()
        try:
            for column in columns:
                token, n = column.tokens[0], n + 1
                if column.masks[0] == 1 and token in stops:
                    stopped = True
                    break
                name = specials.get(token)
                if name is None:
                    piece = reply.decoder.decode(self.tokenizer.id_to_bytes(token))
                    yield from _piece(reply, reply.kind, piece)
                else:
                    yield from _piece(reply, *reply.switch(_OPEN.get(name, "text")))
            yield from _piece(reply, *reply.switch("text"))
            yield Event(
                "end",
                info={
                    "tokens": n,
                    "prompt_tokens": len(ids),
                    "seconds": round(time.perf_counter() - t0, 3),
                    "stopped": stopped,
                    "max_tokens": max_tokens,
                    "dropped_turns": dropped,
                },
            )
        finally:  # also when the reader stops early: the conversation keeps what was said
            self.messages = normalize_conversation(
                [
                    *self.messages,
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": reply.parts},
                ]
            )


def _piece(reply: _Parts, kind: str, text: str) -> Iterator[Event]:
    """Record a decoded piece in the reply and yield it as an event (nothing when empty)."""
    if text:
        reply.add(kind, text)
        yield Event(kind, text)


def _plain_message(message: Mapping[str, Any]) -> str:
    """A message's content as plain text (tool calls and outputs included as written)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content)
