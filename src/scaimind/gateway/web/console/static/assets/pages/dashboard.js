// Training Dashboard: jobs with status and label filters, paging, live refresh, progress,
// counts by status and the queues.

import * as api from "../api.js";
import {
  add, badge, checkbox, clear, errorBox, every, field, fmtDuration, h, labelChips, notice, parsePairs, select, timeCell,
} from "../dom.js";

const GROUPS = [
  ["running", "Running", ["SCHEDULING", "PREPARING", "TRAINING", "CHECKPOINTING", "EVALUATING", "EXPORTING"]],
  ["waiting", "Waiting", ["PENDING", "QUEUED"]],
  ["paused", "Paused", ["PAUSED"]],
  ["preempted", "Preempted", ["PREEMPTED"]],
  ["completed", "Completed", ["COMPLETED"]],
  ["failed", "Failed", ["FAILED"]],
  ["cancelled", "Cancelled", ["CANCELLED"]],
];
const REFRESH_MS = 2000;

export async function render(main, { page }) {
  const monitorRoute = api.config.pages.find((p) => p.id === "training-monitor").route;
  const creatorRoute = api.config.pages.find((p) => p.id === "job-creator").route;
  const state = { group: "", labels: {}, pageSize: 20, tokens: [""], index: 0 };

  const statusSel = select([["", "All statuses"], ...GROUPS.map(([v, t]) => [v, t])], "", { name: "status" });
  const labelInput = h("input", { type: "text", name: "labels", placeholder: "team=nlp, run=7", autocomplete: "off" });
  const sizeSel = select(["20", "50", "100"], "20", { name: "page_size" });
  const live = checkbox("Live refresh", true, { name: "live" });
  const filterError = h("div", { class: "filter-error" });
  const filters = h("form", { class: "toolbar", role: "search", "aria-label": "Filter jobs" },
    field("Status", statusSel), field("Labels (key=value)", labelInput), field("Page size", sizeSel),
    h("div", { class: "field end" }, live.el),
    h("div", { class: "field end" }, h("button", { type: "submit" }, "Apply")));

  const counts = h("ul", { class: "counts", "aria-label": "Jobs by status" });
  const tableBox = h("div", { class: "table-wrap", "aria-live": "polite", "aria-busy": "true" }, h("p", { class: "loading" }, "Loading jobs…"));
  const pager = h("div", { class: "pager" });
  const queueBox = h("div", { class: "table-wrap" }, h("p", { class: "loading" }, "Loading queues…"));
  const updated = h("span", { class: "muted", "aria-live": "off" });

  add(main,
    h("div", { class: "page-head" }, h("h1", {}, page.title), updated,
      api.can("scaimind:manage") ? h("a", { class: "button primary", href: api.base + creatorRoute }, "New job") : null),
    h("section", { "aria-labelledby": "counts-h" }, h("h2", { id: "counts-h", class: "sr-only" }, "Jobs by status"), counts),
    filters, filterError,
    h("section", { "aria-labelledby": "jobs-h" }, h("h2", { id: "jobs-h" }, "Jobs"), tableBox, pager),
    h("section", { "aria-labelledby": "queue-h" }, h("h2", { id: "queue-h" }, "Queues"), queueBox));

  const statuses = () => GROUPS.find(([v]) => v === state.group)?.[2] || [];

  async function loadJobs() {
    let data;
    try {
      data = await api.get("jobs", {
        status: statuses(), label: Object.entries(state.labels).map(([k, v]) => `${k}=${v}`),
        page_size: state.pageSize, page_token: state.tokens[state.index],
      });
    } catch (err) {
      clear(tableBox, errorBox(err, "Jobs could not be loaded"));
      tableBox.setAttribute("aria-busy", "false");
      return;
    }
    tableBox.setAttribute("aria-busy", "false");
    const jobs = Array.isArray(data.jobs) ? data.jobs : [];
    if (!jobs.length) {
      clear(tableBox, notice("empty", state.index ? "No more jobs." : "No jobs match. ",
        api.can("scaimind:manage") && !state.index ? h("a", { href: api.base + creatorRoute }, "Create one") : ""));
    } else {
      clear(tableBox, jobsTable(jobs, monitorRoute));
    }
    const next = data.next_page_token || "";
    state.tokens[state.index + 1] = next;
    clear(pager,
      h("button", { type: "button", disabled: state.index === 0, onclick: () => { state.index -= 1; refresh.now(); } }, "Previous"),
      h("span", { class: "muted" }, `Page ${state.index + 1}${Number.isFinite(data.total_count) ? ` · ${data.total_count} jobs` : ""}`),
      h("button", { type: "button", disabled: !next, onclick: () => { state.index += 1; refresh.now(); } }, "Next"));
    updated.textContent = `Updated ${new Date().toLocaleTimeString("en-GB", { hour12: false })}`;
  }

  async function loadCounts() {
    const label = Object.entries(state.labels).map(([k, v]) => `${k}=${v}`);
    const results = await Promise.allSettled(GROUPS.map(([, , s]) => api.get("jobs", { status: s, label, page_size: 1 })));
    clear(counts, GROUPS.map(([value, text], i) => {
      const r = results[i];
      const n = r.status === "fulfilled" && Number.isFinite(r.value.total_count) ? r.value.total_count : "—";
      return h("li", {}, h("button", {
        type: "button", class: `count ${state.group === value ? "active" : ""}`, "aria-pressed": String(state.group === value),
        onclick: () => { state.group = state.group === value ? "" : value; statusSel.value = state.group; restart(); },
      }, h("span", { class: "n" }, String(n)), h("span", {}, text)));
    }));
  }

  async function loadQueues() {
    try {
      const data = await api.get("queue");
      const queues = data.queues || [];
      clear(queueBox, queues.length ? h("table", {},
        h("caption", { class: "sr-only" }, "Queues"),
        h("thead", {}, h("tr", {}, ["Queue", "Waiting", "Running", "Oldest wait", "Estimated wait"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, queues.map((q) => h("tr", {},
          h("td", {}, q.queue_name || "default"), h("td", { class: "num" }, q.depth ?? 0), h("td", { class: "num" }, q.running ?? 0),
          h("td", {}, fmtDuration(q.oldest_wait_seconds)), h("td", {}, fmtDuration(q.estimated_wait_seconds))))))
        : notice("empty", "No queues yet."));
    } catch (err) {
      clear(queueBox, errorBox(err, "Queues could not be loaded"));
    }
  }

  let ticks = 0;
  const refresh = every(REFRESH_MS, async () => {
    if (!live.input.checked && ticks > 0) return;
    // Counts and queues change slower than progress bars: every third pass.
    const work = [loadJobs()];
    if (ticks % 3 === 0) work.push(loadCounts(), loadQueues());
    ticks += 1;
    await Promise.all(work);
  });

  function restart() {
    state.tokens = [""];
    state.index = 0;
    ticks = 0;
    refresh.now();
  }

  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    try {
      state.labels = parsePairs(labelInput.value, "Labels");
      clear(filterError);
    } catch (err) {
      clear(filterError, errorBox(err));
      return;
    }
    state.group = statusSel.value;
    state.pageSize = Number(sizeSel.value);
    restart();
  });
  statusSel.addEventListener("change", () => filters.requestSubmit());
  sizeSel.addEventListener("change", () => filters.requestSubmit());
  live.input.addEventListener("change", () => { if (live.input.checked) refresh.now(); });
}

