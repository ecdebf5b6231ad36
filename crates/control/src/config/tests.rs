//! Tests of the configuration model: every error message and the successful parses.
use super::*;
use std::path::PathBuf;
use std::time::Duration;

fn vhost(spec: &str) -> Result<VhostUserPort, String> {
    spec.parse::<VhostUserPort>().map_err(|e| e.to_string())
}

fn tap(spec: &str) -> Result<TapPort, String> {
    spec.parse::<TapPort>().map_err(|e| e.to_string())
}

/// Asserts that `parse` refuses each input with exactly its message.
fn refuses<T: std::fmt::Debug>(parse: impl Fn(&str) -> Result<T, String>, cases: &[(&str, &str)]) {
    for (input, want) in cases {
        assert_eq!(parse(input).unwrap_err(), *want, "{input:?}");
    }
}

fn toml(text: &str) -> Result<Config, String> {
    Config::from_toml_str(text, "vnet.toml").map_err(|e| e.to_string())
}

fn toml_err(text: &str) -> String {
    toml(text).unwrap_err()
}

fn vm(name: &str, socket: &str) -> PortConfig {
    PortConfig::VhostUser(VhostUserPort {
        name: name.into(),
        socket: socket.into(),
        client: false,
        mac: None,
        queue_pairs: 1,
        mtu: None,
        datapath: None,
        isolation: Isolation::default(),
        access: Default::default(),
    })
}

const VM1_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

/// Port vm1 with every key set, as `FULL` and `vhost_user_full` write it.
fn vm1_full() -> VhostUserPort {
    VhostUserPort {
        name: "vm1".into(),
        socket: "/tmp/vm1.sock".into(),
        client: true,
        mac: Some(VM1_MAC),
        queue_pairs: 2,
        mtu: Some(9000),
        datapath: None,
        isolation: Isolation::default(),
        access: Default::default(),
    }
}

// ---- MAC addresses and names

