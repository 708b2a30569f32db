//! Policy: a tenant's versioned access policies, their recorded decisions, and dry runs of
//! candidate rules against those decisions. Scope `policy:admin`.

use annals_domain::Payload;
use annals_domain::policy::{
    self, PolicyCommand, PolicyDecisionRecorded, PolicyEvent, Request, validate_rules,
};
use annals_events::{EnvelopeRef, time};
use annals_processors::{Command, CommandError, CommandMeta};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{Body, bad_path, execute, parse, written_status};
use crate::auth::Caller;
use crate::dto::{
    ActivatePolicyRequest, ChangePolicyRequest, CommandHeaders, CommandResponse,
    CreatePolicyRequest, DecisionResponse, DryRunRequest, DryRunResponse, FlipDto,
    RecordDecisionRequest, RollBackPolicyRequest, rules,
};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, command_meta};

/// The scope every policy route needs.
pub const SCOPE: &str = "policy:admin";

/// The event type of a recorded decision.
const DECISION_RECORDED: &str = "policy.PolicyDecisionRecorded";

type Answer = Result<(StatusCode, Json<CommandResponse>), ApiError>;
type PolicyPath = Result<Path<(String, String)>, PathRejection>;

async fn run(
    state: &AppState,
    meta: CommandMeta,
    (tenant, policy_id): (String, String),
    command: PolicyCommand,
) -> Answer {
    let command = Command::Policy {
        tenant,
        policy_id,
        command,
    };
    execute(state, meta, command).await
}

