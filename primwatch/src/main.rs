use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use primwatch::{
    config::{Config, DEFAULT_PIN_DIR},
    controller::Controller,
    dataplane::{self, Dataplane},
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

#[derive(Parser)]
#[command(name = "primwatch", version, about = "Health-checking DNS load balancer with an XDP fast path")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP program, attach it, serve the configured names until SIGINT/SIGTERM.
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!("{}: ok ({} names)", file.display(), config.names.len());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        Command::Counters { pin_dir, json } => print_counters(&pin_dir, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_counters(pin_dir: &std::path::Path, json: bool) -> Result<()> {
    let counters = dataplane::pinned_counters(pin_dir)?;
    let table = dataplane::counters_table(&counters);
    if json {
        let fields: Vec<String> = table.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("{{{}}}", fields.join(","));
    } else {
        for (name, value) in table {
            println!("{name:<24} {value}");
        }
    }
    Ok(())
}

fn run(config_path: PathBuf) -> Result<()> {
    let config = Config::load(&config_path)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(config))
}

async fn serve(config: Config) -> Result<()> {
    dataplane::ensure_bpffs()?;
    let mut dataplane = Dataplane::load(config.port)?;
    dataplane.start_log_forwarding();
    dataplane.pin_maps(&config.pin_dir)?;
    let writer = dataplane.names_writer()?;
    // Writes the first answers (checks in their initial states) and starts the checkers.
    let mut controller = Controller::start(config.clone(), writer)?;
    info!(names = config.names.len(), targets = config.targets.len(), "names map written");

    // Attach only after the maps hold the records, so the first packets find them.
    let mut attach_result = Ok(());
    for interface in &config.interfaces {
        if let Err(e) = dataplane.attach(interface, config.xdp_mode) {
            attach_result = Err(e);
            break;
        }
    }
    if let Err(e) = attach_result {
        dataplane.shutdown()?;
        return Err(e);
    }
    info!(port = config.port, pin_dir = %config.pin_dir.display(), "serving");

    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = sigint.recv() => info!("SIGINT: shutting down"),
            _ = sigterm.recv() => info!("SIGTERM: shutting down"),
        }
    };
    let result = controller.run(shutdown).await;
    let counters = dataplane.counters()?;
    info!(answered = counters.answered, "final counters");
    dataplane.shutdown()?;
    result
}
