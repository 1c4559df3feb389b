//! `observastack up`.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use observastack_agent::{ProcessSpec, RestartPolicy};
use observastack_sut::db;

use crate::state::{Component, Dependency, LabState};

/// The environment variable that asks a child process to die with its parent (see the binary).
pub const PARENT_WATCH_ENV: &str = "OBSERVASTACK_DIE_WITH_PARENT";

/// `observastack up` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Where the lab keeps its state, logs and SQLite database.
    #[arg(long, env = "OBSERVASTACK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (postgres://… or sqlite:…); default: a local PostgreSQL if one answers on
    /// 127.0.0.1:5432, else SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Gateway user path (the shop).
    #[arg(long, default_value_t = 8000)]
    pub gateway_port: u16,
    /// Orders service API (called by the gateway).
    #[arg(long, default_value_t = 8001)]
    pub orders_port: u16,
    /// Gateway admin listener (/config, /metrics).
    #[arg(long, default_value_t = 8100)]
    pub gateway_admin_port: u16,
    /// Orders admin listener (/config, /metrics).
    #[arg(long, default_value_t = 8101)]
    pub orders_admin_port: u16,
    /// Worker admin listener (/config, /metrics).
    #[arg(long, default_value_t = 8102)]
    pub worker_admin_port: u16,
    /// Control agent API.
    #[arg(long, default_value_t = 8200)]
    pub agent_port: u16,
    /// Load generator API.
    #[arg(long, default_value_t = 8300)]
    pub loadgen_port: u16,
    /// Prometheus-compatible query API of the embedded observability backend (also its trace
    /// and log APIs).
    #[arg(long, default_value_t = 9090)]
    pub prometheus_port: u16,
    /// OTLP/HTTP trace receiver of the embedded backend.
    #[arg(long, default_value_t = 4318)]
    pub otlp_port: u16,
    /// Control panel and orchestrator API (scenarios, runs).
    #[arg(long, default_value_t = 8080)]
    pub control_port: u16,
    /// Extra scenarios: `*.yaml` files that add to or override the embedded library by id.
    #[arg(long)]
    pub scenarios: Option<PathBuf>,
    /// Simulated user requests per second at start.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// OTLP/HTTP base URL every component exports traces to (default: the embedded backend).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How long to wait for every component to become ready (seconds).
    #[arg(long, default_value_t = 120)]
    pub ready_timeout_s: u64,
}

impl UpArgs {
    fn ports(&self) -> [(u16, &'static str, &'static str); 10] {
        [
            (
                self.control_port,
                "--control-port",
                "control panel and orchestrator API",
            ),
            (self.prometheus_port, "--prometheus-port", "Prometheus-compatible API"),
            (self.otlp_port, "--otlp-port", "OTLP/HTTP receiver"),
            (self.gateway_port, "--gateway-port", "gateway user path"),
            (self.orders_port, "--orders-port", "orders API"),
            (self.gateway_admin_port, "--gateway-admin-port", "gateway admin"),
            (self.orders_admin_port, "--orders-admin-port", "orders admin"),
            (self.worker_admin_port, "--worker-admin-port", "worker admin"),
            (self.agent_port, "--agent-port", "agent API"),
            (self.loadgen_port, "--loadgen-port", "load generator API"),
        ]
    }

    /// Where traces go: `--otlp-endpoint`, else the embedded backend's receiver.
    fn otlp(&self) -> String {
        self.otlp_endpoint.clone().unwrap_or_else(|| url(self.otlp_port))
    }
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn addr(port: u16) -> String {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port)).to_string()
}

