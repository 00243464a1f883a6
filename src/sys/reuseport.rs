//! The classic BPF program that picks, for each new TCP connection, which
//! socket of a `SO_REUSEPORT` group gets it (`SO_ATTACH_REUSEPORT_CBPF`).
//!
//! The kernel runs the program on the connection's first packet (the SYN)
//! and takes its return value as an index into the group's sockets, in the
//! order they joined it: hotswap makes slot k's socket the k-th to join, so
//! the program returns a slot. An index past the group's end makes the
//! kernel fall back to its own hash (`run_bpf_filter` in
//! `net/core/sock_reuseport.c`), which could pick a socket nobody accepts
//! on: the program never returns one.
//!
//! What it hashes: the client's IP address ([`Key::Address`], for
//! `--balance sticky`: a client always reaches the same slot) or the address
//! and source port ([`Key::Connection`], for `--balance slots` while some
//! socket of the group has no worker). The packet's network header is read
//! through `SKF_NET_OFF` (the program sees the TCP payload at offset 0); the
//! IP version is the top nibble of its first byte, so IPv4 clients of a
//! dual-stack `[::]` socket are hashed by their IPv4 address. The hash is
//! MurmurHash3's 32-bit finaliser, in cBPF's 32-bit ALU, so neighbouring
//! addresses (127.0.0.2, .3, ...) spread like random ones.
//!
//! One exception comes first: an IPv4 source in 127.254.0.0/16
//! ([`PROBE_NET`]) goes to the slot its lower 16 bits name, live or not:
//! the primary's probe connections to a starting worker, which must reach
//! its slot before the slot is live (only local processes can use those
//! addresses).
//!
//! Slots without a live worker (crash backoff, a pool shrinking) are left
//! out: the address hashes to slot `h mod n`; if that slot is dead, a second
//! hash picks one of the live slots. Only a dead slot's clients move, and
//! they move back once it is live again.
//!
//! The builder is a pure function of (slots, live set) and is tested by
//! running its output through the interpreter in the tests below.
//!
//! Linux only (`sys/mod.rs`): the group programs are, and libc has the
//! opcodes only there; elsewhere `--balance slots|sticky` is refused when
//! the options are read.

use std::os::fd::{AsRawFd, BorrowedFd};

/// One cBPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Classic BPF's opcodes and `SKF_NET_OFF`, from libc (linux/filter.h,
// linux/bpf_common.h). libc declares the opcodes `u32`; `sock_filter.code`
// is a `u16`, which `stmt` and `jump` narrow to (every opcode fits a byte).
use libc::{
    BPF_A as A, BPF_ABS as ABS, BPF_ALU as ALU, BPF_AND as AND, BPF_B as B, BPF_H as H, BPF_JA as JA, BPF_JEQ as JEQ,
    BPF_JGE as JGE, BPF_JMP as JMP, BPF_K as K, BPF_LD as LD, BPF_MEM as MEM, BPF_MISC as MISC, BPF_MOD as MOD,
    BPF_MUL as MUL, BPF_RET as RET, BPF_RSH as RSH, BPF_ST as ST, BPF_TAX as TAX, BPF_W as W, BPF_X as X,
    BPF_XOR as XOR,
};
/// `SKF_NET_OFF`: offsets from here read the network (IP) header.
const NET: u32 = libc::SKF_NET_OFF as u32;

// libc's `BPF_STMT` and `BPF_JUMP` are not `const` and build a
// `sock_filter`, which has no `PartialEq` or `Debug` without libc's
// `extra_traits`: these two build an [`Insn`], which the tests compare.
const fn stmt(code: u32, k: u32) -> Insn {
    Insn { code: code as u16, jt: 0, jf: 0, k }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code: code as u16, jt, jf, k }
}

/// The upper half of the IPv4 source addresses (127.254.0.0/16) that the
/// program sends to the slot their lower half names: the primary's probes.
pub const PROBE_NET: u32 = 0x7ffe;

