// The OpenAPI document's `pattern`s as JavaScript reads them (ECMA-262, `u` flag: what JSON
// Schema validators and form generators in a browser use): each compiles, and accepts and
// refuses the values the API accepts and refuses (tests/pattern-samples.json, which the Rust
// tests check against the server).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startServe } from "./serve.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const samples = JSON.parse(readFileSync(join(here, "../../tests/pattern-samples.json"), "utf8"));
let serve;
let spec;

before(async () => {
  serve = await startServe();
  spec = await (await fetch(`${serve.base}/openapi.json`)).json();
});

after(async () => {
  await serve?.stop();
});

/** Every `pattern` in `node`, with where it is. */
function patternsIn(node, path = "") {
  if (node === null || typeof node !== "object") return [];
  return Object.entries(node).flatMap(([key, value]) =>
    key === "pattern" && typeof value === "string"
      ? [[path, value]]
      : patternsIn(value, `${path}/${key}`));
}

test("every pattern in the OpenAPI document compiles in JavaScript with the u flag", () => {
  const patterns = patternsIn(spec);
  assert.ok(patterns.length >= 5, `only ${patterns.length} patterns`);
  for (const [path, pattern] of patterns) {
    assert.doesNotThrow(() => new RegExp(pattern, "u"), `${path}: ${pattern}`);
  }
});

for (const schema of ["NewUser", "UserPatch"]) {
  for (const field of ["username", "email"]) {
    test(`${schema}.${field}'s pattern accepts and refuses what the API does`, () => {
      const pattern = new RegExp(spec.components.schemas[schema].properties[field].pattern, "u");
      for (const value of samples[field].accepted) {
        assert.ok(pattern.test(value), `refuses ${JSON.stringify(value)}`);
      }
      for (const value of samples[field].refused) {
        assert.ok(!pattern.test(value), `accepts ${JSON.stringify(value)}`);
      }
    });
  }
}
