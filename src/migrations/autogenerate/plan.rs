//! The plan: the statements from one schema to another, in an order `PostgreSQL` accepts.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Script, Step};
use crate::database::sql::{literal, literals};
use crate::migrations::schema::{Column, Schema};

/// The statements that take a database from `from`'s schema to `to`'s: everything that goes
/// or changes is dropped first (dependents before what they depend on), then everything new
/// or changed is made (in the opposite order), then comments are set.
#[must_use]
pub fn plan(from: &Schema, to: &Schema) -> Script {
    let mut planner = Planner::new(from, to);
    planner.drop_phase();
    planner.create_phase();
    planner.comments();
    let mut script = planner.script;
    if from.functions != to.functions {
        script.steps.insert(
            0,
            Step {
                sql: "-- Function bodies are checked when they run, as pg_dump has it: a \
                      function may use a table made further down.\n\
                      SET LOCAL check_function_bodies = off"
                    .to_owned(),
                hazard: None,
            },
        );
    }
    script
}

pub(super) struct Planner<'a> {
    pub(super) from: &'a Schema,
    pub(super) to: &'a Schema,
    pub(super) script: Script,
    /// Columns dropped and added again (a generated column whose expression changes).
    pub(super) remade_columns: BTreeSet<(String, String)>,
    /// Those, and columns converted to an enum type made again: indexes and constraints on
    /// them are dropped before and made again after.
    pub(super) rebuilt_columns: BTreeSet<(String, String)>,
    /// Tables some column of which changes type or is made again: views reading them are
    /// made again.
    pub(super) reshaped_tables: BTreeSet<String>,
    /// Views dropped and made again.
    pub(super) remade_views: BTreeSet<String>,
    /// What `COMMENT ON` names, for objects this script drops (a comment goes with them).
    pub(super) dropped: BTreeSet<String>,
    /// … and for objects it makes (a comment must be set again).
    pub(super) made: BTreeSet<String>,
}

impl<'a> Planner<'a> {
    fn new(from: &'a Schema, to: &'a Schema) -> Self {
        let mut planner = Self {
            from,
            to,
            script: Script::default(),
            remade_columns: BTreeSet::new(),
            rebuilt_columns: BTreeSet::new(),
            reshaped_tables: BTreeSet::new(),
            remade_views: BTreeSet::new(),
            dropped: BTreeSet::new(),
            made: BTreeSet::new(),
        };
        for (table, old, new) in planner.kept_columns() {
            let remade = old.generated != new.generated
                && !(new.generated.is_none() && old.data_type == new.data_type);
            if remade {
                planner
                    .remade_columns
                    .insert((table.to_owned(), old.name.clone()));
            }
            let enum_remade = from.enums.get(&old.data_type).is_some_and(|labels| {
                to.enums
                    .get(&old.data_type)
                    .is_some_and(|new_labels| !only_added(labels, new_labels))
            });
            if remade || enum_remade {
                planner
                    .rebuilt_columns
                    .insert((table.to_owned(), old.name.clone()));
            }
            if remade
                || enum_remade
                || old.data_type != new.data_type
                || old.collation != new.collation
            {
                planner.reshaped_tables.insert(table.to_owned());
            }
        }
        for view in &from.views {
            let same = to.views.iter().find(|other| other.name == view.name);
            let changed = same.is_none_or(|other| other != view);
            let reads_remade = view.reads.iter().any(|relation| {
                planner.reshaped_tables.contains(relation)
                    || planner.remade_views.contains(relation)
            });
            if same.is_some() && (changed || reads_remade) {
                planner.remade_views.insert(view.name.clone());
            }
        }
        planner
    }

    /// Columns present on both sides, in tables present on both sides: (table, from, to).
    pub(super) fn kept_columns(&self) -> Vec<(&'a str, &'a Column, &'a Column)> {
        let mut kept = Vec::new();
        for (name, table) in &self.from.tables {
            let Some(other) = self.to.tables.get(name) else {
                continue;
            };
            for column in &table.columns {
                if let Some(new) = other.columns.iter().find(|new| new.name == column.name) {
                    kept.push((name.as_str(), column, new));
                }
            }
        }
        kept
    }

