use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use primwatch::{
    config::{
        pushed::{self, PushedConfig},
        Config, OnStop, DEFAULT_CONTROL_SOCKET, DEFAULT_PIN_DIR,
    },
    control::{self, Action, Kind, Request},
    controller::{Controller, PreviousRun},
    dataplane::{self, Attachment, Dataplane},
    state::Force,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

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
        .with_writer(|| primwatch::log_output::LogOutput)
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
        action: CtlAction,
    },
    /// Steer a group.
    Group {
        name: String,
        #[command(subcommand)]
        action: CtlAction,
    },
}

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
    /// Set a group's priority (higher is preferred).
    Priority { priority: i32 },
    /// Turn preempt on or off (off: a recovered target/group waits for `failback`).
    Preempt { setting: OnOff },
    /// Let a target/group held by preempt off back into answers.
    Failback,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) if !primwatch::paths::check_config_paths(&config.state_file, &config.pin_dir).is_empty() => {
                for problem in primwatch::paths::check_config_paths(&config.state_file, &config.pin_dir) {
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
        Command::CookieSecret { file } => primwatch::cookies::write_secret_file(&file).map(|_| {
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
                format!("has not answered ({})", primwatch::report::text::describe_report(report))
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
        primwatch::report::text::print_status(status);
    } else if let Some(stats) = &reply.stats {
        primwatch::report::text::print_stats(stats);
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
            CtlAction::Priority { priority } => Action::Priority(priority),
            CtlAction::Preempt { setting } => Action::Preempt(matches!(setting, OnOff::On)),
            CtlAction::Failback => Action::Failback,
        }
    }
}

fn run(config_path: PathBuf) -> Result<()> {
    primwatch::log_output::never_block_on_stderr();
    let config = Config::load(&config_path)?;
    let (config, pushed, refusal) = with_cached_push(config, &config_path);
    raise_open_file_limit();
    primwatch::supervise::install_panic_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (on_stop, pin_dir) = (config.on_stop, config.pin_dir.clone());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(serve(config, pushed, refusal, config_path))
    })) {
        Ok(result) => result,
        Err(_) => {
            // The serving flow itself panicked: its links are still pinned (fail static).
            // Honour on_stop from the pins, which is all the next start needs.
            if on_stop == OnStop::Detach {
                match dataplane::detach_pinned(&pin_dir) {
                    Ok(removed) => info!(pins = removed.len(), "detached after the panic (on_stop = detach)"),
                    Err(e) => error!(error = %format!("{e:#}"), "detaching after the panic"),
                }
            }
            bail!("stopped after a panic: {}", primwatch::supervise::reason().unwrap_or_default())
        }
    }
}

/// Raises the soft limit on open files to the hard limit: checks, sockets and maps all
/// take descriptors, and systemd's default soft limit (1024) is easy to reach.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                info!(from = soft, to = limit.rlim_max, "raised the open-file limit");
            }
        }
    }
}

/// A fleet node starts on the pushed config it ran last successfully (kept beside its
/// state file), so that it serves the fleet's config even while etcd is away; if that
/// no longer fits its own file, on its own file alone (and etcd's copy is tried when it
/// connects). A revision the previous run stopped while applying is not applied again
/// (`pushed::PROBATION`): returned as the refusal to report.
fn with_cached_push(config: Config, config_path: &Path) -> (Config, Option<PushedConfig>, Option<pushed::Refusal>) {
    let Some(fleet) = &config.fleet else { return (config, None, None) };
    let refusal = pushed::refusal_at_start(&config.state_file);
    if let Some(r) = &refusal {
        error!(revision = r.revision, reason = %r.reason, "fleet: a pushed revision is refused");
    }
    let cached = pushed::read_cache(&config.state_file)
        .filter(|cached| refusal.as_ref().is_none_or(|r| r.revision != cached.revision));
    let Some(cached) = cached else { return (config, None, refusal) };
    match pushed::load_merged(config_path, &fleet.prefix, &cached) {
        Ok(merged) => {
            info!(revision = cached.revision, "fleet: starting on the pushed config run last");
            if let Err(e) = pushed::begin_trial(&merged.state_file, cached.revision) {
                warn!(error = %format!("{e:#}"), "fleet: cannot mark the pushed config as being applied");
            }
            (merged, Some(cached), refusal)
        }
        Err(e) => {
            warn!(error = %e, "fleet: the pushed config run last does not load; starting on this node's file");
            (config, None, refusal)
        }
    }
}

