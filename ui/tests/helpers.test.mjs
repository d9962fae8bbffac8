// The UI's pure helpers, imported from the module the browser loads: no browser, no server.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ariaSort, batchErrorText, csvCell, databaseHealthText, describe, formatBytes, healthStatusText,
  nextSort, pageInfoText, parseBatch, SNAPSHOT_NAME_RULE, snapshotNameProblem, usersCsv,
} from "../js/helpers.js";

const alice = { username: "alice", email: "alice@example.com" };
const bob = { username: "bob", email: "bob@example.com" };

test("CSV: one user per line, the header row and blank lines skipped, values trimmed", () => {
  assert.deepEqual(parseBatch("alice,alice@example.com\nbob,bob@example.com"),
    { users: [alice, bob], lines: [1, 2], problems: [] });
  assert.deepEqual(parseBatch("username,email\n\nalice, alice@example.com \n  \nbob,bob@example.com\n"),
    { users: [alice, bob], lines: [3, 5], problems: [] });
  assert.deepEqual(parseBatch("USERNAME,EMAIL\r\nalice,alice@example.com\r\n"),
    { users: [alice], lines: [2], problems: [] });
});

test("CSV: a header row only counts as one on the first line with data", () => {
  assert.deepEqual(parseBatch("alice,alice@example.com\nusername,email").users,
    [alice, { username: "username", email: "email" }]);
});

test("CSV: a byte order mark from a spreadsheet's export is ignored", () => {
  assert.deepEqual(parseBatch("\uFEFFusername,email\r\nalice,alice@example.com\r\n"),
    { users: [alice], lines: [2], problems: [] });
});

test("CSV: quoted values keep their commas, quotes, spaces and line breaks", () => {
  const { users, lines, problems } = parseBatch(
    'username,email\n"o\'brien, jr.",obrien@example.com\n"say ""hi""", "hi@example.com"\n"two\nlines",two@example.com\n" padded ",padded@example.com\nbob,bob@example.com');
  assert.deepEqual(problems, []);
  assert.deepEqual(users, [
    { username: "o'brien, jr.", email: "obrien@example.com" },
    { username: 'say "hi"', email: "hi@example.com" },
    { username: "two\nlines", email: "two@example.com" },
    { username: " padded ", email: "padded@example.com" },
    bob,
  ]);
  // A record spanning two lines starts on the first; the next one's line counts both.
  assert.deepEqual(lines, [2, 3, 4, 6, 7]);
});

test("CSV: rows with too few or too many values are reported with their line", () => {
  const { problems } = parseBatch("username,email\nalice,alice@example.com\n\nbob\ncarol,carol@example.com,extra\n");
  assert.deepEqual(problems, [
    "Line 4: expected 2 values (username,email), found 1. A value with a comma goes in double quotes.",
    "Line 5: expected 2 values (username,email), found 3. A value with a comma goes in double quotes.",
  ]);
  assert.match(parseBatch("bob,bob@example.com\nalice,o'brien, jr.@example.com").problems[0], /^Line 2: .* found 3/);
});

test("CSV: an unclosed quote and text after a closing quote are reported with their line", () => {
  assert.deepEqual(parseBatch('alice,alice@example.com\n"bob,bob@example.com\ncarol,carol@example.com').problems,
    ["Line 2: a quoted value is not closed."]);
  assert.deepEqual(parseBatch('alice,alice@example.com\n"bo"b,bob@example.com').problems,
    ['Line 2: text after a closing quote. A quote inside a quoted value is written twice ("").']);
});

test("JSON: an array is the batch as it is; an object or broken JSON is refused with why", () => {
  assert.deepEqual(parseBatch(` [${JSON.stringify(alice)}, ${JSON.stringify(bob)}] `),
    { users: [alice, bob], lines: [], problems: [] });
  assert.deepEqual(parseBatch("\uFEFF[]"), { users: [], lines: [], problems: [] });
  const object = parseBatch(JSON.stringify(alice));
  assert.deepEqual(object.users, []);
  assert.match(object.problems[0], /JSON batch is an array of users.*put a single user in \[ \]/);
  const broken = parseBatch('[{"username": "alice",]');
  assert.deepEqual(broken.users, []);
  assert.match(broken.problems[0], /^Not valid JSON: /);
});

