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
    let skip_log = crate::util::workspace_root().join("target/test-skips.log");
    let _ = std::fs::remove_file(&skip_log);
    let mut cmd = cargo();
    cmd.args(["test", "--workspace"])
        // Tests that need DPDK fail instead of skipping when it is missing.
        .env("VNET_REQUIRE_DPDK", "1")
        // The same for the tests that boot Linux guests in QEMU...
        .env("VNET_REQUIRE_GUESTS", "1")
        // ...and for those that need root and /dev/net/tun.
        .env("VNET_REQUIRE_TAP", "1")
        // ...and for the metrics test that runs a real Prometheus server.
        .env("VNET_REQUIRE_PROMETHEUS", "1")
        // Any test that still skips says so here (testbed::skip).
        .env(testbed::skip::SKIP_LOG_ENV, &skip_log)
        .env("RUST_BACKTRACE", "1");
    let (totals, status) = run_counting(&mut cmd);
    let skips = std::fs::read_to_string(&skip_log).unwrap_or_default();
    println!("{}", summary(&totals, &skips));
    status
}

/// What `cargo test` reported, summed over its test binaries.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cmd`, echoing its output and summing the `test result:` lines of libtest.
fn run_counting(cmd: &mut std::process::Command) -> (Totals, Result<()>) {
    use std::io::{BufRead, BufReader};
    let shown = crate::util::display(cmd);
    eprintln!("$ {shown}");
    let mut totals = Totals::default();
    let mut child = match cmd.stdout(std::process::Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return (totals, Err(anyhow::anyhow!("cannot start `{shown}`: {e}"))),
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
            println!("{line}");
            count_result_line(&line, &mut totals);
        }
    }
    let status = match child.wait() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(anyhow::anyhow!("`{shown}` failed: {s}")),
        Err(e) => Err(anyhow::anyhow!("`{shown}`: {e}")),
    };
    (totals, status)
}

/// Adds a libtest line `test result: ok. 3 passed; 0 failed; 1 ignored; ...` to `t`.
fn count_result_line(line: &str, t: &mut Totals) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(what), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => t.passed += n,
            "failed" => t.failed += n,
            "ignored" => t.ignored += n,
            _ => {}
        }
    }
}

/// `tests: N ran (P passed, F failed), I ignored, S skipped` and one line per skip reason.
fn summary(t: &Totals, skips: &str) -> String {
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for l in skips.lines().filter(|l| !l.trim().is_empty()) {
        *reasons.entry(l.trim()).or_default() += 1;
    }
    let skipped: usize = reasons.values().sum();
    // A skipped test returns early and counts as passed in libtest's line.
    let passed = t.passed.saturating_sub(skipped as u64);
    let mut s = format!(
        "==> tests: {} ran ({passed} passed, {} failed), {} ignored, {skipped} skipped",
        passed + t.failed,
        t.failed,
        t.ignored
    );
    for (why, n) in reasons {
        s.push_str(&format!("\n    skipped {n}: {why}"));
    }
    s
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
    fn counts_libtest_lines_and_skips() {
        let mut t = Totals::default();
        for l in [
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
             finished in 0.5s",
            "running 3 tests",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        ] {
            count_result_line(l, &mut t);
        }
        assert_eq!((t.passed, t.failed, t.ignored), (14, 1, 1));
        let s = summary(
            &t,
            "DPDK tests: no dpdk\nDPDK tests: no dpdk\nTAP tests need root\n",
        );
        assert_eq!(
            s,
            "==> tests: 12 ran (11 passed, 1 failed), 1 ignored, 3 skipped\n    \
             skipped 2: DPDK tests: no dpdk\n    skipped 1: TAP tests need root"
        );
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
