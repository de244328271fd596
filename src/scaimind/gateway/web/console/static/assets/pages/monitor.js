// Training Monitor: one job's progress, live charts and logs, checkpoints and actions.

import * as api from "../api.js";
import { LineChart } from "../charts.js";
import {
  add, TERMINAL, badge, clear, errorBox, every, field, fmtBytes, fmtDuration, fmtNumber, h, labelChips, notice,
  timeCell,
} from "../dom.js";
import { follow } from "../sse.js";
import { actionsPanel } from "./monitor_actions.js";

const CHARTS = [
  { metric: "loss", title: "Loss" },
  { metric: "learning_rate", title: "Learning rate" },
  { metric: "grad_norm", title: "Gradient norm" },
  { metric: "tokens_per_second", title: "Throughput (tokens/s)" },
];
const HISTORY_POINTS = 2000;
const MAX_LOG_LINES = 5000;
const POLL_MS = 2000;
const SHOWN_CHECKPOINTS = 10;
const GAP_REFILL_MS = 10_000;

export async function render(main, { page }) {
  const jobId = new URLSearchParams(location.search).get("job");
  if (!jobId) return renderPicker(main, page);

  const title = h("h1", {}, page.title);
  const statusLine = h("p", { class: "status-line" });
  const summary = h("dl", { class: "summary", "aria-live": "polite" });
  const failure = h("div");
  const actions = h("div");
  const chartsGrid = h("div", { class: "charts" });
  const chartState = h("span", { class: "stream-state", role: "status" }, "connecting…");
  const otherMetrics = h("div", { class: "other-metrics" });
  const checkpointsBox = h("div", { class: "table-wrap" });
  const loadError = h("div");

  add(main,
    h("div", { class: "page-head" }, title, h("a", { href: api.base }, "All jobs")),
    statusLine, loadError, failure,
    h("section", { "aria-labelledby": "progress-h" }, h("h2", { id: "progress-h", class: "sr-only" }, "Progress"), summary),
    actions,
    h("section", { "aria-labelledby": "charts-h" },
      h("div", { class: "section-head" }, h("h2", { id: "charts-h" }, "Metrics"), chartState), chartsGrid, otherMetrics),
    logsSection(jobId, main),
    h("section", { "aria-labelledby": "ckpt-h" }, h("h2", { id: "ckpt-h" }, "Checkpoints"), checkpointsBox));

  const charts = new Map();
  for (const c of CHARTS) {
    const box = h("div", { dataset: { metric: c.metric } });
    chartsGrid.append(box);
    charts.set(c.metric, new LineChart(box, { title: c.title, series: [{ label: c.metric }] }));
  }
  // Recent (step, time) pairs for the ETA.
  let rate = [];

  // ---- job state, polled ----
  let job = null;
  const panel = actionsPanel(jobId, () => job, {
    changed: () => poll.now(),
    resumed: () => metrics.restart(),
  });
  actions.append(panel.el);

  const poll = every(POLL_MS, async () => {
    try {
      job = await api.get(`jobs/${encodeURIComponent(jobId)}`);
      clear(loadError);
    } catch (err) {
      clear(loadError, errorBox(err, "The job could not be loaded"));
      return;
    }
    document.title = `${job.name || jobId} · Training Monitor`;
    clear(title, `${page.title}: `, h("span", { class: "job-name" }, job.name || jobId));
    clear(statusLine, badge(job.status), " ", h("span", { class: "mono muted" }, jobId),
      job.status_message ? h("span", { class: "muted" }, ` · ${job.status_message}`) : null);
    renderSummary(summary, job, eta(job, rate));
    clear(failure, job.error && job.error.message
      ? notice("error", h("strong", {}, `${job.error.code || "Error"}: `), job.error.message) : null);
    panel.update(job);
    renderCheckpoints(checkpointsBox, job.checkpoints || []);
    renderOther(otherMetrics, job.latest_metrics || {});
    if (TERMINAL.has(job.status)) poll.stop();
  });

  // ---- metrics: history, then the stream; after a reconnect the history fills the gap ----
  async function loadHistory() {
    const data = await api.get(`jobs/${encodeURIComponent(jobId)}/metrics`, { max_points: HISTORY_POINTS });
    let last = -1;
    for (const s of data.series || []) {
      const chart = charts.get(s.name);
      const points = Array.isArray(s.points) ? s.points : [];
      if (chart) chart.mergeRows(points.map((p) => [p.step, p.value]));
      if (s.name === "loss") rate = points.slice(-20).map((p) => [p.step, Date.parse(p.timestamp)]);
      if (points.length) last = Math.max(last, points[points.length - 1].step);
    }
    return last >= 0 ? last : null;
  }

  // The stream sends a sample at most every second; when it skipped steps, the history (which
  // keeps every spike) fills them in, at most every GAP_REFILL_MS.
  let refilledAt = 0;
  function refillGaps(step) {
    const last = charts.get("loss").lastX;
    if (last === null || step - last <= 1 || Date.now() - refilledAt < GAP_REFILL_MS) return;
    refilledAt = Date.now();
    loadHistory().catch(() => { refilledAt = 0; });
  }

  const metrics = {
    stream: null,
    generation: 0,
    async start() {
      const generation = ++this.generation;
      let resumeAt = null;
      try {
        resumeAt = await loadHistory();
      } catch (err) {
        chartState.textContent = `history unavailable: ${err.message}`;
        if (err.status === 404 || err.status === 403) return;
      }
      // Stopped or restarted while the history loaded: that call owns the stream now.
      if (generation !== this.generation) return;
      this.stream = follow(`jobs/${encodeURIComponent(jobId)}/metrics/stream`, { interval: 1 }, {
        onEvent: (name, snap) => {
          if (name !== "metrics" || !snap || typeof snap.step !== "number") return;
          refillGaps(snap.step);
          for (const [metric, chart] of charts) {
            const v = snap.metrics?.[metric];
            if (typeof v === "number") chart.append(snap.step, [v]);
          }
          const t = Date.parse(snap.timestamp);
          if (Number.isFinite(t)) rate = [...rate.slice(-19), [snap.step, t]];
          renderOther(otherMetrics, snap.metrics || {});
        },
        beforeReconnect: () => loadHistory(),
        onEnd: async (end) => {
          // Stream snapshots are sampled; the final history has every point (and every spike).
          try { await loadHistory(); } catch { /* the live points stay */ }
          chartState.textContent = `ended · ${end?.status || ""}`;
          poll.now();
        },
        onFatal: (err) => { chartState.textContent = `stopped: ${err.message}`; },
        onState: (s, detail) => {
          chartState.dataset.state = s;
          if (s === "live") chartState.textContent = "live";
          else if (s === "reconnecting") chartState.textContent = `reconnecting (${detail})…`;
          else if (s === "connecting") chartState.textContent = "connecting…";
        },
      }, resumeAt);
    },
    stop() {
      this.generation += 1;
      this.stream?.stop();
      this.stream = null;
    },
    restart() {
      this.stop();
      this.start();
    },
  };
  metrics.start();
  window.addEventListener("scaimind:leave", () => metrics.stop());
}

