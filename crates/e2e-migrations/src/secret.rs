//! Generated secrets and ids: random bytes from the operating system, written as hex.

use crate::error::{Error, Result};

/// Random bytes in a generated password: 192 bits.
const PASSWORD_BYTES: usize = 24;

/// A new password for a database role: 24 random bytes from the operating system as 48
/// lower-case hex digits, so that it needs no quoting in a URL, a connection string, a YAML
/// manifest or a shell.
pub fn password() -> Result<String> {
    random_hex(PASSWORD_BYTES, "a password")
}

/// `bytes` random bytes from the operating system as lower-case hex; `what` names them in the
/// error when the system has none to give.
pub fn random_hex(bytes: usize, what: &'static str) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| Error::Randomness { what, source: e.into() })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_48_hex_digits_and_differ() {
        let (a, b) = (password().unwrap(), password().unwrap());
        assert_eq!(a.len(), 48);
        assert!(a.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{a}");
        assert_ne!(a, b);
        assert_eq!(random_hex(4, "a folder name").unwrap().len(), 8);
    }
}
