//! The per-slot sockets of `--balance slots` and `sticky`: for each TCP
//! listener, one `SO_REUSEPORT` socket per worker slot, bound by the
//! primary in slot order and never closed while it lives.
//!
//! Slot k's socket is the k-th to join the listener's reuseport group (a
//! socket joins at `listen`), and the group's BPF program
//! ([`super::reuseport`]) returns slot numbers, so both orders must agree:
//! sockets are added only at the end (a growing pool) and never closed (a
//! closed socket's place is taken by the group's last one, which would
//! shuffle the slots). A slot that is not used any more (a pool that shrank)
//! keeps its socket, left out of the program, for when the pool grows again.
//!
//! Slot 0's socket is the listener itself (bound with `SO_REUSEPORT`, or
//! inherited from systemd with `ReusePort=yes`). Unix sockets have no
//! reuseport groups: they stay shared by every worker.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use anyhow::{bail, Context, Result};
use socket2::{Domain, Socket, Type};

use super::listeners::{ListenAddr, Listener};
#[cfg(target_os = "linux")]
use super::reuseport::{self, Key};
use crate::types::balance::Balance;

/// The sockets of one listener.
#[derive(Debug)]
enum Group {
    /// Every worker gets the listener itself.
    Shared,
    /// Slot k's socket at index k (index 0: a copy of the listener's fd).
    PerSlot { addr: SocketAddr, socks: Vec<OwnedFd> },
}

/// Every listener's slot sockets, and what the kernel was last told about
/// which slots are live.
#[derive(Debug)]
pub struct SlotSockets {
    balance: Balance,
    /// One per listener, in the listeners' order.
    groups: Vec<Group>,
    backlog: i32,
    /// The (slot count, live set) the programs were last built for.
    applied: Option<(usize, Vec<bool>)>,
}

impl SlotSockets {
    /// The groups of `listeners` under `balance`, each with slot 0 only.
    /// A TCP listener must have `SO_REUSEPORT` set; one that does not was
    /// inherited from a socket unit without `ReusePort=yes`.
    pub fn new(balance: Balance, listeners: &[Listener], backlog: i32) -> Result<SlotSockets> {
        let mut groups = Vec::new();
        for l in listeners {
            groups.push(match (&l.addr, balance.per_slot()) {
                (_, false) => Group::Shared,
                (ListenAddr::Unix(p), true) => {
                    tracing::info!(
                        "--balance {balance}: unix:{} stays shared by every worker (Unix sockets have no SO_REUSEPORT)",
                        p.display()
                    );
                    Group::Shared
                }
                (ListenAddr::Tcp(sa), true) => {
                    let reuse = socket2::SockRef::from(l).reuse_port().with_context(|| format!("listener {sa}"))?;
                    if !reuse {
                        bail!(
                            "--balance {balance} needs SO_REUSEPORT on {sa} ({:?}), which systemd handed over \
                             without it: add `ReusePort=yes` to the [Socket] section of its .socket unit (and \
                             restart the unit), or drop --balance (the default, shared, works with any socket)",
                            l.name
                        );
                    }
                    let first = l.as_fd().try_clone_to_owned().with_context(|| format!("duplicating {sa}"))?;
                    Group::PerSlot { addr: *sa, socks: vec![first] }
                }
            });
        }
        Ok(SlotSockets { balance, groups, backlog, applied: None })
    }

    /// Takes over the groups a previous image handed over: `rest[i]` is
    /// listener i's sockets of slots 1, 2, ... in slot order (empty for a
    /// shared one); slot 0 is the listener itself.
    pub fn adopt(balance: Balance, listeners: &[Listener], rest: Vec<Vec<OwnedFd>>, backlog: i32) -> Result<Self> {
        let mut groups = Vec::new();
        let mut rest = rest.into_iter();
        for l in listeners {
            let more = rest.next().unwrap_or_default();
            groups.push(match (&l.addr, balance.per_slot()) {
                (ListenAddr::Tcp(sa), true) => {
                    let first = l.as_fd().try_clone_to_owned().with_context(|| format!("duplicating {sa}"))?;
                    Group::PerSlot { addr: *sa, socks: std::iter::once(first).chain(more).collect() }
                }
                _ => Group::Shared,
            });
        }
        Ok(SlotSockets { balance, groups, backlog, applied: None })
    }

    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// Whether any listener has sockets per slot.
    pub fn per_slot(&self) -> bool {
        self.groups.iter().any(|g| matches!(g, Group::PerSlot { .. }))
    }

