//! A tenant's retention runs: how long each analytics dataset keeps the tenant's rows, and the
//! record of every removal.
//!
//! A run is reviewed first: `ReviewRetention` records a dry run — per dataset the time to live,
//! the cutoff it gives at `as_of`, how many rows fall before it, and a digest of the exact list
//! of those rows (rows of events before `bound` in the tenant's log partition). `ApplyRetention`
//! then carries out one reviewed run, and only if the rows it would remove now are still exactly
//! the reviewed ones (same digest): the `RetentionApplied` event is what makes the read models
//! remove them, so a projection rebuilt from the log removes them again.
//!
//! The list itself is computed from the read models by the caller (this module does no I/O); the
//! aggregate checks that a run is well formed and that an applied run is the one reviewed.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::TenantStatus;
use crate::error::{DomainError, check_id};
use crate::payload::{Payload, json_of, parse};

/// The aggregate type: streams are `tenancy.Retention/<tenant>`.
pub const RETENTION_STREAM_TYPE: &str = "tenancy.Retention";

pub fn retention_stream(tenant: &str) -> String {
    format!("{RETENTION_STREAM_TYPE}/{tenant}")
}

/// One dataset of a run: its time to live and what falls before the cutoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionCut {
    /// The read-model dataset (an analytics table, e.g. `signals`).
    pub dataset: String,
    pub ttl_seconds: i64,
    /// `as_of - ttl`: rows whose time is before it go (microseconds since the epoch).
    pub cutoff: i64,
    /// How many rows fall before the cutoff.
    pub rows: u64,
}

/// A retention run, as reviewed (dry run) and as applied (live run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRun {
    pub tenant: String,
    /// The run's id, shared by its review and its application.
    pub run_id: String,
    /// The instant the time to live is counted back from (microseconds since the epoch).
    pub as_of: i64,
    /// Only rows of events before this seq of the tenant's partition are in the run: rows that
    /// arrive later are never removed by it, however old their time.
    pub bound: u64,
    /// One entry per dataset, sorted by name.
    pub datasets: Vec<RetentionCut>,
    /// Rows over all datasets.
    pub rows: u64,
    /// SHA-256 (hex) of the exact list of rows (see `annals_projections::analytics::retention`).
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionCommand {
    /// Record a dry run.
    ReviewRetention(RetentionRun),
    /// Carry out a reviewed run; `digest` is that of the rows the caller finds now.
    ApplyRetention { run_id: String, digest: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionEvent {
    RetentionReviewed(RetentionRun),
    RetentionApplied(RetentionRun),
}

impl DomainEvent for RetentionEvent {
    fn event_type(&self) -> String {
        Payload::event_type(self).to_owned()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Payload for RetentionEvent {
    fn event_type(&self) -> &'static str {
        match self {
            RetentionEvent::RetentionReviewed(_) => "tenancy.RetentionReviewed",
            RetentionEvent::RetentionApplied(_) => "tenancy.RetentionApplied",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            RetentionEvent::RetentionReviewed(r) | RetentionEvent::RetentionApplied(r) => {
                json_of(r)
            }
        }
    }

    fn from_json(t: &str, v: serde_json::Value) -> Option<Result<Self, String>> {
        Some(match t {
            "tenancy.RetentionReviewed" => parse(t, v).map(RetentionEvent::RetentionReviewed),
            "tenancy.RetentionApplied" => parse(t, v).map(RetentionEvent::RetentionApplied),
            _ => return None,
        })
    }
}

/// What the retention aggregate needs to know besides its own events.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionServices {
    pub tenant: TenantStatus,
}

/// A tenant's retention runs: those reviewed and not yet applied, and those applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub pending: Vec<RetentionRun>,
    pub applied: Vec<String>,
}

impl RetentionRun {
    fn validate(&self) -> Result<(), DomainError> {
        check_id("tenant", &self.tenant, 64)?;
        check_id("run_id", &self.run_id, 64)?;
        if self.as_of <= 0 {
            return Err(DomainError::invalid(
                "as_of",
                "`as_of` must be an instant after 1970",
            ));
        }
        if self.datasets.is_empty() {
            return Err(DomainError::invalid(
                "datasets",
                "a retention run needs at least one dataset with a time to live",
            ));
        }
        let mut rows = 0u64;
        for (i, cut) in self.datasets.iter().enumerate() {
            check_id("datasets.dataset", &cut.dataset, 64)?;
            if i > 0 && self.datasets[i - 1].dataset >= cut.dataset {
                return Err(DomainError::invalid(
                    "datasets",
                    "datasets must be sorted by name and named once",
                ));
            }
            if cut.ttl_seconds <= 0 {
                return Err(DomainError::invalid(
                    "datasets.ttl_seconds",
                    format!("the time to live of `{}` must be positive", cut.dataset),
                ));
            }
            let cutoff = cut
                .ttl_seconds
                .checked_mul(1_000_000)
                .and_then(|ttl| self.as_of.checked_sub(ttl));
            if cutoff != Some(cut.cutoff) {
                return Err(DomainError::invalid(
                    "datasets.cutoff",
                    format!(
                        "the cutoff of `{}` must be `as_of` minus its time to live",
                        cut.dataset
                    ),
                ));
            }
            rows += cut.rows;
        }
        if rows != self.rows {
            return Err(DomainError::invalid(
                "rows",
                "`rows` must be the sum of the datasets' rows",
            ));
        }
        if self.digest.len() != 64 || !self.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DomainError::invalid(
                "digest",
                "`digest` must be a SHA-256 in hex (64 characters)",
            ));
        }
        Ok(())
    }
}

