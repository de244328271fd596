// The Training Monitor's actions: pause, resume from a chosen checkpoint, cancel, and retry with
// modified resources. Each shows the API's answer (or its error message) next to it.

import * as api from "../api.js";
import { TERMINAL, checkbox, clear, errorBox, field, h, newKey, notice, parsePairs } from "../dom.js";

const PAUSABLE = new Set(["SCHEDULING", "PREPARING", "TRAINING", "CHECKPOINTING", "EVALUATING", "EXPORTING"]);
const RETRYABLE = new Set(["FAILED", "PREEMPTED"]);

export function actionsPanel(jobId, currentJob, { changed, resumed }) {
  const path = (verb) => `jobs/${encodeURIComponent(jobId)}/${verb}`;
  const result = h("div", { class: "action-result", "aria-live": "polite" });
  const buttons = h("div", { class: "buttons" });
  const forms = h("div");
  const el = h("section", { class: "actions", "aria-labelledby": "actions-h" },
    h("h2", { id: "actions-h" }, "Actions"), buttons, forms, result);
  let open = null; // the form shown: "resume" | "cancel" | "retry"

  if (!api.can("scaimind:manage")) {
    el.hidden = true;
    return { el, update() {} };
  }

  async function act(verb, body, label, opts = {}) {
    clear(result, h("p", { class: "loading" }, `${label}…`));
    for (const b of el.querySelectorAll("button")) b.disabled = true;
    try {
      const data = await api.post(path(verb), body, opts);
      clear(result, notice("ok", `${label}: `, data?.message || data?.status || "done",
        data?.job_id && data.job_id !== jobId
          ? h("span", {}, " · ", h("a", { href: `?job=${encodeURIComponent(data.job_id)}` }, `open ${data.job_id}`)) : null));
      open = null;
      changed();
      return data;
    } catch (err) {
      clear(result, errorBox(err, `${label} failed`));
      return null;
    } finally {
      for (const b of el.querySelectorAll("button")) b.disabled = false;
    }
  }

  function resumeForm(job) {
    const checkpoints = [...(job.checkpoints || [])].reverse();
    const choice = h("select", { name: "checkpoint_id" },
      h("option", { value: "" }, "Latest checkpoint"),
      checkpoints.map((c) => h("option", { value: c.checkpoint_id }, `${c.checkpoint_id} (step ${c.step})`)));
    const form = h("form", { class: "inline-form", "aria-label": "Resume" }, field("Resume from", choice),
      h("button", { type: "submit", class: "primary" }, "Resume"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = choice.value ? { checkpoint_id: choice.value } : {};
      if (await act("resume", body, "Resume")) resumed();
    });
    return form;
  }

  function cancelForm() {
    const reason = h("input", { type: "text", name: "reason", maxlength: 1024, autocomplete: "off" });
    const form = h("form", { class: "inline-form", "aria-label": "Cancel the job" }, field("Reason (optional)", reason),
      h("button", { type: "submit", class: "danger" }, "Confirm cancel"),
      h("button", { type: "button", onclick: () => { open = null; update(currentJob()); } }, "Keep running"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      act("cancel", reason.value ? { reason: reason.value } : {}, "Cancel");
    });
    return form;
  }

  function retryForm(job) {
    const rc = job.resource_config || {};
    const modify = checkbox("Change resources", false, { name: "modify_resources" });
    const gpus = h("input", { type: "number", name: "gpu_count", min: 0, value: rc.gpu_count ?? 1 });
    const gpuType = h("input", { type: "text", name: "gpu_type", value: rc.gpu_type || "", autocomplete: "off" });
    const nodes = h("input", { type: "number", name: "num_nodes", min: 1, value: rc.num_nodes || 1 });
    const selector = h("input", { type: "text", name: "node_selector", value: Object.entries(rc.node_selector || {}).map(([k, v]) => `${k}=${v}`).join(", "), autocomplete: "off" });
    const resources = h("fieldset", { disabled: true }, h("legend", {}, "New resources"),
      field("GPUs per node", gpus), field("GPU type", gpuType), field("Nodes", nodes), field("Node selector (key=value)", selector));
    modify.input.addEventListener("change", () => { resources.disabled = !modify.input.checked; });
    const checkpoints = [...(job.checkpoints || [])].reverse();
    const choice = h("select", { name: "checkpoint_id" }, h("option", { value: "" }, "Latest checkpoint"),
      checkpoints.map((c) => h("option", { value: c.checkpoint_id }, `${c.checkpoint_id} (step ${c.step})`)));
    const key = newKey();
    const form = h("form", { class: "inline-form wide", "aria-label": "Retry the job" }, field("Start from", choice), modify.el, resources,
      h("button", { type: "submit", class: "primary" }, "Retry"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = { checkpoint_id: choice.value, modify_resources: modify.input.checked };
      if (modify.input.checked) {
        try {
          body.new_resource_config = {
            gpu_count: Number(gpus.value), gpu_type: gpuType.value.trim(), num_nodes: Number(nodes.value) || 1,
            node_selector: parsePairs(selector.value, "Node selector"),
          };
        } catch (err) {
          clear(result, errorBox(err));
          return;
        }
      }
      // One key per retry form: a double submission creates one child job.
      act("retry", body, "Retry", { headers: { "Idempotency-Key": key } });
    });
    return form;
  }

  function show(which) {
    open = open === which ? null : which;
    update(currentJob());
  }

  let shownKey = "";
  function update(job) {
    if (!job) return;
    const s = job.status;
    if (open === "resume" && s !== "PAUSED") open = null;
    if (open === "retry" && !RETRYABLE.has(s)) open = null;
    if (open === "cancel" && TERMINAL.has(s)) open = null;
    const cps = open === "resume" || open === "retry" ? (job.checkpoints || []).map((c) => c.checkpoint_id).join(",") : "";
    // Rebuild only when something the controls depend on changed, so focus and input survive.
    const key = `${s}|${open}|${cps}`;
    if (key === shownKey) return;
    shownKey = key;
    const list = [];
    if (PAUSABLE.has(s)) list.push(h("button", { type: "button", onclick: () => act("pause", { save_checkpoint: true }, "Pause") }, "Pause"));
    if (s === "PAUSED") list.push(h("button", { type: "button", "aria-expanded": String(open === "resume"), onclick: () => show("resume") }, "Resume…"));
    if (RETRYABLE.has(s)) list.push(h("button", { type: "button", "aria-expanded": String(open === "retry"), onclick: () => show("retry") }, "Retry…"));
    if (!TERMINAL.has(s)) list.push(h("button", { type: "button", class: "danger", "aria-expanded": String(open === "cancel"), onclick: () => show("cancel") }, "Cancel…"));
    if (!list.length) list.push(h("span", { class: "muted" }, `No actions for a ${s} job.`));
    clear(buttons, list);
    clear(forms, open === "resume" ? resumeForm(job) : open === "retry" ? retryForm(job) : open === "cancel" ? cancelForm() : null);
    forms.querySelector("select, input")?.focus();
  }

  return { el, update };
}
