use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use primwatch::{
    config::{pushed::PushedConfig, Config, DEFAULT_CONTROL_SOCKET, DEFAULT_PIN_DIR},
    dataplane,
    health::state::Force,
    ops::control::{self, Action, Kind, Request},
};
use tracing::{error, warn};

#[derive(Parser)]
#[command(name = "primwatch", version, about = "Health-checking DNS load balancer with an XDP fast path")]
struct Cli {
    /// Log lines as text (colours only on a terminal, none with NO_COLOR; no timestamp
    /// under systemd, whose journal adds its own) or as one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr, filtered by RUST_LOG (default `info`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // https://no-color.org: set and not empty means no colour.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    // systemd sets JOURNAL_STREAM for a service whose stderr is the journal.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    // Lines that cannot be written are dropped and counted (log_output), and tracing's
    // own report of a failed write (to the same broken stderr) is off.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| primwatch::sys::log_output::LogOutput)
        .log_internal_errors(false)
        .with_ansi(ansi);
    match (format, journal) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Text, false) => builder.init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP program, attach it, serve the configured names until SIGINT/SIGTERM
    /// (SIGHUP reloads the config).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit (non-zero, with file:line:column: reason, if invalid).
    CheckConfig { file: PathBuf },
    /// Print the XDP counters of the running instance (summed over CPUs).
    Counters {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Take a stopped controller's XDP program off its interfaces and remove its pins
    /// (after `systemctl stop`, with the default `on_stop = "keep"`).
    Detach {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Write a fresh DNS cookie secret to FILE (mode 0640, replaced atomically), as
    /// both `[cookies] secret_file` and PowerDNS's `include-dir` read it; then reload
    /// primwatch and restart PowerDNS (README, "DNS cookies").
    CookieSecret { file: PathBuf },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff, section 8).
    #[command(hide = true)]
    Man,
    /// A fleet's shared config (needs `[fleet]` in the node's own file).
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Capture the frames XDP handles — answered, passed and dropped — as received and
    /// as sent, into a pcap file (tcpdump -r, Wireshark). Costs XDP nothing while none runs.
    Capture {
        #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        /// Write the pcap here ("-": standard output).
        #[arg(short = 'w', long, default_value = "-")]
        write: PathBuf,
        /// Stop after this many packets (an answered one gives two frames: query and reply).
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this many seconds (default and most: a day).
        #[arg(long)]
        seconds: Option<u64>,
        /// Only packets from this client address or prefix.
        #[arg(long)]
        client: Option<String>,
        /// Only queries for this name.
        #[arg(long)]
        name: Option<String>,
        /// Only packets XDP answered, passed or dropped.
        #[arg(long, value_parser = ["answered", "passed", "dropped"])]
        verdict: Option<String>,
    },
    /// Inspect and steer the running controller.
    Ctl {
        #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        /// Print the controller's reply as JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Validate FILE (the shared tables: checks, targets, groups, names, views, zones…)
    /// with this node's own tables, store it in etcd as the fleet's config with a new
    /// revision, and wait for every live node to run or refuse it.
    Push {
        file: PathBuf,
        /// This node's own config file: its `[fleet]` says where etcd is, and its
        /// node-local tables complete FILE for validation.
        #[arg(long, short, default_value = "/etc/primwatch/primwatch.toml")]
        config: PathBuf,
        /// Seconds to wait for the nodes' reports (0: do not wait).
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Targets (state, reason, last change, check results), groups, answer sets and
    /// names (all of them up to 1,000 (name, view) entries; above, only with --names or
    /// --name).
    Status {
        /// List every name, however many.
        #[arg(long)]
        names: bool,
        /// List the names matching PATTERN (`*` stands for any characters), e.g.
        /// `'*.tenant.example.com'`.
        #[arg(long, value_name = "PATTERN", conflicts_with = "names")]
        name: Option<String>,
    },
    /// Re-read the config file; an invalid one is rejected and the running one stays.
    Reload,
    /// Answers per name and view, XDP verdicts, check results and latencies, target and
    /// group states, map updates, reloads (what /metrics exports).
    Stats,
    /// Why NAME answers what it answers for a client: view, groups, members, answer.
    Explain {
        name: String,
        /// The client's address.
        #[arg(long)]
        from: std::net::IpAddr,
        /// An EDNS Client Subnet prefix (e.g. 198.51.100.0/24), as a resolver would send.
        #[arg(long)]
        ecs: Option<String>,
        #[arg(long = "type", default_value = "A")]
        qtype: String,
    },
    /// Steer a target (backend).
    Target {
        name: String,
        #[command(subcommand)]
        action: TargetAction,
    },
    /// Steer a group.
    Group {
        name: String,
        #[command(subcommand)]
        action: GroupAction,
    },
}

/// What `ctl target` and `ctl group` both do.
#[derive(Subcommand)]
enum CtlAction {
    /// Force into answers whatever its health.
    Up,
    /// Force out of answers.
    Down,
    /// Take out of answers for maintenance (checks go on).
    Drain,
    /// Back to automatic: health decides.
    Auto,
    /// Turn preempt on or off (off: a recovered target/group waits for `failback`).
    Preempt { setting: OnOff },
    /// Let a target/group held by preempt off back into answers.
    Failback,
}

#[derive(Subcommand)]
enum TargetAction {
    #[command(flatten)]
    Common(CtlAction),
    /// Set the target's weight under the weighted and sticky policies (1-1000000), or
    /// `auto` for the feed's or the config's; saved, and shared with the fleet.
    Weight {
        #[arg(value_parser = parse_weight)]
        weight: WeightSetting,
    },
}

#[derive(Subcommand)]
enum GroupAction {
    #[command(flatten)]
    Common(CtlAction),
    /// Set the group's priority (higher is preferred).
    Priority { priority: i32 },
}

/// `ctl target NAME weight N|auto`.
#[derive(Clone, Copy, Debug)]
struct WeightSetting(Option<u32>);

fn parse_weight(text: &str) -> Result<WeightSetting, String> {
    match text {
        "auto" => Ok(WeightSetting(None)),
        number => number
            .parse::<u32>()
            .ok()
            .filter(|w| (1..=1_000_000).contains(w))
            .map(|w| WeightSetting(Some(w)))
            .ok_or_else(|| format!("'{text}' is not a weight from 1 to 1000000, or auto")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// `primwatch capture`: pcap to `write` ("-": stdout); a line on stderr at the end.
fn capture(socket: &Path, write: &Path, request: &primwatch::tap::capture::CaptureRequest) -> Result<()> {
    let frames = if write == Path::new("-") {
        primwatch::tap::capture::run(socket, request, &mut std::io::stdout().lock())?
    } else {
        let mut file = std::fs::File::create(write).with_context(|| format!("creating {}", write.display()))?;
        primwatch::tap::capture::run(socket, request, &mut file)?
    };
    eprintln!("{frames} frames captured");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config } => primwatch::daemon::bring_up::run(config),
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config)
                if !primwatch::sys::paths::check_config_paths(&config.state_file, &config.pin_dir).is_empty() =>
            {
                for problem in primwatch::sys::paths::check_config_paths(&config.state_file, &config.pin_dir) {
                    eprintln!("{}: {problem}", file.display());
                }
                return ExitCode::from(2);
            }
            Ok(config) => {
                println!(
                    "{}: ok ({} names, {} targets, {} groups)",
                    file.display(),
                    config.names.len(),
                    config.targets.len(),
                    config.groups.len()
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        Command::Counters { pin_dir, json } => print_counters(&pin_dir, json),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "primwatch", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command())
                .section("8")
                .render(&mut std::io::stdout())
                .context("writing the man page")
        }
        Command::CookieSecret { file } => primwatch::dataplane::cookies::write_secret_file(&file).map(|_| {
            println!("wrote a new cookie secret to {}", file.display());
        }),
        Command::Detach { pin_dir } => dataplane::detach_pinned(&pin_dir).map(|removed| {
            println!("removed {} pins from {}: {}", removed.len(), pin_dir.display(), removed.join(" "));
        }),
        Command::Fleet { command: FleetCommand::Push { file, config, wait } } => {
            match fleet_push(&file, &config, std::time::Duration::from_secs(wait)) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("{e:#}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Capture { socket, write, count, seconds, client, name, verdict } => {
            let request = primwatch::tap::capture::CaptureRequest { count, seconds, client, name, verdict };
            capture(&socket, &write, &request)
        }
        Command::Ctl { socket, json, command } => {
            // Like other Unix tools, end quietly when the reader goes (`ctl stats | head`).
            // Only here: the daemon must see EPIPE on a socket, not die of SIGPIPE.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            ctl(&socket, json, command)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `primwatch fleet push`: Ok(true) when every live node runs the pushed revision,
/// Ok(false) when one refused it or did not answer in time; Err when it was not
/// pushed (invalid, or etcd unreachable).
fn fleet_push(file: &Path, local: &Path, wait: std::time::Duration) -> Result<bool> {
    use primwatch::config::pushed;
    let local_config = Config::load(local).map_err(|e| anyhow::anyhow!("{e}"))?;
    let fleet = local_config.fleet.clone().with_context(|| format!("{} has no [fleet] table", local.display()))?;
    drop(local_config);
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let local_text = std::fs::read_to_string(local).with_context(|| format!("reading {}", local.display()))?;
    // Validated as this node will run it: refused here, it is stored nowhere.
    pushed::merge(local, &local_text, file, &text).map_err(|e| anyhow::anyhow!("{e}\nnot pushed"))?;
    let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let document = PushedConfig { revision: 0, toml: text, pushed_by: fleet.node.clone(), at_ms };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let revision = primwatch::fleet::push(&fleet, &document).await?;
        println!("pushed {} as revision {revision} under {}", file.display(), fleet.prefix);
        if wait.is_zero() {
            return Ok(true);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let done = |r: &primwatch::fleet::NodeReport| r.revision >= revision || r.refused >= revision;
        // Pushed: from here on a failure to read the reports is not a failure to push.
        let mut reports = Default::default();
        loop {
            match primwatch::fleet::node_reports(&fleet).await {
                Ok(read) => reports = read,
                Err(e) => warn!(error = %format!("{e:#}"), "reading the nodes' reports; trying again"),
            }
            if (!reports.is_empty() && reports.values().all(done)) || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut all_run = !reports.is_empty();
        for (node, report) in &reports {
            let verdict = if report.revision >= revision {
                "runs it".to_string()
            } else if report.refused >= revision {
                format!("REFUSED it: {}", report.error)
            } else {
                format!("has not answered ({})", primwatch::ops::report::text::describe_report(report))
            };
            all_run &= report.revision >= revision;
            println!("  {node}: {verdict}");
        }
        if reports.is_empty() {
            println!("  no live node reports under {}/nodes/", fleet.prefix);
        }
        Ok(all_run)
    })
}

fn print_counters(pin_dir: &Path, json: bool) -> Result<()> {
    let counters = dataplane::pinned_counters(pin_dir)?;
    let table = dataplane::counters_table(&counters);
    if json {
        println!("{}", serde_json::to_string(&table)?);
    } else {
        for (name, value) in table {
            println!("{name:<24} {value}");
        }
    }
    Ok(())
}

fn ctl(socket: &Path, json: bool, command: CtlCommand) -> Result<()> {
    let request = match command {
        CtlCommand::Status { names, name } => Request::Status {
            names: match (names, name) {
                (_, Some(pattern)) => control::NameListing::Matching(pattern),
                (true, None) => control::NameListing::All,
                (false, None) => control::NameListing::Auto,
            },
        },
        CtlCommand::Reload => Request::Reload,
        CtlCommand::Stats => Request::Stats,
        CtlCommand::Target { name, action } => Request::Set { kind: Kind::Target, name, action: action.into() },
        CtlCommand::Group { name, action } => Request::Set { kind: Kind::Group, name, action: action.into() },
        CtlCommand::Explain { name, from, ecs, qtype } => {
            let family = match qtype.to_ascii_uppercase().as_str() {
                "A" => primwatch_common::Family::V4,
                "AAAA" => primwatch_common::Family::V6,
                other => bail!("--type must be A or AAAA, not {other}"),
            };
            Request::Explain { name, from, ecs, family }
        }
    };
    let reply = control::send(socket, &request)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else if let Some(status) = &reply.status {
        primwatch::ops::report::text::print_status(status);
    } else if let Some(stats) = &reply.stats {
        primwatch::ops::report::text::print_stats(stats);
    } else if let Some(e) = &reply.explain {
        println!("name    configured as {}", e.matched);
        println!("view    {}", e.view);
        if let Some(scope) = e.ecs_scope {
            println!("scope   /{scope} (the ECS scope the answer claims)");
        }
        for g in &e.groups {
            println!("group   {} (priority {}, {})", g.name, g.priority, g.state);
            for (target, address, eligible, why) in &g.members {
                println!("          {target:<16} {address:<22} {:<4} {why}", if *eligible { "in" } else { "out" });
            }
        }
        println!("answer  [{}], {} per reply, {} ({})", e.answer.join(", "), e.answers_per_reply, e.pick, e.why);
    } else {
        println!("{}", reply.message);
    }
    if !reply.ok {
        bail!("{}", reply.message);
    }
    Ok(())
}

impl From<CtlAction> for Action {
    fn from(a: CtlAction) -> Action {
        match a {
            CtlAction::Up => Action::Force(Force::Up),
            CtlAction::Down => Action::Force(Force::Down),
            CtlAction::Drain => Action::Force(Force::Drain),
            CtlAction::Auto => Action::Auto,
            CtlAction::Preempt { setting } => Action::Preempt(matches!(setting, OnOff::On)),
            CtlAction::Failback => Action::Failback,
        }
    }
}

impl From<TargetAction> for Action {
    fn from(a: TargetAction) -> Action {
        match a {
            TargetAction::Common(common) => common.into(),
            TargetAction::Weight { weight } => Action::Weight(weight.0),
        }
    }
}

impl From<GroupAction> for Action {
    fn from(a: GroupAction) -> Action {
        match a {
            GroupAction::Common(common) => common.into(),
            GroupAction::Priority { priority } => Action::Priority(priority),
        }
    }
}
