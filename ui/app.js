// pgharness web UI: health, connection and users screens over the HTTP API. No build step,
// no external assets: served from the binary as they are here.
"use strict";

const REFRESH_MS = 2000;
const PAGE_SIZE = 20;
const $ = (id) => document.getElementById(id);

let offline = false;
let usersOffset = 0;
let usersQuery = "";
let usersSort = "id";
let usersPage = [];

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

// ---- Admin access -------------------------------------------------------------------------

/** The controls that reveal the password or change the server: they need the admin token. */
const ADMIN_CONTROLS = ["copy-connection", "stop-database", "start-database", "restart-database",
  "reset-statistics", "reset-database", "load-fixture", "slow-internal"];
let adminAccess = { admin: false, detail: "Checking access…" };

/** Whether this browser holds the admin cookie; without it the admin controls stay disabled,
 * each saying why and how to get the link. */
async function loadAdminAccess() {
  let reply;
  try { reply = await api("GET", "/api/access"); } catch { return; }
  if (!reply.ok) return;
  adminAccess = reply.data;
  const note = $("admin-note");
  note.hidden = adminAccess.admin;
  note.textContent = adminAccess.admin ? "" : `Read-only: ${adminAccess.detail}`;
  for (const id of ADMIN_CONTROLS) {
    $(id).title = adminAccess.admin ? "" : adminAccess.detail;
    if (!adminAccess.admin) $(id).disabled = true;
  }
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

const HISTORY_MS = 15 * 60 * 1000;
const SVG = "http://www.w3.org/2000/svg";
let serverMode = null;

async function refreshHealth() {
  refreshHistory();
  refreshEvents();
  if (serverMode === null) loadServerMode();
  let reply;
  try { reply = await api("GET", "/health"); } catch { return; }
  const health = reply.data || {};
  const badge = $("health-status");
  badge.dataset.state = health.status || "unknown";
  badge.textContent = { healthy: "Healthy", degraded: "Degraded" }[health.status] ?? "Unhealthy";
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

/** Which server this is: the outage buttons work on the embedded one only. */
async function loadServerMode() {
  let reply;
  try { reply = await api("GET", "/api/connection"); } catch { return; }
  if (!reply.ok) return;
  serverMode = reply.data.mode;
  const external = serverMode !== "embedded";
  for (const id of ["stop-database", "start-database", "restart-database"]) {
    $(id).disabled = external || !adminAccess.admin;
  }
  $("control-note").textContent = external
    ? `Stop, start and restart work on the embedded server only; this API uses the external server at ${reply.data.url}.`
    : "";
}

const CONTROLS = {
  stop: { doing: "Stopping the database…", confirm: "Stop the database? Requests fail until it is started again." },
  start: { doing: "Starting the database…" },
  restart: { doing: "Restarting the database…", confirm: "Restart the database? Open connections are closed." },
};

async function controlDatabase(action) {
  const control = CONTROLS[action];
  if (control.confirm && !window.confirm(control.confirm)) return;
  const buttons = ["stop-database", "start-database", "restart-database"].map($);
  for (const button of buttons) button.disabled = true;
  $("server-state").textContent = control.doing;
  let reply;
  try { reply = await api("POST", `/api/database/${action}`); } catch { reply = null; }
  for (const button of buttons) button.disabled = !adminAccess.admin;
  if (reply && reply.ok) {
    $("server-state").textContent = `Database ${reply.data.status}.`;
  } else {
    $("server-state").textContent = "";
    showMessage(reply ? describe(reply.data && reply.data.detail) : "The API did not answer.", "error");
  }
  refreshHealth();
}

async function refreshHistory() {
  let reply;
  try { reply = await api("GET", "/api/health/history"); } catch { return; }
  if (!reply.ok) return;
  const samples = reply.data.samples;
  const last = samples[samples.length - 1];
  const at = samples.map((sample) => Date.parse(sample.at));
  drawChart("chart-latency", at, [samples.map((sample) => sample.latency_ms)],
    last && last.latency_ms !== null ? `${last.latency_ms.toFixed(2)} ms` : "down");
  drawChart("chart-pool", at, [samples.map((sample) => sample.in_use), samples.map((sample) => sample.idle)],
    last ? `${last.in_use} / ${last.idle}` : "");
  drawChart("chart-requests", at, [samples.map((sample) => sample.requests_per_second)],
    last ? last.requests_per_second.toFixed(1) : "");
  drawChart("chart-errors", at, [samples.map((sample) => 100 * sample.error_rate)],
    last ? `${(100 * last.error_rate).toFixed(1)} %` : "");
}

/** Lines over the last 15 minutes; a null value (no answer) breaks its line. */
function drawChart(id, times, series, now) {
  const figure = $(id);
  figure.querySelector(".now").textContent = now ? `· now ${now}` : "";
  const svg = figure.querySelector("svg");
  const end = times.length ? times[times.length - 1] : Date.now();
  const values = series.flat().filter((value) => value !== null);
  const top = Math.max(1, ...values) * 1.1;
  const x = (time) => (300 * (time - (end - HISTORY_MS))) / HISTORY_MS;
  const y = (value) => 78 - (76 * value) / top;
  svg.replaceChildren();
  series.forEach((points, index) => {
    let segment = [];
    const flush = () => {
      if (segment.length) {
        const line = document.createElementNS(SVG, "polyline");
        line.setAttribute("points", segment.join(" "));
        line.setAttribute("class", `series-${index}`);
        svg.append(line);
      }
      segment = [];
    };
    points.forEach((value, at) => {
      if (value === null) flush();
      else segment.push(`${x(times[at]).toFixed(1)},${y(value).toFixed(1)}`);
    });
    flush();
  });
  svg.dataset.points = String(values.length);
  svg.setAttribute("aria-label", `${figure.querySelector("figcaption").firstChild.textContent.trim()}: ${values.length} samples, now ${now || "none"}`);
}

async function refreshEvents() {
  let reply;
  try { reply = await api("GET", "/api/health/events"); } catch { return; }
  if (!reply.ok) return;
  $("events").replaceChildren(...reply.data.events.slice(0, 50).map((event) => {
    const entry = document.createElement("li");
    entry.dataset.kind = event.kind;
    const time = document.createElement("time");
    time.dateTime = event.at;
    time.textContent = new Date(event.at).toLocaleTimeString();
    const label = document.createElement("strong");
    label.textContent = event.kind.replaceAll("_", " ");
    const message = document.createElement("span");
    message.textContent = event.message;
    entry.append(time, " ", label, " ", message);
    return entry;
  }));
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
  const internal = $("slow-internal").checked ? "?include_internal=true" : "";
  try { reply = await api("GET", `/api/queries/slow${internal}`); } catch { return; }
  const body = $("slow-queries");
  body.replaceChildren();
  if (!reply.ok) { $("slow-note").textContent = describe(reply.data && reply.data.detail); return; }
  $("slow-note").textContent = reply.data.available ? "" : reply.data.reason;
  for (const query of reply.data.queries) {
    body.append(row([[query.query, query.internal ? "sql internal" : "sql"], [query.calls], [query.mean_ms.toFixed(2)],
      [query.max_ms.toFixed(2)], [query.total_ms.toFixed(2)]]));
  }
}

async function resetStatistics() {
  let reply;
  try { reply = await api("POST", "/api/queries/slow/reset"); } catch { return; }
  if (reply.status === 204) showMessage("Statement statistics reset.");
  else showMessage(describe(reply.data && reply.data.detail), "error");
  refreshSlowQueries();
}

// ---- Database -----------------------------------------------------------------------------

function bytes(count) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

async function refreshDatabase() {
  let reply;
  try { reply = await api("GET", "/api/database/overview"); } catch { return; }
  if (!reply.ok) { showMessage(describe(reply.data && reply.data.detail), "error"); return; }
  const overview = reply.data;
  text("database-name", overview.database);
  text("database-size", bytes(overview.size_bytes));
  $("database-tables").replaceChildren(...overview.tables.map((table) =>
    row([[`${table.schema}.${table.name}`], [table.estimated_rows < 0 ? "not analysed yet" : table.estimated_rows], [bytes(table.total_bytes)]])));
  $("database-sessions").replaceChildren(...overview.sessions.map((session) =>
    row([[session.pid], [session.application_name + (session.current ? " (this screen)" : "")], [session.state],
      [session.query, "sql"], [session.duration_seconds === null ? null : `${session.duration_seconds.toFixed(1)} s`]])));
}

async function refreshFixtures() {
  let reply;
  try { reply = await api("GET", "/api/database/fixtures"); } catch { return; }
  if (!reply.ok) return;
  const list = reply.data;
  const choice = $("fixture-choice");
  const chosen = choice.value;
  choice.replaceChildren(...list.fixtures.map((name) => {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    return option;
  }));
  if (list.fixtures.includes(chosen)) choice.value = chosen;
  $("reset-database").disabled = !list.allowed || !adminAccess.admin;
  $("load-fixture").disabled = !list.allowed || list.fixtures.length === 0 || !adminAccess.admin;
  $("dev-data-note").textContent = !list.allowed ? list.refused
    : list.fixtures.length === 0 ? `No fixtures: no .sql files in ${list.folder} (PGHARNESS_FIXTURES_DIR).`
      : `Fixtures from ${list.folder}.`;
}

async function resetDatabase() {
  const name = $("database-name").textContent;
  if (!window.confirm(`Reset the database ${name}? It is dropped with all its data, created empty and migrated.`)) return;
  $("reset-database").disabled = true;
  showMessage(`Resetting ${name}…`);
  let reply;
  try { reply = await api("POST", "/api/database/reset"); } catch { return; } finally { $("reset-database").disabled = !adminAccess.admin; }
  if (reply.ok) showMessage(`Database ${reply.data.database} reset: ${reply.data.migrations_applied.length} migration(s) applied.`);
  else showMessage(describe(reply.data && reply.data.detail), "error");
  refreshDatabase();
}

async function loadFixture() {
  const name = $("fixture-choice").value;
  if (!name) return;
  let reply;
  try { reply = await api("POST", `/api/database/fixtures/${encodeURIComponent(name)}`); } catch { return; }
  if (reply.status === 204) showMessage(`Fixture ${name} loaded.`);
  else showMessage(describe(reply.data && reply.data.detail), "error");
  refreshDatabase();
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
  if (usersSort !== "id") query.set("sort", usersSort);
  let reply;
  try { reply = await api("GET", `/users?${query}`); } catch { return; }
  if (!reply.ok) { showMessage(describe(reply.data && reply.data.detail), "error"); return; }
  const page = reply.data;
  usersPage = page.items;
  const rows = $("user-rows");
  rows.replaceChildren(...page.items.map((user) => {
    const tr = row([[user.id], [user.username], [user.email], [new Date(user.created_at).toLocaleString()]], user.id);
    const actions = document.createElement("td");
    actions.className = "row-actions";
    actions.append(rowButton("Edit", "edit", user), rowButton("Delete", "delete", user));
    tr.append(actions);
    return tr;
  }));
  if (page.items.length === 0) {
    const empty = document.createElement("tr");
    const cell = document.createElement("td");
    cell.colSpan = 5;
    cell.className = "empty";
    cell.textContent = usersQuery ? `No user matches "${usersQuery}".`
      : "No users yet. Create one with the form, import a batch, or load a fixture on the Database screen.";
    empty.append(cell);
    rows.append(empty);
  }
  $("export-csv").disabled = page.items.length === 0;
  for (const header of document.querySelectorAll("#users th")) {
    const button = header.querySelector("button.sort");
    if (!button) continue;
    const key = button.dataset.sort;
    if (usersSort === key) header.setAttribute("aria-sort", "ascending");
    else if (usersSort === `-${key}`) header.setAttribute("aria-sort", "descending");
    else header.removeAttribute("aria-sort");
  }
  const last = Math.min(page.offset + page.items.length, page.total);
  text("page-info", page.total === 0 ? "no users" : `${page.offset + 1}–${last} of ${page.total}`);
  $("previous-page").disabled = page.offset === 0;
  $("next-page").disabled = last >= page.total;
}

function rowButton(label, action, user) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.dataset.action = action;
  button.className = action === "delete" ? "danger" : "";
  button.setAttribute("aria-label", `${label} user ${user.username}`);
  return button;
}

/** One click on a column sorts by it; a second reverses the order. */
function sortBy(key) {
  usersSort = usersSort === key ? `-${key}` : key;
  usersOffset = 0;
  refreshUsers();
}

/**
 * A CSV cell (RFC 4180 quoting). A value starting with = + - @, a tab or a carriage return gets
 * a leading ' so that a spreadsheet opening the file shows it as text instead of running it as
 * a formula (OWASP's advice against CSV injection).
 */
function csvCell(value) {
  const text = String(value);
  const inert = /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
  return `"${inert.replaceAll('"', '""')}"`;
}

/** The page shown, as CSV, downloaded as a file. */
function exportCsv() {
  const lines = ["id,username,email,created_at",
    ...usersPage.map((user) => [user.id, user.username, user.email, user.created_at].map(csvCell).join(","))];
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([`${lines.join("\r\n")}\r\n`], { type: "text/csv" }));
  link.download = `users-${usersOffset + 1}-${usersOffset + usersPage.length}.csv`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
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

async function deleteUser(user) {
  const id = user ? user.id : $("user-id").value;
  const name = user ? user.username : $("username").value;
  if (!id || !window.confirm(`Delete user ${name}? This cannot be undone.`)) return;
  let reply;
  try { reply = await api("DELETE", `/users/${id}`); } catch { return; }
  if (reply.status === 204) {
    showMessage(`User ${name} deleted.`);
    if (String($("user-id").value) === String(id)) editUser(null);
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

const screens = {
  health: refreshHealth,
  connection: refreshConnection,
  database: () => { refreshDatabase(); refreshFixtures(); },
  users: refreshUsers,
};
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
  // Health, connection and database are live; the users list refreshes on its own only to recover.
  if (current !== "users" || offline) screens[current]();
}

document.addEventListener("DOMContentLoaded", async () => {
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
  $("delete-user").addEventListener("click", () => deleteUser(null));
  $("stop-database").addEventListener("click", () => controlDatabase("stop"));
  $("start-database").addEventListener("click", () => controlDatabase("start"));
  $("restart-database").addEventListener("click", () => controlDatabase("restart"));
  $("slow-internal").addEventListener("change", refreshSlowQueries);
  $("reset-statistics").addEventListener("click", resetStatistics);
  $("reset-database").addEventListener("click", resetDatabase);
  $("load-fixture").addEventListener("click", loadFixture);
  $("export-csv").addEventListener("click", exportCsv);
  for (const button of document.querySelectorAll("button.sort")) {
    button.addEventListener("click", () => sortBy(button.dataset.sort));
  }
  $("batch-form").addEventListener("submit", importBatch);
  const openRow = async (target) => {
    const tr = target.closest("tr[data-id]");
    if (!tr) return;
    let reply;
    try { reply = await api("GET", `/users/${tr.dataset.id}`); } catch { return; }
    if (reply.ok) editUser(reply.data);
    else showMessage(describe(reply.data && reply.data.detail), "error");
  };
  $("user-rows").addEventListener("click", (event) => {
    const action = event.target.closest("button[data-action]");
    if (action && action.dataset.action === "delete") {
      const tr = action.closest("tr[data-id]");
      const user = usersPage.find((candidate) => String(candidate.id) === tr.dataset.id);
      deleteUser(user);
      return;
    }
    openRow(event.target);
  });
  $("user-rows").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.target.closest("button")) openRow(event.target);
  });
  await loadAdminAccess();
  showScreen();
  setInterval(tick, REFRESH_MS);
});
