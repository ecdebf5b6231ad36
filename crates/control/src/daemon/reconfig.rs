//! Ports at runtime: added, changed live and removed, and `--config` reloaded as the
//! difference from the running configuration.

use super::*;

/// What `set-port` may change on a running port. (A vhost-user port's `mac` changes what
/// the switch enforces and learns statically; the guest sees its new config-space MAC when
/// its driver reads it again, at its next reset.)
pub const LIVE_KEYS: &[&str] = &[
    "mac",
    "spoofchk",
    "ips",
    "max-macs",
    "vlan",
    "trunk",
    "ingress-mbit",
    "ingress-kpps",
    "egress-mbit",
    "egress-kpps",
    "flood-kpps",
];

impl Daemon {
    /// Adds a port, at start-up or while the others run, after checking it against the
    /// running configuration (names, sockets, interfaces, MACs).
    pub fn add_port(&mut self, pc: &PortConfig) -> Result<(), DaemonError> {
        let mut next = self.cfg.clone();
        next.ports.push(pc.clone());
        next.validate()?;
        match pc {
            PortConfig::VhostUser(vu) => self.add_vhost_user(vu)?,
            PortConfig::Tap(t) => {
                let tap = open_tap(&mut self.dp, t)?;
                self.metric_port(MetricPort {
                    name: t.name.clone(),
                    kind: "tap",
                    counters: tap.handle.counters.clone(),
                    status: tap.handle.status.clone(),
                });
                self.taps.push(tap);
            }
        }
        self.cfg = next;
        Ok(())
    }

    /// Adds a port to the metrics.
    pub(super) fn metric_port(&self, p: MetricPort) {
        let mut list = self
            .metric_ports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        list.push(p);
    }

