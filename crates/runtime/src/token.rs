//! Tokens: their form, made with high entropy, shown once, stored only as a
//! SHA-256 hash, and compared in constant time.
//!
//! A token reads `sluice_<w|r|o>_<30 random base62><6 base62 CRC32>`: the
//! prefix says what it is for (a connector's write or read token, or an
//! operator's), 30 characters of `[0-9A-Za-z]` carry about 178 random
//! bits, and the last six are the CRC32 of those 30, in base62, so that a
//! secret scanner (or a service) tells a real token from a mistyped one
//! offline. A scanning rule: `\bsluice_[wro]_[0-9A-Za-z]{36}\b`, then the
//! checksum. Tokens made before this form (`sluice_[wr]_` and 64 lowercase
//! hex digits) keep working; they carry no checksum.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a connector token allows: its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Write,
    Read,
}

/// The prefix of an operator token (not `SLUICE_ADMIN_TOKEN`, which is
/// whatever the operator set).
pub const OPERATOR_PREFIX: &str = "sluice_o_";

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
    /// and a body with a valid checksum, as [`NewToken::generate`] makes
    /// them, or the prefix and 64 lowercase hex digits of tokens made
    /// before checksums. Anything else cannot be a connector's token, so
    /// it is refused before it is hashed or looked up anywhere.
    pub fn of_secret(token: &str) -> Option<TokenKind> {
        [TokenKind::Write, TokenKind::Read]
            .into_iter()
            .find(|kind| {
                token
                    .strip_prefix(kind.prefix())
                    .is_some_and(|body| is_checksummed_body(body) || is_legacy_body(body))
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

/// Whether `token` has the form of an operator token (prefix, body and a
/// valid checksum).
pub fn is_operator_secret(token: &str) -> bool {
    token
        .strip_prefix(OPERATOR_PREFIX)
        .is_some_and(is_checksummed_body)
}

/// Random characters of a token's body: 30 of 62, about 178 bits.
const RANDOM_CHARS: usize = 30;
/// Base62 characters of the CRC32 (62^6 > 2^32), zero-padded.
const CHECKSUM_CHARS: usize = 6;
/// Hex digits after the prefix of a token made before checksums.
const LEGACY_HEX_DIGITS: usize = 64;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC32 (IEEE, as zlib and GitHub compute it) of `random`, in
/// [`CHECKSUM_CHARS`] base62 digits, most significant first.
fn checksum(random: &str) -> [u8; CHECKSUM_CHARS] {
    let mut n = crc32fast::hash(random.as_bytes());
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits
}

fn is_checksummed_body(body: &str) -> bool {
    body.len() == RANDOM_CHARS + CHECKSUM_CHARS
        && body.bytes().all(|b| b.is_ascii_alphanumeric())
        && {
            let (random, sum) = body.split_at(RANDOM_CHARS);
            checksum(random) == sum.as_bytes()
        }
}

fn is_legacy_body(body: &str) -> bool {
    body.len() == LEGACY_HEX_DIGITS && body.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
    /// A connector token of `kind`.
    pub fn generate(kind: TokenKind) -> NewToken {
        NewToken::with_prefix(kind.prefix())
    }

    /// An operator token.
    pub fn operator() -> NewToken {
        NewToken::with_prefix(OPERATOR_PREFIX)
    }

    fn with_prefix(prefix: &str) -> NewToken {
        let secret = random_secret(prefix);
        let hash = TokenHash::of(&secret);
        NewToken { secret, hash }
    }
}

/// `prefix` followed by 30 random base62 characters and their checksum.
pub fn random_secret(prefix: &str) -> String {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(RANDOM_CHARS)
        .map(char::from)
        .collect();
    let sum = checksum(&random);
    let sum = std::str::from_utf8(&sum).expect("base62 digits are ASCII");
    format!("{prefix}{random}{sum}")
}

/// Hex SHA-256 of a token. Tokens carry at least 178 bits of randomness,
/// so a plain hash (no salt, no slow KDF) cannot be reversed.
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
        assert_eq!(a.secret.len(), "sluice_w_".len() + 36);
        assert_ne!(a.secret, b.secret);
        assert!(a.hash.matches(&a.secret));
        assert!(!a.hash.matches(&b.secret));
        assert!(!format!("{a:?}").contains(&a.secret));
        assert!(
            NewToken::generate(TokenKind::Read)
                .secret
                .starts_with("sluice_r_")
        );
        let operator = NewToken::operator().secret;
        assert!(operator.starts_with("sluice_o_"));
        assert!(is_operator_secret(&operator));
        assert_eq!(TokenKind::of_secret(&operator), None);
    }

    #[test]
    fn the_checksum_is_crc32_in_six_base62_digits() {
        // zlib's CRC32 of "123456789" is 0xCBF43926, which is
        // 3 45 35 27 22 14 in base 62.
        assert_eq!(&checksum("123456789"), b"3jZRME");
        assert_eq!(&checksum(""), b"000000");
        let token = NewToken::generate(TokenKind::Write).secret;
        let body = &token["sluice_w_".len()..];
        assert_eq!(checksum(&body[..30]), body.as_bytes()[30..]);
    }

    #[test]
    fn only_the_generated_forms_are_connector_tokens() {
        let write = NewToken::generate(TokenKind::Write).secret;
        let read = NewToken::generate(TokenKind::Read).secret;
        let legacy = format!("sluice_w_{}", "0123456789abcdef".repeat(4));
        assert_eq!(TokenKind::of_secret(&write), Some(TokenKind::Write));
        assert_eq!(TokenKind::of_secret(&read), Some(TokenKind::Read));
        assert_eq!(TokenKind::of_secret(&legacy), Some(TokenKind::Write));
        let body = &write["sluice_w_".len()..];
        // One character changed anywhere in the body breaks the checksum.
        let mistyped: Vec<String> = (0..body.len())
            .map(|at| {
                let mut bytes = body.as_bytes().to_vec();
                bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
                format!("sluice_w_{}", String::from_utf8(bytes).unwrap())
            })
            .collect();
        for malformed in mistyped.iter().cloned().chain([
            "sluice_w_nope".to_owned(),
            "sluice_x_".to_owned() + body,
            "sluice_w_".to_owned() + &body[1..],
            "sluice_w_".to_owned() + body + "0",
            "sluice_w_".to_owned() + &"0123456789ABCDEF".repeat(4),
            "sluice_w_".to_owned() + &"0123456789abcdef".repeat(4)[1..] + "g",
            body.to_owned(),
            String::new(),
        ]) {
            assert_eq!(TokenKind::of_secret(&malformed), None, "{malformed}");
            assert!(!is_operator_secret(&malformed), "{malformed}");
        }
        // The checksum covers the body, not the prefix: the prefix alone
        // says what a token is for.
        let operator = "sluice_o_".to_owned() + body;
        assert_eq!(TokenKind::of_secret(&operator), None);
        assert!(is_operator_secret(&operator));
    }
}