    fn table_dropped(&self, table: &str) -> bool {
        self.from.tables.contains_key(table) && !self.to.tables.contains_key(table)
    }

    fn view_dropped(&self, view: &str) -> bool {
        self.from.views.iter().any(|old| old.name == view)
            && !self.to.views.iter().any(|new| new.name == view)
    }

    /// An index or constraint on a column made again or converted to a new type must be
    /// dropped before and made again after.
    fn on_remade_column(&self, table: &str, definition: &str) -> bool {
        self.rebuilt_columns
            .iter()
            .any(|(owner, column)| owner == table && mentions(definition, column))
    }

    fn drop_phase(&mut self) {
        let (from, to) = (self.from, self.to);
        for ((table, name), definition) in &from.triggers {
            let changed = to.triggers.get(&(table.clone(), name.clone())) != Some(definition);
            // A trigger on a view made again goes with it.
            let on_remade = self.remade_views.contains(table);
            if changed && !self.table_dropped(table) && !on_remade {
                self.script.push(format!("DROP TRIGGER {name} ON {table}"));
            }
            if changed || on_remade {
                self.dropped.insert(format!("TRIGGER {name} ON {table}"));
            }
        }
        self.drop_constraints(true);
        for view in from.views.iter().rev() {
            if self.view_dropped(&view.name) || self.remade_views.contains(&view.name) {
                self.script
                    .push(format!("DROP {} {}", view.kind(), view.name));
                self.dropped
                    .insert(format!("{} {}", view.kind(), view.name));
            }
        }
        for (name, index) in &from.indexes {
            // An index on a materialized view made again went with it.
            let on_dropped = self.table_dropped(&index.table)
                || self.view_dropped(&index.table)
                || self.remade_views.contains(&index.table);
            let changed = to.indexes.get(name) != Some(index)
                || self.on_remade_column(&index.table, &index.definition);
            if changed && !on_dropped {
                self.script.push(format!("DROP INDEX {name}"));
            }
            if changed || on_dropped {
                self.dropped.insert(format!("INDEX {name}"));
            }
        }
        self.drop_constraints(false);
        self.release_columns();
        for (name, table) in &from.tables {
            if to.tables.contains_key(name) {
                continue;
            }
            let renamed_to = to.tables.iter().find(|(other, new)| {
                !from.tables.contains_key(*other) && same_columns(&table.columns, &new.columns)
            });
            let mut hazard = format!("drops table {name} and every row in it");
            if let Some((other, _)) = renamed_to {
                let _ = write!(
                    hazard,
                    "; if it was renamed to {other}, write `ALTER TABLE {name} RENAME TO {other}` \
                     instead to keep the rows"
                );
            }
            self.script
                .push_hazard(format!("DROP TABLE {name}"), hazard);
            self.dropped.insert(format!("TABLE {name}"));
            for column in &table.columns {
                self.dropped
                    .insert(format!("COLUMN {name}.{}", column.name));
            }
            self.drop_attached(name);
        }
        for signature in from.functions.keys() {
            if !to.functions.contains_key(signature) {
                self.script.push(format!("DROP ROUTINE {signature}"));
                self.dropped.insert(format!("FUNCTION {signature}"));
                self.dropped.insert(format!("PROCEDURE {signature}"));
            }
        }
        for name in from.sequences.keys() {
            if !to.sequences.contains_key(name) {
                // A `serial` column's sequence went with its table.
                self.script.push(format!("DROP SEQUENCE IF EXISTS {name}"));
                self.dropped.insert(format!("SEQUENCE {name}"));
            }
        }
        for name in from.enums.keys() {
            if !to.enums.contains_key(name) {
                self.script.push(format!("DROP TYPE {name}"));
                self.dropped.insert(format!("TYPE {name}"));
            }
        }
    }

