//! SQL text for statements that take no parameters (`CREATE DATABASE`, `COMMENT ON`, DDL):
//! names and strings quoted as `PostgreSQL` reads them.

/// `name` as a quoted identifier: `"a ""b"""`.
#[must_use]
pub fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a string literal (standard-conforming: a quote is doubled).
#[must_use]
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `'a', 'b'`: a list of string literals.
#[must_use]
pub fn literals(texts: &[String]) -> String {
    texts
        .iter()
        .map(|text| literal(text))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::{identifier, literal, literals};

    #[test]
    fn quotes_inside_are_doubled() {
        assert_eq!(identifier(r#"a "b""#), r#""a ""b""""#);
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literals(&["a".to_owned(), "b'".to_owned()]), "'a', 'b'''");
    }
}
