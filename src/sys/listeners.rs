//! The listening sockets: parsed from `--listen`, bound once by the primary,
//! and never closed while it lives.
//!
//! Every worker receives the very same kernel sockets (fd 3, 4, ...), so the
//! accept queue outlives any single worker: a connection that arrives while
//! workers are swapped waits in the queue instead of being refused. For that
//! reason the primary never accepts on a listener and never changes its file
//! status flags: they are shared by every process that holds the socket.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use socket2::{Domain, SockAddr, Socket, Type};

pub use crate::types::listen::{ListenAddr, ListenSpec, DEFAULT_NAME};

/// A bound, listening socket owned by the primary.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    /// The address actually bound (port 0 resolved to the real port).
    pub addr: ListenAddr,
    socket: OwnedFd,
    /// A Unix socket path this primary created and removes at exit.
    pub(crate) owned_path: Option<PathBuf>,
}

impl Listener {
    /// Binds `spec`; a Unix socket file gets the umask's mode (as a program
    /// that binds it itself would).
    pub fn bind(spec: &ListenSpec, backlog: i32) -> Result<Listener> {
        Listener::bind_with_mode(spec, backlog, None, false)
    }

    /// Binds `spec`; a Unix socket file gets `unix_mode` when given. The
    /// mode is set between bind and listen: no one connects before it holds.
    /// `reuse_port`: a TCP socket gets `SO_REUSEPORT`, to be slot 0 of a
    /// group of per-slot sockets ([`super::slots`]).
    pub fn bind_with_mode(
        spec: &ListenSpec,
        backlog: i32,
        unix_mode: Option<u32>,
        reuse_port: bool,
    ) -> Result<Listener> {
        let name = spec.name.clone().unwrap_or_else(|| DEFAULT_NAME.to_string());
        match &spec.addr {
            ListenAddr::Tcp(sa) => {
                let socket = Socket::new(Domain::for_address(*sa), Type::STREAM, None)
                    .with_context(|| format!("creating a socket for {sa}"))?;
                socket.set_reuse_address(true)?;
                if reuse_port {
                    socket.set_reuse_port(true).with_context(|| format!("SO_REUSEPORT on a socket for {sa}"))?;
                }
                socket.bind(&(*sa).into()).with_context(|| format!("binding {sa}"))?;
                socket.listen(backlog).with_context(|| format!("listening on {sa}"))?;
                let bound = socket.local_addr()?.as_socket().context("bound TCP socket has no IP address")?;
                Ok(Listener { name, addr: ListenAddr::Tcp(bound), socket: socket.into(), owned_path: None })
            }
            ListenAddr::Unix(path) => {
                remove_stale_unix_socket(path)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
                    .with_context(|| format!("creating a socket for unix:{}", path.display()))?;
                let sa = SockAddr::unix(path).with_context(|| format!("unix socket path {}", path.display()))?;
                socket.bind(&sa).with_context(|| format!("binding unix:{}", path.display()))?;
                if let Some(mode) = unix_mode {
                    use std::os::unix::fs::PermissionsExt;
                    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
                        let _ = std::fs::remove_file(path);
                        return Err(e).with_context(|| format!("chmod {mode:04o} unix:{}", path.display()));
                    }
                }
                socket.listen(backlog).with_context(|| format!("listening on unix:{}", path.display()))?;
                Ok(Listener {
                    name,
                    addr: ListenAddr::Unix(path.clone()),
                    socket: socket.into(),
                    owned_path: Some(path.clone()),
                })
            }
        }
    }

    /// Takes over a socket handed over by the previous image (self-upgrade).
    pub fn adopt(fd: OwnedFd, name: String, owned_path: Option<PathBuf>) -> Result<Listener> {
        let mut l = Listener::inherit(fd, name)?;
        l.owned_path = owned_path;
        Ok(l)
    }

    /// Makes the socket non-blocking for every process that holds it (the
    /// flag belongs to the open file, shared by all workers): for servers
    /// that never set it on an inherited socket and would block in
    /// `accept()` for a connection another process took first (nginx).
    pub fn set_nonblocking(&self) -> Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(&self.socket, FcntlArg::F_GETFL)?);
        if !flags.contains(OFlag::O_NONBLOCK) {
            fcntl(&self.socket, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))
                .with_context(|| format!("making {} non-blocking", self.addr))?;
        }
        Ok(())
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.owned_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Listener {
    /// Adopts a socket inherited from systemd (socket activation), after
    /// checking that it really is a listening stream socket.
    pub fn inherit(fd: OwnedFd, name: String) -> Result<Listener> {
        use nix::sys::socket::{getsockopt, sockopt};
        let raw = fd.as_raw_fd();
        let what = || format!("inherited fd {raw} ({name:?})");
        let ty = getsockopt(&fd, sockopt::SockType).with_context(|| format!("{} is not a socket", what()))?;
        if ty != nix::sys::socket::SockType::Stream {
            bail!("{} is a {ty:?} socket, not a stream socket", what());
        }
        if !getsockopt(&fd, sockopt::AcceptConn).with_context(what)? {
            bail!("{} is not listening (a .socket unit needs Accept=no and ListenStream=)", what());
        }
        let local = socket2::SockRef::from(&fd).local_addr().with_context(what)?;
        let addr = if let Some(sa) = local.as_socket() {
            ListenAddr::Tcp(sa)
        } else if let Some(p) = local.as_pathname() {
            ListenAddr::Unix(p.to_path_buf())
        } else {
            bail!("{} has an address hotswap cannot use (abstract or unnamed Unix socket)", what());
        };
        Ok(Listener { name, addr, socket: fd, owned_path: None })
    }
}

