//! Connection set-up and tear-down: the socket (connected, accepted or given), guest memory
//! and the queue pairs with their notifiers, then the vhost-user session (`session`).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::{VhostUserFrontend, VhostUserProtocolFeatures};
use virtio_net::features as f;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::guest::GuestMemory;
use crate::queue::{QueueParams, RxQueue, TxQueue};
use crate::request::{acked, eventfd};
use crate::{session, Frontend, FrontendConfig, FrontendError, Notifiers, QueuePair};

impl Notifiers {
    fn new() -> Result<Notifiers, FrontendError> {
        Ok(Notifiers {
            kick: eventfd()?,
            call: eventfd()?,
        })
    }

    pub(crate) fn kick(&self) -> Result<(), FrontendError> {
        self.kick
            .write(1)
            .map_err(FrontendError::io("kick eventfd write"))
    }

    /// Clears a pending call.
    pub(crate) fn drain_call(&self) -> Result<(), FrontendError> {
        match self.call.read() {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(FrontendError::io("call eventfd read")(e)),
        }
    }
}

/// Checks what can be checked before talking to the backend.
fn validate(c: &FrontendConfig) -> Result<(), FrontendError> {
    if !c.queue_size.is_power_of_two() || c.queue_size > 32768 {
        return Err(FrontendError::Config(format!(
            "queue_size {} must be a power of two <= 32768",
            c.queue_size
        )));
    }
    if c.queue_pairs == 0 || c.queue_pairs > 0x7fff {
        return Err(FrontendError::Config(format!(
            "queue_pairs {}",
            c.queue_pairs
        )));
    }
    Ok(())
}

fn connect_socket(path: &Path, timeout: Duration) -> Result<UnixStream, FrontendError> {
    // None: too far in the future to represent, i.e. no deadline.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && deadline.is_none_or(|d| Instant::now() < d) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(FrontendError::Connect {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Guest memory and every queue pair for `features`, rx buffers posted and published.
fn build_queues(
    c: &FrontendConfig,
    features: u64,
) -> Result<(GuestMemory, Vec<QueuePair>), FrontendError> {
    let hdr_len = virtio_net::hdr_len(features);
    let mut mem = GuestMemory::new(c.guest_base, c.mem_size, c.regions)?;
    let event_idx = features & f::RING_EVENT_IDX != 0;
    let indirect = c.use_indirect && features & f::RING_INDIRECT_DESC != 0;
    let mrg = features & f::MRG_RXBUF != 0;
    let big_rx = features & (f::GUEST_TSO4 | f::GUEST_TSO6 | f::GUEST_UFO) != 0;
    let big_tx = features & (f::HOST_TSO4 | f::HOST_TSO6 | f::HOST_UFO) != 0;
    let mut pairs = Vec::with_capacity(usize::from(c.queue_pairs));
    for p in 0..c.queue_pairs {
        let params = |index, big| QueueParams {
            index,
            size: c.queue_size,
            event_idx,
            hdr_len,
            indirect,
            packed: features & f::RING_PACKED != 0,
            big,
        };
        let rx = RxQueue::new(&mut mem, params(2 * p, big_rx), mrg, c.rx_buf_size)?;
        let tx = TxQueue::new(&mut mem, params(2 * p + 1, big_tx), c.tx_layout)?;
        let rx_notify = Notifiers::new()?;
        let tx_notify = Notifiers::new()?;
        let epoll = Epoll::new().map_err(FrontendError::io("epoll_create"))?;
        epoll
            .ctl(
                ControlOperation::Add,
                rx_notify.call.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .map_err(FrontendError::io("epoll_ctl"))?;
        pairs.push(QueuePair {
            rx,
            tx,
            rx_notify,
            tx_notify,
            epoll,
            rx_broken: None,
            tx_broken: None,
        });
    }
    // Make the posted rx buffers visible before the backend can look at the ring.
    for p in &mut pairs {
        p.rx.publish(&mem)?;
    }
    Ok((mem, pairs))
}

/// Waits up to `timeout` for a backend to connect to `listener`; the socket comes back
/// blocking.
fn accept_within(listener: &UnixListener, timeout: Duration) -> Result<UnixStream, FrontendError> {
    let io = FrontendError::io;
    listener
        .set_nonblocking(true)
        .map_err(io("set_nonblocking"))?;
    let deadline = Instant::now() + timeout;
    let sock = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io("accept (timed out)")(e));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io("accept")(e)),
        }
    };
    sock.set_nonblocking(false).map_err(io("set_nonblocking"))?;
    Ok(sock)
}

