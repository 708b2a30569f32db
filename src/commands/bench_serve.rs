//! `annals bench serve`: signals/s and request latency through the HTTP API over loopback.
//!
//! Starts the `annals serve` stack in this process (scratch log, registry, engine,
//! `annals_api::serve`) on 127.0.0.1:0 with an operator token and one `signals:write` token per
//! tenant made up for the run, provisions the tenants over HTTP, then drives
//! `POST /v1/tenants/{tenant}/signals` from `--connections` keep-alive connections, one request
//! at a time on each, until `--signals` signals are sent. The client is a minimal HTTP/1.1
//! client over a tokio `TcpStream` (requests with `Content-Length`, responses read by their
//! `Content-Length`), sharing the async runtime (and the machine's cores) with the server.
//! Afterwards it checks that `GET /metrics` counts every signal as accepted.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_events::{Log, LogConfig};
use annals_processors::Engine;
use annals_schemas::Registry;
use tokio::net::TcpStream;

use crate::{Context, Failure};

/// Sources per tenant the signals are spread over.
const SOURCES: u64 = 4;
/// The whole run (provisioning and load) stops with an error after this.
const TIME_LIMIT: Duration = Duration::from_secs(120);
/// What the figures are measured against (printed, not asserted).
const TARGET_SIGNALS_PER_S: f64 = 200_000.0;
const TARGET_P99_MS: f64 = 20.0;
/// 2026-01-01T00:00:00Z in microseconds: the first signal's `ts`.
const BASE_TS: u64 = 1_767_225_600_000_000;
/// A response head larger than this is refused.
const MAX_HEAD: usize = 64 * 1024;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Signals to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    signals: u64,
    /// Signals per request (one tenant and one source per request).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Tenants (requests go round-robin over them; 4 sources each).
    #[arg(long, default_value_t = 8)]
    tenants: u32,
    /// Partitions of the scratch log.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Folder for the scratch log (on the disk to measure); removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Figures {
    signals: u64,
    requests: u64,
    batch: usize,
    connections: usize,
    tenants: u32,
    sources_per_tenant: u64,
    partitions: u32,
    seconds: f64,
    signals_per_s: f64,
    requests_per_s: f64,
    latency_p50_ms: f64,
    latency_p90_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    /// `ingest_signals_accepted_total` from `GET /metrics` after the run.
    signals_accepted: u64,
    target_signals_per_s: f64,
    target_latency_p99_ms: f64,
}