#[test]
fn mac_syntax_is_wire_macaddr() {
    // MACs parse as `wire::MacAddr` does: either case, `:` (or `-`) between octets.
    for (text, want) in [
        ("52:54:00:00:00:01", VM1_MAC),
        (
            "AA:bb:Cc:00:ff:0e",
            MacAddr([0xaa, 0xbb, 0xcc, 0, 0xff, 0x0e]),
        ),
        ("52-54-00-00-00-01", VM1_MAC),
    ] {
        let p = vhost(&format!("name=vm1,socket=/a,mac={text}")).unwrap();
        assert_eq!(p.mac, Some(want), "{text}");
        // Printed back in the canonical form.
        assert!(p.to_string().contains(&format!(",mac={want},")), "{p}");
    }
    for bad in [
        "",
        "52:54:00:00:00",
        "52:54:00:00:00:01:02",
        "52:54:00:00:00:001",
        "52:54:zz:00:00:01",
        "525400000001",
        "52:54:00:00:00:01:",
        "+2:54:00:00:00:01",
        " 52:54:00:00:00:01",
        "52:54:00:00:00:0é",
    ] {
        assert_eq!(
            vhost(&format!("name=vm1,socket=/a,mac={bad}")).unwrap_err(),
            format!(
                "bad MAC `{bad}` for port vm1: expected 6 hex pairs separated by ':', \
                 like 52:54:00:12:34:56"
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn mac_class() {
    assert_eq!(station_mac_class(&VM1_MAC), Ok(()));
    assert_eq!(
        station_mac_class(&MacAddr([0xff; 6])),
        Err(MacError::Multicast)
    );
    assert_eq!(
        station_mac_class(&MacAddr([0x01, 0, 0x5e, 0, 0, 1])),
        Err(MacError::Multicast)
    );
    assert_eq!(
        station_mac_class(&MacAddr([0x33, 0x33, 0, 0, 0, 1])),
        Err(MacError::Multicast)
    );
    assert_eq!(station_mac_class(&MacAddr([0; 6])), Err(MacError::Zero));
}

#[test]
fn names() {
    assert_eq!(validate_name("vm1"), Ok(()));
    assert_eq!(validate_name("A-b_c.9"), Ok(()));
    assert_eq!(validate_name("fifteen-chars-x"), Ok(()));
    assert_eq!(validate_name(""), Err(NameError::Empty));
    assert_eq!(validate_name("sixteen-chars-xx"), Err(NameError::TooLong));
    assert_eq!(validate_name("vm 1"), Err(NameError::BadChar(' ')));
    assert_eq!(validate_name("vm/1"), Err(NameError::BadChar('/')));
    assert_eq!(validate_name("vmé"), Err(NameError::BadChar('é')));
    assert_eq!(validate_name(".."), Err(NameError::Dots));
}

// ---- --vhost-user

#[test]
fn vhost_user_full() {
    let p = vhost("name=vm1,socket=/tmp/vm1.sock,client,mac=52:54:00:00:00:01,queues=2,mtu=9000")
        .unwrap();
    assert_eq!(p, vm1_full());
    assert_eq!(
        p.to_string(),
        "name=vm1,socket=/tmp/vm1.sock,client,mac=52:54:00:00:00:01,queues=2,mtu=9000"
    );
    assert_eq!(vhost(&p.to_string()).unwrap(), p);
}

#[test]
fn vhost_user_datapath_per_port() {
    let p = vhost("name=vm1,socket=/s,datapath=poll").unwrap();
    assert_eq!(p.datapath, Some(DatapathMode::Poll));
    assert_eq!(p.to_string(), "name=vm1,socket=/s,queues=1,datapath=poll");
    assert_eq!(vhost(&p.to_string()).unwrap(), p);
    assert_eq!(
        vhost("name=vm1,socket=/s,datapath=turbo").unwrap_err(),
        "port vm1: unknown datapath mode `turbo` (expected event, poll or adaptive)"
    );
    let text = "[[vhost_user]]\nname = \"a\"\nsocket = \"/a\"\ndatapath = \"adaptive\"\n";
    let c = Config::from_toml_str(text, "vnet.toml").unwrap();
    let PortConfig::VhostUser(a) = &c.ports[0] else {
        panic!("{c:?}")
    };
    assert_eq!(a.datapath, Some(DatapathMode::Adaptive));
    assert_eq!(
        c.datapath,
        DatapathMode::Event,
        "the daemon's own mode is unchanged"
    );
}

#[test]
fn vhost_user_defaults_and_forms() {
    let p = vhost("socket=/tmp/a.sock,name=a").unwrap();
    assert_eq!(
        p,
        VhostUserPort {
            name: "a".into(),
            socket: "/tmp/a.sock".into(),
            client: false,
            mac: None,
            queue_pairs: 1,
            mtu: None,
            datapath: None,
            isolation: Isolation::default(),
            access: Default::default(),
        }
    );
    assert_eq!(vhost(&p.to_string()).unwrap(), p);
    assert!(vhost("name=a,socket=/s,client=yes").unwrap().client);
    assert!(!vhost("name=a,socket=/s,client=false").unwrap().client);
    assert_eq!(
        vhost("name=a,socket=/s,,").unwrap().name,
        "a",
        "empty items skipped"
    );
    assert_eq!(vhost("name=a,socket=/s,mtu=68").unwrap().mtu, Some(68));
    assert_eq!(
        vhost("name=a,socket=/s,mtu=65535").unwrap().mtu,
        Some(65535)
    );
    assert_eq!(vhost("name=a,socket=/s,queues=16").unwrap().queue_pairs, 16);
    assert_eq!(
        vhost("name=a,socket=/path=with=equals").unwrap().socket,
        PathBuf::from("/path=with=equals")
    );
}

#[test]
fn vhost_user_unknown_key() {
    refuses(
        vhost,
        &[
            (
                "name=vm1,socket2=/tmp/vm1.sock",
                "unknown key `socket2` in `--vhost-user name=vm1,socket2=/tmp/vm1.sock` (known \
                 keys: name, socket, client, mac, queues, mtu, datapath, mode, group, uids, max-mem, spoofchk, ips, max-macs, vlan, trunk, ingress-mbit, ingress-kpps, \
                 egress-mbit, egress-kpps, flood-kpps)",
            ),
            (
                "name=vm1,socket=/s,server",
                "unknown key `server` in `--vhost-user name=vm1,socket=/s,server` (known keys: \
                 name, socket, client, mac, queues, mtu, datapath, mode, group, uids, max-mem, spoofchk, ips, max-macs, vlan, trunk, ingress-mbit, ingress-kpps, \
                 egress-mbit, egress-kpps, flood-kpps)",
            ),
        ],
    );
}

#[test]
fn vhost_user_missing_keys() {
    refuses(
        vhost,
        &[
            ("name=vm1", "missing `socket` in `--vhost-user name=vm1`"),
            (
                "socket=/tmp/x.sock",
                "missing `name` in `--vhost-user socket=/tmp/x.sock`",
            ),
            ("", "missing `name` in `--vhost-user `"),
        ],
    );
}

#[test]
fn vhost_user_duplicate_key() {
    assert_eq!(
        vhost("name=vm1,socket=/a,name=vm2").unwrap_err(),
        "`name` given twice in `--vhost-user name=vm1,socket=/a,name=vm2`"
    );
}

#[test]
fn vhost_user_bad_values() {
    refuses(
        vhost,
        &[
            (
                "name=vm1,socket=/a,client=maybe",
                "bad value `maybe` for `client` in `--vhost-user \
                 name=vm1,socket=/a,client=maybe`: expected true or false",
            ),
            (
                "name,socket=/a",
                "bad value `` for `name` in `--vhost-user name,socket=/a`: expected `key=value`",
            ),
            (
                "name=vm1,socket=/a,queues=two",
                "bad value `two` for `queues` in `--vhost-user name=vm1,socket=/a,queues=two`: \
                 expected a decimal number",
            ),
            (
                "name=vm1,socket=/a,mtu=-1",
                "bad value `-1` for `mtu` in `--vhost-user name=vm1,socket=/a,mtu=-1`: expected a \
                 decimal number",
            ),
        ],
    );
}

#[test]
fn vhost_user_bad_mac() {
    assert_eq!(
        vhost("name=vm1,socket=/a,mac=52:54:zz:00:00:01").unwrap_err(),
        "bad MAC `52:54:zz:00:00:01` for port vm1: expected 6 hex pairs separated by ':', \
         like 52:54:00:12:34:56"
    );
    // The port is named even when `mac` comes before `name`.
    refuses(
        vhost,
        &[
            (
                "mac=01:00:5e:00:00:01,name=vm1,socket=/a",
                "bad MAC `01:00:5e:00:00:01` for port vm1: multicast address (the low bit of the \
                 first octet is set)",
            ),
            (
                "name=vm1,socket=/a,mac=ff:ff:ff:ff:ff:ff",
                "bad MAC `ff:ff:ff:ff:ff:ff` for port vm1: multicast address (the low bit of the \
                 first octet is set)",
            ),
            (
                "name=vm1,socket=/a,mac=00:00:00:00:00:00",
                "bad MAC `00:00:00:00:00:00` for port vm1: the all-zero address is not a station \
                 address",
            ),
            (
                "name=vm1,socket=/a,mac=",
                "bad MAC `` for port vm1: expected 6 hex pairs separated by ':', like \
                 52:54:00:12:34:56",
            ),
        ],
    );
}

#[test]
fn vhost_user_ranges() {
    for (q, v) in [("0", 0u64), ("17", 17), ("70000", 70000)] {
        assert_eq!(
            vhost(&format!("name=vm1,socket=/a,queues={q}")).unwrap_err(),
            format!("queue_pairs {v} for port vm1 is outside 1..=16")
        );
    }
    for m in ["0", "67", "65536", "100000"] {
        assert_eq!(
            vhost(&format!("name=vm1,socket=/a,mtu={m}")).unwrap_err(),
            format!("mtu {m} for port vm1 is outside 68..=65535")
        );
    }
}

#[test]
fn vhost_user_bad_names() {
    refuses(
        vhost,
        &[
            ("name=,socket=/a", "bad port name ``: must not be empty"),
            (
                "name=vm 1,socket=/a",
                "bad port name `vm 1`: character ' ' is not allowed (use A-Z a-z 0-9 _ . -)",
            ),
            (
                "name=a-very-long-name,socket=/a",
                "bad port name `a-very-long-name`: longer than 15 characters",
            ),
        ],
    );
}

#[test]
fn vhost_user_socket_paths() {
    assert_eq!(
        vhost("name=vm1,socket=").unwrap_err(),
        "empty socket path for port vm1"
    );
    let long = format!("/{}", "s".repeat(107));
    assert_eq!(
        vhost(&format!("name=vm1,socket={long}")).unwrap_err(),
        format!(
            "socket path `{long}` for port vm1 is 108 bytes, more than the 107 a unix \
             socket address holds"
        )
    );
    assert!(vhost(&format!("name=vm1,socket={}", &long[..107])).is_ok());
}

// ---- --tap

#[test]
fn tap_full_and_defaults() {
    let t = tap("name=host0,ifname=vnet-host0,netns=ns1,queues=2,mac=52:54:00:00:00:01").unwrap();
    assert_eq!(
        t,
        TapPort {
            name: "host0".into(),
            ifname: "vnet-host0".into(),
            netns: Some("ns1".into()),
            queues: 2,
            mac: Some(VM1_MAC),
            mtu: None,
            isolation: Isolation::default(),
        }
    );
    assert_eq!(tap(&t.to_string()).unwrap(), t);
    let t = tap("name=host0").unwrap();
    assert_eq!(t.ifname, "host0", "ifname defaults to the port name");
    assert_eq!((t.netns, t.queues, t.mac), (None, 1, None));
}

#[test]
fn tap_errors() {
    refuses(
        tap,
        &[
            (
                "name=h,socket=/a",
                "unknown key `socket` in `--tap name=h,socket=/a` (known keys: name, ifname, \
                 netns, queues, mac, mtu, spoofchk, ips, max-macs, vlan, trunk, ingress-mbit, ingress-kpps, \
                 egress-mbit, egress-kpps, flood-kpps)",
            ),
            ("ifname=x", "missing `name` in `--tap ifname=x`"),
            (
                "name=h,ifname=this-is-too-long",
                "bad interface name `this-is-too-long` for port h: longer than 15 characters",
            ),
            (
                "name=h,netns=../etc",
                "bad netns `../etc` for port h: must be a plain name under /run/netns",
            ),
            (
                "name=h,netns=",
                "bad netns `` for port h: must not be empty",
            ),
            (
                "name=h,queues=0",
                "queue_pairs 0 for port h is outside 1..=16",
            ),
            (
                "name=h,mac=33:33:00:00:00:01",
                "bad MAC `33:33:00:00:00:01` for port h: multicast address (the low bit of the \
                 first octet is set)",
            ),
        ],
    );
}

// ---- Config::validate

#[test]
fn validate_accepts_defaults_and_good_ports() {
    let mut c = Config::default();
    assert_eq!(
        c.fdb,
        FdbConfig {
            capacity: 4096,
            aging_secs: 300
        }
    );
    assert_eq!(c.fdb.aging(), Duration::from_secs(300));
    assert_eq!(c.workers, 1);
    c.validate().unwrap();
    c.ports.push(vm("vm1", "/a"));
    c.ports.push(vm("vm2", "/b"));
    c.ports.push(PortConfig::Tap(tap("name=host0").unwrap()));
    c.validate().unwrap();
    assert_eq!(c.ports[2].name(), "host0");
}

#[test]
fn validate_duplicates() {
    let mut c = Config {
        ports: vec![vm("vm1", "/a"), vm("vm1", "/b")],
        ..Config::default()
    };
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "duplicate port name `vm1`"
    );

    c.ports = vec![vm("vm1", "/a"), vm("vm2", "/a")];
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "duplicate socket path `/a` (ports vm1 and vm2)"
    );

    let t = |n: &str, i: &str, ns: Option<&str>| {
        PortConfig::Tap(TapPort {
            name: n.into(),
            ifname: i.into(),
            netns: ns.map(str::to_string),
            queues: 1,
            mac: None,
            mtu: None,
            isolation: Isolation::default(),
        })
    };
    c.ports = vec![
        t("h1", "tap0", None),
        t("h2", "tap0", Some("ns1")),
        t("h3", "tap0", Some("ns2")),
    ];
    c.validate().unwrap();
    c.ports.push(t("h4", "tap0", Some("ns1")));
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "duplicate tap interface `tap0` in netns ns1 (ports h2 and h4)"
    );
    c.ports = vec![t("h1", "tap0", None), t("h2", "tap0", None)];
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "duplicate tap interface `tap0` in the host namespace (ports h1 and h2)"
    );

    let mut a = vhost("name=vm1,socket=/a,mac=52:54:00:00:00:01").unwrap();
    let b = tap("name=host0,mac=52:54:00:00:00:01").unwrap();
    c.ports = vec![PortConfig::VhostUser(a.clone()), PortConfig::Tap(b)];
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "duplicate MAC 52:54:00:00:00:01 (ports vm1 and host0)"
    );
    a.mac = Some(MacAddr([0x01, 0, 0, 0, 0, 1]));
    c.ports = vec![PortConfig::VhostUser(a)];
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "bad MAC `01:00:00:00:00:01` for port vm1: multicast address \
         (the low bit of the first octet is set)"
    );
}

