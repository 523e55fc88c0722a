//! Command-line interface: argument definitions and dispatch.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

mod analyze;
mod certs;
mod cluster;
mod datasets;
mod lake;
mod run;
mod simulate;

/// KaiABC Stream: cyanobacterial circadian clocks entrained by live sensor temperature.
#[derive(Debug, Parser)]
#[command(name = "kaiabc", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How logs are written to stderr: text, or one JSON object per event (for Loki).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "KAIABC_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: crate::logs::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Integrate one clock through a temperature history and print its time series.
    Simulate(SimulateArgs),
    /// Rhythm analysis of a CSV time series, or the model's phase response curve.
    #[command(subcommand)]
    Analyze(AnalyzeCommand),
    /// Replay sensor logs through the dataflow into the Parquet lake.
    Replay(lake::ReplayArgs),
    /// Run SQL over the lake (tables readings, states, rhythms, dead_letters), a directory or
    /// `s3://BUCKET/PREFIX`.
    Query(lake::QueryArgs),
    /// The lake on object storage: `kaiabc lake push` mirrors its committed files to S3.
    #[command(subcommand)]
    Lake(lake::LakeCommand),
    /// Run the live pipeline: MQTT (embedded or external), optionally Kafka, dataflow, HTTP
    /// API, lake.
    Run(Box<run::RunArgs>),
    /// Config files: `kaiabc config template` prints one with every key.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the MQTT → Kafka bridge alone (at-least-once: acks after Kafka has the message).
    Bridge(run::BridgeArgs),
    /// Mint a JWT for the API with the configured secret (bootstraps the first admin).
    Token(run::TokenArgs),
    /// Synthetic sensor logs.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Launch and supervise a timely cluster of local processes running `replay …` or `run …`.
    Cluster(cluster::ClusterCommandArgs),
    /// Make a local CA and a server certificate for MQTT over TLS (`run --mqtt-tls-listen`).
    Certs(certs::CertsArgs),
}

/// ETF presets as the CLI spells them.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EtfArg {
    /// E_A 45 / E_0 25 kJ/mol: temperature-compensated, phase-dependent PRC.
    Compensated,
    /// E_A = E_0 = 40 kJ/mol: temperature only rescales time.
    Uncompensated,
}

impl From<EtfArg> for kaiabc_operators::EtfPreset {
    fn from(e: EtfArg) -> Self {
        match e {
            EtfArg::Compensated => Self::Compensated,
            EtfArg::Uncompensated => Self::Uncompensated,
        }
    }
}

/// Output formats of `simulate`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated with a header row.
    Csv,
    /// A JSON array of row objects with the CSV header's keys.
    Json,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("temperature").required(true).args(["temperature_c", "temperature_csv"])))]
pub struct SimulateArgs {
    /// Hours of model time to simulate.
    #[arg(long)]
    hours: f64,
    /// Constant temperature in °C.
    #[arg(long, allow_negative_numbers = true)]
    temperature_c: Option<f64>,
    /// Temperature history: CSV with columns `t_hours,temperature_kelvin` (linear between rows,
    /// constant beyond the ends).
    #[arg(long)]
    temperature_csv: Option<PathBuf>,
    /// Output interval in minutes.
    #[arg(long, default_value_t = 10.0)]
    step_minutes: f64,
    /// Temperature dependence of the rates.
    #[arg(long, value_enum, default_value = "compensated")]
    etf: EtfArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Circadian time to start at (on the 30 °C limit cycle).
    #[arg(long, default_value_t = 0.0, conflicts_with = "initial_state")]
    initial_ct: f64,
    /// Start from an explicit state instead: `T,ST,S` in µM (T432-, doubly and S431-phosphorylated
    /// KaiC). Needed when the parameters do not oscillate (e.g. `--a-total 2`).
    #[arg(long, value_name = "T,ST,S")]
    initial_state: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// Relative tolerance of the integrator.
    #[arg(long, default_value_t = 1e-6)]
    rtol: f64,
    /// Absolute tolerance of the integrator (µM).
    #[arg(long, default_value_t = 1e-9)]
    atol: f64,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Model constants a lab may change (defaults: Rust et al. 2007).
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Total KaiC (µM).
    #[arg(long, default_value_t = 3.4)]
    c_total: f64,
    /// Total KaiA (µM); 2.0 damps the oscillation out.
    #[arg(long, default_value_t = 1.3)]
    a_total: f64,
    /// KaiA half-saturation constant K½ (µM).
    #[arg(long, default_value_t = 0.43)]
    k_half: f64,
    /// Multiplies every rate (the period scales as 1/rate_scale).
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
}

