//! The column steps of a plan: defaults and identities released before what they use is
//! dropped, columns added or changed in kept tables, and enum types whose labels change.

use std::fmt::Write as _;

use super::plan::{Planner, only_added};
use crate::database::sql::{literal, literals};
use crate::migrations::schema::Column;

impl Planner<'_> {
    /// Defaults and identities that go or change, and columns that go: before the sequences,
    /// functions and types they use are dropped.
    pub(super) fn release_columns(&mut self) {
        for (table, old, new) in self.kept_columns() {
            if self
                .remade_columns
                .contains(&(table.to_owned(), old.name.clone()))
            {
                continue;
            }
            let column = &old.name;
            if old.default.is_some() && old.default != new.default {
                self.script.push(format!(
                    "ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT"
                ));
            }
            if old.identity.is_some() && new.identity.is_none() {
                self.script.push(format!(
                    "ALTER TABLE {table} ALTER COLUMN {column} DROP IDENTITY"
                ));
            }
        }
        let (from, to) = (self.from, self.to);
        for (name, table) in &from.tables {
            let Some(other) = to.tables.get(name) else {
                continue;
            };
            for column in &table.columns {
                let gone = !other.columns.iter().any(|new| new.name == column.name);
                let remade = self
                    .remade_columns
                    .contains(&(name.clone(), column.name.clone()));
                if !gone && !remade {
                    continue;
                }
                let statement = format!("ALTER TABLE {name} DROP COLUMN {}", column.name);
                let mut hazard = format!("drops column {name}.{} and its data", column.name);
                if remade {
                    hazard.push_str(": a generated column's expression changes, it is added again");
                } else if let Some(renamed) = other.columns.iter().find(|new| {
                    new.data_type == column.data_type
                        && !table.columns.iter().any(|old| old.name == new.name)
                }) {
                    let _ = write!(
                        hazard,
                        "; if it was renamed to {}, write `ALTER TABLE {name} RENAME COLUMN {} \
                         TO {}` instead to keep the data",
                        renamed.name, column.name, renamed.name
                    );
                }
                self.script.push_hazard(statement, hazard);
                self.dropped
                    .insert(format!("COLUMN {name}.{}", column.name));
            }
        }
    }

    /// New labels go in place; a label removed or moved means a new type the columns are
    /// converted to, which fails if a row holds a removed label.
    pub(super) fn change_enum(&mut self, name: &str, old: &[String], new: &[String]) {
        if only_added(old, new) {
            for (position, label) in new.iter().enumerate() {
                if old.contains(label) {
                    continue;
                }
                let place = match position.checked_sub(1) {
                    Some(before) => format!(" AFTER {}", literal(&new[before])),
                    None => format!(" BEFORE {}", literal(&new[1])),
                };
                self.script.push(format!(
                    "ALTER TYPE {name} ADD VALUE {}{place}",
                    literal(label)
                ));
            }
            return;
        }
        // Renamed in its schema; quoted, as the name may be.
        let bare = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
        let retired = format!("\"{}_retired\"", bare.replace('"', "\"\""));
        self.script.push_hazard(
            format!("ALTER TYPE {name} RENAME TO {retired}"),
            format!(
                "enum type {name} loses or reorders labels ({} → {}): it is made again and its \
                 columns converted, which fails if a row holds a label that goes",
                literals(old),
                literals(new)
            ),
        );
        self.script
            .push(format!("CREATE TYPE {name} AS ENUM ({})", literals(new)));
        self.made.insert(format!("TYPE {name}"));
        let (from, to) = (self.from, self.to);
        for (table_name, table) in &to.tables {
            let Some(old_table) = from.tables.get(table_name) else {
                continue;
            };
            for column in &table.columns {
                let uses_type = old_table
                    .columns
                    .iter()
                    .any(|old| old.name == column.name && old.data_type == name);
                if !uses_type {
                    continue;
                }
                let (table_name, column_name) = (table_name, &column.name);
                if column.default.is_some() {
                    self.script.push(format!(
                        "ALTER TABLE {table_name} ALTER COLUMN {column_name} DROP DEFAULT"
                    ));
                }
                self.script.push(format!(
                    "ALTER TABLE {table_name} ALTER COLUMN {column_name} TYPE {name} \
                     USING {column_name}::text::{name}"
                ));
                if let Some(default) = &column.default {
                    self.script.push(format!(
                        "ALTER TABLE {table_name} ALTER COLUMN {column_name} SET DEFAULT {default}"
                    ));
                }
            }
        }
        self.script.push(format!("DROP TYPE {retired}"));
    }

    /// Columns added to kept tables, and kept columns whose type, nullability, default,
    /// identity or generation changes.
    pub(super) fn change_columns(&mut self) {
        let (from, to) = (self.from, self.to);
        for (name, table) in &to.tables {
            let Some(old_table) = from.tables.get(name) else {
                continue;
            };
            for column in &table.columns {
                let old = old_table.columns.iter().find(|old| old.name == column.name);
                let remade = self
                    .remade_columns
                    .contains(&(name.clone(), column.name.clone()));
                match old {
                    Some(old) if !remade => self.change_column(name, old, column),
                    _ => {
                        let statement =
                            format!("ALTER TABLE {name} ADD COLUMN {}", column.definition());
                        if column.not_null
                            && column.default.is_none()
                            && column.identity.is_none()
                            && column.generated.is_none()
                        {
                            self.script.push_hazard(
                                statement,
                                format!(
                                    "adds {name}.{} NOT NULL without a default: fails if {name} \
                                     has rows; give it a default or fill it before setting NOT NULL",
                                    column.name
                                ),
                            );
                        } else {
                            self.script.push(statement);
                        }
                        self.made.insert(format!("COLUMN {name}.{}", column.name));
                    }
                }
            }
        }
    }

    fn change_column(&mut self, table: &str, old: &Column, new: &Column) {
        let alter = format!("ALTER TABLE {table} ALTER COLUMN {}", new.name);
        if old.generated.is_some() && new.generated.is_none() {
            self.script.push(format!("{alter} DROP EXPRESSION"));
        }
        if old.data_type != new.data_type || old.collation != new.collation {
            let collation = new
                .collation
                .as_ref()
                .map(|collation| format!(" COLLATE {collation}"))
                .unwrap_or_default();
            self.script.push_hazard(
                format!(
                    "{alter} TYPE {}{collation} USING {}::{}",
                    new.data_type, new.name, new.data_type
                ),
                format!(
                    "changes the type of {table}.{} from {} to {}: check that the USING \
                     expression converts every value (the table is rewritten, writes wait)",
                    new.name, old.data_type, new.data_type
                ),
            );
        }
        if new.not_null && !old.not_null {
            self.script.push_hazard(
                format!("{alter} SET NOT NULL"),
                format!(
                    "sets {table}.{} NOT NULL: fails if a row holds NULL there",
                    new.name
                ),
            );
        }
        if !new.not_null && old.not_null {
            self.script.push(format!("{alter} DROP NOT NULL"));
        }
        match (old.identity, new.identity) {
            (None, Some(identity)) => self
                .script
                .push(format!("{alter} ADD GENERATED {identity} AS IDENTITY")),
            (Some(was), Some(kind)) if was != kind => {
                self.script.push(format!("{alter} SET GENERATED {kind}"));
            }
            _ => {}
        }
        if let Some(default) = &new.default
            && old.default.as_ref() != Some(default)
        {
            self.script.push(format!("{alter} SET DEFAULT {default}"));
        }
    }
}
