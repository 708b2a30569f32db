//! One partition's aggregates in memory, keyed by stream: rebuilt from the log, then advanced by
//! each decision. Every context the command path decides is listed here, top to bottom.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use annals_domain::billing::{
    Budget, BudgetCommand, BudgetEvent, BudgetServices, Invoice, InvoiceCommand, InvoiceEvent,
    InvoiceServices, UsageRecorded,
};
use annals_domain::ingest::{IngestCommand, IngestEvent, IngestServices, Source};
use annals_domain::models::{
    Deployment, DeploymentCommand, DeploymentEvent, DeploymentServices, ModelVersion,
    ModelVersionEvent, ModelVersionServices,
};
use annals_domain::policy::{Policy, PolicyEvent, PolicyServices};
use annals_domain::tenancy::{
    Contact, ContactCommand, ContactEvent, ContactServices, Retention, RetentionCommand,
    RetentionEvent, RetentionServices, Tenant, TenantEvent, TenantStatus,
};
use annals_domain::{DomainError, Payload};
use annals_events::{EnvelopeRef, NewEvent, Partition};
use annals_schemas::Registry;
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use tokio::runtime::Runtime;

use crate::command::{Command, CommandError, CommandMeta};

/// What a decided command will write: its events are `events[first..first + event_types.len()]`
/// of the batch, bringing `stream` from `from_version`.
pub(crate) struct Decided {
    pub stream: String,
    pub from_version: u64,
    pub first: usize,
    pub event_types: Vec<&'static str>,
    pub duplicates: u64,
    /// The command id was seen before on this stream: nothing was decided.
    pub repeated: bool,
}

/// The aggregates of one partition, keyed by stream, as the events of the log make them. The
/// command path decides with it; replay rebuilds it to a bound and takes its digest. It
/// serialises whole, as a snapshot of the partition at a seq.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct PartitionState {
    tenants: HashMap<String, Tenant>,
    contacts: HashMap<String, Contact>,
    #[serde(default)]
    retentions: HashMap<String, Retention>,
    sources: HashMap<String, Source>,
    sources_per_tenant: HashMap<String, usize>,
    invoices: HashMap<String, Invoice>,
    budgets: HashMap<String, Budget>,
    model_versions: HashMap<String, ModelVersion>,
    deployments: HashMap<String, Deployment>,
    policies: HashMap<String, Policy>,
    versions: HashMap<String, u64>,
    /// Per stream, the ids of the commands that wrote to it (the events' `causation_id`): a
    /// command sent again with the same id is recognised and writes nothing.
    commands: HashMap<String, std::collections::HashSet<String>>,
    /// An aggregate changed but its events will not be written: rebuild before deciding more.
    #[serde(skip)]
    pub(crate) dirty: bool,
}

/// Applies a stored event to the aggregate of its stream.
fn apply_to<A: Aggregate>(map: &mut HashMap<String, A>, stream: &str, event: A::Event) {
    match map.get_mut(stream) {
        Some(agg) => agg.apply(event),
        None => {
            let mut agg = A::default();
            agg.apply(event);
            map.insert(stream.to_owned(), agg);
        }
    }
}

impl PartitionState {
    /// Replays the partition from seq 0 (schema upcasting as for any read).
    pub fn rebuild(
        partition: &Partition,
        registry: &Registry,
    ) -> Result<PartitionState, CommandError> {
        Self::rebuild_from(partition, registry, PartitionState::default(), 0)
    }

    /// Continues `state` — the partition's aggregates as of event `from - 1` (a snapshot) — with
    /// the partition's events from seq `from`.
    pub fn rebuild_from(
        partition: &Partition,
        registry: &Registry,
        mut state: PartitionState,
        from: u64,
    ) -> Result<PartitionState, CommandError> {
        let mut reader = partition.reader(from);
        while let Some(env) = reader.next_ref().map_err(CommandError::unavailable)? {
            state.apply_stored(&env, registry)?;
        }
        Ok(state)
    }

