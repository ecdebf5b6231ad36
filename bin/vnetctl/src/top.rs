//! `vnetctl top` and `vnetctl stats --watch`: per-port rates refreshed in the terminal.
//!
//! `top` switches the terminal to raw mode on the alternate screen (crossterm: plain ANSI,
//! so it works in any terminal and over ssh) and quits on `q`, `Esc` or Ctrl-C, putting
//! the terminal back as it was. `stats --watch` redraws the counters table in place and
//! stops on Ctrl-C (the terminal is never changed).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use api::{PortStats, Request, Response};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, terminal};

use crate::render::{Align, Table};

/// Rates between two samples of one port.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Port name.
    pub name: String,
    /// Frames per second from and to the port (rx, tx).
    pub pps: (f64, f64),
    /// Bits per second from and to the port.
    pub bps: (f64, f64),
    /// Drops per second.
    pub drops: f64,
}

/// Per-port rates from `before` to `now`, `secs` apart (ports new in `now` start at 0).
pub fn rates(before: &[PortStats], now: &[PortStats], secs: f64) -> Vec<Rates> {
    let secs = secs.max(1e-3);
    now.iter()
        .map(|n| {
            let b = before.iter().find(|b| b.name == n.name);
            let d =
                |f: fn(&PortStats) -> u64| b.map_or(0, |b| f(n).saturating_sub(f(b))) as f64 / secs;
            Rates {
                name: n.name.clone(),
                pps: (d(|s| s.rx_packets), d(|s| s.tx_packets)),
                bps: (d(|s| s.rx_bytes) * 8.0, d(|s| s.tx_bytes) * 8.0),
                drops: d(PortStats::total_drops),
            }
        })
        .collect()
}

/// `1.23M`, `456.7k`, `12`.
fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The rates as a table.
pub fn rates_table(rates: &[Rates]) -> String {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("RX_PPS", Align::Right),
        ("RX_BPS", Align::Right),
        ("TX_PPS", Align::Right),
        ("TX_BPS", Align::Right),
        ("DROPS/S", Align::Right),
    ]);
    for r in rates {
        t.row(vec![
            r.name.clone(),
            si(r.pps.0),
            si(r.bps.0),
            si(r.pps.1),
            si(r.bps.1),
            si(r.drops),
        ]);
    }
    t.render()
}

fn stats(query: &dyn Fn(Request) -> Result<Response>) -> Result<Vec<PortStats>> {
    match query(Request::Stats)? {
        Response::Stats(s) => Ok(s),
        other => bail!("vnetd answered `stats` with a `{}` reply", other.name()),
    }
}

/// Puts the terminal back however `top` ends.
struct RawScreen;

impl RawScreen {
    fn enter() -> Result<RawScreen> {
        terminal::enable_raw_mode()?;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        Ok(RawScreen)
    }
}

impl Drop for RawScreen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

fn quit_key(k: &KeyEvent) -> bool {
    matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
        || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
}

/// `vnetctl top`: rates once a second until `q`.
pub fn top(query: &dyn Fn(Request) -> Result<Response>, interval: Duration) -> Result<String> {
    let mut before = stats(query)?;
    let mut at = Instant::now();
    let _screen = RawScreen::enter()?;
    let mut out = std::io::stdout();
    let mut shown: Option<String> = None;
    loop {
        let deadline = at + interval;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if event::poll(left)? {
                if let Event::Key(k) = event::read()? {
                    if quit_key(&k) {
                        return Ok(String::new());
                    }
                }
            } else {
                break;
            }
        }
        let now = stats(query)?;
        let t = Instant::now();
        let table = rates_table(&rates(&before, &now, t.duration_since(at).as_secs_f64()));
        before = now;
        at = t;
        if shown.as_deref() != Some(table.as_str()) {
            execute!(
                out,
                cursor::MoveTo(0, 0),
                terminal::Clear(terminal::ClearType::All)
            )?;
            let head = format!(
                "vnetctl top: {} port(s), every {:.1} s; q quits\r\n\r\n",
                table.lines().count().saturating_sub(1),
                interval.as_secs_f64()
            );
            // Raw mode: lines need a carriage return.
            out.write_all(head.as_bytes())?;
            out.write_all(table.replace('\n', "\r\n").as_bytes())?;
            out.flush()?;
            shown = Some(table);
        }
    }
}

/// `vnetctl stats --watch`: the counters table redrawn every `interval` until Ctrl-C.
pub fn watch(
    query: &dyn Fn(Request) -> Result<Response>,
    interval: Duration,
    render: fn(&[PortStats]) -> String,
) -> Result<String> {
    let mut out = std::io::stdout();
    loop {
        let s = stats(query)?;
        execute!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )?;
        out.write_all(render(&s).as_bytes())?;
        out.flush()?;
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, rx: u64, tx: u64) -> PortStats {
        PortStats {
            name: name.into(),
            rx_packets: rx,
            rx_bytes: rx * 100,
            tx_packets: tx,
            tx_bytes: tx * 100,
            drops: Default::default(),
            queues: Vec::new(),
        }
    }

    #[test]
    fn rates_are_deltas_over_time() {
        let r = rates(
            &[port("a", 100, 0)],
            &[port("a", 300, 50), port("new", 9, 9)],
            2.0,
        );
        assert_eq!(r[0].pps, (100.0, 25.0));
        assert_eq!(r[0].bps, (80_000.0, 20_000.0));
        assert_eq!(r[1].pps, (0.0, 0.0), "a port seen once has no rate yet");
        let t = rates_table(&r);
        assert!(t.contains("a") && t.contains("80.0k"), "{t}");
        assert_eq!(si(2_500_000.0), "2.50M");
    }
}
