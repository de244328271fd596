// The session (the bearer token in sessionStorage) and calls to the module's API with it.

const TOKEN_KEY = "scaimind.token";
const configEl = document.getElementById("scaimind-config");
export const config = JSON.parse(configEl ? configEl.textContent : "{}");
// The console root (…/ui/) and the API root above it (…/v1/modules/scaimind/).
export const base = document.querySelector('meta[name="scaimind-base"]')?.content || "./";
export const apiBase = new URL("../", new URL(base, location.href)).href;

export class ApiError extends Error {
  constructor(status, code, message, { details = [], retryAfter = null, requestId = "" } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }
}

// --- session -------------------------------------------------------------------------------

// A `#token=…` fragment (from `scaimind console`) moves to sessionStorage and leaves the address
// bar, so it is neither bookmarked, shared by copy-paste nor kept in history.
export function adoptFragmentToken() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return false;
  setToken(decodeURIComponent(match[1]));
  history.replaceState(history.state, "", location.pathname + location.search);
  return true;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value.trim().replace(/^Bearer\s+/i, ""));
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// The claims of a JWT, unverified (for display and for hiding actions only); null for an API
// key or anything else the browser cannot read.
export function claims() {
  const parts = token().split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(Array.from(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, "=")),
      (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""));
    const value = JSON.parse(json);
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

// A claim as the server reads it (SCAIMIND_JWT_*_CLAIM): a top-level claim of exactly that
// name, else a dotted path into nested objects (Keycloak's realm_access.roles).
export function claim(c, name) {
  if (Object.prototype.hasOwnProperty.call(c, name)) return c[name];
  let value = c;
  for (const part of name.split(".")) {
    if (!value || typeof value !== "object" || !Object.prototype.hasOwnProperty.call(value, part)) return undefined;
    value = value[part];
  }
  return value;
}

const strings = (value) => (typeof value === "string" ? [value] : Array.isArray(value) ? value.filter((v) => typeof v === "string") : []);

// Permissions the token's role(s) and scope grant (the server's table and claim names, from the
// page config), or null when unknown: then every action is offered and the API's answer is shown.
export function permissions() {
  const c = claims();
  if (!c) return null;
  const names = config.claims || { role: "role", scope: "scope" };
  const granted = new Set();
  for (const role of strings(claim(c, names.role))) for (const key of config.roles?.[role] || []) granted.add(key);
  for (const item of strings(claim(c, names.scope))) for (const key of item.split(/\s+/)) if (key) granted.add(key);
  return granted;
}

export function can(permission) {
  const granted = permissions();
  return granted === null || granted.has(permission);
}

// --- connection state ----------------------------------------------------------------------

const listeners = new Set();
let online = true;
export function onConnection(fn) { listeners.add(fn); }
export function connectionChanged(ok, message = "") {
  if (ok === online && ok) return;
  online = ok;
  for (const fn of listeners) fn(ok, message);
}

let unauthorized = null;
export function onUnauthorized(fn) { unauthorized = fn; }

// --- calls ---------------------------------------------------------------------------------

export function apiUrl(path, params) {
  const url = new URL(path.replace(/^\//, ""), apiBase);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, String(v));
  }
  return url;
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${token()}`, ...extra };
}

export async function errorOf(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON: fall back to the status line */ }
  const e = body && body.error;
  const retry = Number(resp.headers.get("Retry-After")) || null;
  return new ApiError(resp.status, e?.code || `HTTP_${resp.status}`,
    e?.message || `${resp.status} ${resp.statusText || "error"}`,
    { details: e?.details || [], retryAfter: e?.retry_after ?? retry, requestId: body?.meta?.request_id || resp.headers.get("X-Request-ID") || "" });
}

export const NETWORK_MESSAGE = "Cannot reach the ScaiMind server: the connection was lost or the server is down.";

export async function call(method, path, { params, body, headers, signal } = {}) {
  const init = { method, headers: authHeaders({ Accept: "application/json", ...headers }), signal, cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(apiUrl(path, params), init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    connectionChanged(false, NETWORK_MESSAGE);
    throw new ApiError(0, "NETWORK_ERROR", NETWORK_MESSAGE);
  }
  connectionChanged(true);
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401 && unauthorized) unauthorized(err);
    throw err;
  }
  const json = await resp.json();
  return json && typeof json === "object" && "data" in json ? json.data : json;
}

export const get = (path, params, opts = {}) => call("GET", path, { ...opts, params });
export const post = (path, body, opts = {}) => call("POST", path, { ...opts, body });
