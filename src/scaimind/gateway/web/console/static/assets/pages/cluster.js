// Hardware Monitor: cluster capacity, nodes (GPUs, utilisation, memory, status) with drain and
// enable for cluster admins, and the queues with their estimated waits.

import * as api from "../api.js";
import {
  add, badge, checkbox, clear, errorBox, every, field, fmtBytes, fmtDuration, h, labelChips, notice, timeCell,
} from "../dom.js";

const REFRESH_MS = 3000;

export async function render(main, { page }) {
  const admin = api.can("scaimind:cluster_admin");
  const monitorRoute = api.config.pages.find((p) => p.id === "training-monitor").route;
  const jobLink = (id) => h("a", { class: "mono", href: `${api.base}${monitorRoute}?job=${encodeURIComponent(id)}` }, id);
  const summary = h("div", { "aria-live": "polite" }, h("p", { class: "loading" }, "Loading the cluster…"));
  const nodesBox = h("div", { class: "table-wrap" }, h("p", { class: "loading" }, "Loading nodes…"));
  const result = h("div", { class: "action-result", "aria-live": "polite" });
  const queueBox = h("div", {}, h("p", { class: "loading" }, "Loading queues…"));
  add(main, h("h1", {}, page.title),
    admin ? null : notice("info", "Read-only: draining and enabling nodes needs scaimind:cluster_admin."),
    h("section", { "aria-labelledby": "cap-h" }, h("h2", { id: "cap-h", class: "sr-only" }, "Capacity"), summary),
    h("section", { "aria-labelledby": "nodes-h" }, h("h2", { id: "nodes-h" }, "Nodes"), result, nodesBox),
    h("section", { "aria-labelledby": "queues-h" }, h("h2", { id: "queues-h" }, "Queues"), queueBox));

  let drainFor = null; // node id whose drain form is open
  let lastNodes = "";

  async function act(nodeId, verb, body, label) {
    clear(result, h("p", { class: "loading" }, `${label} ${nodeId}…`));
    try {
      const node = await api.post(`cluster/nodes/${encodeURIComponent(nodeId)}/${verb}`, body);
      clear(result, notice("ok", `${label} ${nodeId}: node is ${node?.status || "updated"}.`));
      drainFor = null;
    } catch (err) {
      clear(result, errorBox(err, `${label} ${nodeId} failed`));
    }
    lastNodes = "";
    refresh.now();
  }

  function drainForm(node) {
    const reason = h("input", { type: "text", name: "reason", maxlength: 1024, autocomplete: "off" });
    const force = checkbox("Force: preempt its running jobs now (they checkpoint and become PREEMPTED)", false, { name: "force" });
    const form = h("form", { class: "inline-form", "aria-label": `Drain ${node.node_id}` }, field("Reason", reason), force.el,
      h("button", { type: "submit", class: "danger" }, "Drain"),
      h("button", { type: "button", onclick: () => { drainFor = null; lastNodes = ""; refresh.now(); } }, "Back"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      act(node.node_id, "drain", { force: force.input.checked, reason: reason.value }, "Drain");
    });
    queueMicrotask(() => reason.focus());
    return form;
  }

  function nodeRow(node) {
    const gpus = Array.isArray(node.gpus) ? node.gpus : [];
    const util = gpus.length ? gpus.reduce((a, g) => a + (Number(g.utilization_percent) || 0), 0) / gpus.length : 0;
    const used = gpus.reduce((a, g) => a + (Number(g.memory_used_bytes) || 0), 0);
    const total = gpus.reduce((a, g) => a + (Number(g.memory_total_bytes) || 0), 0);
    const actions = [];
    if (admin) {
      if (node.status === "ONLINE") {
        actions.push(h("button", { type: "button", "aria-expanded": String(drainFor === node.node_id),
          onclick: () => { drainFor = drainFor === node.node_id ? null : node.node_id; lastNodes = ""; refresh.now(); } }, `Drain ${node.node_id}…`));
      } else {
        actions.push(h("button", { type: "button", onclick: () => act(node.node_id, "enable", undefined, "Enable") }, `Enable ${node.node_id}`));
      }
    }
    const rows = [h("tr", { dataset: { nodeId: node.node_id } },
      h("th", { scope: "row" }, h("div", { class: "mono" }, node.node_id), h("div", { class: "muted" }, node.hostname || "")),
      h("td", {}, badge(node.status), node.drain_reason ? h("div", { class: "muted" }, node.drain_reason) : null),
      h("td", {}, `${node.gpu_count ?? gpus.length} × ${node.gpu_type || "?"}`, h("div", { class: "muted" }, `${node.gpus_available ?? "?"} free`)),
      h("td", {}, h("meter", { min: 0, max: 100, value: util, "aria-label": `Utilisation of ${node.node_id}` }), ` ${util.toFixed(0)} %`,
        gpus.length > 1 ? h("div", { class: "muted gpu-list" }, gpus.map((g) => `#${g.index}: ${Number(g.utilization_percent || 0).toFixed(0)} %`).join(" · ")) : null),
      h("td", {}, total ? `${fmtBytes(used)} / ${fmtBytes(total)}` : "—"),
      h("td", {}, (node.running_job_ids || []).length ? h("ul", { class: "plain" }, node.running_job_ids.map((id) => h("li", {}, jobLink(id)))) : "—"),
      h("td", {}, labelChips(node.labels)),
      h("td", {}, timeCell(node.last_heartbeat)),
      admin ? h("td", { class: "actions-cell" }, actions) : null)];
    if (drainFor === node.node_id && node.status === "ONLINE") {
      rows.push(h("tr", { class: "form-row" }, h("td", { colspan: 9 }, drainForm(node))));
    }
    return rows;
  }

  async function loadSummary() {
    try {
      const c = await api.get("cluster");
      const byStatus = Object.entries(c.nodes_by_status || {}).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ");
      const tile = (label, value, sub) => h("div", { class: "item" }, h("dt", {}, label), h("dd", {}, value, sub ? h("div", { class: "muted" }, sub) : null));
      clear(summary, h("dl", { class: "summary tiles" },
        tile("Cluster", c.cluster_name || "—", c.coordinator_version),
        tile("Nodes", String(c.total_nodes ?? "—"), byStatus),
        tile("GPUs", `${c.available_gpus ?? "?"} free of ${c.total_gpus ?? "?"}`, `${c.allocated_gpus ?? 0} allocated`),
        tile("Types", (c.gpu_types || []).map((t) => `${t.gpu_type} ${t.available}/${t.total}`).join(", ") || "—"),
        tile("Jobs", `${c.running_jobs ?? 0} running`, `${c.queued_jobs ?? 0} queued`),
        tile("Utilisation", `${Number(c.utilization?.gpu_percent || 0).toFixed(0)} %`)));
    } catch (err) {
      clear(summary, errorBox(err, "The cluster could not be loaded"));
    }
  }

  async function loadNodes() {
    let data;
    try {
      data = await api.get("cluster/nodes", { page_size: 100 });
    } catch (err) {
      clear(nodesBox, errorBox(err, "Nodes could not be loaded"));
      lastNodes = "";
      return;
    }
    const nodes = data.nodes || [];
    // Redraw only on change, so an open drain form keeps its input and focus.
    const snapshot = JSON.stringify(nodes.map((n) => [n.node_id, n.status, n.gpus_available, n.drain_reason, n.running_job_ids,
      (n.gpus || []).map((g) => [Math.round(g.utilization_percent || 0), g.memory_used_bytes])]));
    if (snapshot === lastNodes && nodesBox.querySelector("table")) return;
    if (drainFor && nodesBox.contains(document.activeElement) && snapshot.includes(drainFor) && lastNodes) return;
    lastNodes = snapshot;
    if (!nodes.length) {
      clear(nodesBox, notice("empty", "The coordinator reports no nodes."));
      return;
    }
    clear(nodesBox, h("table", { class: "nodes" },
      h("caption", { class: "sr-only" }, "Nodes"),
      h("thead", {}, h("tr", {}, ["Node", "Status", "GPUs", "Utilisation", "Memory", "Running jobs", "Labels", "Heartbeat", admin ? "Actions" : null]
        .filter(Boolean).map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, nodes.flatMap(nodeRow))));
    if (data.next_page_token) nodesBox.append(h("p", { class: "muted" }, `Showing the first ${nodes.length} of ${data.total_count} nodes.`));
  }

  async function loadQueues() {
    try {
      const data = await api.get("queue");
      const queues = data.queues || [];
      if (!queues.length) {
        clear(queueBox, notice("empty", "No queues."));
        return;
      }
      clear(queueBox, queues.map((q) => h("div", { class: "queue" },
        h("h3", {}, `${q.queue_name || "default"}: ${q.depth ?? 0} waiting, ${q.running ?? 0} running`,
          h("span", { class: "muted" }, ` · oldest wait ${fmtDuration(q.oldest_wait_seconds)} · estimated wait ${fmtDuration(q.estimated_wait_seconds)}`)),
        (q.jobs || []).length ? h("div", { class: "table-wrap" }, h("table", {},
          h("caption", { class: "sr-only" }, `Jobs waiting in ${q.queue_name || "default"}`),
          h("thead", {}, h("tr", {}, ["#", "Job", "Priority", "GPUs", "Waiting", "Starts in"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, q.jobs.map((j) => h("tr", {},
            h("td", { class: "num" }, j.position ?? "—"), h("td", {}, j.name ? `${j.name} ` : "", jobLink(j.job_id)),
            h("td", { class: "num" }, j.priority ?? "—"), h("td", {}, `${j.gpu_count ?? "?"} × ${j.gpu_type || "any"}`),
            h("td", {}, fmtDuration(j.wait_seconds)), h("td", {}, fmtDuration(j.estimated_start_seconds)))))))
          : h("p", { class: "muted" }, "Nothing waiting."))));
    } catch (err) {
      clear(queueBox, errorBox(err, "Queues could not be loaded"));
    }
  }

  const refresh = every(REFRESH_MS, () => Promise.all([loadSummary(), loadNodes(), loadQueues()]));
}