pub fn run(ctx: &Context, args: ServeArgs) -> Result<ExitCode, Failure> {
    use annals_domain::ingest::MAX_BATCH;
    if args.signals == 0
        || args.batch == 0
        || args.connections == 0
        || args.tenants == 0
        || args.partitions == 0
    {
        return Err(Failure::usage(
            "--signals, --batch, --connections, --tenants and --partitions must be at least 1",
        ));
    }
    if args.batch > MAX_BATCH {
        return Err(Failure::usage(format!(
            "--batch {} is over the {MAX_BATCH} signals one ingest command takes",
            args.batch
        )));
    }
    if args.tenants > 10_000 {
        return Err(Failure::usage("--tenants is at most 10000"));
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = super::bench::tempdir_in(&parent)?;
    let result = measure(ctx, &scratch, &args);
    std::fs::remove_dir_all(&scratch).ok();
    let f = result?;
    if ctx.json {
        super::print_json(&f);
    } else {
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "annals bench serve: {} signals over HTTP/1.1 on loopback, {} requests of {} ({} keep-alive connections, {} tenants x {} sources, {} partitions)",
            f.signals,
            f.requests,
            f.batch,
            f.connections,
            f.tenants,
            f.sources_per_tenant,
            f.partitions
        );
        println!(
            "  POST signals   : {:>12.0} signals/s  {:>9.0} requests/s  ({:.2} s)",
            f.signals_per_s, f.requests_per_s, f.seconds
        );
        println!(
            "  request latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (write to full response, 1 in flight per connection)",
            f.latency_p50_ms, f.latency_p90_ms, f.latency_p99_ms, f.latency_max_ms
        );
        println!(
            "  targets        : >= {:.0} signals/s in batches of 1000: {}; p99 < {:.0} ms: {}",
            f.target_signals_per_s,
            met(f.signals_per_s >= f.target_signals_per_s),
            f.target_latency_p99_ms,
            met(f.latency_p99_ms < f.target_latency_p99_ms)
        );
        println!(
            "  checked        : ingest_signals_accepted_total = {} (GET /metrics)",
            f.signals_accepted
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What the load generator's tasks share.
struct Plan {
    addr: SocketAddr,
    signals: u64,
    batch: u64,
    requests: u64,
    tenants: u32,
    /// One `signals:write` token per tenant.
    tokens: Vec<String>,
    /// The next request to send.
    next: AtomicU64,
    /// Signals acknowledged so far (for the timeout message).
    done: AtomicU64,
}

fn tenant_id(t: u32) -> String {
    format!("bench-{t:04}")
}

fn measure(ctx: &Context, dir: &Path, args: &ServeArgs) -> Result<Figures, Failure> {
    let registry = Arc::new(Registry::builtin()?);
    let log = Arc::new(Log::open(
        dir,
        LogConfig {
            segment_bytes: ctx.config.log.segment_bytes,
            ..LogConfig::default()
        },
    )?);
    let topic = log.create_topic(annals_api::EVENTS_TOPIC, args.partitions)?;
    // Starting the engine blocks: before the async runtime exists, as `annals serve` does.
    let engine = Arc::new(
        Engine::start(topic, registry.clone()).map_err(|e| Failure::failed(e.to_string()))?,
    );
    let secret = || uuid::Uuid::now_v7().simple().to_string();
    let operator = format!("bench-operator-{}", secret());
    let tokens: Vec<String> = (0..args.tenants)
        .map(|t| format!("bench-{t:04}-{}", secret()))
        .collect();
    let settings = annals_api::Settings {
        auth: annals_api::AuthConfig {
            operator_token: Some(operator.clone()),
            tokens: tokens
                .iter()
                .enumerate()
                .map(|(t, token)| annals_api::ApiToken {
                    name: format!("bench-ingest-{t:04}"),
                    token: token.clone(),
                    tenant: tenant_id(t as u32),
                    scopes: vec!["signals:write".into()],
                })
                .collect(),
        },
        // The stack's capacity is what is measured, not the per-tenant rate limit.
        rate_per_second: 1_000_000_000_000,
        ..annals_api::Settings::default()
    };
    settings.auth.validate().map_err(Failure::failed)?;
    let state = annals_api::AppState::new(engine.clone(), log.clone(), registry, &settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("annals-bench-http")
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    let batch = args.batch as u64;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Failure::failed(format!("cannot listen on 127.0.0.1:0: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::failed(format!("cannot listen on 127.0.0.1:0: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(annals_api::serve(listener, state, async move {
            stopped.await.ok();
        }));
        let plan = Arc::new(Plan {
            addr,
            signals: args.signals,
            batch,
            requests: args.signals.div_ceil(batch),
            tenants: args.tenants,
            tokens,
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
        });
        let load =
            tokio::time::timeout(TIME_LIMIT, drive(plan.clone(), &operator, args.connections))
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::failed(format!(
                        "did not finish within {} s: {} of {} signals acknowledged",
                        TIME_LIMIT.as_secs(),
                        plan.done.load(Ordering::Relaxed),
                        plan.signals
                    )))
                });
        stop.send(()).ok();
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the bench server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the bench server task failed"),
            Err(_) => tracing::warn!("the bench server did not drain within 10 s"),
        }
        load
    });
    // Let the runtime finish before the engine's workers are stopped (its last reference).
    drop(runtime);
    drop(engine);
    drop(log);
    let load = result?;
    if load.accepted_metric != args.signals || load.accepted_responses != args.signals {
        return Err(Failure::failed(format!(
            "{} signals sent, but /metrics counts {} accepted and the responses {}",
            args.signals, load.accepted_metric, load.accepted_responses
        )));
    }
    let mut lat = load.latencies_ms;
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| super::bench::quantile(&lat, q);
    let requests = lat.len() as u64;
    Ok(Figures {
        signals: args.signals,
        requests,
        batch: args.batch,
        connections: args.connections,
        tenants: args.tenants,
        sources_per_tenant: SOURCES,
        partitions: args.partitions,
        seconds: load.seconds,
        signals_per_s: args.signals as f64 / load.seconds,
        requests_per_s: requests as f64 / load.seconds,
        latency_p50_ms: pct(0.5),
        latency_p90_ms: pct(0.9),
        latency_p99_ms: pct(0.99),
        latency_max_ms: lat[lat.len() - 1],
        signals_accepted: load.accepted_metric,
        target_signals_per_s: TARGET_SIGNALS_PER_S,
        target_latency_p99_ms: TARGET_P99_MS,
    })
}

struct Load {
    seconds: f64,
    latencies_ms: Vec<f64>,
    /// Sum of `accepted` over the responses.
    accepted_responses: u64,
    /// `ingest_signals_accepted_total` after the run.
    accepted_metric: u64,
}

