//! `vnetctl`: query a running vnetd over its control socket.
#![forbid(unsafe_code)]

mod render;
mod top;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use api::{Request, Response};
use clap::Parser;
use vnetctl::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`vnetctl stats | head`) is not worth an error message.
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vnetctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn pretty(json: serde_json::Result<String>) -> anyhow::Result<String> {
    let mut s = json.context("encoding JSON output")?;
    s.push('\n');
    Ok(s)
}

/// `vnetctl capture`: sends the request, then copies the pcapng stream that follows vnetd's
/// answer to `write` (a file or `-`), and says on stderr how many frames came and how many
/// vnetd lost (a reader too slow for the traffic).
fn capture(cli: &Cli, timeout: Duration, req: Request, write: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, BufReader, Read};
    let s = std::os::unix::net::UnixStream::connect(&cli.control).with_context(|| {
        format!(
            "cannot connect to vnetd control socket {}",
            cli.control.display()
        )
    })?;
    s.set_read_timeout(Some(timeout))?;
    (&s).write_all(api::encode_line(&req).as_bytes())?;
    let mut r = BufReader::new(&s);
    let mut line = String::new();
    r.read_line(&mut line).context("reading vnetd's answer")?;
    match api::decode_line::<Response>(&line)? {
        Response::Done { .. } => {}
        Response::Error { message } => bail!("vnetd: {message}"),
        other => bail!("vnetd answered `capture` with a `{}` reply", other.name()),
    }
    // Frames come when they come.
    s.set_read_timeout(None)?;
    let mut out: Box<dyn Write> = if write == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(write).with_context(|| format!("creating {write}"))?)
    };
    let mut counter = api::pcapng::Counter::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        counter.feed(&buf[..n]);
    }
    out.flush()?;
    eprintln!(
        "vnetctl: {} frame(s) captured, {} lost (vnetd's capture buffer was full)",
        counter.frames,
        counter.lost.unwrap_or(0)
    );
    Ok(String::new())
}

