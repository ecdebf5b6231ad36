use super::*;
use crate::{Decision, DropReason};
use proptest::prelude::*;

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]])
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn learn_and_lookup() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::with_capacity(8);
    assert!(fdb.is_empty());
    assert_eq!(fdb.aging_time(), secs(300));
    assert_eq!(fdb.learn(mac(1), 0, 7, t0), Learn::New);
    assert_eq!(fdb.learn(mac(1), 0, 7, t0), Learn::Refreshed);
    assert_eq!(fdb.lookup(&mac(1), 0, t0), Some(7));
    assert_eq!(fdb.lookup(&mac(1), 1, t0), None, "other VLAN");
    assert_eq!(fdb.lookup(&mac(2), 0, t0), None);
    assert_eq!(fdb.len(), 1);
}

#[test]
fn never_learns_group_or_zero_addresses() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::with_capacity(8);
    for m in [
        MacAddr::BROADCAST,
        MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        MacAddr::ZERO,
    ] {
        assert_eq!(fdb.learn(m, 0, 1, t0), Learn::InvalidMac);
        assert_eq!(fdb.lookup(&m, 0, t0), None);
    }
    assert!(fdb.is_empty());
}

#[test]
fn move_between_ports() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::with_capacity(8);
    fdb.learn(mac(1), 0, 1, t0);
    assert_eq!(
        fdb.learn(mac(1), 0, 2, t0 + secs(1)),
        Learn::Moved { from: 1 }
    );
    assert_eq!(fdb.lookup(&mac(1), 0, t0 + secs(1)), Some(2));
    assert_eq!(fdb.len(), 1);
    // An expired entry re-learned elsewhere is new, not a move.
    assert_eq!(fdb.learn(mac(1), 0, 3, t0 + secs(1000)), Learn::New);
    assert_eq!(fdb.len(), 1);
}

#[test]
fn aging_with_synthetic_time() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::new(8, secs(10));
    fdb.learn(mac(1), 0, 1, t0);
    fdb.learn(mac(2), 0, 1, t0 + secs(5));
    assert_eq!(fdb.lookup(&mac(1), 0, t0 + secs(9)), Some(1));
    // Expired entries are absent at once, before age() removes them.
    assert_eq!(fdb.lookup(&mac(1), 0, t0 + secs(10)), None);
    assert_eq!(fdb.entries(t0 + secs(10)).count(), 1);
    assert_eq!(fdb.len(), 2);
    assert_eq!(fdb.age(t0 + secs(10)), 1);
    assert_eq!(fdb.len(), 1);
    // Refreshing resets the age.
    assert_eq!(fdb.learn(mac(2), 0, 1, t0 + secs(14)), Learn::Refreshed);
    assert_eq!(fdb.age(t0 + secs(23)), 0);
    assert_eq!(fdb.lookup(&mac(2), 0, t0 + secs(23)), Some(1));
    assert_eq!(fdb.age(t0 + secs(24)), 1);
    assert!(fdb.is_empty());
    // A clock behind the entries counts as age zero.
    fdb.learn(mac(3), 0, 1, t0 + secs(100));
    assert_eq!(fdb.lookup(&mac(3), 0, t0), Some(1));
    assert_eq!(fdb.age(t0), 0);
}

#[test]
fn set_aging_time_applies_to_existing_entries() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::with_capacity(8);
    fdb.learn(mac(1), 0, 1, t0);
    assert_eq!(fdb.lookup(&mac(1), 0, t0 + secs(60)), Some(1));
    fdb.set_aging_time(secs(30));
    assert_eq!(fdb.lookup(&mac(1), 0, t0 + secs(60)), None);
}

#[test]
fn entries_report_age() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::with_capacity(8);
    fdb.learn(mac(1), 5, 1, t0);
    fdb.learn(mac(2), 0, 2, t0 + secs(3));
    let mut e: Vec<_> = fdb.entries(t0 + secs(4)).collect();
    e.sort_by_key(|e| e.mac);
    assert_eq!(
        e,
        [
            FdbEntry {
                mac: mac(1),
                vlan: 5,
                port: 1,
                age: secs(4),
                fixed: false,
            },
            FdbEntry {
                mac: mac(2),
                vlan: 0,
                port: 2,
                age: secs(1),
                fixed: false,
            },
        ]
    );
}

