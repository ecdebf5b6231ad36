//! The configuration written back as the TOML vnetd reads (`vnetctl show-config`): what
//! [`Config::from_toml_str`] parses from [`Config::to_toml`] is the same configuration.

use toml::{Table, Value};

use super::access::{Access, Security};
use super::isolation::Isolation;
use super::{Config, PortConfig, DEFAULT_AGING_SECS, DEFAULT_FDB_CAPACITY};

fn int(n: impl Into<i128>) -> Value {
    // Every number of the configuration fits (they are range-checked far below 2^63).
    Value::Integer(i64::try_from(n.into()).unwrap_or(i64::MAX))
}

fn text(s: impl ToString) -> Value {
    Value::String(s.to_string())
}

fn put(t: &mut Table, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        t.insert(key.to_string(), v);
    }
}

fn list<T: ToString>(items: &[T], f: fn(&T) -> Value) -> Option<Value> {
    (!items.is_empty()).then(|| Value::Array(items.iter().map(f).collect()))
}

fn isolation(t: &mut Table, iso: &Isolation) {
    if !iso.spoofchk {
        t.insert("spoofchk".into(), Value::Boolean(false));
    }
    put(t, "allowed_macs", list(&iso.allowed_macs, |m| text(m)));
    put(t, "ips", list(&iso.ips, |a| text(a)));
    put(t, "max_macs", iso.max_macs.map(int));
    put(t, "vlan", iso.vlan.map(int));
    put(t, "trunk", list(&iso.trunk, |v| int(*v)));
    for (key, v) in [
        ("ingress_mbit", iso.ingress_mbit),
        ("ingress_kpps", iso.ingress_kpps),
        ("egress_mbit", iso.egress_mbit),
        ("egress_kpps", iso.egress_kpps),
        ("flood_kpps", iso.flood_kpps),
    ] {
        put(t, key, v.map(int));
    }
}

fn access(t: &mut Table, a: &Access) {
    put(t, "mode", a.mode.map(|m| text(format!("{m:04o}"))));
    put(t, "group", a.group.as_ref().map(text));
    put(t, "uids", list(&a.uids, |u| int(*u)));
    put(t, "max_mem", a.max_mem.map(int));
}

fn security(t: &mut Table, s: &Security) {
    put(t, "user", s.user.as_ref().map(text));
    put(t, "seccomp", Some(text(s.seccomp)));
    put(
        t,
        "socket_mode",
        s.socket_mode.map(|m| text(format!("{m:04o}"))),
    );
    put(t, "socket_group", s.socket_group.as_ref().map(text));
    put(t, "control_group", s.control_group.as_ref().map(text));
    if s.allow_shared_socket_dir {
        t.insert("allow_shared_socket_dir".into(), Value::Boolean(true));
    }
}

impl Config {
    /// The configuration as TOML, every port with every key it sets.
    pub fn to_toml(&self) -> String {
        let mut top = Table::new();
        put(
            &mut top,
            "control",
            self.control.as_ref().map(|p| text(p.display())),
        );
        top.insert(
            "workers".into(),
            int(u64::try_from(self.workers).unwrap_or(1)),
        );
        top.insert("datapath".into(), text(self.datapath));
        top.insert("tap_hold_ms".into(), int(self.tap_hold_ms));
        if !self.tap_batch {
            top.insert("tap_batch".into(), Value::Boolean(false));
        }
        security(&mut top, &self.security);
        put(&mut top, "metrics", self.metrics.map(text));
        put(&mut top, "log_level", self.log_level.as_ref().map(text));
        if self.log_format != super::LogFormat::Text {
            top.insert("log_format".into(), text(self.log_format));
        }
        if (self.fdb.capacity, self.fdb.aging_secs) != (DEFAULT_FDB_CAPACITY, DEFAULT_AGING_SECS) {
            let mut fdb = Table::new();
            fdb.insert(
                "capacity".into(),
                int(u64::try_from(self.fdb.capacity).unwrap_or(u64::MAX)),
            );
            fdb.insert("aging_secs".into(), int(self.fdb.aging_secs));
            top.insert("fdb".into(), Value::Table(fdb));
        }
        let (mut vhost, mut taps) = (Vec::new(), Vec::new());
        for p in &self.ports {
            let mut t = Table::new();
            match p {
                PortConfig::VhostUser(p) => {
                    t.insert("name".into(), text(&p.name));
                    t.insert("socket".into(), text(p.socket.display()));
                    if p.client {
                        t.insert("client".into(), Value::Boolean(true));
                    }
                    put(&mut t, "mac", p.mac.map(text));
                    t.insert("queues".into(), int(p.queue_pairs));
                    put(&mut t, "mtu", p.mtu.map(int));
                    put(&mut t, "datapath", p.datapath.map(text));
                    access(&mut t, &p.access);
                    isolation(&mut t, &p.isolation);
                    vhost.push(Value::Table(t));
                }
                PortConfig::Tap(p) => {
                    t.insert("name".into(), text(&p.name));
                    t.insert("ifname".into(), text(&p.ifname));
                    put(&mut t, "netns", p.netns.as_ref().map(text));
                    t.insert("queues".into(), int(p.queues));
                    put(&mut t, "mac", p.mac.map(text));
                    put(&mut t, "mtu", p.mtu.map(int));
                    isolation(&mut t, &p.isolation);
                    taps.push(Value::Table(t));
                }
            }
        }
        if !vhost.is_empty() {
            top.insert("vhost_user".into(), Value::Array(vhost));
        }
        if !taps.is_empty() {
            top.insert("tap".into(), Value::Array(taps));
        }
        toml::to_string(&top).unwrap_or_else(|e| format!("# cannot write the configuration: {e}\n"))
    }
}