/// Starts the lab, waits for Ctrl-C or SIGTERM, then stops everything.
pub async fn run_up(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = args.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    std::fs::create_dir_all(data_dir.join("logs"))
        .with_context(|| format!("Failed to create the data directory {}", data_dir.display()))?;
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("Failed to resolve {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    check_ports(&args)?;

    let exe = std::env::current_exe().context("Failed to find the observastack executable")?;
    let database = db::resolve(args.database_url.as_deref(), &data_dir).await?;
    println!("{}", database.notice);

    let spec_path = data_dir.join("agent.json");
    let states = config_state_dir(&data_dir);
    let _ = std::fs::remove_dir_all(&states);
    std::fs::create_dir_all(&states).with_context(|| format!("Failed to create {}", states.display()))?;
    let processes = sut_processes(&args, &exe, &data_dir, &database.url);
    std::fs::write(
        &spec_path,
        serde_json::to_vec_pretty(&serde_json::json!({ "processes": processes }))?,
    )
    .with_context(|| format!("Failed to write {}", spec_path.display()))?;

    let logs = data_dir.join("logs");
    let mut telemetry_cmd = child_command(&exe, &logs, "telemetry")?;
    telemetry_cmd.args([
        "telemetry",
        "--listen",
        &addr(args.prometheus_port),
        "--otlp-listen",
        &addr(args.otlp_port),
    ]);
    for (job, port) in [
        ("gateway", args.gateway_admin_port),
        ("orders", args.orders_admin_port),
        ("worker", args.worker_admin_port),
        ("agent", args.agent_port),
        ("loadgen", args.loadgen_port),
        ("orchestrator", args.control_port),
    ] {
        telemetry_cmd
            .arg("--target")
            .arg(format!("{job}={}/metrics", url(port)));
    }
    let mut agent_cmd = child_command(&exe, &logs, "agent")?;
    agent_cmd
        .args(["agent", "--listen", &addr(args.agent_port), "--spec"])
        .arg(&spec_path)
        .arg("--log-dir")
        .arg(&logs)
        .arg("--forward-logs")
        .arg(url(args.prometheus_port));
    let mut loadgen_cmd = child_command(&exe, &logs, "loadgen")?;
    loadgen_cmd.args([
        "loadgen",
        "--listen",
        &addr(args.loadgen_port),
        "--target",
        &url(args.gateway_port),
        "--rate",
        &args.rate.to_string(),
    ]);
    let mut orchestrator_cmd = child_command(&exe, &logs, "orchestrator")?;
    orchestrator_cmd
        .args(["orchestrator", "--listen", &addr(args.control_port), "--data-dir"])
        .arg(&data_dir)
        .args([
            "--gateway-admin",
            &url(args.gateway_admin_port),
            "--orders-admin",
            &url(args.orders_admin_port),
            "--worker-admin",
            &url(args.worker_admin_port),
            "--agent",
            &url(args.agent_port),
            "--loadgen",
            &url(args.loadgen_port),
            "--prometheus-url",
            &url(args.prometheus_port),
            "--shop-url",
            &format!("{}/", url(args.gateway_port)),
            "--sut-postgres",
            if database.backend == db::Backend::Postgres {
                "true"
            } else {
                "false"
            },
        ]);
    if let Some(dir) = &args.scenarios {
        orchestrator_cmd.arg("--scenarios").arg(dir);
    }
    for cmd in [&mut agent_cmd, &mut loadgen_cmd, &mut orchestrator_cmd] {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", args.otlp());
    }
    // The fault channel's token: the orchestrator and the SUT services (through the agent, whose
    // children inherit its environment) know it, a learner's tools do not. Also kept, readable by
    // its owner only, in the data directory for the lab's own tools (a second orchestrator).
    let fault_token = fault_token();
    write_private(&data_dir.join("fault-token"), &fault_token)?;
    for cmd in [&mut agent_cmd, &mut orchestrator_cmd] {
        cmd.env("OBSERVASTACK_FAULT_TOKEN", &fault_token);
    }
    let mut children = Children {
        // The backend first, so the first spans and log lines have somewhere to go.
        telemetry: Some(
            telemetry_cmd
                .spawn()
                .context("Failed to start the observability backend")?,
        ),
        agent: Some(agent_cmd.spawn().context("Failed to start the agent")?),
        loadgen: Some(loadgen_cmd.spawn().context("Failed to start the load generator")?),
        orchestrator: Some(orchestrator_cmd.spawn().context("Failed to start the orchestrator")?),
        commands: BTreeMap::new(),
    };
    // Kept to start each again if it exits once the lab is up.
    children.commands = BTreeMap::from([
        ("telemetry", telemetry_cmd),
        ("agent", agent_cmd),
        ("loadgen", loadgen_cmd),
        ("orchestrator", orchestrator_cmd),
    ]);

    let mut state = LabState {
        pid: std::process::id(),
        started_at_ms: observastack_common::now_millis(),
        data_dir: data_dir.clone(),
        agent_url: url(args.agent_port),
        components: components(&args, &children),
        dependencies: vec![Dependency {
            name: "database".to_owned(),
            kind: serde_json::to_value(database.backend)?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            url: db::redact(&database.url),
        }],
    };
    let outcome = async {
        wait_ready(&state, &mut children, Duration::from_secs(args.ready_timeout_s)).await?;
        state.write()?;
        print_urls(&state, &data_dir, started.elapsed());
        supervise(
            &mut children,
            &mut state,
            &data_dir.join("logs"),
            &url(args.control_port),
        )
        .await
    }
    .await;

    println!("Stopping…");
    children.stop().await;
    let _ = std::fs::remove_file(LabState::path(&data_dir));
    match outcome {
        Ok(()) => {
            println!("Stopped.");
            Ok(())
        }
        Err(e) => Err(e.context(format!("see the logs in {}", logs.display()))),
    }
}

/// One lab per data directory: an exclusive lock held for the life of `up`.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = data_dir.join("up.lock");
    let file = File::create(&path).with_context(|| format!("Failed to open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
            let pid = LabState::read_running(data_dir).ok().flatten().map(|s| s.pid);
            let who = pid.map_or_else(String::new, |p| format!(" (pid {p})"));
            anyhow::bail!(
                "ObservaStack is already running from {}{who}. See it with `observastack status`, stop it with Ctrl-C in its terminal{}, or start a second lab with another --data-dir and other ports.",
                data_dir.display(),
                pid.map_or_else(String::new, |p| format!(" or `kill {p}`"))
            )
        }
        Err((_, errno)) => Err(anyhow::anyhow!("Failed to lock {}: {errno}", path.display())),
    }
}

