//! A line-at-a-time lexical scanner that knows where PostgreSQL SQL text is quoted or commented.
//!
//! Goose splits statements at lines that end with `;`. We keep that rule, but only count a
//! semicolon that PostgreSQL itself would see as a statement terminator: not one inside a
//! single-quoted string (including `E'...'` escapes), a quoted identifier, a dollar-quoted body
//! (`$$`, `$tag$`), or a comment (`--`, nested `/* */`). The scanner carries its state from one
//! line to the next, so a multi-line `DO $$ ... $$;` stays one statement.
//!
//! We do not need PostgreSQL's full grammar here, only its quoting rules, which is why this is a
//! small hand-written scanner rather than `pg_query` (see the README's design notes).

/// Where the scanner is at the end of a line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LexState {
    /// Ordinary SQL text.
    #[default]
    Normal,
    /// Inside `'...'`; `escapes` is true for `E'...'` strings, where a backslash escapes.
    String {
        /// Whether backslash escapes are active (`E'...'`).
        escapes: bool,
    },
    /// Inside a `"quoted identifier"`.
    Identifier,
    /// Inside a dollar-quoted body; the tag without its dollar signs (empty for `$$`).
    Dollar(String),
    /// Inside a block comment, at this nesting depth (PostgreSQL nests `/* */`).
    BlockComment(u32),
}

impl LexState {
    /// A short description of the open construct, for error messages.
    pub fn describe(&self) -> String {
        match self {
            LexState::Normal => "nothing".to_string(),
            LexState::String { escapes: false } => "a quoted string ('...')".to_string(),
            LexState::String { escapes: true } => "an escape string (E'...')".to_string(),
            LexState::Identifier => "a quoted identifier (\"...\")".to_string(),
            LexState::Dollar(tag) => format!("a dollar-quoted body (${tag}$)"),
            LexState::BlockComment(_) => "a block comment (/* ... */)".to_string(),
        }
    }
}

/// What one line contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineScan {
    /// The state after the line.
    pub state: LexState,
    /// The line ends (ignoring whitespace and comments) with a statement-terminating `;`.
    pub ends_statement: bool,
    /// The line has SQL text outside comments (it is not blank or comment-only).
    pub has_code: bool,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

fn is_tag_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || !c.is_ascii()
}

