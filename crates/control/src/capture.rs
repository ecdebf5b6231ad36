//! `vnetctl capture`: a thread per capture streams a port's frames as pcapng to the
//! control client that asked, until it has the count asked for or the client goes. The
//! frames come from the workers' capture rings (see `datapath::capture`); what the rings
//! could not take is counted and reported in the closing statistics block.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use datapath::capture::{Capture, Direction};

use api::pcapng;

/// How long the thread sleeps when no frame waits.
const IDLE: Duration = Duration::from_millis(2);

/// Streams `cap` (port `name`) to `s` on a new thread: at most `count` frames.
pub fn spawn(
    mut s: UnixStream,
    mut cap: Capture,
    name: String,
    snaplen: u32,
    count: Option<u64>,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    std::thread::Builder::new()
        .name(format!("vnet-cap-{name}"))
        .spawn(move || {
            let now = || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            };
            if s.write_all(&pcapng::header(&name, snaplen)).is_err() {
                return;
            }
            let mut written = 0u64;
            let limit = count.unwrap_or(u64::MAX);
            let mut buf = Vec::new();
            while written < limit {
                buf.clear();
                let n = cap.drain(|f| {
                    if written >= limit {
                        return;
                    }
                    let comment = pcapng::describe_hdr(f.hdr);
                    buf.extend(pcapng::packet(
                        f.ns,
                        f.data,
                        f.len,
                        f.dir == Direction::Out,
                        comment.as_deref(),
                    ));
                    written += 1;
                });
                if !buf.is_empty() && s.write_all(&buf).is_err() {
                    break;
                }
                if n == 0 {
                    if port_vhost::server::peer_hung_up(&s) {
                        break;
                    }
                    if cap.port_gone() {
                        tracing::info!("port {name}: removed while captured");
                        break;
                    }
                    std::thread::sleep(IDLE);
                }
            }
            // Stopping first makes the lost count complete.
            let lost = cap.stop(Duration::from_secs(1));
            let _ = s.write_all(&pcapng::statistics(now(), written + lost, lost));
            tracing::info!("port {name}: capture ended, {written} frame(s) written, {lost} lost");
        })?;
    Ok(())
}
