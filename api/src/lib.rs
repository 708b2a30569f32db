//! annals-api: the HTTP interface of `annals serve`.
//!
//! Owns: the routes and their JSON (and NDJSON) bodies ([`dto`]), turning requests into
//! [`annals_processors::Command`]s with their [`CommandMeta`] (idempotency key, actor,
//! correlation id, `If-Match` version), bearer-token auth and scopes ([`auth`]), the per-tenant
//! rate limit on signals ([`limits`]), the one error shape `{"error": {code, message, field}}`
//! ([`error`]), stream history reads from the log, Prometheus metrics and the OpenAPI document
//! generated from the handlers ([`openapi`]).
//!
//! Must not: hold business rules. Whether a command is accepted is the aggregates' decision (in
//! `annals-domain`, run by the engine); this crate only parses, authenticates, checks request
//! shape and limits, calls the engine and translates its answer into HTTP. It never calls the
//! engine's blocking functions from async code, and scans the log on blocking threads.

pub mod auth;
pub mod body;
pub mod dto;
pub mod error;
pub mod limits;
pub mod openapi;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annals_events::Log;
use annals_processors::{CommandMeta, CommandPath};
use annals_schemas::Registry;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;

pub use auth::{ApiToken, AuthConfig, Caller, SCOPES};
pub use error::{ApiError, ErrorBody};

/// The topic the command path writes to.
pub const EVENTS_TOPIC: &str = "events";

/// Server settings from `[server]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auth: AuthConfig,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Signals per tenant per second; the burst is one second's worth.
    pub rate_per_second: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auth: AuthConfig::default(),
            max_body_bytes: 16 << 20,
            rate_per_second: 200_000,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: CommandPath,
    log: Arc<Log>,
    registry: Arc<Registry>,
    tokens: auth::Tokens,
    rate: limits::RateLimiter,
    max_body_bytes: usize,
    ready: AtomicBool,
    /// More Prometheus text for `/metrics` (e.g. projection lag), from the embedding program.
    extra_metrics: std::sync::OnceLock<MetricsSource>,
    /// The subject key store, for erasure and export (the registry seals with the same one).
    subject_keys: std::sync::OnceLock<annals_audit::SubjectKeys>,
    /// Called after a subject's key was deleted (the server then purges the read models).
    on_erased: std::sync::OnceLock<ErasedHook>,
}

/// What the embedding program does once a subject is erased.
pub type ErasedHook = Arc<dyn Fn() + Send + Sync>;

/// Renders Prometheus text exposition lines (with their `# HELP` and `# TYPE`).
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

impl AppState {
    /// `engine` must decide commands for `log`'s `events` topic (its own engine, or the
    /// processors behind the Kafka command bus).
    pub fn new(
        engine: impl Into<CommandPath>,
        log: Arc<Log>,
        registry: Arc<Registry>,
        settings: &Settings,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                engine: engine.into(),
                log,
                registry,
                tokens: auth::Tokens::new(&settings.auth),
                rate: limits::RateLimiter::new(settings.rate_per_second),
                max_body_bytes: settings.max_body_bytes,
                ready: AtomicBool::new(true),
                extra_metrics: std::sync::OnceLock::new(),
                subject_keys: std::sync::OnceLock::new(),
                on_erased: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Gives the server the subject key store (the one the engine's registry seals with), so
    /// it can erase subjects and export what it holds about them.
    pub fn set_subject_keys(&self, keys: annals_audit::SubjectKeys) {
        self.inner.subject_keys.set(keys).ok();
    }

    /// Runs `hook` after every erasure (e.g. to purge old copies from the read models).
    pub fn on_erased(&self, hook: ErasedHook) {
        self.inner.on_erased.set(hook).ok();
    }

    pub(crate) fn erased(&self) {
        if let Some(hook) = self.inner.on_erased.get() {
            hook();
        }
    }

    pub(crate) fn subject_keys(&self) -> Result<annals_audit::SubjectKeys, ApiError> {
        self.inner.subject_keys.get().cloned().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "no_key_store",
                "this server has no subject key store; start it with `annals serve`",
            )
        })
    }

    /// Appends what `source` renders to `/metrics` (the first source set stays).
    pub fn add_metrics(&self, source: MetricsSource) {
        self.inner.extra_metrics.set(source).ok();
    }

    /// Marks the server as not ready (`/ready` answers 503), e.g. while it shuts down.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Relaxed);
    }

    pub fn engine(&self) -> &CommandPath {
        &self.inner.engine
    }
}

/// All routes, with the body limit and the JSON fallbacks for unknown paths and methods.
pub fn router(state: AppState) -> Router {
    let max = state.inner.max_body_bytes;
    routes::routes()
        .layer(DefaultBodyLimit::max(max))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting, marks the server not ready and
/// drains the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let flag = state.clone();
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            flag.set_ready(false);
            tracing::info!("shutting down: draining requests in flight");
        })
        .await
}

/// The command metadata of a request: `Idempotency-Key` (or `X-Command-Id`),
/// `X-Correlation-Id`, `If-Match`, the caller as actor, and now as `occurred_at`.
pub fn command_meta(headers: &HeaderMap, caller: &Caller) -> Result<CommandMeta, ApiError> {
    let text = |name: &'static str| -> Result<Option<String>, ApiError> {
        let Some(v) = headers.get(name) else {
            return Ok(None);
        };
        let s = v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_header",
                    format!("header {name} must be 1 to 256 visible ASCII characters"),
                )
                .with_field(name)
            })?;
        Ok(Some(s.to_owned()))
    };
    let command_id = match text("Idempotency-Key")? {
        Some(id) => Some(id),
        None => text("X-Command-Id")?,
    };
    let expected_version = match text("If-Match")? {
        None => None,
        Some(v) => Some(v.trim_matches('"').parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "bad_header",
                format!(
                    "If-Match must be the stream version you last saw, a number (e.g. `If-Match: 3`), got {v:?}"
                ),
            )
            .with_field("If-Match")
        })?),
    };
    Ok(CommandMeta {
        command_id,
        actor: caller.actor().to_owned(),
        correlation_id: text("X-Correlation-Id")?,
        expected_version,
        occurred_at: annals_events::time::now_micros(),
    })
}