#[test]
fn validate_ports_built_in_code() {
    let mut c = Config::default();
    let mut p = VhostUserPort {
        name: "vm1".into(),
        socket: "/a".into(),
        client: false,
        mac: None,
        queue_pairs: 0,
        mtu: None,
        datapath: None,
        isolation: Isolation::default(),
        access: Default::default(),
    };
    c.ports = vec![PortConfig::VhostUser(p.clone())];
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "queue_pairs 0 for port vm1 is outside 1..=16"
    );
    p.queue_pairs = 1;
    p.mtu = Some(67);
    c.ports = vec![PortConfig::VhostUser(p.clone())];
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "mtu 67 for port vm1 is outside 68..=65535"
    );
    p.mtu = None;
    p.name = "bad/name".into();
    c.ports = vec![PortConfig::VhostUser(p)];
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "bad port name `bad/name`: character '/' is not allowed (use A-Z a-z 0-9 _ . -)"
    );
}

#[test]
fn validate_globals() {
    let check = |f: &dyn Fn(&mut Config)| {
        let mut c = Config::default();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    };
    assert_eq!(check(&|c| c.workers = 0), "workers 0 is outside 1..=64");
    assert_eq!(
        check(&|c| c.tap_hold_ms = 0),
        "tap_hold_ms 0 is outside 1..=60000"
    );
    assert_eq!(
        check(&|c| c.workers = 1000),
        "workers 1000 is outside 1..=64"
    );
    assert_eq!(
        check(&|c| c.fdb.capacity = 0),
        "fdb capacity 0 is outside 1..=4194304"
    );
    assert_eq!(
        check(&|c| c.fdb.aging_secs = 9),
        "fdb aging_secs 9 is outside 10..=1000000"
    );
    assert_eq!(
        check(&|c| c.fdb.aging_secs = 1_000_001),
        "fdb aging_secs 1000001 is outside 10..=1000000"
    );
    assert_eq!(
        check(&|c| c.control = Some(PathBuf::new())),
        "control socket path `` is 0 bytes: must be 1..=107"
    );
}

