//! Tests of the run bookkeeping, medians and table pieces.

use super::*;

#[derive(Debug, Default)]
struct Rec {
    switch: String,
    run: u32,
    attempts: u32,
    pingpong_ns: [Option<f64>; 2],
    placed_apart: bool,
    unstable: bool,
    busy: bool,
    anomalies: Vec<String>,
    error: Option<String>,
    foreign_cpu: f64,
    steal_cpu: f64,
    anchor_drops: Option<u64>,
    features: String,
    idle_cpu: Option<f64>,
    mpps: f64,
}

impl Rec {
    fn summary(&self) -> String {
        format!("{} {}", self.switch, self.mpps)
    }
}

run_record!(Rec);

#[test]
fn placement() {
    let mut r = Rec {
        pingpong_ns: [Some(100.0), Some(140.0)],
        ..Rec::default()
    };
    // Below the floor: never apart.
    r.check_placement(10.0);
    assert!(!r.placed_apart && r.clean());
    let mut r = Rec {
        pingpong_ns: [Some(100.0), Some(400.0)],
        ..Rec::default()
    };
    r.check_placement(100.0);
    assert!(r.placed_apart && !r.clean());
    assert_eq!(
        r.anomalies,
        [
            "vCPUs placed apart by the host around this run: core-to-core round trip 100 ns \
          before, 400 ns after (best 100 ns)"
        ]
    );
    // Once is enough.
    r.check_placement(10.0);
    assert_eq!(r.anomalies.len(), 1);
    let mut r = Rec {
        pingpong_ns: [None, Some(1000.0)],
        ..Rec::default()
    };
    r.check_placement(100.0);
    assert!(r.anomalies[0].contains("NaN ns before, 1000 ns after"));
}

#[test]
fn window_notes() {
    let mut r = Rec::default();
    r.marks().check_halves([1.0, 1.1], 3);
    assert!(!r.unstable && r.anomalies.is_empty());
    r.marks().check_halves([1.0, 2.0], 4);
    assert!(r.unstable);
    assert_eq!(
        r.anomalies,
        ["the rate changed within the window: 1.0000 Mpps, then 2.0000"]
    );
    let mut r = Rec::default();
    r.marks().note_vnetd_drops(&BTreeMap::new());
    r.marks().note_load(&[], 1.0, 1.0);
    assert!(r.anomalies.is_empty() && !r.busy);
    let drops = BTreeMap::from([("a.rx_full".to_string(), 3), ("b.tx".to_string(), 1)]);
    r.marks().note_vnetd_drops(&drops);
    r.marks().note_load(&["qemu (1)".to_string()], 6.0, 7.5);
    assert!(r.busy);
    assert_eq!(
        r.anomalies,
        [
            "vnetd drops in the window: a.rx_full=3, b.tx=1",
            "other processes ran during the window: qemu (1)",
            "other processes used 6.0 % of a CPU during the window",
            "the hypervisor stole 7.5 % of a CPU during the window",
        ]
    );
    let mut r = Rec::default();
    r.marks().note_load(&[], 0.0, 9.0);
    assert!(!r.busy && r.anomalies.len() == 1);
}

#[test]
fn summaries_and_tallies() {
    assert_eq!(summary_tail([Some(1.0), None], &[]), "");
    assert_eq!(
        summary_tail([Some(60.4), Some(70.6)], &["x".into(), "y".into()]),
        "; CPU{gen}<->CPU{switch} round trip 60 / 71 ns\n    ! x\n    ! y"
    );
    let runs = [
        Rec {
            busy: true,
            attempts: 1,
            ..Rec::default()
        },
        Rec {
            placed_apart: true,
            unstable: true,
            attempts: 3,
            ..Rec::default()
        },
        Rec {
            attempts: 1,
            ..Rec::default()
        },
    ];
    assert_eq!(
        Tally::of(&runs),
        Tally {
            busy: 1,
            apart: 1,
            unstable: 1,
            repeated: 2
        }
    );
}

