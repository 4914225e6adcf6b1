//! argon2id password hashing. Slow by design (~28 ms in release), so callers run
//! it on the blocking pool, never on an async worker.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::error::InternalError;

/// Password rule from PROTOCOL.md: 8..=128 bytes of UTF-8.
pub fn acceptable(pw: &str) -> bool {
    (8..=128).contains(&pw.len())
}

pub fn hash(pw: &str) -> Result<String, InternalError> {
    Argon2::default()
        .hash_password(pw.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| InternalError::Password(e.to_string()))
}

/// Whether `pw` matches the PHC string. A malformed PHC never matches.
pub fn verify(pw: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(pw.as_bytes(), phc)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_verifies() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify("correct horse", &phc));
        assert!(!verify("wrong horse", &phc));
        assert!(!verify("correct horse", "not a phc"));
        assert!(acceptable("12345678") && !acceptable("1234567") && !acceptable(&"x".repeat(129)));
    }
}
