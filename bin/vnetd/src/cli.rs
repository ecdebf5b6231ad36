//! vnetd's command line (also read by `cargo xtask dist` for the man page and shell
//! completions).

use std::path::PathBuf;

use clap::Parser;

/// vhost-user virtio-net backend and L2 virtual switch.
///
/// VMs attach with a unix socket each (QEMU `-netdev vhost-user`, Cloud Hypervisor,
/// DPDK virtio-user); vnetd switches frames between them.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// A vhost-user port:
    /// name=NAME,socket=PATH[,client][,mac=MAC][,queues=N][,mtu=N][,datapath=MODE].
    /// `client` makes vnetd connect to the VMM's server socket (and reconnect forever)
    /// instead of listening. Both port kinds also take the isolation options
    /// [,spoofchk=off][,ips=IP:IP][,max-macs=N][,vlan=N|,trunk=N:M]
    /// [,ingress-mbit=N][,ingress-kpps=N][,egress-mbit=N][,egress-kpps=N][,flood-kpps=N]
    /// (README, "Multi-tenant"), and [,mode=OCTAL][,group=GROUP][,uids=UID:UID]
    /// [,max-mem=SIZE] (README, "Security").
    #[arg(long = "vhost-user", value_name = "SPEC")]
    pub vhost_user: Vec<String>,
    /// A TAP port: name=NAME,ifname=IF[,netns=NS][,queues=N][,mac=MAC][,mtu=N], and the
    /// isolation options.
    #[arg(long = "tap", value_name = "SPEC")]
    pub tap: Vec<String>,
    /// How the datapath waits for work: event (sleep on guest kicks, no CPU when idle),
    /// poll (busy-poll, one core at 100 %), adaptive (poll while traffic flows).
    #[arg(long, value_name = "MODE")]
    pub datapath: Option<control::config::DatapathMode>,
    /// Datapath worker threads (1..=64): ports and their queue pairs are spread over them.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// How long a frame from a TAP waits for a guest without rx buffers before it is
    /// dropped, in milliseconds (1..=60000, default 50): frames behind it on that TAP
    /// queue wait as long.
    #[arg(long, value_name = "MS")]
    pub tap_hold_ms: Option<u64>,
    /// Write a burst's frames to a TAP queue with one io_uring submission (on, the
    /// default, where the kernel offers io_uring) or with one `writev` each (off).
    #[arg(long, value_name = "on|off", value_parser = clap::builder::BoolishValueParser::new())]
    pub tap_batch: Option<bool>,
    /// Control socket for vnetctl.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// TOML configuration file; ports given on the command line are added to its ports.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Once set up (sockets bound, TAPs opened), run as this user (and group), with no
    /// capabilities and no_new_privs.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// seccomp filters on every thread: enforce (a forbidden system call kills vnetd),
    /// log (allowed, logged by the kernel), off.
    #[arg(long, value_name = "MODE")]
    pub seccomp: Option<control::config::SeccompMode>,
    /// Mode of the vhost-user socket files vnetd creates (octal, default 0600).
    #[arg(long, value_name = "OCTAL")]
    pub socket_mode: Option<String>,
    /// Group of the vhost-user socket files vnetd creates.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Group of the control socket, which is then 0660 (else 0600).
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,
    /// Accept sockets in directories that other users may write (README, "Security").
    #[arg(long)]
    pub allow_shared_socket_dir: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Log level or filter (error, warn, info, debug, trace, or `info,vnet_datapath=debug`);
    /// else the file's `log_level`, else the VNET_LOG environment variable, else info.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log lines as text or json (one object per line).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<control::config::LogFormat>,
}
