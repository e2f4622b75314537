//! Connector tokens: made with 256 bits of randomness, shown once, stored
//! only as a SHA-256 hash, and compared in constant time.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a connector token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Write,
    Read,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Write => "sluice_w_",
            TokenKind::Read => "sluice_r_",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Write => "write",
            TokenKind::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "write" => Some(TokenKind::Write),
            "read" => Some(TokenKind::Read),
            _ => None,
        }
    }
}

/// A freshly made token. Its `Debug` hides the secret.
pub struct NewToken {
    pub secret: String,
    pub hash: TokenHash,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl NewToken {
    pub fn generate(kind: TokenKind) -> NewToken {
        let secret = random_secret(kind.prefix());
        let hash = TokenHash::of(&secret);
        NewToken { secret, hash }
    }
}

/// `prefix` followed by 256 random bits in hex.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Hex SHA-256 of a token. Tokens carry 256 bits of randomness, so a plain
/// hash (no salt, no slow KDF) cannot be reversed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(hex::encode(Sha256::digest(token.as_bytes())))
    }

    pub fn from_hex(hex: String) -> TokenHash {
        TokenHash(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `token` hashes to this, in time independent of where the two
    /// hashes differ.
    pub fn matches(&self, token: &str) -> bool {
        TokenHash::of(token)
            .0
            .as_bytes()
            .ct_eq(self.0.as_bytes())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_match_only_their_hash() {
        let a = NewToken::generate(TokenKind::Write);
        let b = NewToken::generate(TokenKind::Write);
        assert!(a.secret.starts_with("sluice_w_"));
        assert_eq!(a.secret.len(), "sluice_w_".len() + 64);
        assert_ne!(a.secret, b.secret);
        assert!(a.hash.matches(&a.secret));
        assert!(!a.hash.matches(&b.secret));
        assert!(!format!("{a:?}").contains(&a.secret));
        assert!(
            NewToken::generate(TokenKind::Read)
                .secret
                .starts_with("sluice_r_")
        );
    }
}
