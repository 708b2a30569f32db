//! Models: a tenant's model versions and their deployments to environments. Scope
//! `models:write`.

use annals_domain::models::{DeploymentCommand, ModelVersionCommand};
use annals_processors::{Command, CommandMeta};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{Body, bad_path, execute, parse};
use crate::auth::Caller;
use crate::dto::{
    CommandHeaders, CommandResponse, DeployRequest, PromoteRequest, RegisterModelVersionRequest,
    RollbackDeploymentRequest, ShiftTrafficRequest,
};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, command_meta};

/// The scope every models route needs.
pub const SCOPE: &str = "models:write";

type Answer = Result<(StatusCode, Json<CommandResponse>), ApiError>;
type EnvironmentPath = Result<Path<(String, String, String)>, PathRejection>;

/// Runs `command` on the deployment of `model` to `environment` of `tenant`.
async fn deployment(
    state: &AppState,
    meta: CommandMeta,
    (tenant, model, environment): (String, String, String),
    command: DeploymentCommand,
) -> Answer {
    let command = Command::Deployment {
        tenant,
        model,
        environment,
        command,
    };
    execute(state, meta, command).await
}

/// Registers a version of a model with its artifact digest and metrics. Idempotent: the same
/// again answers 200 with no events.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/models/{model}/versions", tag = "models",
    request_body = RegisterModelVersionRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("model" = String, Path, description = "Model name"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = CommandResponse),
        (status = 200, description = "Registered exactly so already; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `models:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "Registered with another artifact or metrics, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid (e.g. `artifact_digest`); `field` names it", body = ErrorBody),
    ))]
pub async fn register_version(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, model)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: RegisterModelVersionRequest = parse(&state, &headers, raw)?;
    let command = Command::ModelVersion {
        tenant: tenant.clone(),
        model: model.clone(),
        version: req.version.clone(),
        command: ModelVersionCommand::RegisterModelVersion {
            tenant,
            model,
            version: req.version,
            artifact_digest: req.artifact_digest,
            metrics: req.metrics,
        },
    };
    execute(&state, meta, command).await
}

/// Retires a model version: it can no longer be deployed or given more traffic. No body.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/models/{model}/versions/{version}/retire", tag = "models",
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("model" = String, Path, description = "Model name"),
        ("version" = String, Path, description = "Model version"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Retired", body = CommandResponse),
        (status = 200, description = "Already retired; nothing written", body = CommandResponse),
        (status = 400, description = "Bad header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `models:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or model version", body = ErrorBody),
        (status = 409, description = "Version conflict", body = ErrorBody),
    ))]
pub async fn retire_version(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Answer {
    let Path((tenant, model, version)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let command = Command::ModelVersion {
        tenant,
        model,
        version,
        command: ModelVersionCommand::RetireModelVersion,
    };
    execute(&state, meta, command).await
}

/// Deploys a registered version to an environment: with 100 % it replaces whatever served;
/// below 100 % it runs as a canary beside the one stable version.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/models/{model}/environments/{environment}/deploy", tag = "models",
    request_body = DeployRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("model" = String, Path, description = "Model name"),
        ("environment" = String, Path, description = "Environment, e.g. `prod`"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Deployed", body = CommandResponse),
        (status = 200, description = "The version already serves that share; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `models:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant, or the version is not registered (`unknown_model_version`)", body = ErrorBody),
        (status = 409, description = "Version retired, a canary already running, already serving another share, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    path: EnvironmentPath,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, model, environment)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: DeployRequest = parse(&state, &headers, raw)?;
    let command = DeploymentCommand::Deploy {
        tenant: tenant.clone(),
        model: model.clone(),
        version: req.version,
        environment: environment.clone(),
        traffic_pct: req.traffic_pct,
    };
    deployment(&state, meta, (tenant, model, environment), command).await
}

/// Sets a serving version's share while a canary runs; the other serving version gets the
/// rest. A share of 0 stops the version serving.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/models/{model}/environments/{environment}/shift", tag = "models",
    request_body = ShiftTrafficRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("model" = String, Path, description = "Model name"),
        ("environment" = String, Path, description = "Environment"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Shifted", body = CommandResponse),
        (status = 200, description = "The version already has that share; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `models:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or deployment", body = ErrorBody),
        (status = 409, description = "The version does not serve, no canary, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn shift_traffic(
    State(state): State<AppState>,
    caller: Caller,
    path: EnvironmentPath,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path(address) = path.map_err(bad_path)?;
    caller.require(&address.0, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: ShiftTrafficRequest = parse(&state, &headers, raw)?;
    let command = DeploymentCommand::ShiftTraffic {
        version: req.version,
        traffic_pct: req.traffic_pct,
    };
    deployment(&state, meta, address, command).await
}

/// Gives a serving version all the traffic.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/models/{model}/environments/{environment}/promote", tag = "models",
    request_body = PromoteRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("model" = String, Path, description = "Model name"),
        ("environment" = String, Path, description = "Environment"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Promoted", body = CommandResponse),
        (status = 200, description = "It already has all the traffic; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `models:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or deployment", body = ErrorBody),
        (status = 409, description = "The version does not serve or is retired, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    path: EnvironmentPath,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path(address) = path.map_err(bad_path)?;
    caller.require(&address.0, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: PromoteRequest = parse(&state, &headers, raw)?;
    let command = DeploymentCommand::Promote {
        version: req.version,
    };
    deployment(&state, meta, address, command).await
}

/// Gives all the traffic back to a version that served in this environment before.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/models/{model}/environments/{environment}/rollback", tag = "models",
    request_body = RollbackDeploymentRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("model" = String, Path, description = "Model name"),
        ("environment" = String, Path, description = "Environment"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Rolled back", body = CommandResponse),
        (status = 200, description = "It already has all the traffic; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `models:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or deployment", body = ErrorBody),
        (status = 409, description = "Never deployed here (`never_deployed`), retired, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    path: EnvironmentPath,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path(address) = path.map_err(bad_path)?;
    caller.require(&address.0, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: RollbackDeploymentRequest = parse(&state, &headers, raw)?;
    let command = DeploymentCommand::Rollback {
        to_version: req.to_version,
    };
    deployment(&state, meta, address, command).await
}

/// Stops serving the model in this environment. No body.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/models/{model}/environments/{environment}/retire", tag = "models",
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("model" = String, Path, description = "Model name"),
        ("environment" = String, Path, description = "Environment"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Retired", body = CommandResponse),
        (status = 200, description = "Serves nothing already; nothing written", body = CommandResponse),
        (status = 400, description = "Bad header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `models:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or deployment", body = ErrorBody),
        (status = 409, description = "Version conflict", body = ErrorBody),
    ))]
pub async fn retire_deployment(
    State(state): State<AppState>,
    caller: Caller,
    path: EnvironmentPath,
    headers: HeaderMap,
) -> Answer {
    let Path(address) = path.map_err(bad_path)?;
    caller.require(&address.0, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    deployment(&state, meta, address, DeploymentCommand::Retire).await
}