impl Retention {
    fn decide(
        &self,
        command: RetentionCommand,
        services: &RetentionServices,
    ) -> Result<Option<RetentionEvent>, DomainError> {
        match command {
            RetentionCommand::ReviewRetention(run) => {
                // Whatever the tenant's status — an archived tenant's rows still age out.
                if services.tenant == TenantStatus::Unknown {
                    return Err(DomainError::not_found(
                        "unknown_tenant",
                        format!("tenant `{}` does not exist; provision it first", run.tenant),
                    ));
                }
                run.validate()?;
                if let Some(same) = self.pending.iter().find(|r| r.run_id == run.run_id) {
                    return if *same == run {
                        Ok(None)
                    } else {
                        Err(DomainError::conflict(
                            "retention_run_exists",
                            format!(
                                "retention run `{}` was already reviewed with other figures; use a new run id",
                                run.run_id
                            ),
                        ))
                    };
                }
                if self.applied.contains(&run.run_id) {
                    return Err(DomainError::conflict(
                        "retention_run_exists",
                        format!(
                            "retention run `{}` was already applied; use a new run id",
                            run.run_id
                        ),
                    ));
                }
                Ok(Some(RetentionEvent::RetentionReviewed(run)))
            }
            RetentionCommand::ApplyRetention { run_id, digest } => {
                if self.applied.contains(&run_id) {
                    // Applied before: a repeat changes nothing.
                    return Ok(None);
                }
                let Some(run) = self.pending.iter().find(|r| r.run_id == run_id) else {
                    return Err(DomainError::not_found(
                        "unknown_retention_run",
                        format!(
                            "no dry run `{run_id}` to apply; run `annals retention run --dry-run` first"
                        ),
                    ));
                };
                if run.digest != digest {
                    return Err(DomainError::conflict(
                        "retention_rows_changed",
                        format!(
                            "the rows dry run `{run_id}` listed are not the rows found now (another run removed some, or the read model was rebuilt differently); review again with `annals retention run --dry-run`"
                        ),
                    ));
                }
                Ok(Some(RetentionEvent::RetentionApplied(run.clone())))
            }
        }
    }
}

