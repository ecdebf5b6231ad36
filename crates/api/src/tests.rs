use super::*;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};

fn port(name: &str) -> PortInfo {
    PortInfo {
        name: name.to_string(),
        kind: PortKind::VhostUser,
        socket: Some(format!("/tmp/{name}.sock")),
        ifname: None,
        mode: PortMode::Client,
        mac: Some(MacAddr([0x52, 0x54, 0, 0, 0, 1])),
        state: PortState::Up,
        features: Some("VERSION_1,MRG_RXBUF".to_string()),
        queue_pairs: 2,
        mtu: 1500,
        broken_reason: None,
        vlan: None,
        limits: None,
    }
}

fn stats(name: &str) -> PortStats {
    PortStats {
        name: name.to_string(),
        rx_packets: 10,
        rx_bytes: 1000,
        tx_packets: 20,
        tx_bytes: 2000,
        drops: BTreeMap::from([("hairpin".to_string(), 3), ("too_big".to_string(), 4)]),
        queues: vec![
            QueueStats {
                pair: 0,
                rx_chains: 7,
                tx_chains: 15,
            },
            QueueStats {
                pair: 1,
                rx_chains: 3,
                tx_chains: 5,
            },
        ],
    }
}

fn all_responses() -> Vec<Response> {
    vec![
        Response::Ports(vec![
            port("vm1"),
            PortInfo {
                kind: PortKind::Tap,
                socket: None,
                mode: PortMode::Server,
                mac: None,
                state: PortState::Broken,
                features: None,
                broken_reason: Some("avail index jumped".to_string()),
                vlan: None,
                limits: None,
                ..port("host0")
            },
        ]),
        Response::Ports(vec![]),
        Response::Stats(vec![stats("vm1"), PortStats::default()]),
        Response::Fdb(vec![FdbEntry {
            mac: MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            vlan: 0,
            port: "vm1".to_string(),
            age_secs: 12,
            fixed: false,
        }]),
        Response::Version {
            version: "0.1.0".to_string(),
        },
        Response::error("no such \"port\"\nsecond line"),
    ]
}

