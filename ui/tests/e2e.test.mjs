// End-to-end: a real `pgharness serve` (embedded PostgreSQL 16) driven through Debian's
// chromium by playwright-core. Screenshots of each screen go to ui/test-output/.
// Each test has its own browser context and page, names the users it makes after itself and
// has them deleted when it ends, so it passes alone and in any order.
import { test, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:http";
import { chromium } from "playwright-core";
import { startServe } from "./serve.mjs";

// A ceiling for what takes a moment, far above what a loaded machine needs: not a claim of speed.
const PATIENCE = 60_000;

const here = dirname(fileURLToPath(import.meta.url));
const output = join(here, "../test-output");
let serve;
let base;
let adminToken;
let browser;
let testsStarted = 0;
// The running test's own: its browser context, its page, and the mark in its users' names.
let context;
let page;
let mark;

before(async () => {
  mkdirSync(output, { recursive: true });
  serve = await startServe();
  base = serve.base;
  adminToken = serve.adminToken;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    // evil.test stands for an attacker's name rebound to this machine (DNS rebinding).
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--host-resolver-rules=MAP evil.test 127.0.0.1",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await serve?.stop();
});

beforeEach(async () => {
  testsStarted += 1;
  // Ends in "x" so that no mark is part of another ("n1x" is not in "n12x").
  mark = `t${process.pid}n${testsStarted}x`;
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  page = await context.newPage();
  // The link serve printed: its token becomes the admin cookie of this browser.
  await page.goto(`${base}/?token=${adminToken}`);
  assert.equal(new URL(page.url()).search, "", "the token stayed in the address bar");
});

afterEach(async () => {
  await context?.close();
  await deleteUsersMatching(mark);
});

async function api(method, path) {
  const response = await fetch(`${base}${path}`, { method, headers: { authorization: `Bearer ${adminToken}` } });
  return response.json();
}

/** A username only the running test uses: `prefix-` and the test's mark. */
function named(prefix) {
  return `${prefix}-${mark}`;
}

/** A user made through the API, for a test about what the screen does with it. */
async function createUser(username, email = `${username}@example.com`) {
  const response = await fetch(`${base}/users`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, email }),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return response.json();
}

/** Deletes every user whose username or e-mail contains `text`. */
async function deleteUsersMatching(text) {
  const { items } = await api("GET", `/users?limit=100&q=${encodeURIComponent(text)}`);
  for (const user of items) await fetch(`${base}/users/${user.id}`, { method: "DELETE" });
}

/** The users screen, listing only what matches `text`, whatever else the database holds. */
async function showUsersMatching(text) {
  await page.goto(`${base}/#/users`);
  await page.getByLabel("Search username or e-mail").fill(text);
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.waitForFunction((shown) => {
    const rows = [...document.querySelectorAll("#user-rows tr")];
    return rows.length > 0 && rows.every((row) => row.textContent.includes(shown));
  }, text, { timeout: PATIENCE });
}

test("the health screen shows healthy, with environment, version and latency", async () => {
  await page.goto(`${base}/#/health`);
  await page.locator('#health-status[data-state="healthy"]').waitFor();
  assert.equal(await page.locator("#health-status").textContent(), "Healthy");
  assert.equal(await page.locator("#health-environment").textContent(), "development");
  assert.match(await page.locator("#health-version").textContent(), /^\d+\.\d+\.\d+$/);
  assert.match(await page.locator("#health-latency").textContent(), /ms$/);
  await page.screenshot({ path: join(output, "health.png") });
});

test("a created user appears in the list", async () => {
  const alice = named("alice");
  await showUsersMatching(mark);
  await page.getByLabel("Username", { exact: true }).fill(alice);
  await page.getByLabel("E-mail", { exact: true }).fill(`${alice}@example.com`);
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.locator("#user-rows tr", { hasText: `${alice}@example.com` }).waitFor();
  assert.match(await page.locator("#message").textContent(), new RegExp(`Created user ${alice}`));
});

