//! The frontend against an in-process backend built on the `vhost` crate's backend side:
//! checks the message sequence, SET_MEM_TABLE vs ADD_MEM_REG with several regions,
//! REPLY_ACK NACKs, GET_CONFIG, and moves frames through a small loopback device that
//! accesses guest memory through the received memfds (pread/pwrite, no mmap).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserSharedMsg,
    VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Backend, BackendListener, GpuBackend, Listener, VhostUserBackendReqHandlerMut,
};
use virtio_net::{features as f, NetHdr};
use vnet_frontend::{Frontend, FrontendConfig, FrontendError, MemRegistration, RawDesc, TxLayout};

type VuResult<T> = vhost::vhost_user::Result<T>;

const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

#[derive(Debug, Default)]
struct Vring {
    num: u32,
    desc: u64,
    used: u64,
    avail: u64,
    base: u32,
    kick: Option<File>,
    call: Option<File>,
    enabled: bool,
}

/// Guest memory as the backend sees it: regions with their memfds.
#[derive(Default)]
struct Regions(Vec<(VhostUserMemoryRegion, File)>);

impl Regions {
    fn find(&self, gpa: u64, len: u64) -> (&File, u64) {
        for (r, file) in &self.0 {
            if gpa >= r.guest_phys_addr && gpa + len <= r.guest_phys_addr + r.memory_size {
                return (file, gpa - r.guest_phys_addr + r.mmap_offset);
            }
        }
        panic!("device: gpa {gpa:#x}+{len} not in guest memory");
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) {
        let (file, off) = self.find(gpa, buf.len() as u64);
        file.read_exact_at(buf, off).unwrap();
    }
    fn write(&self, gpa: u64, buf: &[u8]) {
        let (file, off) = self.find(gpa, buf.len() as u64);
        file.write_all_at(buf, off).unwrap();
    }
    fn u16_at(&self, gpa: u64) -> u16 {
        let mut b = [0u8; 2];
        self.read(gpa, &mut b);
        u16::from_le_bytes(b)
    }
    fn uaddr_to_gpa(&self, ua: u64) -> u64 {
        for (r, _) in &self.0 {
            if ua >= r.user_addr && ua < r.user_addr + r.memory_size {
                return ua - r.user_addr + r.guest_phys_addr;
            }
        }
        panic!("device: uaddr {ua:#x} not in guest memory");
    }
    fn clone_files(&self) -> Regions {
        Regions(
            self.0
                .iter()
                .map(|(r, f)| (*r, f.try_clone().unwrap()))
                .collect(),
        )
    }
}

#[derive(Default)]
struct State {
    log: Vec<&'static str>,
    features: u64,
    protocol: u64,
    acked: u64,
    acked_protocol: u64,
    regions: Regions,
    vrings: [Vring; 4],
    /// GET_QUEUE_NUM answer.
    queue_num: u64,
    /// Request to refuse (NACK).
    nack: Option<&'static str>,
}

struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn note(&mut self, what: &'static str) -> VuResult<()> {
        let mut s = self.0.lock().unwrap();
        s.log.push(what);
        if s.nack == Some(what) {
            return Err(vhost::vhost_user::Error::InvalidOperation("nack"));
        }
        Ok(())
    }
}

fn unsupported<T>() -> VuResult<T> {
    Err(vhost::vhost_user::Error::InvalidOperation("unsupported"))
}