impl ModelArgs {
    /// The clock configuration these flags describe.
    pub fn config(&self, etf: EtfArg) -> kaiabc_operators::ClockConfig {
        let mut etf = kaiabc_operators::Etf::preset(etf.into());
        etf.rate_scale = self.rate_scale;
        kaiabc_operators::ClockConfig {
            params: kaiabc_operators::KaiParams {
                c_total: self.c_total,
                a_total: self.a_total,
                k_half: self.k_half,
                ..Default::default()
            },
            etf,
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum AnalyzeCommand {
    /// Lomb–Scargle periodogram (astropy's defaults), refined peak and Baluev false-alarm probability.
    Periodogram(PeriodogramArgs),
    /// Cosinor fit: one or more components (--components 24,12), or the population-mean
    /// cosinor of several series (--population).
    Cosinor(CosinorArgs),
    /// Continuous wavelet transform (Morlet, Torrence & Compo 1998): power over time and
    /// period, cone of influence, and significance against red noise.
    Wavelet(WaveletArgs),
    /// Whether a series drifts: least-squares slope with autocorrelation-robust (HAC) errors,
    /// and the Mann–Kendall test with Sen's slope (e.g. a node's period per rhythm window).
    Trend(TrendArgs),
    /// The model's phase response curve to a temperature step, by simulation.
    Prc(PrcArgs),
}

/// Where the series comes from.
#[derive(Debug, Args)]
pub struct SeriesArgs {
    /// CSV file with a header row.
    #[arg(long)]
    input: PathBuf,
    /// Column holding time in hours.
    #[arg(long, default_value = "t_hours")]
    time_column: String,
    /// Column holding the values.
    #[arg(long, default_value = "value")]
    value_column: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PeriodogramArgs {
    #[command(flatten)]
    series: SeriesArgs,
    /// Shortest period searched (h).
    #[arg(long, default_value_t = 16.0)]
    min_period_hours: f64,
    /// Longest period searched (h).
    #[arg(long, default_value_t = 32.0)]
    max_period_hours: f64,
    /// Grid density: frequency spacing is 1/(samples_per_peak × baseline) before refinement.
    #[arg(long, default_value_t = 5.0)]
    samples_per_peak: f64,
}

#[derive(Debug, Args)]
pub struct CosinorArgs {
    /// CSV file with a header row; repeat for a population (one member per file).
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// Column holding time in hours.
    #[arg(long, default_value = "t_hours")]
    time_column: String,
    /// Column holding the values.
    #[arg(long, default_value = "value")]
    value_column: String,
    /// The period fitted (h), for one component.
    #[arg(long, default_value_t = 24.0, conflicts_with = "components")]
    period_hours: f64,
    /// The periods of a multi-component fit (h), e.g. 24,12.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    components: Vec<f64>,
    /// Population-mean cosinor (Cornelissen 2014): one member per --input file, or per value
    /// of --group-column.
    #[arg(long)]
    population: bool,
    /// Column naming each row's member (e.g. node_id), for --population over one file.
    #[arg(long, requires = "population")]
    group_column: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct WaveletArgs {
    #[command(flatten)]
    series: SeriesArgs,
    /// Shortest period analysed (h); at least two grid steps.
    #[arg(long, default_value_t = 4.0)]
    min_period_hours: f64,
    /// Longest period analysed (h).
    #[arg(long, default_value_t = 48.0)]
    max_period_hours: f64,
    /// Scale spacing in octaves (1/12: twelve periods per doubling).
    #[arg(long, default_value_t = 1.0 / 12.0)]
    dj: f64,
    /// Grid step (h); uneven readings are averaged into bins of this width and empty bins
    /// interpolated and flagged. Default: the median spacing of the readings.
    #[arg(long)]
    dt_hours: Option<f64>,
    /// Level of the significance curves against red noise.
    #[arg(long, default_value_t = 0.95)]
    significance_level: f64,
}

#[derive(Debug, Args)]
pub struct TrendArgs {
    /// CSV file with a header row.
    #[arg(long)]
    input: PathBuf,
    /// Column holding the time (any unit; the slope is per unit of it).
    #[arg(long, default_value = "t_days")]
    time_column: String,
    /// Column holding the values.
    #[arg(long, default_value = "period_hours")]
    value_column: String,
    /// Lags of the Bartlett kernel; default ⌊4(n/100)^(2/9)⌋ (Newey & West 1994).
    #[arg(long)]
    max_lags: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PrcArgs {
    /// Temperature step (K), positive = warmer.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    delta_k: f64,
    /// Length of the step (min).
    #[arg(long, default_value_t = 120.0)]
    duration_minutes: f64,
    /// The KaiA total during the step, as a factor of the configured one (a KaiA step, the
    /// `parameter_modulation` shift; with --delta-k 0 for the KaiA alone).
    #[arg(long, default_value_t = 1.0)]
    kaia_factor: f64,
    /// Temperature dependence of the rates.
    #[arg(long, value_enum, default_value = "compensated")]
    etf: EtfArg,
    /// Number of circadian times.
    #[arg(long, default_value_t = 24)]
    resolution: usize,
    /// Base temperature in °C.
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
    temperature_c: f64,
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    // Logging started before parsing (`logs::format_from` read the same flag); clap checked it.
    let _ = cli.log_format;
    match cli.command {
        Command::Simulate(a) => simulate::run(&a),
        Command::Analyze(AnalyzeCommand::Periodogram(a)) => analyze::periodogram(&a),
        Command::Analyze(AnalyzeCommand::Cosinor(a)) => analyze::cosinor(&a),
        Command::Analyze(AnalyzeCommand::Wavelet(a)) => analyze::wavelet(&a),
        Command::Analyze(AnalyzeCommand::Trend(a)) => analyze::trend(&a),
        Command::Analyze(AnalyzeCommand::Prc(a)) => analyze::prc(&a),
        Command::Replay(a) => lake::replay(&a),
        Command::Query(a) => lake::query(&a),
        Command::Lake(lake::LakeCommand::Push(a)) => lake::push(&a),
        Command::Run(a) => run::run(&a),
        Command::Certs(a) => certs::run(&a),
        Command::Token(a) => run::token(&a),
        Command::Bridge(a) => run::bridge(&a),
        Command::Config(ConfigCommand::Template) => {
            print!("{}", config_template());
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let keys =
                check_config_text(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!("{}: {keys} keys, valid", file.display());
            Ok(())
        }
        Command::Datasets(datasets::DatasetsCommand::Generate(a)) => datasets::generate(&a),
        Command::Cluster(a) => cluster::cluster(&a),
    }
}

/// The `run` command's definition, for its flags' defaults and value checks.
fn run_command() -> clap::Command {
    use clap::CommandFactory;
    // Built, so that the global flags (`--log-format`) are the run command's too.
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand("run").expect("the run command").clone()
}

/// A commented config file with every key and its built-in default (from the command's own
/// definition, so they cannot drift).
pub fn config_template() -> String {
    let run = run_command();
    crate::config::template(|flag| {
        let long = flag.strip_prefix("--")?;
        let arg = run.get_arguments().find(|a| a.get_long() == Some(long))?;
        if !arg.get_action().takes_values() {
            return Some("false".into()); // a switch
        }
        let d = arg.get_default_values().first()?;
        Some(d.to_string_lossy().into_owned())
    })
}

/// Checks a config file's text as `kaiabc run` would take it: TOML, known keys, and every value
/// through its flag's own parser. Returns the number of keys.
pub fn check_config_text(text: &str) -> Result<usize, String> {
    let env = crate::config::parse_text(text).map_err(|e| e.to_string())?;
    let run = run_command();
    let mut argv = vec!["run".to_string()];
    for (var, value) in &env {
        let Some(flag) = crate::config::flag_of(var) else {
            continue;
        };
        let long = flag.trim_start_matches('-');
        let switch = run
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .is_some_and(|a| !a.get_action().takes_values());
        match (switch, value.as_str()) {
            (true, "true") => argv.push(flag.to_string()),
            (true, "false") => {}
            (true, v) => return Err(format!("{flag} is a switch: true or false, not {v:?}")),
            (false, v) => argv.push(format!("{flag}={v}")),
        }
    }
    run.try_get_matches_from(argv)
        .map_err(|e| e.render().to_string().trim().to_string())?;
    Ok(env.len())
}

/// `kaiabc config …`
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print a commented config file with every key, its flag and its environment variable.
    Template,
    /// Check a config file: valid TOML, known keys, plain values.
    Check {
        /// The file.
        file: std::path::PathBuf,
    },
}
