// Pure functions of the UI: text from API answers, CSV in and out, byte sizes. No DOM, no
// network, so `node --test` runs them as they are (ui/tests/helpers.test.mjs).

/** The API's `detail` as readable text: a message, or "field: message" items. */
export function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${item.loc.slice(1).join(" ")}: ${item.msg}`).join("; ");
  }
  return "unexpected answer from the API";
}

/** The badge text for `/health`'s status; anything but healthy or degraded reads as unhealthy. */
export function healthStatusText(status) {
  return { healthy: "Healthy", degraded: "Degraded" }[status] ?? "Unhealthy";
}

/** The database line of `/health`: healthy, or unhealthy with the reason when there is one. */
export function databaseHealthText(health) {
  if (health.checks && health.checks.database === "healthy") return "healthy";
  const reason = health.database && health.database.reason;
  return reason ? `unhealthy (${reason})` : "unhealthy";
}

const BYTE_UNITS = ["B", "kB", "MB", "GB", "TB"];

/** A size in binary units: whole bytes below 1 kB, one decimal above, never "1024.0 kB". */
export function formatBytes(count) {
  let value = count;
  let unit = 0;
  // From kB up the value is shown rounded to a tenth, so 1023.95 already reads as the next unit.
  while (unit < BYTE_UNITS.length - 1 && value >= (unit === 0 ? 1024 : 1023.95)) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${BYTE_UNITS[unit]}`;
}

/** The server's rule for a snapshot name (`POST /api/database/snapshots`), in its words. */
export const SNAPSHOT_NAME_RULE = "1 to 40 characters among lowercase letters a-z, digits, `_` and `-`, starting with a letter or a digit";

/** Why `name` cannot name a snapshot, or null when it can: checked before anything is sent. */
export function snapshotNameProblem(name) {
  if (/^[a-z0-9][a-z0-9_-]{0,39}$/.test(name)) return null;
  return `${name === "" ? "A snapshot needs a name" : `\`${name}\` is not a valid snapshot name`}: use ${SNAPSHOT_NAME_RULE}.`;
}

/** The users list's next sort after a click on `key`: a second click reverses the order. */
export function nextSort(current, key) {
  return current === key ? `-${key}` : key;
}

/** A column's `aria-sort` under `sort`, or null when the list is not sorted by it. */
export function ariaSort(sort, key) {
  if (sort === key) return "ascending";
  if (sort === `-${key}`) return "descending";
  return null;
}

/** "21–40 of 45" for a page of `/users`, or "no users". */
export function pageInfoText(page) {
  if (page.total === 0) return "no users";
  const last = Math.min(page.offset + page.items.length, page.total);
  return `${page.offset + 1}–${last} of ${page.total}`;
}

/**
 * A CSV cell (RFC 4180 quoting). A value starting with = + - @, a tab or a carriage return gets
 * a leading ' so that a spreadsheet opening the file shows it as text instead of running it as
 * a formula (OWASP's advice against CSV injection).
 */
export function csvCell(value) {
  const text = String(value);
  const inert = /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
  return `"${inert.replaceAll('"', '""')}"`;
}

/** Users as a CSV file: a header row, then one line per user, CRLF line ends. */
export function usersCsv(users) {
  const lines = ["id,username,email,created_at",
    ...users.map((user) => [user.id, user.username, user.email, user.created_at].map(csvCell).join(","))];
  return `${lines.join("\r\n")}\r\n`;
}

/**
 * A pasted batch: a JSON array of `{username, email}`, or CSV with `username,email` per line
 * (RFC 4180 quotes, an optional header row, blank lines skipped, a leading BOM ignored).
 * Returns `{ users, lines, problems }`: `lines[i]` is the CSV line `users[i]` starts on (none
 * for JSON), and each problem names its line; with problems, nothing should be sent.
 */
export function parseBatch(input) {
  const text = input.replace(/^\uFEFF/, "");
  const trimmed = text.trim();
  if (trimmed.startsWith("[") || trimmed.startsWith("{")) return parseJsonBatch(trimmed);
  return parseCsvBatch(text);
}

function parseJsonBatch(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { users: [], lines: [], problems: [`Not valid JSON: ${error.message}`] };
  }
  if (!Array.isArray(value)) {
    return { users: [], lines: [], problems: ['A JSON batch is an array of users: [{"username": "…", "email": "…"}]; put a single user in [ ].'] };
  }
  return { users: value, lines: [], problems: [] };
}

function parseCsvBatch(text) {
  const { records, problems } = csvRecords(text);
  const rows = records.filter((record) => !(record.fields.length === 1 && record.fields[0] === ""));
  if (rows.length && rows[0].fields.map((field) => field.toLowerCase()).join(",") === "username,email") rows.shift();
  const users = [];
  const lines = [];
  for (const { line, fields } of rows) {
    if (fields.length === 2) {
      users.push({ username: fields[0], email: fields[1] });
      lines.push(line);
    } else {
      problems.push(`Line ${line}: expected 2 values (username,email), found ${fields.length}. A value with a comma goes in double quotes.`);
    }
  }
  return { users, lines, problems };
}

/** RFC 4180 records with the line each starts on; unquoted values are trimmed. */
function csvRecords(text) {
  const records = [];
  const problems = [];
  let fields = [];
  let field = "";
  let quoted = false; // the current field was a quoted one, now closed or not
  let inQuotes = false;
  let line = 1;
  let recordLine = 1;
  let quoteLine = 1;
  let strayAfterQuote = false;
  const endField = () => {
    fields.push(quoted ? field : field.trim());
    field = "";
    quoted = false;
  };
  const endRecord = () => {
    endField();
    records.push({ line: recordLine, fields });
    fields = [];
  };
  for (let at = 0; at < text.length; at += 1) {
    const char = text[at];
    if (inQuotes) {
      if (char === '"' && text[at + 1] === '"') {
        field += '"';
        at += 1;
      } else if (char === '"') {
        inQuotes = false;
      } else {
        field += char;
        if (char === "\n") line += 1;
      }
    } else if (char === ",") {
      endField();
    } else if (char === "\n") {
      endRecord();
      line += 1;
      recordLine = line;
    } else if (char === '"' && !quoted && field.trim() === "") {
      field = "";
      quoted = true;
      inQuotes = true;
      quoteLine = line;
    } else if (quoted) {
      if (!/\s/.test(char) && !strayAfterQuote) {
        problems.push(`Line ${line}: text after a closing quote. A quote inside a quoted value is written twice ("").`);
        strayAfterQuote = true;
      }
    } else {
      field += char;
    }
  }
  if (inQuotes) {
    problems.push(`Line ${quoteLine}: a quoted value is not closed.`);
    return { records: [], problems };
  }
  endRecord();
  return { records, problems };
}

/** One error of a refused batch, with the row it is about and, for CSV, that row's line. */
export function batchErrorText(error, lines) {
  const row = error.loc.find((part) => typeof part === "number");
  if (row === undefined) return error.msg;
  const field = error.loc[error.loc.length - 1];
  const line = lines[row] === undefined ? "" : ` on line ${lines[row]}`;
  return `Row ${row + 1} (${field})${line}: ${error.msg}`;
}
