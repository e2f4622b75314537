//! Who is calling: what a bearer token was found to be, for the routes to
//! decide what it may do and for whatever records who did what.

use uuid::Uuid;

use crate::token::TokenKind;

/// The caller behind a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id; `None` for `SLUICE_ADMIN_TOKEN`, which has no row.
    /// The nil id for a connector token of a definition published before
    /// named tokens, until the control plane publishes it again.
    pub token_id: Option<Uuid>,
    /// The token's name, as its creator gave it ([`BOOTSTRAP_NAME`] for
    /// `SLUICE_ADMIN_TOKEN`). Never a secret.
    pub token_name: String,
    pub access: Access,
}

/// What a principal may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every route (SPEC 3).
    Operator,
    /// The routes of `connector` that `scope` allows.
    Connector { connector: Uuid, scope: TokenKind },
}

/// The name under which `SLUICE_ADMIN_TOKEN` appears.
pub const BOOTSTRAP_NAME: &str = "SLUICE_ADMIN_TOKEN";

impl Principal {
    /// `SLUICE_ADMIN_TOKEN`'s bearer.
    pub fn bootstrap() -> Principal {
        Principal {
            token_id: None,
            token_name: BOOTSTRAP_NAME.to_owned(),
            access: Access::Operator,
        }
    }

    pub fn is_operator(&self) -> bool {
        self.access == Access::Operator
    }
}
