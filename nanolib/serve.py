"""`nanobook chat --web`: a local web chat, an ASGI app (Starlette, served by uvicorn).

Routes: ``GET /`` the page and ``/static/…`` its script and style (shipped in
``nanolib/templates/chat``, nothing from a CDN); ``GET /health`` says which model is loaded and
whether it is busy; ``POST /chat`` takes ``{"messages": […], "temperature", "top_k",
"max_tokens", "seed"}`` and answers a stream of server-sent events, one JSON object per
``data:`` line: ``{"kind": "text" | "python" | "output", "text": …}`` as tokens are sampled, then
``{"kind": "end", …}`` (or ``{"kind": "error", "message": …}``).

What keeps it safe to leave running on a laptop:

- it binds 127.0.0.1 unless told otherwise, and then answers only requests whose Host header
  names the loopback (a web page elsewhere cannot reach it through DNS rebinding);
- every request is checked against `Limits` before any work: body size (413), content type
  (415), JSON, message count, roles and length, temperature, top-k, max_tokens and seed ranges
  (400), each with a one-line message; the prompt must fit the model's context (400);
- one generation runs at a time (an asyncio lock; the model runs on one worker thread), others
  wait their turn; past ``max_waiting`` waiting requests a new one gets 503 at once; a client
  that goes away stops its generation at the next token;
- the page inserts model output as text (``textContent``), never as HTML, and a Content Security
  Policy allows only the page's own script and style.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanolib.chat import ROLES, ConversationError, normalize_conversation
from nanolib.chat_models import ChatModelChoice
from nanolib.chat_session import ChatSession, Event
from nanolib.engine import Engine

PAGE_DIR = Path(__file__).resolve().parent / "templates" / "chat"
STATIC = {"chat.js": "text/javascript", "chat.css": "text/css"}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True)
class Limits:
    """What a request may ask for; anything outside is answered 4xx before any work."""

    max_body_bytes: int = 256 * 1024
    max_messages: int = 64
    max_message_chars: int = 4000
    max_tokens: int = 1024
    max_temperature: float = 2.0
    max_waiting: int = 32  # requests waiting behind the running one; one more gets 503


class RequestError(ValueError):
    """A request the server refuses; `status` is its HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _number(body: dict, key: str, default: Any, lo: float, hi: float, integer: bool) -> Any:
    value = body.get(key, default)
    if value is None and key == "seed":
        return None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        what = "a whole number" if integer else "a number"
        raise RequestError(f"{key} must be {what} in [{lo:g}, {hi:g}], got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(f"{key} must be in [{lo:g}, {hi:g}], got {value!r}")
    return value


def parse_chat_request(raw: bytes, limits: Limits, vocab_size: int) -> dict[str, Any]:
    """The checked fields of a POST /chat body; RequestError (400) naming what is wrong."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise RequestError(f"the body is not valid JSON ({str(e)[:120]})") from None
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    known = {"messages", "temperature", "top_k", "max_tokens", "seed"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; valid fields: {sorted(known)}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects")
    if len(messages) > limits.max_messages:
        raise RequestError(f"{len(messages)} messages; at most {limits.max_messages} are allowed")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RequestError(f"message {i} must be an object with a role in {list(ROLES)}")
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"text": content}]
        chars = sum(
            len(p["text"]) for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
        if chars > limits.max_message_chars:
            raise RequestError(
                f"message {i} is {chars:,} characters long; at most "
                f"{limits.max_message_chars:,} are allowed"
            )
    try:
        messages = normalize_conversation(messages)
    except ConversationError as e:
        raise RequestError(str(e)) from None
    if messages[-1]["role"] != "user":
        raise RequestError("the last message must be the user's (the one to answer)")
    if not messages[-1]["content"].strip():
        raise RequestError("the last message is empty")
    return {
        "messages": messages,
        "temperature": _number(body, "temperature", 0.6, 0, limits.max_temperature, False),
        "top_k": _number(body, "top_k", 50, 1, vocab_size, True),
        "max_tokens": _number(body, "max_tokens", 256, 1, limits.max_tokens, True),
        "seed": _number(body, "seed", None, 0, 2**63 - 1, True),
    }


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) one longer than `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestError(f"the body is larger than {limit:,} bytes", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(f"the body is larger than {limit:,} bytes", 413)
    return bytes(body)


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ChatServer:
    """The model behind the routes: one generation at a time on one worker thread."""

    def __init__(self, engine: Engine, choice: ChatModelChoice, limits: Limits | None = None):
        self.engine, self.choice, self.limits = engine, choice, limits or Limits()
        self.lock = asyncio.Lock()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanobook-chat")
        self.pending = 0  # accepted requests not finished: the running one and those waiting
        self.served = 0

    def health(self) -> dict[str, Any]:
        """What /health reports."""
        config = self.engine.config
        return {
            "status": "ok",
            "model": self.choice.kind,
            "preset": self.choice.preset,
            "chat_template": self.choice.chat,
            "description": self.choice.describe(),
            "n_layer": config.n_layer,
            "d_model": config.d_model,
            "seq_len": config.seq_len,
            "vocab_size": config.vocab_size,
            "device": str(self.engine.device),
            "busy": self.lock.locked(),
            "pending": self.pending,
            "served": self.served,
            "limits": asdict(self.limits),
        }

    async def chat(self, request: Request) -> Response:
        """POST /chat: validate, then stream the reply as server-sent events."""
        try:
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise RequestError("send the body as JSON (Content-Type: application/json)", 415)
            raw = await read_body(request, self.limits.max_body_bytes)
            req = parse_chat_request(raw, self.limits, self.engine.config.vocab_size)
            session = ChatSession(self.engine, self.choice.chat, req["messages"][:-1])
            seed = self.served if req["seed"] is None else req["seed"]
            try:
                reply = session.reply(
                    req["messages"][-1]["content"],
                    max_tokens=req["max_tokens"],
                    temperature=req["temperature"],
                    top_k=req["top_k"],
                    seed=seed,
                )
            except ValueError as e:  # the prompt does not fit the model's context
                raise RequestError(str(e)) from None
            if self.pending > self.limits.max_waiting:  # one running, max_waiting waiting
                raise RequestError(f"busy: {self.pending} requests before yours; try later", 503)
        except RequestError as e:
            headers = {"retry-after": "5"} if e.status == 503 else None
            return JSONResponse({"error": str(e)}, status_code=e.status, headers=headers)
        self.pending += 1  # counted now, so a burst of requests sees the queue it makes
        self.served += 1
        finish = _Once(lambda: self._finish(reply))
        stream = self._stream(reply, finish)
        weakref.finalize(stream, finish)  # a stream that never starts is finished when dropped
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    def _finish(self, reply: Iterator[Event]) -> None:
        self.pending -= 1
        # After any step still running on the worker: the reply records its turn and stops.
        self.worker.submit(reply.close)

    async def _stream(self, reply: Iterator[Event], finish: _Once) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        try:
            async with self.lock:
                while True:
                    try:
                        event = await loop.run_in_executor(self.worker, next, reply, None)
                    except Exception as e:  # a failure mid-reply ends this stream, not the server
                        yield _sse({"kind": "error", "message": f"{type(e).__name__}: {e}"})
                        return
                    if event is None:
                        return
                    yield _sse({"kind": event.kind, "text": event.text, **(event.info or {})})
        finally:  # also when the client went away (the stream is cancelled at its next await)
            finish()

    def app(self) -> Starlette:
        """The ASGI application."""

        async def page(request: Request) -> Response:
            return FileResponse(PAGE_DIR / "index.html", media_type="text/html")

        async def static(request: Request) -> Response:
            name = request.path_params["name"]
            if name not in STATIC:
                return JSONResponse({"error": f"no file {name!r}"}, status_code=404)
            return FileResponse(PAGE_DIR / name, media_type=STATIC[name])

        async def health(request: Request) -> Response:
            return JSONResponse(self.health())

        routes = [
            Route("/", page),
            Route("/static/{name}", static),
            Route("/health", health),
            Route("/chat", self.chat, methods=["POST"]),
        ]
        return Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders)])


class _Once:
    """A callable that runs its function the first time it is called, and never again."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn: Callable[[], None] | None = fn

    def __call__(self) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:
            fn()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def build_app(
    engine: Engine, choice: ChatModelChoice, limits: Limits | None = None, host: str = "127.0.0.1"
) -> ASGIApp:
    """The chat app; on a loopback host it answers only requests addressed to the loopback."""
    app: ASGIApp = ChatServer(engine, choice, limits).app()
    if host in ("127.0.0.1", "localhost", "::1"):
        app = TrustedHostMiddleware(app, allowed_hosts=LOOPBACK_HOSTS)
    return app


def serve(
    engine: Engine, choice: ChatModelChoice, host: str = "127.0.0.1", port: int = 8000
) -> int:
    """Serve the chat until Ctrl-C; 0 when stopped, 2 when the address cannot be used."""
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    try:  # a clear line now rather than uvicorn's error after the model is announced
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        print(
            f"nanobook: error: cannot listen on {shown}:{port} ({e.strerror or e}); "
            "pick another --port (or --host)",
            file=sys.stderr,
        )
        return 2
    print(f"nanobook: {choice.describe()}")
    print(f"nanobook: chat at http://{shown}:{port}/ — Ctrl-C to stop", flush=True)
    uvicorn.run(
        build_app(engine, choice, host=host),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    return 0