// ---- TOML

const FULL: &str = r#"
# vnetd configuration
control = "/run/vnet/ctl.sock"
workers = 2
datapath = "adaptive"

[fdb]
capacity = 1024
aging_secs = 60

[[vhost_user]]
name = "vm1"
socket = "/tmp/vm1.sock"
client = true
mac = "52:54:00:00:00:01"
queues = 2
mtu = 9000

[[vhost_user]]
name = "vm2"
socket = "/tmp/vm2.sock"

[[tap]]
name = "host0"
ifname = "vnet-host0"
netns = "ns1"
queues = 2
mac = "52:54:00:00:00:02"
"#;

#[test]
fn datapath_mode_errors_name_the_value() {
    let e = Config::from_toml_str("datapath = \"turbo\"\n", "vnet.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "vnet.toml:1:12: unknown datapath mode `turbo` (expected event, poll or adaptive)"
    );
}

#[test]
fn toml_full() {
    let c = Config::from_toml_str(FULL, "vnet.toml").unwrap();
    assert_eq!(
        c,
        Config {
            control: Some("/run/vnet/ctl.sock".into()),
            workers: 2,
            datapath: DatapathMode::Adaptive,
            tap_hold_ms: 50,
            tap_batch: true,
            fdb: FdbConfig {
                capacity: 1024,
                aging_secs: 60
            },
            ports: vec![
                PortConfig::VhostUser(vm1_full()),
                vm("vm2", "/tmp/vm2.sock"),
                PortConfig::Tap(TapPort {
                    name: "host0".into(),
                    ifname: "vnet-host0".into(),
                    netns: Some("ns1".into()),
                    queues: 2,
                    mac: Some(MacAddr([0x52, 0x54, 0, 0, 0, 2])),
                    mtu: None,
                    isolation: Isolation::default(),
                }),
            ],
            security: Default::default(),
            metrics: None,
            log_level: None,
            log_format: LogFormat::Text,
        }
    );
    c.validate().unwrap();
}

