// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the
// console reads the stream itself and resumes with Last-Event-ID after any interruption.

import { ApiError, NETWORK_MESSAGE, apiUrl, authHeaders, connectionChanged, errorOf } from "./api.js";
import { sleep } from "./dom.js";

// Incremental parser of the text/event-stream format (lines split anywhere between chunks).
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.resetEvent();
  }

  resetEvent() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  // Feed decoded text; returns the events it completed ({event, data, id}).
  push(text) {
    const buf = this.buffer + text;
    const events = [];
    let pos = 0;
    let cr = buf.indexOf("\r");
    for (;;) {
      if (cr !== -1 && cr < pos) cr = buf.indexOf("\r", pos);
      const lf = buf.indexOf("\n", pos);
      let end;
      let next;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        if (cr + 1 === buf.length) break; // a CR LF may be split between chunks
        end = cr;
        next = buf[cr + 1] === "\n" ? cr + 2 : cr + 1;
      } else if (lf !== -1) {
        end = lf;
        next = lf + 1;
      } else {
        break;
      }
      const event = this.line(buf.slice(pos, end));
      if (event) events.push(event);
      pos = next;
    }
    this.buffer = buf.slice(pos);
    return events;
  }

  line(line) {
    if (line === "") {
      if (!this.data.length) {
        this.resetEvent();
        return null;
      }
      const event = { event: this.event || "message", data: this.data.join("\n"), id: this.id };
      this.resetEvent();
      return event;
    }
    if (line.startsWith(":")) return null; // comment (heartbeat)
    const colon = line.indexOf(":");
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") this.event = value;
    else if (name === "data") this.data.push(value);
    else if (name === "id" && !value.includes("\0")) this.id = value;
    return null;
  }
}

const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);
const MAX_BACKOFF_MS = 5000;

// Follow an SSE endpoint of the API until it ends, reconnecting after a lost connection or a
// retryable in-band error with Last-Event-ID = the id of the last event received.
//
// handlers: onEvent(name, data, id) for every data event; onEnd(data) on `event: end`;
// onFatal(ApiError) when it cannot go on; onState(state, detail) with "connecting", "live",
// "reconnecting" (detail: the reason), "ended", "failed"; beforeReconnect() may return a new
// last event id (the metrics chart refills its history first and resumes after it).
export function follow(path, params, handlers, lastEventId = null) {
  const control = { stopped: false, abort: null, lastEventId };
  const state = (s, detail) => handlers.onState?.(s, detail);

  async function run() {
    let attempt = 0;
    while (!control.stopped) {
      if (attempt > 0) {
        await sleep(Math.min(MAX_BACKOFF_MS, 250 * 2 ** attempt), control.signal);
        if (control.stopped) return;
        if (handlers.beforeReconnect) {
          try {
            const resumeAt = await handlers.beforeReconnect();
            if (resumeAt !== undefined) control.lastEventId = resumeAt;
          } catch (err) {
            attempt += 1;
            state("reconnecting", err.message || String(err));
            continue;
          }
        }
      }
      state(attempt ? "reconnecting" : "connecting", attempt ? "reconnecting…" : "");
      const aborter = new AbortController();
      control.abort = aborter;
      control.signal = aborter.signal;
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (control.lastEventId !== null && control.lastEventId !== undefined && control.lastEventId !== "") {
        headers["Last-Event-ID"] = String(control.lastEventId);
      }
      let resp;
      try {
        resp = await fetch(apiUrl(path, params), { headers, signal: aborter.signal, cache: "no-store" });
      } catch (err) {
        if (control.stopped) return;
        connectionChanged(false, NETWORK_MESSAGE);
        attempt += 1;
        state("reconnecting", NETWORK_MESSAGE);
        continue;
      }
      connectionChanged(true);
      if (!resp.ok) {
        const err = await errorOf(resp);
        if (RETRYABLE_STATUS.has(resp.status)) {
          attempt += 1;
          state("reconnecting", err.message);
          if (err.retryAfter) await sleep(err.retryAfter * 1000, aborter.signal);
          continue;
        }
        state("failed", err.message);
        handlers.onFatal?.(err);
        return;
      }
      state("live");
      const outcome = await read(resp, aborter.signal);
      if (control.stopped) return;
      if (outcome.end) {
        state("ended");
        handlers.onEnd?.(outcome.end);
        return;
      }
      if (outcome.error && !outcome.error.retryable) {
        const err = new ApiError(200, outcome.error.code || "STREAM_ERROR",
          `The stream ended with an error (${outcome.error.code || "unknown"}).`);
        state("failed", err.message);
        handlers.onFatal?.(err);
        return;
      }
      // Closed without an end (connection lost, server restarted) or a retryable error.
      if (outcome.received) attempt = 0;
      attempt += 1;
      state("reconnecting", outcome.error ? `stream error ${outcome.error.code}` : "connection lost");
    }
  }

  async function read(resp, signal) {
    const outcome = { end: null, error: null, received: false };
    const parser = new SSEParser();
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const ev of parser.push(value)) {
          if (ev.data === "[DONE]") continue;
          let data;
          try { data = JSON.parse(ev.data); } catch { data = ev.data; }
          if (ev.event === "end") outcome.end = data;
          else if (ev.event === "error") outcome.error = data;
          else {
            outcome.received = true;
            if (ev.id !== null) control.lastEventId = ev.id;
            handlers.onEvent?.(ev.event, data, ev.id);
          }
        }
      }
    } catch (err) {
      if (!signal.aborted) connectionChanged(false, NETWORK_MESSAGE);
    } finally {
      reader.releaseLock?.();
    }
    return outcome;
  }

  run();
  return {
    stop() {
      control.stopped = true;
      control.abort?.abort();
    },
    get lastEventId() { return control.lastEventId; },
  };
}
