//! Commands as the command path takes them, their outcomes and their errors.

use annals_domain::billing::{BudgetCommand, InvoiceCommand};
use annals_domain::ingest::IngestCommand;
use annals_domain::models::{DeploymentCommand, ModelVersionCommand};
use annals_domain::policy::PolicyCommand;
use annals_domain::tenancy::{ContactCommand, RetentionCommand, TenantCommand};
use annals_domain::{DomainError, Kind};
use serde::{Deserialize, Serialize};

/// A command for one aggregate of one tenant: the aggregate's own command plus its address.
/// (Serialised as JSON on the Kafka commands topic.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Tenancy {
        tenant: String,
        command: TenantCommand,
    },
    /// A tenant's contact (a data subject): registration and erasure.
    Contact {
        tenant: String,
        contact_id: String,
        command: ContactCommand,
    },
    /// A tenant's retention runs: dry runs recorded, reviewed runs applied.
    Retention {
        tenant: String,
        command: RetentionCommand,
    },
    Ingest(IngestCommand),
    Invoice {
        tenant: String,
        invoice_id: String,
        command: InvoiceCommand,
    },
    Budget {
        tenant: String,
        month: String,
        command: BudgetCommand,
    },
    ModelVersion {
        tenant: String,
        model: String,
        version: String,
        command: ModelVersionCommand,
    },
    Deployment {
        tenant: String,
        model: String,
        environment: String,
        command: DeploymentCommand,
    },
    Policy {
        tenant: String,
        policy_id: String,
        command: PolicyCommand,
    },
}

impl Command {
    /// The tenant the command belongs to: it decides the partition.
    pub fn tenant(&self) -> &str {
        match self {
            Command::Ingest(IngestCommand::IngestSignals { tenant, .. }) => tenant,
            Command::Tenancy { tenant, .. }
            | Command::Contact { tenant, .. }
            | Command::Retention { tenant, .. }
            | Command::Invoice { tenant, .. }
            | Command::Budget { tenant, .. }
            | Command::ModelVersion { tenant, .. }
            | Command::Deployment { tenant, .. }
            | Command::Policy { tenant, .. } => tenant,
        }
    }

    /// The stream (aggregate) the command is for.
    pub fn stream(&self) -> String {
        use annals_domain::{billing, ingest, models, policy, tenancy};
        match self {
            Command::Tenancy { tenant, .. } => tenancy::stream(tenant),
            Command::Contact {
                tenant, contact_id, ..
            } => tenancy::contact_stream(tenant, contact_id),
            Command::Retention { tenant, .. } => tenancy::retention_stream(tenant),
            Command::Ingest(IngestCommand::IngestSignals { tenant, source, .. }) => {
                ingest::stream(tenant, source)
            }
            Command::Invoice {
                tenant, invoice_id, ..
            } => billing::invoice_stream(tenant, invoice_id),
            Command::Budget { tenant, month, .. } => billing::budget_stream(tenant, month),
            Command::ModelVersion {
                tenant,
                model,
                version,
                ..
            } => models::model_version_stream(tenant, model, version),
            Command::Deployment {
                tenant,
                model,
                environment,
                ..
            } => models::deployment_stream(tenant, model, environment),
            Command::Policy {
                tenant, policy_id, ..
            } => policy::stream(tenant, policy_id),
        }
    }
}

/// Who sends a command and why: recorded in every event it causes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMeta {
    /// The caller's id for this command, recorded as the events' `causation_id`. A command sent
    /// again with an id that already wrote to its stream is recognised and writes nothing
    /// (signals are instead deduplicated one by one by their key). Use a new id for a new command.
    pub command_id: Option<String>,
    pub actor: String,
    pub correlation_id: Option<String>,
    /// Optimistic concurrency: the stream version the caller last saw (0: a new stream).
    pub expected_version: Option<u64>,
    /// When it happened, microseconds since the epoch (events' `occurred_at`).
    pub occurred_at: i64,
}

/// One event a command wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub event_id: String,
    pub event_type: std::borrow::Cow<'static, str>,
    pub stream_version: u64,
    pub partition: u32,
    pub seq: u64,
}

/// What an accepted command did. `events` is empty when it changed nothing (an idempotent repeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub stream: String,
    /// The stream's version after the command.
    pub stream_version: u64,
    pub events: Vec<Written>,
    /// Signals recognised as repeats and not written (ingest only).
    pub duplicates: u64,
    /// The command's id had already taken effect on this stream (a retry): nothing was written.
    pub repeated: bool,
}

/// Why a command did not go through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// The aggregate refused it (the caller's fault). Nothing was written.
    #[error(transparent)]
    Refused(#[from] DomainError),
    /// The system could not do it (log, schema or shutdown). Nothing acknowledged was lost;
    /// retrying the command is safe (commands are idempotent by their keys).
    #[error("{0}")]
    Unavailable(String),
}

impl CommandError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            CommandError::Refused(e) => match e.kind {
                Kind::Invalid => 422,
                Kind::NotFound => 404,
                Kind::Conflict => 409,
                Kind::Forbidden => 403,
                Kind::TooLarge => 413,
                Kind::RateLimited => 429,
            },
            CommandError::Unavailable(_) => 503,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Refused(e) => e.code,
            CommandError::Unavailable(_) => "unavailable",
        }
    }

    pub(crate) fn unavailable(e: impl std::fmt::Display) -> CommandError {
        CommandError::Unavailable(e.to_string())
    }
}
