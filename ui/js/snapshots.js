// The database screen's snapshots: the list, save under a name, and each one's restore and delete.
import { $, emptyRow, tableRow } from "./dom.js";
import { showMessage } from "./banners.js";
import { formatBytes, snapshotNameProblem } from "./helpers.js";

export function createSnapshots(api, { onChange }) {
  // The list as last drawn: redrawn only when it changes, so that a button is not replaced
  // under the pointer by the 2-second refresh.
  let drawn = "";
  let busy = false;

  async function refresh() {
    let reply;
    try { reply = await api.call("GET", "/api/database/snapshots"); } catch { return; }
    const listing = reply.ok ? reply.data : { snapshots: [], total_bytes: 0, allowed: false, refused: reply.error };
    const allowed = listing.allowed && api.isAdmin();
    const key = JSON.stringify([listing, allowed, busy]);
    if (key === drawn) return;
    drawn = key;
    $("snapshot-note").textContent = listing.allowed ? "" : listing.refused;
    $("save-snapshot").disabled = !allowed || busy;
    $("snapshot-rows").replaceChildren(...listing.snapshots.map((snapshot) => snapshotRow(snapshot, allowed && !busy, listing.refused)));
    if (listing.snapshots.length === 0) {
      $("snapshot-rows").append(emptyRow("No snapshots yet: save one under a name to come back to this data later.", 5));
    }
    $("snapshot-total").textContent = listing.snapshots.length === 0 ? ""
      : `${listing.snapshots.length} snapshot(s), ${formatBytes(listing.total_bytes)} in all (sizes include each one's ready copy for a restore).`;
  }

  function snapshotRow(snapshot, enabled, refused) {
    const saved = snapshot.created_at ? new Date(snapshot.created_at).toLocaleString() : "unknown";
    const migration = snapshot.migration === null ? "none"
      : `${snapshot.migration} ${snapshot.migration_description ?? ""}`.trim();
    const row = tableRow([[snapshot.name], [formatBytes(snapshot.size_bytes)], [saved], [migration]]);
    const actions = document.createElement("td");
    actions.className = "row-actions";
    for (const [label, action, className] of [["Restore", restore, ""], ["Delete", remove, "danger"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.className = className;
      button.setAttribute("aria-label", `${label} snapshot ${snapshot.name}`);
      button.disabled = !enabled;
      if (!enabled && refused) button.title = refused;
      button.addEventListener("click", () => action(snapshot.name));
      actions.append(button);
    }
    row.append(actions);
    return row;
  }

  /** Runs one save, restore or delete at a time, the controls disabled meanwhile. */
  async function exclusively(work) {
    busy = true;
    drawn = "";
    $("save-snapshot").disabled = true;
    for (const button of document.querySelectorAll("#snapshot-rows button")) button.disabled = true;
    try { await work(); } finally {
      busy = false;
      drawn = "";
      refresh();
      onChange();
    }
  }

  function showNameError(text) {
    $("snapshot-name-error").textContent = text;
    if (text) $("snapshot-name").setAttribute("aria-invalid", "true");
    else $("snapshot-name").removeAttribute("aria-invalid");
  }

  async function save(event) {
    event.preventDefault();
    const name = $("snapshot-name").value.trim();
    const problem = snapshotNameProblem(name);
    showNameError(problem ?? "");
    if (problem) return;
    await exclusively(async () => {
      showMessage(`Saving snapshot ${name}…`);
      let reply;
      try { reply = await api.call("POST", "/api/database/snapshots", { name }); } catch { return; }
      if (reply.ok) {
        $("snapshot-name").value = "";
        showMessage(`Snapshot ${reply.data.name} saved (${formatBytes(reply.data.size_bytes)}).`);
      } else if (reply.status === 409 || reply.status === 422) {
        showMessage("");
        showNameError(reply.error);
      } else {
        showMessage(reply.error, "error");
      }
    });
  }

  async function restore(name) {
    showNameError("");
    const database = $("database-name").textContent;
    if (!window.confirm(`Restore snapshot ${name}? The database ${database} is replaced by it: its data now is lost. The snapshot stays.`)) return;
    const body = $("snapshot-migrate").checked ? { migrate: true } : {};
    await exclusively(async () => {
      showMessage(`Restoring snapshot ${name}…`);
      let reply;
      try { reply = await api.call("POST", `/api/database/snapshots/${encodeURIComponent(name)}/restore`, body); } catch { return; }
      if (!reply.ok) showMessage(reply.error, "error");
      else if (reply.data.notice) showMessage(`Snapshot ${name} restored into ${database}; ${reply.data.notice}.`, "warning");
      else showMessage(`Snapshot ${name} restored into ${database}.`);
    });
  }

  async function remove(name) {
    showNameError("");
    if (!window.confirm(`Delete snapshot ${name}? Its copy of the database is dropped.`)) return;
    await exclusively(async () => {
      let reply;
      try { reply = await api.call("DELETE", `/api/database/snapshots/${encodeURIComponent(name)}`); } catch { return; }
      if (reply.ok) showMessage(`Snapshot ${name} deleted.`);
      else showMessage(reply.error, "error");
    });
  }

  $("snapshot-form").addEventListener("submit", save);
  $("snapshot-name").addEventListener("input", () => showNameError(""));
  return { refresh };
}