test("a duplicate username is shown next to the field", async () => {
  const alice = named("alice");
  await createUser(alice);
  await page.goto(`${base}/#/users`);
  await page.getByLabel("Username", { exact: true }).fill(alice);
  await page.getByLabel("E-mail", { exact: true }).fill(`someone-else-${mark}@example.com`);
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.locator("#username-error", { hasText: "already taken" }).waitFor();
  assert.equal(await page.getByLabel("Username", { exact: true }).getAttribute("aria-invalid"), "true");
  assert.equal(await page.locator("#email-error").textContent(), "");
});

test("a batch with one bad row imports nothing and names the row", async () => {
  const [carol, dave, erin, frank] = ["carol", "dave", "erin", "frank"].map(named);
  await showUsersMatching(mark);
  await page.getByLabel(/Paste CSV/).fill(`username,email\n${carol},${carol}@example.com\n${dave},not-an-address\n`);
  await page.getByRole("button", { name: "Import all or nothing" }).click();
  await page.locator("#batch-result", { hasText: "Nothing was imported" }).waitFor();
  assert.match(await page.locator("#batch-result").textContent(), /Row 2 \(email\)/);
  const carols = await api("GET", `/users?q=${carol}`);
  assert.equal(carols.total, 0);
  await page.getByLabel(/Paste CSV/).fill(JSON.stringify([
    { username: erin, email: `${erin}@example.com` }, { username: frank, email: `${frank}@example.com` }]));
  await page.getByRole("button", { name: "Import all or nothing" }).click();
  await page.locator("#batch-result", { hasText: "Imported 2 users" }).waitFor();
  await page.locator("#user-rows tr", { hasText: `${frank}@example.com` }).waitFor();
  await page.screenshot({ path: join(output, "users.png") });
});

test("a user is edited and deleted after confirmation", async () => {
  const [erin, erin2] = ["erin", "erin2"].map(named);
  await createUser(erin);
  await showUsersMatching(mark);
  await page.locator("#user-rows tr", { hasText: `${erin}@example.com` }).click();
  // The form shows the row it edits before it is changed.
  await page.locator("#user-form-title", { hasText: /^User \d+$/ }).waitFor();
  assert.equal(await page.getByLabel("E-mail", { exact: true }).inputValue(), `${erin}@example.com`);
  await page.getByLabel("Username", { exact: true }).fill(erin2);
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#user-rows tr", { hasText: erin2 }).waitFor();
  await page.locator("#user-rows tr", { hasText: erin2 }).click();
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.locator("#message", { hasText: `User ${erin2} deleted` }).waitFor();
  assert.equal((await api("GET", `/users?q=${mark}`)).total, 0);
});

test("each row has its own edit and delete buttons", async () => {
  const frank = named("frank");
  const { id } = await createUser(frank);
  await showUsersMatching(mark);
  await page.getByRole("button", { name: `Edit user ${frank}` }).click();
  await page.locator("#user-form-title", { hasText: /^User \d+$/ }).waitFor();
  assert.equal(await page.getByLabel("E-mail", { exact: true }).inputValue(), `${frank}@example.com`);
  assert.equal(await page.locator("#user-form-title").textContent(), `User ${id}`);
  let asked = "";
  page.once("dialog", (dialog) => { asked = dialog.message(); dialog.dismiss(); });
  await page.getByRole("button", { name: `Delete user ${frank}` }).click();
  assert.match(asked, new RegExp(`Delete user ${frank}\\?`));
  assert.equal((await api("GET", `/users?q=${frank}`)).total, 1, "a dismissed confirmation deleted the user");
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByRole("button", { name: `Delete user ${frank}` }).click();
  await page.locator("#message", { hasText: `User ${frank} deleted` }).waitFor();
  await page.locator("#user-rows tr", { hasText: `${frank}@example.com` }).waitFor({ state: "detached" });
  assert.equal((await api("GET", `/users?q=${frank}`)).total, 0);
});