/// A refresh interval in seconds (0.1 to 3600).
fn secs(v: f64) -> anyhow::Result<Duration> {
    if !(0.1..=3600.0).contains(&v) {
        bail!("bad --interval {v}: expected 0.1 to 3600 seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// The message of a `done` reply, as a line.
fn done(resp: Response, req: Request) -> anyhow::Result<String> {
    match resp {
        Response::Done { message } => Ok(format!("{message}\n")),
        other => bail!(
            "vnetd answered `{}` with a `{}` reply",
            req.name(),
            other.name()
        ),
    }
}

/// Runs one command and returns what to print.
fn run(cli: &Cli) -> anyhow::Result<String> {
    let timeout = Duration::try_from_secs_f64(cli.timeout)
        .with_context(|| format!("bad --timeout {}", cli.timeout))?;
    let query = |req: Request| -> anyhow::Result<Response> {
        let resp = api::call(&cli.control, &req, timeout)?;
        match resp {
            Response::Error { message } => bail!("vnetd: {message}"),
            resp => Ok(resp),
        }
    };
    let unexpected = |req: Request, resp: &Response| {
        anyhow::anyhow!(
            "vnetd answered `{}` with a `{}` reply",
            req.name(),
            resp.name()
        )
    };
    match &cli.command {
        Command::Ports { json: as_json } => match query(Request::Ports)? {
            Response::Ports(ports) if *as_json => pretty(serde_json::to_string_pretty(&ports)),
            Response::Ports(ports) => Ok(render::ports_table(&ports)),
            other => Err(unexpected(Request::Ports, &other)),
        },
        Command::Stats {
            watch: true,
            interval,
            ..
        } => top::watch(&query, secs(*interval)?, render::stats_table),
        Command::Top { interval } => top::top(&query, secs(*interval)?),
        Command::Stats { json: as_json, .. } => match query(Request::Stats)? {
            Response::Stats(stats) if *as_json => pretty(serde_json::to_string_pretty(&stats)),
            Response::Stats(stats) => Ok(render::stats_table(&stats)),
            other => Err(unexpected(Request::Stats, &other)),
        },
        Command::Fdb { json: as_json } => match query(Request::Fdb)? {
            Response::Fdb(entries) if *as_json => pretty(serde_json::to_string_pretty(&entries)),
            Response::Fdb(entries) => Ok(render::fdb_table(&entries)),
            other => Err(unexpected(Request::Fdb, &other)),
        },
        Command::AddPort { vhost_user, tap } => {
            let req = match (vhost_user, tap) {
                (Some(spec), None) => Request::AddPort {
                    kind: api::PortKind::VhostUser,
                    spec: spec.clone(),
                },
                (None, Some(spec)) => Request::AddPort {
                    kind: api::PortKind::Tap,
                    spec: spec.clone(),
                },
                _ => bail!("add-port takes one of --vhost-user SPEC or --tap SPEC"),
            };
            done(query(req.clone())?, req)
        }
        Command::SetPort { name, settings } => {
            let req = Request::SetPort {
                name: name.clone(),
                settings: settings.clone(),
            };
            done(query(req.clone())?, req)
        }
        Command::Capture {
            port,
            direction,
            count,
            snaplen,
            write,
        } => capture(
            cli,
            timeout,
            Request::Capture {
                port: port.clone(),
                take_in: direction != "out",
                take_out: direction != "in",
                snaplen: *snaplen,
                count: *count,
            },
            write,
        ),
        Command::ShowConfig => match query(Request::ShowConfig)? {
            Response::Config { toml } => Ok(toml),
            other => Err(unexpected(Request::ShowConfig, &other)),
        },
        Command::Reload => done(query(Request::Reload)?, Request::Reload),
        Command::DelPort { name } => {
            let req = Request::DelPort { name: name.clone() };
            done(query(req.clone())?, req)
        }
        Command::Version => {
            // The client's own version is printed even when vnetd cannot be reached.
            println!("vnetctl {}", env!("CARGO_PKG_VERSION"));
            match query(Request::Version)? {
                Response::Version { version } => Ok(format!("vnetd {version}\n")),
                other => Err(unexpected(Request::Version, &other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::DEFAULT_CONTROL_PATH;
    use clap::CommandFactory;
    use std::path::PathBuf;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_global_control_anywhere() {
        let cli = Cli::try_parse_from(["vnetctl", "--control", "/tmp/x.sock", "stats", "--json"])
            .unwrap();
        assert_eq!(cli.control, PathBuf::from("/tmp/x.sock"));
        assert!(matches!(cli.command, Command::Stats { json: true, .. }));
        let cli = Cli::try_parse_from(["vnetctl", "fdb", "--control", "/tmp/y.sock"]).unwrap();
        assert_eq!(cli.control, PathBuf::from("/tmp/y.sock"));
        assert!(matches!(cli.command, Command::Fdb { json: false }));
        let cli = Cli::try_parse_from(["vnetctl", "ports"]).unwrap();
        assert_eq!(cli.control, PathBuf::from(DEFAULT_CONTROL_PATH));
    }

    #[test]
    fn missing_daemon_error_is_clear() {
        let cli = Cli::try_parse_from(["vnetctl", "--control", "/nonexistent/vnetd.sock", "ports"])
            .unwrap();
        let err = run(&cli).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "cannot connect to vnetd control socket /nonexistent/vnetd.sock: \
             No such file or directory (is vnetd running? use --control PATH)"
        );
    }

    /// A fake vnetd answering one request with `reply`.
    fn fake_daemon(tag: &str, reply: Response) -> (PathBuf, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, BufReader};
        let path = std::env::temp_dir().join(format!("vnetctl-{}-{tag}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            reader
                .get_mut()
                .write_all(api::encode_line(&reply).as_bytes())
                .unwrap();
            line
        });
        (path, server)
    }

    #[test]
    fn stats_against_fake_daemon() {
        let reply = Response::Stats(vec![api::PortStats {
            name: "vm1".into(),
            rx_packets: 1,
            rx_bytes: 60,
            ..api::PortStats::default()
        }]);
        let (path, server) = fake_daemon("stats", reply);
        let cli =
            Cli::try_parse_from(["vnetctl", "stats", "--control", path.to_str().unwrap()]).unwrap();
        let out = run(&cli).unwrap();
        assert_eq!(server.join().unwrap(), "{\"cmd\":\"stats\"}\n");
        assert!(out.starts_with("NAME  RX_PKTS"), "{out}");
        assert!(out.contains("vm1"), "{out}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn daemon_error_and_wrong_reply_fail() {
        let (path, server) = fake_daemon("err", Response::error("not ready"));
        let cli =
            Cli::try_parse_from(["vnetctl", "fdb", "--control", path.to_str().unwrap()]).unwrap();
        assert_eq!(run(&cli).unwrap_err().to_string(), "vnetd: not ready");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);

        let (path, server) = fake_daemon("wrong", Response::Fdb(vec![]));
        let cli = Cli::try_parse_from([
            "vnetctl",
            "ports",
            "--json",
            "--control",
            path.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(
            run(&cli).unwrap_err().to_string(),
            "vnetd answered `ports` with a `fdb` reply"
        );
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn json_output_is_the_payload() {
        let (path, server) = fake_daemon("json", Response::Fdb(vec![]));
        let cli = Cli::try_parse_from([
            "vnetctl",
            "fdb",
            "--json",
            "--control",
            path.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(run(&cli).unwrap(), "[]\n");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bad_timeout_is_an_error() {
        let cli = Cli::try_parse_from(["vnetctl", "--timeout=-1", "ports"]).unwrap();
        assert!(run(&cli).unwrap_err().to_string().contains("bad --timeout"));
    }
}
