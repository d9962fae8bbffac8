// pgharness web UI: health, connection and users screens over the HTTP API. No build step,
// no external assets: served from the binary as they are here.
"use strict";

const REFRESH_MS = 2000;
const PAGE_SIZE = 20;
const $ = (id) => document.getElementById(id);

let offline = false;
let usersOffset = 0;
let usersQuery = "";

/** Calls the API; a network failure shows the offline banner (cleared by the next success). */
async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    setOffline(true);
    throw error;
  }
  setOffline(false);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  return { status: response.status, ok: response.ok, data };
}

function setOffline(state) {
  offline = state;
  $("offline").hidden = !state;
}

function showMessage(text, kind = "info") {
  const message = $("message");
  message.textContent = text;
  message.dataset.kind = kind;
  message.hidden = !text;
}

/** The API's `detail` as readable text: a message, or "field: message" items. */
function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${item.loc.slice(1).join(" ")}: ${item.msg}`).join("; ");
  }
  return "unexpected answer from the API";
}

function text(id, value) {
  $(id).textContent = value === null || value === undefined || value === "" ? "–" : String(value);
}

// ---- Health -------------------------------------------------------------------------------

async function refreshHealth() {
  let reply;
  try { reply = await api("GET", "/health"); } catch { return; }
  const health = reply.data || {};
  const badge = $("health-status");
  badge.dataset.state = health.status || "unknown";
  badge.textContent = health.status === "healthy" ? "Healthy" : "Unhealthy";
  text("health-environment", health.environment);
  text("health-version", health.version);
  const database = health.checks ? health.checks.database : null;
  text("health-database", database === "healthy" ? "healthy"
    : `unhealthy${health.database && health.database.reason ? ` (${health.database.reason})` : ""}`);
  text("health-latency", health.database && health.database.latency_ms !== null
    ? `${health.database.latency_ms.toFixed(2)} ms` : null);
  if (health.pool) {
    text("health-pool", `${health.pool.in_use} in use, ${health.pool.idle} idle, ${health.pool.max} max`);
  }
}

// ---- Connection ---------------------------------------------------------------------------

async function refreshConnection() {
  let reply;
  try { reply = await api("GET", "/api/connection"); } catch { return; }
  if (!reply.ok) { showMessage(describe(reply.data && reply.data.detail), "error"); return; }
  const info = reply.data;
  text("connection-url", info.url);
  text("connection-host", info.host);
  text("connection-port", info.port);
  text("connection-database", info.database);
  text("connection-user", info.user);
  text("connection-version", info.reachable ? info.server_version : "database unreachable");
  text("connection-mode", info.mode);
  text("connection-data", info.data_directory);
  text("connection-active", info.active_connections);
  const settings = info.pool_settings;
  text("connection-pool-settings",
    `size ${settings.size} + ${settings.max_overflow} overflow, timeout ${settings.timeout_seconds} s, recycle ${settings.recycle_seconds} s`);
  const pool = info.pool;
  const gauge = $("pool-gauge");
  gauge.querySelector(".gauge-in-use").style.width = `${(100 * pool.in_use) / pool.max}%`;
  gauge.querySelector(".gauge-idle").style.width = `${(100 * pool.idle) / pool.max}%`;
  gauge.setAttribute("aria-label", `pool usage: ${pool.in_use} in use, ${pool.idle} idle of ${pool.max}`);
  text("pool-text", `${pool.in_use} in use · ${pool.idle} idle · ${pool.max} max · ${pool.waited} waits · ${pool.connection_errors} errors`);
  const migrations = $("migrations");
  migrations.replaceChildren();
  if (info.migrations) {
    for (const entry of info.migrations.applied) {
      migrations.append(item(`✓ ${entry.version} ${entry.description} (applied ${entry.applied_at})`));
    }
    for (const entry of info.migrations.pending) {
      migrations.append(item(`… ${entry.version} ${entry.description} (pending)`));
    }
  }
  refreshSlowQueries();
}

function item(content) {
  const element = document.createElement("li");
  element.textContent = content;
  return element;
}

function row(cells, id) {
  const tr = document.createElement("tr");
  for (const [content, className] of cells) {
    const td = document.createElement("td");
    td.textContent = content;
    if (className) td.className = className;
    tr.append(td);
  }
  if (id !== undefined) {
    tr.dataset.id = id;
    tr.tabIndex = 0;
  }
  return tr;
}

async function refreshSlowQueries() {
  let reply;
  try { reply = await api("GET", "/api/queries/slow"); } catch { return; }
  const body = $("slow-queries");
  body.replaceChildren();
  if (!reply.ok) { $("slow-note").textContent = describe(reply.data && reply.data.detail); return; }
  $("slow-note").textContent = reply.data.available ? "" : reply.data.reason;
  for (const query of reply.data.queries) {
    body.append(row([[query.query, "sql"], [query.calls], [query.mean_ms.toFixed(2)], [query.total_ms.toFixed(2)]]));
  }
}

async function copyConnectionString() {
  try {
    const reply = await api("POST", "/api/connection/reveal");
    if (!reply.ok) { showMessage(describe(reply.data.detail), "error"); return; }
    await navigator.clipboard.writeText(reply.data.url);
    showMessage("Connection string copied to the clipboard (it holds the password).");
  } catch (error) {
    showMessage(`Could not copy the connection string: ${error.message}`, "error");
  }
}

// ---- Users --------------------------------------------------------------------------------

async function refreshUsers() {
  const query = new URLSearchParams({ limit: PAGE_SIZE, offset: usersOffset });
  if (usersQuery) query.set("q", usersQuery);
  let reply;
  try { reply = await api("GET", `/users?${query}`); } catch { return; }
  if (!reply.ok) { showMessage(describe(reply.data && reply.data.detail), "error"); return; }
  const page = reply.data;
  const rows = $("user-rows");
  rows.replaceChildren(...page.items.map((user) =>
    row([[user.id], [user.username], [user.email], [new Date(user.created_at).toLocaleString()]], user.id)));
  const last = Math.min(page.offset + page.items.length, page.total);
  text("page-info", page.total === 0 ? "no users" : `${page.offset + 1}–${last} of ${page.total}`);
  $("previous-page").disabled = page.offset === 0;
  $("next-page").disabled = last >= page.total;
}

function clearFieldErrors() {
  for (const field of ["username", "email"]) {
    $(`${field}-error`).textContent = "";
    $(field).removeAttribute("aria-invalid");
  }
}

/** Shows 409/422 items next to their fields; returns what could not be placed. */
function showFieldErrors(detail) {
  const unplaced = [];
  for (const error of Array.isArray(detail) ? detail : []) {
    const field = error.loc[error.loc.length - 1];
    if (field === "username" || field === "email") {
      $(`${field}-error`).textContent = error.msg;
      $(field).setAttribute("aria-invalid", "true");
    } else {
      unplaced.push(error);
    }
  }
  if (!Array.isArray(detail)) showMessage(describe(detail), "error");
  else if (unplaced.length) showMessage(describe(unplaced), "error");
}

function editUser(user) {
  clearFieldErrors();
  $("user-id").value = user ? user.id : "";
  $("username").value = user ? user.username : "";
  $("email").value = user ? user.email : "";
  $("user-form-title").textContent = user ? `User ${user.id}` : "New user";
  $("save-user").textContent = user ? "Save" : "Create";
  $("cancel-edit").hidden = !user;
  $("delete-user").hidden = !user;
  $("username").focus();
}

async function saveUser(event) {
  event.preventDefault();
  clearFieldErrors();
  const id = $("user-id").value;
  const body = { username: $("username").value, email: $("email").value };
  let reply;
  try { reply = await api(id ? "PATCH" : "POST", id ? `/users/${id}` : "/users", body); } catch { return; }
  if (reply.ok) {
    showMessage(id ? `Saved user ${reply.data.username}.` : `Created user ${reply.data.username}.`);
    editUser(null);
    refreshUsers();
  } else {
    showFieldErrors(reply.data && reply.data.detail);
  }
}

async function deleteUser() {
  const id = $("user-id").value;
  if (!id || !window.confirm(`Delete user ${$("username").value}? This cannot be undone.`)) return;
  let reply;
  try { reply = await api("DELETE", `/users/${id}`); } catch { return; }
  if (reply.status === 204) {
    showMessage("User deleted.");
    editUser(null);
    refreshUsers();
  } else {
    showMessage(describe(reply.data && reply.data.detail), "error");
  }
}

/** CSV (`username,email` per line, optional header) or a JSON array. */
function parseBatch(input) {
  const trimmed = input.trim();
  if (trimmed.startsWith("[")) return JSON.parse(trimmed);
  return trimmed.split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && line.toLowerCase() !== "username,email")
    .map((line) => {
      const [username, email] = line.split(",").map((part) => part.trim());
      return { username: username || "", email: email || "" };
    });
}

async function importBatch(event) {
  event.preventDefault();
  const result = $("batch-result");
  result.replaceChildren();
  let users;
  try {
    users = parseBatch($("batch").value);
  } catch (error) {
    result.append(paragraph(`Not valid JSON: ${error.message}`, "failed"));
    return;
  }
  let reply;
  try { reply = await api("POST", "/users/batch", users); } catch { return; }
  if (reply.ok) {
    result.append(paragraph(`Imported ${reply.data.created} users.`, "ok"));
    $("batch").value = "";
    refreshUsers();
    return;
  }
  result.append(paragraph("Nothing was imported:", "failed"));
  const list = document.createElement("ul");
  const detail = reply.data && reply.data.detail;
  for (const error of Array.isArray(detail) ? detail : [{ loc: [], msg: describe(detail) }]) {
    const rowIndex = error.loc.find((part) => typeof part === "number");
    const where = rowIndex === undefined ? "" : `Row ${rowIndex + 1} (${error.loc[error.loc.length - 1]}): `;
    list.append(item(`${where}${error.msg}`));
  }
  result.append(list);
}

function paragraph(content, className) {
  const element = document.createElement("p");
  element.textContent = content;
  element.className = className;
  return element;
}

// ---- Screens ------------------------------------------------------------------------------

const screens = { health: refreshHealth, connection: refreshConnection, users: refreshUsers };
let current = null;

function showScreen() {
  const name = (location.hash.replace(/^#\//, "") || "health");
  current = screens[name] ? name : "health";
  for (const screen of Object.keys(screens)) $(screen).hidden = screen !== current;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.screen === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  showMessage("");
  screens[current]();
}

function tick() {
  // Health and connection are live; the users list refreshes on its own only to recover.
  if (current === "health" || current === "connection" || offline) screens[current]();
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", showScreen);
  $("copy-connection").addEventListener("click", copyConnectionString);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    usersQuery = $("search").value.trim();
    usersOffset = 0;
    refreshUsers();
  });
  $("previous-page").addEventListener("click", () => { usersOffset = Math.max(0, usersOffset - PAGE_SIZE); refreshUsers(); });
  $("next-page").addEventListener("click", () => { usersOffset += PAGE_SIZE; refreshUsers(); });
  $("user-form").addEventListener("submit", saveUser);
  $("cancel-edit").addEventListener("click", () => editUser(null));
  $("delete-user").addEventListener("click", deleteUser);
  $("batch-form").addEventListener("submit", importBatch);
  const openRow = async (target) => {
    const tr = target.closest("tr[data-id]");
    if (!tr) return;
    let reply;
    try { reply = await api("GET", `/users/${tr.dataset.id}`); } catch { return; }
    if (reply.ok) editUser(reply.data);
    else showMessage(describe(reply.data && reply.data.detail), "error");
  };
  $("user-rows").addEventListener("click", (event) => openRow(event.target));
  $("user-rows").addEventListener("keydown", (event) => { if (event.key === "Enter") openRow(event.target); });
  showScreen();
  setInterval(tick, REFRESH_MS);
});