/// Provisions the tenants, runs the load, reads the metrics.
async fn drive(plan: Arc<Plan>, operator: &str, connections: usize) -> Result<Load, Failure> {
    let failed = |what: &str, e: String| Failure::failed(format!("{what}: {e}"));
    let mut admin = Conn::connect(plan.addr)
        .await
        .map_err(|e| failed("cannot connect", e))?;
    for t in 0..plan.tenants {
        let body = serde_json::json!({
            "tenant": tenant_id(t),
            "name": format!("Bench tenant {t}"),
            "plan": "enterprise",
            "region": "eu-west-1",
            "limits": {
                "max_signals_per_day": i64::MAX / 2,
                "max_sources": 16,
                "rate_per_second": 1_000_000,
            },
        });
        let res = admin
            .request(
                "POST",
                "/v1/tenants",
                Some(operator),
                body.to_string().as_bytes(),
            )
            .await
            .map_err(|e| failed("provisioning", e))?;
        if res.status != 201 && res.status != 200 {
            return Err(failed(
                &format!("provisioning {}", tenant_id(t)),
                res.describe(),
            ));
        }
    }

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.min(plan.requests as usize) {
        tasks.spawn(sender(plan.clone()));
    }
    let mut latencies_ms = Vec::with_capacity(plan.requests as usize);
    let mut accepted_responses = 0;
    while let Some(joined) = tasks.join_next().await {
        let (lat, accepted) =
            joined.map_err(|e| Failure::failed(format!("a bench connection failed: {e}")))??;
        latencies_ms.extend(lat);
        accepted_responses += accepted;
    }
    let seconds = started.elapsed().as_secs_f64();

    let res = admin
        .request("GET", "/metrics", None, b"")
        .await
        .map_err(|e| failed("GET /metrics", e))?;
    if res.status != 200 {
        return Err(failed("GET /metrics", res.describe()));
    }
    let accepted_metric = metric(
        &String::from_utf8_lossy(&res.body),
        "ingest_signals_accepted_total",
    )
    .ok_or_else(|| Failure::failed("GET /metrics has no ingest_signals_accepted_total"))?;
    Ok(Load {
        seconds,
        latencies_ms,
        accepted_responses,
        accepted_metric,
    })
}

/// One connection: takes the next request until none are left. Returns each request's latency
/// in ms and the signals the responses say were accepted.
async fn sender(plan: Arc<Plan>) -> Result<(Vec<f64>, u64), Failure> {
    let mut conn = Conn::connect(plan.addr)
        .await
        .map_err(|e| Failure::failed(format!("cannot connect: {e}")))?;
    let mut body = Vec::with_capacity(plan.batch as usize * 160);
    let mut latencies = Vec::new();
    let mut accepted = 0;
    loop {
        let k = plan.next.fetch_add(1, Ordering::Relaxed);
        if k >= plan.requests {
            return Ok((latencies, accepted));
        }
        let tenant = (k % u64::from(plan.tenants)) as u32;
        let source = (k / u64::from(plan.tenants)) % SOURCES;
        let first = k * plan.batch;
        let n = plan.batch.min(plan.signals - first);
        signals_body(&mut body, source, first, n);
        let path = format!("/v1/tenants/{}/signals", tenant_id(tenant));
        let at = Instant::now();
        let res = conn
            .request("POST", &path, Some(&plan.tokens[tenant as usize]), &body)
            .await
            .map_err(|e| Failure::failed(format!("POST {path}: {e}")))?;
        latencies.push(at.elapsed().as_secs_f64() * 1e3);
        if res.status != 200 {
            return Err(Failure::failed(format!("POST {path}: {}", res.describe())));
        }
        let answer: serde_json::Value = serde_json::from_slice(&res.body)
            .map_err(|e| Failure::failed(format!("POST {path}: the answer is not JSON: {e}")))?;
        accepted += answer["accepted"].as_u64().unwrap_or(0);
        plan.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// A JSON array of signals `first..first + n` of one source: unique ids, one attribute, a value.
fn signals_body(out: &mut Vec<u8>, source: u64, first: u64, n: u64) {
    out.clear();
    out.push(b'[');
    for i in first..first + n {
        if i > first {
            out.push(b',');
        }
        // Writing to a Vec cannot fail.
        write!(
            out,
            r#"{{"source":"src-{source}","signal_id":"sig-{i}","ts":{},"attributes":{{"metric":"latency"}},"value":{i}.5,"unit":"ms"}}"#,
            BASE_TS + i
        )
        .ok();
    }
    out.push(b']');
}

/// The value of an unlabelled metric in Prometheus text format.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// A minimal HTTP/1.1 keep-alive client connection: one request at a time, responses framed by
/// `Content-Length` (what the API sends for its JSON and text bodies).
struct Conn {
    addr: SocketAddr,
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// The request being written (head and body, one write).
    out: Vec<u8>,
    /// The server said `Connection: close`: reconnect before the next request.
    closed: bool,
}

#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

impl Response {
    /// The status and the start of the body, for an error message.
    fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text: String = text.chars().take(300).collect();
        format!("HTTP {}: {text}", self.status)
    }
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: usize,
    /// Bytes of the head, through the blank line.
    len: usize,
    close: bool,
}

/// Parses a response head at the start of `buf`; `Ok(None)` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(format!("response head over {MAX_HEAD} bytes"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err("two different Content-Length headers".into());
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "Transfer-Encoding {value:?} is not supported by the bench client"
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            let has = |token: &str| {
                value
                    .split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case(token))
            };
            if has("close") {
                close = true;
            } else if has("keep-alive") {
                close = false;
            }
        }
    }
    let content_length = match content_length {
        Some(n) => n,
        // No body by definition.
        None if status == 204 || status == 304 || status < 200 => 0,
        None => return Err(format!("HTTP {status} response without Content-Length")),
    };
    Ok(Some(Head {
        status,
        content_length,
        len: end + 4,
        close,
    }))
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Result<Conn, String> {
        Ok(Conn {
            addr,
            stream: Self::open(addr).await?,
            buf: Vec::with_capacity(16 * 1024),
            out: Vec::new(),
            closed: false,
        })
    }

    async fn open(addr: SocketAddr) -> Result<TcpStream, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        // One write per request: no Nagle delay waiting for the server's ACK.
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(stream)
    }

    /// Sends one request and reads its whole response.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<Response, String> {
        if self.closed {
            self.stream = Self::open(self.addr).await?;
            self.buf.clear();
            self.closed = false;
        }
        self.out.clear();
        write!(
            self.out,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.addr
        )
        .ok();
        if let Some(token) = token {
            write!(self.out, "Authorization: Bearer {token}\r\n").ok();
        }
        if !body.is_empty() {
            self.out
                .extend_from_slice(b"Content-Type: application/json\r\n");
        }
        write!(self.out, "Content-Length: {}\r\n\r\n", body.len()).ok();
        self.out.extend_from_slice(body);
        write_all(&self.stream, &self.out)
            .await
            .map_err(|e| format!("cannot send the request: {e}"))?;
        loop {
            if let Some(head) = parse_head(&self.buf)? {
                let total = head.len + head.content_length;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                let body = self.buf[head.len..total].to_vec();
                self.buf.drain(..total);
                self.closed = head.close;
                return Ok(Response {
                    status: head.status,
                    body,
                });
            }
            self.fill().await?;
        }
    }

    /// Reads more bytes into the buffer.
    async fn fill(&mut self) -> Result<(), String> {
        let n = read_some(&self.stream, &mut self.buf)
            .await
            .map_err(|e| format!("cannot read the response: {e}"))?;
        if n == 0 {
            self.closed = true;
            return Err("the server closed the connection mid-response".into());
        }
        Ok(())
    }
}