    /// Comments on what a dropped table takes with it.
    fn drop_attached(&mut self, table: &str) {
        let from = self.from;
        for (owner, name) in from.constraints.keys() {
            if owner == table {
                self.dropped.insert(format!("CONSTRAINT {name} ON {table}"));
            }
        }
        for (owner, name) in from.triggers.keys() {
            if owner == table {
                self.dropped.insert(format!("TRIGGER {name} ON {table}"));
            }
        }
        for (name, index) in &from.indexes {
            if index.table == table {
                self.dropped.insert(format!("INDEX {name}"));
            }
        }
    }

    /// Foreign keys (`foreign`) go first: they hold on to the keys they reference.
    fn drop_constraints(&mut self, foreign: bool) {
        let (from, to) = (self.from, self.to);
        for ((table, name), constraint) in &from.constraints {
            if (constraint.kind == 'f') != foreign || self.table_dropped(table) {
                continue;
            }
            let changed = to.constraints.get(&(table.clone(), name.clone())) != Some(constraint)
                || self.on_remade_column(table, &constraint.definition);
            if changed {
                self.script
                    .push(format!("ALTER TABLE {table} DROP CONSTRAINT {name}"));
                self.dropped.insert(format!("CONSTRAINT {name} ON {table}"));
            }
        }
    }

    fn create_phase(&mut self) {
        let (from, to) = (self.from, self.to);
        for (name, labels) in &to.enums {
            match from.enums.get(name) {
                None => {
                    self.script
                        .push(format!("CREATE TYPE {name} AS ENUM ({})", literals(labels)));
                    self.made.insert(format!("TYPE {name}"));
                }
                Some(old) if old != labels => self.change_enum(name, old, labels),
                Some(_) => {}
            }
        }
        for (name, sequence) in &to.sequences {
            match from.sequences.get(name) {
                None => {
                    self.script
                        .push(format!("CREATE SEQUENCE {name} {}", sequence.options()));
                    self.made.insert(format!("SEQUENCE {name}"));
                }
                Some(old) if old.options() != sequence.options() => {
                    self.script
                        .push(format!("ALTER SEQUENCE {name} {}", sequence.options()));
                }
                Some(_) => {}
            }
        }
        for (signature, definition) in &to.functions {
            if from.functions.get(signature) != Some(definition) {
                // `pg_get_functiondef` writes `CREATE OR REPLACE`: a new body replaces the old.
                self.script.push(definition.trim_end().to_owned());
                if !from.functions.contains_key(signature) {
                    self.made.insert(format!("FUNCTION {signature}"));
                }
            }
        }
        for (name, table) in &to.tables {
            if from.tables.contains_key(name) {
                continue;
            }
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|column| format!("    {}", column.definition()))
                .collect();
            self.script
                .push(format!("CREATE TABLE {name} (\n{}\n)", columns.join(",\n")));
            self.made.insert(format!("TABLE {name}"));
            for column in &table.columns {
                self.made.insert(format!("COLUMN {name}.{}", column.name));
            }
        }
        self.change_columns();
        for (name, sequence) in &to.sequences {
            let old_owner = from
                .sequences
                .get(name)
                .and_then(|old| old.owned_by.as_ref());
            if sequence.owned_by.as_ref() != old_owner {
                let owner = sequence.owned_by.as_deref().unwrap_or("NONE");
                self.script
                    .push(format!("ALTER SEQUENCE {name} OWNED BY {owner}"));
            }
        }
        self.add_constraints(false);
        for view in &to.views {
            let existed = from.views.iter().any(|old| old.name == view.name);
            if !existed || self.remade_views.contains(&view.name) {
                let query = view.query.trim().trim_end_matches(';');
                self.script
                    .push(format!("CREATE {} {} AS\n{query}", view.kind(), view.name));
                self.made.insert(format!("{} {}", view.kind(), view.name));
            }
        }
        self.add_indexes();
        self.add_constraints(true);
        for ((table, name), definition) in &to.triggers {
            if from.triggers.get(&(table.clone(), name.clone())) != Some(definition)
                || self.remade_views.contains(table)
            {
                self.script.push(definition.clone());
                self.made.insert(format!("TRIGGER {name} ON {table}"));
            }
        }
    }

    /// Indexes new or changed, and those on what was made again.
    fn add_indexes(&mut self) {
        let (from, to) = (self.from, self.to);
        for (name, index) in &to.indexes {
            if from.indexes.get(name) != Some(index)
                || self.on_remade_column(&index.table, &index.definition)
                || self.remade_views.contains(&index.table)
            {
                if from.tables.contains_key(&index.table) {
                    self.script.push_hazard(
                        index.definition.clone(),
                        format!(
                            "builds index {name} on {}, which holds rows already: writes to it \
                             wait until the build ends; on a big table, build it with CREATE \
                             INDEX CONCURRENTLY in a migration of its own (first line \
                             `-- no-transaction`)",
                            index.table
                        ),
                    );
                } else {
                    self.script.push(index.definition.clone());
                }
                self.made.insert(format!("INDEX {name}"));
            }
        }
    }

    /// Foreign keys (`foreign`) come after the keys and unique indexes they reference.
    fn add_constraints(&mut self, foreign: bool) {
        let (from, to) = (self.from, self.to);
        for ((table, name), constraint) in &to.constraints {
            if (constraint.kind == 'f') != foreign {
                continue;
            }
            let changed = from.constraints.get(&(table.clone(), name.clone())) != Some(constraint)
                || self.on_remade_column(table, &constraint.definition);
            if !changed {
                continue;
            }
            let statement = format!(
                "ALTER TABLE {table} ADD CONSTRAINT {name} {}",
                constraint.definition
            );
            if foreign && from.tables.contains_key(table) {
                self.script.push_hazard(
                    statement,
                    format!(
                        "adds foreign key {name} to {table}, which holds rows already: each row is \
                         checked while writes wait; on a big table, add it NOT VALID and run \
                         VALIDATE CONSTRAINT in a later migration"
                    ),
                );
            } else {
                self.script.push(statement);
            }
            self.made.insert(format!("CONSTRAINT {name} ON {table}"));
        }
    }

    /// Comments that change, and those on objects made again; a comment that goes from an
    /// object that stays is removed.
    fn comments(&mut self) {
        let (from, to) = (self.from, self.to);
        for (target, text) in &to.comments {
            if from.comments.get(target) != Some(text) || self.made.contains(target) {
                self.script
                    .push(format!("COMMENT ON {target} IS {}", literal(text)));
            }
        }
        for target in from.comments.keys() {
            if !to.comments.contains_key(target) && !self.dropped.contains(target) {
                self.script.push(format!("COMMENT ON {target} IS NULL"));
            }
        }
    }
}

