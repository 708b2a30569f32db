//! The `Policy` aggregate: business rules in `decide` (called by `handle` before any event is
//! written), state changes only in `apply`.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::{Effect, Request, Rule, evaluate, validate_request, validate_rules};
use crate::error::{DomainError, check_id};
use crate::payload::{Payload, json_of, parse};
use crate::tenancy::TenantStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyCommand {
    /// Creates the policy with its first version (not active yet). Idempotent: the same again is
    /// a no-op.
    CreatePolicy {
        tenant: String,
        policy_id: String,
        rules: Vec<Rule>,
    },
    /// Adds a new version with these rules (not active yet). The rules of the latest version
    /// again are a no-op.
    ChangePolicy { rules: Vec<Rule> },
    /// Makes a version newer than the active one (or the first) active.
    ActivateVersion { version: i32 },
    /// Makes a version older than the active one active again.
    RollBack { to_version: i32 },
    /// Decides a request with the active version and records the decision.
    RecordDecision {
        request: Request,
        /// Microseconds since the Unix epoch.
        decided_at: i64,
    },
}

/// What the command path knows beyond this aggregate, passed in when a command is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyServices {
    pub tenant: TenantStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersionCreated {
    pub tenant: String,
    pub policy_id: String,
    pub version: i32,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersionActivated {
    pub tenant: String,
    pub policy_id: String,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRolledBack {
    pub tenant: String,
    pub policy_id: String,
    pub from_version: i32,
    pub to_version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecisionRecorded {
    pub tenant: String,
    pub policy_id: String,
    pub request: Request,
    pub version: i32,
    pub decision: Effect,
    pub matched_rule: Option<String>,
    pub decided_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyEvent {
    PolicyVersionCreated(PolicyVersionCreated),
    PolicyVersionActivated(PolicyVersionActivated),
    PolicyRolledBack(PolicyRolledBack),
    PolicyDecisionRecorded(PolicyDecisionRecorded),
}

impl DomainEvent for PolicyEvent {
    fn event_type(&self) -> String {
        Payload::event_type(self).to_owned()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Payload for PolicyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            PolicyEvent::PolicyVersionCreated(_) => "policy.PolicyVersionCreated",
            PolicyEvent::PolicyVersionActivated(_) => "policy.PolicyVersionActivated",
            PolicyEvent::PolicyRolledBack(_) => "policy.PolicyRolledBack",
            PolicyEvent::PolicyDecisionRecorded(_) => "policy.PolicyDecisionRecorded",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            PolicyEvent::PolicyVersionCreated(e) => json_of(e),
            PolicyEvent::PolicyVersionActivated(e) => json_of(e),
            PolicyEvent::PolicyRolledBack(e) => json_of(e),
            PolicyEvent::PolicyDecisionRecorded(e) => json_of(e),
        }
    }

    fn from_json(t: &str, v: serde_json::Value) -> Option<Result<Self, String>> {
        Some(match t {
            "policy.PolicyVersionCreated" => parse(t, v).map(PolicyEvent::PolicyVersionCreated),
            "policy.PolicyVersionActivated" => parse(t, v).map(PolicyEvent::PolicyVersionActivated),
            "policy.PolicyRolledBack" => parse(t, v).map(PolicyEvent::PolicyRolledBack),
            "policy.PolicyDecisionRecorded" => parse(t, v).map(PolicyEvent::PolicyDecisionRecorded),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub tenant: String,
    pub policy_id: String,
    /// The rules of every version: version `n` is at index `n - 1`.
    pub versions: Vec<Vec<Rule>>,
    pub active: Option<i32>,
}

impl Policy {
    fn require_exists(&self) -> Result<(), DomainError> {
        if self.versions.is_empty() {
            return Err(DomainError::not_found(
                "unknown_policy",
                "the policy does not exist; create it first",
            ));
        }
        Ok(())
    }

    fn rules_of(&self, field: &str, version: i32) -> Result<&[Rule], DomainError> {
        usize::try_from(version)
            .ok()
            .and_then(|v| v.checked_sub(1))
            .and_then(|i| self.versions.get(i))
            .map(Vec::as_slice)
            .ok_or_else(|| DomainError {
                field: Some(field.to_owned()),
                ..DomainError::not_found(
                    "unknown_policy_version",
                    format!(
                        "policy `{}` has versions 1 to {}, not {version}",
                        self.policy_id,
                        self.versions.len()
                    ),
                )
            })
    }

    fn active(&self) -> Result<(i32, &[Rule]), DomainError> {
        let version = self.active.ok_or_else(|| {
            DomainError::conflict(
                "policy_not_active",
                format!(
                    "policy `{}` has no active version; activate one first",
                    self.policy_id
                ),
            )
        })?;
        Ok((version, self.rules_of("version", version)?))
    }

    fn decide(
        &self,
        command: PolicyCommand,
        services: &PolicyServices,
    ) -> Result<Option<PolicyEvent>, DomainError> {
        let tenant = match &command {
            PolicyCommand::CreatePolicy { tenant, .. } => tenant.as_str(),
            _ => self.tenant.as_str(),
        };
        services.tenant.require_active(tenant)?;
        match command {
            PolicyCommand::CreatePolicy {
                tenant,
                policy_id,
                rules,
            } => {
                check_id("tenant", &tenant, 64)?;
                check_id("policy_id", &policy_id, 64)?;
                validate_rules(&rules)?;
                match self.versions.first() {
                    Some(first)
                        if self.tenant == tenant
                            && self.policy_id == policy_id
                            && *first == rules =>
                    {
                        Ok(None)
                    }
                    Some(_) => Err(DomainError::conflict(
                        "policy_exists",
                        format!(
                            "policy `{}` already exists with other rules; use ChangePolicy",
                            self.policy_id
                        ),
                    )),
                    None => Ok(Some(PolicyEvent::PolicyVersionCreated(
                        PolicyVersionCreated {
                            tenant,
                            policy_id,
                            version: 1,
                            rules,
                        },
                    ))),
                }
            }
            PolicyCommand::ChangePolicy { rules } => {
                self.require_exists()?;
                validate_rules(&rules)?;
                if self.versions.last() == Some(&rules) {
                    return Ok(None);
                }
                let version = i32::try_from(self.versions.len() + 1).map_err(|_| {
                    DomainError::conflict("too_many_versions", "the policy has too many versions")
                })?;
                Ok(Some(PolicyEvent::PolicyVersionCreated(
                    PolicyVersionCreated {
                        tenant: self.tenant.clone(),
                        policy_id: self.policy_id.clone(),
                        version,
                        rules,
                    },
                )))
            }
            PolicyCommand::ActivateVersion { version } => {
                self.require_exists()?;
                self.rules_of("version", version)?;
                match self.active {
                    Some(active) if active == version => Ok(None),
                    Some(active) if active > version => Err(DomainError::conflict(
                        "version_not_newer",
                        format!(
                            "version {version} is older than the active version {active}; use RollBack to return to it"
                        ),
                    )),
                    _ => Ok(Some(PolicyEvent::PolicyVersionActivated(
                        PolicyVersionActivated {
                            tenant: self.tenant.clone(),
                            policy_id: self.policy_id.clone(),
                            version,
                        },
                    ))),
                }
            }
            PolicyCommand::RollBack { to_version } => {
                self.require_exists()?;
                self.rules_of("to_version", to_version)?;
                let (active, _) = self.active()?;
                if to_version == active {
                    return Ok(None);
                }
                if to_version > active {
                    return Err(DomainError::conflict(
                        "version_not_earlier",
                        format!(
                            "version {to_version} is newer than the active version {active}; use ActivateVersion"
                        ),
                    ));
                }
                Ok(Some(PolicyEvent::PolicyRolledBack(PolicyRolledBack {
                    tenant: self.tenant.clone(),
                    policy_id: self.policy_id.clone(),
                    from_version: active,
                    to_version,
                })))
            }
            PolicyCommand::RecordDecision {
                request,
                decided_at,
            } => {
                self.require_exists()?;
                validate_request(&request)?;
                if decided_at <= 0 {
                    return Err(DomainError::invalid(
                        "decided_at",
                        "`decided_at` must be microseconds since the Unix epoch, above 0",
                    ));
                }
                let (version, rules) = self.active()?;
                let decision = evaluate(rules, &request);
                Ok(Some(PolicyEvent::PolicyDecisionRecorded(
                    PolicyDecisionRecorded {
                        tenant: self.tenant.clone(),
                        policy_id: self.policy_id.clone(),
                        request,
                        version,
                        decision: decision.decision,
                        matched_rule: decision.matched_rule,
                        decided_at,
                    },
                )))
            }
        }
    }
}

impl Aggregate for Policy {
    const TYPE: &'static str = super::STREAM_TYPE;
    type Command = PolicyCommand;
    type Event = PolicyEvent;
    type Error = DomainError;
    type Services = PolicyServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        // Every check is in `decide`, before the event: a refused command writes nothing.
        if let Some(event) = self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PolicyEvent::PolicyVersionCreated(e) => {
                if self.versions.is_empty() {
                    self.tenant = e.tenant;
                    self.policy_id = e.policy_id;
                }
                self.versions.push(e.rules);
            }
            PolicyEvent::PolicyVersionActivated(e) => self.active = Some(e.version),
            PolicyEvent::PolicyRolledBack(e) => self.active = Some(e.to_version),
            PolicyEvent::PolicyDecisionRecorded(_) => {}
        }
    }
}
