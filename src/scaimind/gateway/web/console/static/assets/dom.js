// DOM building and formatting. Text from the API only ever becomes text nodes or attribute
// values (never HTML), so a job name or log line cannot inject markup into the console.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

// Append children, skipping null/undefined/false (Element.append would write "null").
export function add(el, ...children) {
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idCounter = 0;
export function uid(prefix = "f") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

// A labelled form control: <div class="field"><label for=id>…</label><control id=id></div>.
export function field(label, control, hint) {
  if (!control.id) control.id = uid();
  const parts = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hintId = uid("hint");
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "hint" }, hint));
  }
  return h("div", { class: "field" }, parts);
}

export function select(options, value, attrs = {}) {
  const el = h("select", attrs);
  for (const opt of options) {
    const [v, text] = Array.isArray(opt) ? opt : [opt, opt];
    el.append(h("option", { value: v, selected: v === value }, text));
  }
  return el;
}

export function checkbox(label, checked = false, attrs = {}) {
  const input = h("input", { type: "checkbox", id: uid("cb"), checked, ...attrs });
  return { input, el: h("label", { class: "check", for: input.id }, input, " ", label) };
}

const STATUS_CLASS = {
  PENDING: "wait", QUEUED: "wait", SCHEDULING: "run", PREPARING: "run", TRAINING: "run",
  CHECKPOINTING: "run", EVALUATING: "run", EXPORTING: "run", PAUSED: "pause",
  COMPLETED: "ok", FAILED: "bad", CANCELLED: "off", PREEMPTED: "warn",
  ONLINE: "ok", DRAINING: "warn", DRAINED: "off", DISABLED: "off", OFFLINE: "bad",
  RUNNING: "run",
};

export function badge(status, title) {
  const s = String(status || "UNKNOWN");
  return h("span", { class: `badge ${STATUS_CLASS[s] || "off"}`, title }, s);
}

export const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

// Notices: role=status for information, role=alert for errors (read out at once).
export function notice(kind, ...content) {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, content);
}

// The API's own message first; validation details as a list; the request id for support.
export function errorBox(err, prefix = "") {
  const box = notice("error", h("strong", {}, prefix ? `${prefix}: ` : ""), err.message || String(err));
  if (err.code) box.append(" ", h("code", { class: "code" }, err.code));
  const details = Array.isArray(err.details) ? err.details : [];
  if (details.length) {
    box.append(h("ul", { class: "details" }, details.map((d) =>
      h("li", {}, d.field ? h("code", {}, d.field) : "", d.field ? ": " : "", d.message ?? JSON.stringify(d)))));
  }
  if (err.requestId) box.append(h("small", { class: "reqid" }, ` request ${err.requestId}`));
  return box;
}

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
  const n = Number(value);
  if (n === 0) return "0";
  const abs = Math.abs(n);
  if (abs >= 1e6 || abs < 1e-3) return n.toExponential(2);
  if (Number.isInteger(n)) return n.toLocaleString("en");
  return n.toLocaleString("en", { maximumSignificantDigits: digits });
}

export function fmtBytes(bytes) {
  const n = Number(bytes || 0);
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "—";
  let s = Math.max(0, Math.round(Number(seconds)));
  if (s < 60) return `${s} s`;
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const mm = Math.floor(s / 60); s -= mm * 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  return `${mm} min ${s} s`;
}

export function fmtTime(iso, withDate = true) {
  if (!iso) return "—";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso);
  return withDate ? t.toLocaleString("en-GB", { hour12: false }) : t.toLocaleTimeString("en-GB", { hour12: false });
}

export function timeCell(iso) {
  return h("time", { datetime: iso || undefined, title: iso || undefined }, fmtTime(iso));
}

// key=value pairs, one per line or comma separated, into an object; throws naming a bad line.
export function parsePairs(text, what) {
  const out = {};
  for (const raw of String(text || "").split(/[\n,]/)) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf("=");
    if (i <= 0) throw new Error(`${what}: "${line}" is not key=value`);
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

export function pairsText(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k}=${v}`).join("\n");
}

export function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return "—";
  return h("ul", { class: "chips" }, entries.map(([k, v]) => h("li", {}, `${k}=${v}`)));
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// Run `task` now and then every `ms` after each run finishes (never overlapping), until stop().
export function every(ms, task) {
  let timer = null;
  let stopped = false;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (stopped) return;
    running = true;
    try { await task(); } catch (err) { console.warn("refresh failed", err); }
    running = false;
    if (stopped) return;
    if (again) { again = false; run(); } else timer = setTimeout(run, ms);
  };
  queueMicrotask(run);
  window.addEventListener("scaimind:leave", () => { stopped = true; if (timer) clearTimeout(timer); });
  return {
    stop() { stopped = true; if (timer) clearTimeout(timer); },
    // Run again at once (after the run in progress, if any).
    now() {
      if (stopped) return;
      if (running) { again = true; return; }
      if (timer) clearTimeout(timer);
      run();
    },
  };
}

export function newKey() {
  return crypto.randomUUID ? crypto.randomUUID()
    : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}
