const { it } = require('node:test')
const assert = require('node:assert/strict')
const { withDatabase } = require('../lib/database')

it('trusted extensions from the migrations work', () =>
  withDatabase(async (db) => {
    await db.query("INSERT INTO notes (owner, body) VALUES ('ext', 'Hello')")
    const { rows } = await db.query("SELECT token FROM notes WHERE body = 'HELLO'")
    assert.equal(rows[0].token.length, 36)
  }))

it("the test's role cannot run programs on the server", () =>
  withDatabase(async (db) => {
    await assert.rejects(db.query("COPY notes TO PROGRAM 'true'"), /permission denied/)
  }))
