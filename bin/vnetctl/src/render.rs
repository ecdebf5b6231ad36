//! Human-readable rendering of control replies: aligned text tables.

use std::fmt::Write as _;

use api::{FdbEntry, PortInfo, PortStats};

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Pad on the right (text).
    Left,
    /// Pad on the left (numbers).
    Right,
}

/// A text table: a header row and data rows, columns padded to their widest cell and
/// separated by two spaces. The last column is never padded on the right.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are empty, extra cells are ignored.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The rendered table, one `\n`-terminated line per row, header first.
    pub fn render(&self) -> String {
        let ncols = self.columns.len();
        let cell = |row: &[String], c: usize| row.get(c).map_or("", String::as_str).to_string();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        let all: Vec<Vec<String>> = std::iter::once(header)
            .chain(self.rows.iter().cloned())
            .map(|r| (0..ncols).map(|c| cell(&r, c)).collect())
            .collect();
        let widths: Vec<usize> = (0..ncols)
            .map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &all {
            let mut line = String::new();
            for (c, text) in r.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let width = widths[c];
                let last = c + 1 == ncols;
                match self.columns[c].1 {
                    Align::Right => {
                        let _ = write!(line, "{text:>width$}");
                    }
                    Align::Left if last => line.push_str(text),
                    Align::Left => {
                        let _ = write!(line, "{text:<width$}");
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn or_dash(v: &Option<String>) -> String {
    match v.as_deref() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-".to_string(),
    }
}

/// The `ports` table: NAME KIND STATE MODE SOCKET MAC QPAIRS MTU FEATURES. A broken port's
/// reason follows its state.
pub fn ports_table(ports: &[PortInfo]) -> String {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("KIND", Align::Left),
        ("STATE", Align::Left),
        ("MODE", Align::Left),
        ("SOCKET/IF", Align::Left),
        ("MAC", Align::Left),
        ("QPAIRS", Align::Right),
        ("MTU", Align::Right),
        ("VLAN", Align::Left),
        ("LIMITS", Align::Left),
        ("FEATURES", Align::Left),
    ]);
    for p in ports {
        let state = match &p.broken_reason {
            Some(reason) if !reason.is_empty() => format!("{} ({reason})", p.state),
            _ => p.state.to_string(),
        };
        t.row(vec![
            p.name.clone(),
            p.kind.to_string(),
            state,
            p.mode.to_string(),
            or_dash(if p.socket.is_some() {
                &p.socket
            } else {
                &p.ifname
            }),
            p.mac.map_or_else(|| "-".to_string(), |m| m.to_string()),
            p.queue_pairs.to_string(),
            p.mtu.to_string(),
            or_dash(&p.vlan),
            or_dash(&p.limits),
            or_dash(&p.features),
        ]);
    }
    t.render()
}

/// The DROPS cell: the total, then the nonzero reasons, e.g. `5 (hairpin=2, too_big=3)`.
pub fn drops_cell(s: &PortStats) -> String {
    let total = s.total_drops();
    let reasons: Vec<String> = s
        .drops
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    if reasons.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", reasons.join(", "))
    }
}

