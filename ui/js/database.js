// The database screen: size, tables and sessions, and the dev-data actions (reset, fixtures,
// snapshots).
import { $, setText, tableRow } from "./dom.js";
import { showMessage } from "./banners.js";
import { formatBytes } from "./helpers.js";
import { createSnapshots } from "./snapshots.js";

export function createDatabaseScreen(api) {
  const snapshots = createSnapshots(api, { onChange: () => refreshOverview() });

  function refresh() {
    refreshOverview();
    refreshFixtures();
    snapshots.refresh();
  }

  async function refreshOverview() {
    let reply;
    const internal = $("sessions-internal").checked ? "?include_internal=true" : "";
    try { reply = await api.call("GET", `/api/database/overview${internal}`); } catch { return; }
    if (!reply.ok) { showMessage(reply.error, "error"); return; }
    const overview = reply.data;
    setText("database-name", overview.database);
    setText("database-size", formatBytes(overview.size_bytes));
    $("database-tables").replaceChildren(...overview.tables.map((table) =>
      tableRow([[`${table.schema}.${table.name}`], [table.estimated_rows < 0 ? "not analysed yet" : table.estimated_rows], [formatBytes(table.total_bytes)]])));
    $("database-sessions").replaceChildren(...overview.sessions.map((session) =>
      tableRow([[session.pid], [session.application_name + (session.current ? " (this screen)" : "")], [session.state],
        [session.query, session.internal ? "sql internal" : "sql"], [session.duration_seconds === null ? null : `${session.duration_seconds.toFixed(1)} s`]])));
  }

  async function refreshFixtures() {
    let reply;
    try { reply = await api.call("GET", "/api/database/fixtures"); } catch { return; }
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
    $("reset-database").disabled = !list.allowed || !api.isAdmin();
    $("load-fixture").disabled = !list.allowed || list.fixtures.length === 0 || !api.isAdmin();
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
    try { reply = await api.call("POST", "/api/database/reset"); } catch { return; } finally { $("reset-database").disabled = !api.isAdmin(); }
    if (reply.ok) showMessage(`Database ${reply.data.database} reset: ${reply.data.migrations_applied.length} migration(s) applied.`);
    else showMessage(reply.error, "error");
    refreshOverview();
  }

  async function loadFixture() {
    const name = $("fixture-choice").value;
    if (!name) return;
    let reply;
    try { reply = await api.call("POST", `/api/database/fixtures/${encodeURIComponent(name)}`); } catch { return; }
    if (reply.status === 204) showMessage(`Fixture ${name} loaded.`);
    else showMessage(reply.error, "error");
    refreshOverview();
  }

  $("sessions-internal").addEventListener("change", refreshOverview);
  $("reset-database").addEventListener("click", resetDatabase);
  $("load-fixture").addEventListener("click", loadFixture);
  return { refresh };
}