#[test]
fn toml_empty_and_partial() {
    assert_eq!(Config::from_toml_str("", "x").unwrap(), Config::default());
    let c = Config::from_toml_str("[fdb]\naging_secs = 30\n", "x").unwrap();
    assert_eq!(
        c.fdb,
        FdbConfig {
            capacity: 4096,
            aging_secs: 30
        }
    );
    let c = Config::from_toml_str(
        "[[vhost_user]]\nname = \"a\"\nsocket = \"/a\"\nqueue_pairs = 4\n",
        "x",
    )
    .unwrap();
    assert_eq!(
        c.ports,
        vec![PortConfig::VhostUser(VhostUserPort {
            queue_pairs: 4,
            ..vhost("name=a,socket=/a").unwrap()
        })]
    );
    // Inline tables work too.
    let c = Config::from_toml_str("tap = [{ name = \"t0\" }]", "x").unwrap();
    assert_eq!(c.ports, vec![PortConfig::Tap(tap("name=t0").unwrap())]);
}

#[test]
fn toml_unknown_keys_with_location() {
    refuses(
        toml,
        &[
            (
                "[[vhost_user]]\nname = \"vm1\"\nsocket2 = \"/x\"\n",
                "vnet.toml:3:1: unknown field `socket2`, expected one of `name`, `socket`, \
                 `client`, `mac`, `queue_pairs`, `queues`, `mtu`, `datapath`, `mode`, `group`, `uids`, `max_mem`, \
                 `spoofchk`, \
                 `allowed_macs`, `ips`, `max_macs`, `vlan`, `trunk`, `ingress_mbit`, \
                 `ingress_kpps`, `egress_mbit`, `egress_kpps`, `flood_kpps`",
            ),
            (
                "workers = 1\n[switch]\n",
                "vnet.toml:2:2: unknown field `switch`, expected one of `control`, `workers`, \
                 `datapath`, `tap_hold_ms`, `tap_batch`, `user`, `seccomp`, `socket_mode`, `socket_group`, `control_group`, `allow_shared_socket_dir`, `metrics`, `log_level`, `log_format`, `fdb`, `vhost_user`, `tap`",
            ),
            (
                "[fdb]\ncapacity = 1\nage = 3\n",
                "vnet.toml:3:1: unknown field `age`, expected `capacity` or `aging_secs`",
            ),
        ],
    );
}