    /// Binds sockets until every group has one for each of `slots` slots
    /// (in slot order, joining the group at its end).
    pub fn grow(&mut self, slots: usize) -> Result<()> {
        for g in &mut self.groups {
            let Group::PerSlot { addr, socks } = g else { continue };
            let v6_only = match addr.is_ipv6() {
                true => Some(socket2::SockRef::from(&socks[0]).only_v6().with_context(|| format!("listener {addr}"))?),
                false => None,
            };
            while socks.len() < slots {
                let slot = socks.len();
                let s = bind(*addr, v6_only, self.backlog).map_err(|e| {
                    let hint = match e.raw_os_error() {
                        // The kernel lets only the user that made a group's
                        // first socket join it.
                        Some(libc::EADDRINUSE) => {
                            " (only the user that created the first socket of a SO_REUSEPORT group may join it: \
                             under socket activation, that is systemd's (root); run hotswap as root or drop \
                             --balance)"
                        }
                        _ => "",
                    };
                    anyhow::Error::new(e).context(format!("binding slot {slot}'s socket for {addr}{hint}"))
                })?;
                socks.push(s);
                self.applied = None;
            }
        }
        Ok(())
    }

    /// The fds a worker in `slot` gets, one per listener in order: its
    /// slot's socket, or the shared listener. A slot past a group's end
    /// (never: [`Self::grow`] runs first) gets the listener.
    pub fn fds(&self, listeners: &[Listener], slot: usize) -> Vec<RawFd> {
        self.borrowed(listeners, slot).iter().map(|f| f.as_raw_fd()).collect()
    }

    /// As [`Self::fds`], borrowed.
    pub fn borrowed<'a>(&'a self, listeners: &'a [Listener], slot: usize) -> Vec<BorrowedFd<'a>> {
        listeners
            .iter()
            .enumerate()
            .map(|(i, l)| match self.groups.get(i) {
                Some(Group::PerSlot { socks, .. }) => socks.get(slot).map(|s| s.as_fd()).unwrap_or(l.as_fd()),
                _ => l.as_fd(),
            })
            .collect()
    }

    /// Every group's sockets after slot 0's (the listener), in slot order
    /// (empty for a shared listener): what a self-upgrade hands over.
    pub fn handover_fds(&self) -> Vec<Vec<RawFd>> {
        self.groups
            .iter()
            .map(|g| match g {
                Group::PerSlot { socks, .. } => socks.iter().skip(1).map(|s| s.as_raw_fd()).collect(),
                Group::Shared => Vec::new(),
            })
            .collect()
    }

