//! Models: a tenant's registered model versions and their deployments to environments.
//!
//! Owns: the `ModelVersion` aggregate (one per tenant, model and version: registered once with
//! its artifact digest and metrics, then possibly retired) and the `Deployment` aggregate (one
//! per tenant, model and environment: which versions serve what share of the traffic). A
//! deployment serves one stable version, or a stable version and one canary whose shares sum to
//! 100; it can promote a version to all traffic, roll back to any version it served before, and
//! be retired (serve nothing).
//!
//! Whether a version is registered or retired is another aggregate's state: the command path
//! passes it in as [`DeploymentServices`].

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    Deployment, DeploymentCommand, DeploymentEvent, DeploymentKey, DeploymentRetired,
    DeploymentRolledBack, DeploymentServices, ModelDeployed, ModelPromoted, ModelVersion,
    ModelVersionCommand, ModelVersionEvent, ModelVersionRegistered, ModelVersionRetired,
    ModelVersionServices, TrafficShare, TrafficShifted,
};

use crate::error::DomainError;

/// The model version aggregate type: streams are `models.ModelVersion/<tenant>/<model>/<version>`.
pub const MODEL_VERSION_STREAM_TYPE: &str = "models.ModelVersion";

pub fn model_version_stream(tenant: &str, model: &str, version: &str) -> String {
    format!("{MODEL_VERSION_STREAM_TYPE}/{tenant}/{model}/{version}")
}

/// The deployment aggregate type: streams are `models.Deployment/<tenant>/<model>/<environment>`.
pub const DEPLOYMENT_STREAM_TYPE: &str = "models.Deployment";

pub fn deployment_stream(tenant: &str, model: &str, environment: &str) -> String {
    format!("{DEPLOYMENT_STREAM_TYPE}/{tenant}/{model}/{environment}")
}

/// Most metrics one model version may carry.
pub const MAX_METRICS: usize = 64;

/// Checks an artifact digest: `sha256:` and 64 lowercase hex digits.
pub fn check_digest(field: &str, digest: &str) -> Result<(), DomainError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!("`{field}` must be `sha256:` and 64 lowercase hex digits, got {digest:?}"),
        ))
    }
}
