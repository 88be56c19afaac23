//! Reading a partition bound as the catalog prints it (pure): `pg_get_expr(relpartbound)` under
//! the session of [`super::catalog::SESSION`] (ISO dates, UTC), into [`Bounds`].

use super::reconcile::{Bound, Bounds};
use super::sql::KeyType;

/// A partition bound the roll cannot read (see [`parse_bounds`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BoundError {
    /// Not `DEFAULT` nor a single-column `FROM (..) TO (..)` range.
    #[error("unexpected partition bound {expr:?} (not a single-column range)")]
    NotARange {
        /// The bound expression.
        expr: String,
    },
    /// A bare word other than `MINVALUE` and `MAXVALUE`.
    #[error("unexpected bound {word}")]
    Word {
        /// The word.
        word: String,
    },
    /// A literal that is not a value of the key's type, as [`super::catalog::SESSION`] prints it.
    #[error("cannot read the bound {text:?} as {key:?} (dates before year 1 are not supported)")]
    Value {
        /// The literal.
        text: String,
        /// The key's type.
        key: KeyType,
    },
}

/// Parses a partition bound as `pg_get_expr(relpartbound)` prints it under
/// [`super::catalog::SESSION`]:
/// `DEFAULT`, or `FOR VALUES FROM (x) TO (y)` with `MINVALUE`, `MAXVALUE` or a quoted literal.
pub fn parse_bounds(expr: &str, key: KeyType) -> Result<Bounds, BoundError> {
    let e = expr.trim();
    if e == "DEFAULT" {
        return Ok(Bounds::Default);
    }
    let unexpected = || BoundError::NotARange { expr: e.to_string() };
    let rest = e.strip_prefix("FOR VALUES FROM (").ok_or_else(unexpected)?;
    let (from, rest) = split_value(rest).ok_or_else(unexpected)?;
    let rest = rest.strip_prefix(") TO (").ok_or_else(unexpected)?;
    let (to, rest) = split_value(rest).ok_or_else(unexpected)?;
    if rest != ")" {
        return Err(unexpected());
    }
    Ok(Bounds::Range { from: parse_value(from, key)?, to: parse_value(to, key)? })
}

/// One bound item: a quoted literal (unquoted, `''` undoubled) or a bare word; and what follows.
fn split_value(s: &str) -> Option<(Value<'_>, &str)> {
    if let Some(body) = s.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if body[i + 1..].starts_with('\'') {
                    out.push('\'');
                    chars.next();
                } else {
                    return Some((Value::Literal(out), &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s.find([')', ','])?;
        Some((Value::Word(&s[..end]), &s[end..]))
    }
}

enum Value<'a> {
    Literal(String),
    Word(&'a str),
}

fn parse_value(v: Value<'_>, key: KeyType) -> Result<Bound, BoundError> {
    let text = match v {
        Value::Word("MINVALUE") => return Ok(Bound::MinValue),
        Value::Word("MAXVALUE") => return Ok(Bound::MaxValue),
        Value::Word(w) => return Err(BoundError::Word { word: w.to_string() }),
        Value::Literal(t) => t,
    };
    match text.as_str() {
        "-infinity" => return Ok(Bound::MinValue),
        "infinity" => return Ok(Bound::MaxValue),
        _ => {}
    }
    let cannot = || BoundError::Value { text: text.clone(), key };
    match key {
        KeyType::Date => chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").map(Bound::day).map_err(|_| cannot()),
        KeyType::Timestamp | KeyType::Timestamptz => {
            let naive = if key == KeyType::Timestamptz { text.strip_suffix("+00").ok_or_else(cannot)? } else { &text };
            chrono::NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S%.f").map(Bound::At).map_err(|_| cannot())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn day(s: &str) -> Bound {
        Bound::day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn parses_date_ranges_and_default() {
        assert_eq!(
            parse_bounds("FOR VALUES FROM ('2024-12-01') TO ('2025-01-01')", KeyType::Date),
            Ok(Bounds::Range { from: day("2024-12-01"), to: day("2025-01-01") })
        );
        assert_eq!(parse_bounds("DEFAULT", KeyType::Date), Ok(Bounds::Default));
    }

    #[test]
    fn parses_unbounded_and_infinite_ends() {
        assert_eq!(
            parse_bounds("FOR VALUES FROM (MINVALUE) TO ('2020-01-01')", KeyType::Date),
            Ok(Bounds::Range { from: Bound::MinValue, to: day("2020-01-01") })
        );
        assert_eq!(
            parse_bounds("FOR VALUES FROM ('2030-01-01') TO ('infinity')", KeyType::Date),
            Ok(Bounds::Range { from: day("2030-01-01"), to: Bound::MaxValue })
        );
    }

    #[test]
    fn parses_timestamps_in_utc_with_fractions() {
        let at = |s: &str| Bound::At(chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap());
        assert_eq!(
            parse_bounds(
                "FOR VALUES FROM ('2024-12-01 00:00:00+00') TO ('2024-12-15 06:30:00.25+00')",
                KeyType::Timestamptz
            ),
            Ok(Bounds::Range { from: day("2024-12-01"), to: at("2024-12-15 06:30:00.25") })
        );
        assert_eq!(
            parse_bounds("FOR VALUES FROM ('2024-12-01 00:00:00') TO ('2025-01-01 00:00:00')", KeyType::Timestamp),
            Ok(Bounds::Range { from: day("2024-12-01"), to: day("2025-01-01") })
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(parse_bounds("FOR VALUES IN ('a')", KeyType::Date)
            .unwrap_err()
            .to_string()
            .contains("not a single-column range"));
        assert!(parse_bounds("FOR VALUES FROM ('2024-01-01', 1) TO ('2024-02-01', 1)", KeyType::Date).is_err());
        assert!(parse_bounds("FOR VALUES FROM ('0044-03-15 BC') TO ('2024-02-01')", KeyType::Date)
            .unwrap_err()
            .to_string()
            .contains("before year 1"));
        // A timestamptz printed in another zone means the session was not configured.
        assert!(parse_bounds(
            "FOR VALUES FROM ('2024-12-01 00:00:00+01') TO ('2025-01-01 00:00:00+01')",
            KeyType::Timestamptz
        )
        .is_err());
    }
}
