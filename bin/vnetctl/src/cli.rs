//! vnetctl's command line (also read by `cargo xtask dist` for the man page and shell
//! completions).

use std::path::PathBuf;

use api::DEFAULT_CONTROL_PATH;
use clap::{Parser, Subcommand};

/// Query and inspect a running vnetd.
#[derive(Debug, Parser)]
#[command(name = "vnetctl", version, about)]
pub struct Cli {
    /// vnetd's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONTROL_PATH)]
    pub control: PathBuf,

    /// Seconds to wait for vnetd's reply.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,

    #[command(subcommand)]
    pub command: Command,
}

/// A vnetctl command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List ports: kind, state, socket, MAC, queues, MTU, negotiated features.
    Ports {
        /// Print vnetd's JSON reply instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Per-port packet, byte and drop counters (rx: from the port, tx: to the port).
    Stats {
        /// Print vnetd's JSON reply instead of a table.
        #[arg(long)]
        json: bool,
        /// Redraw the table every --interval seconds until Ctrl-C.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
        /// Seconds between redraws.
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
    },
    /// Per-port rates (packets/s, bits/s, drops/s), refreshed every second; q quits.
    Top {
        /// Seconds between refreshes.
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
    },
    /// The forwarding database: learned MAC addresses.
    Fdb {
        /// Print vnetd's JSON reply instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Versions of vnetctl and of the running vnetd.
    Version,
    /// Add a port while the others keep forwarding; SPEC exactly as vnetd's own flag.
    #[command(group(clap::ArgGroup::new("kind").required(true).args(["vhost_user", "tap"])))]
    AddPort {
        /// A vhost-user port: name=NAME,socket=PATH[,client][,mac=MAC]... (vnetd --help).
        #[arg(long = "vhost-user", value_name = "SPEC")]
        vhost_user: Option<String>,
        /// A TAP port: name=NAME,ifname=IF[,netns=NS]... (vnetd --help).
        #[arg(long, value_name = "SPEC")]
        tap: Option<String>,
    },
    /// Change a running port: KEY=VALUE for mac, spoofchk, ips, max-macs, vlan, trunk and
    /// the rate limits (ingress-mbit, ingress-kpps, egress-mbit, egress-kpps, flood-kpps).
    SetPort {
        /// The port's name.
        name: String,
        /// What to change.
        #[arg(value_name = "KEY=VALUE", required = true)]
        settings: Vec<String>,
    },
    /// Capture a port's frames as pcapng (tcpdump -r, Wireshark). Directions as in
    /// `stats`: in = what the port sends into the switch, out = what the switch delivers
    /// to it. Stops after --count frames or on Ctrl-C.
    Capture {
        /// The port's name.
        port: String,
        /// in, out or both.
        #[arg(long, default_value = "both", value_parser = ["in", "out", "both"])]
        direction: String,
        /// Stop after this many frames.
        #[arg(short = 'c', long, value_name = "COUNT")]
        count: Option<u64>,
        /// Bytes kept of each frame (14 to 262144).
        #[arg(long, value_name = "BYTES", default_value_t = 262_144)]
        snaplen: u32,
        /// Where to write: a file, or - for standard output (`-w - | tcpdump -r -`).
        #[arg(short = 'w', long = "write", value_name = "FILE")]
        write: String,
    },
    /// Print the running configuration as the TOML vnetd reads (`vnetd --config`).
    ShowConfig,
    /// Re-read vnetd's --config file and apply the difference (as SIGHUP does).
    Reload,
    /// Remove a port: its frontend is disconnected, the socket file vnetd created removed,
    /// its frames and FDB entries released.
    DelPort {
        /// The port's name.
        name: String,
    },
}