/// Scans one line (without its line terminator), starting in `state`.
pub fn scan_line(state: &LexState, line: &str) -> LineScan {
    let chars: Vec<char> = line.chars().collect();
    let mut st = state.clone();
    let mut i = 0;
    // Whether the last significant thing seen in Normal state was a `;`.
    let mut last_semicolon = false;
    let mut has_code = false;
    while i < chars.len() {
        let c = chars[i];
        match &mut st {
            LexState::Normal => {
                let next = chars.get(i + 1).copied();
                if c == '-' && next == Some('-') {
                    break; // the rest is a line comment
                }
                if c == '/' && next == Some('*') {
                    st = LexState::BlockComment(1);
                    i += 2;
                    continue;
                }
                if c.is_whitespace() {
                    i += 1;
                    continue;
                }
                has_code = true;
                last_semicolon = c == ';';
                let prev_ident = i > 0 && is_ident_char(chars[i - 1]);
                match c {
                    '\'' => {
                        let escapes =
                            i > 0 && matches!(chars[i - 1], 'e' | 'E') && !(i > 1 && is_ident_char(chars[i - 2]));
                        st = LexState::String { escapes };
                    }
                    '"' => st = LexState::Identifier,
                    '$' if !prev_ident => {
                        // `$tag$` or `$$`; `$1` is a parameter, not a quote.
                        let mut j = i + 1;
                        if j < chars.len() && is_tag_start(chars[j]) {
                            j += 1;
                            while j < chars.len() && is_tag_char(chars[j]) {
                                j += 1;
                            }
                        }
                        if j < chars.len() && chars[j] == '$' {
                            let tag: String = chars[i + 1..j].iter().collect();
                            st = LexState::Dollar(tag);
                            i = j + 1;
                            continue;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            LexState::String { escapes } => {
                if *escapes && c == '\\' {
                    i += 2;
                    continue;
                }
                if c == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    st = LexState::Normal;
                }
                i += 1;
            }
            LexState::Identifier => {
                if c == '"' {
                    if chars.get(i + 1) == Some(&'"') {
                        i += 2;
                        continue;
                    }
                    st = LexState::Normal;
                }
                i += 1;
            }
            LexState::Dollar(tag) => {
                if c == '$' {
                    let tag_len = tag.chars().count();
                    let end = i + 1 + tag_len;
                    if end < chars.len() && chars[end] == '$' && chars[i + 1..end].iter().copied().eq(tag.chars()) {
                        st = LexState::Normal;
                        i = end + 1;
                        continue;
                    }
                }
                i += 1;
            }
            LexState::BlockComment(depth) => {
                let next = chars.get(i + 1).copied();
                if c == '/' && next == Some('*') {
                    *depth += 1;
                    i += 2;
                    continue;
                }
                if c == '*' && next == Some('/') {
                    if *depth == 1 {
                        st = LexState::Normal;
                    } else {
                        *depth -= 1;
                    }
                    i += 2;
                    continue;
                }
                i += 1;
            }
        }
    }
    if !matches!(state, LexState::Normal) {
        // A line that continues a string or body carries code even if it looks empty.
        has_code = true;
    }
    LineScan { ends_statement: st == LexState::Normal && last_semicolon, state: st, has_code }
}

/// Goose's own rule for the end of a statement: the last whitespace-separated word before any
/// word starting with `--` ends with `;`. Used to warn where goose would split differently.
pub fn goose_ends_with_semicolon(line: &str) -> bool {
    let mut prev = "";
    for word in line.split_whitespace() {
        if word.starts_with("--") {
            break;
        }
        prev = word;
    }
    prev.ends_with(';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(lines: &[&str]) -> Vec<(bool, LexState)> {
        let mut st = LexState::Normal;
        let mut out = Vec::new();
        for l in lines {
            let s = scan_line(&st, l);
            st = s.state.clone();
            out.push((s.ends_statement, s.state));
        }
        out
    }

    #[test]
    fn plain_statement_ends_at_semicolon() {
        assert_eq!(scan_all(&["SELECT 1;"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 1; -- done"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 1 -- no;"]), vec![(false, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 1; /* c */"]), vec![(true, LexState::Normal)]);
    }

    #[test]
    fn dollar_body_semicolons_do_not_end_statements() {
        let r = scan_all(&["DO $$ BEGIN", "  PERFORM 1;", "END $$;"]);
        assert_eq!(r[0], (false, LexState::Dollar(String::new())));
        assert_eq!(r[1], (false, LexState::Dollar(String::new())));
        assert_eq!(r[2], (true, LexState::Normal));
    }

    #[test]
    fn tagged_dollar_quote_ignores_other_tags() {
        let r = scan_all(&["CREATE FUNCTION f() RETURNS text AS $fn$", "SELECT $$x;$$;", "$fn$ LANGUAGE sql;"]);
        assert_eq!(r[1], (false, LexState::Dollar("fn".into())));
        assert_eq!(r[2], (true, LexState::Normal));
    }

    #[test]
    fn parameters_and_identifiers_with_dollar_are_not_quotes() {
        assert_eq!(scan_all(&["SELECT $1;"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT a$b$ FROM t;"]), vec![(true, LexState::Normal)]);
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(scan_all(&["SELECT 'a;';"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 'it''s;'"]), vec![(false, LexState::Normal)]);
        assert_eq!(scan_all(&[r"SELECT E'a\';'"]), vec![(false, LexState::Normal)]);
        // In a standard string a backslash is literal: the quote after it closes the string.
        assert_eq!(scan_all(&[r"SELECT 'a\';"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 'open;"]), vec![(false, LexState::String { escapes: false })]);
        // `e'` after an identifier character is not an escape string prefix.
        assert_eq!(scan_all(&[r"SELECT type'a\';"]), vec![(true, LexState::Normal)]);
    }

    #[test]
    fn quoted_identifiers() {
        assert_eq!(scan_all(&[r#"CREATE TABLE "a;""b" (x int);"#]), vec![(true, LexState::Normal)]);
    }

    #[test]
    fn nested_block_comments() {
        let r = scan_all(&["/* a /* b */ ;", "*/ SELECT 1;"]);
        assert_eq!(r[0], (false, LexState::BlockComment(1)));
        assert_eq!(r[1], (true, LexState::Normal));
    }

    #[test]
    fn goose_rule_matches_goose() {
        assert!(goose_ends_with_semicolon("  PERFORM 1;"));
        assert!(goose_ends_with_semicolon("SELECT 1; -- x;"));
        assert!(!goose_ends_with_semicolon("SELECT 1;/* c */"));
        assert!(!goose_ends_with_semicolon("-- only;"));
    }
}
