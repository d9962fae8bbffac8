//! The schema of one database as read from its catalogs: what the drift check compares and what
//! `migrate new --autogenerate` writes migrations from.
//!
//! User schemas only; not sqlx's bookkeeping table, nor objects of extensions (such as the
//! embedded server's `pg_stat_statements`), which migrations do not create. Names are kept as
//! `PostgreSQL` prints them (`regclass`, `regtype`, `regprocedure`: quoted where needed), so they
//! go into SQL as they are. Definitions are `PostgreSQL`'s own deparsing (`pg_get_indexdef`,
//! `pg_get_constraintdef`, …), so two databases built alike read alike.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;

use crate::database::sql;

/// One database's schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// Enum types by name: their labels in order.
    pub enums: BTreeMap<String, Vec<String>>,
    /// Sequences by name, except those behind identity columns.
    pub sequences: BTreeMap<String, Sequence>,
    /// Functions and procedures by signature (`name(argument types)`): `CREATE OR REPLACE …`.
    pub functions: BTreeMap<String, String>,
    /// Tables by name.
    pub tables: BTreeMap<String, Table>,
    /// Views and materialized views, in the order they were made (a view after those it reads).
    pub views: Vec<View>,
    /// Indexes that back no constraint, by name.
    pub indexes: BTreeMap<String, Index>,
    /// Table constraints by (table, name).
    pub constraints: BTreeMap<(String, String), Constraint>,
    /// Triggers by (table, name): `CREATE TRIGGER …`.
    pub triggers: BTreeMap<(String, String), String>,
    /// Comments by what they are on, as `COMMENT ON` names it (`TABLE users`, `COLUMN users.id`).
    pub comments: BTreeMap<String, String>,
}

/// A sequence's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// `bigint`, `integer` or `smallint`.
    pub data_type: String,
    /// `START WITH`.
    pub start: i64,
    /// `INCREMENT BY`.
    pub increment: i64,
    /// `MINVALUE`.
    pub min: i64,
    /// `MAXVALUE`.
    pub max: i64,
    /// `CACHE`.
    pub cache: i64,
    /// `CYCLE`.
    pub cycle: bool,
    /// `table.column` that owns it (a `serial` column's sequence).
    pub owned_by: Option<String>,
}

/// A table: its kind and its columns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `r` a table, `p` partitioned, `f` foreign: only the first is written by autogenerate.
    pub kind: char,
    /// The columns in their order.
    pub columns: Vec<Column>,
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Quoted where needed.
    pub name: String,
    /// `format_type`: `numeric(10,2)`, `order_state`, `text[]`.
    pub data_type: String,
    /// A collation other than its type's, quoted.
    pub collation: Option<String>,
    /// `NOT NULL`.
    pub not_null: bool,
    /// The default's expression.
    pub default: Option<String>,
    /// `ALWAYS` or `BY DEFAULT` for an identity column.
    pub identity: Option<&'static str>,
    /// The expression of a stored generated column.
    pub generated: Option<String>,
}

impl Column {
    /// The column as `CREATE TABLE` and `ADD COLUMN` write it.
    #[must_use]
    pub fn definition(&self) -> String {
        let mut clauses = vec![self.name.clone(), self.data_type.clone()];
        if let Some(collation) = &self.collation {
            clauses.push(format!("COLLATE {collation}"));
        }
        if let Some(expression) = &self.generated {
            clauses.push(format!("GENERATED ALWAYS AS ({expression}) STORED"));
        }
        if let Some(identity) = self.identity {
            clauses.push(format!("GENERATED {identity} AS IDENTITY"));
        }
        if let Some(default) = &self.default {
            clauses.push(format!("DEFAULT {default}"));
        }
        clauses.push(if self.not_null { "NOT NULL" } else { "NULL" }.to_owned());
        clauses.join(" ")
    }
}

/// A view or materialized view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Its name.
    pub name: String,
    /// `MATERIALIZED VIEW` rather than `VIEW`.
    pub materialized: bool,
    /// `pg_get_viewdef`: the query.
    pub query: String,
    /// The tables and views it reads.
    pub reads: BTreeSet<String>,
}

impl View {
    /// `VIEW` or `MATERIALIZED VIEW`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        if self.materialized {
            "MATERIALIZED VIEW"
        } else {
            "VIEW"
        }
    }
}

