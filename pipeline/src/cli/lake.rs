//! `kaiabc replay` and `kaiabc query`: the dataflow over sensor logs, and SQL over the lake.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use kaiabc_connectors::file::Format;
use kaiabc_connectors::lake::object::{self, S3Location};
use kaiabc_connectors::lake::{self, LakeConfig, OutputFormat};
use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::node::NodeConfig;

use crate::dataflow::replay::{replay as run_replay, ReplayOptions, Speed};

/// Arguments of `kaiabc replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Sensor logs, read in this order (CSV with the reading's field names as header, JSONL
    /// with one reading per line, or Parquet).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The files' format; inferred from each file's extension when not given.
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    /// Timely worker threads (in each process of a cluster).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
    /// The lake's root directory (one directory shared by every process of a cluster).
    #[arg(long, default_value = "data/lake")]
    lake: PathBuf,
    /// Pace: max, realtime, or xN (event time N times faster than the wall clock).
    #[arg(long, default_value = "max")]
    speed: Speed,
    /// Allowed lateness of event time, seconds: readings out of order by less are put back in
    /// order; later ones are kept in `readings` marked late.
    #[arg(long, default_value_t = 60.0)]
    lateness_seconds: f64,
    /// A reading older than this (hours) before its node's newest is refused as
    /// `STALE_TIMESTAMP`.
    #[arg(long, default_value_t = 168.0)]
    max_reading_age_hours: f64,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// A control log (`<lake>/_control/commands.jsonl` of a live run): its commands are merged
    /// into the readings by time, so the replay reproduces them. May be given more than once.
    #[arg(long)]
    control: Vec<PathBuf>,
    /// The node registry (`nodes.json` in a live run's `--state-dir`) the fleet's views group
    /// nodes by; without it every node is `unassigned`.
    #[arg(long)]
    registry: Option<PathBuf>,
    #[command(flatten)]
    fleet: crate::fleet::FleetArgs,
    /// Skip the fleet's views: no `fleet` or `alerts` rows (a replay then runs about a third
    /// faster).
    #[arg(long)]
    no_fleet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FileFormat {
    Csv,
    Jsonl,
    Parquet,
}

/// Arguments of `kaiabc query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// One SQL statement (DataFusion's dialect).
    sql: String,
    /// The lake's root directory, or `s3://BUCKET/PREFIX` (credentials and endpoint from the
    /// `AWS_*` environment variables; `AWS_ENDPOINT_URL` for an S3-compatible server).
    #[arg(long, default_value = "data/lake")]
    lake: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    format: QueryFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum QueryFormat {
    Table,
    Csv,
    Json,
}

