// The connection screen: the server and pool, the migrations, the slowest statements, and
// copying the connection string.
import { $, listItem, setText, tableRow } from "./dom.js";
import { showMessage } from "./banners.js";

export function createConnectionScreen(api) {
  // The slow statements' last answer, as drawn.
  let slowShown = "";

  async function refresh() {
    let reply;
    try { reply = await api.call("GET", "/api/connection"); } catch { return; }
    if (!reply.ok) { showMessage(reply.error, "error"); return; }
    const info = reply.data;
    setText("connection-url", info.url);
    setText("connection-host", info.host);
    setText("connection-port", info.port);
    setText("connection-database", info.database);
    setText("connection-user", info.user);
    setText("connection-version", info.reachable ? info.server_version : "database unreachable");
    setText("connection-mode", info.mode);
    setText("connection-data", info.data_directory);
    setText("connection-active", info.active_connections);
    const settings = info.pool_settings;
    setText("connection-pool-settings",
      `size ${settings.size} + ${settings.max_overflow} overflow, timeout ${settings.timeout_seconds} s, recycle ${settings.recycle_seconds} s`);
    showPool(info.pool);
    const migrations = $("migrations");
    migrations.replaceChildren();
    if (info.migrations) {
      for (const entry of info.migrations.applied) {
        migrations.append(listItem(`✓ ${entry.version} ${entry.description} (applied ${entry.applied_at})`));
      }
      for (const entry of info.migrations.pending) {
        migrations.append(listItem(`… ${entry.version} ${entry.description} (pending)`));
      }
    }
    refreshSlowQueries();
  }

  async function refreshSlowQueries() {
    let reply;
    const internal = $("slow-internal").checked ? "?include_internal=true" : "";
    try { reply = await api.call("GET", `/api/queries/slow${internal}`); } catch { return; }
    // Redrawn only when it changed, so that a row focused to be explained keeps the focus.
    const answer = JSON.stringify([reply.status, reply.data]);
    if (answer === slowShown) return;
    slowShown = answer;
    const body = $("slow-queries");
    body.replaceChildren();
    if (!reply.ok) { $("slow-note").textContent = reply.error; return; }
    $("slow-note").textContent = reply.data.available ? "" : reply.data.reason;
    for (const query of reply.data.queries) {
      body.append(tableRow([[query.query, query.internal ? "sql internal" : "sql"], [query.calls], [query.mean_ms.toFixed(2)],
        [query.max_ms.toFixed(2)], [query.total_ms.toFixed(2)]], query.query));
    }
  }

  async function resetStatistics() {
    let reply;
    try { reply = await api.call("POST", "/api/queries/slow/reset"); } catch { return; }
    if (reply.status === 204) showMessage("Statement statistics reset.");
    else showMessage(reply.error, "error");
    refreshSlowQueries();
  }

  async function copyConnectionString() {
    try {
      const reply = await api.call("POST", "/api/connection/reveal");
      if (!reply.ok) { showMessage(reply.error, "error"); return; }
      await navigator.clipboard.writeText(reply.data.url);
      showMessage("Connection string copied to the clipboard (it holds the password).");
    } catch (error) {
      showMessage(`Could not copy the connection string: ${error.message}`, "error");
    }
  }

  /** A slow statement, opened or focused: into the explain form, to be given values and run. */
  function chooseStatement(event) {
    const row = event.target.closest("tr[data-id]");
    if (!row || (event.type === "keydown" && event.key !== "Enter")) return;
    $("explain-query").value = row.dataset.id;
    $("explain-query").focus();
  }

  async function explain(event) {
    event.preventDefault();
    $("explain-error").textContent = "";
    const body = { query: $("explain-query").value, analyze: $("explain-analyze").checked };
    let reply;
    try { reply = await api.call("POST", "/api/queries/explain", body); } catch { return; }
    $("explain-plan").hidden = !reply.ok;
    if (reply.ok) $("explain-plan").textContent = reply.data.lines.join("\n");
    else $("explain-error").textContent = reply.error;
  }

  $("slow-queries").addEventListener("click", chooseStatement);
  $("slow-queries").addEventListener("keydown", chooseStatement);
  $("explain-form").addEventListener("submit", explain);
  $("copy-connection").addEventListener("click", copyConnectionString);
  $("slow-internal").addEventListener("change", refreshSlowQueries);
  $("reset-statistics").addEventListener("click", resetStatistics);
  return { refresh };
}

function showPool(pool) {
  const gauge = $("pool-gauge");
  gauge.querySelector(".gauge-in-use").style.width = `${(100 * pool.in_use) / pool.max}%`;
  gauge.querySelector(".gauge-idle").style.width = `${(100 * pool.idle) / pool.max}%`;
  gauge.setAttribute("aria-label", `pool usage: ${pool.in_use} in use, ${pool.idle} idle of ${pool.max}`);
  setText("pool-text", `${pool.in_use} in use · ${pool.idle} idle · ${pool.max} max · ${pool.waited} waits · ${pool.connection_errors} errors`);
}
