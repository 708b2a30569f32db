//! The test server: the API over real HTTP on 127.0.0.1:0, over an embedded log in a temp dir.

#![allow(dead_code)]

use std::sync::Arc;

use annals_api::{ApiToken, AppState, AuthConfig, Settings};
use annals_events::{Log, LogConfig};
use annals_processors::Engine;
use annals_schemas::Registry;
pub use reqwest::StatusCode;
pub use serde_json::{Value, json};

pub const OPERATOR: &str = "operator-token-0123456789";
/// acme: signals:write and audit:read.
pub const ACME: &str = "acme-ingest-token-000001";
/// acme: signals:write only.
pub const ACME_WRITE_ONLY: &str = "acme-write-only-token-01";
/// acme: billing:write, models:write, policy:admin, privacy:admin and audit:read.
pub const ACME_ADMIN: &str = "acme-admin-token-0000001";
/// acme: billing:write only.
pub const ACME_BILLING: &str = "acme-billing-token-00001";
/// globex: every scope.
pub const GLOBEX: &str = "globex-token-00000000001";
pub const MAX_BODY: usize = 64 * 1024;

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pub log: Arc<Log>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

fn token(name: &str, token: &str, tenant: &str, scopes: &[&str]) -> ApiToken {
    ApiToken {
        name: name.into(),
        token: token.into(),
        tenant: tenant.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

pub async fn start_with(rate_per_second: u64, max_body_bytes: usize) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    // Opening the log and starting the engine block: not on the async threads.
    let (engine, log, registry) = tokio::task::spawn_blocking(move || {
        let keys = annals_audit::SubjectKeys::open(&data);
        let registry = Arc::new(Registry::builtin().unwrap().with_sealer(Arc::new(keys)));
        let log = Arc::new(Log::open(&data, LogConfig::default()).unwrap());
        let topic = log.create_topic("events", 2).unwrap();
        let engine = Arc::new(Engine::start(topic, registry.clone()).unwrap());
        (engine, log, registry)
    })
    .await
    .unwrap();
    let settings = Settings {
        auth: AuthConfig {
            operator_token: Some(OPERATOR.into()),
            tokens: vec![
                token(
                    "acme-ingest",
                    ACME,
                    "acme",
                    &["signals:write", "audit:read"],
                ),
                token("acme-writer", ACME_WRITE_ONLY, "acme", &["signals:write"]),
                token(
                    "acme-admin",
                    ACME_ADMIN,
                    "acme",
                    &[
                        "billing:write",
                        "models:write",
                        "policy:admin",
                        "privacy:admin",
                        "audit:read",
                    ],
                ),
                token("acme-billing", ACME_BILLING, "acme", &["billing:write"]),
                token("globex-admin", GLOBEX, "globex", &annals_api::SCOPES),
            ],
        },
        max_body_bytes,
        rate_per_second,
    };
    settings.auth.validate().unwrap();
    let state = AppState::new(engine, log.clone(), registry, &settings);
    state.set_subject_keys(annals_audit::SubjectKeys::open(dir.path()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(annals_api::serve(listener, state, async move {
        stopped.await.ok();
    }));
    Server {
        base,
        http: reqwest::Client::new(),
        log,
        stop: Some(stop),
        task: Some(task),
        _dir: dir,
    }
}

pub async fn start() -> Server {
    start_with(1_000_000, MAX_BODY).await
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Events in the log, over all partitions.
    pub fn head(&self) -> u64 {
        self.log
            .topic("events")
            .unwrap()
            .partitions()
            .iter()
            .map(|p| p.head().next_seq)
            .sum()
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, body)
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.put(self.url(path)).bearer_auth(token).json(&body))
            .await
    }

    /// Sends a command that must write events: 201, and the body.
    pub async fn created(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, out) = self.post(path, token, body).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {out}");
        assert!(!out["events"].as_array().unwrap().is_empty(), "{out}");
        out
    }

    /// Sends a command that must be an idempotent repeat: 200 and no events.
    pub async fn repeated(&self, path: &str, token: &str, body: Value) -> Value {
        let before = self.head();
        let (status, out) = self.post(path, token, body).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {out}");
        assert_eq!(out["events"], json!([]), "{out}");
        assert_eq!(self.head(), before);
        out
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(token))
            .await
    }

    pub async fn provision(&self, tenant: &str) {
        let (status, body) = self
            .post("/v1/tenants", OPERATOR, provision_body(tenant))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Expects a refusal with `status` and `code`, and checks it wrote nothing.
    pub async fn refused(
        &self,
        req: reqwest::RequestBuilder,
        status: StatusCode,
        code: &str,
    ) -> Value {
        let before = self.head();
        let (got, body) = self.send(req).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(
            self.head(),
            before,
            "a refused request wrote events: {body}"
        );
        body
    }

    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).ok();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub fn provision_body(tenant: &str) -> Value {
    json!({
        "tenant": tenant,
        "name": format!("{tenant} Inc."),
        "plan": "growth",
        "region": "eu-west-1",
        "limits": {"max_signals_per_day": 1_000_000, "max_sources": 10, "rate_per_second": 1000}
    })
}

pub fn signal(source: &str, id: &str, ts: i64) -> Value {
    json!({"source": source, "signal_id": id, "ts": ts, "attributes": {"k": "v"}, "value": 1.5, "unit": "ms"})
}