/// No `--listen`, no socket from systemd, and workers that cannot bind
/// through the primary: a usage error (exit code 2), not a failure.
#[derive(Debug)]
pub struct NothingToListenOn;

impl std::fmt::Display for NothingToListenOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "nothing to listen on: give --listen ADDR (or `listen` in the config), or start under socket activation",
        )
    }
}

impl std::error::Error for NothingToListenOn {}

/// Binds every spec, failing with the culprit's address; or, under socket
/// activation, takes the inherited sockets: matched to the specs by name or
/// address (a spec that matches none is bound), all of them when there are
/// no specs.
/// `none_needed`: the workers bind what they need through the primary
/// (Node.js cluster workers), so no listener at all is fine. `unix_mode`:
/// the mode of the Unix socket files bound here (`--socket-mode`).
/// `reuse_port`: TCP sockets bound here get `SO_REUSEPORT` (`--balance`).
/// No listener at all, when one is needed, is a [`NothingToListenOn`] error.
pub fn open_all(
    specs: &[ListenSpec],
    backlog: i32,
    unix_mode: u32,
    none_needed: bool,
    reuse_port: bool,
) -> Result<Vec<Listener>> {
    let inherited = systemd_sockets()?;
    let bind = |s: &ListenSpec| Listener::bind_with_mode(s, backlog, Some(unix_mode), reuse_port);
    if inherited.is_empty() {
        if specs.is_empty() && !none_needed {
            return Err(NothingToListenOn.into());
        }
        return specs.iter().map(bind).collect();
    }
    let mut pool: Vec<Option<Listener>> = inherited.into_iter().map(Some).collect();
    if specs.is_empty() {
        return Ok(pool.into_iter().flatten().collect());
    }
    let mut out = Vec::new();
    for spec in specs {
        let found = pool
            .iter_mut()
            .find(|l| l.as_ref().is_some_and(|l| spec.name.as_deref() == Some(l.name.as_str()) || spec.addr == l.addr));
        match found.and_then(Option::take) {
            Some(mut l) => {
                if let Some(n) = &spec.name {
                    l.name = n.clone();
                }
                out.push(l)
            }
            None => out.push(bind(spec)?),
        }
    }
    for l in pool.into_iter().flatten() {
        tracing::warn!("inherited socket {} ({:?}) matches no --listen; closing it", l.addr, l.name);
    }
    Ok(out)
}

