//! Each worker's own `NOTIFY_SOCKET`, for apps written for systemd's
//! `Type=notify`: their `READY=1` marks them ready (`--ready notify`).
//!
//! Every worker gets a datagram socket of the primary's at a real path
//! (never the primary's own `NOTIFY_SOCKET`: a worker's `READY=1` must not
//! reach systemd). File descriptors sent along (`BARRIER=1` sends one and
//! waits for it to be closed) are closed at once.

use std::io::IoSliceMut;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::types::event::Notification;
use crate::types::{Event, WorkerId};

/// A worker's notify socket; closed and removed on drop.
#[derive(Debug)]
pub struct NotifySocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl NotifySocket {
    pub fn bind(dir: &Path, worker: WorkerId, label: String, events: mpsc::Sender<Event>) -> Result<NotifySocket> {
        let path = dir.join(format!("w{worker}.notify"));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).with_context(|| format!("binding notify socket {}", path.display()))?;
        let task = tokio::spawn(read_loop(sock, worker, label, events));
        Ok(NotifySocket { path, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The assignments in one datagram that matter to hotswap.
pub fn parse(datagram: &str) -> Vec<Notification> {
    datagram
        .lines()
        .filter_map(|line| match line.split_once('=') {
            Some(("READY", "1")) => Some(Notification::Ready),
            Some(("STOPPING", "1")) => Some(Notification::Stopping),
            Some(("STATUS", s)) => Some(Notification::Status(s.to_string())),
            _ => None,
        })
        .collect()
}

async fn read_loop(sock: UnixDatagram, worker: WorkerId, label: String, events: mpsc::Sender<Event>) {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 4096];
    loop {
        let received = sock
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 16]);
                let msg = recvmsg::<UnixAddr>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
                    .map_err(std::io::Error::from)?;
                // Close whatever fds came along.
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for fd in fds {
                                let _ = nix::unistd::close(fd);
                            }
                        }
                    }
                }
                Ok(msg.bytes)
            })
            .await;
        let n = match received {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("{label} notify socket: {e}");
                return;
            }
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        for note in parse(&text) {
            if events.send(Event::Notify { worker, note }).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assignments() {
        assert_eq!(
            parse("READY=1\nSTATUS=serving 3 apps\nMAINPID=4\nBARRIER=1\n"),
            vec![Notification::Ready, Notification::Status("serving 3 apps".into())]
        );
        assert_eq!(parse("READY=0\nSTOPPING=1"), vec![Notification::Stopping]);
        assert!(parse("garbage").is_empty());
    }
}
