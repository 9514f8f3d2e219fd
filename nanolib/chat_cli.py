"""`nanobook chat`: talk to the book's best model at a preset, in the terminal or the browser.

In the terminal each reply is printed token by token as it is sampled and the conversation is
kept until ``/clear``; ``/quit`` (or Ctrl-D) leaves, Ctrl-C stops a reply. ``-p "…"`` answers one
prompt and exits (the reply alone on stdout). ``--web`` serves the chat page instead
(`nanolib.serve`).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from nanolib.chat_models import KINDS

COMMANDS = {"/clear": "forget the conversation", "/quit": "leave", "/help": "this list"}
# How a tool call and its answer show in the terminal: opening and closing marks per event kind.
MARKS = {"python": ("[python: ", "]"), "output": ("[= ", "]")}
# Control characters a model may write (an escape sequence could drive the terminal) are shown
# as \xNN instead; newlines and tabs stay.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c not in (9, 10)}


def add_chat_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `chat` subcommand on nanobook's parser."""
    c = sub.add_parser("chat", help="chat with the book's best model (terminal, or --web)")
    c.add_argument("--preset", default="tiny", help="the preset whose runs hold the model")
    c.add_argument("--model", choices=KINDS, default=None, help="default: rl, else sft, else base")
    c.add_argument("-p", "--prompt", default=None, help="answer this one prompt and exit")
    c.add_argument("--temperature", type=float, default=0.6, help="0 = greedy")
    c.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens")
    c.add_argument("--max-tokens", type=int, default=256, help="most tokens per reply")
    c.add_argument("--seed", type=int, default=None, help="seed of the first reply")
    c.add_argument("--device", default="auto", help="cpu, cuda or auto")
    c.add_argument("--web", action="store_true", help="serve the chat page instead")
    c.add_argument("--host", default="127.0.0.1", help="--web: address to bind")
    c.add_argument("--port", type=int, default=8000, help="--web: port")
    c.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    """Run `nanobook chat` with parsed arguments."""
    from nanolib.chat_models import find_chat_model

    if args.temperature < 0 or args.top_k < 1 or args.max_tokens < 1:
        print(
            "nanobook: error: need --temperature ≥ 0, --top-k ≥ 1, --max-tokens ≥ 1",
            file=sys.stderr,
        )
        return 2
    choice = find_chat_model(args.preset, args.model)  # missing: one line naming `nanobook run`
    from nanolib.chat_models import load_chat_engine
    from nanolib.checkpoint import CheckpointError
    from nanolib.device import pick_device

    try:
        engine = load_chat_engine(choice, pick_device(args.device))
    except (CheckpointError, RuntimeError) as e:
        print(f"nanobook: error: {e}", file=sys.stderr)
        return 2
    if args.web:
        from nanolib.serve import serve

        return serve(engine, choice, host=args.host, port=args.port)
    from nanolib.chat_session import ChatSession

    session = ChatSession(engine, chat=choice.chat)
    knobs = {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_k": args.top_k}
    if args.prompt is not None:
        print(f"nanobook: {choice.describe()}", file=sys.stderr)
        try:
            stream_reply(session, args.prompt, sys.stdout, seed=args.seed, **knobs)
        except ValueError as e:
            print(f"nanobook: error: {e}", file=sys.stderr)
            return 2
        return 0
    return chat_loop(session, choice.describe(), sys.stdin, sys.stdout, seed=args.seed, **knobs)


def stream_reply(session: object, text: str, out: TextIO, **knobs: object) -> dict:
    """Print a reply as it is sampled (tool calls in brackets); its `end` info."""
    info: dict = {}
    kind = "text"
    for event in session.reply(text, **knobs):
        if event.kind != kind:  # leaving or entering a tool call
            out.write(MARKS.get(kind, ("", ""))[1] + MARKS.get(event.kind, ("", ""))[0])
            kind = event.kind
        if event.kind == "end":
            info = event.info or {}
        else:
            out.write(event.text.translate(_CONTROLS))
        out.flush()
    out.write("\n")
    out.flush()
    return info


def chat_loop(
    session: object, banner: str, inp: TextIO, out: TextIO, seed: int | None = None, **knobs: object
) -> int:
    """Read messages until /quit or end of input; stream each reply."""
    tty = inp.isatty()
    out.write(f"nanobook: {banner}\n{_help()}\n")
    while True:
        if tty:
            out.write("\nyou> ")
        out.flush()
        try:
            line = inp.readline()
        except KeyboardInterrupt:
            out.write("\n")
            return 0
        if not line:  # end of input (Ctrl-D, or a closed pipe)
            return 0
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command = text.split()[0]
            if command in ("/quit", "/exit"):
                return 0
            if command == "/clear":
                session.clear()
                out.write("(conversation cleared)\n")
            else:
                out.write(
                    f"{'' if command == '/help' else f'unknown command {command}; '}{_help()}\n"
                )
            continue
        out.write("model> ")
        try:
            stream_reply(session, text, out, seed=seed, **knobs)
        except ValueError as e:
            out.write(f"\nnanobook: {e}\n")
        except KeyboardInterrupt as e:
            if type(e) is not KeyboardInterrupt:  # SIGTERM/SIGHUP (nanolib.procs): leave
                raise
            out.write(" [stopped]\n")
        if seed is not None:
            seed += 1


def _help() -> str:
    return "commands: " + ", ".join(f"{c} ({what})" for c, what in COMMANDS.items())
