//! vnetd: the vnet daemon. A vhost-user virtio-net backend and L2 switch for VMs.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use control::config::{Config, PortConfig, TapPort, VhostUserPort};
use control::Daemon;
use vnetd::cli::Args;

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    for spec in &args.vhost_user {
        let p: VhostUserPort = spec.parse()?;
        cfg.ports.push(PortConfig::VhostUser(p));
    }
    for spec in &args.tap {
        let p: TapPort = spec.parse()?;
        cfg.ports.push(PortConfig::Tap(p));
    }
    if let Some(c) = &args.control {
        cfg.control = Some(c.clone());
    }
    if let Some(m) = args.datapath {
        cfg.datapath = m;
    }
    if let Some(n) = args.workers {
        cfg.workers = n;
    }
    if let Some(ms) = args.tap_hold_ms {
        cfg.tap_hold_ms = ms;
    }
    if let Some(b) = args.tap_batch {
        cfg.tap_batch = b;
    }
    let sec = &mut cfg.security;
    for (field, key, value) in [
        (&mut sec.user, "user", &args.user),
        (&mut sec.socket_group, "socket-group", &args.socket_group),
        (&mut sec.control_group, "control-group", &args.control_group),
    ] {
        if let Some(v) = value {
            control::config::Security::check_name(key, v)?;
            *field = Some(v.clone());
        }
    }
    if let Some(m) = &args.socket_mode {
        sec.socket_mode = Some(control::config::Security::mode("socket-mode", m)?);
    }
    if let Some(m) = args.seccomp {
        sec.seccomp = m;
    }
    sec.allow_shared_socket_dir |= args.allow_shared_socket_dir;
    if let Some(m) = &args.metrics {
        cfg.metrics = Some(Config::metrics_addr(m)?);
    }
    if let Some(l) = &args.log_level {
        cfg.log_level = Some(l.clone());
    }
    if let Some(f) = args.log_format {
        cfg.log_format = f;
    }
    if cfg.control.is_none() {
        cfg.control = Some(PathBuf::from(api::DEFAULT_CONTROL_PATH));
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The ports given on the command line (kept when `--config` is reloaded).
fn cli_ports(args: &Args) -> anyhow::Result<Vec<PortConfig>> {
    let mut v = Vec::new();
    for spec in &args.vhost_user {
        v.push(PortConfig::VhostUser(spec.parse::<VhostUserPort>()?));
    }
    for spec in &args.tap {
        v.push(PortConfig::Tap(spec.parse::<TapPort>()?));
    }
    Ok(v)
}

/// Starts logging as configured: `--log-level` or the file's `log_level`, else VNET_LOG,
/// else info; text or JSON.
fn init_logging(cfg: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match &cfg.log_level {
        Some(l) => {
            EnvFilter::try_new(l).map_err(|e| anyhow::anyhow!("bad log level `{l}`: {e}"))?
        }
        None => EnvFilter::try_from_env("VNET_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        control::config::LogFormat::Json => b.json().init(),
        control::config::LogFormat::Text => b
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let port = control::current_port()
            .map(|p| format!(", port {p}"))
            .unwrap_or_default();
        // Release builds abort after this (panic = "abort"): a panic is a bug in vnetd,
        // never a guest's doing, and a worker that died quietly would leave its ports dark.
        tracing::error!(
            "vnetd bug: panic in thread {}{port}: {info}; aborting",
            thread.name().unwrap_or("unnamed")
        );
        eprintln!(
            "vnetd: panic in thread {}{port}: {info}",
            thread.name().unwrap_or("unnamed")
        );
    }));
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnetd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let cfg = config(args)?;
    init_logging(&cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("installing signal handlers")?;
    let mut daemon = Daemon::new(&cfg)?;
    daemon.set_config_source(args.config.clone(), cli_ports(args)?);
    daemon.lockdown(&cfg.security)?;
    tracing::info!(
        "vnetd {} running with {} port(s), {:?} datapath, {} worker(s); control socket {}",
        env!("CARGO_PKG_VERSION"),
        cfg.ports.len(),
        cfg.datapath,
        cfg.workers,
        cfg.control
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    daemon.run(&stop, &hup)?;
    tracing::info!("vnetd stopping");
    Ok(())
}