#[test]
fn medians_of_clean_runs_or_all() {
    let clean = Rec {
        mpps: 1.0,
        ..Rec::default()
    };
    let busy = Rec {
        busy: true,
        mpps: 2.0,
        ..Rec::default()
    };
    let (used, all_clean) = clean_or_all(vec![&clean, &busy]).unwrap();
    assert!(all_clean);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].mpps, 1.0);
    let (used, all_clean) = clean_or_all(vec![&busy]).unwrap();
    assert!(!all_clean && used.len() == 1);
    assert!(clean_or_all::<Rec>(vec![]).is_none());
    assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(median(vec![]).is_nan());
    assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
    assert_eq!(ratio(Some(3.0), Some(0.0)), None);
    assert_eq!(ratio(None, Some(2.0)), None);
}

#[test]
fn run_lists_and_json() {
    let runs = [
        Rec {
            switch: "dpdk".into(),
            run: 1,
            anomalies: vec!["a".into(), "b".into()],
            ..Rec::default()
        },
        Rec {
            switch: "vnetd poll".into(),
            run: 2,
            error: Some("gone".into()),
            ..Rec::default()
        },
    ];
    let name = |r: &Rec| format!("{} run {}", r.switch, r.run);
    assert_eq!(failed_lines(&runs[..1], "X ", name), "");
    assert_eq!(
        failed_lines(&runs, "X ", name),
        "1 X run(s) failed and are left out of the medians:\n  vnetd poll run 2: gone\n"
    );
    assert_eq!(anomaly_lines(&runs[1..], "odd:", name), "");
    assert_eq!(
        anomaly_lines(&runs, "odd:", name),
        "odd:\n  dpdk run 1: a\n  dpdk run 1: b\n"
    );
    let v = run_json(&runs[1], json!({"mpps": null, "size": 64}));
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "anchor_drops_whole_run",
            "anomalies",
            "attempt",
            "busy",
            "core_to_core_round_trip_ns",
            "error",
            "features",
            "mpps",
            "other_cpu_pct",
            "run",
            "size",
            "steal_cpu_pct",
            "switch",
            "unstable",
            "vcpus_placed_apart",
        ]
    );
    assert_eq!(v["switch"], "vnetd poll");
    assert_eq!(v["error"], "gone");
    assert_eq!(v["size"], 64);
}

#[test]
fn cells_and_tables() {
    assert_eq!(vnetd_label(Some("poll")), "vnetd poll");
    assert_eq!(vnetd_label(None), "vnetd");
    assert_eq!(mode_of("vnetd poll"), "poll");
    assert_eq!(mode_of("vnetd"), "");
    assert_eq!(mode_of("dpdk"), "");
    assert_eq!(vnetd_labels(vec![]), [""]);
    assert_eq!(vnetd_labels(vec!["vnetd poll".into()]), ["vnetd poll"]);
    assert_eq!(rate_cell(1.23456, 3, true), "1.235");
    assert_eq!(rate_cell(1.23456, 4, false), "1.2346*");
    let table = vec![
        vec!["name".to_string(), "n".to_string(), "x".to_string()],
        vec!["a".to_string(), "100".to_string(), String::new()],
    ];
    assert_eq!(
        render_table(&table, |c| c == 0),
        "name    n  x\n------------\na     100\n"
    );
    assert_eq!(idle_line(&[]), None);
    let idle = [
        ("dpdk".to_string(), 100.0),
        ("vnetd event".to_string(), 0.26),
    ];
    assert_eq!(
        idle_line(&idle).unwrap(),
        "idle (both ports attached, no traffic, 3 s): CPU dpdk 100.0 %, vnetd event 0.3 %\n"
    );
    assert_eq!(
        Value::Object(idle_json(&idle)),
        json!({"dpdk": 100.0, "vnetd event": 0.26})
    );
}
