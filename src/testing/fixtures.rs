//! SQL fixture files: found by name, applied statement by statement in one transaction, so that
//! an error names the line of the statement that failed (PostgreSQL gives no position for a
//! constraint violation, only for syntax errors).

use std::path::{Path, PathBuf};

use sqlx::{Connection as _, PgConnection};

use super::TestDbError;

/// A fixture file's text.
#[derive(Debug, Clone)]
pub(super) struct Fixture {
    pub path: PathBuf,
    pub sql: String,
}

/// What identifies a list of fixtures in a template's key: their file names and contents.
pub(super) fn digest(fixtures: &[Fixture]) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for fixture in fixtures {
        hasher.update(
            fixture
                .path
                .file_name()
                .unwrap_or_default()
                .as_encoded_bytes(),
        );
        hasher.update([0]);
        hasher.update(fixture.sql.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `<folder>/<name>.sql`.
pub(super) fn read(folder: &Path, name: &str) -> Result<Fixture, TestDbError> {
    let path = folder.join(format!("{name}.sql"));
    match std::fs::read_to_string(&path) {
        Ok(sql) => Ok(Fixture { path, sql }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(TestDbError::MissingFixture {
                name: name.to_owned(),
                path,
                folder: folder.to_owned(),
            })
        }
        Err(source) => Err(TestDbError::Io {
            action: "cannot read",
            path,
            source,
        }),
    }
}

/// Runs the fixture's statements in one transaction; nothing of it stays when one fails.
pub(super) async fn apply(
    connection: &mut PgConnection,
    fixture: &Fixture,
) -> Result<(), TestDbError> {
    let mut transaction = connection.begin().await?;
    for statement in statements(&fixture.sql) {
        if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.text.to_owned()))
            .execute(&mut *transaction)
            .await
        {
            return Err(match error {
                sqlx::Error::Database(error) => TestDbError::Fixture {
                    file: fixture.path.clone(),
                    line: statement.line
                        + crate::migrations::error_line(statement.text, error.as_ref())
                            .map_or(0, |line| line - 1),
                    message: error.message().to_owned(),
                },
                other => other.into(),
            });
        }
    }
    transaction.commit().await?;
    Ok(())
}

/// One SQL statement and the line it starts on.
#[derive(Debug, PartialEq, Eq)]
struct Statement<'a> {
    line: usize,
    text: &'a str,
}

/// Splits SQL at the semicolons that end statements: not those inside quotes, identifiers,
/// dollar-quoted bodies (functions) or comments.
fn statements(sql: &str) -> Vec<Statement<'_>> {
    let mut found = Vec::new();
    let bytes = sql.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            quote @ (b'\'' | b'"') => {
                index += 1;
                while index < bytes.len() && bytes[index] != quote {
                    index += 1;
                }
            }
            b'-' if bytes.get(index + 1) == Some(&b'-') => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'/' if bytes.get(index + 1) == Some(&b'*') => {
                index = sql[index + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |end| index + 2 + end + 1);
            }
            b'$' => {
                // `$tag$ ... $tag$`; a `$1` parameter has no closing `$` before a non-word.
                let tag_end = sql[index + 1..]
                    .find(|character: char| !(character.is_alphanumeric() || character == '_'))
                    .map(|offset| index + 1 + offset);
                if let Some(tag_end) = tag_end.filter(|end| bytes[*end] == b'$') {
                    let tag = &sql[index..=tag_end];
                    index = sql[tag_end + 1..]
                        .find(tag)
                        .map_or(bytes.len(), |end| tag_end + 1 + end + tag.len() - 1);
                }
            }
            b';' => {
                push(&mut found, sql, start, index);
                start = index + 1;
            }
            _ => {}
        }
        index += 1;
    }
    push(&mut found, sql, start, bytes.len());
    found
}

fn push<'a>(found: &mut Vec<Statement<'a>>, sql: &'a str, start: usize, end: usize) {
    let end = end.min(sql.len());
    // Leading whitespace and comments belong to no statement: the line is the statement's own.
    let mut offset = start;
    loop {
        let rest = &sql[offset..end];
        let trimmed = rest.trim_start();
        offset += rest.len() - trimmed.len();
        let skipped = if trimmed.starts_with("--") {
            trimmed
                .find('\n')
                .map_or(trimmed.len(), |newline| newline + 1)
        } else if trimmed.starts_with("/*") {
            trimmed.find("*/").map_or(trimmed.len(), |close| close + 2)
        } else {
            break;
        };
        offset += skipped;
    }
    let text = sql[offset..end].trim_end();
    if !text.is_empty() {
        let line = sql[..offset].matches('\n').count() + 1;
        found.push(Statement { line, text });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_their_semicolons_only_and_know_their_lines() {
        let sql = "-- header; not a statement\n\
                   INSERT INTO a VALUES ('x;y');\n\
                   \n\
                   CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n\
                   /* a; comment */ SELECT \"odd;name\" FROM b WHERE c = $1;\n\
                   UPDATE a SET v = 1";
        let found = statements(sql);
        let lines: Vec<usize> = found.iter().map(|statement| statement.line).collect();
        assert_eq!(lines, [2, 4, 5, 6]);
        assert!(found[2].text.starts_with("SELECT"));
        assert_eq!(found[0].text, "INSERT INTO a VALUES ('x;y')");
        assert!(found[1].text.ends_with("$body$ LANGUAGE sql"));
        assert!(found[2].text.contains("\"odd;name\""));
        assert!(statements("-- only a comment\n;\n").is_empty());
    }
}