/// Writes all of `buf` (tokio's `net` feature only: no `AsyncWriteExt`).
async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends what can be read to `buf` once some is available; 0 at end of stream.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    const CHUNK: usize = 16 * 1024;
    loop {
        stream.readable().await?;
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
        let read = stream.try_read(&mut buf[len..]);
        buf.truncate(len + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_head_and_waits_for_the_rest() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n{\"accepted\":1}";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                content_length: 13,
                len: raw.len() - 14,
                close: false
            }
        );
        // Incomplete: more bytes are needed, whatever the cut.
        for cut in 0..head.len {
            assert_eq!(parse_head(&raw[..cut]).unwrap(), None, "cut at {cut}");
        }
        let closing = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let head = parse_head(closing).unwrap().unwrap();
        assert_eq!(
            (head.status, head.content_length, head.close),
            (429, 0, true)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
                .unwrap()
                .unwrap()
                .content_length,
            0
        );
    }

    #[test]
    fn refuses_what_it_cannot_frame() {
        let bad = |raw: &[u8]| parse_head(raw).unwrap_err();
        assert!(bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").contains("chunked"));
        assert!(bad(b"HTTP/1.1 200 OK\r\n\r\n").contains("Content-Length"));
        assert!(bad(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n").contains("status line"));
        assert!(bad(b"SMTP 220 hello\r\n\r\n").contains("status line"));
        assert!(bad(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").contains("Content-Length"));
        assert!(bad(&vec![b'x'; MAX_HEAD + 1]).contains("head over"));
    }

    #[test]
    fn bodies_are_json_arrays_of_unique_signals_and_metrics_are_read() {
        let mut body = Vec::new();
        signals_body(&mut body, 2, 10, 3);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let ids: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["signal_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["sig-10", "sig-11", "sig-12"]);
        assert_eq!(v[0]["source"], "src-2");
        assert_eq!(v[1]["ts"], BASE_TS + 11);
        let text = "# HELP ingest_signals_accepted_total x\n# TYPE ingest_signals_accepted_total counter\ningest_signals_accepted_total 4000\ningest_signals_accepted_total_other 1\n";
        assert_eq!(metric(text, "ingest_signals_accepted_total"), Some(4000));
        assert_eq!(metric(text, "nope"), None);
    }
}
