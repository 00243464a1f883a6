//! The task that reads a worker's channel: until the socket is drained
//! (see the module's doc), with the fds that come with `NODE_HANDLE`
//! lines, answering each handle at once and passing the messages to the
//! supervisor as [`Event`]s.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::sync::mpsc;

use super::channel::Urgent;
use super::framing::Framer;
use super::{to_worker, ABUSE_LIMIT};
use crate::io::warnings::Warnings;
use crate::types::event::FromWorker;
use crate::types::{Event, WorkerId};

/// Reads what is there, with the fds that came with it (`Ok(0)`: EOF).
fn recv_with_fds(fd: i32, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> std::io::Result<usize> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT)
        .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: received with SCM_RIGHTS: new fds nobody else owns.
            fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    Ok(msg.bytes)
}

pub(super) async fn read_loop(
    stream: tokio::net::unix::OwnedReadHalf,
    worker: WorkerId,
    label: String,
    node: bool,
    events: mpsc::Sender<Event>,
    acks: mpsc::UnboundedSender<bool>,
    urgent: Urgent,
) {
    let mut framer = Framer::default();
    let mut warnings = Warnings::new(label.clone());
    // Fds received and not yet paired with their NODE_HANDLE line.
    let mut fds: VecDeque<OwnedFd> = VecDeque::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Read until the socket says it is drained (see the module's doc).
        let raw = stream.as_ref().as_raw_fd();
        let read = match stream.as_ref().try_io(Interest::READABLE, || recv_with_fds(raw, &mut buf, &mut fds)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match stream.readable().await {
                Ok(()) => continue,
                Err(e) => Err(e),
            },
            r => {
                // `try_read` spends none of tokio's cooperative budget: a
                // worker that writes without pause must not keep the event
                // loop's thread to itself.
                tokio::task::coop::consume_budget().await;
                r
            }
        };
        match read {
            Ok(0) | Err(_) => {
                if framer.buffered() > 0 {
                    tracing::warn!("{label} IPC: dropped {} bytes without a final newline", framer.buffered());
                }
                break;
            }
            Ok(n) => framer.buffer().extend_from_slice(&buf[..n]),
        }
        if fds.len() > crate::io::ipc::MAX_QUEUED_HANDLES {
            tracing::error!("{label} IPC: closing the channel: {} fds sent without their messages", fds.len());
            break;
        }
        while let Some(item) = framer.next_message() {
            match item {
                Ok(FromWorker::HandleAck { ok }) => {
                    let _ = acks.send(ok);
                }
                // Checked here, where the rate limit is: a worker sending
                // bad or unknown cluster messages in a loop must not flood
                // the log (unknown ones are only for the debug log).
                Ok(FromWorker::Cluster(v)) => {
                    use crate::node::cluster::{parse, FromNode};
                    let refused = match parse(&v) {
                        _ if !node => Some((
                            tracing::Level::WARN,
                            "spoke Node's cluster protocol but is not run as a cluster worker (--node off?); ignored"
                                .to_string(),
                        )),
                        Err(why) => {
                            Some((tracing::Level::WARN, format!("sent a cluster message hotswap cannot use: {why}")))
                        }
                        Ok(FromNode::Other(act)) => {
                            Some((tracing::Level::DEBUG, format!("cluster message {act:?} ignored")))
                        }
                        Ok(_) => None,
                    };
                    match refused {
                        Some((level, why)) => {
                            if warnings.allow() {
                                if level == tracing::Level::WARN {
                                    tracing::warn!("{label} {why}");
                                } else {
                                    tracing::debug!("{label} {why}");
                                }
                            }
                        }
                        None => {
                            if events.send(Event::Ipc { worker, msg: FromWorker::Cluster(v) }).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Ok(FromWorker::NodeHandle(msg)) => {
                    let Some(fd) = fds.pop_front() else {
                        urgent.send(to_worker::node_handle_nack());
                        continue;
                    };
                    urgent.send(to_worker::node_handle_ack());
                    if events.send(Event::IpcHandle { worker, msg, fd }).await.is_err() {
                        return;
                    }
                }
                Ok(msg) => {
                    if events.send(Event::Ipc { worker, msg }).await.is_err() {
                        return;
                    }
                }
                Err(why) => {
                    if warnings.allow() {
                        tracing::warn!("{label} IPC: refused a message: {why}");
                    }
                }
            }
        }
        warnings.tick();
        if framer.refused_in_a_row >= ABUSE_LIMIT {
            tracing::error!("{label} IPC: closing the channel after {ABUSE_LIMIT} refused messages in a row");
            break;
        }
    }
    warnings.finish();
    // The supervisor drops its handle, which ends the writer and closes the socket.
    let _ = events.send(Event::IpcClosed { worker }).await;
}