/// Every port must be free before anything starts, and the error names the flag to change.
fn check_ports(args: &UpArgs) -> anyhow::Result<()> {
    let ports = args.ports();
    for (i, (port, flag, what)) in ports.iter().enumerate() {
        if let Some((_, other, _)) = ports[..i].iter().find(|(p, ..)| p == port) {
            anyhow::bail!("port {port} is given to both {other} and {flag}; give {flag} another port");
        }
        if let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, *port)) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::bail!("port {port} ({what}) is in use; choose another with {flag} <PORT>");
            }
            anyhow::bail!("cannot listen on port {port} ({what}): {e}; choose another with {flag} <PORT>");
        }
    }
    Ok(())
}

/// Writes `text` to `path`, readable and writable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("Failed to create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("Failed to write {}", path.display()))
}

/// A fresh random token (128 bits from the OS), hex.
fn fault_token() -> String {
    use std::io::Read as _;
    let mut bytes = [0_u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom: the time and pid still make it unguessable enough for a loopback lab.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ u128::from(std::process::id()) << 64;
        bytes = seed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the SUT services keep their configuration across restarts (emptied when a lab starts,
/// so a new lab starts from the defaults).
pub fn config_state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("config-state")
}

fn sut_processes(args: &UpArgs, exe: &Path, data_dir: &Path, database_url: &str) -> Vec<ProcessSpec> {
    let mut env = BTreeMap::from([
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), args.otlp()),
    ]);
    env.extend(malloc_env().map(|(k, v)| (k.to_owned(), v)));
    let data = data_dir.display().to_string();
    let states = config_state_dir(data_dir);
    let spec = |name: &str, mut args: Vec<String>| ProcessSpec {
        name: name.to_owned(),
        program: exe.to_owned(),
        args: {
            // A service restarted by the agent comes back with what was deployed to it.
            args.push("--config-state".to_owned());
            args.push(states.join(format!("{name}.json")).display().to_string());
            args
        },
        env: env.clone(),
        restart: RestartPolicy::Always,
    };
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    vec![
        spec(
            "orders",
            s(&[
                "sut",
                "orders",
                "--listen",
                &addr(args.orders_port),
                "--admin-listen",
                &addr(args.orders_admin_port),
                "--data-dir",
                &data,
            ]),
        ),
        spec(
            "gateway",
            s(&[
                "sut",
                "gateway",
                "--listen",
                &addr(args.gateway_port),
                "--admin-listen",
                &addr(args.gateway_admin_port),
                "--orders-url",
                &url(args.orders_port),
            ]),
        ),
        spec(
            "worker",
            s(&[
                "sut",
                "worker",
                "--admin-listen",
                &addr(args.worker_admin_port),
                "--data-dir",
                &data,
            ]),
        ),
    ]
}

/// glibc's malloc keeps up to eight arenas per core, one per thread that contends, and the
/// freed memory of each stays resident: after 5 minutes at 300 requests/s two arenas held the lab
/// at 239 MB RSS where the default held it at 270 MB (`bench/soak.sh`, SQLite; decisions.md).
/// Set for every process `up` starts, unless the caller set it.
fn malloc_env() -> Option<(&'static str, String)> {
    const NAME: &str = "MALLOC_ARENA_MAX";
    std::env::var_os(NAME).is_none().then(|| (NAME, "2".to_owned()))
}

