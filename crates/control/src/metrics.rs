//! Prometheus metrics (`--metrics ADDR:PORT`, `GET /metrics`): per-port packet, byte and
//! drop counters (directions as in `vnetctl stats`, the switch's view), port state and
//! negotiated features, FDB size and per-worker busy and sleep time.
//!
//! Exposition by `prometheus-client` (OpenMetrics text), HTTP by `tiny_http`, on a thread
//! of its own started after the lockdown (it inherits the control thread's seccomp
//! filter). A scrape reads the atomics the workers publish per burst: it costs the
//! datapath nothing.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use datapath::{PortStatus, WorkerStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use switch::SharedCounters;

/// One port as the metrics see it.
#[derive(Debug, Clone)]
pub struct MetricPort {
    /// Port name (label `port`).
    pub name: String,
    /// `vhost-user` or `tap` (label `kind`).
    pub kind: &'static str,
    /// Counters the workers publish.
    pub counters: Arc<SharedCounters>,
    /// Status the workers publish.
    pub status: Arc<PortStatus>,
}

/// The ports to report, kept current by the control thread as ports come and go.
pub type PortList = Arc<Mutex<Vec<MetricPort>>>;

#[derive(Debug)]
struct Collect {
    ports: PortList,
    workers: Vec<Arc<WorkerStats>>,
}

type Labels = Vec<(String, String)>;

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels, M)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        v.encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn port_label(p: &MetricPort) -> Labels {
    vec![
        ("port".into(), p.name.clone()),
        ("kind".into(), p.kind.into()),
    ]
}

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ports = match self.ports.lock() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let snaps: Vec<_> = ports.iter().map(|p| p.counters.snapshot()).collect();
        let counter = |f: fn(&switch::PortCounters) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
            ports
                .iter()
                .zip(&snaps)
                .map(|(p, c)| (port_label(p), ConstCounter::new(f(c))))
                .collect()
        };
        for (name, help, f) in [
            (
                "vnet_port_rx_packets",
                "Frames the switch took from the port (the guest's transmissions).",
                (|c| c.rx_packets) as fn(&switch::PortCounters) -> u64,
            ),
            (
                "vnet_port_rx_bytes",
                "Bytes the switch took from the port.",
                |c| c.rx_bytes,
            ),
            (
                "vnet_port_tx_packets",
                "Frames the switch delivered to the port.",
                |c| c.tx_packets,
            ),
            (
                "vnet_port_tx_bytes",
                "Bytes the switch delivered to the port.",
                |c| c.tx_bytes,
            ),
        ] {
            family(&mut enc, name, help, MetricType::Counter, &counter(f))?;
        }
        let drops: Vec<(Labels, ConstCounter<u64>)> = ports
            .iter()
            .zip(&snaps)
            .flat_map(|(p, c)| {
                c.drops_by_reason()
                    .map(|(r, n)| {
                        let mut l = port_label(p);
                        l.push(("reason".into(), r.name().into()));
                        (l, ConstCounter::new(n))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        family(
            &mut enc,
            "vnet_port_drops",
            "Frames dropped, by port and reason.",
            MetricType::Counter,
            &drops,
        )?;
        let up: Vec<(Labels, ConstGauge<i64>)> = ports
            .iter()
            .map(|p| {
                let broken = p.status.broken_reason().is_some();
                let state = if broken {
                    "broken"
                } else if p.status.running_queues() > 0 {
                    "up"
                } else {
                    "down"
                };
                let mut l = port_label(p);
                l.push(("state".into(), state.into()));
                (l, ConstGauge::new(i64::from(state == "up")))
            })
            .collect();
        family(
            &mut enc,
            "vnet_port_up",
            "1 when the port's rings run (state label: up, down or broken).",
            MetricType::Gauge,
            &up,
        )?;
        let features: Vec<(Labels, ConstGauge<i64>)> = ports
            .iter()
            .filter(|p| p.status.features() != 0)
            .map(|p| {
                let mut l = port_label(p);
                l.push((
                    "features".into(),
                    virtio_net::features::describe(p.status.features()),
                ));
                (l, ConstGauge::new(1))
            })
            .collect();
        family(
            &mut enc,
            "vnet_port_features",
            "The virtio features a port's frontend negotiated (label features).",
            MetricType::Gauge,
            &features,
        )?;
        let worker = |i: usize| vec![("worker".to_string(), i.to_string())];
        let fdb: Vec<(Labels, ConstGauge<i64>)> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let n = w.fdb_entries.load(std::sync::atomic::Ordering::Relaxed);
                (
                    worker(i),
                    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)),
                )
            })
            .collect();
        family(
            &mut enc,
            "vnet_fdb_entries",
            "Entries in each worker's forwarding table.",
            MetricType::Gauge,
            &fdb,
        )?;
        let (mut busy, mut sleep) = (Vec::new(), Vec::new());
        for (i, w) in self.workers.iter().enumerate() {
            let (b, s) = w.busy_and_sleep_secs();
            busy.push((worker(i), ConstCounter::new(b)));
            sleep.push((worker(i), ConstCounter::new(s)));
        }
        family(
            &mut enc,
            "vnet_worker_busy_seconds",
            "Time each datapath worker was not asleep (a polling worker always is busy).",
            MetricType::Counter,
            &busy,
        )?;
        family(
            &mut enc,
            "vnet_worker_sleep_seconds",
            "Time each datapath worker slept waiting for work.",
            MetricType::Counter,
            &sleep,
        )
    }
}

/// The running metrics endpoint; stopped on drop.
pub struct Metrics {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Serves `GET /metrics` on `listener` (bound before the lockdown) from a thread of
    /// its own.
    pub fn serve(
        listener: TcpListener,
        ports: PortList,
        workers: Vec<Arc<WorkerStats>>,
    ) -> std::io::Result<Metrics> {
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let server = Arc::new(server);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collect { ports, workers }));
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("vnet-metrics".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    let resp = if req.url() == "/metrics" {
                        let mut body = String::new();
                        match prometheus_client::encoding::text::encode(&mut body, &registry) {
                            Ok(()) => {
                                let r = tiny_http::Response::from_string(body);
                                match tiny_http::Header::from_bytes(
                                    &b"Content-Type"[..],
                                    &b"application/openmetrics-text; version=1.0.0; charset=utf-8"
                                        [..],
                                ) {
                                    Ok(h) => r.with_header(h),
                                    Err(()) => r,
                                }
                            }
                            Err(_) => tiny_http::Response::from_string("encoding failed")
                                .with_status_code(500),
                        }
                    } else {
                        tiny_http::Response::from_string("vnetd: metrics are at /metrics\n")
                            .with_status_code(404)
                    };
                    let _ = req.respond(resp);
                }
            })?;
        Ok(Metrics {
            server,
            thread: Some(thread),
        })
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
