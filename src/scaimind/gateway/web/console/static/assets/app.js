// The console's entry point: sign-in, navigation, the connection banner and the current page.

import {
  adoptFragmentToken, base, can, claim, claims, config, onConnection, onUnauthorized, setToken, signOut, token,
} from "./api.js";
import { clear, errorBox, field, h, notice } from "./dom.js";

const PAGE_MODULES = {
  "training-dashboard": "./pages/dashboard.js",
  "training-monitor": "./pages/monitor.js",
  "job-creator": "./pages/creator.js",
  "hardware-monitor": "./pages/cluster.js",
  "evaluation-center": "./pages/evaluations.js",
};

const main = document.getElementById("main");

function currentPage() {
  const root = new URL(base, location.href).pathname;
  const route = location.pathname.startsWith(root) ? location.pathname.slice(root.length).replace(/\/+$/, "") : "";
  return config.pages.find((p) => p.route === route) || config.pages[0];
}

function renderNav(page) {
  const nav = document.getElementById("nav");
  clear(nav, config.pages.map((p) => h("li", {},
    h("a", { href: base + p.route, "aria-current": p.id === page.id ? "page" : undefined }, p.title))));
}

function renderWho() {
  const who = document.getElementById("who");
  if (!token()) { clear(who); return; }
  const c = claims();
  const names = config.claims || { tenant: "tenant_id", role: "role", scope: "scope" };
  const shown = (value) => (Array.isArray(value) ? value.join(" ") : value);
  const [tenant, role, scope] = c ? [names.tenant, names.role, names.scope].map((n) => shown(claim(c, n))) : [];
  const text = c ? `${c.sub || "?"} · ${tenant || "?"} · ${role || "no role"}` : "API key";
  clear(who, h("span", { class: "who-text", title: scope ? `scope: ${scope}` : undefined }, text),
    h("button", { type: "button", class: "link", onclick: () => { signOut(); location.reload(); } }, "Sign out"));
}

function renderSignIn(reason) {
  document.title = "Sign in · ScaiMind console";
  const input = h("textarea", { rows: 4, required: true, autocomplete: "off", spellcheck: "false", name: "token" });
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-h" },
    h("h1", { id: "signin-h" }, "Sign in to the ScaiMind console"),
    reason ? errorBox(reason, "Sign-in needed") : null,
    field("Bearer token (JWT or sgk_ API key)", input,
      "Print one with `scaimind token --tenant T --user U`, or open the URL `scaimind console` prints. The token stays in this tab only (sessionStorage)."),
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!input.value.trim()) return;
    setToken(input.value);
    location.reload();
  });
  clear(main, form);
  input.focus();
}

function expired() {
  const c = claims();
  return c && typeof c.exp === "number" && c.exp * 1000 < Date.now();
}

async function boot() {
  document.getElementById("version").textContent = config.version || "";
  adoptFragmentToken();
  const page = currentPage();
  renderNav(page);
  renderWho();
  document.getElementById("skip-link").addEventListener("click", (ev) => { ev.preventDefault(); main.focus(); });

  const banner = document.getElementById("banner");
  onConnection((ok, message) => {
    banner.hidden = ok;
    banner.textContent = ok ? "" : `${message} Retrying…`;
    document.body.classList.toggle("offline", !ok);
  });

  let signingIn = false;
  onUnauthorized((err) => {
    if (signingIn) return;
    signingIn = true;
    window.dispatchEvent(new Event("scaimind:leave"));
    renderSignIn(err);
  });

  if (!token()) { renderSignIn(null); return; }
  if (expired()) { renderSignIn({ message: "Your token has expired.", code: "AUTH_TOKEN_EXPIRED" }); return; }

  document.title = `${page.title} · ScaiMind console`;
  const lacks = !can(page.permission) && !(page.id === "evaluation-center" && can("scaimind:view"));
  const mod = await import(PAGE_MODULES[page.id]);
  clear(main);
  if (lacks) {
    main.append(notice("warn", `This page needs the permission ${page.permission}, which your token does not carry; `,
      "the server will refuse what it asks for."));
  }
  await mod.render(main, { page });
}

boot().catch((err) => {
  console.error(err);
  clear(main, errorBox(err, "The console could not start"));
});