/// An index that backs no constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The table (or materialized view) it is on.
    pub table: String,
    /// `CREATE [UNIQUE] INDEX …`.
    pub definition: String,
}

/// A table constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// `p`rimary key, `u`nique, `c`heck, e`x`clusion, `f`oreign key, constraint `t`rigger.
    pub kind: char,
    /// `pg_get_constraintdef`: `PRIMARY KEY (id)`, `CHECK (…)`.
    pub definition: String,
}

/// Name, type, start, increment, min, max, cache, cycle, owning column.
type SequenceRow = (
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    bool,
    Option<String>,
);

/// Table, name, type, collation, not null, default or generation expression, identity,
/// generated.
type ColumnRow = (
    String,
    String,
    String,
    Option<String>,
    bool,
    Option<String>,
    String,
    String,
);

/// Relations in user schemas that no extension owns.
const RELATIONS: &str = "SELECT c.oid, c.relkind FROM pg_class c \
    JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
      AND n.nspname NOT LIKE 'pg_toast%' AND c.relname <> '_sqlx_migrations' \
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                      AND d.objid = c.oid AND d.deptype = 'e')";

/// `pg_catalog`-less namespaces, for types and functions; `$1` is the catalog (`pg_type`, …).
const USER_OBJECT: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = $1::regclass \
                    AND d.objid = o.oid AND d.deptype = 'e')";

impl Schema {
    /// Reads the schema of the database `connection` is on.
    ///
    /// # Errors
    ///
    /// [`sqlx::Error`] from the catalog queries.
    pub async fn read(connection: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let mut schema = Self::default();
        schema.read_enums(connection).await?;
        schema.read_sequences(connection).await?;
        schema.read_functions(connection).await?;
        schema.read_tables(connection).await?;
        schema.read_views(connection).await?;
        schema.read_indexes(connection).await?;
        schema.read_constraints(connection).await?;
        schema.read_triggers(connection).await?;
        schema.read_comments(connection).await?;
        Ok(schema)
    }