#[test]
fn toml_missing_keys_name_the_table_and_port() {
    assert_eq!(
        toml_err("workers = 2\n\n[[vhost_user]]\nname = \"vm1\"\n"),
        "vnet.toml:3:1: missing `socket` in [[vhost_user]] table of port vm1"
    );
    assert_eq!(
        toml_err(
            "[[vhost_user]]\nname = \"a\"\nsocket = \"/a\"\n\n[[vhost_user]]\nsocket = \"/b\"\n"
        ),
        "vnet.toml:5:1: missing `name` in [[vhost_user]] table"
    );
    assert_eq!(
        toml_err("[[tap]]\nifname = \"x\"\n"),
        "vnet.toml:1:1: missing `name` in [[tap]] table"
    );
}

#[test]
fn toml_type_and_syntax_errors_with_location() {
    refuses(
        toml,
        &[
            (
                "[[vhost_user]]\nname = \"vm1\"\nsocket = \"/a\"\nmtu = \"big\"\n",
                "vnet.toml:4:7: invalid type: string \"big\", expected u64",
            ),
            (
                "[[vhost_user]]\nname = \"vm1\"\nsocket = \"/a\"\nclient = \"yes\"\n",
                "vnet.toml:4:10: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "[[vhost_user]]\nname = \"vm1\"\nsocket = \"/a\"\nqueues = -1\n",
                "vnet.toml:4:10: invalid value: integer `-1`, expected u64",
            ),
        ],
    );
    let e = toml_err("workers = \n");
    assert!(e.starts_with("vnet.toml:1:11: "), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    let e = toml_err("a = 1\na = 2\n");
    assert!(e.starts_with("vnet.toml:2:1: duplicate key `a`"), "{e}");
}

#[test]
fn toml_port_errors_point_at_the_port() {
    assert_eq!(
        toml_err("[[vhost_user]]\nname = \"vm1\"\nsocket = \"/a\"\nmac = \"52:54:zz:00:00:01\"\n"),
        "vnet.toml:1:1: bad MAC `52:54:zz:00:00:01` for port vm1: expected 6 hex pairs \
         separated by ':', like 52:54:00:12:34:56"
    );
    let two = |extra: &str| {
        format!(
            "[[vhost_user]]\nname = \"vm1\"\nsocket = \"/a\"\n\n[[vhost_user]]\nname = \"vm2\"\nsocket = \"/b\"\n{extra}"
        )
    };
    refuses(
        toml,
        &[
            (
                two("mtu = 67\n").as_str(),
                "vnet.toml:5:1: mtu 67 for port vm2 is outside 68..=65535",
            ),
            (
                two("queues = 0\n").as_str(),
                "vnet.toml:5:1: queue_pairs 0 for port vm2 is outside 1..=16",
            ),
            (
                two("queues = 99999999999\n").as_str(),
                "vnet.toml:5:1: queue_pairs 99999999999 for port vm2 is outside 1..=16",
            ),
            (
                "[[vhost_user]]\nname = \"vm1\"\nsocket = \"/a\"\n\n[[vhost_user]]\nname = \"vm1\"\nsocket = \"/b\"\n",
                "vnet.toml:5:1: duplicate port name `vm1`",
            ),
            (
                "[[vhost_user]]\nname = \"vm1\"\nsocket = \"/a\"\n\n[[vhost_user]]\nname = \"vm2\"\nsocket = \"/a\"\n",
                "vnet.toml:5:1: duplicate socket path `/a` (ports vm1 and vm2)",
            ),
            (
                "[[tap]]\nname = \"way-too-long-name\"\n",
                "vnet.toml:1:1: bad port name `way-too-long-name`: longer than 15 characters",
            ),
        ],
    );
    // The tap tables come after the vhost-user ones; the index maps to the right span.
    assert_eq!(
        toml_err("[[tap]]\nname = \"vm1\"\n\n[[vhost_user]]\nname = \"vm1\"\nsocket = \"/a\"\n"),
        "vnet.toml:1:1: duplicate port name `vm1`"
    );
}

#[test]
fn toml_global_range_errors_point_at_the_value() {
    refuses(
        toml,
        &[
            (
                "workers = 0\n",
                "vnet.toml:1:11: workers 0 is outside 1..=64",
            ),
            (
                "tap_hold_ms = 60001\n",
                "vnet.toml:1:15: tap_hold_ms 60001 is outside 1..=60000",
            ),
            (
                "[fdb]\ncapacity = 0\n",
                "vnet.toml:2:12: fdb capacity 0 is outside 1..=4194304",
            ),
            (
                "\n[fdb]\n  aging_secs = 5\n",
                "vnet.toml:3:16: fdb aging_secs 5 is outside 10..=1000000",
            ),
            (
                "control = \"\"\n",
                "control socket path `` is 0 bytes: must be 1..=107",
            ),
        ],
    );
}

#[test]
fn location_counts_lines_and_characters() {
    let text = "ab\ncé d\n";
    assert_eq!(Location::of(text, 0), Location { line: 1, column: 1 });
    assert_eq!(Location::of(text, 3), Location { line: 2, column: 1 });
    assert_eq!(
        Location::of(text, 6),
        Location { line: 2, column: 3 },
        "after é"
    );
    assert_eq!(
        Location::of(text, 5),
        Location { line: 2, column: 2 },
        "inside é"
    );
    assert_eq!(Location::of(text, 999), Location { line: 3, column: 1 });
}

#[test]
fn load_from_file() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("vnet-config-test-{}.toml", std::process::id()));
    std::fs::write(&path, FULL).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.ports.len(), 3);
    std::fs::write(&path, "workers = 0\n").unwrap();
    assert_eq!(
        Config::load(&path).unwrap_err().to_string(),
        format!("{}:1:11: workers 0 is outside 1..=64", path.display())
    );
    std::fs::remove_file(&path).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("cannot read config file {}: ", path.display())),
        "{e}"
    );
}