impl VhostUserBackendReqHandlerMut for Fake {
    fn set_owner(&mut self) -> VuResult<()> {
        self.note("SET_OWNER")
    }
    fn reset_owner(&mut self) -> VuResult<()> {
        self.note("RESET_OWNER")
    }
    fn reset_device(&mut self) -> VuResult<()> {
        self.note("RESET_DEVICE")
    }
    fn get_features(&mut self) -> VuResult<u64> {
        self.note("GET_FEATURES")?;
        Ok(self.0.lock().unwrap().features)
    }
    fn set_features(&mut self, features: u64) -> VuResult<()> {
        self.note("SET_FEATURES")?;
        self.0.lock().unwrap().acked = features;
        Ok(())
    }
    fn set_mem_table(&mut self, ctx: &[VhostUserMemoryRegion], files: Vec<File>) -> VuResult<()> {
        self.note("SET_MEM_TABLE")?;
        let mut s = self.0.lock().unwrap();
        s.regions = Regions(ctx.iter().copied().zip(files).collect());
        Ok(())
    }
    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        self.note("SET_VRING_NUM")?;
        self.0.lock().unwrap().vrings[index as usize].num = num;
        Ok(())
    }
    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        self.note("SET_VRING_ADDR")?;
        let mut s = self.0.lock().unwrap();
        let v = &mut s.vrings[index as usize];
        v.desc = descriptor;
        v.used = used;
        v.avail = available;
        Ok(())
    }
    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        self.note("SET_VRING_BASE")?;
        self.0.lock().unwrap().vrings[index as usize].base = base;
        Ok(())
    }
    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        self.note("GET_VRING_BASE")?;
        Ok(VhostUserVringState::new(index, 0))
    }
    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.note("SET_VRING_KICK")?;
        self.0.lock().unwrap().vrings[usize::from(index)].kick = fd;
        Ok(())
    }
    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.note("SET_VRING_CALL")?;
        self.0.lock().unwrap().vrings[usize::from(index)].call = fd;
        Ok(())
    }
    fn set_vring_err(&mut self, _index: u8, _fd: Option<File>) -> VuResult<()> {
        self.note("SET_VRING_ERR")
    }
    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        self.note("GET_PROTOCOL_FEATURES")?;
        Ok(VhostUserProtocolFeatures::from_bits_truncate(
            self.0.lock().unwrap().protocol,
        ))
    }
    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        self.note("SET_PROTOCOL_FEATURES")?;
        self.0.lock().unwrap().acked_protocol = features;
        Ok(())
    }
    fn get_queue_num(&mut self) -> VuResult<u64> {
        self.note("GET_QUEUE_NUM")?;
        Ok(self.0.lock().unwrap().queue_num)
    }
    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        self.note("SET_VRING_ENABLE")?;
        self.0.lock().unwrap().vrings[index as usize].enabled = enable;
        Ok(())
    }
    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        self.note("GET_CONFIG")?;
        let mut cfg = MAC.to_vec();
        cfg.extend_from_slice(&1u16.to_le_bytes()); // status: link up
        cfg.extend_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        cfg.extend_from_slice(&1500u16.to_le_bytes()); // mtu
        let end = (offset + size) as usize;
        Ok(cfg
            .get(offset as usize..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default())
    }
    fn set_config(&mut self, _o: u32, _b: &[u8], _f: VhostUserConfigFlags) -> VuResult<()> {
        unsupported()
    }
    fn set_backend_req_fd(&mut self, _backend: Backend) {}
    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        unsupported()
    }
    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        unsupported()
    }
    fn get_inflight_fd(&mut self, _i: &VhostUserInflight) -> VuResult<(VhostUserInflight, File)> {
        unsupported()
    }
    fn set_inflight_fd(&mut self, _i: &VhostUserInflight, _file: File) -> VuResult<()> {
        unsupported()
    }
    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        self.note("GET_MAX_MEM_SLOTS")?;
        Ok(8)
    }
    fn add_mem_region(&mut self, region: &VhostUserSingleMemoryRegion, fd: File) -> VuResult<()> {
        self.note("ADD_MEM_REG")?;
        let r: VhostUserMemoryRegion = **region;
        self.0.lock().unwrap().regions.0.push((r, fd));
        Ok(())
    }
    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        unsupported()
    }
    fn set_device_state_fd(
        &mut self,
        _d: VhostTransferStateDirection,
        _p: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        unsupported()
    }
    fn check_device_state(&mut self) -> VuResult<()> {
        unsupported()
    }
    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        unsupported()
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A listening fake backend serving one connection on its own thread.
struct Server {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(features: u64, protocol: VhostUserProtocolFeatures) -> Server {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("/tmp/vnetfe-fake-{}-{n}.sock", std::process::id()));
        let state = Arc::new(Mutex::new(State {
            features,
            protocol: protocol.bits(),
            queue_num: 1,
            ..State::default()
        }));
        let mut listener = Listener::new(&path, true).unwrap();
        let backend = Arc::new(Mutex::new(Fake(state.clone())));
        let thread = std::thread::spawn(move || {
            let mut bl = BackendListener::new(&mut listener, backend).unwrap();
            let Ok(Some(mut h)) = bl.accept() else {
                return;
            };
            while h.handle_request().is_ok() {}
        });
        Server {
            path,
            state,
            thread: Some(thread),
        }
    }

    fn config(&self) -> FrontendConfig {
        FrontendConfig {
            connect_timeout: Duration::from_secs(2),
            ..FrontendConfig::new(&self.path)
        }
    }

    fn log(&self) -> Vec<&'static str> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // The handler thread ends when the frontend closes its socket.
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// A buffer of a chain: address, length, flags.
type Buf = (u64, u32, u16);