/// The `stats` table: NAME RX_PKTS RX_BYTES TX_PKTS TX_BYTES DROPS. A port with more
/// than one queue pair gets a row per pair (`vm1/q1`) counting descriptor chains: taken
/// from the pair's txq (RX_PKTS) and filled on its rxq (TX_PKTS).
pub fn stats_table(stats: &[PortStats]) -> String {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("RX_PKTS", Align::Right),
        ("RX_BYTES", Align::Right),
        ("TX_PKTS", Align::Right),
        ("TX_BYTES", Align::Right),
        ("DROPS", Align::Left),
    ]);
    for s in stats {
        t.row(vec![
            s.name.clone(),
            s.rx_packets.to_string(),
            s.rx_bytes.to_string(),
            s.tx_packets.to_string(),
            s.tx_bytes.to_string(),
            drops_cell(s),
        ]);
        if s.queues.len() > 1 {
            for q in &s.queues {
                t.row(vec![
                    format!("{}/q{}", s.name, q.pair),
                    q.rx_chains.to_string(),
                    "-".into(),
                    q.tx_chains.to_string(),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
    }
    t.render()
}

/// The `fdb` table: MAC VLAN PORT TYPE AGE, sorted by VLAN then MAC. Static entries
/// (a port's configured addresses) have no age.
pub fn fdb_table(entries: &[FdbEntry]) -> String {
    let mut sorted: Vec<&FdbEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| (a.vlan, &a.mac, &a.port).cmp(&(b.vlan, &b.mac, &b.port)));
    let mut t = Table::new(&[
        ("MAC", Align::Left),
        ("VLAN", Align::Right),
        ("PORT", Align::Left),
        ("TYPE", Align::Left),
        ("AGE", Align::Right),
    ]);
    for e in sorted {
        let (kind, age) = if e.fixed {
            ("static", "-".to_string())
        } else {
            ("learned", format!("{}s", e.age_secs))
        };
        t.row(vec![
            e.mac.to_string(),
            e.vlan.to_string(),
            e.port.clone(),
            kind.to_string(),
            age,
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{PortKind, PortMode, PortState, QueueStats};
    use std::collections::BTreeMap;

    fn vm(name: &str) -> PortInfo {
        PortInfo {
            name: name.to_string(),
            kind: PortKind::VhostUser,
            socket: Some(format!("/tmp/{name}.sock")),
            ifname: None,
            mode: PortMode::Server,
            mac: "52:54:00:00:00:01".parse().ok(),
            state: PortState::Up,
            features: Some("VERSION_1,MRG_RXBUF".to_string()),
            queue_pairs: 1,
            mtu: 1500,
            broken_reason: None,
            vlan: None,
            limits: None,
        }
    }

    #[test]
    fn table_alignment() {
        let mut t = Table::new(&[
            ("A", Align::Left),
            ("NUM", Align::Right),
            ("Z", Align::Left),
        ]);
        t.row(vec!["long-name".into(), "5".into(), "x".into()]);
        t.row(vec!["b".into(), "12345".into()]);
        assert_eq!(
            t.render(),
            "A            NUM  Z\n\
             long-name      5  x\n\
             b          12345\n"
        );
    }

    #[test]
    fn ports() {
        let ports = vec![
            vm("vm1"),
            PortInfo {
                state: PortState::Broken,
                broken_reason: Some("bad avail idx".into()),
                vlan: Some("trunk:10,20".into()),
                limits: Some("spoofchk max-macs=64".into()),
                mode: PortMode::Client,
                mac: None,
                features: None,
                queue_pairs: 4,
                mtu: 9000,
                ..vm("vm-two")
            },
            PortInfo {
                kind: PortKind::Tap,
                socket: None,
                ifname: Some("vnet-host0".to_string()),
                state: PortState::Down,
                features: None,
                ..vm("host0")
            },
        ];
        let out = ports_table(&ports);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        let col = |line: &str, word: &str| line.find(word).unwrap();
        let kind_at = col(lines[0], "KIND");
        let mode_at = col(lines[0], "MODE");
        for (line, mode) in lines[1..].iter().zip(["server", "client", "server"]) {
            assert_eq!(col(line, mode), mode_at, "{out}");
        }
        assert_eq!(col(lines[3], "tap"), kind_at);
        assert!(lines[2].contains("broken (bad avail idx)"));
        assert!(
            lines[2].contains("trunk:10,20  spoofchk max-macs=64"),
            "{out}"
        );
        // QPAIRS and MTU are right-aligned under their headers.
        let mtu_end = col(lines[0], "MTU") + 3;
        assert_eq!(&lines[2][mtu_end - 4..mtu_end], "9000");
        assert_eq!(&lines[1][mtu_end - 4..mtu_end], "1500");
        assert!(lines[3].ends_with("  -"));
    }

    #[test]
    fn ports_exact() {
        let out = ports_table(&[vm("vm1")]);
        assert_eq!(
            out,
            "NAME  KIND        STATE  MODE    SOCKET/IF      MAC                QPAIRS   MTU  VLAN  \
             LIMITS  FEATURES\n\
             vm1   vhost-user  up     server  /tmp/vm1.sock  52:54:00:00:00:01       1  1500  -     \
             -       VERSION_1,MRG_RXBUF\n"
        );
        assert_eq!(
            ports_table(&[]),
            "NAME  KIND  STATE  MODE  SOCKET/IF  MAC  QPAIRS  MTU  VLAN  LIMITS  FEATURES\n"
        );
    }

    #[test]
    fn stats() {
        let s = vec![
            PortStats {
                name: "vm1".into(),
                rx_packets: 5,
                rx_bytes: 300,
                tx_packets: 123456,
                tx_bytes: 99,
                drops: BTreeMap::from([
                    ("hairpin".to_string(), 2),
                    ("no_rx_buffer".to_string(), 0),
                    ("too_big".to_string(), 3),
                ]),
                queues: vec![
                    QueueStats {
                        pair: 0,
                        rx_chains: 4,
                        tx_chains: 123000,
                    },
                    QueueStats {
                        pair: 1,
                        rx_chains: 1,
                        tx_chains: 456,
                    },
                ],
            },
            PortStats {
                name: "host0".into(),
                drops: BTreeMap::from([("hairpin".to_string(), 0)]),
                ..PortStats::default()
            },
        ];
        assert_eq!(
            stats_table(&s),
            "NAME    RX_PKTS  RX_BYTES  TX_PKTS  TX_BYTES  DROPS\n\
             vm1           5       300   123456        99  5 (hairpin=2, too_big=3)\n\
             vm1/q0        4         -   123000         -  -\n\
             vm1/q1        1         -      456         -  -\n\
             host0         0         0        0         0  0\n"
        );
    }

    #[test]
    fn drops_cell_forms() {
        let mut s = PortStats::default();
        assert_eq!(drops_cell(&s), "0");
        s.drops.insert("port_down".into(), 7);
        assert_eq!(drops_cell(&s), "7 (port_down=7)");
    }

    #[test]
    fn fdb_sorted() {
        let e = |mac: &str, vlan, port: &str, age, fixed| FdbEntry {
            mac: mac.parse().unwrap(),
            vlan,
            port: port.into(),
            age_secs: age,
            fixed,
        };
        let out = fdb_table(&[
            e("52:54:00:00:00:02", 10, "vm2", 3, false),
            e("52:54:00:00:00:09", 0, "host0", 120, false),
            e("52:54:00:00:00:01", 0, "vm1", 0, true),
        ]);
        assert_eq!(
            out,
            "MAC                VLAN  PORT   TYPE      AGE\n\
             52:54:00:00:00:01     0  vm1    static      -\n\
             52:54:00:00:00:09     0  host0  learned  120s\n\
             52:54:00:00:00:02    10  vm2    learned    3s\n"
        );
    }
}
