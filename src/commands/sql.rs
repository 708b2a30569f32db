//! `annals sql "<query>"`: an analyst's query over the analytics tables — on ClickHouse when
//! `[read_models] clickhouse` is set, otherwise with DataFusion over the embedded Parquet
//! files. Same table names either way (`annals sql --tables` lists them, documented in
//! docs/analytics.md). Read-only: statements that would change anything are refused.

use std::process::ExitCode;

use annals_projections::analytics::{self, Format};

use crate::commands::projections::{analytics_failure, analytics_store, runtime};
use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// The query, e.g. "SELECT tenant, count(*) FROM signals GROUP BY tenant ORDER BY tenant".
    query: Option<String>,
    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Print the schema reference of every table (Markdown) instead of running a query.
    #[arg(long, conflicts_with = "query")]
    tables: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    if args.tables {
        print!("{}", analytics::model::reference_markdown());
        return Ok(ExitCode::SUCCESS);
    }
    let Some(query) = args.query.filter(|q| !q.trim().is_empty()) else {
        return Err(Failure::usage(
            "give a query, e.g. annals sql \"SELECT tenant, count(*) FROM signals GROUP BY tenant\" (tables: annals sql --tables)",
        ));
    };
    let format = match args.format {
        OutputFormat::Table => Format::Table,
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Json => Format::Json,
    };
    let store = analytics_store(ctx)?;
    if let analytics::Analytics::Parquet(_) = &store
        && !ctx.data_dir.join("read-models").join("analytics").is_dir()
    {
        return Err(Failure::usage(format!(
            "no analytics tables in {}: run `annals --data-dir {} projections run` first (or `annals demo`)",
            ctx.data_dir.display(),
            ctx.data_dir.display()
        )));
    }
    let out = runtime()?
        .block_on(store.query(&query, format))
        .map_err(|e| match e {
            analytics::AnalyticsError::Query(m) => {
                Failure::usage(format!("query refused: {m} (tables: annals sql --tables)"))
            }
            other => analytics_failure(other),
        })?;
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
