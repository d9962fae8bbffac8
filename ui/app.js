// pgharness web UI: the health, connection, database and users screens over the HTTP API. ES
// modules with no build step and no external assets, served from the binary as they are here;
// this one picks the screen from the address and refreshes it.
import { $ } from "./js/dom.js";
import { createApi } from "./js/api.js";
import { showAccess, showMessage, showOffline } from "./js/banners.js";
import { createHealthScreen } from "./js/health.js";
import { createConnectionScreen } from "./js/connection.js";
import { createDatabaseScreen } from "./js/database.js";
import { createUsersScreen } from "./js/users.js";

const REFRESH_MS = 2000;

const api = createApi({ onReachable: (reachable) => showOffline(!reachable) });
const screens = {
  health: createHealthScreen(api),
  connection: createConnectionScreen(api),
  database: createDatabaseScreen(api),
  users: createUsersScreen(api),
};
let current = "health";

function showScreen() {
  const name = location.hash.replace(/^#\//, "") || "health";
  current = screens[name] ? name : "health";
  for (const screen of Object.keys(screens)) $(screen).hidden = screen !== current;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.screen === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  showMessage("");
  screens[current].refresh();
}

function tick() {
  // Health, connection and database are live; the users list refreshes on its own only to recover.
  if (current !== "users" || api.isOffline()) screens[current].refresh();
}

window.addEventListener("hashchange", showScreen);
const access = await api.loadAccess();
if (access) showAccess(access);
showScreen();
setInterval(tick, REFRESH_MS);