    async fn read_enums(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let enums: Vec<(String, Vec<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT o.oid::regtype::text, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
               FROM pg_type o JOIN pg_namespace n ON n.oid = o.typnamespace
               JOIN pg_enum e ON e.enumtypid = o.oid
              WHERE {USER_OBJECT} GROUP BY o.oid"
        )))
        .bind("pg_type")
        .fetch_all(&mut *connection)
        .await?;
        self.enums = enums.into_iter().collect();
        Ok(())
    }

    async fn read_sequences(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let sequences: Vec<SequenceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH relations AS ({RELATIONS})
             SELECT r.oid::regclass::text, format_type(s.seqtypid, NULL), s.seqstart,
                    s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                    (SELECT format('%s.%I', d.refobjid::regclass, a.attname) FROM pg_depend d
                       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                        AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a')
               FROM relations r JOIN pg_sequence s ON s.seqrelid = r.oid
              WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                AND d.objid = r.oid AND d.deptype = 'i')"
        )))
        .fetch_all(&mut *connection)
        .await?;
        self.sequences = sequences
            .into_iter()
            .map(
                |(name, data_type, start, increment, min, max, cache, cycle, owned_by)| {
                    let sequence = Sequence {
                        data_type,
                        start,
                        increment,
                        min,
                        max,
                        cache,
                        cycle,
                        owned_by,
                    };
                    (name, sequence)
                },
            )
            .collect();
        Ok(())
    }

    async fn read_functions(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let functions: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT o.oid::regprocedure::text, pg_get_functiondef(o.oid)
               FROM pg_proc o JOIN pg_namespace n ON n.oid = o.pronamespace
              WHERE o.prokind IN ('f', 'p') AND {USER_OBJECT}"
        )))
        .bind("pg_proc")
        .fetch_all(&mut *connection)
        .await?;
        self.functions = functions.into_iter().collect();
        Ok(())
    }

    async fn read_indexes(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let indexes: Vec<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH relations AS ({RELATIONS})
             SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text,
                    pg_get_indexdef(i.indexrelid)
               FROM pg_index i JOIN relations r ON r.oid = i.indrelid
              WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid
                                AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x'))"
        )))
        .fetch_all(&mut *connection)
        .await?;
        self.indexes = indexes
            .into_iter()
            .map(|(name, table, definition)| (name, Index { table, definition }))
            .collect();
        Ok(())
    }

    async fn read_constraints(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let constraints: Vec<(String, String, String, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "WITH relations AS ({RELATIONS})
                 SELECT c.conrelid::regclass::text, quote_ident(c.conname), c.contype::text,
                        pg_get_constraintdef(c.oid)
                   FROM pg_constraint c JOIN relations r ON r.oid = c.conrelid"
            )))
            .fetch_all(&mut *connection)
            .await?;
        self.constraints = constraints
            .into_iter()
            .map(|(table, name, kind, definition)| {
                let kind = kind.chars().next().unwrap_or('c');
                ((table, name), Constraint { kind, definition })
            })
            .collect();
        Ok(())
    }

    async fn read_triggers(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let triggers: Vec<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH relations AS ({RELATIONS})
             SELECT t.tgrelid::regclass::text, quote_ident(t.tgname), pg_get_triggerdef(t.oid)
               FROM pg_trigger t JOIN relations r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal"
        )))
        .fetch_all(&mut *connection)
        .await?;
        self.triggers = triggers
            .into_iter()
            .map(|(table, name, definition)| ((table, name), definition))
            .collect();
        Ok(())
    }

    async fn read_tables(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let tables: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH relations AS ({RELATIONS})
             SELECT r.oid::regclass::text, r.relkind::text FROM relations r
              WHERE r.relkind IN ('r', 'p', 'f')"
        )))
        .fetch_all(&mut *connection)
        .await?;
        for (name, kind) in tables {
            let kind = kind.chars().next().unwrap_or('r');
            self.tables.insert(
                name,
                Table {
                    kind,
                    columns: Vec::new(),
                },
            );
        }
        let columns: Vec<ColumnRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH relations AS ({RELATIONS})
             SELECT a.attrelid::regclass::text, quote_ident(a.attname),
                    format_type(a.atttypid, a.atttypmod),
                    CASE WHEN a.attcollation <> t.typcollation THEN quote_ident(co.collname) END,
                    a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text,
                    a.attgenerated::text
               FROM pg_attribute a JOIN relations r ON r.oid = a.attrelid
               JOIN pg_type t ON t.oid = a.atttypid
               LEFT JOIN pg_collation co ON co.oid = a.attcollation
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind IN ('r', 'p', 'f')
              ORDER BY a.attrelid, a.attnum"
        )))
        .fetch_all(&mut *connection)
        .await?;
        for (table, name, data_type, collation, not_null, expression, identity, generated) in
            columns
        {
            let identity = match identity.as_str() {
                "a" => Some("ALWAYS"),
                "d" => Some("BY DEFAULT"),
                _ => None,
            };
            let (default, generated) = if generated == "s" {
                (None, expression)
            } else {
                (expression, None)
            };
            if let Some(table) = self.tables.get_mut(&table) {
                table.columns.push(Column {
                    name,
                    data_type,
                    collation,
                    not_null,
                    default,
                    identity,
                    generated,
                });
            }
        }
        Ok(())
    }

    async fn read_views(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let views: Vec<(String, bool, String, Vec<String>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "WITH relations AS ({RELATIONS})
                 SELECT r.oid::regclass::text, r.relkind = 'm', pg_get_viewdef(r.oid),
                        ARRAY(SELECT DISTINCT d.refobjid::regclass::text FROM pg_rewrite w
                                JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass
                                 AND d.objid = w.oid AND d.refclassid = 'pg_class'::regclass
                               WHERE w.ev_class = r.oid AND d.refobjid <> r.oid)
                   FROM relations r WHERE r.relkind IN ('v', 'm') ORDER BY r.oid"
            )))
            .fetch_all(&mut *connection)
            .await?;
        self.views = views
            .into_iter()
            .map(|(name, materialized, query, reads)| View {
                name,
                materialized,
                query,
                reads: reads.into_iter().collect(),
            })
            .collect();
        Ok(())
    }

    async fn read_comments(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let comments: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH relations AS ({RELATIONS}),
             objects (target, classoid, objoid, objsubid) AS (
               SELECT format('%s %s', CASE r.relkind WHEN 'v' THEN 'VIEW'
                               WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                               WHEN 'i' THEN 'INDEX' WHEN 'I' THEN 'INDEX' WHEN 'f' THEN 'FOREIGN TABLE'
                               ELSE 'TABLE' END, r.oid::regclass),
                      'pg_class'::regclass, r.oid, 0
                 FROM relations r WHERE r.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'i', 'I')
               UNION ALL
               SELECT format('COLUMN %s.%I', a.attrelid::regclass, a.attname), 'pg_class'::regclass,
                      a.attrelid, a.attnum
                 FROM pg_attribute a JOIN relations r ON r.oid = a.attrelid
                WHERE a.attnum > 0 AND NOT a.attisdropped
               UNION ALL
               SELECT format('CONSTRAINT %I ON %s', c.conname, c.conrelid::regclass),
                      'pg_constraint'::regclass, c.oid, 0
                 FROM pg_constraint c JOIN relations r ON r.oid = c.conrelid
               UNION ALL
               SELECT format('TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass),
                      'pg_trigger'::regclass, t.oid, 0
                 FROM pg_trigger t JOIN relations r ON r.oid = t.tgrelid
               UNION ALL
               SELECT format('%s %s', CASE o.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                             o.oid::regprocedure), 'pg_proc'::regclass, o.oid, 0
                 FROM pg_proc o JOIN pg_namespace n ON n.oid = o.pronamespace
                WHERE o.prokind IN ('f', 'p') AND {USER_OBJECT}
               UNION ALL
               SELECT format('TYPE %s', o.oid::regtype), 'pg_type'::regclass, o.oid, 0
                 FROM pg_type o JOIN pg_namespace n ON n.oid = o.typnamespace
                WHERE o.typtype = 'e' AND {user_type})
             SELECT o.target, d.description FROM objects o
               JOIN pg_description d ON d.classoid = o.classoid AND d.objoid = o.objoid
                AND d.objsubid = o.objsubid",
            user_type = USER_OBJECT.replace("$1", "'pg_type'"),
        )))
        .bind("pg_proc")
        .fetch_all(&mut *connection)
        .await?;
        self.comments = comments.into_iter().collect();
        Ok(())
    }

    /// One line per object, as the drift check compares and prints them.
    #[must_use]
    pub fn lines(&self) -> BTreeSet<String> {
        let mut lines = BTreeSet::new();
        for (name, labels) in &self.enums {
            lines.insert(format!("type {name} enum ({})", sql::literals(labels)));
        }
        for (name, sequence) in &self.sequences {
            let owner = sequence
                .owned_by
                .as_ref()
                .map(|owner| format!(" owned by {owner}"))
                .unwrap_or_default();
            lines.insert(format!("sequence {name} {}{owner}", sequence.options()));
        }
        for (signature, definition) in &self.functions {
            lines.insert(format!("function {signature}: {}", one_line(definition)));
        }
        for (name, table) in &self.tables {
            let kind = match table.kind {
                'p' => " (partitioned)",
                'f' => " (foreign)",
                _ => "",
            };
            lines.insert(format!("table {name}{kind}"));
            for column in &table.columns {
                lines.insert(format!("column {name}.{}", column.definition()));
            }
        }
        for view in &self.views {
            let kind = if view.materialized {
                "materialized view"
            } else {
                "view"
            };
            lines.insert(format!("{kind} {}: {}", view.name, one_line(&view.query)));
        }
        for index in self.indexes.values() {
            lines.insert(format!("index {}", index.definition));
        }
        for ((table, name), constraint) in &self.constraints {
            lines.insert(format!(
                "constraint {name} on {table}: {}",
                constraint.definition
            ));
        }
        for definition in self.triggers.values() {
            lines.insert(format!("trigger {definition}"));
        }
        for (target, text) in &self.comments {
            lines.insert(format!("comment on {target}: {}", one_line(text)));
        }
        lines
    }
}

impl Sequence {
    /// The options as `CREATE SEQUENCE` and `ALTER SEQUENCE` take them.
    #[must_use]
    pub fn options(&self) -> String {
        format!(
            "AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}CYCLE",
            self.data_type,
            self.increment,
            self.min,
            self.max,
            self.start,
            self.cache,
            if self.cycle { "" } else { "NO " }
        )
    }
}

/// A definition on one line, its runs of white space made single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