test("columns sort both ways and the page exports as CSV", async () => {
  await showUsersMatching(mark);
  for (const username of [named("zed"), named("mia")]) {
    await page.getByLabel("Username", { exact: true }).fill(username);
    await page.getByLabel("E-mail", { exact: true }).fill(`${username}@example.com`);
    await page.getByRole("button", { name: "Create", exact: true }).click();
    await page.locator("#user-rows tr", { hasText: `${username}@example.com` }).waitFor();
  }
  const usernames = () => page.locator("#user-rows tr td:nth-child(2)").allTextContents();
  await page.locator('button.sort[data-sort="username"]').click();
  await page.locator('th[aria-sort="ascending"]', { hasText: "Username" }).waitFor();
  const ascending = await usernames();
  assert.deepEqual(ascending, [...ascending].sort());
  await page.locator('button.sort[data-sort="username"]').click();
  await page.locator('th[aria-sort="descending"]', { hasText: "Username" }).waitFor();
  const descending = await usernames();
  assert.deepEqual(descending, [...ascending].reverse());
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Export page as CSV" }).click(),
  ]);
  const csv = readFileSync(await download.path(), "utf8").trim().split("\r\n");
  assert.equal(csv[0], "id,username,email,created_at");
  assert.deepEqual(csv.slice(1).map((line) => JSON.parse(`[${line}]`)[1]), descending);
});

test("exported cells that a spreadsheet would run as formulas are made text", async () => {
  const formulas = ["=1+1", "+SUM(1,1)", "-2+3", "@SUM(A1)"].map((formula) => `${formula}${mark}`);
  for (const [index, username] of formulas.entries()) await createUser(username, `formula${index}-${mark}@example.com`);
  await showUsersMatching(mark);
  await page.locator("#user-rows tr", { hasText: `formula3-${mark}@example.com` }).waitFor();
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Export page as CSV" }).click(),
  ]);
  const rows = readFileSync(await download.path(), "utf8").trim().split("\r\n").slice(1)
    .map((line) => JSON.parse(`[${line}]`));
  assert.deepEqual(rows.map((row) => row[1]).sort(), formulas.map((formula) => `'${formula}`).sort());
  assert.ok(rows.every((row) => row[2].startsWith("formula")), JSON.stringify(rows));
});

