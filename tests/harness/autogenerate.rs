//! `pgharness migrate new NAME --autogenerate`: migrations written from hand changes to the dev
//! database, proven both ways, recorded as applied.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pgharness::embedded::EmbeddedServer;
use pgharness::migrations::schema::Schema;
use sqlx::{Connection as _, PgConnection};

use crate::helpers::{Output, temporary_server};
use crate::migrate::{assert_fails, assert_succeeds, execute, migrate, migrations_copy};

/// Every kind of object autogenerate writes, made by hand on top of the project's migrations.
const EVERY_KIND: &str = r"
CREATE TYPE order_state AS ENUM ('new', 'paid', 'shipped');
CREATE SEQUENCE invoice_numbers AS integer START 1000 INCREMENT 10;
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL CONSTRAINT orders_user_fk REFERENCES users (id) ON DELETE CASCADE,
    state order_state NOT NULL DEFAULT 'new',
    quantity integer NOT NULL CONSTRAINT orders_quantity_positive CHECK (quantity > 0),
    unit_price numeric(10, 2) NOT NULL,
    total numeric(12, 2) GENERATED ALWAYS AS (quantity * unit_price) STORED,
    invoice integer DEFAULT nextval('invoice_numbers'),
    reference text CONSTRAINT orders_reference_key UNIQUE,
    delivery tstzrange,
    CONSTRAINT orders_no_overlapping_delivery EXCLUDE USING gist (delivery WITH &&)
);
CREATE TABLE order_notes (id serial PRIMARY KEY, body text);
CREATE INDEX orders_open_idx ON orders (user_id) WHERE state <> 'shipped';
ALTER TABLE users ADD COLUMN nickname text DEFAULT 'friend';
CREATE VIEW paid_orders AS SELECT id, user_id, total FROM orders WHERE state = 'paid';
CREATE FUNCTION orders_check_quantity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.quantity > 1000 THEN RAISE EXCEPTION 'too many'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER orders_check_quantity BEFORE INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_check_quantity();
COMMENT ON TABLE orders IS 'What a user bought';
COMMENT ON COLUMN orders.state IS 'Where the order is';
COMMENT ON TYPE order_state IS 'An order''s lifecycle';
";

/// Changes to each of those kinds: labels, options, bodies, types, nullability, defaults,
/// definitions and comments.
const CHANGE_EVERY_KIND: &str = r"
ALTER TYPE order_state ADD VALUE 'cancelled' AFTER 'paid';
ALTER SEQUENCE invoice_numbers INCREMENT 5;
CREATE OR REPLACE FUNCTION orders_check_quantity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.quantity > 500 THEN RAISE EXCEPTION 'too many'; END IF;
    RETURN NEW;
END $$;
ALTER TABLE orders ALTER COLUMN reference SET NOT NULL;
ALTER TABLE orders ALTER COLUMN invoice TYPE bigint;
ALTER TABLE orders DROP CONSTRAINT orders_quantity_positive,
    ADD CONSTRAINT orders_quantity_positive CHECK (quantity BETWEEN 1 AND 500);
DROP INDEX orders_open_idx;
CREATE INDEX orders_open_idx ON orders (user_id, state) WHERE state <> 'shipped';
DROP VIEW paid_orders;
CREATE VIEW paid_orders AS SELECT id, user_id, total, invoice FROM orders WHERE state = 'paid';
DROP TRIGGER orders_check_quantity ON orders;
CREATE TRIGGER orders_check_quantity BEFORE INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_check_quantity();
ALTER TABLE users ALTER COLUMN nickname SET DEFAULT 'pal';
ALTER TABLE order_notes ALTER COLUMN body SET DEFAULT '';
COMMENT ON TABLE orders IS 'What a user ordered';
COMMENT ON COLUMN orders.state IS NULL;
";

async fn schema(server: &EmbeddedServer) -> BTreeSet<String> {
    let mut connection = PgConnection::connect(&server.url().expose_url())
        .await
        .unwrap();
    let schema = Schema::read(&mut connection).await.unwrap().lines();
    connection.close().await.unwrap();
    schema
}

/// The migration files in `directory` whose names hold `name`.
fn written(directory: &Path, name: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains(name))
        .collect();
    files.sort();
    files
}

