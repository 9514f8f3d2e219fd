"""`nanobook chat --web`: requests checked, replies streamed, hostile input contained — in-process,
over HTTP against the real command, and in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from nanolib.chat_models import ChatModelChoice
from nanolib.engine import Engine
from nanolib.serve import PAGE_DIR, Limits, build_app, serve
from nanolib.tokenizer import Tokenizer

from helpers import Typist, make_chat_runs

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
# What the scripted model writes: HTML that would run if it were inserted as HTML, and a tool call.
MODEL_HTML = '<img src=x onerror="window.__pwned=3"><b>bold</b>'


@pytest.fixture(scope="module")
def tok(tokenizer_dir) -> Tokenizer:
    return Tokenizer.load(tokenizer_dir)


def hostile_engine(tok: Tokenizer) -> Engine:
    """An engine whose model writes MODEL_HTML, calls the calculator on 1+2, then stops."""
    sp = tok.special_id
    script = [
        *tok.encode(MODEL_HTML),
        sp("<|python_start|>"), *tok.encode("1+2"), sp("<|python_end|>"),
        sp("<|output_start|>"), *tok.encode("3"), sp("<|output_end|>"),  # forced by the engine
        *tok.encode(" done"), sp("<|assistant_end|>"),
    ]  # fmt: skip
    return Engine(Typist(tok.vocab_size, script, seq_len=256), tok)


CHOICE = ChatModelChoice("sft", Path("sft"), Path("tokenizer"), "smoke")


@pytest.fixture(scope="module")
def client(tok) -> Iterator[TestClient]:
    with TestClient(build_app(hostile_engine(tok), CHOICE), base_url="http://127.0.0.1") as c:
        yield c


def events_of(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def ask(content: str = "hi", **fields) -> dict:
    return {"messages": [{"role": "user", "content": content}], **fields}


def test_health_says_which_model_is_loaded(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "sft" and health["chat_template"]
    assert health["busy"] is False and health["pending"] == 0 and health["seq_len"] == 256
    assert health["limits"]["max_messages"] == Limits().max_messages


def test_the_page_is_local_and_inserts_text_only(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for name in ("chat.js", "chat.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/..%2Fserve.py").status_code == 404
    script = (PAGE_DIR / "chat.js").read_text()
    for html_sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert html_sink not in script
    sources = page.text + script + (PAGE_DIR / "chat.css").read_text()
    assert "http://" not in sources and "https://" not in sources and "//cdn" not in sources


def test_a_reply_streams_as_server_sent_events(client):
    response = client.post("/chat", json=ask(HOSTILE, temperature=0))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    assert "".join(e["text"] for e in events if e["kind"] == "text") == MODEL_HTML + " done"
    tools = [("".join(e["text"] for e in events if e["kind"] == k)) for k in ("python", "output")]
    assert tools == ["1+2", "3"]
    assert events[-1]["kind"] == "end" and events[-1]["stopped"] is True
    # the conversation goes back with the tool call as parts
    parts = [{"type": "text", "text": MODEL_HTML}, {"type": "python", "text": "1+2"}]
    parts += [{"type": "python_output", "text": "3"}, {"type": "text", "text": " done"}]
    follow = {"messages": [*ask(HOSTILE)["messages"], {"role": "assistant", "content": parts}]}
    follow["messages"].append({"role": "user", "content": "and?"})
    assert client.post("/chat", json=follow).status_code == 200


TOO_MANY = [{"role": r, "content": "x"} for _ in range(33) for r in ("user", "assistant")][:-1]
BAD_REQUESTS = [
    ({"content-type": "text/plain"}, b"hi", 415, "Content-Type: application/json"),
    ({}, b"{bad json", 400, "not valid JSON"),
    ({}, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "NaN"),
    ({}, b"[1, 2]", 400, "must be a JSON object"),
    ({}, json.dumps({**ask(), "stream": True}).encode(), 400, "unknown field(s) ['stream']"),
    ({}, json.dumps({"messages": []}).encode(), 400, "non-empty list"),
    ({}, json.dumps({"messages": TOO_MANY}).encode(), 400, "65 messages; at most 64"),
    ({}, json.dumps(ask("x" * 4001)).encode(), 400, "4,001 characters long; at most 4,000"),
    ({}, json.dumps({"messages": [{"role": "root", "content": "x"}]}).encode(), 400, "role"),
    ({}, json.dumps({"messages": [{"role": "user"}]}).encode(), 400, "has no content"),
    (
        {},
        json.dumps({"messages": [{"role": "user", "content": "a"}] * 2}).encode(),
        400,
        "two user messages in a row",
    ),
    (
        {},
        json.dumps(
            {"messages": [*ask()["messages"], {"role": "assistant", "content": "x"}]}
        ).encode(),
        400,
        "the last message must be the user's",
    ),
    ({}, json.dumps(ask("   ")).encode(), 400, "the last message is empty"),
    ({}, json.dumps(ask(temperature=2.5)).encode(), 400, "temperature must be in [0, 2]"),
    ({}, json.dumps(ask(temperature="hot")).encode(), 400, "temperature must be a number"),
    ({}, json.dumps(ask(top_k=0)).encode(), 400, "top_k must be in [1, "),
    ({}, json.dumps(ask(top_k=True)).encode(), 400, "top_k must be a whole number"),
    ({}, json.dumps(ask(max_tokens=5000)).encode(), 400, "max_tokens must be in [1, 1024]"),
    ({}, json.dumps(ask(max_tokens=2.5)).encode(), 400, "max_tokens must be a whole number"),
    ({}, json.dumps(ask(seed=-1)).encode(), 400, "seed must be in"),
    ({}, json.dumps(ask("word " * 700)).encode(), 400, "a message may be at most"),
    ({}, b"[" * 100_000, 400, "not valid JSON"),  # deeply nested
    ({}, b" " * (300 * 1024), 413, "larger than 262,144 bytes"),
]


@pytest.mark.parametrize("headers, body, status, message", BAD_REQUESTS)
def test_a_bad_request_is_refused_with_a_message(client, headers, body, status, message):
    headers = {"content-type": "application/json", **headers}
    response = client.post("/chat", content=body, headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert client.get("/health").json()["pending"] == 0  # nothing was started


def test_only_loopback_hosts_and_only_post(client):
    assert client.get("/health", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/chat").status_code == 405
    assert client.get("/nothing").status_code == 404


def test_a_port_in_use_is_one_line(tok, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert serve(hostile_engine(tok), CHOICE, port=port) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0] and "--port" in err[0]


# ------------------------------------------------------------------------------------------------
# end to end: the real command on a smoke checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def web_server(tmp_path_factory, tokenizer_dir) -> Iterator[str]:
    """`nanobook chat --web` on a random smoke base model; stopped with Ctrl-C afterwards."""
    runs = tmp_path_factory.mktemp("web") / "runs"
    make_chat_runs(runs, tokenizer_dir, seq_len=128)
    env = dict(os.environ, NANOBOOK_RUNS=str(runs), NANOBOOK_ROOT=str(ROOT), PYTHONPATH=str(ROOT))
    port = free_port()
    log = tmp_path_factory.mktemp("web_log") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nanolib.cli", "chat", "--preset", "smoke", "--web",
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, f"the server exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"no /health after 180 s: {log.read_text()}"
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = log.read_text()
    assert "Traceback" not in text, text


async def _burst(url: str, n: int) -> list[tuple]:
    async def one(c: httpx.AsyncClient, i: int) -> tuple:
        r = await c.post(f"{url}/chat", json=ask(f"{HOSTILE} {i}", max_tokens=4))
        if r.status_code == 200:
            return 200, events_of(r.text)[-1]["kind"]
        return r.status_code, r.json()["error"].split(":")[0]

    async with httpx.AsyncClient(timeout=600) as c:
        return await asyncio.gather(*[one(c, i) for i in range(n)])


@pytest.mark.slow
def test_hostile_traffic_leaves_the_server_serving(web_server):
    url = web_server
    assert httpx.post(f"{url}/chat", content=b"x" * (2 << 20)).status_code in (413, 415)
    big = httpx.post(
        f"{url}/chat", content=b"{" + b" " * (2 << 20), headers={"content-type": "application/json"}
    )
    assert big.status_code == 413
    assert (
        httpx.post(
            f"{url}/chat", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    # 100 at once: each is served in turn (a complete stream) or told at once that it is busy
    outcomes = Counter(asyncio.run(_burst(url, 100)))
    assert set(outcomes) <= {(200, "end"), (503, "busy")}, outcomes
    assert outcomes[(200, "end")] >= Limits().max_waiting + 1, outcomes
    # a client that goes away mid-reply frees the model
    with httpx.stream("POST", f"{url}/chat", json=ask("tell me", max_tokens=100), timeout=60) as r:
        next(r.iter_lines())
    deadline = time.monotonic() + 30
    while (health := httpx.get(f"{url}/health").json())["pending"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health["pending"] == 0 and health["busy"] is False
    assert (
        events_of(httpx.post(f"{url}/chat", json=ask("still there?"), timeout=60).text)[-1]["kind"]
        == "end"
    )


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI must run the browser check")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page that records every request, request body to /chat, and JavaScript error."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page()
        self.urls: list[str] = []
        self.chat_bodies: list[dict] = []
        self.errors: list[str] = []
        self.page.on("request", self._request)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _request(self, request) -> None:
        self.urls.append(request.url)
        if request.url.endswith("/chat"):
            self.chat_bodies.append(json.loads(request.post_data))

    def send(self, text: str, done: int) -> None:
        """Type a message, press Enter, and wait until `done` replies have finished."""
        self.page.fill("#message", text)
        self.page.press("#message", "Enter")
        self.page.wait_for_selector(
            f'.turn.assistant[data-done="1"] >> nth={done - 1}', timeout=120_000
        )

    def check_clean(self, url: str) -> None:
        assert self.page.evaluate("window.__pwned") is None, "hostile text was executed"
        assert self.page.locator("script").count() == 1  # chat.js only
        assert self.page.locator("#transcript img, #transcript b").count() == 0
        assert all(u.startswith(url) for u in self.urls), self.urls
        assert not self.errors, self.errors


@pytest.mark.slow
def test_the_page_chats_in_chromium(browser, web_server):
    url = web_server
    watched = Watched(browser)
    page = watched.page
    page.goto(url)
    page.wait_for_function("document.querySelector('#model').textContent.includes('base model')")
    watched.send(HOSTILE, done=1)
    assert page.locator(".turn.user").first.text_content() == "you" + HOSTILE
    first = page.locator(".turn.assistant").first.text_content()
    assert first.startswith("model") and " tokens in " in first  # a streamed reply and its stats
    watched.send("And then?", done=2)
    assert [len(b["messages"]) for b in watched.chat_bodies] == [1, 3]  # the conversation is kept
    page.click("#clear")
    assert page.locator(".turn").count() == 0
    watched.check_clean(url)


def _serve_in_thread(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    return server, thread


@pytest.mark.slow
def test_model_output_is_shown_as_text_in_chromium(browser, tok):
    port = free_port()
    server, thread = _serve_in_thread(build_app(hostile_engine(tok), CHOICE), port)
    url = f"http://127.0.0.1:{port}"
    try:
        watched = Watched(browser)
        watched.page.goto(url)
        watched.send("Say something bold", done=1)
        reply = watched.page.locator(".turn.assistant").first
        assert MODEL_HTML in reply.text_content()
        assert reply.locator(".python").text_content() == "1+2"
        assert reply.locator(".output").text_content() == "3"
        watched.send("x" * 5000, done=1)  # refused by the server: an error turn, as text
        watched.page.wait_for_selector(".turn.error")
        assert "at most 4,000" in watched.page.locator(".turn.error").text_content()
        watched.check_clean(url)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