test("slow statements show the application's queries, not the migrations, unless asked", async () => {
  // An application query to list, whatever ran (or was reset) before.
  await fetch(`${base}/users?limit=1`);
  await page.goto(`${base}/#/connection`);
  await page.locator("#slow-queries tr", { hasText: "FROM users" }).first().waitFor();
  const shown = await page.locator("#slow-queries").textContent();
  assert.ok(!/CREATE (TABLE|EXTENSION|UNIQUE INDEX)/.test(shown), shown);
  assert.ok(!shown.includes("pg_stat_statements"), shown);
  await page.getByLabel(/Show pgharness's own statements/).check();
  await page.locator("#slow-queries tr", { hasText: "CREATE TABLE" }).first().waitFor();
  await page.getByLabel(/Show pgharness's own statements/).uncheck();
  await page.getByRole("button", { name: "Reset statistics" }).click();
  await page.locator("#message", { hasText: "Statement statistics reset" }).waitFor();
  assert.ok(!(await api("GET", "/api/queries/slow?include_internal=true")).queries.some((query) => query.query.includes("CREATE TABLE")));
});

test("a slow statement is explained once given values, and run only when asked", async () => {
  // An application query to list, whatever ran (or was reset) before.
  await fetch(`${base}/users?limit=1`);
  await page.goto(`${base}/#/connection`);
  await page.locator("#slow-queries tr", { hasText: "FROM users" }).first().click();
  assert.match(await page.getByLabel(/^Statement:/).inputValue(), /FROM users/);
  const explainIt = async (query) => {
    await page.getByLabel(/^Statement:/).fill(query);
    await page.getByRole("button", { name: "Explain", exact: true }).click();
  };
  await explainIt("SELECT * FROM users WHERE id = $1");
  await page.locator("#explain-error", { hasText: "`$1`-style parameters" }).waitFor({ timeout: PATIENCE });
  assert.ok(await page.locator("#explain-plan").isHidden());
  await explainIt("SELECT count(*) FROM users");
  await page.locator("#explain-plan", { hasText: "Aggregate" }).waitFor({ timeout: PATIENCE });
  assert.equal(await page.locator("#explain-error").textContent(), "");
  assert.ok(!(await page.locator("#explain-plan").textContent()).includes("actual time"));
  await page.getByLabel(/Run it \(EXPLAIN ANALYZE/).check();
  await page.getByRole("button", { name: "Explain", exact: true }).click();
  await page.locator("#explain-plan", { hasText: "actual time" }).waitFor({ timeout: PATIENCE });
});

test("the connection screen shows the server, the pool and the migrations", async () => {
  await page.goto(`${base}/#/connection`);
  await page.locator("#connection-version", { hasText: "16." }).waitFor();
  assert.equal(await page.locator("#connection-mode").textContent(), "embedded");
  assert.match(await page.locator("#connection-url").textContent(), /^127\.0\.0\.1:\d+\/app_db$/);
  await page.locator("#migrations li", { hasText: "create users" }).waitFor();
  // An application query to list, whatever ran (or was reset) before.
  await fetch(`${base}/users?limit=1`);
  await page.locator("#slow-queries tr").first().waitFor();
  const shown = await page.locator("main").textContent();
  const secret = (await api("POST", "/api/connection/reveal")).url;
  const password = new URL(secret).password;
  assert.ok(!shown.includes(password), "the password is on the screen");
  await page.getByRole("button", { name: /Copy connection string/ }).click();
  await page.locator("#message", { hasText: "copied" }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  await page.screenshot({ path: join(output, "connection.png") });
});

/** Waits until the screen shows `enabled` usable and `disabled` not, with its title saying why. */
async function waitForServerButtons(enabled, disabled, why) {
  await page.locator(`#${disabled}-database[disabled]`).waitFor({ timeout: PATIENCE });
  await page.locator(`#${enabled}-database:not([disabled])`).waitFor({ timeout: PATIENCE });
  assert.equal(await page.locator(`#${disabled}-database`).getAttribute("title"), why);
  assert.equal(await page.locator(`#${enabled}-database`).getAttribute("title"), "");
}

test("the Stop button turns health red within one refresh, the timeline records it, and Start turns it green", async () => {
  await page.goto(`${base}/#/health`);
  await page.locator('#health-status[data-state="healthy"]').waitFor();
  await waitForServerButtons("stop", "start", "The database is running already.");
  let asked = "";
  page.once("dialog", (dialog) => { asked = dialog.message(); dialog.accept(); });
  await page.getByRole("button", { name: "Stop database" }).click();
  assert.match(asked, /Stop the database\?/);
  await page.locator("#server-state", { hasText: "Database stopped." }).waitFor({ timeout: PATIENCE });
  await waitForServerButtons("start", "stop", "The database is stopped already.");
  await page.locator('#health-status[data-state="unhealthy"]').waitFor({ timeout: PATIENCE });
  await page.locator('#events li[data-kind="server_stopped"]').waitFor({ timeout: PATIENCE });
  await page.locator('#events li[data-kind="database_unreachable"]').waitFor({ timeout: PATIENCE });
  await page.screenshot({ path: join(output, "health-down.png") });
  await page.goto(`${base}/#/users`);
  // Half the 30 s pool timeout: a stopped server is reported, not waited for.
  await page.locator("#message", { hasText: "database unavailable: connection refused" }).waitFor({ timeout: 15000 });
  await page.goto(`${base}/#/health`);
  // A fresh page reads the state from the server.
  await waitForServerButtons("start", "stop", "The database is stopped already.");
  await page.getByRole("button", { name: "Start database", exact: true }).click();
  await page.locator("#server-state", { hasText: "Database running." }).waitFor({ timeout: PATIENCE });
  await waitForServerButtons("stop", "start", "The database is running already.");
  await page.locator('#health-status[data-state="healthy"]').waitFor({ timeout: PATIENCE });
  await page.locator('#events li[data-kind="server_started"]').waitFor({ timeout: PATIENCE });
  await page.locator('#events li[data-kind="database_recovered"]').waitFor({ timeout: PATIENCE });
  const kinds = (await api("GET", "/api/health/events")).events.map((event) => event.kind);
  assert.ok(kinds.indexOf("server_started") < kinds.indexOf("server_stopped"), kinds.join(", "));
});

test("Restart asks first, and the database comes back", async () => {
  await page.goto(`${base}/#/health`);
  await page.locator('#health-status[data-state="healthy"]').waitFor({ timeout: PATIENCE });
  await page.locator("#restart-database:not([disabled])").waitFor();
  let asked = "";
  page.once("dialog", (dialog) => { asked = dialog.message(); dialog.accept(); });
  await page.getByRole("button", { name: "Restart database" }).click();
  assert.match(asked, /Restart the database\?/);
  await page.locator("#server-state", { hasText: "Database running." }).waitFor({ timeout: PATIENCE });
  await page.locator('#events li[data-kind="server_restarted"]').waitFor({ timeout: PATIENCE });
  await page.locator('#health-status[data-state="healthy"]').waitFor({ timeout: PATIENCE });
});

test("the charts draw points from real requests", async () => {
  await page.goto(`${base}/#/health`);
  const points = async () => Number(await page.locator("#chart-requests svg").getAttribute("data-points") ?? 0);
  const before = await points();
  const since = new Date().toISOString();
  await Promise.all(Array.from({ length: 100 }, () => fetch(`${base}/users?limit=1`)));
  // The samples after the burst count all of it (each sample: requests/s over 2 s).
  const counted = async () => (await api("GET", "/api/health/history")).samples
    .filter((sample) => sample.at > since)
    .reduce((sum, sample) => sum + sample.requests_per_second * 2, 0);
  const deadline = Date.now() + PATIENCE;
  while (await counted() < 100 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
  assert.ok(await counted() >= 100, `${await counted()} requests counted since ${since}`);
  await page.waitForFunction((count) => Number(document.querySelector("#chart-requests svg").dataset.points) > count, before, { timeout: PATIENCE });
  assert.ok(await page.locator("#chart-requests polyline").count() >= 1);
  assert.ok(await page.locator("#chart-latency polyline").count() >= 1);
  assert.match(await page.locator("#chart-latency .now").textContent(), /now (\d+\.\d+ ms|down)/);
  assert.match(await page.locator("#chart-pool .now").textContent(), /now \d+ \/ \d+/);
  await page.screenshot({ path: join(output, "health.png") });
});

test("the database screen shows its size, tables and sessions, pgharness's own only when asked", async () => {
  await page.goto(`${base}/#/database`);
  await page.locator("#database-name", { hasText: "app_db" }).waitFor();
  assert.match(await page.locator("#database-size").textContent(), /\d+(\.\d)? (kB|MB)/);
  // Tables and sessions are drawn from the same answer, which always holds this screen's session.
  await page.locator("#database-tables tr", { hasText: "public.users" }).waitFor();
  assert.ok(!(await page.locator("#database-sessions").textContent()).includes("(this screen)"),
    "pgharness's own session is shown by default");
  await page.getByLabel("Show pgharness's own sessions").check();
  const own = page.locator("#database-sessions tr", { hasText: "pgharness (this screen)" });
  await own.waitFor({ timeout: PATIENCE });
  assert.equal(await own.locator("td.sql").getAttribute("class"), "sql internal");
  await page.screenshot({ path: join(output, "database.png") });
  await page.getByLabel("Show pgharness's own sessions").uncheck();
  await own.waitFor({ state: "detached", timeout: PATIENCE });
});

test("Reset database empties a table that was filled, after naming the database", async () => {
  await createUser(named("filled"));
  await page.goto(`${base}/#/database`);
  await page.locator("#database-name", { hasText: "app_db" }).waitFor();
  await page.locator("#reset-database:not([disabled])").waitFor();
  assert.ok((await api("GET", "/users")).total > 0);
  let asked = "";
  page.once("dialog", (dialog) => { asked = dialog.message(); dialog.accept(); });
  await page.getByRole("button", { name: "Reset database…" }).click();
  assert.match(asked, /Reset the database app_db\?/);
  const migrations = readdirSync(join(here, "../../migrations")).filter((name) => name.endsWith(".up.sql")).length;
  await page.locator("#message", { hasText: `Database app_db reset: ${migrations} migration(s) applied` }).waitFor({ timeout: PATIENCE });
  assert.equal((await api("GET", "/users")).total, 0);
  await page.goto(`${base}/#/users`);
  await page.locator("#user-rows td.empty", { hasText: "No users yet" }).waitFor();
  await page.screenshot({ path: join(output, "users-empty.png") });
  await page.goto(`${base}/#/health`);
  await page.locator('#events li[data-kind="database_reset"]').waitFor();
});

test("a snapshot is saved, brings back its data when restored, and is deleted; a bad name is refused with the rule", async () => {
  const snapshot = `e2e-${mark}`;
  const later = named("later");
  await page.goto(`${base}/#/database`);
  await page.locator("#save-snapshot:not([disabled])").waitFor();
  try {
    await page.getByLabel("Snapshot name").fill("Before Demo");
    await page.getByRole("button", { name: "Save snapshot" }).click();
    assert.match(await page.locator("#snapshot-name-error").textContent(),
      /`Before Demo` is not a valid snapshot name: use 1 to 40 characters among lowercase letters a-z, digits/);
    assert.equal(await page.getByLabel("Snapshot name").getAttribute("aria-invalid"), "true");

    await page.getByLabel("Snapshot name").fill(snapshot);
    await page.getByRole("button", { name: "Save snapshot" }).click();
    await page.locator("#message", { hasText: `Snapshot ${snapshot} saved` }).waitFor({ timeout: PATIENCE });
    const row = page.locator("#snapshot-rows tr", { hasText: snapshot });
    await row.waitFor();
    assert.match(await row.textContent(), /\d+(\.\d)? (kB|MB)/);
    assert.match(await page.locator("#snapshot-total").textContent(), /snapshot\(s\), \d+(\.\d)? (kB|MB) in all/);

    // The server's refusal as it comes: the name is taken.
    await page.getByLabel("Snapshot name").fill(snapshot);
    await page.locator("#save-snapshot:not([disabled])").waitFor();
    await page.getByRole("button", { name: "Save snapshot" }).click();
    await page.locator("#snapshot-name-error", { hasText: snapshot }).waitFor({ timeout: PATIENCE });
    assert.match(await page.locator("#snapshot-name-error").textContent(), /exists already/);

    await createUser(later);
    let asked = "";
    page.once("dialog", (dialog) => { asked = dialog.message(); dialog.accept(); });
    await page.getByRole("button", { name: `Restore snapshot ${snapshot}` }).click();
    assert.match(asked, new RegExp(`Restore snapshot ${snapshot}\\? The database app_db is replaced`));
    await page.locator("#message", { hasText: `Snapshot ${snapshot} restored into app_db.` }).waitFor({ timeout: PATIENCE });
    assert.equal((await api("GET", `/users?q=${later}`)).total, 0, "the user made after the save is still there");

    page.once("dialog", (dialog) => { asked = dialog.message(); dialog.accept(); });
    await page.getByRole("button", { name: `Delete snapshot ${snapshot}` }).click();
    assert.match(asked, new RegExp(`Delete snapshot ${snapshot}\\?`));
    await page.locator("#message", { hasText: `Snapshot ${snapshot} deleted.` }).waitFor({ timeout: PATIENCE });
    await row.waitFor({ state: "detached" });
    assert.ok(!(await api("GET", "/api/database/snapshots")).snapshots.some((saved) => saved.name === snapshot));
    await page.screenshot({ path: join(output, "database-snapshots.png") });
  } finally {
    await fetch(`${base}/api/database/snapshots/${snapshot}`, { method: "DELETE", headers: { authorization: `Bearer ${adminToken}` } });
  }
});

const FIXTURE_EMAILS = ["alice@example.com", "bob@example.com", "carol@example.com"];

test("Load fixture shows the fixture's rows", async () => {
  await page.goto(`${base}/#/database`);
  await page.locator("#fixture-choice option", { hasText: "users" }).waitFor({ state: "attached" });
  await page.getByLabel("Fixture").selectOption("users");
  await page.getByRole("button", { name: "Load fixture" }).click();
  try {
    await page.locator("#message", { hasText: "Fixture users loaded" }).waitFor();
    await showUsersMatching("alice@example.com");
    await page.locator("#user-rows tr", { hasText: "alice@example.com" }).waitFor();
    await showUsersMatching("carol@example.com");
    await page.locator("#user-rows tr", { hasText: "carol@example.com" }).waitFor();
  } finally {
    // The fixture's users go, so that loading it again (or its names) works in any later test.
    for (const email of FIXTURE_EMAILS) await deleteUsersMatching(email);
  }
});

test("losing the API shows a banner that clears by itself", async () => {
  await page.goto(`${base}/#/health`);
  const apiCalls = /\/(health|api\/)/;
  await page.route(apiCalls, (route) => route.abort("connectionrefused"));
  await page.locator("#offline").waitFor({ state: "visible", timeout: PATIENCE });
  await page.unroute(apiCalls);
  await page.locator("#offline").waitFor({ state: "hidden", timeout: PATIENCE });
});

test("a page from another site can neither stop the database nor read the connection string", async () => {
  const hostile = createServer((_request, response) => {
    response.setHeader("content-type", "text/html");
    response.end("<!doctype html><title>hostile</title><p>nothing to see");
  });
  await new Promise((resolve) => hostile.listen(0, "127.0.0.1", resolve));
  const attacker = await context.newPage();
  try {
    // Another origin on this machine, as any site the developer visits would be.
    await attacker.goto(`http://localhost:${hostile.address().port}/`);
    const tried = await attacker.evaluate(async (target) => {
      // What a page can send without asking the server first: a no-cors fetch and a form.
      await fetch(`${target}/api/database/stop`, { method: "POST", mode: "no-cors", body: "x" });
      const frame = document.createElement("iframe");
      frame.name = "sink";
      document.body.append(frame);
      const form = document.createElement("form");
      form.method = "POST";
      form.action = `${target}/api/database/restart`;
      form.target = "sink";
      document.body.append(form);
      const loaded = new Promise((resolve) => frame.addEventListener("load", resolve, { once: true }));
      form.submit();
      await loaded;
      try {
        const reveal = await fetch(`${target}/api/connection/reveal`, { method: "POST" });
        return await reveal.text();
      } catch (error) {
        return `blocked: ${error.message}`;
      }
    }, base);
    assert.ok(!tried.includes("postgresql://"), tried);
    const health = await api("GET", "/health");
    assert.equal(health.status, "healthy");

    // DNS rebinding: the attacker's name now resolves to 127.0.0.1, so its page is same-origin
    // with the API. The server refuses to answer to that name.
    const rebound = `http://evil.test:${new URL(base).port}`;
    const response = await attacker.goto(`${rebound}/api/connection`);
    assert.equal(response.status(), 421);
    const reveal = await attacker.evaluate(async () => {
      const answer = await fetch("/api/connection/reveal", { method: "POST" });
      return { status: answer.status, text: await answer.text() };
    });
    assert.equal(reveal.status, 421);
    assert.ok(!reveal.text.includes("postgresql://"), reveal.text);
  } finally {
    await attacker.close();
    hostile.close();
  }
});

test("the API docs render under a strict content security policy", async () => {
  const refused = [];
  const listen = (message) => {
    if (/Content Security Policy/.test(message.text())) refused.push(message.text());
  };
  page.on("console", listen);
  try {
    const response = await page.goto(`${base}/docs`);
    assert.match(response.headers()["content-security-policy"], /frame-ancestors 'none'/);
    assert.equal(response.headers()["x-content-type-options"], "nosniff");
    await page.locator(".swagger-ui .info .title", { hasText: "pgharness" }).waitFor();
    await page.locator(".opblock-summary-path", { hasText: "/users/{user_id}" }).first().waitFor();
    assert.deepEqual(refused, []);
  } finally {
    page.off("console", listen);
  }
});

// What each screen shows once its data has arrived: its final layout.
const SCREEN_LOADED = {
  health: '#health-status:not([data-state="unknown"])',
  connection: "#migrations li",
  database: "#database-tables tr",
  users: "#user-rows tr",
};

test("every screen fits 1024×768 and 1920×1080, in light and dark mode", async () => {
  for (const [width, height] of [[1024, 768], [1920, 1080]]) {
    for (const colorScheme of ["light", "dark"]) {
      await page.setViewportSize({ width, height });
      await page.emulateMedia({ colorScheme });
      for (const screen of ["health", "connection", "database", "users"]) {
        await page.goto(`${base}/#/${screen}`);
        await page.locator(`#${screen}`).waitFor();
        await page.locator(SCREEN_LOADED[screen]).first().waitFor();
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        assert.ok(overflow <= 0, `${screen} at ${width}×${height} (${colorScheme}) overflows by ${overflow}px`);
        const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
        assert.equal(background === "rgb(13, 17, 23)", colorScheme === "dark", `${screen} ${colorScheme}: ${background}`);
        await page.screenshot({ path: join(output, `${screen}-${width}x${height}-${colorScheme}.png`) });
      }
    }
  }
});

test("the screens are usable by keyboard", async () => {
  await page.goto(`${base}/#/health`);
  for (let link = 0; link < 4; link += 1) await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await page.locator("#users").waitFor();
  await page.getByLabel("Search username or e-mail").focus();
  await page.keyboard.type(mark);
  await page.keyboard.press("Enter");
  await page.locator("#user-rows td.empty", { hasText: mark }).waitFor();
  await page.getByLabel("Username", { exact: true }).focus();
  await page.keyboard.type(named("keyboarder"));
  await page.keyboard.press("Tab");
  await page.keyboard.type(`keys-${mark}@example.com`);
  await page.keyboard.press("Enter");
  await page.locator("#user-rows tr", { hasText: `keys-${mark}@example.com` }).waitFor();
});

test("first paint of every screen, and the size of the UI's script and style (printed)", async () => {
  const fresh = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const measured = [];
  for (const screen of ["health", "connection", "database", "users"]) {
    const tab = await fresh.newPage();
    await tab.goto(`${base}/#/${screen}`);
    await tab.locator(`#${screen}`).waitFor();
    const paint = await tab.evaluate(() => {
      const entry = performance.getEntriesByName("first-contentful-paint")[0];
      return entry ? entry.startTime : null;
    });
    assert.ok(paint !== null, `${screen}: no first contentful paint`);
    measured.push(`${screen} ${paint.toFixed(0)} ms`);
    await tab.close();
  }
  await fresh.close();
  let total = 0;
  const modules = readdirSync(join(here, "../js")).map((name) => `/js/${name}`);
  for (const asset of ["/app.js", ...modules, "/app.css", "/"]) total += (await (await fetch(`${base}${asset}`)).arrayBuffer()).byteLength;
  console.log(`first contentful paint: ${measured.join(", ")}; HTML+JS+CSS ${(total / 1024).toFixed(1)} kB`);
});

test("a browser without the printed link sees the screens read-only, each admin button saying why", async () => {
  const stranger = await browser.newContext();
  const other = await stranger.newPage();
  await other.goto(`${base}/#/connection`);
  await other.locator("#admin-note:not([hidden])").waitFor();
  assert.match(await other.locator("#admin-note").textContent(), /pgharness url/);
  for (const id of ["copy-connection", "stop-database", "start-database", "reset-database", "save-snapshot", "sessions-internal"]) {
    const control = other.locator(`#${id}`);
    assert.ok(await control.isDisabled(), `${id} is enabled without the admin token`);
    assert.match(await control.getAttribute("title"), /admin token/);
  }
  const reveal = await other.evaluate(async () => (await fetch("/api/connection/reveal", { method: "POST" })).status);
  assert.equal(reveal, 401);
  await other.screenshot({ path: join(output, "read-only.png") });
  await stranger.close();
});
