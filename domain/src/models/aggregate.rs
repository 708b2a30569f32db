//! The `ModelVersion` and `Deployment` aggregates: business rules in `decide` (called by
//! `handle` before any event is written), state changes only in `apply`.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::{MAX_METRICS, check_digest};
use crate::error::{DomainError, check_id};
use crate::payload::{Payload, json_of, parse};
use crate::tenancy::TenantStatus;

// ---------------------------------------------------------------------------------------------
// ModelVersion
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelVersionCommand {
    /// Registers a version of a model. Idempotent: the same again is a no-op.
    RegisterModelVersion {
        tenant: String,
        model: String,
        version: String,
        /// `sha256:<64 hex>` of the model artifact.
        artifact_digest: String,
        /// Evaluation metrics as strings (e.g. `auc` → `0.91`): exact, never floats.
        metrics: BTreeMap<String, String>,
    },
    /// Retires the version: it can no longer be deployed or given traffic.
    RetireModelVersion,
}

/// What the command path knows beyond this aggregate, passed in when a command is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelVersionServices {
    pub tenant: TenantStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersionRegistered {
    pub tenant: String,
    pub model: String,
    pub version: String,
    pub artifact_digest: String,
    pub metrics: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersionRetired {
    pub tenant: String,
    pub model: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelVersionEvent {
    ModelVersionRegistered(ModelVersionRegistered),
    ModelVersionRetired(ModelVersionRetired),
}

impl DomainEvent for ModelVersionEvent {
    fn event_type(&self) -> String {
        Payload::event_type(self).to_owned()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Payload for ModelVersionEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ModelVersionEvent::ModelVersionRegistered(_) => "models.ModelVersionRegistered",
            ModelVersionEvent::ModelVersionRetired(_) => "models.ModelVersionRetired",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            ModelVersionEvent::ModelVersionRegistered(e) => json_of(e),
            ModelVersionEvent::ModelVersionRetired(e) => json_of(e),
        }
    }

    fn from_json(t: &str, v: serde_json::Value) -> Option<Result<Self, String>> {
        Some(match t {
            "models.ModelVersionRegistered" => {
                parse(t, v).map(ModelVersionEvent::ModelVersionRegistered)
            }
            "models.ModelVersionRetired" => parse(t, v).map(ModelVersionEvent::ModelVersionRetired),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub registered: Option<ModelVersionRegistered>,
    pub retired: bool,
}

fn validate_metrics(metrics: &BTreeMap<String, String>) -> Result<(), DomainError> {
    if metrics.len() > MAX_METRICS {
        return Err(DomainError::invalid(
            "metrics",
            format!("at most {MAX_METRICS} metrics"),
        ));
    }
    for (name, value) in metrics {
        check_id(&format!("metrics[{name:?}]"), name, 64)?;
        if value.trim().is_empty() || value.len() > 64 {
            return Err(DomainError::invalid(
                &format!("metrics[{name:?}]"),
                format!("metric {name:?}: its value must be 1 to 64 characters, not blank"),
            ));
        }
    }
    Ok(())
}

impl ModelVersion {
    fn decide(
        &self,
        command: ModelVersionCommand,
        services: &ModelVersionServices,
    ) -> Result<Option<ModelVersionEvent>, DomainError> {
        let tenant = match &command {
            ModelVersionCommand::RegisterModelVersion { tenant, .. } => tenant.as_str(),
            ModelVersionCommand::RetireModelVersion => {
                self.registered.as_ref().map_or("", |r| r.tenant.as_str())
            }
        };
        services.tenant.require_active(tenant)?;
        match command {
            ModelVersionCommand::RegisterModelVersion {
                tenant,
                model,
                version,
                artifact_digest,
                metrics,
            } => {
                check_id("tenant", &tenant, 64)?;
                check_id("model", &model, 64)?;
                check_id("version", &version, 64)?;
                check_digest("artifact_digest", &artifact_digest)?;
                validate_metrics(&metrics)?;
                let wanted = ModelVersionRegistered {
                    tenant,
                    model,
                    version,
                    artifact_digest,
                    metrics,
                };
                match &self.registered {
                    Some(existing) if *existing == wanted => Ok(None),
                    Some(existing) => Err(DomainError::conflict(
                        "model_version_exists",
                        format!(
                            "version `{}` of model `{}` is already registered with another artifact or metrics; register a new version",
                            existing.version, existing.model
                        ),
                    )),
                    None => Ok(Some(ModelVersionEvent::ModelVersionRegistered(wanted))),
                }
            }
            ModelVersionCommand::RetireModelVersion => {
                let registered = self.registered.as_ref().ok_or_else(|| {
                    DomainError::not_found(
                        "unknown_model_version",
                        "the model version is not registered",
                    )
                })?;
                if self.retired {
                    return Ok(None);
                }
                Ok(Some(ModelVersionEvent::ModelVersionRetired(
                    ModelVersionRetired {
                        tenant: registered.tenant.clone(),
                        model: registered.model.clone(),
                        version: registered.version.clone(),
                    },
                )))
            }
        }
    }
}

impl Aggregate for ModelVersion {
    const TYPE: &'static str = super::MODEL_VERSION_STREAM_TYPE;
    type Command = ModelVersionCommand;
    type Event = ModelVersionEvent;
    type Error = DomainError;
    type Services = ModelVersionServices;

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
            ModelVersionEvent::ModelVersionRegistered(e) => self.registered = Some(e),
            ModelVersionEvent::ModelVersionRetired(_) => self.retired = true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deployment
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentCommand {
    /// Deploys a version to the environment. With 100 % it replaces whatever served; below 100 %
    /// it is a canary beside the one stable version, which keeps the rest. The first deployment
    /// of an environment takes 100 %.
    Deploy {
        tenant: String,
        model: String,
        version: String,
        environment: String,
        traffic_pct: i32,
    },
    /// Sets a serving version's share (0 to 100) while a canary runs; the other serving version
    /// gets the rest, so the shares always sum to 100. A share of 0 stops the version serving.
    ShiftTraffic { version: String, traffic_pct: i32 },
    /// Gives a serving version all the traffic.
    Promote { version: String },
    /// Gives all the traffic back to a version this environment served before.
    Rollback { to_version: String },
    /// Stops serving the model in this environment.
    Retire,
}

/// What the command path knows beyond this aggregate, passed in when a command is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentServices {
    pub tenant: TenantStatus,
    /// The version the command names (`version` or `to_version`) is registered for the model.
    pub version_registered: bool,
    /// The version the command names is retired.
    pub version_retired: bool,
}

/// The share of an environment's traffic one version serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficShare {
    pub version: String,
    pub traffic_pct: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDeployed {
    pub tenant: String,
    pub model: String,
    pub environment: String,
    pub version: String,
    pub traffic_pct: i32,
    /// Every serving version's share after the deployment, by version.
    pub traffic: Vec<TrafficShare>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficShifted {
    pub tenant: String,
    pub model: String,
    pub environment: String,
    pub version: String,
    pub traffic_pct: i32,
    /// Every serving version's share after the shift, by version.
    pub traffic: Vec<TrafficShare>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPromoted {
    pub tenant: String,
    pub model: String,
    pub environment: String,
    pub version: String,
    /// The shares before the promotion.
    pub previous_traffic: Vec<TrafficShare>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRolledBack {
    pub tenant: String,
    pub model: String,
    pub environment: String,
    pub to_version: String,
    /// The shares before the rollback.
    pub previous_traffic: Vec<TrafficShare>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRetired {
    pub tenant: String,
    pub model: String,
    pub environment: String,
    /// The shares before the retirement.
    pub previous_traffic: Vec<TrafficShare>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentEvent {
    ModelDeployed(ModelDeployed),
    TrafficShifted(TrafficShifted),
    ModelPromoted(ModelPromoted),
    DeploymentRolledBack(DeploymentRolledBack),
    DeploymentRetired(DeploymentRetired),
}

impl DomainEvent for DeploymentEvent {
    fn event_type(&self) -> String {
        Payload::event_type(self).to_owned()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Payload for DeploymentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            DeploymentEvent::ModelDeployed(_) => "models.ModelDeployed",
            DeploymentEvent::TrafficShifted(_) => "models.TrafficShifted",
            DeploymentEvent::ModelPromoted(_) => "models.ModelPromoted",
            DeploymentEvent::DeploymentRolledBack(_) => "models.DeploymentRolledBack",
            DeploymentEvent::DeploymentRetired(_) => "models.DeploymentRetired",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            DeploymentEvent::ModelDeployed(e) => json_of(e),
            DeploymentEvent::TrafficShifted(e) => json_of(e),
            DeploymentEvent::ModelPromoted(e) => json_of(e),
            DeploymentEvent::DeploymentRolledBack(e) => json_of(e),
            DeploymentEvent::DeploymentRetired(e) => json_of(e),
        }
    }

    fn from_json(t: &str, v: serde_json::Value) -> Option<Result<Self, String>> {
        Some(match t {
            "models.ModelDeployed" => parse(t, v).map(DeploymentEvent::ModelDeployed),
            "models.TrafficShifted" => parse(t, v).map(DeploymentEvent::TrafficShifted),
            "models.ModelPromoted" => parse(t, v).map(DeploymentEvent::ModelPromoted),
            "models.DeploymentRolledBack" => parse(t, v).map(DeploymentEvent::DeploymentRolledBack),
            "models.DeploymentRetired" => parse(t, v).map(DeploymentEvent::DeploymentRetired),
            _ => return None,
        })
    }
}

/// Which deployment a stream is: fixed by its first `Deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentKey {
    pub tenant: String,
    pub model: String,
    pub environment: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub key: Option<DeploymentKey>,
    /// Serving versions and their shares (each above 0, summing to 100), or empty when retired.
    pub traffic: BTreeMap<String, i32>,
    /// Every version ever deployed here: the targets a rollback may choose.
    pub deployed_before: BTreeSet<String>,
}

fn shares(traffic: &BTreeMap<String, i32>) -> Vec<TrafficShare> {
    traffic
        .iter()
        .map(|(version, pct)| TrafficShare {
            version: version.clone(),
            traffic_pct: *pct,
        })
        .collect()
}

fn sole(version: &str) -> BTreeMap<String, i32> {
    BTreeMap::from([(version.to_owned(), 100)])
}

fn require_pct(field: &str, pct: i32, min: i32) -> Result<(), DomainError> {
    if !(min..=100).contains(&pct) {
        return Err(DomainError::invalid(
            field,
            format!("`{field}` must be {min} to 100, got {pct}"),
        ));
    }
    Ok(())
}

impl Deployment {
    fn key(&self) -> Result<&DeploymentKey, DomainError> {
        self.key.as_ref().ok_or_else(|| {
            DomainError::not_found(
                "unknown_deployment",
                "nothing was ever deployed to this environment; deploy first",
            )
        })
    }

    fn require_usable(version: &str, services: &DeploymentServices) -> Result<(), DomainError> {
        if !services.version_registered {
            return Err(DomainError::not_found(
                "unknown_model_version",
                format!("version `{version}` is not registered; register it first"),
            ));
        }
        if services.version_retired {
            return Err(DomainError::conflict(
                "model_version_retired",
                format!("version `{version}` is retired and cannot serve traffic"),
            ));
        }
        Ok(())
    }

    fn require_serving(&self, version: &str) -> Result<i32, DomainError> {
        self.traffic.get(version).copied().ok_or_else(|| {
            DomainError::conflict(
                "version_not_serving",
                format!("version `{version}` serves no traffic in this environment"),
            )
        })
    }

    fn decide(
        &self,
        command: DeploymentCommand,
        services: &DeploymentServices,
    ) -> Result<Option<DeploymentEvent>, DomainError> {
        let tenant = match (&command, &self.key) {
            (DeploymentCommand::Deploy { tenant, .. }, _) => tenant.as_str(),
            (_, Some(key)) => key.tenant.as_str(),
            (_, None) => "",
        };
        services.tenant.require_active(tenant)?;
        match command {
            DeploymentCommand::Deploy {
                tenant,
                model,
                version,
                environment,
                traffic_pct,
            } => {
                check_id("tenant", &tenant, 64)?;
                check_id("model", &model, 64)?;
                check_id("version", &version, 64)?;
                check_id("environment", &environment, 32)?;
                require_pct("traffic_pct", traffic_pct, 1)?;
                let key = DeploymentKey {
                    tenant,
                    model,
                    environment,
                };
                if let Some(existing) = &self.key
                    && *existing != key
                {
                    return Err(DomainError::conflict(
                        "deployment_mismatch",
                        format!(
                            "this is the deployment of `{}` to `{}`, not of `{}` to `{}`",
                            existing.model, existing.environment, key.model, key.environment
                        ),
                    ));
                }
                Self::require_usable(&version, services)?;
                if let Some(&current) = self.traffic.get(&version) {
                    return if current == traffic_pct {
                        Ok(None)
                    } else {
                        Err(DomainError::conflict(
                            "already_serving",
                            format!(
                                "version `{version}` already serves {current} %; use ShiftTraffic or Promote"
                            ),
                        ))
                    };
                }
                let traffic = if traffic_pct == 100 {
                    sole(&version)
                } else {
                    match self.traffic.iter().next() {
                        None => {
                            return Err(DomainError::invalid(
                                "traffic_pct",
                                "nothing else serves in this environment: the first deployment takes 100 %",
                            ));
                        }
                        Some(_) if self.traffic.len() > 1 => {
                            return Err(DomainError::conflict(
                                "canary_in_progress",
                                "a canary is already running here; promote it, roll back or shift its traffic to 0 first",
                            ));
                        }
                        Some((stable, _)) => BTreeMap::from([
                            (stable.clone(), 100 - traffic_pct),
                            (version.clone(), traffic_pct),
                        ]),
                    }
                };
                Ok(Some(DeploymentEvent::ModelDeployed(ModelDeployed {
                    tenant: key.tenant,
                    model: key.model,
                    environment: key.environment,
                    version,
                    traffic_pct,
                    traffic: shares(&traffic),
                })))
            }
            DeploymentCommand::ShiftTraffic {
                version,
                traffic_pct,
            } => {
                let key = self.key()?;
                require_pct("traffic_pct", traffic_pct, 0)?;
                let current = self.require_serving(&version)?;
                if current == traffic_pct {
                    return Ok(None);
                }
                if traffic_pct > current {
                    Self::require_usable(&version, services)?;
                }
                let Some(other) = self.traffic.keys().find(|v| **v != version) else {
                    return Err(DomainError::conflict(
                        "no_canary",
                        format!(
                            "version `{version}` is the only one serving and keeps all traffic; deploy a canary first"
                        ),
                    ));
                };
                let mut traffic = BTreeMap::from([
                    (version.clone(), traffic_pct),
                    (other.clone(), 100 - traffic_pct),
                ]);
                traffic.retain(|_, pct| *pct > 0);
                Ok(Some(DeploymentEvent::TrafficShifted(TrafficShifted {
                    tenant: key.tenant.clone(),
                    model: key.model.clone(),
                    environment: key.environment.clone(),
                    version,
                    traffic_pct,
                    traffic: shares(&traffic),
                })))
            }
            DeploymentCommand::Promote { version } => {
                let key = self.key()?;
                let current = self.require_serving(&version)?;
                if current == 100 {
                    return Ok(None);
                }
                Self::require_usable(&version, services)?;
                Ok(Some(DeploymentEvent::ModelPromoted(ModelPromoted {
                    tenant: key.tenant.clone(),
                    model: key.model.clone(),
                    environment: key.environment.clone(),
                    version,
                    previous_traffic: shares(&self.traffic),
                })))
            }
            DeploymentCommand::Rollback { to_version } => {
                let key = self.key()?;
                if !self.deployed_before.contains(&to_version) {
                    return Err(DomainError::conflict(
                        "never_deployed",
                        format!(
                            "version `{to_version}` was never deployed to `{}`; a rollback returns to a version that served here",
                            key.environment
                        ),
                    ));
                }
                if self.traffic.get(&to_version) == Some(&100) {
                    return Ok(None);
                }
                Self::require_usable(&to_version, services)?;
                Ok(Some(DeploymentEvent::DeploymentRolledBack(
                    DeploymentRolledBack {
                        tenant: key.tenant.clone(),
                        model: key.model.clone(),
                        environment: key.environment.clone(),
                        to_version,
                        previous_traffic: shares(&self.traffic),
                    },
                )))
            }
            DeploymentCommand::Retire => {
                let key = self.key()?;
                if self.traffic.is_empty() {
                    return Ok(None);
                }
                Ok(Some(DeploymentEvent::DeploymentRetired(
                    DeploymentRetired {
                        tenant: key.tenant.clone(),
                        model: key.model.clone(),
                        environment: key.environment.clone(),
                        previous_traffic: shares(&self.traffic),
                    },
                )))
            }
        }
    }
}

impl Aggregate for Deployment {
    const TYPE: &'static str = super::DEPLOYMENT_STREAM_TYPE;
    type Command = DeploymentCommand;
    type Event = DeploymentEvent;
    type Error = DomainError;
    type Services = DeploymentServices;

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
        let traffic_of = |shares: Vec<TrafficShare>| {
            shares
                .into_iter()
                .map(|s| (s.version, s.traffic_pct))
                .collect()
        };
        match event {
            DeploymentEvent::ModelDeployed(e) => {
                self.key.get_or_insert(DeploymentKey {
                    tenant: e.tenant,
                    model: e.model,
                    environment: e.environment,
                });
                self.deployed_before.insert(e.version);
                self.traffic = traffic_of(e.traffic);
            }
            DeploymentEvent::TrafficShifted(e) => self.traffic = traffic_of(e.traffic),
            DeploymentEvent::ModelPromoted(e) => self.traffic = sole(&e.version),
            DeploymentEvent::DeploymentRolledBack(e) => self.traffic = sole(&e.to_version),
            DeploymentEvent::DeploymentRetired(_) => self.traffic.clear(),
        }
    }
}