/// `new` is `old` with labels added, the old ones in their order.
pub(super) fn only_added(old: &[String], new: &[String]) -> bool {
    new.iter()
        .filter(|label| old.contains(label))
        .eq(old.iter())
}

/// Whether `definition` names `column` as a word of its own (`id` is not in `user_id`).
fn mentions(definition: &str, column: &str) -> bool {
    let is_word = |character: char| character.is_alphanumeric() || matches!(character, '_' | '$');
    definition.match_indices(column).any(|(start, _)| {
        let before = definition[..start].chars().next_back();
        let after = definition[start + column.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Two column lists of the same names and types: a table that may have been renamed.
fn same_columns(old: &[Column], new: &[Column]) -> bool {
    old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .all(|(a, b)| a.name == b.name && a.data_type == b.data_type)
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn a_column_is_mentioned_as_a_word_only() {
        assert!(mentions("CREATE INDEX i ON t USING btree (id)", "id"));
        assert!(mentions("CHECK ((total > (0)::numeric))", "total"));
        assert!(!mentions("CREATE INDEX i ON t USING btree (user_id)", "id"));
        assert!(!mentions("CHECK ((subtotal > 0))", "total"));
        assert!(mentions(r#"UNIQUE ("Total")"#, r#""Total""#));
    }
}