async fn serve(
    config: Config,
    pushed: Option<PushedConfig>,
    refusal: Option<pushed::Refusal>,
    config_path: PathBuf,
) -> Result<()> {
    dataplane::ensure_bpffs()?;
    // The state and pin directories decide answers: refuse ones others could write.
    primwatch::paths::prepare(&config.state_file, &config.pin_dir)?;
    let left_attached = dataplane::pinned_links(&config.pin_dir);
    let mut dataplane = Dataplane::load_with(config.port, &config.capacities)?;
    dataplane.start_log_forwarding();
    dataplane.pin_maps(&config.pin_dir)?;
    let maps = dataplane.answer_maps()?;
    let cookies = dataplane.cookie_writer()?;
    let negative = dataplane.negative_writer()?;
    // XDP answers only frames addressed to this host: its MACs and addresses first.
    let mut host = dataplane.host_writer()?;
    host.refresh(&config.interfaces)?;
    host.keep_current(config.interfaces.clone(), std::time::Duration::from_secs(1));
    // Writes the first answers (overrides and last-known health restored) and starts
    // the checkers.
    // The controller owns the config from here (a million names are not copied); the
    // rest of the bring-up needs only settings a reload cannot change.
    let (names, targets) = (config.names.len(), config.targets.len());
    let (port, pin_dir, interfaces, xdp_mode) =
        (config.port, config.pin_dir.clone(), config.interfaces.clone(), config.xdp_mode);
    let (metrics_listen, control_socket, control_access) =
        (config.metrics_listen, config.control_socket.clone(), config.control_access.clone());
    let zones = primwatch::zone_data::ZoneFeed::start(negative, primwatch::zone_data::Inputs::of(&config));
    let mut controller = Controller::start(config, Some(config_path), (pushed, refusal), maps, cookies)?;
    controller.set_zone_feed(zones);
    info!(names, targets, "names map written");

    // Attach (or take over the previous run's attachment) only now that the maps hold
    // the answers, so the first packet the new program sees finds them.
    // The operator's socket first: if it cannot be had, nothing has been taken over
    // yet. Metrics never stop a start (a listener that cannot be bound is retried).
    let (requests_tx, requests) = tokio::sync::mpsc::channel(16);
    if let Some(address) = metrics_listen {
        // Scrapes read a snapshot taken once a second, as `ctl stats` asks for one.
        let controller = requests_tx.clone();
        let snapshot = primwatch::metrics::refresh_snapshots(move || {
            let controller = controller.clone();
            async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                controller.send((control::Request::Stats, tx)).await.ok()?;
                Some(rx.await.ok().and_then(|reply: control::Reply| reply.stats))
            }
        });
        primwatch::metrics::serve(address, snapshot);
    }
    let _socket = control::listen(&control_socket, &control_access, requests_tx)
        .with_context(|| format!("control socket {}", control_socket.display()))?;

    let mut attachments = Vec::new();
    for interface in &interfaces {
        match dataplane.attach(interface, xdp_mode, &pin_dir) {
            Ok(how) => attachments.push(format!("{interface}: {}", describe(how))),
            Err(e) => {
                if left_attached.is_empty() {
                    // Nothing was serving before us: leave nothing half attached.
                    if let Err(cleanup) = dataplane.shutdown() {
                        error!(error = %format!("{cleanup:#}"), "detaching after a failed attach");
                    }
                } else {
                    // The previous run's program was answering: keep whatever answers now
                    // (adopted or not) rather than take DNS down.
                    dataplane.leave_attached();
                }
                return Err(e);
            }
        }
    }
    // A link left on an interface the config no longer names would go on answering
    // stale answers with nobody updating them: take it off.
    for interface in left_attached.iter().filter(|i| !interfaces.contains(i)) {
        let pin = dataplane::link_pin(&pin_dir, interface);
        match std::fs::remove_file(&pin) {
            Ok(()) => {
                warn!(interface, "detached XDP left by the previous run on an interface no longer configured");
                attachments.push(format!("{interface}: detached (no longer configured)"));
            }
            Err(e) => error!(interface, error = %e, "cannot remove the previous run's link pin {}", pin.display()),
        }
    }
    let note = dataplane_note(&left_attached, controller.previous_run(), &attachments);
    if left_attached.is_empty() || controller.previous_run().is_some_and(|p| p.stopped_cleanly) {
        info!("{note}");
    } else {
        warn!("{note}");
    }
    controller.set_dataplane_note(note);
    // Loaded, attached, pinned, bound: from here on only what checks and hooks need.
    primwatch::privileges::drop_to_kept()?;
    info!(port, pin_dir = %pin_dir.display(), control = %control_socket.display(), "serving");
    primwatch::supervise::notify_ready();

    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = sigint.recv() => info!("SIGINT: shutting down"),
            _ = sigterm.recv() => info!("SIGTERM: shutting down"),
            why = primwatch::supervise::fatal() => error!(%why, "shutting down after a panic"),
        }
    };
    let result = controller.run(requests, shutdown).await;
    match dataplane.counters() {
        Ok(counters) => info!(answered = counters.answered, "final counters"),
        Err(e) => warn!(error = %format!("{e:#}"), "reading the final counters"),
    }
    match controller.config().on_stop {
        OnStop::Keep => dataplane.leave_attached(),
        OnStop::Detach => dataplane.shutdown()?,
    }
    // A panic stopped us: a failure exit, for the supervisor to restart.
    if let Some(why) = primwatch::supervise::reason() {
        bail!("stopped after a panic: {why}");
    }
    result
}

fn describe(how: Attachment) -> String {
    match how {
        Attachment::Fresh(mode) => format!("attached ({mode:?} mode)").to_lowercase(),
        Attachment::Adopted => "adopted the running program's link (no detach)".into(),
    }
}

/// One line for the log and `ctl status`: how this run took over the data plane.
fn dataplane_note(left_attached: &[String], previous: Option<PreviousRun>, attachments: &[String]) -> String {
    let now = attachments.join("; ");
    if left_attached.is_empty() {
        return format!("XDP {now}");
    }
    let when = |p: &PreviousRun| {
        p.saved_at.map_or("an unknown time".to_string(), |t| humantime::format_rfc3339_seconds(t).to_string())
    };
    match previous {
        Some(p) if p.stopped_cleanly => format!("the previous controller stopped cleanly at {}; XDP kept answering meanwhile; {now}", when(&p)),
        Some(p) => format!(
            "the previous controller did not stop cleanly (killed or crashed; last saved {}): XDP kept answering from its last answers (fail static); {now}",
            when(&p)
        ),
        None => format!("found XDP left attached by an earlier run; {now}"),
    }
}
