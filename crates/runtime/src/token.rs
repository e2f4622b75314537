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

    /// The kind of a connector token, read from its form alone: the prefix
    /// and 64 lowercase hex digits, as [`NewToken::generate`] makes them.
    /// Anything else cannot be a connector's token, so it is refused before
    /// it is hashed or looked up anywhere.
    pub fn of_secret(token: &str) -> Option<TokenKind> {
        [TokenKind::Write, TokenKind::Read]
            .into_iter()
            .find(|kind| {
                token.strip_prefix(kind.prefix()).is_some_and(|random| {
                    random.len() == SECRET_HEX_DIGITS
                        && random
                            .bytes()
                            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                })
            })
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

/// Hex digits after a token's prefix: 256 random bits.
const SECRET_HEX_DIGITS: usize = 64;

/// `prefix` followed by 256 random bits in hex.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; SECRET_HEX_DIGITS / 2];
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

    #[test]
    fn only_the_generated_form_is_a_connector_token() {
        let write = NewToken::generate(TokenKind::Write).secret;
        let read = NewToken::generate(TokenKind::Read).secret;
        assert_eq!(TokenKind::of_secret(&write), Some(TokenKind::Write));
        assert_eq!(TokenKind::of_secret(&read), Some(TokenKind::Read));
        let random = &write["sluice_w_".len()..];
        for malformed in [
            "sluice_w_nope".to_owned(),
            "sluice_x_".to_owned() + random,
            "sluice_w_".to_owned() + &random[1..],
            "sluice_w_".to_owned() + random + "0",
            "sluice_w_".to_owned() + &random.to_uppercase(),
            "sluice_w_".to_owned() + &random[1..] + "g",
            random.to_owned(),
            String::new(),
        ] {
            assert_eq!(TokenKind::of_secret(&malformed), None, "{malformed}");
        }
    }
}
