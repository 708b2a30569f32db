//! `annals serve`: the HTTP API over the command path, until Ctrl-C or SIGTERM.
//!
//! Opens the log and starts the engine like `annals demo`, then hands both to `annals-api`.
//! On a signal it stops accepting connections, drains the requests in flight, and stops the
//! engine once their events are durable. Unless `[read_models] follow = false`, it also keeps
//! the read models (current state and analytics) caught up as it writes, and reports their
//! lag on `/metrics`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use annals_events::{Log, LogConfig};
use annals_processors::bus::CommandBus;
use annals_processors::{CommandPath, Engine};
use annals_projections::follow::Follower;
use annals_schemas::Registry;

use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (default: `[server] listen`, 127.0.0.1:7600).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    let server = &ctx.config.server;
    let listen = args.listen.unwrap_or_else(|| server.listen.clone());
    let keys = super::subject_keys(ctx)?;
    let registry = Arc::new(super::registry_with(&keys)?);
    let to_processors = ctx.config.log.commands_to_processors();
    let log = ctx.open_log(LogConfig {
        segment_bytes: ctx.config.log.segment_bytes,
        ..LogConfig::default()
    })?;
    let topic = log.create_topic(annals_api::EVENTS_TOPIC, ctx.config.log.partitions)?;
    // With processors deciding commands this process writes nothing: it reads the log as
    // another process does (its heads then follow what the processors append).
    let (log, topic) = if to_processors {
        drop(topic);
        drop(log);
        let log = ctx.open_log_read_only()?;
        let topic = log.topic(annals_api::EVENTS_TOPIC)?;
        (Arc::new(log), topic)
    } else {
        (Arc::new(log), topic)
    };
    let partitions = topic.partitions().len();
    let follower = if ctx.config.read_models.follow.unwrap_or(true) {
        Some(Follower::new(
            super::projections::current_state_backend(ctx),
            super::projections::analytics_store(ctx)?,
            registry.clone(),
            Duration::from_millis(200),
        ))
    } else {
        None
    };
    let followed = topic.clone();
    // On Kafka with `[log.kafka] commands = "processors"`, `annals process` instances decide
    // the commands; otherwise this process does. Starting the engine blocks until every
    // partition's aggregates are rebuilt: before the async runtime exists.
    let engine: CommandPath = if to_processors {
        let bus = CommandBus::connect(&log, &topic).map_err(|e| Failure::failed(e.to_string()))?;
        CommandPath::Bus {
            bus: Arc::new(bus),
            topic,
        }
    } else {
        Arc::new(
            Engine::start(topic, registry.clone()).map_err(|e| Failure::failed(e.to_string()))?,
        )
        .into()
    };
    let settings = annals_api::Settings {
        auth: server.auth(),
        max_body_bytes: usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX),
        rate_per_second: server.rate_per_second,
    };
    if settings.auth.operator_token.is_none() && settings.auth.tokens.is_empty() {
        tracing::warn!(
            "no API tokens configured: only /health, /ready, /metrics and /openapi.json will answer; set [server] operator_token (or ANNALS__SERVER__OPERATOR_TOKEN) and [[server.tokens]]"
        );
    }
    // Checkpoints are appended by a partition's writer: with processors deciding commands,
    // this process is not one (each `annals process` signs its own partitions').
    let checkpoints = if to_processors {
        None
    } else {
        Some(Checkpoints::start(ctx, log.clone(), registry.clone())?)
    };
    let state = annals_api::AppState::new(engine.clone(), log.clone(), registry, &settings);
    state.set_subject_keys(keys);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("annals-http")
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    let (stop_follow, follow_stopped) = tokio::sync::watch::channel(false);
    let follow_task = follower.map(|f| {
        let purge = f.purge_request();
        state.on_erased(Arc::new(move || {
            purge.store(true, std::sync::atomic::Ordering::Release)
        }));
        let states = f.states();
        state.add_metrics(Arc::new(move || {
            annals_projections::follow::prometheus(&states)
        }));
        runtime.spawn(f.run(move || Ok(followed.clone()), follow_stopped))
    });
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| Failure::usage(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::failed(format!("cannot listen on {listen}: {e}")))?;
        if ctx.json {
            super::print_json(&serde_json::json!({
                "listen": addr.to_string(),
                "data_dir": ctx.data_dir.display().to_string(),
                "partitions": partitions,
            }));
        } else {
            println!(
                "annals serve: listening on http://{addr} ({}, {partitions} partitions); Ctrl-C to stop",
                ctx.data_dir.display()
            );
        }
        tracing::info!(%addr, partitions, "serving");
        let served = annals_api::serve(listener, state, shutdown_signal())
            .await
            .map_err(|e| Failure::failed(format!("the server stopped: {e}")));
        // The read models catch up with what was written, then stop.
        stop_follow.send(true).ok();
        if let Some(task) = follow_task {
            task.await.ok();
        }
        served
    });
    // Let the runtime finish before the engine's workers are stopped (its last reference).
    drop(runtime);
    drop(engine);
    if let Some(c) = checkpoints {
        c.stop();
    }
    result?;
    if !ctx.json {
        println!("annals serve: stopped");
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Signs checkpoints of every partition on the `[audit]` cadence, on its own thread, and once
/// more when the server stops, so every acknowledged event can be proved.
struct Checkpoints {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpoints {
    fn start(
        ctx: &Context,
        log: Arc<Log>,
        registry: Arc<Registry>,
    ) -> Result<Checkpoints, Failure> {
        let (key, _, _) = super::checkpoint::signing_key(ctx, None)?;
        let audit = ctx.config.audit.clone();
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("annals-checkpoints".into())
            .spawn(move || {
                let mut checkpointer = annals_audit::Checkpointer::new(&key, &registry);
                let appended = |log: &Log| {
                    log.topic(annals_api::EVENTS_TOPIC)
                        .map(|t| {
                            t.partitions()
                                .iter()
                                .map(|p| p.head().next_seq)
                                .sum::<u64>()
                        })
                        .unwrap_or(0)
                };
                let mut cadence = super::checkpoint::Cadence::new(&audit, appended(&log));
                loop {
                    let (lock, cvar) = &*signal;
                    let stopped = {
                        let guard = lock.lock().expect("checkpoint stop lock");
                        let (guard, _) = cvar
                            .wait_timeout(guard, std::time::Duration::from_secs(1))
                            .expect("checkpoint stop lock");
                        *guard
                    };
                    if cadence.due(appended(&log)) || stopped {
                        match checkpointer.checkpoint_topic(&log, annals_api::EVENTS_TOPIC) {
                            Ok(made) => {
                                tracing::info!(checkpoints = made.len(), "signed checkpoints")
                            }
                            Err(e) => tracing::error!(error = %e, "cannot sign checkpoints"),
                        }
                        cadence.signed(appended(&log));
                    }
                    if stopped {
                        break;
                    }
                }
            })
            .map_err(|e| Failure::failed(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpoints { stop, thread })
    }

    fn stop(self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().expect("checkpoint stop lock") = true;
        cvar.notify_all();
        if self.thread.join().is_err() {
            tracing::error!("the checkpoint thread panicked");
        }
    }
}
