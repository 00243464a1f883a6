//! `hotswap ls`: every primary of this user, by name (the registry of
//! names, see [`crate::options::name`]), and the unnamed one at the default
//! control socket if it runs, each asked for its status; for root also
//! the system's `hotswap@NAME` units, found by their runtime directories
//! (`/run/hotswap/NAME/control.sock`, as `contrib/systemd/hotswap@.service`
//! sets them up), not through `systemctl`: a container may have no
//! systemctl, and the control socket is what `ls` asks either way. A unit
//! that is not running has no runtime directory (systemd removes it), so
//! it is not listed: `systemctl list-units 'hotswap@*'` shows those.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::options::name;
use crate::types::wire::Status;
use crate::types::WorkerState;

/// One line of `hotswap ls`.
#[derive(Debug, Serialize)]
pub struct App {
    /// `-` for the unnamed primary at the default control socket.
    pub name: String,
    /// Whether a primary answers; a stopped one is listed when `hotswap
    /// start` left its record (and log) behind.
    pub online: bool,
    pub pid: Option<u32>,
    pub generation: Option<u64>,
    pub workers_ready: u32,
    pub workers: u32,
    /// The workers' CPU use (their process groups), percent of one core.
    pub cpu_percent: f64,
    /// Resident memory of the primary and its workers' process groups.
    pub memory_bytes: u64,
    pub uptime_secs: Option<f64>,
    pub reloading: bool,
    /// The last reload: whether it succeeded, when it finished (Unix
    /// seconds), what it said.
    pub last_reload: Option<crate::types::wire::ReloadOutcome>,
    pub control: PathBuf,
    /// `start`'s log file, when there is one.
    pub log: Option<PathBuf>,
}

impl App {
    fn from_status(name: String, control: PathBuf, log: Option<PathBuf>, st: Option<Status>) -> App {
        let Some(st) = st else {
            return App {
                name,
                online: false,
                pid: None,
                generation: None,
                workers_ready: 0,
                workers: 0,
                cpu_percent: 0.0,
                memory_bytes: 0,
                uptime_secs: None,
                reloading: false,
                last_reload: None,
                control,
                log,
            };
        };
        App {
            name,
            online: true,
            pid: Some(st.pid),
            generation: Some(st.generation),
            workers_ready: st.workers.iter().filter(|w| w.state == WorkerState::Ready).count() as u32,
            workers: st.target_workers,
            cpu_percent: st.workers.iter().map(|w| w.cpu_percent).sum(),
            memory_bytes: st.workers.iter().map(|w| w.rss_bytes).sum::<u64>() + resident(st.pid),
            uptime_secs: Some(st.uptime_secs),
            reloading: st.reloading,
            last_reload: st.last_reload,
            control,
            log,
        }
    }
}

/// Resident memory of one process, from `/proc/PID/statm` (0 elsewhere).
fn resident(pid: u32) -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * page)
}

/// How long `ls` waits between its two status requests to each running
/// primary: a CPU percent is a rate, and the primary measures it over the
/// window since its previous sample at least this old
/// ([`crate::io::usage::MIN_WINDOW`]). Asking twice costs `ls` a second;
/// the alternative, each primary sampling its workers all the time for a
/// rate always at hand, would cost every primary a `/proc` pass every few
/// seconds for a figure rarely read. Without it, the first `ls` after a
/// while showed the average over the workers' whole life (0.0 for a worker
/// busy now after a long idle, or the reverse).
/// (With a tenth of a second to spare: the primary samples a moment after
/// each request arrives, and a shorter gap would fall back to an older
/// sample.)
const CPU_WINDOW: std::time::Duration =
    crate::io::usage::MIN_WINDOW.saturating_add(std::time::Duration::from_millis(100));

/// Every app: the named ones, then the unnamed primary if it answers.
/// Each running one is asked twice, 1.1 s apart, for a CPU
/// percent over that window.
pub fn list() -> Vec<App> {
    let first = list_once();
    if first.iter().any(|a| a.online) {
        std::thread::sleep(CPU_WINDOW);
        return list_once();
    }
    first
}

fn list_once() -> Vec<App> {
    let mut apps: Vec<App> = name::listed()
        .into_iter()
        .map(|n| {
            let log = Some(n.log()).filter(|l| l.exists());
            let st = crate::daemon::status(&n.socket());
            App::from_status(n.to_string(), n.socket(), log, st)
        })
        .collect();
    if nix::unistd::geteuid().is_root() {
        for (unit, control) in units_in(std::path::Path::new(UNITS_DIR)) {
            if !apps.iter().any(|a| a.control == control) {
                let st = crate::daemon::status(&control);
                apps.push(App::from_status(unit, control, None, st));
            }
        }
    }
    let default = crate::options::default_control_path();
    if !apps.iter().any(|a| a.control == default) {
        if let Some(st) = crate::daemon::status(&default) {
            apps.push(App::from_status("-".into(), default, None, Some(st)));
        }
    }
    apps
}

