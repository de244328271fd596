// Evaluation Center: evaluations with their benchmark scores, a chart of each benchmark's score
// across evaluations, and a form to evaluate a job's model or one of its checkpoints.

import * as api from "../api.js";
import { LineChart } from "../charts.js";
import {
  add, badge, checkbox, clear, errorBox, every, field, fmtNumber, h, newKey, notice, timeCell,
} from "../dom.js";

const BENCHMARKS = [
  ["perplexity", "Perplexity"],
  ["loss", "Loss"],
  ["token_accuracy", "Token accuracy"],
];
const REFRESH_MS = 3000;

export async function render(main, { page }) {
  const monitorRoute = api.config.pages.find((p) => p.id === "training-monitor").route;
  const jobLink = (id) => h("a", { class: "mono", href: `${api.base}${monitorRoute}?job=${encodeURIComponent(id)}` }, id);
  const listBox = h("div", { class: "table-wrap", "aria-live": "polite" }, h("p", { class: "loading" }, "Loading evaluations…"));
  const chartsBox = h("div", { class: "charts" });
  const formBox = h("section", { "aria-labelledby": "eval-new-h" });
  add(main, h("h1", {}, page.title),
    api.can("scaimind:evaluate") ? formBox : null,
    h("section", { "aria-labelledby": "eval-list-h" }, h("h2", { id: "eval-list-h" }, "Evaluations"), listBox),
    h("section", { "aria-labelledby": "eval-chart-h" }, h("h2", { id: "eval-chart-h" }, "Scores across evaluations"), chartsBox));

  if (api.can("scaimind:evaluate")) buildForm(formBox, () => refresh.now());

  const charts = new Map();

  async function load() {
    let data;
    try {
      // Each record is the whole evaluation with its scores (as GET /evaluations/{id}).
      data = await api.get("evaluations", { page_size: 50 });
    } catch (err) {
      clear(listBox, errorBox(err, "Evaluations could not be loaded"));
      return;
    }
    const evals = data.evaluations || [];
    if (!evals.length) {
      clear(listBox, notice("empty", "No evaluations yet."));
      clear(chartsBox, notice("empty", "Scores appear here once evaluations finish."));
      return;
    }
    const names = [...new Set(evals.flatMap((e) => (e.benchmarks || []).map((b) => b.name)))];
    clear(listBox, h("table", { class: "evaluations" },
      h("caption", { class: "sr-only" }, "Evaluations and their scores"),
      h("thead", {}, h("tr", {}, ["Evaluation", "Job", "Model", "Status", ...names, "Created", "Finished"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, evals.map((e) => h("tr", { dataset: { evaluationId: e.evaluation_id } },
        h("td", { class: "mono" }, e.evaluation_id),
        h("td", {}, e.job_id ? jobLink(e.job_id) : "—"),
        h("td", { class: "wrap" }, e.checkpoint_id ? `checkpoint ${e.checkpoint_id}` : (e.model_uri || "final model")),
        h("td", {}, badge(e.status), e.status === "FAILED" && e.status_message ? h("div", { class: "muted" }, e.status_message) : null),
        names.map((n) => {
          const b = (e.benchmarks || []).find((x) => x.name === n);
          if (!b) return h("td", {}, "—");
          if (b.error) return h("td", { class: "bad-text" }, `${b.status || "FAILED"}: ${b.error}`);
          return h("td", { class: "num score", dataset: { benchmark: n } },
            typeof b.score === "number" ? fmtNumber(b.score) : (b.status || "…"));
        }),
        h("td", {}, timeCell(e.created_at)), h("td", {}, timeCell(e.completed_at)))))));

    // One chart per benchmark: scores by evaluation, oldest first (scales differ too much to share).
    const ordered = [...evals].sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
    const live = new Set();
    for (const n of names) {
      const rows = [];
      ordered.forEach((e, i) => {
        const b = (e.benchmarks || []).find((x) => x.name === n);
        if (b && typeof b.score === "number") rows.push([i + 1, b.score]);
      });
      if (!rows.length) continue;
      live.add(n);
      if (!charts.has(n)) {
        const box = h("div", { dataset: { benchmark: n } });
        chartsBox.append(box);
        charts.set(n, new LineChart(box, { title: n, series: [{ label: n }], xLabel: "evaluation", points: true, height: 180 }));
      }
      charts.get(n).setRows(rows);
    }
    for (const [n, chart] of charts) {
      if (!live.has(n)) { chart.destroy(); chart.container.remove(); charts.delete(n); }
    }
    chartsBox.querySelector(".notice")?.remove();
    if (!charts.size) chartsBox.append(notice("empty", "Scores appear here once evaluations finish."));
  }

  const refresh = every(REFRESH_MS, load);
}

function buildForm(box, submitted) {
  const canList = api.can("scaimind:view");
  const jobInput = canList ? h("select", { name: "job_id", required: true }, h("option", { value: "" }, "Loading jobs…"))
    : h("input", { type: "text", name: "job_id", required: true, placeholder: "job_…", autocomplete: "off" });
  const modelUri = h("input", { type: "text", name: "model_uri", autocomplete: "off", placeholder: "the job's final model" });
  const checkpoint = h("select", { name: "checkpoint_id" }, h("option", { value: "" }, "Final model"));
  const benchRows = BENCHMARKS.map(([name, label]) => {
    const on = checkbox(label, name === "perplexity", { name: "benchmark", value: name });
    const dataset = h("input", { type: "text", name: `${name}_dataset`, placeholder: "validation split", autocomplete: "off" });
    const samples = h("input", { type: "number", name: `${name}_samples`, min: 0, placeholder: "all" });
    return { name, on, dataset, samples, el: h("div", { class: "bench-row" }, on.el, field(`${label} dataset`, dataset), field(`${label} samples`, samples)) };
  });
  const outcome = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary" }, "Run evaluation");
  const form = h("form", { class: "card", "aria-labelledby": "eval-new-h" },
    h("h2", { id: "eval-new-h" }, "New evaluation"),
    h("div", { class: "grid-fields" }, field("Job", jobInput), field("Checkpoint", checkpoint),
      field("Model URI", modelUri, "Empty: the job's final model (else its latest checkpoint). Or a model folder you may read: scaidrive://<tenant>/… or a path under a local data root.")),
    h("fieldset", {}, h("legend", {}, "Benchmarks"), benchRows.map((b) => b.el)),
    h("div", { class: "buttons" }, submit), outcome);
  clear(box, form);

  async function chooseJob(id) {
    clear(checkpoint, h("option", { value: "" }, "Final model"));
    if (!id) return;
    try {
      const job = await api.get(`jobs/${encodeURIComponent(id)}`);
      for (const c of [...(job.checkpoints || [])].reverse()) {
        checkpoint.append(h("option", { value: c.checkpoint_id }, `${c.checkpoint_id} (step ${c.step})`));
      }
      key = newKey();
    } catch (err) {
      clear(outcome, errorBox(err, "The job could not be loaded"));
    }
  }

  if (canList) {
    api.get("jobs", { page_size: 100 }).then((data) => {
      const jobs = (data.jobs || []).filter((j) => j.labels?.type !== "evaluation");
      clear(jobInput, h("option", { value: "" }, jobs.length ? "Choose a job" : "No jobs yet"),
        jobs.map((j) => h("option", { value: j.job_id }, `${j.name || j.job_id} · ${j.status} · ${j.job_id}`)));
    }).catch((err) => {
      clear(jobInput, h("option", { value: "" }, "Jobs could not be loaded"));
      clear(outcome, errorBox(err, "Jobs could not be loaded"));
    });
    jobInput.addEventListener("change", () => { modelUri.value = ""; chooseJob(jobInput.value); });
  } else {
    jobInput.addEventListener("change", () => chooseJob(jobInput.value.trim()));
  }

  let key = newKey();
  form.addEventListener("input", () => { key = newKey(); });
  let inFlight = false;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (inFlight) return;
    const benchmarks = benchRows.filter((b) => b.on.input.checked).map((b) => ({
      name: b.name,
      ...(b.dataset.value.trim() ? { dataset: b.dataset.value.trim() } : {}),
      ...(b.samples.value ? { num_samples: Number(b.samples.value) } : {}),
    }));
    const body = { job_id: jobInput.value.trim(), model_uri: modelUri.value.trim(), checkpoint_id: checkpoint.value, benchmarks };
    const missing = [!body.job_id && "a job", !benchmarks.length && "at least one benchmark"].filter(Boolean);
    if (missing.length) {
      clear(outcome, notice("error", `Choose ${missing.join(", ")}.`));
      return;
    }
    inFlight = true;
    submit.disabled = true;
    clear(outcome, h("p", { class: "loading" }, "Submitting…"));
    try {
      const data = await api.post("evaluations", body, { headers: { "Idempotency-Key": key } });
      clear(outcome, notice("ok", "Evaluation ", h("span", { class: "mono" }, data.evaluation_id), ` ${data.status || "submitted"}`,
        data.message ? ` · ${data.message}` : ""));
      key = newKey();
      submitted();
    } catch (err) {
      clear(outcome, errorBox(err, "The evaluation was not submitted"));
    } finally {
      inFlight = false;
      submit.disabled = false;
    }
  });
}
