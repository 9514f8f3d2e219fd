// The nanobook chat page. Everything the model or the user wrote is inserted with textContent,
// never as HTML, so a "<script>" in a message is shown as those characters and never runs.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const transcript = $("transcript");
  const box = $("message");
  const sendButton = $("send");
  const PART = { text: "text", python: "python", output: "python_output" };
  let messages = []; // the conversation so far, sent whole with each request
  let busy = false;

  function turn(kind, who) {
    const div = document.createElement("div");
    div.className = "turn " + kind;
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = who;
    div.appendChild(label);
    transcript.appendChild(div);
    div.scrollIntoView({ block: "end" });
    return div;
  }

  // Pieces of one kind in a row share a span: text, a tool call (python) or its output.
  function append(div, kind, text) {
    let last = div.lastChild;
    if (!last || last.dataset.kind !== kind) {
      last = document.createElement("span");
      last.dataset.kind = kind;
      if (kind !== "text") last.className = kind;
      div.appendChild(last);
    }
    last.textContent += text;
  }

  // The reply as message parts, merged as the server merges them (nanolib.chat_session).
  function addPart(parts, kind, text) {
    let type = PART[kind] || "text";
    const last = parts[parts.length - 1];
    const after = last ? last.type : null;
    if (type === "python_output" && after !== "python" && after !== "python_output") type = "text";
    if (last && last.type === type) last.text += text;
    else parts.push({ type, text });
  }

  function note(div, text) {
    const span = document.createElement("span");
    span.className = "stats";
    span.textContent = text;
    div.appendChild(span);
  }

  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of block.split("\n")) {
          if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
        }
      }
    }
  }

  function knob(id) {
    const value = $(id).valueAsNumber;
    return Number.isFinite(value) ? value : null; // the server says what is wrong with null
  }

  async function send(event) {
    event.preventDefault();
    const text = box.value;
    if (!text.trim() || busy) return;
    busy = true;
    sendButton.disabled = true;
    append(turn("user", "you"), "text", text);
    box.value = "";
    const pending = [...messages, { role: "user", content: text }];
    const reply = turn("assistant", "model");
    const parts = [];
    try {
      const response = await fetch("/chat", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          messages: pending,
          temperature: knob("temperature"),
          top_k: knob("top_k"),
          max_tokens: knob("max_tokens"),
        }),
      });
      if (!response.ok) {
        let message = `${response.status} ${response.statusText}`;
        try {
          message = (await response.json()).error || message;
        } catch (_) {
          // not JSON: keep the status line
        }
        throw new Error(message);
      }
      let end = null;
      await readEvents(response, (e) => {
        if (e.kind === "end") end = e;
        else if (e.kind === "error") throw new Error(e.message);
        else {
          append(reply, e.kind, e.text);
          addPart(parts, e.kind, e.text);
        }
        reply.scrollIntoView({ block: "end" });
      });
      if (!end) throw new Error("the reply was cut off");
      messages = [...pending, { role: "assistant", content: parts }];
      let stats = `${end.tokens} tokens in ${end.seconds} s`;
      if (!end.stopped) stats += ` (stopped at the ${end.max_tokens}-token limit)`;
      if (end.dropped_turns) stats += `; the ${end.dropped_turns} oldest turn(s) no longer fit and were left out`;
      note(reply, stats);
      reply.dataset.done = "1";
    } catch (err) {
      append(turn("error", "error"), "text", String((err && err.message) || err));
    } finally {
      busy = false;
      sendButton.disabled = false;
      box.focus();
    }
  }

  $("composer").addEventListener("submit", send);
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("clear").addEventListener("click", () => {
    messages = [];
    transcript.replaceChildren();
    box.focus();
  });
  fetch("/health")
    .then((r) => r.json())
    .then((h) => {
      $("model").textContent = h.description;
      $("top_k").max = String(h.vocab_size);
    })
    .catch(() => {
      $("model").textContent = "the server does not answer";
    });
})();
