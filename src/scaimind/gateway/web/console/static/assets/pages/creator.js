// Job Creator: a form for the submit fields that matter, data validation per source, the JSON
// of the request, and one Idempotency-Key per submission (a double click creates one job).

import * as api from "../api.js";
import { add, checkbox, clear, errorBox, field, fmtBytes, h, newKey, notice, parsePairs, select } from "../dom.js";

const TRAINING_TYPES = ["SFT", "LORA", "QLORA", "DPO", "RLHF", "CONTINUED_PRETRAIN", "FULL_FINETUNE"];
const FRAMEWORKS = ["HF_TRAINER", "DEEPSPEED", "FSDP", "MEGATRON", "CUSTOM"];
const FORMATS = [["", "auto"], "jsonl", "json", "csv", "parquet", "text"];
const EXPORT_FORMATS = [["", "default"], "SAFETENSORS", "PYTORCH", "GGUF", "ONNX"];

const num = (attrs = {}) => h("input", { type: "number", inputmode: "decimal", ...attrs });
const text = (attrs = {}) => h("input", { type: "text", autocomplete: "off", ...attrs });
const area = (attrs = {}) => h("textarea", { rows: 3, spellcheck: "false", ...attrs });

export async function render(main, { page }) {
  const mayManage = api.can("scaimind:manage");
  const monitorRoute = api.config.pages.find((p) => p.id === "training-monitor").route;
  const f = {
    name: text({ name: "name", required: true, maxlength: 256 }),
    trainingType: select(TRAINING_TYPES, "SFT", { name: "training_type" }),
    model: text({ name: "model_id", required: true, value: "meta-llama/Llama-3-8B" }),
    revision: text({ name: "revision" }),
    framework: select(FRAMEWORKS, "HF_TRAINER", { name: "framework" }),
    script: text({ name: "custom_script_path" }),
    maxSteps: num({ name: "max_steps", min: 1, value: 200 }),
    epochs: num({ name: "epochs", min: 0 }),
    lr: num({ name: "learning_rate", step: "any", min: 0, value: 0.01 }),
    batch: num({ name: "batch_size", min: 1 }),
    warmup: num({ name: "warmup_steps", min: 0 }),
    seed: num({ name: "seed", min: 0 }),
    extraHyper: area({ name: "hyperparameters", placeholder: "lora_r=16" }),
    validationSplit: num({ name: "validation_split", step: "any", min: 0, max: 1, value: 0 }),
    maxSeq: num({ name: "max_seq_length", min: 0 }),
    gpuCount: num({ name: "gpu_count", min: 0, value: 1 }),
    gpuType: text({ name: "gpu_type", placeholder: "any" }),
    numNodes: num({ name: "num_nodes", min: 1, value: 1 }),
    maxRuntime: num({ name: "max_runtime_seconds", min: 0 }),
    nodeSelector: text({ name: "node_selector", placeholder: "zone=a" }),
    outputPath: text({ name: "output_path" }),
    ckptInterval: num({ name: "checkpoint_interval_steps", min: 0 }),
    keepLast: num({ name: "keep_last_checkpoints", min: 0 }),
    saveFinal: checkbox("Save the final model", true, { name: "save_final_model" }),
    exportFormat: select(EXPORT_FORMATS, "", { name: "export_format" }),
    queue: text({ name: "queue_name", placeholder: "default" }),
    priority: num({ name: "priority", min: 0, max: 10, value: 5 }),
    preemptible: checkbox("Preemptible", false, { name: "preemptible" }),
    maxRetries: num({ name: "max_retries", min: 0, value: 0 }),
    maxQueueWait: num({ name: "max_queue_wait_seconds", min: 0 }),
    startAfter: h("input", { type: "datetime-local", name: "start_after" }),
    affinity: text({ name: "node_affinity", placeholder: "node-a, node-b" }),
    labels: area({ name: "labels", placeholder: "team=nlp" }),
    environment: area({ name: "environment", placeholder: "NAME=value" }),
  };

  // Data sources: rows of path + format, each with its validation result.
  const sourcesBody = h("div", { class: "sources" });
  const sources = [];
  function addSource(path = "") {
    const row = {
      path: text({ name: "source_path", required: true, value: path, placeholder: "/data/train.jsonl or scaidrive://tenant/…" }),
      format: select(FORMATS, "", { name: "source_format" }),
      result: h("div", { class: "validation", "aria-live": "polite" }),
    };
    const remove = h("button", { type: "button", class: "link", onclick: () => {
      if (sources.length === 1) return;
      sources.splice(sources.indexOf(row), 1);
      row.el.remove();
      renumber();
      update();
    } }, "Remove");
    row.el = h("div", { class: "source-row" }, h("div", { class: "source-fields" },
      field("Path", row.path), field("Format", row.format), h("div", { class: "field end" }, remove)), row.result);
    sources.push(row);
    sourcesBody.append(row.el);
    renumber();
    return row;
  }
  function renumber() {
    sources.forEach((row, i) => {
      row.el.querySelector("label").textContent = `Source ${i + 1} path`;
      row.el.querySelector(".link").setAttribute("aria-label", `Remove source ${i + 1}`);
    });
  }

  const customField = field("Custom script path", f.script, "Runs instead of the framework (CUSTOM only).");
  const validateBtn = h("button", { type: "button", onclick: () => validate() }, "Validate data");
  const validateSummary = h("div", { "aria-live": "polite" });
  const json = h("pre", { class: "json", id: "request-json", tabindex: "0", "aria-label": "Request body (JSON)" });
  const submitBtn = h("button", { type: "submit", class: "primary" }, "Submit job");
  const outcome = h("div", { class: "outcome", "aria-live": "polite" });

  const form = h("form", { class: "creator", novalidate: true, "aria-labelledby": "creator-h" },
    h("fieldset", {}, h("legend", {}, "Job"), field("Name", f.name), field("Training type", f.trainingType),
      field("Base model", f.model), field("Revision", f.revision), field("Framework", f.framework), customField),
    h("fieldset", {}, h("legend", {}, "Data"), sourcesBody,
      h("div", { class: "buttons" }, h("button", { type: "button", onclick: () => { addSource().path.focus(); update(); } }, "Add source"),
        mayManage ? validateBtn : null),
      validateSummary,
      field("Validation split (0–1)", f.validationSplit), field("Max sequence length", f.maxSeq)),
    h("fieldset", {}, h("legend", {}, "Hyperparameters"), field("Max steps", f.maxSteps), field("Epochs", f.epochs),
      field("Learning rate", f.lr), field("Batch size", f.batch), field("Warmup steps", f.warmup), field("Seed", f.seed),
      field("More (key=value per line)", f.extraHyper)),
    h("fieldset", {}, h("legend", {}, "Resources"), field("GPUs per node", f.gpuCount), field("GPU type", f.gpuType),
      field("Nodes", f.numNodes), field("Max runtime (s)", f.maxRuntime), field("Node selector (key=value)", f.nodeSelector)),
    h("fieldset", {}, h("legend", {}, "Output"), field("Output path", f.outputPath), field("Checkpoint every (steps)", f.ckptInterval),
      field("Keep last checkpoints", f.keepLast), field("Export format", f.exportFormat), f.saveFinal.el),
    h("fieldset", {}, h("legend", {}, "Scheduling"), field("Queue", f.queue), field("Priority (0–10)", f.priority),
      field("Max retries", f.maxRetries), field("Max queue wait (s)", f.maxQueueWait), field("Start after", f.startAfter),
      field("Node affinity (node ids)", f.affinity), f.preemptible.el),
    h("fieldset", {}, h("legend", {}, "Labels and environment"), field("Labels (key=value per line)", f.labels),
      field("Environment (NAME=value per line)", f.environment)),
    mayManage ? h("div", { class: "buttons submit-row" }, submitBtn) : null,
    outcome);

  add(main, h("h1", { id: "creator-h" }, page.title),
    h("div", { class: "creator-layout" }, form,
      h("aside", { class: "json-view", "aria-labelledby": "json-h" }, h("h2", { id: "json-h" }, "Request (JSON)"), json)));
  addSource();

  function body() {
    const hyper = {};
    const put = (key, input) => { if (input.value !== "") hyper[key] = input.value; };
    put("max_steps", f.maxSteps); put("epochs", f.epochs); put("learning_rate", f.lr);
    put("batch_size", f.batch); put("warmup_steps", f.warmup); put("seed", f.seed);
    Object.assign(hyper, parsePairs(f.extraHyper.value, "More hyperparameters"));
    const training = {
      training_type: f.trainingType.value,
      base_model: { model_id: f.model.value.trim(), ...(f.revision.value.trim() ? { revision: f.revision.value.trim() } : {}) },
      framework: { type: f.framework.value, ...(f.framework.value === "CUSTOM" ? { custom_script_path: f.script.value.trim() } : {}) },
      hyperparameters: hyper,
      priority: Number(f.priority.value || 5),
      max_retries: Number(f.maxRetries.value || 0),
    };
    const environment = parsePairs(f.environment.value, "Environment");
    if (Object.keys(environment).length) training.environment = environment;
    const data = { sources: sourceList() };
    if (f.validationSplit.value !== "" && Number(f.validationSplit.value) > 0) data.validation_split = Number(f.validationSplit.value);
    if (f.maxSeq.value) data.max_seq_length = Number(f.maxSeq.value);
    const resources = { gpu_count: Number(f.gpuCount.value || 0), num_nodes: Number(f.numNodes.value || 1) };
    if (f.gpuType.value.trim()) resources.gpu_type = f.gpuType.value.trim();
    if (f.maxRuntime.value) resources.max_runtime_seconds = Number(f.maxRuntime.value);
    const selector = parsePairs(f.nodeSelector.value, "Node selector");
    if (Object.keys(selector).length) resources.node_selector = selector;
    const output = { save_final_model: f.saveFinal.input.checked };
    if (f.outputPath.value.trim()) output.output_path = f.outputPath.value.trim();
    if (f.ckptInterval.value) output.checkpoint_interval_steps = Number(f.ckptInterval.value);
    if (f.keepLast.value) output.keep_last_checkpoints = Number(f.keepLast.value);
    if (f.exportFormat.value) output.export_format = f.exportFormat.value;
    const scheduling = { preemptible: f.preemptible.input.checked };
    if (f.queue.value.trim()) scheduling.queue_name = f.queue.value.trim();
    if (f.maxQueueWait.value) scheduling.max_queue_wait_seconds = Number(f.maxQueueWait.value);
    if (f.startAfter.value) scheduling.start_after = new Date(f.startAfter.value).toISOString();
    const affinity = f.affinity.value.split(/[\s,]+/).filter(Boolean);
    if (affinity.length) scheduling.node_affinity = affinity;
    const out = {
      name: f.name.value.trim(), training_config: training, data_config: data, resource_config: resources,
      output_config: output, scheduling_config: scheduling,
    };
    const labels = parsePairs(f.labels.value, "Labels");
    if (Object.keys(labels).length) out.labels = labels;
    return out;
  }

  function sourceList() {
    return sources.map((row) => ({ path: row.path.value.trim(), ...(row.format.value ? { format: row.format.value } : {}) }));
  }

  // A submission keeps its key until the request changes or succeeds, so a repeat (double click,
  // a retry after a lost answer) replays the first answer instead of creating a second job.
  let key = newKey();
  let lastJson = "";
  function update() {
    customField.hidden = f.framework.value !== "CUSTOM";
    try {
      const text = JSON.stringify(body(), null, 2);
      json.textContent = text;
      if (text !== lastJson) { lastJson = text; key = newKey(); }
    } catch (err) {
      json.textContent = `// ${err.message}`;
    }
  }
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  update();

  async function validate() {
    const list = sourceList();
    if (list.some((s) => !s.path)) {
      clear(validateSummary, notice("error", "Give every source a path first."));
      return;
    }
    validateBtn.disabled = true;
    clear(validateSummary, h("p", { class: "loading" }, "Reading the data…"));
    for (const row of sources) clear(row.result);
    try {
      const data = await api.post("data/validate", { sources: list, training_type: f.trainingType.value });
      const results = data.results || [];
      sources.forEach((row, i) => clear(row.result, validationResult(results[i])));
      clear(validateSummary, data.valid
        ? notice("ok", `All ${results.length} source(s) are valid.`)
        : notice("error", "Some data is not valid; see each source."));
    } catch (err) {
      clear(validateSummary, errorBox(err, "Validation failed"));
    } finally {
      validateBtn.disabled = false;
    }
  }

  let inFlight = false;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (inFlight) return;
    let payload;
    try {
      payload = body();
    } catch (err) {
      clear(outcome, errorBox(err));
      return;
    }
    const missing = [];
    if (!payload.name) missing.push(["name", f.name]);
    if (!payload.training_config.base_model.model_id) missing.push(["base model", f.model]);
    if (payload.data_config.sources.some((s) => !s.path)) missing.push(["data source path", sources.find((s) => !s.path.value.trim()).path]);
    if (missing.length) {
      clear(outcome, notice("error", `Fill in: ${missing.map(([n]) => n).join(", ")}.`));
      missing[0][1].focus();
      return;
    }
    inFlight = true;
    submitBtn.disabled = true;
    clear(outcome, h("p", { class: "loading" }, "Submitting…"));
    try {
      const data = await api.post("jobs", payload, { headers: { "Idempotency-Key": key } });
      const href = `${api.base}${monitorRoute}?job=${encodeURIComponent(data.job_id)}`;
      clear(outcome, notice("ok", "Job submitted: ", h("a", { href, class: "mono", id: "new-job-link" }, data.job_id),
        ` (${data.status || "accepted"})`, data.message ? ` · ${data.message}` : ""));
      key = newKey();
    } catch (err) {
      clear(outcome, errorBox(err, "The job was not submitted"));
    } finally {
      inFlight = false;
      submitBtn.disabled = false;
    }
  });
}

function validationResult(r) {
  if (!r) return null;
  const errors = Array.isArray(r.errors) ? r.errors : [];
  const warnings = Array.isArray(r.warnings) ? r.warnings : [];
  return h("div", { class: `validation-result ${r.valid ? "valid" : "invalid"}`, role: r.valid ? "status" : "alert" },
    h("p", {}, h("strong", {}, r.valid ? "Valid" : "Not valid"),
      ` · ${r.format || "?"} · ${Number(r.num_rows || 0).toLocaleString("en")} rows · ${fmtBytes(r.size_bytes)}`,
      r.columns?.length ? ` · columns: ${r.columns.join(", ")}` : ""),
    errors.length ? h("table", { class: "row-errors" },
      h("caption", {}, "Problems by row"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Row"), h("th", { scope: "col" }, "Problem"))),
      h("tbody", {}, errors.map((e) => h("tr", {}, h("td", { class: "num" }, e.row ? String(e.row) : "—"), h("td", {}, e.message))))) : null,
    warnings.length ? h("ul", { class: "warnings" }, warnings.map((w) => h("li", {}, typeof w === "string" ? w : JSON.stringify(w)))) : null);
}