/// The source address of a probe for `slot` (see [`PROBE_NET`]).
pub fn probe_source(slot: usize) -> std::net::Ipv4Addr {
    let s = (slot as u32) & 0xffff;
    std::net::Ipv4Addr::from((PROBE_NET << 16) | s)
}

/// What the program hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The client's IP address: every connection of a client reaches the
    /// same slot.
    Address,
    /// The client's address and source port: connections spread.
    Connection,
}

/// `h ^= h >> 16; h *= ..; h ^= h >> 13; h *= ..; h ^= h >> 16` on A.
fn mix(p: &mut Vec<Insn>) {
    let xorshift = |p: &mut Vec<Insn>, n: u32| {
        p.push(stmt(MISC | TAX, 0));
        p.push(stmt(ALU | RSH | K, n));
        p.push(stmt(ALU | XOR | X, 0));
    };
    xorshift(p, 16);
    p.push(stmt(ALU | MUL | K, 0x85eb_ca6b));
    xorshift(p, 13);
    p.push(stmt(ALU | MUL | K, 0xc2b2_ae35));
    xorshift(p, 16);
}

/// A ^= the value `load` leaves in A, then mix; `M[0]` is scratch.
fn fold(p: &mut Vec<Insn>, load: Insn) {
    p.push(stmt(ST, 0));
    p.push(load);
    p.push(stmt(MISC | TAX, 0));
    p.push(stmt(LD | MEM, 0));
    p.push(stmt(ALU | XOR | X, 0));
    mix(p);
}

/// The hash of an IPv4 (`v6` false) or IPv6 packet's source, left in A.
fn hash(key: Key, v6: bool) -> Vec<Insn> {
    let mut p = Vec::new();
    if v6 {
        // The source address: 16 bytes at offset 8 of the IPv6 header.
        p.push(stmt(LD | W | ABS, NET + 8));
        mix(&mut p);
        for off in [12, 16, 20] {
            fold(&mut p, stmt(LD | W | ABS, NET + off));
        }
    } else {
        // The source address: offset 12 of the IPv4 header.
        p.push(stmt(LD | W | ABS, NET + 12));
        mix(&mut p);
    }
    if key == Key::Connection {
        // The TCP source port, right after a header without options or
        // extension headers (what a SYN has in practice; other bytes would
        // only hash differently, never break the choice).
        fold(&mut p, stmt(LD | H | ABS, NET + if v6 { 40 } else { 20 }));
    }
    p
}