/// Autogenerates `name` from the hand change `sql`, then checks what a user relies on:
/// the dev database is clean against the migrations, and `down`/`up` take it to the schema
/// before the change and back.
async fn autogenerate_and_go_back_and_forth(
    server: &EmbeddedServer,
    migrations: &Path,
    sql: &str,
    name: &str,
) -> Output {
    let before = schema(server).await;
    execute(server, sql).await;
    let after = schema(server).await;

    let generated = migrate(server, Some(migrations), &["new", name, "--autogenerate"]);
    assert_succeeds(&generated);
    generated.assert_shows("Recorded");
    assert_eq!(written(migrations, name).len(), 2, "{}", generated.stdout);
    assert_succeeds(&migrate(server, Some(migrations), &["status"]));
    migrate(server, Some(migrations), &["check"]).assert_shows("No drift");
    assert_eq!(
        schema(server).await,
        after,
        "autogenerate changed the dev database"
    );

    assert_succeeds(&migrate(server, Some(migrations), &["down"]));
    assert_eq!(
        schema(server).await,
        before,
        "the down file did not undo the change"
    );
    assert_succeeds(&migrate(server, Some(migrations), &["up"]));
    assert_eq!(
        schema(server).await,
        after,
        "the up file did not redo the change"
    );
    generated
}

#[tokio::test]
async fn autogenerate_writes_every_kind_of_object_and_its_changes_both_ways() {
    let (_home, server) = temporary_server().await;
    let (_directory, migrations) = migrations_copy();
    assert_succeeds(&migrate(&server, Some(&migrations), &["up"]));

    let made =
        autogenerate_and_go_back_and_forth(&server, &migrations, EVERY_KIND, "add_orders").await;
    // Undoing a new table loses what it holds: said in the output and the file.
    made.assert_shows("⚠ down: drops table orders and every row in it");
    let down = std::fs::read_to_string(&written(&migrations, "add_orders")[0]).unwrap();
    assert!(down.contains("-- HAZARD: drops table orders"), "{down}");

    let changed = autogenerate_and_go_back_and_forth(
        &server,
        &migrations,
        CHANGE_EVERY_KIND,
        "change_orders",
    )
    .await;
    changed.assert_shows("⚠ up: changes the type of orders.invoice from integer to bigint");
    changed.assert_shows("⚠ up: sets orders.reference NOT NULL");
    // A label cannot be dropped from an enum type: the type is made again.
    changed.assert_shows("⚠ down: enum type order_state loses or reorders labels");

    // With the dev database as the migrations leave it, nothing is written.
    let files = std::fs::read_dir(&migrations).unwrap().count();
    let again = migrate(
        &server,
        Some(&migrations),
        &["new", "nothing", "--autogenerate"],
    );
    assert_succeeds(&again);
    again.assert_shows("No difference between the migrations and the dev database");
    assert_eq!(std::fs::read_dir(&migrations).unwrap().count(), files);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn autogenerate_flags_a_rename_a_lost_column_and_a_type_change() {
    let (_home, server) = temporary_server().await;
    let (_directory, migrations) = migrations_copy();
    assert_succeeds(&migrate(&server, Some(&migrations), &["up"]));

    let generated = autogenerate_and_go_back_and_forth(
        &server,
        &migrations,
        "ALTER TABLE users RENAME COLUMN created_at TO registered_at;
         ALTER TABLE users ALTER COLUMN email TYPE varchar(320);",
        "rename_and_retype",
    )
    .await;
    generated.assert_shows(
        "⚠ up: drops column users.created_at and its data; if it was renamed to \
         registered_at, write `ALTER TABLE users RENAME COLUMN created_at TO registered_at`",
    );
    generated
        .assert_shows("⚠ up: changes the type of users.email from text to character varying(320)");
    let up = std::fs::read_to_string(&written(&migrations, "rename_and_retype")[1]).unwrap();
    assert!(
        up.contains("-- HAZARD: drops column users.created_at")
            && up.contains("USING email::character varying(320)"),
        "{up}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn autogenerate_writes_nothing_it_cannot_prove_nor_on_a_database_behind() {
    let (_home, server) = temporary_server().await;
    let (_directory, migrations) = migrations_copy();

    let behind = migrate(
        &server,
        Some(&migrations),
        &["new", "early", "--autogenerate"],
    );
    assert_fails(&behind);
    assert!(
        behind
            .stderr
            .contains("Apply them first (`pgharness migrate up`)"),
        "{}",
        behind.stderr
    );

    assert_succeeds(&migrate(&server, Some(&migrations), &["up"]));
    let files = std::fs::read_dir(&migrations).unwrap().count();
    // A partitioned table's partitioning is not among what autogenerate writes.
    execute(
        &server,
        "CREATE TABLE events (at timestamptz NOT NULL) PARTITION BY RANGE (at)",
    )
    .await;
    let unproven = migrate(
        &server,
        Some(&migrations),
        &["new", "events", "--autogenerate"],
    );
    assert_fails(&unproven);
    for shown in [
        "Nothing written",
        "missing: table events (partitioned)",
        "CREATE TABLE events",
    ] {
        assert!(unproven.stderr.contains(shown), "{}", unproven.stderr);
    }
    assert_eq!(std::fs::read_dir(&migrations).unwrap().count(), files);
    assert_succeeds(&migrate(&server, Some(&migrations), &["status"]));
    server.stop().await.unwrap();
}
