//! What a worker's process group uses: resident memory and CPU time, read
//! from `/proc`.
//!
//! A worker is a process group (hotswap starts each in its own), and what
//! it costs is the sum over every process in it: a shell wrapper, a
//! pre-fork server's children, a Node app's helpers. The kernel has no call
//! that lists a group's members, so [`scan`] reads `/proc/PID/stat` of
//! every process once and adds up those whose group is asked for: one pass
//! for all workers. Nothing here runs unless someone asks (a status, a
//! metrics scrape, the `--max-memory` check).
//!
//! A process that left its worker's group (a daemon that called `setsid`,
//! a child a server put in a group of its own) still counts for the worker
//! it descends from: the walk down the primary's process tree carries each
//! worker's group to every process under it. (Workers share the unit's
//! cgroup under systemd, so a cgroup would not tell them apart.) An orphan
//! that the primary adopted as subreaper counts by its group.
//!
//! CPU time is `utime + stime` of each live process plus `cutime + cstime`
//! (what its children that it reaped used), so a child that exits and is
//! reaped by its parent in the group does not make the total go down.

use std::collections::HashMap;

use procfs_core::process::Stat;
use procfs_core::FromRead;

/// One process's figures, from its `/proc/PID/stat` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub pgid: i32,
    /// Resident pages.
    pub rss_pages: u64,
    /// CPU time in clock ticks: its own and its reaped children's.
    pub cpu_ticks: u64,
}

/// What a process group uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupUsage {
    pub rss_bytes: u64,
    /// CPU time used so far, in seconds (see the module's note on children).
    pub cpu_seconds: f64,
    /// How many live processes the group has.
    pub processes: u32,
}

/// Parses one `/proc/PID/stat` line (with `procfs-core`: the command name
/// in parentheses may itself hold spaces and parentheses).
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let s = Stat::from_read(line.as_bytes()).ok()?;
    let children = s.cutime.max(0) as u64 + s.cstime.max(0) as u64;
    Some(ProcStat { pid: s.pid, pgid: s.pgrp, rss_pages: s.rss, cpu_ticks: s.utime + s.stime + children })
}

/// Adds up the processes of each group in `pgids`.
pub fn sum_by_group(
    stats: impl IntoIterator<Item = ProcStat>,
    pgids: &[i32],
    page: u64,
    hz: u64,
) -> HashMap<i32, GroupUsage> {
    let mut out: HashMap<i32, (u64, u64, u32)> = pgids.iter().map(|g| (*g, (0, 0, 0))).collect();
    for s in stats {
        if let Some(t) = out.get_mut(&s.pgid) {
            t.0 += s.rss_pages;
            t.1 += s.cpu_ticks;
            t.2 += 1;
        }
    }
    let hz = hz.max(1) as f64;
    out.into_iter()
        .map(|(g, (pages, ticks, n))| {
            (g, GroupUsage { rss_bytes: pages * page, cpu_seconds: ticks as f64 / hz, processes: n })
        })
        .collect()
}

/// Reads `/proc` and returns the usage of each group in `pgids` (a group
/// with no live process reads as zero). Processes that exit while it reads
/// are skipped.
///
/// Only this process's descendants are read, found through
/// `/proc/PID/task/TID/children`: the workers are the primary's children,
/// their processes its descendants, and orphans come back to it (it is a
/// child subreaper). So the cost follows the size of the worker trees, not
/// of the machine. Where the kernel has no `children` file, every process
/// on the machine is read instead.
pub fn scan(pgids: &[i32]) -> HashMap<i32, GroupUsage> {
    let page = sysconf(libc::_SC_PAGESIZE, 4096);
    let hz = sysconf(libc::_SC_CLK_TCK, 100);
    if pgids.is_empty() {
        return HashMap::new();
    }
    let pids: Vec<(i32, Option<i32>)> = if std::path::Path::new("/proc/thread-self/children").exists() {
        descendants(std::process::id() as i32, pgids)
    } else {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
            .map(|pid| (pid, None))
            .collect()
    };
    let stats = pids.iter().filter_map(|&(pid, worker)| {
        let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
        // Under a worker's tree: that worker's, whatever its own group.
        Some(ProcStat { pgid: worker.unwrap_or(stat.pgid), ..stat })
    });
    sum_by_group(stats, pgids, page, hz)
}

/// What the calling process itself uses, from `/proc/self` (the
/// primary's `process_*` metrics).
pub fn own_usage() -> Option<crate::types::counters::ProcessUsage> {
    let stat = Stat::from_file("/proc/self/stat").ok()?;
    let (page, hz) = (sysconf(libc::_SC_PAGESIZE, 4096), sysconf(libc::_SC_CLK_TCK, 100).max(1) as f64);
    // Boot time, to turn the start (ticks since boot) into Unix time.
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
    let max_fds =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft);
    Some(crate::types::counters::ProcessUsage {
        rss_bytes: stat.rss * page,
        cpu_seconds: (stat.utime + stat.stime) as f64 / hz,
        // (The listing itself holds one fd open while it counts.)
        open_fds: open_fds.saturating_sub(1),
        max_fds,
        start_time_seconds: btime as f64 + stat.starttime as f64 / hz,
    })
}