pub fn replay(a: &ReplayArgs) -> Result<()> {
    crate::alloc::keep_freed_memory();
    let mut files = Vec::new();
    for f in &a.files {
        let format = match a.format {
            Some(FileFormat::Csv) => Format::Csv,
            Some(FileFormat::Jsonl) => Format::Jsonl,
            Some(FileFormat::Parquet) => Format::Parquet,
            None => Format::infer(f).with_context(|| {
                format!(
                    "{}: cannot tell the format from the extension; pass --format csv|jsonl|parquet",
                    f.display()
                )
            })?,
        };
        if !f.is_file() {
            bail!("{}: no such file", f.display());
        }
        files.push((f.clone(), format));
    }
    if !(a.lateness_seconds.is_finite() && a.lateness_seconds >= 0.0) {
        bail!("--lateness-seconds must be a non-negative number");
    }
    let opts = ReplayOptions {
        files,
        workers: a.workers,
        cluster: a.cluster.clone(),
        lake: LakeConfig::at(&a.lake),
        speed: a.speed,
        lateness: Duration::from_secs_f64(a.lateness_seconds),
        now: chrono::Utc::now(),
        progress: std::io::stderr().is_terminal() && !a.json,
        control: crate::dataflow::replay::read_control_logs(&a.control)?,
        fleet: (!a.no_fleet).then(|| a.fleet.config()).transpose()?,
        registry: match &a.registry {
            Some(p) => crate::fleet::registry_file(p)?,
            None => Vec::new(),
        },
    };
    if !(a.max_reading_age_hours.is_finite() && a.max_reading_age_hours > 0.0) {
        bail!("--max-reading-age-hours must be a positive number");
    }
    let mut cfg =
        NodeConfig::new(ClockConfig::default()).context("building the clock configuration")?;
    cfg.max_age_hours = a.max_reading_age_hours;
    let s = run_replay(opts, cfg)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &s.to_json())?;
        writeln!(out)?;
        return Ok(());
    }
    if a.cluster.is_cluster() {
        writeln!(
            out,
            "process          {} of {}: the counts are this process's workers'; the lake holds every process's rows",
            a.cluster.process, a.cluster.processes
        )?;
    }
    writeln!(out, "events in        {}", s.events_in)?;
    writeln!(
        out,
        "accepted         {} ({} applied, {} late)",
        s.accepted(),
        s.applied,
        s.late
    )?;
    let rejected: u64 = s.rejected.values().sum();
    writeln!(out, "rejected         {rejected}")?;
    for (reason, n) in &s.rejected {
        writeln!(out, "  {:<26}{n}", reason.code())?;
    }
    writeln!(out, "nodes            {}", s.nodes)?;
    writeln!(out, "states out       {}", s.states)?;
    writeln!(out, "rhythm windows   {}", s.rhythm_rows)?;
    writeln!(
        out,
        "lake             {} rows in {} files under {}",
        s.rows_committed,
        s.files_committed,
        a.lake.display()
    )?;
    writeln!(
        out,
        "time             {:.2} s ({:.0} events/s)",
        s.elapsed.as_secs_f64(),
        s.events_per_second()
    )?;
    writeln!(
        out,
        "stages           read+parse+validate {:.2} s, nodes {:.2} s, lake {:.2} s (summed over workers)",
        s.stage_busy[0].as_secs_f64(),
        s.stage_busy[1].as_secs_f64(),
        s.stage_busy[2].as_secs_f64()
    )?;
    writeln!(out, "state per node   {:.0} bytes", s.state_bytes_per_node)?;
    Ok(())
}

pub fn query(a: &QueryArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let s3 = a.lake.to_str().and_then(S3Location::parse);
    let batches = match s3 {
        Some(at) => rt.block_on(async {
            let ctx = object::session(&at).await?;
            lake::collect(&ctx, &a.sql).await
        })?,
        None => rt.block_on(lake::query(&a.lake, &a.sql))?,
    };
    let format = match a.format {
        QueryFormat::Table => OutputFormat::Table,
        QueryFormat::Csv => OutputFormat::Csv,
        QueryFormat::Json => OutputFormat::Json,
    };
    let mut out = std::io::stdout().lock();
    lake::write_batches(&batches, format, &mut out)?;
    if matches!(format, OutputFormat::Json) {
        writeln!(out)?;
    }
    Ok(())
}

/// `kaiabc lake …`.
#[derive(Debug, clap::Subcommand)]
pub enum LakeCommand {
    /// Upload the lake's committed files that the bucket does not hold yet (same key, same
    /// size), under the same paths; DuckDB, DataFusion, Spark and pyarrow then read the bucket.
    Push(PushArgs),
}

/// Arguments of `kaiabc lake push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The lake's root directory.
    #[arg(long, default_value = "data/lake")]
    lake: PathBuf,
    /// Where: `s3://BUCKET/PREFIX` (credentials, region and endpoint from the `AWS_*`
    /// environment variables; `AWS_ENDPOINT_URL` for an S3-compatible server).
    #[arg(long)]
    to: String,
}

pub fn push(a: &PushArgs) -> Result<()> {
    let Some(to) = S3Location::parse(&a.to) else {
        bail!("--to {:?} is not s3://BUCKET[/PREFIX]", a.to);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let store = to.store()?;
    let pushed = rt
        .block_on(object::push(&a.lake, &to, store.as_ref()))
        .with_context(|| format!("pushing {} to {}", a.lake.display(), a.to))?;
    eprintln!(
        "kaiabc lake push: {} files uploaded ({} bytes), {} already there",
        pushed.uploaded, pushed.bytes, pushed.skipped
    );
    Ok(())
}
