//! SQL identifiers and literals: validation and quoting for names we put into SQL text.

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
pub const MAX_LEN: usize = 63;

/// Why a name is not a plain identifier (see [`validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentError {
    /// The name is empty.
    #[error("empty identifier")]
    Empty,
    /// The name is longer than [`MAX_LEN`] bytes.
    #[error("identifier {} is longer than {MAX_LEN} bytes (PostgreSQL would truncate it)", excerpt(name))]
    TooLong {
        /// The name.
        name: String,
    },
    /// The name holds characters that would need quoting, or starts with a digit or `$`.
    #[error("identifier {} must be letters, digits and _ (not starting with a digit)", excerpt(name))]
    NotPlain {
        /// The name.
        name: String,
    },
}

/// Accepts plain identifiers (letters, digits, `_`, `$`; not starting with a digit or `$`), at
/// most 63 bytes. Names outside that are refused rather than silently truncated by the server.
pub fn validate(name: &str) -> Result<(), IdentError> {
    if name.is_empty() {
        return Err(IdentError::Empty);
    }
    if name.len() > MAX_LEN {
        return Err(IdentError::TooLong { name: name.to_string() });
    }
    let mut chars = name.chars();
    let first = chars.next().expect("non-empty");
    if !(first.is_ascii_alphabetic() || first == '_')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    {
        return Err(IdentError::NotPlain { name: name.to_string() });
    }
    Ok(())
}

/// The most characters of a value that [`excerpt`] shows.
pub const EXCERPT_CHARS: usize = 80;

/// A value for an error message: quoted as `{:?}` does, and cut after [`EXCERPT_CHARS`]
/// characters with its length in bytes, so that a hostile or mistaken value (a 2 MB table name)
/// never makes a message longer than a line.
pub fn excerpt(value: &str) -> String {
    match value.char_indices().nth(EXCERPT_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
    }
}

/// Quotes an identifier for SQL text: `"name"`, with embedded quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a possibly schema-qualified name (`schema.table`) part by part.
pub fn quote_qualified(name: &str) -> String {
    name.split('.').map(quote).collect::<Vec<_>>().join(".")
}

/// Quotes a string literal: `'text'`, with embedded quotes doubled (standard_conforming_strings).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_quotes() {
        assert!(validate("audit_events").is_ok());
        assert!(validate("1abc").is_err());
        assert!(validate("a-b").is_err());
        assert!(validate(&"x".repeat(64)).is_err());
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_qualified("s.t"), "\"s\".\"t\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn excerpts_are_quoted_and_cut() {
        assert_eq!(excerpt("a\"b"), "\"a\\\"b\"");
        let long = "é".repeat(1_000_000);
        let e = excerpt(&long);
        assert_eq!(e, format!("{:?}... (2000000 bytes)", "é".repeat(EXCERPT_CHARS)));
        assert!(validate(&long).unwrap_err().to_string().len() < 300);
    }
}