// ---- written back as TOML

#[test]
fn the_running_configuration_written_as_toml_parses_back_the_same() {
    let mut c = toml(
        r#"
control = "/run/vnet/vnetd.sock"
workers = 2
datapath = "adaptive"
tap_hold_ms = 20
user = "vnet:kvm"
seccomp = "log"
socket_mode = "0660"
allow_shared_socket_dir = true
metrics = "127.0.0.1:9100"
log_level = "warn,vnet_datapath=debug"
log_format = "json"
[fdb]
capacity = 1000
aging_secs = 60
[[vhost_user]]
name = "a"
socket = "/run/vnet/a.sock"
client = true
mac = "52:54:00:00:00:01"
queues = 2
mtu = 9000
datapath = "poll"
mode = "0600"
group = "kvm"
uids = [107]
max_mem = "64G"
spoofchk = false
allowed_macs = ["52:54:00:00:00:11"]
ips = ["198.18.0.1", "2001:db8::1"]
max_macs = 8
trunk = [10, 20]
ingress_mbit = 100
flood_kpps = 5
[[tap]]
name = "h"
ifname = "vnet-h"
netns = "blue"
queues = 2
mac = "52:54:00:00:00:02"
vlan = 10
"#,
    )
    .unwrap();
    // The file lists vhost-user ports, then TAP ports.
    c.ports
        .insert(1, PortConfig::VhostUser(vhost("name=b,socket=/b").unwrap()));
    let text = c.to_toml();
    assert_eq!(toml(&text).unwrap(), c, "{text}");
    assert_eq!(
        toml(&Config::default().to_toml()).unwrap(),
        Config::default()
    );
}

