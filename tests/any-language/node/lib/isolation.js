// Tests that write rows and must see only their own, however many run at once.
const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const { withDatabase } = require('./database')

module.exports = function isolationSuite(group, writers) {
  describe(`group ${group}`, { concurrency: writers }, () => {
    for (let writer = 1; writer <= writers; writer++) {
      const owner = `${group}-${writer}`
      it(`${owner} sees only its own rows`, () =>
        withDatabase(async (db) => {
          for (let n = 0; n < writer + 2; n++) {
            await db.query('INSERT INTO notes (owner, body) VALUES ($1, $2)', [owner, `note ${n}`])
          }
          const { rows } = await db.query(
            'SELECT owner, count(*)::int AS count, min(id) AS first FROM notes GROUP BY owner'
          )
          assert.deepEqual(rows, [{ owner, count: writer + 2, first: 1 }])
        }))
    }
  })
}
