// The banners above the screens: the message line, the offline banner and the read-only note.
import { $ } from "./dom.js";

export function showMessage(text, kind = "info") {
  const message = $("message");
  message.textContent = text;
  message.dataset.kind = kind;
  message.hidden = !text;
}

export function showOffline(offline) {
  $("offline").hidden = !offline;
}

/** The controls that reveal the password or change the server: they need the admin token. */
const ADMIN_CONTROLS = ["copy-connection", "stop-database", "start-database", "restart-database",
  "reset-statistics", "reset-database", "load-fixture", "save-snapshot", "slow-internal", "sessions-internal", "explain"];

/** Without admin access the admin controls stay disabled, each saying why and how to get the link. */
export function showAccess(access) {
  const note = $("admin-note");
  note.hidden = access.admin;
  note.textContent = access.admin ? "" : `Read-only: ${access.detail}`;
  for (const id of ADMIN_CONTROLS) {
    $(id).title = access.admin ? "" : access.detail;
    if (!access.admin) $(id).disabled = true;
  }
}
