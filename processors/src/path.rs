//! Where a server's commands are decided: by its own engine (the embedded log, or a single
//! writing process on Kafka), or by processor instances reached through the Kafka command bus.

use std::sync::Arc;
use std::time::Duration;

use annals_domain::{DomainError, Kind};
use annals_events::Topic;

use crate::bus::{CommandBus, OutcomeRecord};
use crate::command::{Command, CommandError, CommandMeta, Outcome};
use crate::engine::{Engine, EngineStats};

/// How long a server waits for a processor's outcome before answering 503 (the caller may
/// resend with the same command id).
const BUS_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub enum CommandPath {
    /// Decided in this process.
    Local(Arc<Engine>),
    /// Sent to the commands topic; `annals process` instances decide them.
    Bus {
        bus: Arc<CommandBus>,
        topic: Arc<Topic>,
    },
}

impl From<Arc<Engine>> for CommandPath {
    fn from(e: Arc<Engine>) -> CommandPath {
        CommandPath::Local(e)
    }
}

impl CommandPath {
    /// Runs a command and resolves with its outcome once its events are durable.
    pub async fn execute(
        &self,
        command: Command,
        meta: CommandMeta,
    ) -> Result<Outcome, CommandError> {
        match self {
            CommandPath::Local(e) => e.execute(command, meta).await,
            CommandPath::Bus { bus, .. } => {
                let bus = bus.clone();
                let record =
                    tokio::task::spawn_blocking(move || bus.send(command, meta)?.wait(BUS_TIMEOUT))
                        .await
                        .map_err(CommandError::unavailable)??;
                from_record(record)
            }
        }
    }

    /// A tenant's own signals-per-second limit, when this process holds its aggregate.
    pub fn tenant_rate(&self, tenant: &str) -> Option<u64> {
        match self {
            CommandPath::Local(e) => e.tenant_rate(tenant),
            CommandPath::Bus { .. } => None,
        }
    }

    /// The counters of this process's engine (zero when processors decide).
    pub fn stats(&self) -> EngineStats {
        match self {
            CommandPath::Local(e) => e.stats(),
            CommandPath::Bus { .. } => EngineStats::default(),
        }
    }

    /// The events topic.
    pub fn topic(&self) -> &Arc<Topic> {
        match self {
            CommandPath::Local(e) => e.topic(),
            CommandPath::Bus { topic, .. } => topic,
        }
    }
}

/// A processor's answer as the local engine would have given it.
fn from_record(r: OutcomeRecord) -> Result<Outcome, CommandError> {
    if let Some(o) = r.outcome {
        return serde_json::from_value(o)
            .map_err(|e| CommandError::Unavailable(format!("unreadable outcome: {e}")));
    }
    let (code, status, message, field) = r.error.unwrap_or_else(|| {
        (
            "unavailable".into(),
            503,
            "the processor gave no outcome".into(),
            None,
        )
    });
    let kind = match status {
        404 => Kind::NotFound,
        409 => Kind::Conflict,
        403 => Kind::Forbidden,
        413 => Kind::TooLarge,
        429 => Kind::RateLimited,
        422 | 400 => Kind::Invalid,
        _ => return Err(CommandError::Unavailable(message)),
    };
    Err(CommandError::Refused(DomainError {
        kind,
        code: intern(&code),
        field,
        message,
    }))
}

/// Refusal codes are a small fixed vocabulary; each is kept once for the process's life.
fn intern(code: &str) -> &'static str {
    static CODES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut codes = CODES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = codes.iter().find(|c| **c == code) {
        return c;
    }
    let c: &'static str = Box::leak(code.to_owned().into_boxed_str());
    codes.push(c);
    c
}