/// The program for a group of `slots` sockets (in slot order) whose slot k
/// is served when `live[k]`. The connection hashes to `h mod slots`; a dead
/// slot's connections go to a live slot chosen by a second hash. With no
/// live slot at all every slot counts (the connection waits in its slot's
/// queue, as it would in a shared socket's).
pub fn program(key: Key, slots: usize, live: &[bool]) -> Vec<Insn> {
    assert!((1..=crate::types::MAX_SLOTS).contains(&slots), "{slots} slots");
    let alive: Vec<u32> = (0..slots).filter(|&s| live.get(s).copied().unwrap_or(false)).map(|s| s as u32).collect();
    let dead: Vec<u32> =
        if alive.is_empty() { Vec::new() } else { (0..slots as u32).filter(|s| !alive.contains(s)).collect() };

    let (v4, v6) = (hash(key, false), hash(key, true));
    // The primary's probe connections (`PROBE_NET`): an IPv4 source
    // 127.254.X.Y goes to slot X * 256 + Y, live or not, so that a starting
    // worker is probed on its own slot's socket.
    let mut p = vec![
        stmt(LD | B | ABS, NET),
        stmt(ALU | RSH | K, 4),
        jump(JMP | JEQ | K, 4, 0, 7),
        stmt(LD | W | ABS, NET + 12),
        stmt(ALU | RSH | K, 16),
        jump(JMP | JEQ | K, PROBE_NET, 0, 4),
        stmt(LD | W | ABS, NET + 12),
        stmt(ALU | AND | K, 0xffff),
        jump(JMP | JGE | K, slots as u32, 1, 0),
        stmt(RET | A, 0),
    ];
    // The IP version: the top nibble of the first byte.
    p.push(stmt(LD | B | ABS, NET));
    p.push(stmt(ALU | RSH | K, 4));
    p.push(jump(JMP | JEQ | K, 6, 0, (v6.len() + 1) as u8));
    p.extend(v6);
    p.push(stmt(JMP | JA, v4.len() as u32));
    p.extend(v4);
    // A is the hash: keep it for the second choice.
    p.push(stmt(ST, 1));
    p.push(stmt(ALU | MOD | K, slots as u32));
    // A dead slot jumps to the second choice, which starts after this table
    // and the `ret a` that ends it.
    for (i, s) in dead.iter().enumerate() {
        p.push(jump(JMP | JEQ | K, *s, 0, 1));
        let left = (dead.len() - i - 1) * 2;
        p.push(stmt(JMP | JA, (left + 1) as u32));
    }
    p.push(stmt(RET | A, 0));
    if dead.is_empty() {
        return p;
    }
    // The second choice: another mix of the hash, over the live slots.
    p.push(stmt(LD | MEM, 1));
    p.push(stmt(ALU | XOR | K, 0x9e37_79b9));
    mix(&mut p);
    p.push(stmt(ALU | MOD | K, alive.len() as u32));
    for (j, s) in alive.iter().enumerate().take(alive.len() - 1) {
        p.push(jump(JMP | JEQ | K, j as u32, 0, 1));
        p.push(stmt(RET | K, *s));
    }
    p.push(stmt(RET | K, *alive.last().expect("some slot is live")));
    p
}

/// Attaches `prog` to the reuseport group of `socket` (it belongs to the
/// group, not to the socket: every socket of the group is chosen by it, and
/// it stays when this fd is closed). Replaces the group's program, if any.
pub fn attach(socket: BorrowedFd<'_>, prog: &[Insn]) -> std::io::Result<()> {
    let mut filter: Vec<libc::sock_filter> =
        prog.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    let fprog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: `fprog` points at `filter`, which lives until the call returns;
    // the kernel copies the program and keeps no pointer into it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Removes the group's program: the kernel's own hash of the connection
/// picks the socket again. No program is not an error.
pub fn detach(socket: BorrowedFd<'_>) -> std::io::Result<()> {
    let zero: libc::c_int = 0;
    // SAFETY: a plain int option, read by the kernel during the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DETACH_REUSEPORT_BPF,
            (&zero as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            e => Err(e),
        },
    }
}

/// Runs `prog` as the kernel would on a packet whose network header is
/// `net`: which slot it picks for a connection (the primary's probe
/// connections choose their source address by it; the tests check the
/// programs with it) (only what the program uses: absolute loads past SKF_NET_OFF,
/// scratch memory, ALU, jumps). A load past the end returns 0, as the
/// kernel's does.
pub fn run(prog: &[Insn], net: &[u8]) -> u32 {
    let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0usize;
    let load = |k: u32, n: usize| -> Option<u32> {
        let off = k.wrapping_sub(NET) as usize;
        let b = net.get(off..off + n)?;
        Some(b.iter().fold(0u32, |acc, &v| (acc << 8) | v as u32))
    };
    while pc < prog.len() {
        let i = prog[pc];
        pc += 1;
        match u32::from(i.code) {
            c if c == LD | W | ABS => match load(i.k, 4) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c == LD | H | ABS => match load(i.k, 2) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c == LD | B | ABS => match load(i.k, 1) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c == LD | MEM => a = m[i.k as usize],
            c if c == ST => m[i.k as usize] = a,
            c if c == MISC | TAX => x = a,
            c if c == ALU | RSH | K => a >>= i.k,
            c if c == ALU | XOR | X => a ^= x,
            c if c == ALU | XOR | K => a ^= i.k,
            c if c == ALU | MUL | K => a = a.wrapping_mul(i.k),
            c if c == ALU | AND | K => a &= i.k,
            c if c == ALU | MOD | K => a %= i.k,
            c if c == JMP | JA => pc += i.k as usize,
            c if c == JMP | JEQ | K => pc += if a == i.k { i.jt } else { i.jf } as usize,
            c if c == JMP | JGE | K => pc += if a >= i.k { i.jt } else { i.jf } as usize,
            c if c == RET | A => return a,
            c if c == RET | K => return i.k,
            _ => return u32::MAX, // not one this module emits
        }
    }
    u32::MAX // programs of this module always return
}

