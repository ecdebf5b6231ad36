//! `cargo xtask test`: the whole check, as a list of named, timed steps that stops at the first
//! failure.

use std::time::Instant;

use anyhow::Result;

use crate::deps;
use crate::guest_image;
use crate::util::{cargo, run};

/// Options of `cargo xtask test` (and `cargo xtask ci`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not check or install system packages (skip `cargo xtask deps`).
    #[arg(long)]
    no_deps: bool,
    /// Skip the format and lint checks (`cargo fmt --check`, `cargo clippy`).
    #[arg(long)]
    quick: bool,
}

/// One named step of the run.
#[derive(Debug)]
struct Step {
    name: &'static str,
    action: fn() -> Result<()>,
}

/// Runs the command.
pub fn run_all(args: &Args) -> Result<()> {
    let mut steps = Vec::new();
    if !args.no_deps {
        steps.push(Step {
            name: "deps",
            action: deps::run,
        });
    }
    // Cached: a no-op unless the image is missing or its inputs changed.
    steps.push(Step {
        name: "guest-image",
        action: guest_image::build,
    });
    if !args.quick {
        steps.push(Step {
            name: "fmt",
            action: fmt,
        });
        steps.push(Step {
            name: "clippy",
            action: clippy,
        });
    }
    steps.push(Step {
        name: "test",
        action: test,
    });
    run_steps(&steps)
}

fn fmt() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))
}

fn clippy() -> Result<()> {
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test() -> Result<()> {
    // Integration tests run the workspace's binaries (vnetd, vnetctl): build them all first.
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    run(cargo()
        .args(["test", "--workspace"])
        // Tests that need DPDK fail instead of skipping when it is missing.
        .env("VNET_REQUIRE_DPDK", "1")
        // The same for the tests that boot Linux guests in QEMU.
        .env("VNET_REQUIRE_GUESTS", "1")
        .env("RUST_BACKTRACE", "1"))
}

/// Runs `steps` in order, printing each one's name and time; stops at the first failure.
fn run_steps(steps: &[Step]) -> Result<()> {
    let started = Instant::now();
    for step in steps {
        println!("==> {}", step.name);
        let step_started = Instant::now();
        let result = (step.action)();
        let secs = step_started.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("==> {} ({secs:.1} s)", step.name),
            Err(err) => {
                return Err(err.context(format!("step `{}` failed after {secs:.1} s", step.name)))
            }
        }
    }
    let names: Vec<&str> = steps.iter().map(|step| step.name).collect();
    println!(
        "==> passed: {} ({:.1} s)",
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<()> {
        Ok(())
    }

    fn fail() -> Result<()> {
        anyhow::bail!("boom")
    }

    fn unreachable_step() -> Result<()> {
        panic!("a step after a failure ran")
    }

    #[test]
    fn stops_at_the_first_failure_and_names_it() {
        let steps = [
            Step {
                name: "first",
                action: ok,
            },
            Step {
                name: "second",
                action: fail,
            },
            Step {
                name: "third",
                action: unreachable_step,
            },
        ];
        let err = format!("{:#}", run_steps(&steps).unwrap_err());
        assert!(err.starts_with("step `second` failed after"), "{err}");
        assert!(err.ends_with(": boom"), "{err}");
    }

    #[test]
    fn runs_every_step() {
        let steps = [
            Step {
                name: "a",
                action: ok,
            },
            Step {
                name: "b",
                action: ok,
            },
        ];
        run_steps(&steps).unwrap();
    }
}