impl Aggregate for Retention {
    const TYPE: &'static str = RETENTION_STREAM_TYPE;
    type Command = RetentionCommand;
    type Event = RetentionEvent;
    type Error = DomainError;
    type Services = RetentionServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            RetentionEvent::RetentionReviewed(run) => self.pending.push(run),
            RetentionEvent::RetentionApplied(run) => {
                self.pending.retain(|r| r.run_id != run.run_id);
                self.applied.push(run.run_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Retention>;

    fn active() -> RetentionServices {
        RetentionServices {
            tenant: TenantStatus::Active,
        }
    }

    fn run() -> RetentionRun {
        RetentionRun {
            tenant: "acme".into(),
            run_id: "r-1".into(),
            as_of: 1_000_000_000_000,
            bound: 42,
            datasets: vec![
                RetentionCut {
                    dataset: "events".into(),
                    ttl_seconds: 10,
                    cutoff: 1_000_000_000_000 - 10_000_000,
                    rows: 3,
                },
                RetentionCut {
                    dataset: "signals".into(),
                    ttl_seconds: 60,
                    cutoff: 1_000_000_000_000 - 60_000_000,
                    rows: 2,
                },
            ],
            rows: 5,
            digest: "ab".repeat(32),
        }
    }

    fn refused_with(result: Result<Vec<RetentionEvent>, DomainError>, code: &str) {
        match result {
            Err(e) => assert_eq!(e.code, code, "{e:?}"),
            Ok(events) => panic!("expected {code}, got {events:?}"),
        }
    }

    #[test]
    fn a_reviewed_run_is_applied_once_and_only_with_the_same_rows() {
        Given::with(active())
            .given_no_previous_events()
            .when(RetentionCommand::ReviewRetention(run()))
            .then_expect_events(vec![RetentionEvent::RetentionReviewed(run())]);
        Given::with(active())
            .given(vec![RetentionEvent::RetentionReviewed(run())])
            .when(RetentionCommand::ReviewRetention(run()))
            .then_expect_events(vec![]);
        let r = Given::with(active())
            .given(vec![RetentionEvent::RetentionReviewed(run())])
            .when(RetentionCommand::ApplyRetention {
                run_id: "r-1".into(),
                digest: "cd".repeat(32),
            })
            .inspect_result();
        refused_with(r, "retention_rows_changed");
        Given::with(active())
            .given(vec![RetentionEvent::RetentionReviewed(run())])
            .when(RetentionCommand::ApplyRetention {
                run_id: "r-1".into(),
                digest: "ab".repeat(32),
            })
            .then_expect_events(vec![RetentionEvent::RetentionApplied(run())]);
        Given::with(active())
            .given(vec![
                RetentionEvent::RetentionReviewed(run()),
                RetentionEvent::RetentionApplied(run()),
            ])
            .when(RetentionCommand::ApplyRetention {
                run_id: "r-1".into(),
                digest: "ab".repeat(32),
            })
            .then_expect_events(vec![]);
        let r = Given::with(active())
            .given(vec![
                RetentionEvent::RetentionReviewed(run()),
                RetentionEvent::RetentionApplied(run()),
            ])
            .when(RetentionCommand::ReviewRetention(run()))
            .inspect_result();
        refused_with(r, "retention_run_exists");
        let r = Given::with(active())
            .given_no_previous_events()
            .when(RetentionCommand::ApplyRetention {
                run_id: "r-1".into(),
                digest: "ab".repeat(32),
            })
            .inspect_result();
        refused_with(r, "unknown_retention_run");
    }

    #[test]
    fn malformed_runs_are_refused_by_field() {
        type Damage = fn(&mut RetentionRun);
        let cases: Vec<(&str, Damage)> = vec![
            ("datasets", |r| r.datasets.clear()),
            ("datasets", |r| r.datasets.reverse()),
            ("datasets.ttl_seconds", |r| r.datasets[0].ttl_seconds = 0),
            ("datasets.cutoff", |r| r.datasets[0].cutoff += 1),
            ("rows", |r| r.rows = 4),
            ("digest", |r| r.digest = "xyz".into()),
            ("run_id", |r| r.run_id = "has space".into()),
        ];
        for (field, damage) in cases {
            let mut bad = run();
            damage(&mut bad);
            match Given::with(active())
                .given_no_previous_events()
                .when(RetentionCommand::ReviewRetention(bad))
                .inspect_result()
            {
                Err(e) => assert_eq!(e.field.as_deref(), Some(field), "{e:?}"),
                Ok(events) => panic!("{field}: accepted {events:?}"),
            }
        }
        let r = Given::with(RetentionServices::default())
            .given_no_previous_events()
            .when(RetentionCommand::ReviewRetention(run()))
            .inspect_result();
        refused_with(r, "unknown_tenant");
    }
}
