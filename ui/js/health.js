// The health screen: status, facts, charts, the event timeline, and stop/start/restart.
import { $, setText } from "./dom.js";
import { showMessage } from "./banners.js";
import { refreshCharts } from "./charts.js";
import { databaseHealthText, healthStatusText } from "./helpers.js";

const SERVER_BUTTONS = ["stop-database", "start-database", "restart-database"];
const CONTROLS = {
  stop: { doing: "Stopping the database…", confirm: "Stop the database? Requests fail until it is started again." },
  start: { doing: "Starting the database…" },
  restart: { doing: "Restarting the database…", confirm: "Restart the database? Open connections are closed." },
};

/** Why a button does nothing in a server state: Start while it runs, Stop while it is stopped. */
const REFUSED_IN = {
  running: { start: "The database is running already." },
  stopped: { stop: "The database is stopped already." },
};

export function createHealthScreen(api) {
  // Which server this is, once known: the outage buttons work on the embedded one only.
  let serverMode = null;
  // Counts the stops, starts and restarts asked for: a state read before one is stale after it.
  let controls = 0;
  let controlling = false;

  async function refresh() {
    refreshCharts(api);
    refreshEvents();
    refreshServerState();
    let reply;
    try { reply = await api.call("GET", "/health"); } catch { return; }
    const health = reply.data || {};
    const badge = $("health-status");
    badge.dataset.state = health.status || "unknown";
    badge.textContent = healthStatusText(health.status);
    setText("health-environment", health.environment);
    setText("health-version", health.version);
    setText("health-database", databaseHealthText(health));
    setText("health-latency", health.database && health.database.latency_ms !== null
      ? `${health.database.latency_ms.toFixed(2)} ms` : null);
    if (health.pool) {
      setText("health-pool", `${health.pool.in_use} in use, ${health.pool.idle} idle, ${health.pool.max} max`);
    }
  }

  async function loadServerMode() {
    let reply;
    try { reply = await api.call("GET", "/api/connection"); } catch { return; }
    if (!reply.ok) return;
    serverMode = reply.data.mode;
    const external = serverMode !== "embedded";
    for (const id of SERVER_BUTTONS) $(id).disabled = external || !api.isAdmin();
    $("control-note").textContent = external
      ? `Stop, start and restart work on the embedded server only; this API uses the external server at ${reply.data.url}.`
      : "";
  }

  async function refreshServerState() {
    if (serverMode === null) await loadServerMode();
    if (serverMode !== "embedded" || !api.isAdmin()) return;
    const asked = controls;
    let reply;
    try { reply = await api.call("GET", "/api/database/state"); } catch { return; }
    if (reply.ok && asked === controls) showServerState(reply.data.status);
  }

  /** Each button enabled unless the state makes it pointless, which its title then says. */
  function showServerState(status) {
    if (controlling) return;
    const refused = REFUSED_IN[status] ?? {};
    for (const action of Object.keys(CONTROLS)) {
      const button = $(`${action}-database`);
      button.disabled = action in refused;
      button.title = refused[action] ?? "";
    }
  }

  async function refreshEvents() {
    let reply;
    try { reply = await api.call("GET", "/api/health/events"); } catch { return; }
    if (!reply.ok) return;
    $("events").replaceChildren(...reply.data.events.slice(0, 50).map(eventItem));
  }

  async function controlDatabase(action) {
    const control = CONTROLS[action];
    if (control.confirm && !window.confirm(control.confirm)) return;
    controls += 1;
    controlling = true;
    for (const id of SERVER_BUTTONS) $(id).disabled = true;
    $("server-state").textContent = control.doing;
    let reply;
    try { reply = await api.call("POST", `/api/database/${action}`); } catch { reply = null; }
    controlling = false;
    showServerState(reply && reply.ok ? reply.data.status : null);
    if (reply && reply.ok) {
      $("server-state").textContent = `Database ${reply.data.status}.`;
    } else {
      $("server-state").textContent = "";
      showMessage(reply ? reply.error : "The API did not answer.", "error");
    }
    refresh();
  }

  for (const action of Object.keys(CONTROLS)) {
    $(`${action}-database`).addEventListener("click", () => controlDatabase(action));
  }
  return { refresh };
}

function eventItem(event) {
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
}
