// A database of its own for each test, from `pgharness testdb serve` through IntegreSQL's API.
// The client reads no variable: `pgharness testdb run` exports the server's root as INTEGRESQL_URL.
const fs = require('node:fs')
const path = require('node:path')
const { IntegreSQLClient } = require('@devoxa/integresql-client')
const { Client } = require('pg')

const integresql = new IntegreSQLClient({ url: process.env.INTEGRESQL_URL })
const migrations = path.join(__dirname, '..', 'migrations')

function connectionOf(config) {
  const { host, port, username, password, database } = config
  return new Client({ host, port, user: username, password, database })
}

// Applied once per run, by the first process to ask; the others wait until it has finalized.
async function migrate(config) {
  const client = connectionOf(config)
  await client.connect()
  try {
    for (const file of fs.readdirSync(migrations).sort()) {
      await client.query(fs.readFileSync(path.join(migrations, file), 'utf8'))
    }
  } finally {
    await client.end()
  }
}

let template
async function templateHash() {
  template ??= (async () => {
    const hash = await integresql.hashFiles([path.relative(process.cwd(), migrations) + '/*.sql'])
    await integresql.initializeTemplate(hash, migrate)
    return hash
  })()
  return template
}

// Runs `work` with a connection to a fresh, migrated database; closes it afterwards.
async function withDatabase(work) {
  const config = await integresql.getTestDatabase(await templateHash())
  const client = connectionOf(config)
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}

module.exports = { withDatabase }
