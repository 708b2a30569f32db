//! Why a command was refused: a stable machine-readable code, whose fault it is, and the field.

use serde::Serialize;

/// The kind of refusal; each maps to one HTTP status at the API boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The command is malformed or breaks a rule (400/422).
    Invalid,
    /// The tenant or aggregate does not exist (404).
    NotFound,
    /// The aggregate is not in a state that allows it, or a version conflict (409).
    Conflict,
    /// The caller may not do this (403).
    Forbidden,
    /// Too big (413).
    TooLarge,
    /// Over a limit (429).
    RateLimited,
}

/// A refused command. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    pub kind: Kind,
    /// Stable code, e.g. `tenant_suspended`.
    pub code: &'static str,
    /// The field of the command at fault, if one is.
    pub field: Option<String>,
    pub message: String,
}

impl DomainError {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        DomainError {
            kind,
            code,
            field: None,
            message: message.into(),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        DomainError {
            kind: Kind::Invalid,
            code: "invalid_field",
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, code, message)
    }
}

/// Checks an identifier: 1–`max` characters among `a-z A-Z 0-9 . _ -`.
pub fn check_id(field: &str, value: &str, max: usize) -> Result<(), DomainError> {
    if value.is_empty() || value.len() > max {
        return Err(DomainError::invalid(
            field,
            format!("`{field}` must be 1 to {max} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(DomainError::invalid(
            field,
            format!("`{field}` may contain only letters, digits, `.`, `_` and `-`, got {value:?}"),
        ));
    }
    Ok(())
}