/// Creates a policy with its first version (not active until activated). Idempotent: the same
/// again answers 200 with no events.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policies", tag = "policy",
    request_body = CreatePolicyRequest,
    params(("tenant" = String, Path, description = "Tenant id"), CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created as version 1", body = CommandResponse),
        (status = 200, description = "Exists exactly so already; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `policy:admin` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "Exists with other rules (`policy_exists`), or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid (e.g. `rules[2].rule_id`); `field` names it", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path(tenant) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: CreatePolicyRequest = parse(&state, &headers, raw)?;
    let command = PolicyCommand::CreatePolicy {
        tenant: tenant.clone(),
        policy_id: req.policy_id.clone(),
        rules: rules(req.rules),
    };
    run(&state, meta, (tenant, req.policy_id), command).await
}

/// Adds a new version of the policy with these rules (not active until activated). The rules
/// of the latest version again answer 200 with no events.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/policies/{policy_id}", tag = "policy",
    request_body = ChangePolicyRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("policy_id" = String, Path, description = "Policy id"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A new version", body = CommandResponse),
        (status = 200, description = "The latest version has these rules; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `policy:admin` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or policy", body = ErrorBody),
        (status = 409, description = "Version conflict", body = ErrorBody),
        (status = 422, description = "A rule is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    path: PolicyPath,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path(address) = path.map_err(bad_path)?;
    caller.require(&address.0, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: ChangePolicyRequest = parse(&state, &headers, raw)?;
    let command = PolicyCommand::ChangePolicy {
        rules: rules(req.rules),
    };
    run(&state, meta, address, command).await
}

/// Makes a version newer than the active one (or the first) active.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policies/{policy_id}/activate", tag = "policy",
    request_body = ActivatePolicyRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("policy_id" = String, Path, description = "Policy id"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Activated", body = CommandResponse),
        (status = 200, description = "Already the active version; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `policy:admin` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant, policy or version", body = ErrorBody),
        (status = 409, description = "Older than the active version (`version_not_newer`: roll back instead), or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    path: PolicyPath,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path(address) = path.map_err(bad_path)?;
    caller.require(&address.0, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: ActivatePolicyRequest = parse(&state, &headers, raw)?;
    let command = PolicyCommand::ActivateVersion {
        version: req.version,
    };
    run(&state, meta, address, command).await
}

/// Makes a version older than the active one active again.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policies/{policy_id}/rollback", tag = "policy",
    request_body = RollBackPolicyRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("policy_id" = String, Path, description = "Policy id"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Rolled back", body = CommandResponse),
        (status = 200, description = "Already the active version; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `policy:admin` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant, policy or version", body = ErrorBody),
        (status = 409, description = "No active version, newer than the active one, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    path: PolicyPath,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path(address) = path.map_err(bad_path)?;
    caller.require(&address.0, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: RollBackPolicyRequest = parse(&state, &headers, raw)?;
    let command = PolicyCommand::RollBack {
        to_version: req.to_version,
    };
    run(&state, meta, address, command).await
}

/// Decides an access request with the policy's active version and records the decision.
///
/// The answer's `decision`, `matched_rule` and `policy_version` are read back from the
/// `policy.PolicyDecisionRecorded` event written (by its partition and seq), so they are
/// exactly what the log holds. Every call records a decision, except a retry with an
/// `Idempotency-Key` already used for a decision on this policy: it writes nothing and answers
/// 200 with the decision recorded the first time.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policies/{policy_id}/decisions", tag = "policy",
    request_body = RecordDecisionRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("policy_id" = String, Path, description = "Policy id"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Decided and recorded", body = DecisionResponse),
        (status = 200, description = "A retry (same Idempotency-Key): the decision recorded then; nothing written", body = DecisionResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `policy:admin` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or policy", body = ErrorBody),
        (status = 409, description = "No active version (`policy_not_active`), an Idempotency-Key used for another command (`command_id_reused`), or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid (e.g. `request.action`); `field` names it", body = ErrorBody),
    ))]
pub async fn record_decision(
    State(state): State<AppState>,
    caller: Caller,
    path: PolicyPath,
    headers: HeaderMap,
    raw: Body,
) -> Result<(StatusCode, Json<DecisionResponse>), ApiError> {
    let Path((tenant, policy_id)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: RecordDecisionRequest = parse(&state, &headers, raw)?;
    let command_id = meta.command_id.clone();
    let command = Command::Policy {
        tenant: tenant.clone(),
        policy_id: policy_id.clone(),
        command: PolicyCommand::RecordDecision {
            request: req.request.into(),
            decided_at: req.decided_at.map_or(meta.occurred_at, |t| t.micros()),
        },
    };
    let outcome = state.inner.engine.execute(command, meta).await?;
    let status = written_status(&outcome);
    let read_state = state.clone();
    let recorded = match (&command_id, outcome.repeated) {
        // A retry of a recorded decision: answer with the decision it recorded then.
        (Some(id), true) => {
            let id = id.clone();
            let stream = outcome.stream.clone();
            let found = tokio::task::spawn_blocking(move || {
                find_decision(&read_state, &tenant, &stream, &id)
            })
            .await
            .map_err(|e| ApiError::internal(format!("reading the decision failed: {e}")))??;
            found.ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "command_id_reused",
                    format!(
                        "command id {:?} was already used on policy `{policy_id}` for a command that is not a decision; use a new Idempotency-Key for each decision",
                        command_id.as_deref().unwrap_or_default()
                    ),
                )
                .with_field("Idempotency-Key")
            })?
        }
        _ => {
            let Some(written) = outcome
                .events
                .iter()
                .find(|w| w.event_type == DECISION_RECORDED)
            else {
                return Err(ApiError::internal(
                    "the decision was accepted but no policy.PolicyDecisionRecorded event was written",
                ));
            };
            let (partition, seq) = (written.partition, written.seq);
            tokio::task::spawn_blocking(move || read_decision(&read_state, partition, seq))
                .await
                .map_err(|e| ApiError::internal(format!("reading the decision failed: {e}")))??
        }
    };
    let out: CommandResponse = outcome.into();
    Ok((
        status,
        Json(DecisionResponse {
            stream: out.stream,
            stream_version: out.stream_version,
            events: out.events,
            decision: recorded.decision.into(),
            matched_rule: recorded.matched_rule,
            policy_version: recorded.version,
            decided_at: recorded.decided_at,
        }),
    ))
}

/// The decision `command_id` recorded on `stream`, read from the tenant's partition (from its
/// start: a retry is rare), or `None` if that command wrote no decision.
fn find_decision(
    state: &AppState,
    tenant: &str,
    stream: &str,
    command_id: &str,
) -> Result<Option<PolicyDecisionRecorded>, ApiError> {
    let partition = state.inner.engine.topic().partition_for(tenant);
    let mut reader = partition.reader(0);
    while let Some(env) = reader
        .next_ref()
        .map_err(|e| ApiError::internal(format!("cannot read the log: {e}")))?
    {
        if env.stream == stream
            && env.tenant == tenant
            && env.causation_id == Some(command_id)
            && let Some(decision) = decode_decision(state, &env)?
        {
            return Ok(Some(decision));
        }
    }
    Ok(None)
}

/// The decision event at `seq` of `partition`, decoded with the registry.
fn read_decision(
    state: &AppState,
    partition: u32,
    seq: u64,
) -> Result<PolicyDecisionRecorded, ApiError> {
    let read_error = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!(
            "cannot read the decision at partition {partition}, seq {seq}: {e}"
        ))
    };
    let topic = state.inner.engine.topic();
    let partition_log = topic.partition(partition).map_err(|e| read_error(&e))?;
    let mut reader = partition_log.reader(seq);
    let env = reader
        .next_ref()
        .map_err(|e| read_error(&e))?
        .ok_or_else(|| read_error(&"it is not in the log"))?;
    if env.seq != seq {
        return Err(read_error(&format!("the reader returned seq {}", env.seq)));
    }
    decode_decision(state, &env)?.ok_or_else(|| {
        read_error(&format!(
            "it is a {}, not a {DECISION_RECORDED}",
            env.event_type
        ))
    })
}

/// The decision an envelope holds, or `None` if it is not a recorded decision.
fn decode_decision(
    state: &AppState,
    env: &EnvelopeRef<'_>,
) -> Result<Option<PolicyDecisionRecorded>, ApiError> {
    if env.event_type != DECISION_RECORDED {
        return Ok(None);
    }
    let fail = |e: String| {
        ApiError::internal(format!(
            "event at partition {}, seq {}: {e}",
            env.partition, env.seq
        ))
    };
    let payload = state
        .inner
        .registry
        .decode_json(env.schema_id, env.payload)
        .map_err(|e| fail(e.to_string()))?;
    match PolicyEvent::from_json(env.event_type, payload) {
        Some(Ok(PolicyEvent::PolicyDecisionRecorded(d))) => Ok(Some(d)),
        Some(Ok(_)) | None => Ok(None),
        Some(Err(e)) => Err(fail(e)),
    }
}

/// Dry run: which recorded decisions a candidate rule set would flip. Nothing is written.
///
/// Reads the tenant's partition from the first event recorded at or after `from` (found through
/// the log's time index, without scanning from the start) up to `to`, keeps the policy's
/// `policy.PolicyDecisionRecorded` events whose envelope `recorded_at` (the time the log wrote
/// them, not the payload's `decided_at`) is in `[from, to)`, and decides each recorded request
/// again with the candidate rules. `flips` lists every decision that comes out the other way.
/// A policy without recorded decisions in the window (or without any) gives `evaluated: 0`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policies/{policy_id}/dry-run", tag = "policy",
    request_body = DryRunRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("policy_id" = String, Path, description = "Policy id"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decisions evaluated and those that would flip", body = DryRunResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token or no `policy:admin` scope", body = ErrorBody),
        (status = 422, description = "A candidate rule or the window is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn dry_run(
    State(state): State<AppState>,
    caller: Caller,
    path: PolicyPath,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<DryRunResponse>, ApiError> {
    let Path((tenant, policy_id)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let req: DryRunRequest = parse(&state, &headers, raw)?;
    let candidate = rules(req.rules);
    validate_rules(&candidate).map_err(|e| ApiError::from(CommandError::Refused(e)))?;
    let from = req.from.map_or(0, |t| t.micros());
    let to = req.to.map_or_else(time::now_micros, |t| t.micros());
    if to < from {
        return Err(ApiError::invalid(
            "to",
            format!(
                "`to` ({}) is before `from` ({}): the window is [from, to)",
                time::format_micros(to),
                time::format_micros(from)
            ),
        ));
    }
    let scan_state = state.clone();
    let stream = policy::stream(&tenant, &policy_id);
    let recorded = tokio::task::spawn_blocking(move || {
        scan_decisions(&scan_state, &tenant, &stream, from, to)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the decision scan failed: {e}")))??;
    let pairs: Vec<(Request, _)> = recorded
        .iter()
        .map(|r| (r.decision.request.clone(), r.decision.decision))
        .collect();
    let flips = policy::dry_run(&candidate, &pairs)
        .into_iter()
        .map(|flip| {
            let r = &recorded[flip.index];
            FlipDto {
                index: flip.index,
                event_id: r.event_id.clone(),
                partition: r.partition,
                seq: r.seq,
                recorded_at: time::format_micros(r.recorded_at),
                decided_at: r.decision.decided_at,
                policy_version: r.decision.version,
                request: flip.request.into(),
                recorded: flip.recorded.into(),
                recorded_rule: r.decision.matched_rule.clone(),
                candidate: flip.candidate.decision.into(),
                candidate_rule: flip.candidate.matched_rule,
            }
        })
        .collect();
    Ok(Json(DryRunResponse {
        policy_id,
        from,
        to,
        evaluated: recorded.len() as u64,
        flips,
    }))
}

/// A recorded decision and where it is in the log.
struct Recorded {
    event_id: String,
    partition: u32,
    seq: u64,
    recorded_at: i64,
    decision: PolicyDecisionRecorded,
}

/// The decisions of `stream` recorded in `[from, to)`, in log order.
fn scan_decisions(
    state: &AppState,
    tenant: &str,
    stream: &str,
    from: i64,
    to: i64,
) -> Result<Vec<Recorded>, ApiError> {
    let read_error =
        |e: annals_events::LogError| ApiError::internal(format!("cannot read the log: {e}"));
    let partition = state.inner.engine.topic().partition_for(tenant);
    let start = partition.seq_at_time(from).map_err(read_error)?;
    let mut reader = partition.reader(start);
    let mut out = Vec::new();
    while let Some(env) = reader.next_ref().map_err(read_error)? {
        // `recorded_at` never decreases along a partition: nothing later is in the window.
        if env.recorded_at >= to {
            break;
        }
        if env.recorded_at < from || env.stream != stream || env.tenant != tenant {
            continue;
        }
        if let Some(decision) = decode_decision(state, &env)? {
            out.push(Recorded {
                event_id: env.to_owned().event_id.to_string(),
                partition: env.partition,
                seq: env.seq,
                recorded_at: env.recorded_at,
                decision,
            });
        }
    }
    Ok(out)
}