#[test]
fn requests_round_trip_and_wire_names() {
    for (req, wire) in [
        (Request::Ports, r#"{"cmd":"ports"}"#),
        (Request::Stats, r#"{"cmd":"stats"}"#),
        (Request::Fdb, r#"{"cmd":"fdb"}"#),
        (Request::Version, r#"{"cmd":"version"}"#),
    ] {
        let line = encode_line(&req);
        assert_eq!(line, format!("{wire}\n"));
        assert_eq!(decode_line::<Request>(&line).unwrap(), req);
        assert_eq!(format!(r#"{{"cmd":"{}"}}"#, req.name()), wire);
    }
}

#[test]
fn responses_round_trip() {
    for resp in all_responses() {
        let line = encode_line(&resp);
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "exactly one line: {line:?}");
        assert_eq!(decode_line::<Response>(&line).unwrap(), resp);
        assert!(line.contains(&format!(r#""result":"{}""#, resp.name())));
    }
}

#[test]
fn response_wire_format() {
    assert_eq!(
        encode_line(&Response::Version {
            version: "1.2.3".into()
        }),
        "{\"result\":\"version\",\"data\":{\"version\":\"1.2.3\"}}\n"
    );
    assert_eq!(
        encode_line(&Response::error("nope")),
        "{\"result\":\"error\",\"data\":{\"message\":\"nope\"}}\n"
    );
    let line = encode_line(&Response::Ports(vec![port("vm1")]));
    assert!(line.contains(r#""kind":"vhost-user""#), "{line}");
    assert!(line.contains(r#""mode":"client""#), "{line}");
    assert!(line.contains(r#""state":"up""#), "{line}");
    assert!(
        !line.contains("broken_reason"),
        "None fields are omitted: {line}"
    );
}

#[test]
fn newer_daemon_does_not_break_decoding() {
    // Unknown fields, unknown enum values, unknown drop reasons, missing optional fields.
    let line = r#"{"result":"ports","data":[{"name":"p","kind":"vdpa","mode":"peer",
        "state":"migrating","queue_pairs":1,"mtu":1500,"new_field":[1,2]}],"extra":true}"#
        .replace('\n', "");
    let Response::Ports(ports) = decode_line::<Response>(&line).unwrap() else {
        panic!("not ports");
    };
    assert_eq!(ports[0].kind, PortKind::Unknown);
    assert_eq!(ports[0].mode, PortMode::Unknown);
    assert_eq!(ports[0].state, PortState::Unknown);
    assert_eq!(ports[0].socket, None);

    let line = r#"{"result":"stats","data":[{"name":"p","rx_packets":1,"rx_bytes":2,"tx_packets":3,"tx_bytes":4,"drops":{"future_reason":5}}]}"#;
    let Response::Stats(s) = decode_line::<Response>(line).unwrap() else {
        panic!("not stats");
    };
    assert_eq!(s[0].drops["future_reason"], 5);
    assert_eq!(s[0].total_drops(), 5);
}

#[test]
fn decode_accepts_crlf_and_rejects_garbage() {
    assert_eq!(
        decode_line::<Request>("{\"cmd\":\"fdb\"}\r\n").unwrap(),
        Request::Fdb
    );
    let err = decode_line::<Request>(r#"{"cmd":"reboot"}"#).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("malformed control message: unknown variant `reboot`"),
        "{msg}"
    );
    assert!(msg.ends_with(r#"in `{"cmd":"reboot"}`"#), "{msg}");
    let long = "x".repeat(500);
    let msg = decode_line::<Request>(&long).unwrap_err().to_string();
    assert!(msg.len() < 200, "excerpt is bounded: {msg}");
    assert!(matches!(
        decode_line::<Request>(""),
        Err(ApiError::Decode { .. })
    ));
}

#[test]
fn display_names() {
    assert_eq!(PortKind::VhostUser.to_string(), "vhost-user");
    assert_eq!(PortMode::Server.to_string(), "server");
    assert_eq!(PortState::Connected.to_string(), "connected");
    assert_eq!(format!("{:<6}|", PortState::Up), "up    |");
}

#[test]
fn io_message_strips_os_error_suffix() {
    let e = io::Error::from_raw_os_error(2);
    assert!(e.to_string().contains("(os error 2)"));
    assert_eq!(io_message(&e), "No such file or directory");
    let e = io::Error::other("custom (os error 5) text");
    assert_eq!(io_message(&e), "custom (os error 5) text");
}

fn temp_socket(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("vnet-api-{}-{tag}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A one-connection server answering with `reply(request_line)` raw bytes.
fn serve_once(
    path: &Path,
    reply: impl FnOnce(&str) -> Vec<u8> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let bytes = reply(&line);
        let mut stream = reader.into_inner();
        // Trickle the reply in two writes to exercise reassembly.
        let (a, b) = bytes.split_at(bytes.len() / 2);
        stream.write_all(a).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let _ = stream.write_all(b);
    })
}

#[test]
fn call_round_trip() {
    let path = temp_socket("ok");
    let server = serve_once(&path, |line| {
        let req: Request = decode_line(line).unwrap();
        let resp = match req {
            Request::Stats => Response::Stats(vec![stats("vm1")]),
            _ => Response::error("unexpected"),
        };
        encode_line(&resp).into_bytes()
    });
    let resp = call(&path, &Request::Stats, Duration::from_secs(5)).unwrap();
    assert_eq!(resp, Response::Stats(vec![stats("vm1")]));
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn call_returns_daemon_errors_as_ok() {
    let path = temp_socket("err");
    let server = serve_once(&path, |_| {
        encode_line(&Response::error("busy")).into_bytes()
    });
    let resp = call(&path, &Request::Fdb, Duration::from_secs(5)).unwrap();
    assert_eq!(resp, Response::error("busy"));
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn call_connect_error_is_clear() {
    let path = temp_socket("missing");
    let err = call(&path, &Request::Ports, Duration::from_secs(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to vnetd control socket {}: No such file or directory \
             (is vnetd running? use --control PATH)",
            path.display()
        )
    );
}

#[test]
fn call_closed_without_reply() {
    let path = temp_socket("closed");
    let server = serve_once(&path, |_| b"{\"result\":".to_vec());
    let err = call(&path, &Request::Ports, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, ApiError::Closed { .. }), "{err}");
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn call_garbage_reply() {
    let path = temp_socket("garbage");
    let server = serve_once(&path, |_| b"hello\n".to_vec());
    let err = call(&path, &Request::Ports, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, ApiError::Decode { .. }), "{err}");
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn call_times_out() {
    let path = temp_socket("slow");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        drop(stream);
    });
    let start = Instant::now();
    let err = call(&path, &Request::Ports, Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, ApiError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("did not reply"), "{err}");
    assert!(start.elapsed() < Duration::from_millis(450));
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

/// The exact lines a daemon sent before MAC addresses became `MacAddr` (they were strings
/// then): the wire format did not change.
#[test]
fn mac_fields_keep_their_wire_form() {
    let golden = [
        r#"{"result":"ports","data":[{"name":"vm1","kind":"vhost-user","socket":"/tmp/vm1.sock","mode":"client","mac":"52:54:00:00:00:01","state":"up","features":"VERSION_1,MRG_RXBUF","queue_pairs":2,"mtu":1500},{"name":"host0","kind":"tap","mode":"server","state":"broken","queue_pairs":2,"mtu":1500,"broken_reason":"avail index jumped"}]}"#,
        r#"{"result":"fdb","data":[{"mac":"52:54:00:00:00:01","vlan":0,"port":"vm1","age_secs":12,"static":false}]}"#,
    ];
    let responses = all_responses();
    for (resp, line) in [(&responses[0], golden[0]), (&responses[3], golden[1])] {
        assert_eq!(encode_line(resp).trim_end(), line);
        assert_eq!(&decode_line::<Response>(line).unwrap(), resp);
    }
    // A daemon from before static entries sends no `static`: a learned entry.
    let old = r#"{"result":"fdb","data":[{"mac":"52:54:00:00:00:01","vlan":0,"port":"vm1","age_secs":12}]}"#;
    assert_eq!(&decode_line::<Response>(old).unwrap(), &responses[3]);
}

#[test]
fn bad_mac_on_the_wire_names_the_input() {
    let line = r#"{"result":"fdb","data":[{"mac":"52:54:00:00:00:0g","vlan":0,"port":"vm1","age_secs":1}]}"#;
    let msg = decode_line::<Response>(line).unwrap_err().to_string();
    assert!(msg.contains(r#""52:54:00:00:00:0g""#), "{msg}");
}