#[test]
fn capacity_bound_and_eviction_of_expired() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::new(3, secs(10));
    assert_eq!(fdb.capacity(), 3);
    assert_eq!(fdb.learn(mac(1), 0, 1, t0), Learn::New);
    assert_eq!(fdb.learn(mac(2), 0, 1, t0 + secs(2)), Learn::New);
    assert_eq!(fdb.learn(mac(3), 0, 1, t0 + secs(4)), Learn::New);
    // Full of live entries: refuse.
    assert_eq!(fdb.learn(mac(4), 0, 2, t0 + secs(9)), Learn::TableFull);
    assert_eq!(fdb.lookup(&mac(4), 0, t0 + secs(9)), None);
    assert_eq!(fdb.len(), 3);
    // Known addresses still refresh and move in a full table.
    assert_eq!(
        fdb.learn(mac(3), 0, 2, t0 + secs(9)),
        Learn::Moved { from: 1 }
    );
    // mac(1) has expired: it makes room.
    assert_eq!(fdb.learn(mac(4), 0, 2, t0 + secs(10)), Learn::New);
    assert_eq!(fdb.len(), 3);
    assert_eq!(fdb.lookup(&mac(1), 0, t0 + secs(10)), None);
    assert_eq!(fdb.lookup(&mac(2), 0, t0 + secs(10)), Some(1));
    assert_eq!(fdb.lookup(&mac(4), 0, t0 + secs(10)), Some(2));
    // Full again, nothing expired.
    assert_eq!(fdb.learn(mac(5), 0, 2, t0 + secs(11)), Learn::TableFull);
    // Later everything but mac(3) and mac(4) has expired.
    assert_eq!(fdb.learn(mac(5), 0, 2, t0 + secs(12)), Learn::New);
    assert_eq!(fdb.len(), 3);
}

#[test]
fn zero_capacity_learns_nothing() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::with_capacity(0);
    assert_eq!(fdb.learn(mac(1), 0, 1, t0), Learn::TableFull);
    assert_eq!(fdb.lookup(&mac(1), 0, t0), None);
    assert_eq!(fdb.age(t0), 0);
}

#[test]
fn huge_capacity_is_clamped() {
    let fdb = Fdb::<u32>::new(usize::MAX, secs(1));
    assert_eq!(fdb.capacity(), MAX_CAPACITY);
}

#[test]
fn flush_port_remove_clear() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::with_capacity(64);
    for n in 0..40 {
        fdb.learn(mac(n), 0, n % 3, t0);
    }
    assert_eq!(fdb.flush_port(1), 13);
    assert_eq!(fdb.len(), 27);
    for n in 0..40 {
        let want = if n % 3 == 1 { None } else { Some(n % 3) };
        assert_eq!(fdb.lookup(&mac(n), 0, t0), want, "mac {n}");
    }
    assert_eq!(fdb.remove(&mac(0), 0), Some(0));
    assert_eq!(fdb.remove(&mac(0), 0), None);
    assert_eq!(fdb.lookup(&mac(0), 0, t0), None);
    fdb.clear();
    assert!(fdb.is_empty());
    assert_eq!(fdb.entries(t0).count(), 0);
}

#[test]
fn full_table_churn_keeps_every_entry_reachable() {
    // Fill to capacity many times over with removals in between, so clusters form, wrap
    // around the end of the table and get shifted back.
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::with_capacity(100);
    for round in 0..50u32 {
        for n in 0..100 {
            fdb.learn(mac(round * 1000 + n), 0, n, t0);
        }
        assert_eq!(fdb.len(), 100);
        for n in 0..100 {
            assert_eq!(fdb.lookup(&mac(round * 1000 + n), 0, t0), Some(n));
        }
        for n in (0..100).step_by(2) {
            assert_eq!(fdb.remove(&mac(round * 1000 + n), 0), Some(n));
        }
        for n in (1..100).step_by(2) {
            assert_eq!(fdb.lookup(&mac(round * 1000 + n), 0, t0), Some(n));
        }
        fdb.clear();
    }
}

/// The reference model: a plain list with the documented semantics.
#[derive(Default)]
struct Model {
    entries: Vec<(MacAddr, u16, u8, Instant)>,
}

impl Model {
    fn expired(t: Instant, now: Instant, aging: Duration) -> bool {
        now.saturating_duration_since(t) >= aging
    }