/// Bounds the walk, whatever the process tree looks like.
const MAX_DESCENDANTS: usize = 65_536;

/// Every process under `root` (children of each of its threads, then
/// theirs), as the kernel lists them now, each with the worker it descends
/// from: the nearest ancestor (or itself) that leads one of `workers`'
/// groups.
fn descendants(root: i32, workers: &[i32]) -> Vec<(i32, Option<i32>)> {
    let mut out = Vec::new();
    let mut todo = vec![(root, None)];
    while let Some((pid, worker)) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(list) = std::fs::read_to_string(task.path().join("children")) else { continue };
            for child in list.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                if out.len() < MAX_DESCENDANTS {
                    let worker = worker.or(workers.contains(&child).then_some(child));
                    out.push((child, worker));
                    todo.push((child, worker));
                }
            }
        }
    }
    out
}

fn sysconf(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
        v as u64
    } else {
        fallback
    }
}

/// CPU percent of one core over a window, from two readings of a group's
/// CPU seconds. A total that went down (a process left the group without
/// being reaped inside it) counts as no use.
pub fn cpu_percent(before: f64, after: f64, window_secs: f64) -> f64 {
    if window_secs <= 0.0 {
        return 0.0;
    }
    ((after - before).max(0.0) / window_secs * 100.0 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    // A real line of a python3 process (fields beyond 24 trimmed a little).
    const LINE: &str = "4242 (python3) S 4200 4242 4242 0 -1 4194560 1234 0 0 0 150 25 3 2 20 0 1 0 \
        987654 213000000 51234 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn a_stat_line_gives_group_rss_and_cpu() {
        let s = parse_stat(LINE).unwrap();
        assert_eq!(s, ProcStat { pid: 4242, pgid: 4242, rss_pages: 51234, cpu_ticks: 150 + 25 + 3 + 2 });
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = LINE.replace("(python3)", "(a (b) c))");
        let s = parse_stat(&line).unwrap();
        assert_eq!((s.pid, s.pgid, s.rss_pages), (4242, 4242, 51234));
    }

    #[test]
    fn garbage_is_no_stat() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x) S 1"), None);
        assert_eq!(parse_stat("x (y) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23"), None);
    }

    #[test]
    fn groups_add_up_their_members_only() {
        let p = |pid, pgid, rss, cpu| ProcStat { pid, pgid, rss_pages: rss, cpu_ticks: cpu };
        let stats = vec![p(10, 10, 100, 50), p(11, 10, 20, 150), p(12, 12, 7, 7), p(13, 99, 1000, 1000)];
        let m = sum_by_group(stats, &[10, 12, 14], 4096, 100);
        assert_eq!(m[&10], GroupUsage { rss_bytes: 120 * 4096, cpu_seconds: 2.0, processes: 2 });
        assert_eq!(m[&12].processes, 1);
        assert_eq!(m[&14], GroupUsage::default(), "a group with no process reads as zero");
        assert!(!m.contains_key(&99), "groups not asked for are not reported");
    }

    #[test]
    fn cpu_percent_over_a_window() {
        assert_eq!(cpu_percent(1.0, 2.0, 1.0), 100.0);
        assert_eq!(cpu_percent(1.0, 1.5, 2.0), 25.0);
        assert_eq!(cpu_percent(3.0, 1.0, 2.0), 0.0, "a total that went down is no use");
        assert_eq!(cpu_percent(1.0, 2.0, 0.0), 0.0);
    }

    #[test]
    fn a_child_in_its_own_group_is_found_among_the_descendants() {
        let mut child = std::process::Command::new("sleep").arg("5").process_group(0).spawn().unwrap();
        let pgid = child.id() as i32;
        assert!(descendants(std::process::id() as i32, &[]).contains(&(pgid, None)));
        // Until it has exec'ed, its RSS may read as zero.
        let mut m = scan(&[pgid]);
        for _ in 0..100 {
            if m[&pgid].rss_bytes > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            m = scan(&[pgid]);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(m[&pgid].processes == 1 && m[&pgid].rss_bytes > 0, "{:?}", m[&pgid]);
    }

    #[test]
    fn a_process_that_left_the_workers_group_still_counts_for_the_worker() {
        // A "worker" whose child calls setsid (a daemon): a new session and
        // group, still under the worker in the process tree.
        let mut worker =
            std::process::Command::new("sh").args(["-c", "setsid sleep 5 & wait"]).process_group(0).spawn().unwrap();
        let pgid = worker.id() as i32;
        let stat = |p: i32| parse_stat(&std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?);
        // The child, once it has its own group (after setsid).
        let daemon = || {
            descendants(std::process::id() as i32, &[pgid])
                .into_iter()
                .filter(|(p, w)| *p != pgid && *w == Some(pgid))
                .find_map(|(p, _)| stat(p).filter(|s| s.pgid != pgid))
        };
        let mut found = daemon();
        for _ in 0..250 {
            if found.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            found = daemon();
        }
        let m = scan(&[pgid]);
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        if let Some(d) = found {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(d.pgid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = worker.wait();
        found.expect("the setsid child under the worker, in a group of its own");
        assert_eq!(m[&pgid].processes, 2, "the worker and its setsid child: {:?}", m[&pgid]);
    }
}