function jobsTable(jobs, monitorRoute) {
  return h("table", { class: "jobs" },
    h("caption", { class: "sr-only" }, "Jobs; a row opens the job in the Training Monitor"),
    h("thead", {}, h("tr", {}, ["Job", "Status", "Progress", "Model", "Labels", "Created"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, jobs.map((job) => jobRow(job, monitorRoute))));
}

function jobRow(job, monitorRoute) {
  const href = `${api.base}${monitorRoute}?job=${encodeURIComponent(job.job_id)}`;
  const p = job.progress || {};
  const pct = Math.max(0, Math.min(100, Number(p.percent) || 0));
  const model = job.training_config?.base_model?.model_id || job.base_model_id || "—";
  const waiting = job.status === "QUEUED" && job.queue_position ? ` · #${job.queue_position} in queue` : "";
  const row = h("tr", { class: "clickable", dataset: { jobId: job.job_id } },
    h("td", {}, h("a", { href }, job.name || job.job_id), h("div", { class: "muted mono" }, job.job_id)),
    h("td", {}, badge(job.status, job.status_message), waiting ? h("div", { class: "muted" }, waiting) : null),
    h("td", { class: "progress-cell" },
      h("progress", { max: 100, value: pct, "aria-label": `Progress of ${job.name || job.job_id}` }),
      h("div", { class: "muted" }, p.total_steps ? `step ${p.current_step || 0} / ${p.total_steps} · ${pct.toFixed(0)} %` : `${pct.toFixed(0)} %`)),
    h("td", {}, model),
    h("td", {}, labelChips(job.labels)),
    h("td", {}, timeCell(job.created_at)));
  // The whole row opens the monitor; the name link is the keyboard path.
  row.addEventListener("click", (ev) => { if (!ev.target.closest("a, button")) location.href = href; });
  return row;
}