    fn learn(
        &mut self,
        m: MacAddr,
        vlan: u16,
        port: u8,
        now: Instant,
        cap: usize,
        aging: Duration,
    ) -> Learn<u8> {
        if !crate::is_valid_source(&m) {
            return Learn::InvalidMac;
        }
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == m && e.1 == vlan) {
            let r = if Self::expired(e.3, now, aging) {
                Learn::New
            } else if e.2 == port {
                Learn::Refreshed
            } else {
                Learn::Moved { from: e.2 }
            };
            e.2 = port;
            e.3 = now;
            return r;
        }
        if self.entries.len() >= cap {
            self.age(now, aging);
            if self.entries.len() >= cap {
                return Learn::TableFull;
            }
        }
        self.entries.push((m, vlan, port, now));
        Learn::New
    }

    fn lookup(&self, m: &MacAddr, vlan: u16, now: Instant, aging: Duration) -> Option<u8> {
        self.entries
            .iter()
            .find(|e| e.0 == *m && e.1 == vlan && !Self::expired(e.3, now, aging))
            .map(|e| e.2)
    }

    fn age(&mut self, now: Instant, aging: Duration) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| !Self::expired(e.3, now, aging));
        before - self.entries.len()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Learn { mac: u8, vlan: u16, port: u8 },
    Lookup { mac: u8, vlan: u16 },
    Age,
    FlushPort(u8),
    Remove { mac: u8, vlan: u16 },
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, 0u16..2, 0u8..4).prop_map(|(mac, vlan, port)| Op::Learn { mac, vlan, port }),
        4 => (0u8..24, 0u16..2).prop_map(|(mac, vlan)| Op::Lookup { mac, vlan }),
        1 => Just(Op::Age),
        1 => (0u8..4).prop_map(Op::FlushPort),
        1 => (0u8..24, 0u16..2).prop_map(|(mac, vlan)| Op::Remove { mac, vlan }),
        3 => (0u64..8).prop_map(Op::Tick),
    ]
}

/// A small pool of addresses, a few of them invalid sources.
fn pool_mac(n: u8) -> MacAddr {
    match n {
        0 => MacAddr::BROADCAST,
        1 => MacAddr::ZERO,
        2 => MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
        n => MacAddr([0x52, 0x54, 0, 0, 0, n]),
    }
}

proptest! {
    #[test]
    fn agrees_with_model(
        cap in 0usize..10,
        aging in 1u64..20,
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let aging = Duration::from_secs(aging);
        let mut now = Instant::now();
        let mut fdb = Fdb::<u8>::new(cap, aging);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Learn { mac, vlan, port } => {
                    let m = pool_mac(mac);
                    let got = fdb.learn(m, vlan, port, now);
                    let want = model.learn(m, vlan, port, now, cap, aging);
                    prop_assert_eq!(got, want);
                }
                Op::Lookup { mac, vlan } => {
                    let m = pool_mac(mac);
                    prop_assert_eq!(fdb.lookup(&m, vlan, now), model.lookup(&m, vlan, now, aging));
                }
                Op::Age => prop_assert_eq!(fdb.age(now), model.age(now, aging)),
                Op::FlushPort(p) => {
                    let before = model.entries.len();
                    model.entries.retain(|e| e.2 != p);
                    prop_assert_eq!(fdb.flush_port(p), before - model.entries.len());
                }
                Op::Remove { mac, vlan } => {
                    let m = pool_mac(mac);
                    let want = model.entries.iter().position(|e| e.0 == m && e.1 == vlan)
                        .map(|i| model.entries.remove(i).2);
                    prop_assert_eq!(fdb.remove(&m, vlan), want);
                }
                Op::Tick(s) => now += Duration::from_secs(s),
            }
            prop_assert!(fdb.len() <= cap);
            prop_assert_eq!(fdb.len(), model.entries.len());
            // Every stored key is reachable through lookup, and entries() lists exactly the
            // live ones.
            let mut listed: Vec<_> = fdb.entries(now).map(|e| (e.mac, e.vlan, e.port)).collect();
            let mut live: Vec<_> = model.entries.iter()
                .filter(|e| !Model::expired(e.3, now, aging))
                .map(|e| (e.0, e.1, e.2))
                .collect();
            listed.sort();
            live.sort();
            prop_assert_eq!(&listed, &live);
            for (m, vlan, port) in live {
                prop_assert_eq!(fdb.lookup(&m, vlan, now), Some(port));
            }
        }
    }
}

