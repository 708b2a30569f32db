//! Bearer tokens: who is calling, for which tenant, with which scopes.
//!
//! The operator token may do everything; a tenant token only what its scopes allow, and only on
//! its own tenant's paths. Tokens are compared by their SHA-256 digests in constant time, and
//! every configured token is compared on every request, so timing tells nothing about which
//! token (or how much of one) matched.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// Scopes a tenant token can carry.
pub const SCOPES: [&str; 6] = [
    "signals:write",
    "billing:write",
    "policy:admin",
    "privacy:admin",
    "models:write",
    "audit:read",
];

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// A tenant token as configured (`[[server.tokens]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Who uses it; recorded as the `actor` of the events its commands cause.
    pub name: String,
    pub token: String,
    pub tenant: String,
    pub scopes: Vec<String>,
}

/// Who may call the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// May do everything, including tenancy commands. `None`: no operator access over HTTP.
    pub operator_token: Option<String>,
    pub tokens: Vec<ApiToken>,
}

impl AuthConfig {
    /// Checks lengths, scopes and uniqueness. The binary's config validation calls this.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        if let Some(op) = &self.operator_token {
            if op.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "[server] operator_token is too short: use at least {MIN_TOKEN_LEN} characters (e.g. 32 random hex digits)"
                ));
            }
            seen.push(op);
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.name.trim().is_empty() {
                return Err(format!("[server] tokens[{i}].name must not be empty"));
            }
            if t.tenant.trim().is_empty() {
                return Err(format!("[server] tokens[{i}] ({}) needs a tenant", t.name));
            }
            if t.token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "[server] tokens[{i}] ({}): the token is too short: use at least {MIN_TOKEN_LEN} characters",
                    t.name
                ));
            }
            if let Some(s) = t.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
                return Err(format!(
                    "[server] tokens[{i}] ({}): unknown scope {s:?}; known scopes are {SCOPES:?}",
                    t.name
                ));
            }
            if seen.contains(&t.token.as_str()) {
                return Err(format!(
                    "[server] tokens[{i}] ({}): the same token is configured twice; every token must be unique",
                    t.name
                ));
            }
            seen.push(&t.token);
        }
        Ok(())
    }
}

/// Tokens as the server holds them: digests only.
pub(crate) struct Tokens {
    operator: Option<[u8; 32]>,
    tenants: Vec<([u8; 32], Caller)>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    pub(crate) fn new(cfg: &AuthConfig) -> Tokens {
        Tokens {
            operator: cfg.operator_token.as_deref().map(|t| digest(t.as_bytes())),
            tenants: cfg
                .tokens
                .iter()
                .map(|t| {
                    (
                        digest(t.token.as_bytes()),
                        Caller::Tenant {
                            name: t.name.clone(),
                            tenant: t.tenant.clone(),
                            scopes: t.scopes.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The caller a presented token belongs to. Compares against every token.
    fn find(&self, presented: &[u8]) -> Option<Caller> {
        let d = digest(presented);
        let mut found = None;
        if let Some(op) = &self.operator
            && bool::from(op.ct_eq(&d))
        {
            found = Some(Caller::Operator);
        }
        for (t, caller) in &self.tenants {
            if bool::from(t.ct_eq(&d)) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Tenant {
        name: String,
        tenant: String,
        scopes: Vec<String>,
    },
}

impl Caller {
    /// Recorded as the `actor` of the events the caller's commands cause.
    pub fn actor(&self) -> &str {
        match self {
            Caller::Operator => "operator",
            Caller::Tenant { name, .. } => name,
        }
    }

    /// Tenancy commands: the operator only.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant { name, .. } => Err(ApiError::forbidden(
                "operator_only",
                format!(
                    "token `{name}` is a tenant token; managing tenants needs the operator token"
                ),
            )),
        }
    }

    /// Access to `tenant`'s data with `scope`.
    pub fn require(&self, tenant: &str, scope: &str) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant {
                name,
                tenant: own,
                scopes,
            } => {
                if own != tenant {
                    return Err(ApiError::forbidden(
                        "forbidden_tenant",
                        format!(
                            "token `{name}` belongs to tenant `{own}`, not `{tenant}`; use that tenant's token"
                        ),
                    ));
                }
                if !scopes.iter().any(|s| s == scope) {
                    return Err(ApiError::forbidden(
                        "missing_scope",
                        format!(
                            "token `{name}` lacks the `{scope}` scope; add it to the token's scopes in [server] tokens"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "no credentials: send `Authorization: Bearer <token>`",
            ));
        };
        let presented = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .or_else(|| value.as_bytes().strip_prefix(b"bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        state
            .inner
            .tokens
            .find(presented.trim_ascii())
            .ok_or_else(|| {
                ApiError::unauthorized("unknown token: check the token configured in [server]")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, token: &str, tenant: &str, scopes: &[&str]) -> ApiToken {
        ApiToken {
            name: name.into(),
            token: token.into(),
            tenant: tenant.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn validation_names_short_duplicate_and_unknown() {
        let ok = AuthConfig {
            operator_token: Some("o".repeat(16)),
            tokens: vec![token("a", &"a".repeat(16), "acme", &["signals:write"])],
        };
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.operator_token = Some("short".into());
        assert!(c.validate().unwrap_err().contains("operator_token"));
        let mut c = ok.clone();
        c.tokens[0].scopes.push("signals:read".into());
        assert!(c.validate().unwrap_err().contains("signals:read"));
        let mut c = ok.clone();
        c.tokens[0].token = "o".repeat(16);
        assert!(c.validate().unwrap_err().contains("twice"));
        let mut c = ok;
        c.tokens[0].token = "x".repeat(15);
        assert!(c.validate().unwrap_err().contains("too short"));
    }

    #[test]
    fn tokens_resolve_to_their_caller_only() {
        let cfg = AuthConfig {
            operator_token: Some("o".repeat(20)),
            tokens: vec![token(
                "acme-ingest",
                &"a".repeat(20),
                "acme",
                &["signals:write"],
            )],
        };
        let t = Tokens::new(&cfg);
        assert_eq!(t.find("o".repeat(20).as_bytes()), Some(Caller::Operator));
        let c = t.find("a".repeat(20).as_bytes()).unwrap();
        assert_eq!(c.actor(), "acme-ingest");
        assert!(c.require("acme", "signals:write").is_ok());
        assert_eq!(
            c.require("other", "signals:write").unwrap_err().code,
            "forbidden_tenant"
        );
        assert_eq!(
            c.require("acme", "audit:read").unwrap_err().code,
            "missing_scope"
        );
        assert!(c.require_operator().is_err());
        assert_eq!(t.find("a".repeat(19).as_bytes()), None);
        assert_eq!(t.find(b""), None);
    }
}
