//! What to say of a worker that listens on a port of its own: usually an
//! app that picks its port from `PORT` (`app.listen(process.env.PORT ||
//! 3000)`) and got another one than the `--listen` port, or does not read
//! `PORT` at all. hotswap sets `PORT` to the first `--listen` port unless
//! the config's `env`, `-e` or the primary's own environment set it, so
//! the message says which, and what to change.

use crate::options::Settings;
use crate::sys::listeners::{ListenAddr, Listener};

/// Where the worker's `PORT` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    /// The config's `env` table or `-e PORT=…`.
    Config,
    /// The primary's own environment, passed on.
    Environment,
    /// hotswap: the first `--listen` port.
    Hotswap,
}

/// The `PORT` a worker of `settings` has, and where it came from (as the
/// launcher sets it: config, else the primary's environment, else the
/// first TCP `--listen` port).
fn port_of(settings: &Settings, listeners: &[Listener]) -> Option<(String, From)> {
    if let Some((_, v)) = settings.env.iter().rev().find(|(k, _)| k == "PORT") {
        return Some((v.clone(), From::Config));
    }
    if let Some(v) = std::env::var_os("PORT") {
        return Some((v.to_string_lossy().into_owned(), From::Environment));
    }
    first_tcp_port(listeners).map(|p| (p.to_string(), From::Hotswap))
}

fn first_tcp_port(listeners: &[Listener]) -> Option<u16> {
    listeners.iter().find_map(|l| match &l.addr {
        ListenAddr::Tcp(sa) => Some(sa.port()),
        _ => None,
    })
}

/// What `PORT` has to do with a worker listening on `own` (a port no
/// `--listen` gives), in words; `None` when hotswap has no TCP listener.
pub fn hint(settings: &Settings, listeners: &[Listener], own: u16) -> Option<String> {
    let ours = first_tcp_port(listeners)?;
    let (port, from) = port_of(settings, listeners)?;
    let whence = match from {
        From::Config => "from the config's env or -e",
        From::Environment => "from hotswap's own environment, passed on",
        From::Hotswap => "",
    };
    Some(if from == From::Hotswap {
        format!(
            "hotswap gave it PORT={port} (the --listen port) and it listens on {own} instead: it does not read \
             PORT, or reads another variable (a default such as `process.env.PORT || {own}` is taken only when \
             PORT is missing); make it listen on PORT or on the socket it inherits (fd 3)"
        )
    } else if port == own.to_string() {
        format!(
            "it listens on its PORT, {port} ({whence}), which is not the --listen port {ours}: hotswap sets PORT \
             to the --listen port only when PORT is not set already; drop PORT from its environment or set it to \
             {ours}"
        )
    } else {
        format!(
            "its PORT is {port} ({whence}), not the --listen port {ours}, and it listens on {own}: drop PORT from \
             its environment (hotswap then sets it to {ours}) or set it to {ours}, and make it listen on PORT"
        )
    })
}

/// What to say of process `holder`, which listens on a socket of its own,
/// when it is not the process hotswap started (pid `worker`): if it was
/// started with a `LISTEN_PID` that is not its own, a wrapper forked it
/// (`sh -c 'app; ...'`, `strace -f`, a script without `exec`), and a server
/// that follows systemd's protocol (`sd_listen_fds`, Rust's `listenfd`,
/// Go's `go-systemd`) ignores sockets meant for another pid; that, not
/// `PORT`, is why it bound its own.
pub fn forked_by_a_wrapper(holder: i32, worker: i32) -> Option<String> {
    let named = crate::sys::spawn::listen_pid_of(holder)?;
    (holder != worker && named != holder).then(|| {
        format!(
            "pid {holder} is not the process hotswap started (pid {worker}), which LISTEN_PID={named} names: a \
             server that reads LISTEN_FDS (sd_listen_fds, Rust's listenfd, go-systemd) takes the sockets only in \
             the process LISTEN_PID names, so started by a wrapper that forks (`sh -c 'app; ...'`, `strace -f`, \
             a script that does not `exec` it) it ignores them and binds its own; run the server directly, or \
             make the wrapper `exec` it"
        )
    })
}

/// [`hint`] for an address given as text (`0.0.0.0:3998`, `[::]:3998`).
pub fn hint_for_addr(settings: &Settings, listeners: &[Listener], addr: &str) -> Option<String> {
    let port = addr.rsplit_once(':')?.1.parse::<u16>().ok()?;
    hint(settings, listeners, port)
}
