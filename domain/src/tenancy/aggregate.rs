//! The `Tenant` aggregate: business rules in `handle`, state changes only in `apply`.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::{PLANS, TenantLimits};
use crate::error::{DomainError, Kind, check_id};
use crate::payload::{Payload, json_of, parse};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantCommand {
    ProvisionTenant {
        tenant: String,
        name: String,
        plan: String,
        region: String,
        limits: TenantLimits,
    },
    ChangeLimits {
        limits: TenantLimits,
    },
    SuspendTenant {
        reason: String,
    },
    ReactivateTenant,
    ArchiveTenant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provisioned {
    pub tenant: String,
    pub name: String,
    pub plan: String,
    pub region: String,
    pub limits: TenantLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsChanged {
    pub tenant: String,
    pub limits: TenantLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspended {
    pub tenant: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantOnly {
    pub tenant: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantEvent {
    TenantProvisioned(Provisioned),
    TenantLimitsChanged(LimitsChanged),
    TenantSuspended(Suspended),
    TenantReactivated(TenantOnly),
    TenantArchived(TenantOnly),
}

impl DomainEvent for TenantEvent {
    fn event_type(&self) -> String {
        Payload::event_type(self).to_owned()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Payload for TenantEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TenantEvent::TenantProvisioned(_) => "tenancy.TenantProvisioned",
            TenantEvent::TenantLimitsChanged(_) => "tenancy.TenantLimitsChanged",
            TenantEvent::TenantSuspended(_) => "tenancy.TenantSuspended",
            TenantEvent::TenantReactivated(_) => "tenancy.TenantReactivated",
            TenantEvent::TenantArchived(_) => "tenancy.TenantArchived",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            TenantEvent::TenantProvisioned(e) => json_of(e),
            TenantEvent::TenantLimitsChanged(e) => json_of(e),
            TenantEvent::TenantSuspended(e) => json_of(e),
            TenantEvent::TenantReactivated(e) | TenantEvent::TenantArchived(e) => json_of(e),
        }
    }

    fn from_json(t: &str, v: serde_json::Value) -> Option<Result<Self, String>> {
        Some(match t {
            "tenancy.TenantProvisioned" => parse(t, v).map(TenantEvent::TenantProvisioned),
            "tenancy.TenantLimitsChanged" => parse(t, v).map(TenantEvent::TenantLimitsChanged),
            "tenancy.TenantSuspended" => parse(t, v).map(TenantEvent::TenantSuspended),
            "tenancy.TenantReactivated" => parse(t, v).map(TenantEvent::TenantReactivated),
            "tenancy.TenantArchived" => parse(t, v).map(TenantEvent::TenantArchived),
            _ => return None,
        })
    }
}

/// Where a tenant is in its lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantStatus {
    #[default]
    Unknown,
    Active,
    Suspended,
    Archived,
}

impl TenantStatus {
    /// The gate every other context passes: only an active tenant's commands are accepted.
    pub fn require_active(self, tenant: &str) -> Result<(), DomainError> {
        match self {
            TenantStatus::Active => Ok(()),
            TenantStatus::Unknown => Err(DomainError::not_found(
                "unknown_tenant",
                format!("tenant `{tenant}` does not exist; provision it first"),
            )),
            TenantStatus::Suspended => Err(DomainError::new(
                Kind::Forbidden,
                "tenant_suspended",
                format!("tenant `{tenant}` is suspended; reactivate it first"),
            )),
            TenantStatus::Archived => Err(DomainError::new(
                Kind::Forbidden,
                "tenant_archived",
                format!("tenant `{tenant}` is archived"),
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub status: TenantStatus,
    pub provisioned: Option<Provisioned>,
    pub limits: Option<TenantLimits>,
}

impl Tenant {
    fn tenant(&self) -> &str {
        self.provisioned.as_ref().map_or("", |p| p.tenant.as_str())
    }

    fn require_exists(&self) -> Result<(), DomainError> {
        match self.status {
            TenantStatus::Unknown => Err(DomainError::not_found(
                "unknown_tenant",
                "the tenant does not exist; provision it first",
            )),
            TenantStatus::Archived => Err(DomainError::conflict(
                "tenant_archived",
                format!(
                    "tenant `{}` is archived; nothing can change it",
                    self.tenant()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn decide(&self, command: TenantCommand) -> Result<Option<TenantEvent>, DomainError> {
        match command {
            TenantCommand::ProvisionTenant {
                tenant,
                name,
                plan,
                region,
                limits,
            } => {
                check_id("tenant", &tenant, 64)?;
                if name.trim().is_empty() || name.len() > 200 {
                    return Err(DomainError::invalid(
                        "name",
                        "`name` must be 1 to 200 characters",
                    ));
                }
                if !PLANS.contains(&plan.as_str()) {
                    return Err(DomainError::invalid(
                        "plan",
                        format!("`plan` must be one of {PLANS:?}, got {plan:?}"),
                    ));
                }
                check_id("region", &region, 32)?;
                limits.validate()?;
                let wanted = Provisioned {
                    tenant,
                    name,
                    plan,
                    region,
                    limits,
                };
                match &self.provisioned {
                    // Idempotent by its key: the same provisioning again changes nothing.
                    Some(existing) if *existing == wanted => Ok(None),
                    Some(existing) => Err(DomainError::conflict(
                        "tenant_exists",
                        format!(
                            "tenant `{}` is already provisioned with other attributes; use ChangeLimits or another tenant id",
                            existing.tenant
                        ),
                    )),
                    None => Ok(Some(TenantEvent::TenantProvisioned(wanted))),
                }
            }
            TenantCommand::ChangeLimits { limits } => {
                self.require_exists()?;
                limits.validate()?;
                if self.limits.as_ref() == Some(&limits) {
                    return Ok(None);
                }
                Ok(Some(TenantEvent::TenantLimitsChanged(LimitsChanged {
                    tenant: self.tenant().to_owned(),
                    limits,
                })))
            }
            TenantCommand::SuspendTenant { reason } => {
                self.require_exists()?;
                if reason.trim().is_empty() {
                    return Err(DomainError::invalid(
                        "reason",
                        "a suspension needs a `reason`",
                    ));
                }
                match self.status {
                    TenantStatus::Suspended => Ok(None),
                    _ => Ok(Some(TenantEvent::TenantSuspended(Suspended {
                        tenant: self.tenant().to_owned(),
                        reason,
                    }))),
                }
            }
            TenantCommand::ReactivateTenant => {
                self.require_exists()?;
                match self.status {
                    TenantStatus::Active => Ok(None),
                    _ => Ok(Some(TenantEvent::TenantReactivated(TenantOnly {
                        tenant: self.tenant().to_owned(),
                    }))),
                }
            }
            TenantCommand::ArchiveTenant => {
                if self.status == TenantStatus::Archived {
                    return Ok(None);
                }
                self.require_exists()?;
                Ok(Some(TenantEvent::TenantArchived(TenantOnly {
                    tenant: self.tenant().to_owned(),
                })))
            }
        }
    }
}

impl Aggregate for Tenant {
    const TYPE: &'static str = super::STREAM_TYPE;
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TenantEvent::TenantProvisioned(p) => {
                self.status = TenantStatus::Active;
                self.limits = Some(p.limits.clone());
                self.provisioned = Some(p);
            }
            TenantEvent::TenantLimitsChanged(c) => self.limits = Some(c.limits),
            TenantEvent::TenantSuspended(_) => self.status = TenantStatus::Suspended,
            TenantEvent::TenantReactivated(_) => self.status = TenantStatus::Active,
            TenantEvent::TenantArchived(_) => self.status = TenantStatus::Archived,
        }
    }
}
