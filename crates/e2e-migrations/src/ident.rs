//! SQL identifiers and literals: validation and quoting for names we put into SQL text.

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
pub const MAX_LEN: usize = 63;

/// Accepts plain identifiers (letters, digits, `_`, `$`; not starting with a digit or `$`), at
/// most 63 bytes. Names outside that are refused rather than silently truncated by the server.
pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty identifier".to_string());
    }
    if name.len() > MAX_LEN {
        return Err(format!("identifier {name:?} is longer than {MAX_LEN} bytes (PostgreSQL would truncate it)"));
    }
    let mut chars = name.chars();
    let first = chars.next().expect("non-empty");
    if !(first.is_ascii_alphabetic() || first == '_')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    {
        return Err(format!("identifier {name:?} must be letters, digits and _ (not starting with a digit)"));
    }
    Ok(())
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
}
