//! `annals.toml`: defaults, then the file, then `ANNALS__SECTION__KEY` environment overrides,
//! layered here in one place, then a pure `validate` step before anything is opened.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration. Unknown keys are refused, so a typo is an error, not a silent default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogSection,
    pub read_models: ReadModels,
    pub server: Server,
    pub audit: Audit,
    pub privacy: Privacy,
    /// `[retention]`: how long each analytics dataset keeps a tenant's rows, e.g.
    /// `signals = "90d"` (units s, m, h, d, w). `annals retention run` applies it.
    pub retention: std::collections::BTreeMap<String, String>,
}

/// `[audit]`: signed checkpoints of the log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// `annals serve` signs a checkpoint of every partition once this many events were appended
    /// since the last one…
    pub checkpoint_every_events: u64,
    /// …or this many seconds passed with new events, whichever comes first (and once more on
    /// shutdown).
    pub checkpoint_every_seconds: u64,
    /// The ed25519 signing key (default: `keys/checkpoint.ed25519` in the data dir, created on
    /// first use).
    pub key: Option<PathBuf>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            checkpoint_every_events: 10_000,
            checkpoint_every_seconds: 60,
            key: None,
        }
    }
}

/// `[privacy]`: where the subject keys that seal personal data are kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// `data-dir` (default: files under `<data-dir>/keys/subjects/`, for one machine) or
    /// `postgres` (table `annals_subject_keys`, shared by every process of a distributed
    /// deployment). Keys are not moved when this changes: data sealed under the other store's
    /// keys then reads as erased.
    pub key_store: KeyStore,
    /// `postgres://…` of the key table (default: `[read_models] postgres`).
    pub postgres: Option<String>,
    /// The PostgreSQL schema of the key table (created if missing; default: the role's
    /// `search_path`, normally `public`). Best kept apart from the read models' schema, which
    /// may be dropped and rebuilt: the keys cannot be.
    pub postgres_schema: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyStore {
    /// Files in the data dir.
    #[default]
    DataDir,
    /// A PostgreSQL table.
    Postgres,
}

impl Config {
    /// With `[privacy] key_store = "postgres"`: the URL and schema of the key table.
    pub fn key_store_postgres(&self) -> Option<(&str, Option<&str>)> {
        if self.privacy.key_store != KeyStore::Postgres {
            return None;
        }
        let url = self
            .privacy
            .postgres
            .as_deref()
            .or(self.read_models.postgres.as_deref())?;
        Some((url, self.privacy.postgres_schema.as_deref()))
    }