/// Device end of one vring, working through the memfds.
struct DevRing {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    last_avail: u16,
    used_idx: u16,
    call: File,
    event_idx: bool,
}

impl DevRing {
    fn new(m: &Regions, v: &Vring, event_idx: bool) -> DevRing {
        DevRing {
            size: u16::try_from(v.num).unwrap(),
            desc: m.uaddr_to_gpa(v.desc),
            avail: m.uaddr_to_gpa(v.avail),
            used: m.uaddr_to_gpa(v.used),
            last_avail: u16::try_from(v.base).unwrap(),
            used_idx: 0,
            call: v.call.as_ref().unwrap().try_clone().unwrap(),
            event_idx,
        }
    }

    /// Next available chain: head and its (addr, len, flags), indirect tables expanded.
    fn pop(&mut self, m: &Regions) -> Option<(u16, Vec<Buf>)> {
        if m.u16_at(self.avail + 2) == self.last_avail {
            return None;
        }
        let head = m.u16_at(self.avail + 4 + 2 * u64::from(self.last_avail % self.size));
        self.last_avail = self.last_avail.wrapping_add(1);
        let rd = |at: u64| {
            let mut b = [0u8; 16];
            m.read(at, &mut b);
            (
                u64::from_le_bytes(b[..8].try_into().unwrap()),
                u32::from_le_bytes(b[8..12].try_into().unwrap()),
                u16::from_le_bytes([b[12], b[13]]),
                u16::from_le_bytes([b[14], b[15]]),
            )
        };
        let mut out = Vec::new();
        let mut id = head;
        loop {
            let (addr, len, flags, next) = rd(self.desc + 16 * u64::from(id));
            if flags & RawDesc::INDIRECT != 0 {
                let mut j = 0u64;
                loop {
                    let (a, l, fl, nx) = rd(addr + 16 * j);
                    out.push((a, l, fl));
                    if fl & RawDesc::NEXT == 0 {
                        break;
                    }
                    j = u64::from(nx);
                }
            } else {
                out.push((addr, len, flags));
            }
            if flags & RawDesc::NEXT == 0 {
                break;
            }
            id = next;
        }
        Some((head, out))
    }

    fn push_used(&mut self, m: &Regions, id: u16, len: u32) {
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&u32::from(id).to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        m.write(self.used + 4 + 8 * u64::from(self.used_idx % self.size), &e);
        let old = self.used_idx;
        self.used_idx = self.used_idx.wrapping_add(1);
        m.write(self.used + 2, &self.used_idx.to_le_bytes());
        let want = if self.event_idx {
            let ev = m.u16_at(self.avail + 4 + 2 * u64::from(self.size));
            self.used_idx.wrapping_sub(ev).wrapping_sub(1) < self.used_idx.wrapping_sub(old)
        } else {
            m.u16_at(self.avail) & 1 == 0
        };
        if want {
            (&self.call).write_all(&1u64.to_le_bytes()).unwrap();
        }
    }
}

/// How the loopback device treats rx.
#[derive(Clone, Copy, PartialEq)]
enum DevMode {
    Loopback,
    /// Returns an rx used element with a length beyond the buffer.
    BadRxLen,
}

