//! One partition's aggregates in memory: rebuilt from the log, then advanced by each decision.

use std::collections::HashMap;

use annals_domain::ingest::{IngestCommand, IngestEvent, IngestServices, Source};
use annals_domain::tenancy::{Tenant, TenantEvent, TenantStatus};
use annals_domain::{DomainError, Payload};
use annals_events::{Envelope, NewEvent, Partition};
use annals_schemas::Registry;
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use tokio::runtime::Runtime;

use crate::command::{Command, CommandError, CommandMeta};

/// What a decided command will write: `count` events at `events[first..first + count]` of the
/// batch, bringing `stream` from `from_version`.
pub(crate) struct Decided {
    pub stream: String,
    pub from_version: u64,
    pub first: usize,
    pub event_types: Vec<&'static str>,
    pub duplicates: u64,
}

#[derive(Default)]
pub(crate) struct PartitionState {
    tenants: HashMap<String, Tenant>,
    sources: HashMap<(String, String), Source>,
    sources_per_tenant: HashMap<String, usize>,
    versions: HashMap<String, u64>,
    /// An aggregate changed but its events will not be written: rebuild before deciding more.
    pub dirty: bool,
}

impl PartitionState {
    /// Replays the partition from seq 0 (schema upcasting as for any read).
    pub fn rebuild(
        partition: &Partition,
        registry: &Registry,
    ) -> Result<PartitionState, CommandError> {
        let mut state = PartitionState::default();
        let mut reader = partition.reader(0);
        while let Some(env) = reader.next().map_err(CommandError::unavailable)? {
            state.apply_stored(&env, registry)?;
        }
        Ok(state)
    }

    fn apply_stored(&mut self, env: &Envelope, registry: &Registry) -> Result<(), CommandError> {
        let fail = |e: String| {
            CommandError::Unavailable(format!("partition {} seq {}: {e}", env.partition, env.seq))
        };
        let payload = registry
            .decode_json(env.schema_id, &env.payload)
            .map_err(|e| fail(e.to_string()))?;
        if let Some(e) = TenantEvent::from_json(&env.event_type, payload.clone()) {
            self.tenants
                .entry(env.tenant.clone())
                .or_default()
                .apply(e.map_err(fail)?);
        } else if let Some(e) = IngestEvent::from_json(&env.event_type, payload) {
            let IngestEvent::SignalIngested(s) = e.map_err(fail)?;
            let key = (s.tenant.clone(), s.source.clone());
            self.source_entry(key).apply(IngestEvent::SignalIngested(s));
        } else {
            tracing::debug!(event_type = %env.event_type, "not an event of a context the command path decides");
        }
        self.versions.insert(env.stream.clone(), env.stream_version);
        Ok(())
    }

    fn source_entry(&mut self, key: (String, String)) -> &mut Source {
        let count = &mut self.sources_per_tenant;
        self.sources.entry(key).or_insert_with_key(|(tenant, _)| {
            *count.entry(tenant.clone()).or_default() += 1;
            Source::default()
        })
    }

    fn tenant_status(&self, tenant: &str) -> TenantStatus {
        self.tenants
            .get(tenant)
            .map_or(TenantStatus::Unknown, |t| t.status)
    }