    fn validate_privacy(&self) -> Result<(), String> {
        let p = &self.privacy;
        match p.key_store {
            KeyStore::Postgres if self.key_store_postgres().is_none() => Err(
                "[privacy] key_store = \"postgres\" needs the database: set [privacy] postgres = \"postgres://user:password@host/db\" (or [read_models] postgres)"
                    .into(),
            ),
            KeyStore::DataDir if p.postgres.is_some() || p.postgres_schema.is_some() => Err(
                "[privacy] postgres and postgres_schema are only used with key_store = \"postgres\": set it, or remove them (the keys are in the data dir)"
                    .into(),
            ),
            _ => match &p.postgres_schema {
                Some(s) if !annals_audit::subjects::valid_schema(s) => Err(format!(
                    "[privacy] postgres_schema = {s:?}: use 1-63 characters among a-z A-Z 0-9 _"
                )),
                _ => Ok(()),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// annals' own segmented log under the data dir (no server).
    #[default]
    Embedded,
    /// Apache Kafka or another Kafka-protocol broker.
    Kafka,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `embedded` (default) or `kafka`.
    pub backend: Backend,
    /// Partitions of the `events` topic when it is created (fixed afterwards).
    pub partitions: u32,
    /// Embedded log: a segment file rolls over at this size.
    pub segment_bytes: u64,
    pub kafka: Option<KafkaSection>,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            backend: Backend::Embedded,
            partitions: 8,
            segment_bytes: 64 << 20,
            kafka: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `host:port[,host:port…]`
    pub brokers: String,
    /// Prefix of the Kafka topic names (default `annals.`).
    pub topic_prefix: Option<String>,
    /// Replication factor of the topics annals creates (default 1; 3 on a production cluster).
    pub replication_factor: Option<i32>,
    /// Seconds a metadata, admin or read request may take (default 10).
    pub timeout_seconds: Option<u64>,
    /// Whether writers use the idempotent producer (default true). tansu 0.6.0 needs false to
    /// survive its own restarts; correctness does not depend on it (see ARCHITECTURE.md).
    pub idempotence: Option<bool>,
    /// Who decides commands `annals serve` takes: `local` (default: the serving process, the
    /// one writer of every partition) or `processors` (`annals process` instances, reached
    /// through the commands topic).
    pub commands: Option<String>,
    /// Whether records carry readable headers (event type, tenant, stream, seq; default true).
    /// tansu 0.6.0 reads records with headers about 20 times slower.
    pub headers: Option<bool>,
    /// More librdkafka properties for every client, e.g. `"security.protocol" = "SASL_SSL"`.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

impl LogSection {
    /// Whether `annals serve` sends commands to `annals process` instances.
    pub fn commands_to_processors(&self) -> bool {
        self.backend == Backend::Kafka
            && self
                .kafka
                .as_ref()
                .is_some_and(|k| k.commands.as_deref() == Some("processors"))
    }

    /// Opens the log for reading only on this backend: takes no lock, changes nothing.
    pub fn open_read_only(
        &self,
        data_dir: &Path,
    ) -> Result<annals_events::Log, annals_events::LogError> {
        match self.kafka_config() {
            Some(k) => {
                let log = annals_events::Log::open_kafka(
                    data_dir,
                    k,
                    annals_events::LogConfig::default(),
                    annals_events::log::Mode::ReadOnly,
                )?;
                if log.topics().is_empty() {
                    return Err(annals_events::LogError::NoLog {
                        path: log.location().into(),
                    });
                }
                Ok(log)
            }
            None => annals_events::Log::open_read_only(data_dir),
        }
    }

    /// The Kafka connection when `backend = "kafka"`.
    pub fn kafka_config(&self) -> Option<annals_events::KafkaConfig> {
        if self.backend != Backend::Kafka {
            return None;
        }
        let k = self.kafka.as_ref()?;
        let mut cfg = annals_events::KafkaConfig::new(k.brokers.clone());
        if let Some(p) = &k.topic_prefix {
            cfg.topic_prefix = p.clone();
        }
        if let Some(r) = k.replication_factor {
            cfg.replication_factor = r;
        }
        if let Some(t) = k.timeout_seconds {
            cfg.timeout = std::time::Duration::from_secs(t);
        }
        if let Some(i) = k.idempotence {
            cfg.idempotence = i;
        }
        if let Some(h) = k.headers {
            cfg.headers = h;
        }
        cfg.properties = k.properties.clone();
        Some(cfg)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadModels {
    /// `postgres://…`; absent: embedded SQLite.
    pub postgres: Option<String>,
    /// The PostgreSQL schema of the current-state tables (created if missing; default: the
    /// role's `search_path`, normally `public`).
    pub postgres_schema: Option<String>,
    /// `http://…`; absent: embedded Parquet + DataFusion.
    pub clickhouse: Option<String>,
    /// The ClickHouse database of the analytics tables (created if missing).
    pub clickhouse_database: Option<String>,
    /// Whether `annals serve` keeps the read models caught up as it writes (default true).
    pub follow: Option<bool>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address `annals serve` listens on.
    pub listen: String,
    /// Bearer token that may do everything, including managing tenants. Absent: no operator
    /// access over HTTP. Best set through `ANNALS__SERVER__OPERATOR_TOKEN` rather than the file.
    /// At least 16 characters.
    pub operator_token: Option<String>,
    /// Tenant tokens (`[[server.tokens]]`): each may act on its own tenant with its scopes.
    pub tokens: Vec<TokenConfig>,
    /// Request bodies larger than this are refused with 413 (default 16 MiB).
    pub max_body_bytes: u64,
    /// Signals per second a tenant may send through the API when it has no
    /// `limits.rate_per_second` of its own; the burst is one second's worth. Over it, 429 with
    /// `Retry-After` (default 200000).
    pub rate_per_second: u64,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:7600".into(),
            operator_token: None,
            tokens: Vec::new(),
            max_body_bytes: 16 << 20,
            rate_per_second: 200_000,
        }
    }
}

// Written by hand so that tokens never reach a log line.
impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listen)
            .field(
                "operator_token",
                &self.operator_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tokens", &self.tokens)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("rate_per_second", &self.rate_per_second)
            .finish()
    }
}

/// A tenant's API token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who uses it; recorded as the `actor` of the events its commands cause.
    pub name: String,
    /// The bearer token, at least 16 characters, unique.
    pub token: String,
    /// The one tenant it may act on.
    pub tenant: String,
    /// Any of `signals:write`, `billing:write`, `policy:admin`, `privacy:admin`, `models:write`,
    /// `audit:read`.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("tenant", &self.tenant)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl Server {
    /// The tokens as the API takes them.
    pub fn auth(&self) -> annals_api::AuthConfig {
        annals_api::AuthConfig {
            operator_token: self.operator_token.clone(),
            tokens: self
                .tokens
                .iter()
                .map(|t| annals_api::ApiToken {
                    name: t.name.clone(),
                    token: t.token.clone(),
                    tenant: t.tenant.clone(),
                    scopes: t.scopes.clone(),
                })
                .collect(),
        }
    }
}

impl Config {
    /// Loads the layered configuration. `explicit` is `--config`; without it `./annals.toml`
    /// is read if present.
    pub fn load(explicit: Option<&Path>) -> Result<Config, String> {
        let (path, must_exist) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("annals.toml"), false),
        };
        let mut table = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .parse::<toml::Table>()
                .map_err(|e| format!("{}: {}", path.display(), one_line(&e.to_string())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => toml::Table::new(),
            Err(e) => return Err(format!("cannot read config file {}: {e}", path.display())),
        };
        apply_env(&mut table, std::env::vars())?;
        let cfg = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| format!("config ({}): {}", path.display(), one_line(&e.to_string())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values before anything opens a file or a connection.
    pub fn validate(&self) -> Result<(), String> {
        crate::commands::retention::policies(&self.retention)?;
        if self.audit.checkpoint_every_events == 0 || self.audit.checkpoint_every_seconds == 0 {
            return Err(
                "[audit] checkpoint_every_events and checkpoint_every_seconds must be at least 1"
                    .into(),
            );
        }
        if !(1..=4096).contains(&self.log.partitions) {
            return Err(format!(
                "[log] partitions = {} is out of range: use 1 to 4096",
                self.log.partitions
            ));
        }
        if self.log.segment_bytes < 64 * 1024 {
            return Err(format!(
                "[log] segment_bytes = {} is too small: use at least 65536",
                self.log.segment_bytes
            ));
        }
        if let Some(schema) = &self.read_models.postgres_schema
            && (schema.is_empty()
                || schema.len() > 63
                || !schema
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(format!(
                "[read_models] postgres_schema = {schema:?}: use 1-63 characters among a-z A-Z 0-9 _"
            ));
        }
        if self.log.backend == Backend::Kafka {
            let Some(k) = &self.log.kafka else {
                return Err(
                    "[log] backend = \"kafka\" needs [log.kafka] brokers = \"host:port\"".into(),
                );
            };
            if k.brokers.trim().is_empty() || k.brokers.split(',').any(|b| !b.trim().contains(':'))
            {
                return Err(format!(
                    "[log.kafka] brokers = {:?} is not a list of host:port: use e.g. \"127.0.0.1:9092\"",
                    k.brokers
                ));
            }
            if let Some(p) = &k.topic_prefix
                && !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(format!(
                    "[log.kafka] topic_prefix = {p:?} may hold only a-z A-Z 0-9 . _ -"
                ));
            }
            if k.replication_factor.is_some_and(|r| !(1..=16).contains(&r)) {
                return Err("[log.kafka] replication_factor must be 1 to 16".into());
            }
            if let Some(c) = &k.commands
                && c != "local"
                && c != "processors"
            {
                return Err(format!(
                    "[log.kafka] commands = {c:?}: use \"local\" (serve decides) or \"processors\" (annals process instances decide)"
                ));
            }
            if k.timeout_seconds == Some(0) {
                return Err("[log.kafka] timeout_seconds must be at least 1".into());
            }
        }
        if !(1024..=1 << 30).contains(&self.server.max_body_bytes) {
            return Err(format!(
                "[server] max_body_bytes = {} is out of range: use 1024 to 1073741824",
                self.server.max_body_bytes
            ));
        }
        if self.server.rate_per_second == 0 {
            return Err(
                "[server] rate_per_second = 0 would refuse every signal: use at least 1".into(),
            );
        }
        self.validate_privacy()?;
        self.server.auth().validate()?;
        Ok(())
    }
}

/// Overlays `ANNALS__SECTION__KEY=value` variables (e.g. `ANNALS__LOG__PARTITIONS=4`,
/// `ANNALS__LOG__KAFKA__BROKERS=…`). Values are read as TOML scalars when they parse as one,
/// otherwise as strings.
fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), String> {
    for (key, value) in vars {
        let Some(path) = key.strip_prefix("ANNALS__") else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!(
                "environment variable {key}: empty key part; use ANNALS__SECTION__KEY"
            ));
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let mut t = &mut *table;
        for part in &parts[..parts.len() - 1] {
            let entry = t
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry
                .as_table_mut()
                .ok_or_else(|| format!("environment variable {key}: `{part}` is not a section"))?;
        }
        t.insert(parts[parts.len() - 1].clone(), parsed);
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let mut t: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        apply_env(
            &mut t,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        let cfg = Config::deserialize(toml::Value::Table(t)).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn defaults_then_file_then_environment() {
        assert_eq!(load("", &[]).unwrap().log.partitions, 8);
        assert_eq!(
            load("[log]\npartitions = 4", &[]).unwrap().log.partitions,
            4
        );
        assert_eq!(
            load("[log]\npartitions = 4", &[("ANNALS__LOG__PARTITIONS", "2")])
                .unwrap()
                .log
                .partitions,
            2
        );
        assert_eq!(
            load("", &[("ANNALS__SERVER__LISTEN", "127.0.0.1:9")])
                .unwrap()
                .server
                .listen,
            "127.0.0.1:9"
        );
    }

    #[test]
    fn server_tokens_are_validated() {
        let tokens = r#"
[server]
max_body_bytes = 4096
[[server.tokens]]
name = "acme-ingest"
token = "0123456789abcdef0123"
tenant = "acme"
scopes = ["signals:write", "audit:read"]
"#;
        let cfg = load(
            tokens,
            &[("ANNALS__SERVER__OPERATOR_TOKEN", "operator-0123456789")],
        )
        .unwrap();
        assert_eq!(cfg.server.max_body_bytes, 4096);
        assert_eq!(cfg.server.rate_per_second, 200_000);
        let auth = cfg.server.auth();
        assert_eq!(auth.operator_token.as_deref(), Some("operator-0123456789"));
        assert_eq!(auth.tokens[0].tenant, "acme");
        assert!(!format!("{cfg:?}").contains("0123456789abcdef"));
        assert!(
            load(&tokens.replace("audit:read", "audit:write"), &[])
                .unwrap_err()
                .contains("audit:write")
        );
        assert!(
            load(&tokens.replace("0123456789abcdef0123", "short"), &[])
                .unwrap_err()
                .contains("too short")
        );
        assert!(
            load(
                tokens,
                &[("ANNALS__SERVER__OPERATOR_TOKEN", "0123456789abcdef0123")]
            )
            .unwrap_err()
            .contains("unique")
        );
        assert!(
            load(&tokens.replace("scopes", "scope"), &[])
                .unwrap_err()
                .contains("scope")
        );
        assert!(
            load("[server]\nrate_per_second = 0", &[])
                .unwrap_err()
                .contains("rate_per_second")
        );
    }

    #[test]
    fn the_key_store_is_the_data_dir_or_a_postgres_table() {
        let cfg = load("", &[]).unwrap();
        assert_eq!(cfg.privacy.key_store, KeyStore::DataDir);
        assert_eq!(cfg.key_store_postgres(), None);
        // The URL defaults to the read models' database.
        let cfg = load(
            "[read_models]\npostgres = \"postgres://a@h/rm\"\n[privacy]\nkey_store = \"postgres\"",
            &[],
        )
        .unwrap();
        assert_eq!(cfg.key_store_postgres(), Some(("postgres://a@h/rm", None)));
        let cfg = load(
            "[privacy]\nkey_store = \"postgres\"\npostgres = \"postgres://a@h/keys\"\npostgres_schema = \"annals_keys\"",
            &[("ANNALS__READ_MODELS__POSTGRES", "postgres://a@h/rm")],
        )
        .unwrap();
        assert_eq!(
            cfg.key_store_postgres(),
            Some(("postgres://a@h/keys", Some("annals_keys")))
        );
        let err = load("[privacy]\nkey_store = \"postgres\"", &[]).unwrap_err();
        assert!(err.contains("[privacy] postgres"), "{err}");
        let err = load("[privacy]\npostgres = \"postgres://a@h/keys\"", &[]).unwrap_err();
        assert!(err.contains("key_store = \"postgres\""), "{err}");
        let err = load("[privacy]\nkey_store = \"vault\"", &[]).unwrap_err();
        assert!(err.contains("vault"), "{err}");
        let err = load(
            "[privacy]\nkey_store = \"postgres\"\npostgres = \"postgres://a@h/k\"\npostgres_schema = \"a-b\"",
            &[],
        )
        .unwrap_err();
        assert!(err.contains("postgres_schema"), "{err}");
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        assert!(
            load("[log]\npartition = 4", &[])
                .unwrap_err()
                .contains("partition")
        );
        assert!(
            load("[log]\npartitions = 0", &[])
                .unwrap_err()
                .contains("partitions")
        );
        assert!(
            load("[log]\nbackend = \"kafak\"", &[])
                .unwrap_err()
                .contains("kafak")
        );
        assert!(
            load("", &[("ANNALS__LOG__NOPE", "1")])
                .unwrap_err()
                .contains("nope")
        );
    }
}
