//! The processes of a worker's process group.
//!
//! Linux has no call listing a group. Two ways, the first when it is exact:
//!
//! * **Tree walk** from the primary's own children, through
//!   `/proc/PID/task/TID/children`: the group's members that are children of
//!   the primary (the worker itself, and orphans re-parented to it) and all
//!   their descendants, keeping those whose `getpgid` is the group. Its cost
//!   grows with the worker's processes and threads, not with the machine's.
//!   It is exact only when the primary is a *child subreaper* (as hotswap's
//!   is): then a member orphaned by a double fork without `setsid` comes
//!   back to it instead of going to init, out of sight. It needs
//!   `CONFIG_PROC_CHILDREN` (absent: the scan is used).
//! * **Scan**: every `/proc` entry, asking `getpgid(pid)` (one syscall, no
//!   file opened per process; `/proc/PID/stat` only if a security module
//!   refuses `getpgid`): always right, cost grows with the machine.
//!
//! If the walk finds no member (the caller is not the group's ancestor, or
//! the group is gone), the scan decides. Either way a process that left the
//! group (`setsid`, `setpgid`: a daemonising grandchild) is not a member: it
//! is not stopped with the worker either.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use nix::unistd::Pid;

use super::procfs::{context, is_denied, parse_int, read_file, vanished};

/// The processes (thread-group ids) of process group `pgid`.
pub fn group_members(pgid: i32) -> io::Result<Vec<i32>> {
    if nix::sys::prctl::get_child_subreaper().unwrap_or(false) && has_children_files() {
        let members = members_in_tree(pgid)?;
        if !members.is_empty() {
            return Ok(members);
        }
    }
    members_by_scan(pgid)
}

/// The tree walk, from the caller's children; exact only if the caller is a
/// child subreaper. Empty without `CONFIG_PROC_CHILDREN`.
fn members_in_tree(pgid: i32) -> io::Result<Vec<i32>> {
    let mut buf = Vec::with_capacity(256);
    let mut todo = Vec::new();
    children_of(std::process::id() as i32, &mut buf, &mut |child| match pgrp_of(child) {
        Ok(g) if g == pgid => todo.push(child),
        _ => {} // another group, or gone
    })?;
    let mut members = Vec::new();
    while let Some(pid) = todo.pop() {
        match pgrp_of(pid) {
            Ok(g) if g == pgid => members.push(pid),
            Ok(_) => {} // left the group; its descendants may not have
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(context(e, format_args!("process group of pid {pid}"))),
        }
        children_of(pid, &mut buf, &mut |child| todo.push(child))?;
    }
    // A process re-parented during the walk may have been listed twice.
    members.sort_unstable();
    members.dedup();
    Ok(members)
}

/// The scan: every process on the machine.
fn members_by_scan(pgid: i32) -> io::Result<Vec<i32>> {
    let mut members = Vec::new();
    let dir = fs::read_dir("/proc").map_err(|e| context(e, "listing /proc"))?;
    for entry in dir {
        let entry = entry.map_err(|e| context(e, "listing /proc"))?;
        let Some(pid) = parse_int(entry.file_name().as_bytes()) else { continue };
        match pgrp_of(pid) {
            Ok(g) if g == pgid => members.push(pid),
            Ok(_) => {}
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(context(e, format_args!("process group of pid {pid}"))),
        }
    }
    Ok(members)
}

/// Calls `each` with the children of every thread of `pid` (a child belongs to
/// the thread that forked it). A vanished process or thread has none.
fn children_of(pid: i32, buf: &mut Vec<u8>, each: &mut dyn FnMut(i32)) -> io::Result<()> {
    let dir_path = format!("/proc/{pid}/task");
    let dir = match fs::read_dir(&dir_path) {
        Ok(dir) => dir,
        Err(e) if vanished(&e) => return Ok(()),
        Err(e) => return Err(context(e, dir_path)),
    };
    for entry in dir {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if vanished(&e) => return Ok(()),
            Err(e) => return Err(context(e, dir_path)),
        };
        let Some(tid) = parse_int::<i32>(entry.file_name().as_bytes()) else { continue };
        match read_file(&format!("{dir_path}/{tid}/children"), buf) {
            Ok(()) => {}
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        }
        buf.split(|b| b.is_ascii_whitespace()).filter_map(parse_int).for_each(&mut *each);
    }
    Ok(())
}

/// Whether the kernel has `CONFIG_PROC_CHILDREN`.
fn has_children_files() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| fs::metadata(format!("/proc/self/task/{}/children", nix::unistd::gettid())).is_ok())
}

fn pgrp_of(pid: i32) -> io::Result<i32> {
    let e = match nix::unistd::getpgid(Some(Pid::from_raw(pid))) {
        Ok(g) => return Ok(g.as_raw()),
        Err(errno) => io::Error::from(errno),
    };
    if !is_denied(&e) {
        return Err(e);
    }
    // An LSM (SELinux `getpgid` permission) may refuse: /proc/PID/stat is world-readable.
    let mut buf = Vec::with_capacity(512);
    read_file(&format!("/proc/{pid}/stat"), &mut buf)?;
    parse_stat_pgrp(&buf)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc/{pid}/stat")))
}

/// Field 5 (pgrp) of a `/proc/PID/stat` line: `PID (COMM) STATE PPID PGRP ...`.
fn parse_stat_pgrp(stat: &[u8]) -> Option<i32> {
    use procfs_core::FromRead;
    procfs_core::process::Stat::from_read(stat).ok().map(|s| s.pgrp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_pgrp_with_odd_comm() {
        // The rest of a real line (a kernel writes every field).
        const REST: &str = "0 -1 4194560 1234 0 0 0 150 25 3 2 20 0 1 0 987654 213000000 51234 \
            18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0";
        let line = |head: &str| format!("{head} {REST}");
        assert_eq!(parse_stat_pgrp(line("123 (a) b) c) S 1 456 456").as_bytes()), Some(456));
        assert_eq!(parse_stat_pgrp(line("123 (sleep) S 1 77 77").as_bytes()), Some(77));
        assert_eq!(parse_stat_pgrp(b"123 (x"), None);
        assert_eq!(parse_stat_pgrp(b"123 (x) S 1"), None);
        assert_eq!(parse_stat_pgrp(b""), None);
    }

    #[test]
    fn own_group_found() {
        let me = nix::unistd::getpgrp().as_raw();
        assert!(group_members(me).unwrap().contains(&(std::process::id() as i32)));
        assert!(members_by_scan(me).unwrap().contains(&(std::process::id() as i32)));
    }
}