    /// Removes a port while the others run: its rings stop, its frontend is disconnected,
    /// the socket file vnetd created goes, and the datapath releases its held frames and
    /// FDB entries. Returns what was done.
    pub fn del_port(&mut self, name: &str) -> Result<String, String> {
        let slot = self
            .ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name));
        let what = if let Some(i) = slot {
            self.disconnect(i);
            let Some(p) = self.ports[i].take() else {
                return Err(format!("no port named `{name}`"));
            };
            let mut what = format!("port {name} removed");
            if let Some(l) = &p.listener {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    l.as_raw_fd(),
                    EpollEvent::default(),
                );
                match std::fs::remove_file(&p.cfg.socket) {
                    Ok(()) => what += &format!(", socket {} removed", p.cfg.socket.display()),
                    Err(e) => what += &format!(", socket {} left: {e}", p.cfg.socket.display()),
                }
            }
            self.dp.remove_port(p.handle.id);
            what
        } else if let Some(i) = self.taps.iter().position(|t| t.cfg.name == name) {
            let t = self.taps.remove(i);
            self.dp.remove_port(t.handle.id);
            format!("port {name} removed (TAP {} closed)", t.ifname)
        } else {
            return Err(format!("no port named `{name}`"));
        };
        self.cfg.ports.retain(|p| p.name() != name);
        self.metric_ports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|p| p.name != name);
        tracing::info!("{what}");
        Ok(what)
    }

    /// Changes what can change on a running port ([`LIVE_KEYS`]: its MAC as the switch
    /// enforces it, port security, learning limit, VLAN, rate limits); `settings` are
    /// `KEY=VALUE` as on the command line. Anything else is refused, naming the key;
    /// nothing is applied unless everything is valid. Returns what changed.
    pub fn set_port(&mut self, name: &str, settings: &[String]) -> Result<String, String> {
        let idx = self
            .cfg
            .ports
            .iter()
            .position(|p| p.name() == name)
            .ok_or_else(|| format!("no port named `{name}`"))?;
        let old = self.cfg.ports[idx].clone();
        let tap = matches!(old, PortConfig::Tap(_));
        let mut items = spec_items(&old);
        let mut changed = Vec::new();
        for s in settings {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
            if !LIVE_KEYS.contains(&k) || (tap && k == "mac") {
                return Err(format!(
                    "`{k}` cannot change on a running {} port (live: {}); remove and add the \
                     port to change it",
                    if tap { "TAP" } else { "vhost-user" },
                    LIVE_KEYS
                        .iter()
                        .filter(|l| !(tap && **l == "mac"))
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            match items.iter_mut().find(|(key, _)| key == k) {
                Some(item) => item.1 = Some(v.to_string()),
                None => items.push((k.to_string(), Some(v.to_string()))),
            }
            changed.push(k.to_string());
        }
        let spec = items
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let new = match &old {
            PortConfig::VhostUser(_) => spec.parse().map(PortConfig::VhostUser),
            PortConfig::Tap(_) => spec.parse().map(PortConfig::Tap),
        }
        .map_err(|e| e.to_string())?;
        let mut next = self.cfg.clone();
        next.ports[idx] = new.clone();
        next.validate().map_err(|e| e.to_string())?;
        self.apply_live(&new)?;
        self.cfg = next;
        let what = format!("port {name}: {} changed", changed.join(", "));
        tracing::info!("{what}");
        Ok(what)
    }

    /// Puts a running port's new policy in force (the caller checked that only
    /// [`LIVE_KEYS`] differ and that the whole configuration stays valid).
    pub(super) fn apply_live(&mut self, new: &PortConfig) -> Result<(), String> {
        let name = new.name();
        match new {
            PortConfig::VhostUser(vu) => {
                let policy = port_policy(vu.mac, vu.mtu, &vu.isolation, DEFAULT_MAX_MACS_VHOST);
                let p = self
                    .ports
                    .iter_mut()
                    .flatten()
                    .find(|p| p.cfg.name == name)
                    .ok_or_else(|| format!("no port named `{name}`"))?;
                self.dp.set_policy(p.handle.id, &policy);
                p.mac = vu.mac.unwrap_or_else(|| default_mac(&vu.name));
                p.cfg = vu.clone();
            }
            PortConfig::Tap(t) => {
                let policy = port_policy(t.mac, t.mtu, &t.isolation, DEFAULT_MAX_MACS_TAP);
                let tc = self
                    .taps
                    .iter_mut()
                    .find(|tc| tc.cfg.name == name)
                    .ok_or_else(|| format!("no port named `{name}`"))?;
                self.dp.set_policy(tc.handle.id, &policy);
                tc.cfg = t.clone();
            }
        }
        Ok(())
    }

    /// Where `--config` came from, and the ports given on the command line: what
    /// [`Daemon::reload`] reads again and keeps.
    pub fn set_config_source(&mut self, file: Option<PathBuf>, cli_ports: Vec<PortConfig>) {
        self.config_file = file;
        self.cli_ports = cli_ports;
    }

    /// Re-reads `--config` and applies the difference: ports no longer there are removed,
    /// new ones added, changed ones changed live (only [`LIVE_KEYS`] differ) or removed and
    /// added again. Ports given on vnetd's command line stay; ports added with `add-port`
    /// and absent from the file go (the file is the configuration). A file with an error
    /// changes nothing. Settings of the daemon itself (workers, datapath, security, ...)
    /// take effect at the next start; the report says which differ.
    pub fn reload(&mut self) -> Result<String, String> {
        let Some(path) = self.config_file.clone() else {
            return Err("vnetd was started without --config: nothing to reload".into());
        };
        let refused = |e: String| format!("{e}; nothing changed");
        let mut want = Config::load(&path).map_err(|e| refused(e.to_string()))?;
        want.control = self.cfg.control.clone().or(want.control);
        want.ports.extend(self.cli_ports.iter().cloned());
        want.validate().map_err(|e| refused(e.to_string()))?;
        let mut done = Vec::new();
        let r = self.apply_reload(&want, &mut done);
        if let Err(e) = r {
            let before = if done.is_empty() {
                "nothing changed".to_string()
            } else {
                format!("applied before that: {}", done.join("; "))
            };
            return Err(format!("{e}; {before}"));
        }
        let c = &self.cfg;
        for (key, differs) in [
            ("workers", c.workers != want.workers),
            ("datapath", c.datapath != want.datapath),
            ("tap_hold_ms", c.tap_hold_ms != want.tap_hold_ms),
            ("tap_batch", c.tap_batch != want.tap_batch),
            ("fdb", c.fdb != want.fdb),
            ("security settings", c.security != want.security),
        ] {
            if differs {
                done.push(format!(
                    "{key} changed in the file: takes effect at the next start"
                ));
            }
        }
        if done.is_empty() {
            done.push("no change".into());
        }
        let what = format!("reloaded {}: {}", path.display(), done.join("; "));
        tracing::info!("{what}");
        Ok(what)
    }

    /// Applies the port differences between the running configuration and `want`,
    /// noting each change in `done`.
    pub(super) fn apply_reload(
        &mut self,
        want: &Config,
        done: &mut Vec<String>,
    ) -> Result<(), String> {
        let have = self.cfg.ports.clone();
        let find =
            |ports: &[PortConfig], name: &str| ports.iter().find(|p| p.name() == name).cloned();
        for old in &have {
            match find(&want.ports, old.name()) {
                None => done.push(self.del_port(old.name())?),
                Some(new) if new != *old => {
                    let tap = matches!(new, PortConfig::Tap(_));
                    let (a, b) = (spec_items(old), spec_items(&new));
                    let differ: Vec<String> = a
                        .iter()
                        .filter(|i| !b.contains(i))
                        .chain(b.iter().filter(|i| !a.contains(i)))
                        .map(|(k, _)| k.clone())
                        .collect();
                    let same_kind = std::mem::discriminant(old) == std::mem::discriminant(&new);
                    // Live when only live keys differ (set, changed or gone: the new policy
                    // is computed from the whole new port).
                    let live = same_kind
                        && differ
                            .iter()
                            .all(|k| LIVE_KEYS.contains(&k.as_str()) && !(tap && k == "mac"));
                    if live {
                        self.apply_live(&new)?;
                        if let Some(p) = self.cfg.ports.iter_mut().find(|p| p.name() == new.name())
                        {
                            *p = new.clone();
                        }
                        let mut keys = differ;
                        keys.dedup();
                        done.push(format!("port {}: {} changed", new.name(), keys.join(", ")));
                    } else {
                        self.del_port(old.name())?;
                        self.add_port(&new).map_err(|e| e.to_string())?;
                        done.push(format!(
                            "port {} recreated with its new settings",
                            new.name()
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        for new in &want.ports {
            if find(&have, new.name()).is_none() {
                self.add_port(new).map_err(|e| e.to_string())?;
                done.push(format!("port {} added", new.name()));
            }
        }
        Ok(())
    }
}

/// What the datapath enforces for a port: its configured MAC (and allowed ones) as static
/// entries and, with `spoofchk`, as the only sources; its VLAN, learning limit, MTU and
/// rate limits.
pub(super) fn port_policy(
    mac: Option<MacAddr>,
    mtu: Option<u16>,
    iso: &Isolation,
    default_max_macs: u32,
) -> PortPolicy {
    let macs: Vec<MacAddr> = mac
        .into_iter()
        .chain(iso.allowed_macs.iter().copied())
        .collect();
    let checked = iso.spoofchk && (!macs.is_empty() || !iso.ips.is_empty());
    PortPolicy {
        security: checked.then(|| PortSecurity::new(macs.clone(), iso.ips.clone())),
        static_macs: macs,
        vlan: match (iso.vlan, iso.trunk.is_empty()) {
            (Some(v), _) => VlanMode::Access(v),
            (None, false) => VlanMode::Trunk(Box::new(iso.trunk.iter().copied().collect())),
            (None, true) => VlanMode::Native,
        },
        max_macs: Some(iso.max_macs.unwrap_or(default_max_macs)),
        mtu,
        ingress: Limit {
            mbit: iso.ingress_mbit,
            kpps: iso.ingress_kpps,
        },
        egress: Limit {
            mbit: iso.egress_mbit,
            kpps: iso.egress_kpps,
        },
        flood_kpps: iso.flood_kpps,
    }
}

pub(super) fn open_tap(dp: &mut Datapath, t: &TapPort) -> Result<TapCtl, DaemonError> {
    let tap = port_tap::Tap::open(&port_tap::TapConfig {
        ifname: t.ifname.clone(),
        netns: t.netns.clone(),
        queues: t.queues,
        mac: t.mac,
        mtu: t.mtu,
    })
    .map_err(|err| DaemonError::Tap {
        port: t.name.clone(),
        err,
    })?;
    let ifname = tap.ifname.clone();
    tracing::info!(
        "port {}: TAP {}{} up with {} queue(s)",
        t.name,
        ifname,
        t.netns
            .as_deref()
            .map(|n| format!(" in netns {n}"))
            .unwrap_or_default(),
        tap.queues.len()
    );
    let policy = port_policy(t.mac, t.mtu, &t.isolation, DEFAULT_MAX_MACS_TAP);
    let handle = dp.add_tap_port(&t.name, tap, &policy)?;
    Ok(TapCtl {
        cfg: t.clone(),
        ifname,
        handle,
    })
}

/// A port's command-line form as `(key, value)` items (`value` None for a bare key).
fn spec_items(p: &PortConfig) -> Vec<(String, Option<String>)> {
    let spec = match p {
        PortConfig::VhostUser(p) => p.to_string(),
        PortConfig::Tap(p) => p.to_string(),
    };
    spec.split(',')
        .map(|i| match i.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (i.to_string(), None),
        })
        .collect()
}