test("a refused batch names the row, its field and, for CSV, its line", () => {
  const error = { loc: ["body", 1, "email"], msg: "value is not a valid email address" };
  assert.equal(batchErrorText(error, [2, 3]), "Row 2 (email) on line 3: value is not a valid email address");
  assert.equal(batchErrorText(error, []), "Row 2 (email): value is not a valid email address");
  assert.equal(batchErrorText({ loc: ["body"], msg: "at most 1000 users" }, []), "at most 1000 users");
});

test("bytes: whole bytes below 1 kB, one decimal above, the next unit once it would read 1024", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1024), "1.0 kB");
  assert.equal(formatBytes(1536), "1.5 kB");
  assert.equal(formatBytes(1024 * 1024 - 1), "1.0 MB");
  assert.equal(formatBytes(1024 * 1024 - 52), "1023.9 kB");
  assert.equal(formatBytes(8 * 1024 * 1024 + 512 * 1024), "8.5 MB");
  assert.equal(formatBytes(1024 ** 3), "1.0 GB");
  assert.equal(formatBytes(1024 ** 4), "1.0 TB");
  assert.equal(formatBytes(2048 * 1024 ** 4), "2048.0 TB");
});

test("health: each status reads as its word, anything unknown as unhealthy", () => {
  assert.equal(healthStatusText("healthy"), "Healthy");
  assert.equal(healthStatusText("degraded"), "Degraded");
  assert.equal(healthStatusText("unhealthy"), "Unhealthy");
  assert.equal(healthStatusText(undefined), "Unhealthy");
  assert.equal(databaseHealthText({ checks: { database: "healthy" } }), "healthy");
  assert.equal(databaseHealthText({ checks: { database: "unhealthy" }, database: { reason: "connection refused" } }),
    "unhealthy (connection refused)");
  assert.equal(databaseHealthText({}), "unhealthy");
});

test("the API's detail reads as a message or as field: message items", () => {
  assert.equal(describe("database unavailable: connection refused"), "database unavailable: connection refused");
  assert.equal(describe([{ loc: ["body", "email"], msg: "already taken" }, { loc: ["query", "sort"], msg: "unknown column" }]),
    "email: already taken; sort: unknown column");
  assert.equal(describe(null), "unexpected answer from the API");
});

test("CSV export: quoted cells, formulas made text, CRLF line ends", () => {
  assert.equal(csvCell('say "hi", bye'), '"say ""hi"", bye"');
  for (const formula of ["=1+1", "+SUM(1,1)", "-2+3", "@SUM(A1)", "\tx", "\rx"]) {
    assert.equal(csvCell(formula), `"'${formula}"`);
  }
  assert.equal(csvCell(42), '"42"');
  assert.equal(usersCsv([{ id: 7, username: "alice", email: "alice@example.com", created_at: "2025-01-01T09:00:00Z" }]),
    'id,username,email,created_at\r\n"7","alice","alice@example.com","2025-01-01T09:00:00Z"\r\n');
});

test("sorting: a second click on a column reverses it, and the header says which way", () => {
  assert.equal(nextSort("id", "username"), "username");
  assert.equal(nextSort("username", "username"), "-username");
  assert.equal(nextSort("-username", "username"), "username");
  assert.equal(ariaSort("username", "username"), "ascending");
  assert.equal(ariaSort("-username", "username"), "descending");
  assert.equal(ariaSort("-username", "email"), null);
});

test("the page line counts from 1 and stops at the total", () => {
  assert.equal(pageInfoText({ offset: 0, items: [], total: 0 }), "no users");
  assert.equal(pageInfoText({ offset: 0, items: Array(20), total: 45 }), "1–20 of 45");
  assert.equal(pageInfoText({ offset: 40, items: Array(5), total: 45 }), "41–45 of 45");
});

test("a snapshot name follows the server's rule, and a refusal says the rule", () => {
  for (const name of ["a", "0", "before-demo", "v2_seed", "x".repeat(40)]) assert.equal(snapshotNameProblem(name), null, name);
  for (const name of ["", "Demo", "-a", "_a", "a b", "é", "x".repeat(41), "a\n"]) {
    assert.ok(snapshotNameProblem(name).endsWith(`use ${SNAPSHOT_NAME_RULE}.`), name);
  }
  assert.match(snapshotNameProblem("Demo"), /^`Demo` is not a valid snapshot name/);
  assert.match(snapshotNameProblem(""), /^A snapshot needs a name/);
});