// ---- socket access and daemon security

#[test]
fn access_keys_on_the_command_line_and_in_toml() {
    let p = vhost("name=a,socket=/a,mode=0660,group=kvm,uids=0:107,max-mem=64G").unwrap();
    assert_eq!(
        p.access,
        Access {
            mode: Some(0o660),
            group: Some("kvm".into()),
            uids: vec![0, 107],
            max_mem: Some(64 << 30),
        }
    );
    assert_eq!(vhost(&p.to_string()).unwrap(), p, "{p}");
    for (bad, key) in [
        ("mode=0999", "mode"),
        ("mode=1777", "mode"),
        ("uids=0:x", "uids"),
        ("max-mem=12Q", "max-mem"),
        ("max-mem=1K", "max-mem"),
        ("group=-x", "group"),
    ] {
        let e = vhost(&format!("name=a,socket=/a,{bad}")).unwrap_err();
        assert!(e.contains(&format!("`{key}`")), "{bad}: {e}");
        assert!(e.contains("port a"), "{bad}: {e}");
    }
    let c = toml(
        r#"
user = "vnet:kvm"
seccomp = "log"
socket_mode = "0660"
socket_group = "kvm"
control_group = "vnetadm"
allow_shared_socket_dir = true
[[vhost_user]]
name = "a"
socket = "/a"
mode = "0600"
uids = [107]
max_mem = "1T"
[[vhost_user]]
name = "b"
socket = "/b"
max_mem = 1073741824
"#,
    )
    .unwrap();
    assert_eq!(
        c.security,
        Security {
            user: Some("vnet:kvm".into()),
            seccomp: SeccompMode::Log,
            socket_mode: Some(0o660),
            socket_group: Some("kvm".into()),
            control_group: Some("vnetadm".into()),
            allow_shared_socket_dir: true,
        }
    );
    let PortConfig::VhostUser(a) = &c.ports[0] else {
        panic!()
    };
    assert_eq!(a.access.uids, vec![107]);
    assert_eq!(a.access.max_mem, Some(1 << 40));
    let PortConfig::VhostUser(b) = &c.ports[1] else {
        panic!()
    };
    assert_eq!(b.access.max_mem, Some(1 << 30));
    let e = toml("seccomp = \"strict\"\n").unwrap_err();
    assert!(e.contains("vnet.toml:1:") && e.contains("`seccomp`"), "{e}");
    let e = toml("user = \"a:b:c\"\n").unwrap_err();
    assert!(e.contains("`user`"), "{e}");
    let e = toml("socket_mode = \"rw\"\n").unwrap_err();
    assert!(e.contains("`socket_mode`"), "{e}");
    assert_eq!(parse_size("512MiB"), Some(512 << 20));
    assert_eq!(parse_mode("0o640"), Some(0o640));
}