    /// Decides one command, appending its events (encoded, not yet positioned) to `out`.
    pub fn decide(
        &mut self,
        rt: &Runtime,
        cmd: Command,
        meta: &CommandMeta,
        registry: &Registry,
        out: &mut Vec<NewEvent>,
    ) -> Result<Decided, CommandError> {
        let stream = cmd.stream();
        let tenant = cmd.tenant().to_owned();
        let from_version = self.versions.get(&stream).copied().unwrap_or(0);
        if let Some(expected) = meta.expected_version {
            if expected != from_version {
                return Err(DomainError::conflict("version_conflict", format!("stream `{stream}` is at version {from_version}, not {expected}: read it again and retry")).into());
            }
        }
        let first = out.len();
        let mut event_types = Vec::new();
        let mut duplicates = 0;
        let mut push = |this: &mut Self,
                        event: &dyn PayloadEvent,
                        occurred_at: i64|
         -> Result<(), CommandError> {
            let (schema_id, payload) = event.encode(registry).map_err(|e| {
                this.dirty = true;
                CommandError::unavailable(format!(
                    "an event of `{stream}` does not fit its schema: {e}"
                ))
            })?;
            event_types.push(event.kind());
            out.push(NewEvent {
                event_id: uuid::Uuid::now_v7(),
                tenant: tenant.clone(),
                stream: stream.clone(),
                stream_version: from_version + event_types.len() as u64,
                event_type: event.kind().to_owned(),
                schema_id,
                occurred_at,
                actor: meta.actor.clone(),
                causation_id: meta.command_id.clone(),
                correlation_id: meta.correlation_id.clone(),
                payload,
            });
            Ok(())
        };
        match cmd {
            Command::Tenancy { tenant: t, command } => {
                annals_domain::error::check_id("tenant", &t, 64)?;
                let mut agg = self.tenants.remove(&t).unwrap_or_default();
                let result = handle(rt, &mut agg, command, &());
                if agg.status != TenantStatus::Unknown {
                    self.tenants.insert(t, agg);
                }
                for e in self.settle(result)? {
                    push(self, &e, meta.occurred_at)?;
                }
            }
            Command::Ingest(command) => {
                let IngestCommand::IngestSignals {
                    tenant: t,
                    source,
                    signals,
                } = command;
                annals_domain::error::check_id("tenant", &t, 64)?;
                let sent = signals.len() as u64;
                let key = (t.clone(), source.clone());
                let limit = self
                    .tenants
                    .get(&t)
                    .and_then(|x| x.limits.as_ref())
                    .map_or(usize::MAX, |l| l.max_sources as usize);
                let services = IngestServices {
                    tenant: self.tenant_status(&t),
                    source_limit_reached: !self.sources.contains_key(&key)
                        && self.sources_per_tenant.get(&t).copied().unwrap_or(0) >= limit,
                };
                let mut agg = self.sources.remove(&key).unwrap_or_default();
                let result = handle(
                    rt,
                    &mut agg,
                    IngestCommand::IngestSignals {
                        tenant: t,
                        source,
                        signals,
                    },
                    &services,
                );
                let known = !agg.source.is_empty();
                if known {
                    *self.source_entry(key.clone()) = agg;
                }
                let events = self.settle(result)?;
                duplicates = sent - events.len() as u64;
                for e in events {
                    // A signal happened at its own timestamp, not when the batch was sent.
                    let IngestEvent::SignalIngested(s) = &e;
                    let at = s.ts;
                    push(self, &e, at)?;
                }
            }
        }
        if !event_types.is_empty() {
            self.versions
                .insert(stream.clone(), from_version + event_types.len() as u64);
        }
        Ok(Decided {
            stream,
            from_version,
            first,
            event_types,
            duplicates,
        })
    }

    /// A refusal must have left the aggregate untouched; if it did not (a rule checked after an
    /// event was emitted), the state is rebuilt from the log before the next decision.
    fn settle<E>(
        &mut self,
        result: (Result<(), DomainError>, Vec<E>),
    ) -> Result<Vec<E>, CommandError> {
        match result {
            (Ok(()), events) => Ok(events),
            (Err(e), events) => {
                if !events.is_empty() {
                    tracing::error!(
                        code = e.code,
                        "an aggregate emitted events and then refused; rebuilding its partition"
                    );
                    self.dirty = true;
                }
                Err(e.into())
            }
        }
    }
}

/// Runs an aggregate's `handle` (which never waits on I/O) to completion.
fn handle<A: Aggregate<Error = DomainError>>(
    rt: &Runtime,
    agg: &mut A,
    cmd: A::Command,
    services: &A::Services,
) -> (Result<(), DomainError>, Vec<A::Event>) {
    rt.block_on(async {
        let sink = EventSink::default();
        let result = agg.handle(cmd, services, &sink).await;
        (result, sink.collect().await)
    })
}

/// The two things the command path needs of any context's events.
trait PayloadEvent {
    fn kind(&self) -> &'static str;
    fn encode(&self, registry: &Registry) -> Result<(i32, Vec<u8>), annals_schemas::SchemaError>;
}

impl<T: Payload> PayloadEvent for T {
    fn kind(&self) -> &'static str {
        self.event_type()
    }
    fn encode(&self, registry: &Registry) -> Result<(i32, Vec<u8>), annals_schemas::SchemaError> {
        Payload::encode(self, registry)
    }
}