#[test]
fn static_entries_never_move_age_or_flush() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::new(8, secs(10));
    fdb.add_static(mac(1), 0, 1).unwrap();
    // Another port sending from it: refused, the entry stays.
    assert_eq!(fdb.learn(mac(1), 0, 2, t0), Learn::Static { owner: 1 });
    assert_eq!(fdb.lookup(&mac(1), 0, t0), Some(1));
    // The owner: fine. Ageing and a port flush do not remove it.
    assert_eq!(fdb.learn(mac(1), 0, 1, t0), Learn::Refreshed);
    assert_eq!(fdb.age(t0 + secs(100)), 0);
    assert_eq!(fdb.flush_port(1), 0);
    assert_eq!(fdb.lookup(&mac(1), 0, t0 + secs(100)), Some(1));
    let e: Vec<_> = fdb.entries(t0 + secs(100)).collect();
    assert_eq!(e.len(), 1);
    assert!(e[0].fixed);
    // Another VLAN is another address.
    assert_eq!(fdb.learn(mac(1), 7, 2, t0), Learn::New);
    // A static entry replaces a learned one (and uncounts it).
    fdb.set_port_limit(3, 4);
    assert_eq!(fdb.learn(mac(2), 0, 3, t0), Learn::New);
    assert_eq!(fdb.learned_count(3), 1);
    fdb.add_static(mac(2), 0, 1).unwrap();
    assert_eq!(fdb.learned_count(3), 0);
    assert_eq!(fdb.lookup(&mac(2), 0, t0), Some(1));
    // Removal: the port is gone.
    assert!(fdb.remove_static(&mac(2), 0));
    assert!(!fdb.remove_static(&mac(2), 0));
    assert_eq!(fdb.forget_port(1), 1);
    assert_eq!(fdb.lookup(&mac(1), 0, t0), None);
}

#[test]
fn per_port_limit_without_evicting_others() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::new(16, secs(10));
    fdb.set_port_limit(1, 3);
    fdb.set_port_limit(2, 3);
    for n in 0..3 {
        assert_eq!(fdb.learn(mac(100 + n), 0, 1, t0), Learn::New);
    }
    assert_eq!(fdb.learn(mac(200), 0, 1, t0), Learn::LimitReached);
    assert_eq!(fdb.learned_count(1), 3);
    // Moving an address to a full port is refused too; the other port keeps it.
    assert_eq!(fdb.learn(mac(300), 0, 2, t0), Learn::New);
    assert_eq!(fdb.learn(mac(300), 0, 1, t0), Learn::LimitReached);
    assert_eq!(fdb.lookup(&mac(300), 0, t0), Some(2));
    // Ageing frees the port's room.
    assert_eq!(fdb.age(t0 + secs(10)), 4);
    assert_eq!(fdb.learned_count(1), 0);
    assert_eq!(fdb.learn(mac(200), 0, 1, t0 + secs(10)), Learn::New);
    // A port with no limit is not limited; a flood of sources from it fills the table but
    // never takes a live entry of another port.
    let mut fdb = Fdb::<u32>::new(8, secs(10));
    assert_eq!(fdb.learn(mac(1), 0, 2, t0), Learn::New);
    let mut full = 0;
    for n in 0..1000 {
        if fdb.learn(mac(1000 + n), 0, 9, t0) == Learn::TableFull {
            full += 1;
        }
    }
    assert_eq!(full, 1000 - 7);
    assert_eq!(fdb.lookup(&mac(1), 0, t0), Some(2));
}

#[test]
fn decisions_for_spoofed_and_over_limit_sources() {
    let t0 = Instant::now();
    let mut fdb = Fdb::<u32>::new(16, secs(10));
    fdb.add_static(mac(1), 0, 1).unwrap();
    fdb.set_port_limit(2, 1);
    assert_eq!(
        fdb.decide(2, 0, mac(1), MacAddr::BROADCAST, t0),
        Decision::Drop(DropReason::Spoofed)
    );
    assert_eq!(fdb.decide(2, 0, mac(2), mac(1), t0), Decision::Unicast(1));
    assert_eq!(
        fdb.decide(2, 0, mac(3), mac(1), t0),
        Decision::Drop(DropReason::MacLimit)
    );
}
