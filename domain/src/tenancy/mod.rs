//! Tenancy: provisioning tenants, their limits and their lifecycle
//! (active → suspended → active, or → archived, which is final).
//!
//! A tenant's contacts are people — data subjects — whose personal data can be erased
//! (`contact`). Their rows in the analytics read models age out under retention runs, each
//! reviewed as a dry run before it is applied (`retention`).
//!
//! The tenant's status gates every other context: commands for an unknown, suspended or archived
//! tenant are refused (see [`TenantStatus::require_active`]).

mod aggregate;
mod contact;
mod retention;
#[cfg(test)]
mod tests;

pub use aggregate::{Tenant, TenantCommand, TenantEvent, TenantStatus};
pub use contact::{
    CONTACT_ROLES, CONTACT_STREAM_TYPE, Contact, ContactCommand, ContactEvent, ContactRegistered,
    ContactServices, SubjectErased, contact_stream,
};
pub use retention::{
    RETENTION_STREAM_TYPE, Retention, RetentionCommand, RetentionCut, RetentionEvent, RetentionRun,
    RetentionServices, retention_stream,
};

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// The aggregate type: streams are `tenancy.Tenant/<tenant>`.
pub const STREAM_TYPE: &str = "tenancy.Tenant";

pub fn stream(tenant: &str) -> String {
    format!("{STREAM_TYPE}/{tenant}")
}

/// Plans a tenant can be on.
pub const PLANS: [&str; 3] = ["starter", "growth", "enterprise"];

/// Per-tenant quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantLimits {
    pub max_signals_per_day: i64,
    pub max_sources: i32,
    pub rate_per_second: i32,
}

impl TenantLimits {
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.max_signals_per_day <= 0 {
            return Err(DomainError::invalid(
                "limits.max_signals_per_day",
                "must be at least 1",
            ));
        }
        if self.max_sources <= 0 {
            return Err(DomainError::invalid(
                "limits.max_sources",
                "must be at least 1",
            ));
        }
        if self.rate_per_second <= 0 {
            return Err(DomainError::invalid(
                "limits.rate_per_second",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