fn child_command(exe: &Path, logs: &Path, name: &str) -> anyhow::Result<Command> {
    let log_path = logs.join(format!("{name}.log"));
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("Failed to open {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env(PARENT_WATCH_ENV, "1")
        .envs(malloc_env())
        // Its own process group: a Ctrl-C in the terminal reaches `up`, which stops the children
        // in order (load first, then the agent and the SUT it supervises).
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

fn components(args: &UpArgs, children: &Children) -> Vec<Component> {
    let sut = |name: &str, admin: u16, user: Option<u16>| {
        let mut endpoints = BTreeMap::from([
            ("admin".to_owned(), url(admin)),
            ("metrics".to_owned(), format!("{}/metrics", url(admin))),
        ]);
        if let Some(port) = user {
            endpoints.insert("user".to_owned(), format!("{}/", url(port)));
        }
        Component {
            name: name.to_owned(),
            pid: None,
            endpoints,
            ready_url: format!("{}/readyz", url(admin)),
            supervised: true,
            restarts: 0,
        }
    };
    let own = |name: &str, port: u16, pid: Option<u32>| Component {
        name: name.to_owned(),
        pid,
        endpoints: BTreeMap::from([
            ("control".to_owned(), url(port)),
            ("metrics".to_owned(), format!("{}/metrics", url(port))),
        ]),
        ready_url: format!("{}/readyz", url(port)),
        supervised: false,
        restarts: 0,
    };
    vec![
        sut("gateway", args.gateway_admin_port, Some(args.gateway_port)),
        sut("orders", args.orders_admin_port, None),
        sut("worker", args.worker_admin_port, None),
        {
            let mut telemetry = own(
                "telemetry",
                args.prometheus_port,
                children.telemetry.as_ref().and_then(Child::id),
            );
            telemetry.endpoints.remove("control");
            telemetry
                .endpoints
                .insert("prometheus".to_owned(), url(args.prometheus_port));
            telemetry.endpoints.insert("otlp".to_owned(), url(args.otlp_port));
            telemetry
        },
        own("agent", args.agent_port, children.agent.as_ref().and_then(Child::id)),
        own(
            "loadgen",
            args.loadgen_port,
            children.loadgen.as_ref().and_then(Child::id),
        ),
        {
            let mut orchestrator = own(
                "orchestrator",
                args.control_port,
                children.orchestrator.as_ref().and_then(Child::id),
            );
            orchestrator
                .endpoints
                .insert("ui".to_owned(), format!("{}/", url(args.control_port)));
            orchestrator
        },
    ]
}

/// Polls every component's readiness, printing what each is still waiting for.
async fn wait_ready(state: &LabState, children: &mut Children, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()?;
    let deadline = Instant::now() + timeout;
    let mut last_said: BTreeMap<String, String> = BTreeMap::new();
    let logs = state.data_dir.join("logs");
    loop {
        children.check_alive(&logs)?;
        // A SUT process that exits while the lab starts (a bad --database-url) is restarted by
        // the agent and would crash-loop until the timeout: say so at once, with its errors.
        if let Some(failure) = sut_start_failure(&client, &state.agent_url, &logs).await {
            anyhow::bail!("{failure}");
        }
        let mut pending = Vec::new();
        for c in &state.components {
            let why = match client.get(&c.ready_url).send().await {
                Ok(r) if r.status().is_success() => continue,
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| "not ready".to_owned()),
                Err(_) => "starting".to_owned(),
            };
            if last_said.get(&c.name) != Some(&why) && why != "starting" {
                println!("  {}: {why}…", c.name);
            }
            last_said.insert(c.name.clone(), why.clone());
            pending.push(format!("{} ({why})", c.name));
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("not ready after {} s: {}", timeout.as_secs(), pending.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first SUT process the agent saw exit during start-up, with its last error lines.
async fn sut_start_failure(client: &reqwest::Client, agent: &str, logs: &Path) -> Option<String> {
    let body: serde_json::Value = client
        .get(format!("{agent}/processes"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let exited = body["processes"]
        .as_array()?
        .iter()
        .find(|p| !p["last_exit"].is_null())?;
    let name = exited["name"].as_str()?;
    Some(format!(
        "{name} exited while the lab was starting ({}): {}",
        exited["last_exit"].as_str().unwrap_or("unknown status"),
        last_errors(&logs.join(format!("{name}.log")))
    ))
}

/// The last error lines of a component's log file (its JSON lines' message and error, or the
/// last raw lines when none says `error`), for a start-up failure's message.
fn last_errors(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(200).collect();
    let errors: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"].as_str().is_some_and(|lvl| lvl.eq_ignore_ascii_case("error")))
        .take(3)
        .map(|v| {
            let message = v["message"].as_str().unwrap_or_default();
            match v["error"].as_str() {
                Some(error) => format!("{message} {error}"),
                None => message.to_owned(),
            }
        })
        .collect();
    let picked: Vec<String> = if errors.is_empty() {
        lines.iter().take(3).map(|l| (*l).to_owned()).collect()
    } else {
        errors
    };
    if picked.is_empty() {
        format!("nothing in {}", path.display())
    } else {
        format!(
            "{} (more in {})",
            picked.into_iter().rev().collect::<Vec<_>>().join(" | "),
            path.display()
        )
    }
}

fn print_urls(state: &LabState, data_dir: &Path, elapsed: Duration) {
    let endpoint = |name: &str, kind: &str| {
        state
            .components
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.endpoints.get(kind))
            .cloned()
            .unwrap_or_default()
    };
    println!();
    println!(
        "ObservaStack is up (ready in {:.1} s). Data directory: {}",
        elapsed.as_secs_f64(),
        data_dir.display()
    );
    println!();
    println!("  {:<24} {}", "control panel", endpoint("orchestrator", "ui"));
    println!();
    println!("User path");
    println!("  {:<24} {}", "shop (gateway)", endpoint("gateway", "user"));
    println!("Secure (control) path");
    for name in ["gateway", "orders", "worker"] {
        println!("  {:<24} {}/config", format!("{name} /config"), endpoint(name, "admin"));
    }
    println!("  {:<24} {}/processes", "agent API", endpoint("agent", "control"));
    println!("  {:<24} {}/load", "load generator API", endpoint("loadgen", "control"));
    println!(
        "  {:<24} {}/api/scenarios",
        "scenarios and runs",
        endpoint("orchestrator", "control")
    );
    println!("Observability path");
    for c in state.components.iter().filter(|c| c.endpoints.contains_key("metrics")) {
        println!(
            "  {:<24} {}",
            format!("{} metrics", c.name),
            endpoint(&c.name, "metrics")
        );
    }
    let prometheus = endpoint("telemetry", "prometheus");
    println!("  {:<24} {prometheus}/api/v1/query?query=up", "Prometheus API");
    println!("  {:<24} {prometheus}/api/traces", "trace search");
    println!("  {:<24} {prometheus}/api/logs", "log search");
    println!(
        "  {:<24} {}/v1/traces",
        "OTLP/HTTP receiver",
        endpoint("telemetry", "otlp")
    );
    println!();
    println!(
        "Logs are in {}. `observastack status` shows health. Press Ctrl-C to stop.",
        data_dir.join("logs").display()
    );
}

/// Waits for Ctrl-C or SIGTERM, restarting a component of the lab that exits by itself (the
/// agent restarts the SUT): after 1 s, then twice as long each time up to 30 s. Each restart is
/// counted in `state.json` (`status` shows it), said on the terminal, and sent to the
/// orchestrator as an alert, so the learner sees it in the incident feed.
async fn supervise(children: &mut Children, state: &mut LabState, logs: &Path, control: &str) -> anyhow::Result<()> {
    let signal = observastack_common::shutdown_signal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut due: BTreeMap<&'static str, Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = &mut signal => return Ok(()),
            _ = tick.tick() => {
                for (name, status) in children.exited() {
                    let restarts = state.components.iter().find(|c| c.name == name).map_or(0, |c| c.restarts);
                    let delay = Duration::from_secs(1 << restarts.min(5)).min(Duration::from_secs(30));
                    eprintln!(
                        "The {} exited ({status}): {}. Restarting it in {} s.",
                        label(name),
                        last_errors(&logs.join(format!("{name}.log"))),
                        delay.as_secs()
                    );
                    due.insert(name, Instant::now() + delay);
                }
                let now = Instant::now();
                let ready: Vec<&'static str> = due.iter().filter(|(_, at)| **at <= now).map(|(n, _)| *n).collect();
                for name in ready {
                    due.remove(name);
                    match children.respawn(name) {
                        Ok(pid) => {
                            let count = match state.components.iter_mut().find(|c| c.name == name) {
                                Some(c) => {
                                    c.restarts += 1;
                                    c.pid = pid;
                                    c.restarts
                                }
                                None => 0,
                            };
                            state.write()?;
                            eprintln!("The {} was restarted (restart {count}).", label(name));
                            tokio::spawn(announce_restart(control.to_owned(), name, count));
                        }
                        Err(error) => {
                            eprintln!("Failed to restart the {}: {error:#}. Trying again in 5 s.", label(name));
                            due.insert(name, Instant::now() + Duration::from_secs(5));
                        }
                    }
                }
            }
        }
    }
}

/// How the terminal names a component.
fn label(name: &str) -> &str {
    match name {
        "telemetry" => "observability backend",
        "loadgen" => "load generator",
        other => other,
    }
}

/// Tells the learner, through the orchestrator's alert webhook (the incident feed), that a
/// component of the lab restarted, and what it cost. Tried for a minute: the orchestrator may
/// be the one restarting.
async fn announce_restart(control: String, name: &'static str, count: u32) {
    let what = match name {
        "telemetry" => "the observability backend restarted: metrics, traces and logs from before the restart are lost",
        "orchestrator" => "the orchestrator restarted: the run resumes with its lab restored",
        "agent" => "the control agent restarted, and with it the shop's processes",
        _ => "the load generator restarted: the simulated users' statistics start again",
    };
    let starts_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let body = serde_json::json!({
        "version": "4",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "LabComponentRestarted", "severity": "warning", "component": name},
            "annotations": {"summary": what},
            "startsAt": starts_at,
            "fingerprint": format!("lab-restart-{name}-{count}"),
        }],
    });
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return;
    };
    for _ in 0..30 {
        let sent = client.post(format!("{control}/api/alerts")).json(&body).send().await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

struct Children {
    telemetry: Option<Child>,
    agent: Option<Child>,
    loadgen: Option<Child>,
    orchestrator: Option<Child>,
    /// The command of each, by component name, to start it again.
    commands: BTreeMap<&'static str, Command>,
}

impl Children {
    fn slot(&mut self, name: &str) -> Option<&mut Option<Child>> {
        match name {
            "telemetry" => Some(&mut self.telemetry),
            "agent" => Some(&mut self.agent),
            "loadgen" => Some(&mut self.loadgen),
            "orchestrator" => Some(&mut self.orchestrator),
            _ => None,
        }
    }

    /// The components that exited since the last look, with their status.
    fn exited(&mut self) -> Vec<(&'static str, std::process::ExitStatus)> {
        let mut out = Vec::new();
        for name in ["telemetry", "agent", "loadgen", "orchestrator"] {
            if let Some(slot) = self.slot(name)
                && let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                *slot = None;
                out.push((name, status));
            }
        }
        out
    }

    /// Starts a component again from the command it was first started with.
    fn respawn(&mut self, name: &'static str) -> anyhow::Result<Option<u32>> {
        let command = self
            .commands
            .get_mut(name)
            .ok_or_else(|| anyhow::anyhow!("no command for {name}"))?;
        let child = command
            .spawn()
            .with_context(|| format!("Failed to start the {}", label(name)))?;
        let pid = child.id();
        if let Some(slot) = self.slot(name) {
            *slot = Some(child);
        }
        Ok(pid)
    }

    fn check_alive(&mut self, logs: &Path) -> anyhow::Result<()> {
        for (name, child) in [
            ("observability backend", &mut self.telemetry),
            ("agent", &mut self.agent),
            ("load generator", &mut self.loadgen),
            ("orchestrator", &mut self.orchestrator),
        ] {
            if let Some(c) = child
                && let Some(status) = c.try_wait()?
            {
                *child = None;
                let file = match name {
                    "observability backend" => "telemetry",
                    "load generator" => "loadgen",
                    other => other,
                };
                anyhow::bail!(
                    "the {name} exited unexpectedly ({status}): {}",
                    last_errors(&logs.join(format!("{file}.log")))
                );
            }
        }
        Ok(())
    }

    /// Stops the load first (no traffic into a stopping SUT), then the agent, which stops the
    /// SUT it supervises, then the backend (last, so it sees the end). SIGTERM, a grace period,
    /// then SIGKILL of the whole process group.
    async fn stop(&mut self) {
        for child in [
            self.orchestrator.take(),
            self.loadgen.take(),
            self.agent.take(),
            self.telemetry.take(),
        ]
        .into_iter()
        .flatten()
        {
            stop_child(child, Duration::from_secs(15)).await;
        }
    }
}

async fn stop_child(mut child: Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Anything left in its group (a grandchild that outlived its parent) goes too.
    let _ = killpg(group, Signal::SIGKILL);
}
