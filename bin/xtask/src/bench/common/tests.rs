//! Tests of the run bookkeeping, medians and table pieces.

use super::*;

#[derive(Debug, Default)]
struct Rec {
    rec: Record,
    mpps: Option<f64>,
    switch_cpu: f64,
}

impl Rec {
    fn summary(&self) -> String {
        format!("{} {:?}", self.rec.switch, self.mpps)
    }
}

/// A successful run of `mpps` whose bookkeeping `set` fills in.
fn run(mpps: f64, set: impl FnOnce(&mut Record)) -> Rec {
    let mut r = Rec {
        mpps: Some(mpps),
        ..Rec::default()
    };
    set(&mut r.rec);
    r
}

run_record!(Rec);

#[test]
fn placement() {
    let mut r = Record {
        pingpong_ns: [Some(100.0), Some(140.0)],
        ..Record::default()
    };
    // Below the floor: never apart.
    r.check_placement(10.0);
    assert!(!r.placed_apart && r.clean());
    let mut r = Record {
        pingpong_ns: [Some(100.0), Some(400.0)],
        ..Record::default()
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
    let mut r = Record {
        pingpong_ns: [None, Some(1000.0)],
        ..Record::default()
    };
    r.check_placement(100.0);
    assert!(r.anomalies[0].contains("NaN ns before, 1000 ns after"));
}

#[test]
fn window_notes() {
    let mut r = Record::default();
    r.check_halves([1.0, 1.1], 3);
    assert!(!r.unstable && r.anomalies.is_empty());
    r.check_halves([1.0, 2.0], 4);
    assert!(r.unstable);
    assert_eq!(
        r.anomalies,
        ["the rate changed within the window: 1.0000 Mpps, then 2.0000"]
    );
    let mut r = Record::default();
    r.note_vnetd_drops(&BTreeMap::new());
    r.foreign_cpu = 1.0;
    r.steal_cpu = 1.0;
    r.note_load(&[]);
    assert!(r.anomalies.is_empty() && !r.busy);
    let drops = BTreeMap::from([("a.rx_full".to_string(), 3), ("b.tx".to_string(), 1)]);
    r.note_vnetd_drops(&drops);
    r.foreign_cpu = 6.0;
    r.steal_cpu = 7.5;
    r.note_load(&["qemu (1)".to_string()]);
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
    let mut r = Record {
        steal_cpu: 9.0,
        ..Record::default()
    };
    r.note_load(&[]);
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
        run(0.0, |r| {
            r.busy = true;
            r.attempts = 1;
        }),
        run(0.0, |r| {
            r.placed_apart = true;
            r.unstable = true;
            r.attempts = 3;
        }),
        run(0.0, |r| {
            r.attempts = 1;
        }),
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
    let clean = run(1.0, |_| {});
    let busy = run(2.0, |r| r.busy = true);
    let (used, all_clean) = clean_or_all(vec![&clean, &busy]).unwrap();
    assert!(all_clean);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].mpps, Some(1.0));
    let (used, all_clean) = clean_or_all(vec![&busy]).unwrap();
    assert!(!all_clean && used.len() == 1);
    assert!(clean_or_all::<Rec>(vec![]).is_none());
    let m = medians([&clean, &busy], |_| true, |r| r.mpps.map(|x| x * 10.0)).unwrap();
    assert_eq!(
        (m.mpps, m.extra, m.runs, m.clean),
        (1.0, Some(10.0), 1, true)
    );
    assert!(medians([&busy], |r| r.rec.switch == "x", |_| None).is_none());
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
        run(0.0, |r| {
            r.switch = "dpdk".into();
            r.run = 1;
            r.anomalies = vec!["a".into(), "b".into()];
        }),
        run(0.0, |r| {
            r.switch = "vnetd poll".into();
            r.run = 2;
            r.error = Some("gone".into());
        }),
    ];
    let name = |r: &Rec| format!("{} run {}", r.rec.switch, r.rec.run);
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
    assert_eq!(
        table_header("size", &["vnetd", "DPDK"], true).join("|"),
        "scenario|size|vnetd mode|vnetd Mpps|vnetd Gbit/s|vnetd CPU %|DPDK Mpps|DPDK Gbit/s|\
         DPDK CPU %"
    );
    assert_eq!(table_header("frame", &["bare"], false).len(), 5);
    let t = Tally {
        busy: 2,
        ..Tally::default()
    };
    assert_eq!(
        t.busy_line(5, "TAP ").unwrap(),
        "MACHINE BUSY: 2 of 5 TAP run(s) shared the CPUs with other work"
    );
    assert_eq!(Tally::default().busy_line(5, ""), None);
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
