//! Join tokens: `SHLTKN-1-<sha256 of the CA certificate DER, hex>-<secret>`.
//!
//! The fingerprint lets a joining node pin the cluster's CA before it trusts anything the manager
//! says; the secret proves the node was invited, and which secret it is decides the node's role.

use rand::Rng;

const PREFIX: &str = "SHLTKN-1-";

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the CA certificate's DER, lower-case hex.
    pub ca_fingerprint: String,
    /// The role secret.
    pub secret: String,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The text is not a Shoal join token.
    #[error("invalid join token: expected SHLTKN-1-<64 hex digits>-<secret>; copy it from `shoalctl cluster join-token worker|manager`")]
    Malformed,
}

impl JoinToken {
    /// Makes a token for a CA fingerprint and secret.
    pub fn new(ca_fingerprint: &str, secret: &str) -> Self {
        JoinToken {
            ca_fingerprint: ca_fingerprint.to_string(),
            secret: secret.to_string(),
        }
    }

    /// Parses the text form.
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let rest = s.trim().strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (fp, secret) = rest.split_once('-').ok_or(TokenError::Malformed)?;
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() < 16 {
            return Err(TokenError::Malformed);
        }
        Ok(JoinToken::new(&fp.to_ascii_lowercase(), secret))
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.ca_fingerprint, self.secret)
    }
}

/// A fresh random secret for a token (25 lower-case alphanumerics, as swarm's).
pub fn new_secret() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..25)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Compares two secrets in constant time.
pub fn secrets_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let fp = "ab".repeat(32);
        let t = JoinToken::new(&fp, &new_secret());
        assert_eq!(JoinToken::parse(&t.to_string()), Ok(t));
        assert_eq!(JoinToken::parse("nope"), Err(TokenError::Malformed));
        assert_eq!(
            JoinToken::parse(&format!("SHLTKN-1-{}-short", fp)),
            Err(TokenError::Malformed)
        );
        assert!(secrets_match("abc", "abc"));
        assert!(!secrets_match("abc", "abd"));
    }
}