/// The network header (and TCP source port) of a SYN from `ip`:`port`.
pub fn packet(ip: std::net::IpAddr, port: u16) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut p = vec![0u8; 40];
            p[0] = 0x45;
            p[12..16].copy_from_slice(&v4.octets());
            p[20..22].copy_from_slice(&port.to_be_bytes());
            p
        }
        std::net::IpAddr::V6(v6) => {
            let mut p = vec![0u8; 60];
            p[0] = 0x60;
            p[8..24].copy_from_slice(&v6.octets());
            p[40..42].copy_from_slice(&port.to_be_bytes());
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::IpAddr;

    #[test]
    fn a_probe_reaches_the_slot_its_address_names_live_or_not() {
        for key in [Key::Address, Key::Connection] {
            let prog = program(key, 4, &[true, false, true, true]);
            for slot in 0..4 {
                let ip = IpAddr::V4(probe_source(slot));
                assert_eq!(run(&prog, &packet(ip, 40000)), slot as u32, "{key:?} slot {slot}");
            }
            // Past the slots: hashed as any client, to a live slot.
            let beyond = run(&prog, &packet(IpAddr::V4(probe_source(9)), 40000));
            assert!(beyond < 4 && beyond != 1, "{beyond}");
            // Any other client never reaches the dead slot.
            assert!(spread(&prog, &loopback_clients()).keys().all(|s| *s != 1));
        }
    }

    fn spread(prog: &[Insn], clients: &[IpAddr]) -> HashMap<u32, usize> {
        let mut count = HashMap::new();
        for ip in clients {
            *count.entry(run(prog, &packet(*ip, 40000))).or_default() += 1;
        }
        count
    }

    fn loopback_clients() -> Vec<IpAddr> {
        (2..=30).map(|i| IpAddr::from([127, 0, 0, i])).collect()
    }

    /// A small deterministic generator (no crate for a test's randomness).
    fn random_v4(n: usize) -> Vec<IpAddr> {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                IpAddr::from((s as u32).to_be_bytes())
            })
            .collect()
    }

    #[test]
    fn neighbouring_loopback_addresses_reach_every_slot() {
        for slots in [2, 3, 8] {
            let prog = program(Key::Address, slots, &vec![true; slots]);
            let count = spread(&prog, &loopback_clients());
            assert_eq!(count.len(), slots, "29 clients over {slots} slots: {count:?}");
            // 29 clients: no slot gets more than twice its share.
            let most = *count.values().max().unwrap();
            assert!(most <= 2 * 29 / slots + 1, "{slots} slots: {count:?}");
        }
    }

    #[test]
    fn random_addresses_spread_evenly() {
        let clients = random_v4(8000);
        for slots in [2, 3, 8] {
            let prog = program(Key::Address, slots, &vec![true; slots]);
            let count = spread(&prog, &clients);
            let share = 8000.0 / slots as f64;
            for (slot, n) in &count {
                assert!((*n as f64 - share).abs() < share * 0.1, "slot {slot} of {slots}: {n} of 8000: {count:?}");
            }
        }
    }

    #[test]
    fn ipv6_addresses_spread_and_every_byte_counts() {
        let clients: Vec<IpAddr> = (0..3000u32)
            .map(|i| {
                let mut o = [0u8; 16];
                o[0] = 0x20;
                o[1] = 0x01;
                // Only the low bytes differ, as for a /64's hosts.
                o[12..16].copy_from_slice(&i.to_be_bytes());
                IpAddr::from(o)
            })
            .collect();
        let prog = program(Key::Address, 3, &[true; 3]);
        let count = spread(&prog, &clients);
        assert_eq!(count.len(), 3);
        assert!(count.values().all(|&n| n > 900), "{count:?}");
    }

    #[test]
    fn the_same_client_always_gets_the_same_slot_whatever_its_port() {
        let prog = program(Key::Address, 8, &[true; 8]);
        for ip in loopback_clients() {
            let slot = run(&prog, &packet(ip, 1));
            for port in [2, 1000, 65535] {
                assert_eq!(run(&prog, &packet(ip, port)), slot);
            }
        }
        // Keyed by connection, one client's connections spread.
        let prog = program(Key::Connection, 4, &[true; 4]);
        let ip = IpAddr::from([127, 0, 0, 2]);
        let slots: std::collections::HashSet<u32> = (1000..1100).map(|p| run(&prog, &packet(ip, p))).collect();
        assert_eq!(slots.len(), 4);
    }

    #[test]
    fn a_dead_slot_sends_only_its_own_clients_elsewhere() {
        let clients = random_v4(3000);
        let all = program(Key::Address, 3, &[true; 3]);
        let without_1 = program(Key::Address, 3, &[true, false, true]);
        let mut moved = 0;
        for ip in &clients {
            let (before, after) = (run(&all, &packet(*ip, 1)), run(&without_1, &packet(*ip, 1)));
            assert_ne!(after, 1, "{ip} sent to the dead slot");
            if before != 1 {
                assert_eq!(before, after, "{ip} moved though its slot is live");
            } else {
                moved += 1;
            }
        }
        // The dead slot's clients spread over both live slots.
        let second: HashMap<u32, usize> = spread(&without_1, &clients);
        assert!(second[&0] > 1100 && second[&2] > 1100, "{second:?}");
        assert!(moved > 800, "{moved}");
    }

    #[test]
    fn every_answer_is_a_live_slot_within_the_group() {
        for slots in [1, 2, 5, 8, 64] {
            for pattern in 0..8u32 {
                let live: Vec<bool> = (0..slots).map(|s| !(s as u32 * 7 + pattern).is_multiple_of(3)).collect();
                let prog = program(Key::Connection, slots, &live);
                assert!(prog.len() <= 4096);
                for ip in random_v4(200) {
                    let s = run(&prog, &packet(ip, 7)) as usize;
                    assert!(s < slots);
                    assert!(live[s] || !live.contains(&true), "{slots} slots, live {live:?}: got {s}");
                }
            }
        }
        let most = program(Key::Address, crate::types::MAX_SLOTS, &vec![false; crate::types::MAX_SLOTS]);
        assert!(most.len() < 4096);
        let half: Vec<bool> = (0..crate::types::MAX_SLOTS).map(|s| s % 2 == 0).collect();
        assert!(program(Key::Connection, crate::types::MAX_SLOTS, &half).len() <= 4096);
    }

    #[test]
    fn a_short_packet_gets_slot_zero_which_exists() {
        let prog = program(Key::Address, 3, &[true; 3]);
        assert_eq!(run(&prog, &[0x45]), 0);
    }

    #[test]
    fn the_kernel_takes_the_program() {
        // A real group of two sockets on loopback, and the largest program.
        use socket2::{Domain, Socket, Type};
        let a = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        a.set_reuse_port(true).unwrap();
        a.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        a.listen(4).unwrap();
        let half: Vec<bool> = (0..crate::types::MAX_SLOTS).map(|s| s % 2 == 0).collect();
        use std::os::fd::AsFd;
        attach(a.as_fd(), &program(Key::Connection, crate::types::MAX_SLOTS, &half)).unwrap();
        attach(a.as_fd(), &program(Key::Address, 1, &[true])).unwrap();
        detach(a.as_fd()).unwrap();
        detach(a.as_fd()).unwrap();
    }
}