/// Tells the device about the posted rx buffers (it may poll and not need this).
fn announce_rx_buffers(pairs: &[QueuePair]) -> Result<(), FrontendError> {
    for p in pairs {
        p.rx_notify.kick()?;
    }
    Ok(())
}

impl Frontend {
    /// Connects to `config.socket` (retrying until `connect_timeout`), negotiates, sets up
    /// guest memory and every queue pair, posts rx buffers and enables the rings.
    pub fn connect(config: FrontendConfig) -> Result<Frontend, FrontendError> {
        validate(&config)?;
        let sock = connect_socket(&config.socket, config.connect_timeout)?;
        Frontend::over_stream(config, sock)
    }

    /// Plays the VMM in server mode (QEMU `server=on`): waits up to
    /// `config.connect_timeout` for the backend to connect to `listener`, then sets up as
    /// [`Frontend::connect`] does.
    pub fn accept(
        config: FrontendConfig,
        listener: &UnixListener,
    ) -> Result<Frontend, FrontendError> {
        let sock = accept_within(listener, config.connect_timeout)?;
        Frontend::over_stream(config, sock)
    }

    /// Sets up a virtio-net device over an already connected vhost-user socket.
    pub fn over_stream(
        config: FrontendConfig,
        sock: UnixStream,
    ) -> Result<Frontend, FrontendError> {
        validate(&config)?;
        let (vu, neg, mem, pairs) = session::start(&config, sock, build_queues)?;
        announce_rx_buffers(&pairs)?;
        Ok(Frontend {
            config,
            vu: Some(vu),
            mem,
            offered_features: neg.offered,
            features: neg.features,
            offered_protocol: neg.offered_protocol,
            protocol: neg.protocol,
            hdr_len: virtio_net::hdr_len(neg.features),
            pairs,
        })
    }

    /// Drops the vhost-user socket. Rings and memory stay; data calls then fail with
    /// [`FrontendError::Disconnected`].
    pub fn disconnect(&mut self) {
        self.vu = None;
    }

    /// Whether the socket is still held.
    pub fn is_connected(&self) -> bool {
        self.vu.is_some()
    }

    /// Drops the current session and connects again from scratch with the same
    /// configuration (fresh memory, rings and negotiation). On error the frontend stays
    /// disconnected.
    pub fn reconnect(&mut self) -> Result<(), FrontendError> {
        self.disconnect();
        let new = Frontend::connect(self.config.clone())?;
        *self = new;
        Ok(())
    }

    /// Sends SET_VRING_ENABLE 1 for every ring (after a connect with
    /// [`FrontendConfig::defer_enable`]); a no-op without PROTOCOL_FEATURES.
    pub fn enable_rings(&mut self) -> Result<(), FrontendError> {
        if self.features & f::VHOST_USER_PROTOCOL_FEATURES == 0 {
            return Ok(());
        }
        let n = self.pairs.len() * 2;
        let reply_ack = self.protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0;
        let vu = self.vu.as_mut().ok_or(FrontendError::Disconnected)?;
        for q in 0..n {
            acked(vu, reply_ack, "SET_VRING_ENABLE", |v| {
                v.set_vring_enable(q, true)
            })?;
        }
        Ok(())
    }
}
