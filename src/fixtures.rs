//! SQL fixture files (`fixtures/<name>.sql`): found by name, listed, and applied statement by
//! statement in one transaction, so that an error names the line of the statement that failed
//! (`PostgreSQL` gives no position for a constraint violation, only for syntax errors). Test
//! databases take them (`pgharness::testing`), and so does the dev database (the UI's "Load
//! fixture").

use std::path::{Path, PathBuf};

use sqlx::{Connection as _, PgConnection};

/// Why a fixture could not be read or applied. Nothing of a fixture stays when it fails.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A fixture named does not exist.
    #[error("fixture {name:?} not found: no file {path} (fixtures are looked up in {folder})")]
    Missing {
        /// The name.
        name: String,
        /// The file looked for.
        path: PathBuf,
        /// The fixtures directory.
        folder: PathBuf,
    },
    /// A fixture's SQL failed.
    #[error("fixture {file} failed at line {line}: {message}")]
    Statement {
        /// The fixture file.
        file: PathBuf,
        /// The line of the failing statement.
        line: usize,
        /// The server's message.
        message: String,
    },
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The connection failed (not a statement of the fixture).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A fixture file's text.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Its file.
    pub path: PathBuf,
    /// Its SQL.
    pub sql: String,
}

/// The names of the fixtures in `folder` (`<name>.sql`), sorted; none when it does not exist.
///
/// # Errors
///
/// [`FixtureError::Io`] when the folder exists but cannot be read.
pub fn names(folder: &Path) -> Result<Vec<String>, FixtureError> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FixtureError::Io {
                path: folder.to_owned(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "sql")
                .then(|| path.file_stem()?.to_str().map(str::to_owned))
                .flatten()
        })
        .collect();
    names.sort();
    Ok(names)
}

/// What identifies a list of fixtures in a template's key: their file names and contents.
#[must_use]
pub fn digest(fixtures: &[Fixture]) -> String {
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
    format!("{:x}", hasher.finalize())
}

/// `<folder>/<name>.sql`. Only a plain name is taken: no path separators, no `..`.
///
/// # Errors
///
/// [`FixtureError::Missing`] when there is no such file (or the name is not a plain name, or
/// is too long for a file name),
/// [`FixtureError::Io`] when it cannot be read.
pub fn read(folder: &Path, name: &str) -> Result<Fixture, FixtureError> {
    let path = folder.join(format!("{name}.sql"));
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|character| character.is_alphanumeric() || "_-.".contains(character))
        && !name.starts_with('.');
    let missing = || FixtureError::Missing {
        name: name.to_owned(),
        path: path.clone(),
        folder: folder.to_owned(),
    };
    if !plain {
        return Err(missing());
    }
    match std::fs::read_to_string(&path) {
        Ok(sql) => Ok(Fixture { path, sql }),
        // A name too long for a file name (ENAMETOOLONG) names no file either.
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidFilename
            ) =>
        {
            Err(missing())
        }
        Err(source) => Err(FixtureError::Io { path, source }),
    }
}

/// Runs the fixture's statements in one transaction; nothing of it stays when one fails.
///
/// # Errors
///
/// [`FixtureError::Statement`] with the failing statement's line, or the connection's error.
pub async fn apply(connection: &mut PgConnection, fixture: &Fixture) -> Result<(), FixtureError> {
    let mut transaction = connection.begin().await?;
    for statement in statements(&fixture.sql) {
        if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.text.to_owned()))
            .execute(&mut *transaction)
            .await
        {
            return Err(match error {
                sqlx::Error::Database(error) => FixtureError::Statement {
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
    fn only_plain_names_are_read_from_the_fixtures_folder() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("seed.sql"), "SELECT 1").unwrap();
        std::fs::write(folder.path().join("notes.txt"), "").unwrap();
        assert_eq!(names(folder.path()).unwrap(), ["seed"]);
        assert_eq!(read(folder.path(), "seed").unwrap().sql, "SELECT 1");
        for name in ["../seed", "sub/seed", ".hidden", ""] {
            assert!(matches!(
                read(folder.path(), name),
                Err(FixtureError::Missing { .. })
            ));
        }
        assert!(names(&folder.path().join("absent")).unwrap().is_empty());
    }

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