/// Moves tx frames into rx buffers (MRG_RXBUF-aware) on its own thread, polling the
/// avail rings every millisecond and signalling calls as the driver asks.
fn spawn_device(server: &Server, mode: DevMode) -> (Arc<AtomicBool>, JoinHandle<usize>) {
    spawn_device_on(server, mode, 0)
}

/// [`spawn_device`] on queue pair `qp` (rings `2qp` and `2qp + 1`).
fn spawn_device_on(
    server: &Server,
    mode: DevMode,
    qp: usize,
) -> (Arc<AtomicBool>, JoinHandle<usize>) {
    let s = server.state.lock().unwrap();
    let m = s.regions.clone_files();
    let event_idx = s.acked & f::RING_EVENT_IDX != 0;
    let mrg = s.acked & f::MRG_RXBUF != 0;
    let hdr_len = virtio_net::hdr_len(s.acked);
    let mut rx = DevRing::new(&m, &s.vrings[2 * qp], event_idx);
    let mut tx = DevRing::new(&m, &s.vrings[2 * qp + 1], event_idx);
    drop(s);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || {
        let mut moved = 0;
        while !stop2.load(Ordering::Relaxed) {
            let Some((head, descs)) = tx.pop(&m) else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let mut bytes = Vec::new();
            for (a, l, _) in &descs {
                let at = bytes.len();
                bytes.resize(at + *l as usize, 0);
                m.read(*a, &mut bytes[at..]);
            }
            tx.push_used(&m, head, 0);
            // Deliver after a pause so the driver has to sleep on its call eventfd.
            std::thread::sleep(Duration::from_millis(5));
            let mut chains = Vec::new();
            let mut off = 0;
            loop {
                let (h, d) = rx.pop(&m).expect("device: no rx buffer");
                let mut wrote = 0u32;
                for (a, l, fl) in d {
                    assert_ne!(fl & RawDesc::WRITE, 0);
                    let n = (l as usize).min(bytes.len() - off);
                    m.write(a, &bytes[off..off + n]);
                    off += n;
                    wrote += u32::try_from(n).unwrap();
                }
                chains.push((h, wrote));
                if off == bytes.len() || !mrg {
                    break;
                }
            }
            if mrg {
                let nb = u16::try_from(chains.len()).unwrap().to_le_bytes();
                // num_buffers sits in the first chain's buffer, which starts at the header.
                let (a, _, _) = first_writable(&m, &mut rx, chains[0].0);
                m.write(a + 10, &nb);
            }
            let _ = hdr_len;
            for (h, w) in chains {
                let len = if mode == DevMode::BadRxLen {
                    w + 100_000
                } else {
                    w
                };
                rx.push_used(&m, h, len);
            }
            moved += 1;
        }
        moved
    });
    (stop, t)
}

/// Address of the first buffer of rx chain `head` (re-reads the descriptor table).
fn first_writable(m: &Regions, rx: &mut DevRing, head: u16) -> (u64, u32, u16) {
    let mut b = [0u8; 16];
    m.read(rx.desc + 16 * u64::from(head), &mut b);
    let addr = u64::from_le_bytes(b[..8].try_into().unwrap());
    let len = u32::from_le_bytes(b[8..12].try_into().unwrap());
    let flags = u16::from_le_bytes([b[12], b[13]]);
    if flags & RawDesc::INDIRECT != 0 {
        let mut e = [0u8; 16];
        m.read(addr, &mut e);
        return (
            u64::from_le_bytes(e[..8].try_into().unwrap()),
            u32::from_le_bytes(e[8..12].try_into().unwrap()),
            u16::from_le_bytes([e[12], e[13]]),
        );
    }
    (addr, len, flags)
}

const FEATURES: u64 = f::VERSION_1
    | f::MAC
    | f::MTU
    | f::STATUS
    | f::MRG_RXBUF
    | f::RING_EVENT_IDX
    | f::RING_INDIRECT_DESC
    | f::VHOST_USER_PROTOCOL_FEATURES;

fn all_protocol() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| i.to_le_bytes()[0].wrapping_mul(13) ^ seed)
        .collect()
}

fn loopback(fe: &mut Frontend, server: &Server, sizes: &[usize]) {
    loopback_on(fe, server, 0, sizes);
}