    /// Applies one stored event (decoded and upcast by the registry) to its aggregate.
    pub fn apply_stored(
        &mut self,
        env: &EnvelopeRef<'_>,
        registry: &Registry,
    ) -> Result<(), CommandError> {
        let fail = |e: String| {
            CommandError::Unavailable(format!("partition {} seq {}: {e}", env.partition, env.seq))
        };
        let t = env.event_type;
        let s = env.stream;
        let json = || {
            registry
                .decode_json(env.schema_id, env.payload)
                .map_err(|e| fail(e.to_string()))
        };
        match t.split('.').next() {
            Some("tenancy") => {
                let payload = json()?;
                if let Some(e) = TenantEvent::from_json(t, payload.clone()) {
                    apply_to(&mut self.tenants, s, e.map_err(fail)?);
                } else if let Some(e) = ContactEvent::from_json(t, payload.clone()) {
                    apply_to(&mut self.contacts, s, e.map_err(fail)?);
                } else if let Some(e) = RetentionEvent::from_json(t, payload) {
                    apply_to(&mut self.retentions, s, e.map_err(fail)?);
                }
            }
            Some("ingest") => {
                if t == "ingest.SignalIngested" {
                    let source = match self.sources.get_mut(s) {
                        Some(source) => source,
                        None => {
                            *self
                                .sources_per_tenant
                                .entry(env.tenant.to_owned())
                                .or_default() += 1;
                            self.sources.entry(s.to_owned()).or_default()
                        }
                    };
                    source
                        .apply_stored(registry, env.schema_id, env.payload)
                        .map_err(fail)?;
                }
            }
            Some("billing") if t == "billing.UsageRecorded" => {
                let e =
                    UsageRecorded::decode(registry, env.schema_id, env.payload).map_err(fail)?;
                apply_to(&mut self.budgets, s, BudgetEvent::UsageRecorded(e));
            }
            Some("billing") => {
                let payload = json()?;
                if let Some(e) = InvoiceEvent::from_json(t, payload.clone()) {
                    apply_to(&mut self.invoices, s, e.map_err(fail)?);
                } else if let Some(e) = BudgetEvent::from_json(t, payload) {
                    apply_to(&mut self.budgets, s, e.map_err(fail)?);
                }
            }
            Some("models") => {
                let payload = json()?;
                if let Some(e) = ModelVersionEvent::from_json(t, payload.clone()) {
                    apply_to(&mut self.model_versions, s, e.map_err(fail)?);
                } else if let Some(e) = DeploymentEvent::from_json(t, payload) {
                    apply_to(&mut self.deployments, s, e.map_err(fail)?);
                }
            }
            Some("policy") => {
                if let Some(e) = PolicyEvent::from_json(t, json()?) {
                    apply_to(&mut self.policies, s, e.map_err(fail)?);
                }
            }
            _ => tracing::debug!(
                event_type = t,
                "not an event of a context the command path decides"
            ),
        }
        match self.versions.get_mut(s) {
            Some(v) => *v = env.stream_version,
            None => {
                self.versions.insert(s.to_owned(), env.stream_version);
            }
        }
        if let Some(id) = env.causation_id {
            self.remember_command(s, id);
        }
        Ok(())
    }

    fn remember_command(&mut self, stream: &str, id: &str) {
        match self.commands.get_mut(stream) {
            Some(ids) => {
                if !ids.contains(id) {
                    ids.insert(id.to_owned());
                }
            }
            None => {
                self.commands
                    .insert(stream.to_owned(), std::iter::once(id.to_owned()).collect());
            }
        }
    }

