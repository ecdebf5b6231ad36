//! Helpers of every vhost-user request this driver sends: eventfds, error mapping, and
//! REPLY_ACK handling. Used by connection set-up, the session and the frame API alike.

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::Frontend as VuFrontend;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::FrontendError;

/// A non-blocking eventfd.
pub(crate) fn eventfd() -> Result<EventFd, FrontendError> {
    EventFd::new(EFD_NONBLOCK).map_err(FrontendError::io("eventfd"))
}

/// Maps a `vhost` error of request `op` to ours.
pub(crate) fn vhost_err(op: &'static str) -> impl FnOnce(vhost::Error) -> FrontendError {
    move |source| FrontendError::Vhost { op, source }
}

/// Runs a request that has no reply of its own with NEED_REPLY set when REPLY_ACK was
/// negotiated, so a NACK surfaces as an error right there.
pub(crate) fn acked<T>(
    vu: &mut VuFrontend,
    reply_ack: bool,
    op: &'static str,
    req: impl FnOnce(&mut VuFrontend) -> vhost::Result<T>,
) -> Result<T, FrontendError> {
    if reply_ack {
        vu.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    let r = req(vu);
    if reply_ack {
        vu.set_hdr_flags(VhostUserHeaderFlag::empty());
    }
    r.map_err(vhost_err(op))
}
