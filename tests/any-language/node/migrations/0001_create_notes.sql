-- Trusted extensions a database owner may create, and a table.
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE notes (
  id serial PRIMARY KEY,
  owner text NOT NULL,
  body citext NOT NULL,
  token text NOT NULL DEFAULT gen_random_uuid()::text
);
