//! `observastack loadgen`: the command-line flags and the start-up around [`run`](crate::run).

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::plan::{LoadPlan, Mix, Pattern};
use crate::{DEFAULT_MAX_IN_FLIGHT, LoadgenSettings};

/// The pattern kinds `--pattern` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PatternKind {
    /// The base rate, always.
    Constant,
    /// From `--rate` to `--ramp-to` over `--ramp-duration-s`, then holds.
    Ramp,
    /// `--spike-peak` for `--spike-duration-s` every `--spike-every-s`.
    Spike,
    /// `--rate` ± `--wave-amplitude` over `--wave-period-s`.
    Wave,
}

/// Simulated users of the shop: open-loop arrivals at a target rate, with a control API.
#[derive(Args, Clone, Debug)]
pub struct LoadgenArgs {
    /// Address of the control API (`/load`, `/stats`, `/failures`, `/metrics`).
    #[arg(long, default_value = "127.0.0.1:8300")]
    pub listen: SocketAddr,
    /// Base URL of the shop's gateway.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub target: String,
    /// Base arrival rate in requests per second (0 to 5000).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How the rate moves over time.
    #[arg(long, value_enum, default_value_t = PatternKind::Constant)]
    pub pattern: PatternKind,
    /// Ramp: the rate reached at the end.
    #[arg(long, default_value_t = 100.0)]
    pub ramp_to: f64,
    /// Ramp: how long it takes, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub ramp_duration_s: f64,
    /// Spike: the rate during a spike.
    #[arg(long, default_value_t = 100.0)]
    pub spike_peak: f64,
    /// Spike: seconds from the start of one spike to the start of the next.
    #[arg(long, default_value_t = 60.0)]
    pub spike_every_s: f64,
    /// Spike: how long each spike lasts, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub spike_duration_s: f64,
    /// Wave: how far the rate swings above and below `--rate`.
    #[arg(long, default_value_t = 5.0)]
    pub wave_amplitude: f64,
    /// Wave: the period of one swing, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub wave_period_s: f64,
    /// Endpoint weights, e.g. `browse=5,order=2`; endpoints not named get weight 0. Endpoints:
    /// home, browse, order, view_order, process.
    #[arg(long, default_value = "home=1,browse=5,order=2,view_order=2,process=1", value_parser = parse_mix)]
    pub mix: Mix,
    /// Start paused (resume with `POST /load/resume`).
    #[arg(long)]
    pub paused: bool,
    /// How long a user waits for an answer, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Arrivals beyond this many requests in flight are dropped (and counted) instead of sent.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Token the control API requires (`Authorization: Bearer <token>`); needed to listen on a
    /// non-loopback address.
    #[arg(long, env = "OBSERVASTACK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// OTLP/HTTP endpoint to export traces to (e.g. `http://127.0.0.1:4318`).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    s.parse().map_err(|e: crate::PlanError| e.to_string())
}

impl LoadgenArgs {
    /// The pattern the flags describe.
    pub fn pattern(&self) -> Pattern {
        match self.pattern {
            PatternKind::Constant => Pattern::Constant,
            PatternKind::Ramp => Pattern::Ramp {
                to: self.ramp_to,
                duration_s: self.ramp_duration_s,
            },
            PatternKind::Spike => Pattern::Spike {
                peak: self.spike_peak,
                every_s: self.spike_every_s,
                duration_s: self.spike_duration_s,
            },
            PatternKind::Wave => Pattern::Wave {
                amplitude: self.wave_amplitude,
                period_s: self.wave_period_s,
            },
        }
    }

    /// The settings the flags describe, with the plan validated; the error names the flag's
    /// field.
    pub fn settings(&self) -> anyhow::Result<LoadgenSettings> {
        let plan = LoadPlan {
            rate: self.rate,
            pattern: self.pattern(),
            mix: self.mix,
            paused: self.paused,
            timeout_ms: self.timeout_ms,
        };
        plan.validate().context("Invalid load plan in the command-line flags")?;
        Ok(LoadgenSettings {
            target: self.target.clone(),
            plan,
            max_in_flight: self.max_in_flight,
            admin_token: self.admin_token.clone(),
        })
    }
}

/// Runs `observastack loadgen`: telemetry, the secure-bind check, the listener, then
/// [`run`](crate::run) until SIGTERM or Ctrl-C.
pub async fn run_cli(args: LoadgenArgs) -> anyhow::Result<()> {
    let _telemetry =
        observastack_common::telemetry::init("loadgen", env!("CARGO_PKG_VERSION"), args.otlp_endpoint.as_deref())?;
    let settings = args.settings()?;
    observastack_common::http::check_secure_bind(&args.listen, args.admin_token.as_deref())?;
    let listener = observastack_common::bind(args.listen, "--listen").await?;
    crate::run(listener, settings, observastack_common::shutdown_token()).await
}