    /// Tells the kernel which of the first `slots` slots are live (have a
    /// worker that accepts), when that changed: new connections go only to
    /// live slots. Under `slots` with every socket live the kernel's own
    /// hash picks; otherwise the program of [`reuseport`] does.
    pub fn apply(&mut self, slots: usize, live: &[bool]) -> Result<()> {
        let slots = slots.max(1);
        let wanted = (slots, live[..slots.min(live.len())].to_vec());
        if self.applied.as_ref() == Some(&wanted) {
            return Ok(());
        }
        // Recorded first: a failure is reported once per change, not on
        // every event after it.
        self.applied = Some(wanted.clone());
        for g in &self.groups {
            let Group::PerSlot { addr, socks } = g else { continue };
            let all_live = socks.len() == slots && wanted.1.len() == slots && wanted.1.iter().all(|l| *l);
            #[cfg(target_os = "linux")]
            let result = match self.balance {
                Balance::Slots if all_live => reuseport::detach(socks[0].as_fd()),
                Balance::Slots => {
                    reuseport::attach(socks[0].as_fd(), &reuseport::program(Key::Connection, slots, &wanted.1))
                }
                _ => reuseport::attach(socks[0].as_fd(), &reuseport::program(Key::Address, slots, &wanted.1)),
            };
            // Never reached: per-slot groups need Linux (refused with the options).
            #[cfg(not(target_os = "linux"))]
            let result: std::io::Result<()> = {
                let _ = all_live;
                Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "SO_ATTACH_REUSEPORT_CBPF is Linux-only"))
            };
            result.with_context(|| format!("attaching the --balance {} program to {addr}", self.balance))?;
        }
        let live_list: Vec<usize> = (0..slots).filter(|s| wanted.1.get(*s).copied().unwrap_or(false)).collect();
        tracing::debug!("--balance {}: {slots} slots, live {live_list:?}", self.balance);
        Ok(())
    }

    /// A source address for a connection to listener `listener` that the
    /// group's program sends to `slot`'s socket, live or not (the primary's
    /// probe of a worker in that slot): 127.254.X.Y for IPv4 and dual-stack
    /// listeners ([`reuseport::PROBE_NET`]). None when no program decides
    /// (`--balance shared`, a Unix socket, `slots` with every slot live: the
    /// kernel's own hash picks), and for an IPv6-only listener, where only
    /// `[::1]` is tried, on a live slot.
    #[cfg(target_os = "linux")]
    pub fn probe_source(&self, listener: usize, slot: usize) -> Option<SocketAddr> {
        let Some(Group::PerSlot { addr, socks }) = self.groups.get(listener) else { return None };
        let (slots, live) = self.applied.as_ref()?;
        let all_live = socks.len() == *slots && live.len() == *slots && live.iter().all(|l| *l);
        let key = match self.balance {
            Balance::Slots if all_live => return None,
            Balance::Slots => Key::Connection,
            _ => Key::Address,
        };
        if !addr.is_ipv6() || addr.ip().is_unspecified() {
            return Some(SocketAddr::new(reuseport::probe_source(slot).into(), 0));
        }
        let prog = reuseport::program(key, *slots, live);
        let ip = std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        let picks = |port: u16| reuseport::run(&prog, &reuseport::packet(ip, port)) as usize == slot;
        match key {
            Key::Address => picks(0).then(|| SocketAddr::new(ip, 0)),
            Key::Connection => {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let start = 20_000 + (NEXT.fetch_add(97, std::sync::atomic::Ordering::Relaxed) % 30_000) as u16;
                (0..2000u16).map(|i| start + i).find(|p| picks(*p)).map(|p| SocketAddr::new(ip, p))
            }
        }
    }

    /// Connections waiting in `slot`'s accept queues (every listener's),
    /// for a slot about to lose its worker. 0 for shared listeners.
    pub fn queued(&self, slot: usize) -> u32 {
        self.groups
            .iter()
            .filter_map(|g| match g {
                Group::PerSlot { socks, .. } => socks.get(slot),
                Group::Shared => None,
            })
            .map(|s| accept_queue(s.as_fd()))
            .sum()
    }

    /// Never a program elsewhere: per-slot groups need Linux.
    #[cfg(not(target_os = "linux"))]
    pub fn probe_source(&self, _listener: usize, _slot: usize) -> Option<SocketAddr> {
        None // per-slot groups need Linux
    }
}

/// A socket joining `addr`'s reuseport group.
/// `v6_only`: as the group's first socket (an IPv6 socket joins only a
/// group of the same setting).
fn bind(addr: SocketAddr, v6_only: Option<bool>, backlog: i32) -> std::io::Result<OwnedFd> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if let Some(v6) = v6_only {
        s.set_only_v6(v6)?;
    }
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// The length of a listening socket's accept queue (`TCP_INFO`'s
/// `tcpi_unacked` in the LISTEN state; 0 where it does not say).
#[cfg(target_os = "linux")]
fn accept_queue(fd: BorrowedFd<'_>) -> u32 {
    super::acceptors::probe::queued(fd).unwrap_or(0)
}

#[cfg(not(target_os = "linux"))]
fn accept_queue(_fd: BorrowedFd<'_>) -> u32 {
    0
}