/// The sockets systemd passed to this process (`LISTEN_FDS`), checked.
/// Removes the `LISTEN_*` variables, so call it before any thread starts.
fn systemd_sockets() -> Result<Vec<Listener>> {
    use std::os::fd::FromRawFd;
    // SAFETY: this removes the `LISTEN_*` variables, which is sound only while
    // no other thread can read or write the environment; the one caller
    // (`open_all`, from `run`) runs before the tokio runtime or any thread starts.
    let fds =
        unsafe { sd_notify::listen_fds_with_names_and_unset_env() }.context("reading LISTEN_FDS / LISTEN_FDNAMES")?;
    let fds: Vec<(RawFd, String)> = fds.collect();
    let mut out = Vec::new();
    for (fd, name) in fds {
        // SAFETY: systemd handed this fd to us, and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let l = Listener::inherit(owned, name)?;
        tracing::info!("socket activation: fd {fd} is {} ({:?})", l.addr, l.name);
        out.push(l);
    }
    Ok(out)
}

/// The value of `LISTEN_FDNAMES` for these listeners.
pub fn fd_names(listeners: &[Listener]) -> String {
    listeners.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(":")
}

/// A socket file left by a dead process is replaced; one a live process
/// listens on is an error, and so is any other kind of file.
pub fn remove_stale_unix_socket(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket; refusing to replace it", path.display());
    }
    match UnixStream::connect(path) {
        Ok(_) => bail!("{} is in use: a live process listens on it", path.display()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("probing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_names() {
        let s: ListenSpec = "web=127.0.0.1:8080".parse().unwrap();
        assert_eq!(s.name.as_deref(), Some("web"));
        assert_eq!(s.addr, ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap()));
        let s: ListenSpec = "[::1]:0".parse().unwrap();
        assert_eq!(s.name, None);
        let s: ListenSpec = "unix:/tmp/a=b.sock".parse().unwrap();
        assert_eq!(s.addr, ListenAddr::Unix("/tmp/a=b.sock".into()));
        assert_eq!(s.name, None);
        let s: ListenSpec = "admin=unix:/tmp/x.sock".parse().unwrap();
        assert_eq!(s.name.as_deref(), Some("admin"));
        let s: ListenSpec = ":9000".parse().unwrap();
        assert_eq!(s.addr, ListenAddr::Tcp("0.0.0.0:9000".parse().unwrap()));
        assert!("unix:".parse::<ListenSpec>().is_err());
        assert!("nonsense".parse::<ListenSpec>().is_err());
        assert!("8080".parse::<ListenSpec>().unwrap_err().contains(":8080 (every interface) or 127.0.0.1:8080"));
        assert!("127.0.0.1:99999".parse::<ListenSpec>().is_err());
    }

    #[test]
    fn port_zero_reports_real_port() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 16).unwrap();
        match l.addr {
            ListenAddr::Tcp(sa) => assert_ne!(sa.port(), 0),
            _ => panic!("expected tcp"),
        }
    }

    #[test]
    fn stale_unix_socket_is_replaced_live_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("hotswap-lt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let spec: ListenSpec = format!("unix:{}", path.display()).parse().unwrap();

        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = Listener::bind(&spec, 4).unwrap_err();
        assert!(format!("{err:#}").contains("in use"), "{err:#}");
        drop(live); // std leaves the file behind, as a dead process would
        assert!(path.exists());
        let ours = Listener::bind(&spec, 4).unwrap();
        drop(ours);
        assert!(!path.exists(), "the primary removes its own socket file");

        std::fs::write(dir.join("plain"), b"x").unwrap();
        let plain: ListenSpec = format!("unix:{}", dir.join("plain").display()).parse().unwrap();
        assert!(format!("{:#}", Listener::bind(&plain, 4).unwrap_err()).contains("not a socket"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
