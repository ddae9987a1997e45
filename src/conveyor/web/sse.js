// A small text/event-stream reader over fetch (EventSource cannot send the Authorization
// header, and a key must never travel in a URL). It reconnects after the server's `retry:`
// delay and sends Last-Event-ID, so nothing is missed across a reconnect.

import { authHeaders, needKey } from "./auth.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Open a stream. Callbacks: onOpen(), onEvent({type, data, id}), onDown(status) (an error or
 * a refused answer; it retries), and stopOnEnd() (the server ended the stream: true stops,
 * false reconnects). Returns {close}.
 */
export function openStream(url, { onOpen, onEvent, onDown, stopOnEnd } = {}) {
  const abort = new AbortController();
  let closed = false;
  let lastId = null;
  let retry = 2000;

  function parse(lines, state) {
    for (const raw of lines) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") {
        if (state.data.length) {
          if (state.id !== null) lastId = state.id;
          onEvent?.({ type: state.type || "message", data: state.data.join("\n"), id: lastId });
        }
        state.data = [];
        state.type = "";
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") state.data.push(value);
      else if (field === "event") state.type = value;
      else if (field === "id" && !value.includes("\0")) state.id = value;
      else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
    }
  }

  async function once() {
    const headers = authHeaders({ Accept: "text/event-stream", "Cache-Control": "no-cache" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await fetch(url, { headers, cache: "no-store", signal: abort.signal });
    if (!response.ok) {
      if (response.status === 401) needKey("Your key is no longer valid.");
      return response.status;
    }
    onOpen?.();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const state = { data: [], type: "", id: null };
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return 200;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop();
      parse(lines, state);
    }
  }

  (async () => {
    while (!closed) {
      let status = 0;
      try {
        status = await once();
      } catch {
        if (closed) return;
      }
      if (closed) return;
      if (status === 200 && stopOnEnd && stopOnEnd()) return;
      if (status === 401 || status === 404 || status === 410) {
        onDown?.(status);
        return;
      }
      if (status !== 200) onDown?.(status);
      await sleep(retry);
    }
  })();
  return {
    close() {
      closed = true;
      abort.abort();
    },
  };
}
