//! Project tasks, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! One module per command; a new command is a module with a `run` function and a variant of
//! [`Command`]. Helpers shared by commands live in [`util`].

// `unsafe` only in the bench's host-side sender (`bench::tap::helper::sys`: an AF_PACKET
// socket, which neither std nor our crates offer).
#![deny(unsafe_code)]

mod bench;
mod demo;
mod deps;
mod dist;
mod guest_image;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// vnet's build, test and setup tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the system packages the tests need (apt-get, as root) and reserve hugepages.
    Deps,
    /// The main job: install what is missing, build vnetd and a guest image, boot two VMs
    /// on vnetd with a host namespace behind a TAP port, run ping and iperf3, show the
    /// stats, clean up (as root).
    Demo,
    /// Install dependencies, then build the Linux guest image (kernel + initramfs) the
    /// end-to-end tests boot, under target/guest/.
    GuestImage,
    /// Install dependencies, check formatting, run clippy, run the workspace tests.
    Test(test::Args),
    /// What CI runs (.ci/run): the same as `test`.
    Ci(test::Args),
    /// VM-to-VM and VM-to-host (TAP) forwarding rates of vnetd against DPDK (testpmd), as a
    /// table and JSON.
    Bench(bench::Args),
    /// A Debian package (.deb) of the binaries, the systemd unit, an example configuration,
    /// man pages and shell completions, in target/dist/.
    Dist(dist::Args),
    /// The bench's traffic helpers (a bare TAP loop, a host-side sender), started by
    /// `cargo xtask bench` itself.
    #[command(hide = true)]
    BenchHelper(bench::tap::HelperArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Deps => deps::run(),
        Command::Demo => demo::run(),
        Command::GuestImage => guest_image::run(),
        Command::Test(args) | Command::Ci(args) => test::run_all(args),
        Command::Bench(args) => bench::run(args),
        Command::Dist(args) => dist::run_dist(args),
        Command::BenchHelper(args) => bench::tap::helper(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