function eta(job, rate) {
  const p = job.progress || {};
  if (TERMINAL.has(job.status) || !p.total_steps) return null;
  if (rate.length < 2) return null;
  const [s0, t0] = rate[0];
  const [s1, t1] = rate[rate.length - 1];
  const perSecond = (s1 - s0) / ((t1 - t0) / 1000);
  if (!(perSecond > 0)) return null;
  return { perSecond, seconds: Math.max(0, (p.total_steps - (p.current_step || 0)) / perSecond) };
}

function renderSummary(dl, job, estimate) {
  const p = job.progress || {};
  const pct = Math.max(0, Math.min(100, Number(p.percent) || 0));
  const items = [
    ["Progress", h("div", {}, h("progress", { max: 100, value: pct, "aria-label": "Job progress" }),
      h("div", {}, `step ${p.current_step || 0} / ${p.total_steps || "?"} · ${pct.toFixed(1)} %`))],
    ["ETA", estimate ? `${fmtDuration(estimate.seconds)} (${fmtNumber(estimate.perSecond, 3)} steps/s)` : "—"],
    ["Epoch", p.total_epochs ? `${p.current_epoch || 0} / ${p.total_epochs}` : (p.current_epoch ?? "—")],
    ["Model", job.training_config?.base_model?.model_id || "—"],
    ["Type", job.training_config?.training_type || "—"],
    ["Queue", job.status === "QUEUED" ? `${job.queue_name || "default"} · position ${job.queue_position || "?"} · wait ≈ ${fmtDuration(job.estimated_wait_seconds)}` : (job.queue_name || "default")],
    ["Nodes", (job.assigned_nodes || []).join(", ") || "—"],
    ["Created", timeCell(job.created_at)],
    ["Started", timeCell(job.started_at)],
    ["Finished", timeCell(job.completed_at)],
    ["Labels", labelChips(job.labels)],
  ];
  if (job.parent_job_id) {
    items.push(["Parent", h("a", { href: `?job=${encodeURIComponent(job.parent_job_id)}` }, job.parent_job_id)]);
  }
  if (job.retry_count) items.push(["Retries", String(job.retry_count)]);
  clear(dl, items.map(([k, v]) => h("div", { class: "item" }, h("dt", {}, k), h("dd", {}, v))));
}