fn loopback_on(fe: &mut Frontend, server: &Server, qp: u16, sizes: &[usize]) {
    let (stop, dev) = spawn_device_on(server, DevMode::Loopback, usize::from(qp));
    for (k, &len) in sizes.iter().enumerate() {
        let fr = frame(len, k.to_le_bytes()[0]);
        fe.send(qp, &NetHdr::default(), &fr).unwrap();
        let t = Instant::now();
        let (_, got) = fe
            .recv(qp, Duration::from_secs(5))
            .unwrap()
            .expect("frame back");
        assert!(t.elapsed() < Duration::from_secs(4));
        assert!(got == fr, "{len}-byte frame differs");
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(dev.join().unwrap(), sizes.len());
}

#[test]
fn add_mem_reg_with_three_regions_and_loopback() {
    let server = Server::start(FEATURES, all_protocol());
    let cfg = FrontendConfig {
        regions: 3,
        mem_size: 48 << 20,
        guest_base: 0x8000_0000,
        ..server.config()
    };
    let mut fe = Frontend::connect(cfg).unwrap();
    assert_eq!(
        fe.protocol_features(),
        (VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS)
            .bits()
    );
    let log = server.log();
    assert_eq!(log.iter().filter(|m| **m == "ADD_MEM_REG").count(), 3);
    assert!(!log.contains(&"SET_MEM_TABLE"));
    assert!(
        !log.contains(&"GET_QUEUE_NUM"),
        "not needed for one queue pair"
    );
    {
        let s = server.state.lock().unwrap();
        let gpas: Vec<u64> = s.regions.0.iter().map(|(r, _)| r.guest_phys_addr).collect();
        assert_eq!(gpas[0], 0x8000_0000);
        assert!(
            gpas[1] > gpas[0] + s.regions.0[0].0.memory_size,
            "gap between regions"
        );
        assert!(s.vrings[..2].iter().all(|v| v.enabled && v.num == 256));
        assert!(s.vrings[2..].iter().all(|v| !v.enabled && v.num == 0));
        assert_eq!(s.acked, FEATURES & fe.config().wanted_features);
    }
    assert_eq!(fe.mac().unwrap(), Some(wire::MacAddr(MAC)));
    let nc = fe.net_config().unwrap().unwrap();
    assert_eq!((nc.status, nc.mtu), (1, 1500));
    loopback(&mut fe, &server, &[60, 1514, 5000, 9000, 0]);
}

#[test]
fn set_mem_table_sequence() {
    let server = Server::start(FEATURES & !f::MRG_RXBUF, all_protocol());
    let cfg = FrontendConfig {
        regions: 2,
        mem_registration: MemRegistration::SetMemTable,
        tx_layout: TxLayout::Split(700),
        use_indirect: false,
        ..server.config()
    };
    let mut fe = Frontend::connect(cfg).unwrap();
    let mut want = vec![
        "SET_OWNER",
        "GET_FEATURES",
        "GET_PROTOCOL_FEATURES",
        "SET_PROTOCOL_FEATURES",
        "SET_FEATURES",
        "SET_MEM_TABLE",
    ];
    for _ in 0..2 {
        want.extend([
            "SET_VRING_NUM",
            "SET_VRING_ADDR",
            "SET_VRING_BASE",
            "SET_VRING_CALL",
            "SET_VRING_KICK",
        ]);
    }
    want.extend(["SET_VRING_ENABLE", "SET_VRING_ENABLE"]);
    assert_eq!(server.log(), want);
    assert_eq!(server.state.lock().unwrap().regions.0.len(), 2);
    loopback(&mut fe, &server, &[60, 1514]);
    // The rx chains hold 1526 bytes of frame without MRG_RXBUF or GSO.
    assert_eq!(fe.hdr_len(), 12);
}

#[test]
fn nack_fails_connect() {
    for req in [
        "SET_MEM_TABLE",
        "SET_VRING_ADDR",
        "SET_VRING_ENABLE",
        "SET_FEATURES",
    ] {
        let server = Server::start(FEATURES, VhostUserProtocolFeatures::REPLY_ACK);
        server.state.lock().unwrap().nack = Some(req);
        match Frontend::connect(server.config()) {
            Err(FrontendError::Vhost { op, .. }) => assert_eq!(op, req),
            other => panic!("{req}: {other:?}"),
        }
    }
}

#[test]
fn without_protocol_features() {
    let server = Server::start(
        FEATURES & !(f::VHOST_USER_PROTOCOL_FEATURES | f::RING_EVENT_IDX),
        all_protocol(),
    );
    let mut fe = Frontend::connect(server.config()).unwrap();
    let log = server.log();
    assert!(!log.contains(&"GET_PROTOCOL_FEATURES"));
    assert!(!log.contains(&"SET_VRING_ENABLE"));
    assert_eq!(
        log.last(),
        Some(&"GET_FEATURES"),
        "sync round trip without REPLY_ACK"
    );
    assert_eq!(fe.protocol_features(), 0);
    assert_eq!(fe.mac().unwrap(), None);
    loopback(&mut fe, &server, &[100, 3000]);

    // ADD_MEM_REG insisted on but unavailable; more than one queue pair without MQ.
    let server = Server::start(FEATURES, VhostUserProtocolFeatures::REPLY_ACK);
    let cfg = FrontendConfig {
        mem_registration: MemRegistration::AddMemReg,
        ..server.config()
    };
    assert!(matches!(
        Frontend::connect(cfg),
        Err(FrontendError::Unsupported(_))
    ));
    let server = Server::start(FEATURES, VhostUserProtocolFeatures::REPLY_ACK);
    let cfg = FrontendConfig {
        queue_pairs: 2,
        ..server.config()
    };
    assert!(matches!(
        Frontend::connect(cfg),
        Err(FrontendError::Unsupported(_))
    ));
}

#[test]
fn bad_rx_len_breaks_only_rx() {
    let server = Server::start(FEATURES, all_protocol());
    let mut fe = Frontend::connect(server.config()).unwrap();
    let (stop, dev) = spawn_device(&server, DevMode::BadRxLen);
    fe.send(0, &NetHdr::default(), &frame(100, 1)).unwrap();
    let e = fe.recv(0, Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(e, FrontendError::BadBackend { queue: 0, .. }),
        "{e}"
    );
    // Stays failed.
    assert!(fe.recv(0, Duration::ZERO).is_err());
    // tx still works.
    fe.send(0, &NetHdr::default(), &frame(100, 2)).unwrap();
    stop.store(true, Ordering::Relaxed);
    dev.join().unwrap();
}

#[test]
fn raw_post_and_guest_helpers() {
    let server = Server::start(FEATURES & !f::MRG_RXBUF, all_protocol());
    let mut fe = Frontend::connect(server.config()).unwrap();
    // Build a two-descriptor chain by hand: header, then frame.
    let fr = frame(200, 7);
    let buf = fe.alloc_guest(4096, 64).unwrap();
    fe.write_guest(buf, &[0u8; 12]).unwrap();
    fe.write_guest(buf + 12, &fr).unwrap();
    let mut back = vec![0u8; 200];
    fe.read_guest(buf + 12, &mut back).unwrap();
    assert_eq!(back, fr);
    let descs = [
        RawDesc {
            addr: buf,
            len: 12,
            flags: RawDesc::NEXT,
            next: 1,
        },
        RawDesc {
            addr: buf + 12,
            len: 200,
            flags: 0,
            next: 0,
        },
    ];
    let (stop, dev) = spawn_device(&server, DevMode::Loopback);
    fe.raw_post_tx(0, &descs, &[0]).unwrap();
    let (_, got) = fe.recv(0, Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(got, fr);
    // Descriptors 0 and 1 are released once the device used the raw chain: a second raw
    // post of the same ids works, and normal sends continue.
    let t = Instant::now();
    loop {
        match fe.raw_post_tx(0, &descs, &[0]) {
            Ok(()) => break,
            Err(FrontendError::DescriptorBusy { .. }) if t.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(fe.recv(0, Duration::from_secs(5)).unwrap().unwrap().1, fr);
    fe.send(0, &NetHdr::default(), &frame(64, 3)).unwrap();
    assert_eq!(
        fe.recv(0, Duration::from_secs(5)).unwrap().unwrap().1,
        frame(64, 3)
    );
    stop.store(true, Ordering::Relaxed);
    dev.join().unwrap();

    // set_avail_idx writes the index the device reads; the guest range is checked.
    let a = fe.vring_addrs(1).unwrap();
    fe.set_avail_idx(1, 0x1234).unwrap();
    let mut idx = [0u8; 2];
    fe.read_guest(a.avail + 2, &mut idx).unwrap();
    assert_eq!(u16::from_le_bytes(idx), 0x1234);
    assert!(fe.write_guest(fe.guest_mem_size(), &[0]).is_err());
    assert!(fe.vring_addrs(2).is_err());
    fe.kick(1).unwrap();
    assert!(fe.call_fd(0).unwrap() >= 0);
}

#[test]
fn two_queue_pairs_negotiate_mq_and_use_rings_2_and_3() {
    let server = Server::start(FEATURES | f::MQ | f::CTRL_VQ, all_protocol());
    // DPDK's vhost and vnetd answer GET_QUEUE_NUM in queue pairs.
    server.state.lock().unwrap().queue_num = 2;
    let cfg = FrontendConfig {
        queue_pairs: 2,
        ..server.config()
    };
    let mut fe = Frontend::connect(cfg).unwrap();
    assert_eq!(fe.queue_pairs(), 2);
    let log = server.log();
    assert_eq!(log.iter().filter(|m| **m == "GET_QUEUE_NUM").count(), 1);
    assert_eq!(log.iter().filter(|m| **m == "SET_VRING_ENABLE").count(), 4);
    {
        let s = server.state.lock().unwrap();
        assert_ne!(s.acked & f::MQ, 0, "MQ negotiated for two pairs");
        assert_eq!(s.acked & f::CTRL_VQ, 0, "the control queue is the VMM's");
        assert_eq!(fe.negotiated_features(), s.acked);
        assert!(s.vrings.iter().all(|v| v.enabled && v.num == 256));
    }
    loopback_on(&mut fe, &server, 1, &[60, 1514, 9000]);
    loopback_on(&mut fe, &server, 0, &[60, 1514]);
}

#[test]
fn queue_num_read_as_pairs_or_rings() {
    // vhost-user-backend style: the answer counts rings (4 for 2 pairs); enough too.
    let server = Server::start(FEATURES | f::MQ, all_protocol());
    server.state.lock().unwrap().queue_num = 4;
    let cfg = FrontendConfig {
        queue_pairs: 2,
        ..server.config()
    };
    let mut fe = Frontend::connect(cfg).unwrap();
    loopback_on(&mut fe, &server, 1, &[100]);

    // One pair only: refused before any ring is set up.
    let server = Server::start(FEATURES | f::MQ, all_protocol());
    let cfg = FrontendConfig {
        queue_pairs: 2,
        ..server.config()
    };
    let e = Frontend::connect(cfg).unwrap_err();
    assert!(matches!(e, FrontendError::Unsupported(_)), "{e}");
    assert!(!server.log().contains(&"SET_VRING_NUM"));

    // MQ protocol feature but no VIRTIO_NET_F_MQ: the device would use pair 0 only.
    let server = Server::start(FEATURES, all_protocol());
    server.state.lock().unwrap().queue_num = 2;
    let cfg = FrontendConfig {
        queue_pairs: 2,
        ..server.config()
    };
    let e = Frontend::connect(cfg).unwrap_err();
    assert!(matches!(e, FrontendError::Unsupported(_)), "{e}");

    // One pair never asks, and never acks MQ even when offered.
    let server = Server::start(FEATURES | f::MQ | f::CTRL_VQ, all_protocol());
    let cfg = FrontendConfig {
        wanted_features: FEATURES | f::CTRL_VQ,
        ..server.config()
    };
    let fe = Frontend::connect(cfg).unwrap();
    assert!(!server.log().contains(&"GET_QUEUE_NUM"));
    assert_eq!(fe.negotiated_features() & (f::MQ | f::CTRL_VQ), 0);
}