    /// Every aggregate whose stream passes `keep`, as canonical JSON: stream → `{"version",
    /// "state"}`, in stream order with object keys sorted, so equal states serialise equally.
    pub fn snapshot(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, serde_json::Value> {
        fn add<A: serde::Serialize>(
            out: &mut BTreeMap<String, serde_json::Value>,
            versions: &HashMap<String, u64>,
            map: &HashMap<String, A>,
            keep: &dyn Fn(&str) -> bool,
        ) {
            for (stream, agg) in map {
                if keep(stream) {
                    let state = serde_json::to_value(agg)
                        .unwrap_or_else(|e| serde_json::json!({ "unserialisable": e.to_string() }));
                    let version = versions.get(stream).copied().unwrap_or(0);
                    out.insert(
                        stream.clone(),
                        serde_json::json!({ "version": version, "state": state }),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        let v = &self.versions;
        add(&mut out, v, &self.tenants, &keep);
        add(&mut out, v, &self.sources, &keep);
        add(&mut out, v, &self.invoices, &keep);
        add(&mut out, v, &self.budgets, &keep);
        add(&mut out, v, &self.model_versions, &keep);
        add(&mut out, v, &self.deployments, &keep);
        add(&mut out, v, &self.policies, &keep);
        add(&mut out, v, &self.contacts, &keep);
        add(&mut out, v, &self.retentions, &keep);
        out
    }

    /// The tenants of this partition and their `limits.rate_per_second`.
    pub fn tenant_rates(&self) -> impl Iterator<Item = (&str, u64)> {
        self.tenants.iter().filter_map(|(stream, t)| {
            let rate = u64::try_from(t.limits.as_ref()?.rate_per_second).ok()?;
            Some((stream.strip_prefix("tenancy.Tenant/")?, rate))
        })
    }

    fn tenant_status(&self, tenant: &str) -> TenantStatus {
        self.tenants
            .get(&annals_domain::tenancy::stream(tenant))
            .map_or(TenantStatus::Unknown, |t| t.status)
    }

    /// Decides one command, appending its events (encoded, not yet positioned) to `out`. A
    /// command that fails leaves nothing in `out`; if its aggregate had already changed, the
    /// state is marked for a rebuild.
    pub(crate) fn decide(
        &mut self,
        rt: &Runtime,
        cmd: Command,
        meta: &CommandMeta,
        registry: &Registry,
        out: &mut Vec<NewEvent>,
    ) -> Result<Decided, CommandError> {
        let first = out.len();
        let result = self.decide_inner(rt, cmd, meta, registry, out);
        if let Err(e) = &result {
            if out.len() > first || matches!(e, CommandError::Unavailable(_)) {
                self.dirty = true;
            }
            out.truncate(first);
        }
        result
    }

    fn decide_inner(
        &mut self,
        rt: &Runtime,
        cmd: Command,
        meta: &CommandMeta,
        registry: &Registry,
        out: &mut Vec<NewEvent>,
    ) -> Result<Decided, CommandError> {
        let stream = cmd.stream();
        let tenant = cmd.tenant().to_owned();
        annals_domain::error::check_id("tenant", &tenant, 64)?;
        let from_version = self.versions.get(&stream).copied().unwrap_or(0);
        // A command sent again with the same id already took effect. (Signals need no such
        // check: each is deduplicated exactly by its own key.)
        if let (Some(id), false) = (&meta.command_id, matches!(cmd, Command::Ingest(_)))
            && self
                .commands
                .get(&stream)
                .is_some_and(|ids| ids.contains(id))
        {
            return Ok(Decided {
                stream,
                from_version,
                first: out.len(),
                event_types: Vec::new(),
                duplicates: 0,
                repeated: true,
            });
        }
        if let Some(expected) = meta.expected_version
            && expected != from_version
        {
            return Err(DomainError::conflict("version_conflict", format!("stream `{stream}` is at version {from_version}, not {expected}: read it again and retry")).into());
        }
        let status = self.tenant_status(&tenant);
        let shared = Shared {
            tenant: tenant.as_str().into(),
            stream: stream.as_str().into(),
            actor: meta.actor.as_str().into(),
            causation_id: meta.command_id.as_deref().map(Arc::from),
            correlation_id: meta.correlation_id.as_deref().map(Arc::from),
        };
        let mut emitted = Emitted {
            registry,
            stream: &stream,
            from_version,
            out,
            first: 0,
            event_types: Vec::new(),
            occurred_at: meta.occurred_at,
            shared,
            last_type: None,
        };
        emitted.first = emitted.out.len();
        let mut duplicates = 0;
        match cmd {
            Command::Tenancy { command, .. } => {
                let r = run(rt, &mut self.tenants, &stream, command, &());
                emitted.all(self.settle(r)?, None)?;
            }
            Command::Contact {
                contact_id,
                command,
                ..
            } => {
                if let ContactCommand::RegisterContact {
                    tenant: ct,
                    contact_id: cc,
                    ..
                } = &command
                {
                    same_address("tenant", ct, &tenant)?;
                    same_address("contact_id", cc, &contact_id)?;
                }
                let services = ContactServices { tenant: status };
                let r = run(rt, &mut self.contacts, &stream, command, &services);
                emitted.all(self.settle(r)?, None)?;
            }
            Command::Retention { command, .. } => {
                if let RetentionCommand::ReviewRetention(run) = &command {
                    same_address("tenant", &run.tenant, &tenant)?;
                }
                let services = RetentionServices { tenant: status };
                let r = run(rt, &mut self.retentions, &stream, command, &services);
                emitted.all(self.settle(r)?, None)?;
            }
            Command::Ingest(command) => {
                let IngestCommand::IngestSignals {
                    tenant: t,
                    source,
                    signals,
                } = command;
                let sent = signals.len() as u64;
                let limit = self
                    .tenants
                    .get(&annals_domain::tenancy::stream(&t))
                    .and_then(|x| x.limits.as_ref())
                    .map_or(usize::MAX, |l| l.max_sources as usize);
                let new_source = !self.sources.contains_key(&stream);
                let services = IngestServices {
                    tenant: status,
                    source_limit_reached: new_source
                        && self.sources_per_tenant.get(&t).copied().unwrap_or(0) >= limit,
                };
                let r = run(
                    rt,
                    &mut self.sources,
                    &stream,
                    IngestCommand::IngestSignals {
                        tenant: t.clone(),
                        source,
                        signals,
                    },
                    &services,
                );
                if new_source && self.sources.contains_key(&stream) {
                    *self.sources_per_tenant.entry(t).or_default() += 1;
                }
                let events = self.settle(r)?;
                duplicates = sent - events.len() as u64;
                for e in events {
                    // A signal happened at its own timestamp, not when the batch was sent.
                    let IngestEvent::SignalIngested(s) = &e;
                    let at = s.ts;
                    emitted.one(&e, Some(at))?;
                }
            }
            Command::Invoice {
                invoice_id,
                command,
                ..
            } => {
                if let InvoiceCommand::OpenInvoice {
                    tenant: ct,
                    invoice_id: ci,
                    ..
                } = &command
                {
                    same_address("tenant", ct, &tenant)?;
                    same_address("invoice_id", ci, &invoice_id)?;
                }
                let r = run(
                    rt,
                    &mut self.invoices,
                    &stream,
                    command,
                    &InvoiceServices {
                        tenant: status,
                        tenant_currency: None,
                    },
                );
                emitted.all(self.settle(r)?, None)?;
            }
            Command::Budget { month, command, .. } => {
                if let BudgetCommand::SetBudget {
                    tenant: ct,
                    month: cm,
                    ..
                } = &command
                {
                    same_address("tenant", ct, &tenant)?;
                    same_address("month", cm, &month)?;
                }
                let r = run(
                    rt,
                    &mut self.budgets,
                    &stream,
                    command,
                    &BudgetServices {
                        tenant: status,
                        tenant_currency: None,
                    },
                );
                emitted.all(self.settle(r)?, None)?;
            }
            Command::ModelVersion {
                model,
                version,
                command,
                ..
            } => {
                if let annals_domain::models::ModelVersionCommand::RegisterModelVersion {
                    tenant: ct,
                    model: cm,
                    version: cv,
                    ..
                } = &command
                {
                    same_address("tenant", ct, &tenant)?;
                    same_address("model", cm, &model)?;
                    same_address("version", cv, &version)?;
                }
                let r = run(
                    rt,
                    &mut self.model_versions,
                    &stream,
                    command,
                    &ModelVersionServices { tenant: status },
                );
                emitted.all(self.settle(r)?, None)?;
            }
            Command::Deployment {
                model,
                environment,
                command,
                ..
            } => {
                let named = match &command {
                    DeploymentCommand::Deploy {
                        tenant: ct,
                        model: cm,
                        environment: ce,
                        version,
                        ..
                    } => {
                        same_address("tenant", ct, &tenant)?;
                        same_address("model", cm, &model)?;
                        same_address("environment", ce, &environment)?;
                        Some(version.clone())
                    }
                    DeploymentCommand::ShiftTraffic { version, .. }
                    | DeploymentCommand::Promote { version } => Some(version.clone()),
                    DeploymentCommand::Rollback { to_version } => Some(to_version.clone()),
                    DeploymentCommand::Retire => None,
                };
                let version = named.as_deref().and_then(|v| {
                    self.model_versions
                        .get(&annals_domain::models::model_version_stream(
                            &tenant, &model, v,
                        ))
                });
                let services = DeploymentServices {
                    tenant: status,
                    version_registered: version.is_some_and(|v| v.registered.is_some()),
                    version_retired: version.is_some_and(|v| v.retired),
                };
                let r = run(rt, &mut self.deployments, &stream, command, &services);
                emitted.all(self.settle(r)?, None)?;
            }
            Command::Policy {
                policy_id, command, ..
            } => {
                if let annals_domain::policy::PolicyCommand::CreatePolicy {
                    tenant: ct,
                    policy_id: cp,
                    ..
                } = &command
                {
                    same_address("tenant", ct, &tenant)?;
                    same_address("policy_id", cp, &policy_id)?;
                }
                let r = run(
                    rt,
                    &mut self.policies,
                    &stream,
                    command,
                    &PolicyServices { tenant: status },
                );
                emitted.all(self.settle(r)?, None)?;
            }
        }
        let Emitted {
            first, event_types, ..
        } = emitted;
        if !event_types.is_empty() {
            self.versions
                .insert(stream.clone(), from_version + event_types.len() as u64);
            if let Some(id) = &meta.command_id {
                self.remember_command(&stream, id);
            }
        }
        Ok(Decided {
            stream,
            from_version,
            first,
            event_types,
            duplicates,
            repeated: false,
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

/// A command's address and the same field inside the command must agree.
fn same_address(field: &str, in_command: &str, in_address: &str) -> Result<(), DomainError> {
    if in_command == in_address {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!("`{field}` is {in_command:?} in the command but {in_address:?} in its address"),
        ))
    }
}

/// Runs a command on the aggregate of `stream` (a new one if the stream has no events yet);
/// keeps the aggregate only if it exists afterwards.
fn run<A: Aggregate<Error = DomainError>>(
    rt: &Runtime,
    map: &mut HashMap<String, A>,
    stream: &str,
    cmd: A::Command,
    services: &A::Services,
) -> (Result<(), DomainError>, Vec<A::Event>) {
    let existed = map.contains_key(stream);
    let mut agg = map.remove(stream).unwrap_or_default();
    let result = rt.block_on(async {
        let sink = EventSink::default();
        let result = agg.handle(cmd, services, &sink).await;
        (result, sink.collect().await)
    });
    if existed || !result.1.is_empty() {
        map.insert(stream.to_owned(), agg);
    }
    result
}

/// Collects the encoded events of one command.
struct Emitted<'a> {
    registry: &'a Registry,
    stream: &'a str,
    from_version: u64,
    out: &'a mut Vec<NewEvent>,
    first: usize,
    event_types: Vec<&'static str>,
    occurred_at: i64,
    /// The text every event of the command shares, allocated once.
    shared: Shared,
    /// The last event type's shared text (a command's events are mostly of one type).
    last_type: Option<(&'static str, Arc<str>)>,
}

struct Shared {
    tenant: Arc<str>,
    stream: Arc<str>,
    actor: Arc<str>,
    causation_id: Option<Arc<str>>,
    correlation_id: Option<Arc<str>>,
}

impl Emitted<'_> {
    fn all<E: Payload>(
        &mut self,
        events: Vec<E>,
        occurred_at: Option<i64>,
    ) -> Result<(), CommandError> {
        for e in &events {
            self.one(e, occurred_at)?;
        }
        Ok(())
    }

    fn one<E: Payload>(&mut self, event: &E, occurred_at: Option<i64>) -> Result<(), CommandError> {
        let (schema_id, payload) = event.encode(self.registry).map_err(|e| {
            CommandError::unavailable(format!(
                "an event of `{}` does not fit its schema: {e}",
                self.stream
            ))
        })?;
        let kind = event.event_type();
        self.event_types.push(kind);
        let event_type = match &self.last_type {
            Some((k, shared)) if *k == kind => shared.clone(),
            _ => {
                let shared: Arc<str> = kind.into();
                self.last_type = Some((kind, shared.clone()));
                shared
            }
        };
        self.out.push(NewEvent {
            event_id: uuid::Uuid::now_v7(),
            tenant: self.shared.tenant.clone(),
            stream: self.shared.stream.clone(),
            stream_version: self.from_version + self.event_types.len() as u64,
            event_type,
            schema_id,
            occurred_at: occurred_at.unwrap_or(self.occurred_at),
            actor: self.shared.actor.clone(),
            causation_id: self.shared.causation_id.clone(),
            correlation_id: self.shared.correlation_id.clone(),
            payload,
        });
        Ok(())
    }
}