function renderOther(box, metrics) {
  const shown = new Set(CHARTS.map((c) => c.metric));
  const rest = Object.entries(metrics).filter(([k, v]) => !shown.has(k) && typeof v === "number");
  if (!rest.length) return;
  clear(box, h("h3", {}, "Other metrics (latest)"),
    h("dl", { class: "summary compact" }, rest.sort().map(([k, v]) => h("div", { class: "item" }, h("dt", {}, k), h("dd", {}, fmtNumber(v))))));
}

function renderCheckpoints(box, checkpoints) {
  if (!checkpoints.length) {
    clear(box, notice("empty", "No checkpoints yet."));
    return;
  }
  clear(box, h("table", {},
    h("caption", { class: "sr-only" }, "Checkpoints"),
    h("thead", {}, h("tr", {}, ["Checkpoint", "Step", "Created", "Size", "Loss"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, [...checkpoints].reverse().slice(0, SHOWN_CHECKPOINTS).map((c) => h("tr", {},
      h("td", { class: "mono" }, c.checkpoint_id), h("td", { class: "num" }, c.step), h("td", {}, timeCell(c.created_at)),
      h("td", { class: "num" }, fmtBytes(c.size_bytes)), h("td", { class: "num" }, fmtNumber(c.metrics?.loss)))))),
    checkpoints.length > SHOWN_CHECKPOINTS
      ? h("p", { class: "muted pad" }, `${checkpoints.length - SHOWN_CHECKPOINTS} older checkpoints not shown (all are offered by Resume and Retry).`)
      : null);
}

// ---- logs ----

function logsSection(jobId) {
  const level = h("select", { name: "level" },
    ["DEBUG", "INFO", "WARNING"].map((l) => h("option", { value: l, selected: l === "INFO" }, l)));
  const search = h("input", { type: "search", name: "search", placeholder: "text in the message", autocomplete: "off" });
  const followBox = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const state = h("span", { class: "stream-state", role: "status" }, "connecting…");
  const matches = h("span", { class: "muted", "aria-live": "polite" });
  const list = h("ol", { class: "log", id: "log-lines", role: "log", "aria-label": "Log lines", tabindex: "0" });
  const empty = notice("empty", "No log lines yet.");
  const failure = h("div");
  let stream = null;
  let lastSeq = -1;
  let needle = "";

  function visible(li) {
    return !needle || li.dataset.text.includes(needle);
  }

  function countMatches() {
    matches.textContent = needle
      ? `${list.querySelectorAll("li:not([hidden])").length} of ${list.children.length} lines match`
      : "";
  }

  function add(entry) {
    const seq = Number(entry.seq);
    // The stream resumes after the last id; a line at or before it would be a duplicate.
    if (Number.isFinite(seq) && seq <= lastSeq) return;
    if (Number.isFinite(seq)) lastSeq = seq;
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    const text = String(entry.message ?? "");
    const li = h("li", { class: `lvl-${String(entry.level || "INFO").toLowerCase()}`, dataset: { seq: String(entry.seq ?? ""), text: text.toLowerCase() } },
      h("time", { datetime: entry.timestamp }, entry.timestamp ? new Date(entry.timestamp).toLocaleTimeString("en-GB", { hour12: false }) : ""),
      h("span", { class: "lvl" }, entry.level || ""),
      h("span", { class: "src" }, entry.source || ""),
      h("span", { class: "msg" }, text));
    li.hidden = !visible(li);
    list.append(li);
    while (list.children.length > MAX_LOG_LINES) list.firstElementChild.remove();
    empty.hidden = true;
    if (followBox.checked && atBottom) list.scrollTop = list.scrollHeight;
    if (needle) countMatches();
  }

  function start() {
    stream?.stop();
    list.replaceChildren();
    lastSeq = -1;
    empty.hidden = false;
    clear(failure);
    stream = follow(`jobs/${encodeURIComponent(jobId)}/logs`, { follow: "true", level: level.value, tail: 500 }, {
      onEvent: (name, entry) => { if (name === "log" && entry && typeof entry === "object") add(entry); },
      onEnd: (end) => { state.textContent = `ended · job ${end?.status || ""}`; },
      onFatal: (err) => { clear(failure, errorBox(err, "Logs stopped")); },
      onState: (s, detail) => {
        state.dataset.state = s;
        if (s === "live") state.textContent = "live";
        else if (s === "reconnecting") state.textContent = `reconnecting (${detail})…`;
        else if (s === "connecting") state.textContent = "connecting…";
        else if (s === "failed") state.textContent = "stopped";
      },
    });
  }

  level.addEventListener("change", start);
  search.addEventListener("input", () => {
    needle = search.value.trim().toLowerCase();
    for (const li of list.children) li.hidden = !visible(li);
    countMatches();
  });
  window.addEventListener("scaimind:leave", () => stream?.stop());
  start();

  return h("section", { "aria-labelledby": "logs-h" },
    h("div", { class: "section-head" }, h("h2", { id: "logs-h" }, "Logs"), state),
    h("div", { class: "toolbar" }, field("Minimum level", level), field("Search", search),
      h("div", { class: "field end" }, h("label", { class: "check", for: "log-follow" }, followBox, " Follow the end")), matches),
    failure, empty, list);
}

// ---- no job chosen: pick one ----

async function renderPicker(main, page) {
  const input = h("input", { type: "text", name: "job", required: true, placeholder: "job_…", autocomplete: "off" });
  const form = h("form", { class: "toolbar", method: "get", action: "" }, field("Job ID", input),
    h("div", { class: "field end" }, h("button", { type: "submit", class: "primary" }, "Open")));
  const list = h("div", { class: "table-wrap" }, h("p", { class: "loading" }, "Loading recent jobs…"));
  add(main, h("h1", {}, page.title), h("p", {}, "Choose a job to follow its metrics and logs live."), form,
    h("h2", {}, "Recent jobs"), list);
  try {
    const data = await api.get("jobs", { page_size: 20 });
    const jobs = data.jobs || [];
    clear(list, jobs.length ? h("ul", { class: "plain" }, jobs.map((j) => h("li", {},
      h("a", { href: `?job=${encodeURIComponent(j.job_id)}` }, j.name || j.job_id), " ", badge(j.status), " ",
      h("span", { class: "mono muted" }, j.job_id)))) : notice("empty", "No jobs yet."));
  } catch (err) {
    clear(list, errorBox(err, "Jobs could not be loaded"));
  }
}