/// Where the packaged `hotswap@.service` puts each instance's runtime
/// directory (`RuntimeDirectory=hotswap/%i`).
const UNITS_DIR: &str = "/run/hotswap";

/// The `hotswap@NAME` units with a control socket under `dir`
/// (`dir/NAME/control.sock`), by name.
fn units_in(dir: &std::path::Path) -> Vec<(String, PathBuf)> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut units: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let control = e.path().join("control.sock");
            let is_socket = std::fs::symlink_metadata(&control).is_ok_and(|m| m.file_type().is_socket());
            is_socket.then(|| (format!("hotswap@{}", e.file_name().to_string_lossy()), control))
        })
        .collect();
    units.sort();
    units
}

/// `hotswap ls [--json]`.
pub fn ls(json: bool) -> anyhow::Result<ExitCode> {
    let apps = list();
    if json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&apps, crate::types::unix_now()));
    Ok(ExitCode::SUCCESS)
}

/// The table, `now` in Unix seconds (for the last reload's age).
pub fn render(apps: &[App], now: u64) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "{:<16} {:>8} {:<9} {:>5} {:>7} {:>6} {:>8} {:>8}  LAST RELOAD\n",
        "NAME", "PID", "STATUS", "GEN", "WORKERS", "CPU%", "MEM", "UPTIME"
    );
    if apps.is_empty() {
        s += "(no primary of this user runs; `hotswap start` or `hotswap run --name APP` starts one)\n";
    }
    for a in apps {
        let status = match (a.online, a.reloading) {
            (false, _) => "stopped",
            (true, true) => "reloading",
            (true, false) if a.workers_ready < a.workers => "degraded",
            (true, false) => "online",
        };
        let dash = || "-".to_string();
        let reload = match &a.last_reload {
            None => dash(),
            Some(r) => format!(
                "{} {} ago",
                if r.ok { "ok" } else { "FAILED" },
                whole_secs(now.saturating_sub(r.finished_at) as f64)
            ),
        };
        let _ = writeln!(
            s,
            "{:<16} {:>8} {:<9} {:>5} {:>7} {:>6} {:>8} {:>8}  {}",
            a.name,
            a.pid.map_or_else(dash, |p| p.to_string()),
            status,
            a.generation.map_or_else(dash, |g| g.to_string()),
            if a.online { format!("{}/{}", a.workers_ready, a.workers) } else { dash() },
            if a.online { format!("{:.1}", a.cpu_percent) } else { dash() },
            if a.online { crate::types::wire::fmt_bytes(a.memory_bytes) } else { dash() },
            a.uptime_secs.map_or_else(dash, whole_secs),
            reload
        );
    }
    s
}

/// A duration in whole seconds, as the table's clock ticks: `7s`, `2m05s`,
/// `3h12m` (the reload's end is known to the second).
fn whole_secs(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{s}s"),
        _ => crate::types::wire::fmt_secs(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_ages_in_whole_seconds() {
        let app = App {
            name: "web".into(),
            online: true,
            pid: Some(42),
            generation: Some(3),
            workers_ready: 2,
            workers: 2,
            cpu_percent: 12.34,
            memory_bytes: 80 * 1024 * 1024,
            uptime_secs: Some(7.6),
            reloading: false,
            last_reload: Some(crate::types::wire::ReloadOutcome {
                generation: 3,
                ok: true,
                message: String::new(),
                duration_ms: 10,
                killed: 0,
                finished_at: 1000,
            }),
            control: PathBuf::from("/x"),
            log: None,
        };
        let line = render(std::slice::from_ref(&app), 1000).lines().nth(1).unwrap().to_string();
        assert!(line.ends_with("  7s  ok 0s ago"), "{line:?}");
        assert!(line.contains(" 12.3 "), "{line:?}");
        let later = render(&[app], 1125).lines().nth(1).unwrap().to_string();
        assert!(later.ends_with("ok 2m05s ago"), "{later:?}");
    }

    #[test]
    fn units_are_the_runtime_directories_with_a_control_socket() {
        let dir = std::env::temp_dir().join(format!("hotswap-units-{}", std::process::id()));
        for d in ["web", "api", "empty", "file"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let _web = std::os::unix::net::UnixListener::bind(dir.join("web/control.sock")).unwrap();
        let _api = std::os::unix::net::UnixListener::bind(dir.join("api/control.sock")).unwrap();
        std::fs::write(dir.join("file/control.sock"), "").unwrap();
        let units = units_in(&dir);
        assert_eq!(
            units,
            vec![
                ("hotswap@api".to_string(), dir.join("api/control.sock")),
                ("hotswap@web".to_string(), dir.join("web/control.sock")),
            ]
        );
        assert!(units_in(&dir.join("nothing")).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
