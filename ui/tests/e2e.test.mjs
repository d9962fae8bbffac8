// End-to-end: a real `pgharness serve` (embedded PostgreSQL 16) driven through Debian's
// chromium by playwright-core. Screenshots of each screen go to ui/test-output/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { createServer } from "node:http";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.PGHARNESS_BIN ?? join(here, "../../target/debug/pgharness");
const output = join(here, "../test-output");
const dataDir = mkdtempSync(join(tmpdir(), "pgharness-e2e-"));
let server;
let base;
let browser;
let page;

before(async () => {
  mkdirSync(output, { recursive: true });
  server = spawn(binary, ["serve", "--host", "127.0.0.1", "--port", "0"], {
    cwd: dataDir,
    env: { ...process.env, RUST_LOG: "warn", DATABASE_URL: "", PGHARNESS_DATA_DIR: join(dataDir, "data"), PGHARNESS_LOG_DIR: "off" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  base = await new Promise((resolve, reject) => {
    server.once("exit", (code) => reject(new Error(`pgharness serve exited with ${code}`)));
    const lines = createInterface({ input: server.stdout });
    lines.on("line", (line) => {
      const found = line.match(/^API and UI at (http:\/\/\S+?)\/?\s/);
      if (found) resolve(found[1]);
    });
  });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    // evil.test stands for an attacker's name rebound to this machine (DNS rebinding).
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--host-resolver-rules=MAP evil.test 127.0.0.1",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  page = await context.newPage();
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((resolve) => server.once("exit", resolve));
    server.kill("SIGTERM");
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
});

async function api(method, path) {
  const response = await fetch(`${base}${path}`, { method });
  return response.json();
}

async function badgeState() {
  return page.locator("#health-status").getAttribute("data-state");
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
  await page.goto(`${base}/#/users`);
  await page.getByLabel("Username", { exact: true }).fill("alice");
  await page.getByLabel("E-mail", { exact: true }).fill("alice@example.com");
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator("#user-rows tr", { hasText: "alice@example.com" }).waitFor();
  assert.match(await page.locator("#message").textContent(), /Created user alice/);
});

test("a duplicate username is shown next to the field", async () => {
  await page.getByLabel("Username", { exact: true }).fill("alice");
  await page.getByLabel("E-mail", { exact: true }).fill("someone-else@example.com");
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator("#username-error", { hasText: "already taken" }).waitFor();
  assert.equal(await page.getByLabel("Username", { exact: true }).getAttribute("aria-invalid"), "true");
  assert.equal(await page.locator("#email-error").textContent(), "");
});

test("a batch with one bad row imports nothing and names the row", async () => {
  await page.getByLabel(/Paste CSV/).fill("username,email\ncarol,carol@example.com\ndave,not-an-address\n");
  await page.getByRole("button", { name: "Import all or nothing" }).click();
  await page.locator("#batch-result", { hasText: "Nothing was imported" }).waitFor();
  assert.match(await page.locator("#batch-result").textContent(), /Row 2 \(email\)/);
  const carol = await api("GET", "/users?q=carol");
  assert.equal(carol.total, 0);
  await page.getByLabel(/Paste CSV/).fill('[{"username": "erin", "email": "erin@example.com"}, {"username": "frank", "email": "frank@example.com"}]');
  await page.getByRole("button", { name: "Import all or nothing" }).click();
  await page.locator("#batch-result", { hasText: "Imported 2 users" }).waitFor();
  await page.locator("#user-rows tr", { hasText: "frank@example.com" }).waitFor();
  await page.screenshot({ path: join(output, "users.png") });
});

test("a user is edited and deleted after confirmation", async () => {
  await page.locator("#user-rows tr", { hasText: "erin@example.com" }).click();
  await page.getByLabel("Username", { exact: true }).fill("erin2");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#user-rows tr", { hasText: "erin2" }).waitFor();
  await page.locator("#user-rows tr", { hasText: "erin2" }).click();
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByRole("button", { name: "Delete" }).click();
  await page.locator("#message", { hasText: "User deleted" }).waitFor();
  assert.equal((await api("GET", "/users?q=erin")).total, 0);
});

test("the connection screen shows the server, the pool and the migrations", async () => {
  await page.goto(`${base}/#/connection`);
  await page.locator("#connection-version", { hasText: "16." }).waitFor();
  assert.equal(await page.locator("#connection-mode").textContent(), "embedded");
  assert.match(await page.locator("#connection-url").textContent(), /^127\.0\.0\.1:\d+\/app_db$/);
  await page.locator("#migrations li", { hasText: "create users" }).waitFor();
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

test("stopping the database turns health red and says why on the users screen; starting it turns it green", async () => {
  await page.goto(`${base}/#/health`);
  await page.locator('#health-status[data-state="healthy"]').waitFor();
  await api("POST", "/api/database/stop");
  await page.locator('#health-status[data-state="unhealthy"]').waitFor({ timeout: 6000 });
  assert.equal(await badgeState(), "unhealthy");
  await page.screenshot({ path: join(output, "health-down.png") });
  await page.goto(`${base}/#/users`);
  // Well inside the 30 s pool timeout: a stopped server is reported, not waited for.
  await page.locator("#message", { hasText: "database unavailable: connection refused" }).waitFor({ timeout: 3000 });
  await page.goto(`${base}/#/health`);
  await api("POST", "/api/database/start");
  await page.locator('#health-status[data-state="healthy"]').waitFor({ timeout: 6000 });
});

test("losing the API shows a banner that clears by itself", async () => {
  await page.route("**/health", (route) => route.abort("connectionrefused"));
  await page.locator("#offline").waitFor({ state: "visible", timeout: 6000 });
  await page.unroute("**/health");
  await page.locator("#offline").waitFor({ state: "hidden", timeout: 6000 });
});

test("a page from another site can neither stop the database nor read the connection string", async () => {
  const hostile = createServer((_request, response) => {
    response.setHeader("content-type", "text/html");
    response.end("<!doctype html><title>hostile</title><p>nothing to see");
  });
  await new Promise((resolve) => hostile.listen(0, "127.0.0.1", resolve));
  const attacker = await page.context().newPage();
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

test("every screen fits 1024×768 and 1920×1080, in light and dark mode", async () => {
  for (const [width, height] of [[1024, 768], [1920, 1080]]) {
    for (const colorScheme of ["light", "dark"]) {
      await page.setViewportSize({ width, height });
      await page.emulateMedia({ colorScheme });
      for (const screen of ["health", "connection", "users"]) {
        await page.goto(`${base}/#/${screen}`);
        await page.locator(`#${screen}`).waitFor();
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        assert.ok(overflow <= 0, `${screen} at ${width}×${height} (${colorScheme}) overflows by ${overflow}px`);
        const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
        assert.equal(background === "rgb(13, 17, 23)", colorScheme === "dark", `${screen} ${colorScheme}: ${background}`);
      }
      await page.screenshot({ path: join(output, `users-${width}x${height}-${colorScheme}.png`) });
    }
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.emulateMedia({ colorScheme: "light" });
});

test("the screens are usable by keyboard", async () => {
  await page.goto(`${base}/#/health`);
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await page.locator("#users").waitFor();
  await page.getByLabel("Username", { exact: true }).focus();
  await page.keyboard.type("keyboarder");
  await page.keyboard.press("Tab");
  await page.keyboard.type("keys@example.com");
  await page.keyboard.press("Enter");
  await page.locator("#user-rows tr", { hasText: "keys@example.com" }).waitFor();
});
