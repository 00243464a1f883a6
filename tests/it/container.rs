//! hotswap as a container's entrypoint: PID 1 of its own PID namespace
//! (`unshare --pid --fork --mount-proc`, as `docker run` and a Kubernetes
//! pod start it), with real workers serving on 127.0.0.1 (the network
//! namespace is shared with the test). PID 1 is every orphan's parent in
//! its namespace and gets only the signals it has a handler for; the tests
//! check that orphans are reaped, that SIGTERM drains, and the exit status.
//! Also the orphans of a primary that is not PID 1 (it is a child
//! subreaper), and a ConfigMap volume's update (the kubelet's symlink swap)
//! seen by `--watch`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// `unshare` as a container runtime would start hotswap; `--kill-child`
/// takes the namespace down if the test kills the wrapper.
const PID1: [&str; 5] = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

/// Whether a PID namespace can be made here; outside CI a test without it
/// prints why and passes, under `CI=true` it fails.
fn pid_namespaces_work() -> bool {
    let out = Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).output();
    let why = match out {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!("`unshare --pid --fork --mount-proc true` failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("cannot run unshare (util-linux): {e}"),
    };
    assert!(std::env::var("CI").as_deref() != Ok("true"), "PID namespace test impossible under CI: {why}");
    eprintln!("SKIPPED: {why}");
    false
}

/// One process, as seen from the test's (the parent) namespace.
#[derive(Debug)]
struct Proc {
    pid: i32,
    /// Its pid inside its own (innermost) namespace.
    ns_pid: i32,
    ppid: i32,
    state: char,
    name: String,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
    let ns_pid = field("NSpid:")?.split_whitespace().last()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let mut rest = rest.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let name = head.split_once('(')?.1.to_string();
    Some(Proc { pid, ns_pid, ppid, state, name })
}

/// Every process of the PID namespace that `member` is in.
fn namespace_processes(member: i32) -> Vec<Proc> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{member}/ns/pid")) else { return vec![] };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns))
        .filter_map(read_proc)
        .collect()
}

/// The pid (in the test's namespace) of hotswap, the wrapper's one child.
fn pid1_of(p: &Primary) -> i32 {
    let wrapper = p.pid();
    let mut found = None;
    wait_until(Duration::from_secs(10), "unshare's child (hotswap as PID 1)", || {
        found = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
        found.is_some()
    });
    let pid = found.unwrap();
    let me = read_proc(pid).expect("hotswap's /proc entry");
    assert_eq!((me.ns_pid, me.name.as_str()), (1, "hotswap"), "{me:?}");
    pid
}

/// No entry in /proc at all: exited and reaped (a zombie is not gone here,
/// as its parent, hotswap, must reap it).
fn reaped(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// A worker that leaves an orphan behind at start (a `sleep` whose parent,
/// a subshell, exits at once), then serves as the Rust example worker.
fn orphaning_worker(dir: &TempDir) -> Vec<String> {
    let start = dir.path("orphaning-worker.sh");
    script(&start, &format!("(sleep 3 &) ; exec {}", rust_worker()[0]));
    vec![start.display().to_string()]
}

/// Orphans (`sleep`s whose parent is hotswap, and which hotswap did not
/// start) in the namespace of `pid1`, by their pid in the test's namespace.
fn adopted_sleeps(pid1: i32) -> Vec<i32> {
    namespace_processes(pid1).into_iter().filter(|p| p.ppid == pid1 && p.name == "sleep").map(|p| p.pid).collect()
}

#[test]
fn as_pid_1_it_reaps_orphans_and_drains_on_sigterm() {
    if !pid_namespaces_work() {
        return;
    }
    let dir = TempDir::new("pid1");
    let mut p = Primary::builder(orphaning_worker(&dir))
        .wrap(&PID1)
        // Its runtime directory is named for its pid, 1 here: one per test.
        .env("TMPDIR", dir.0.display().to_string())
        .env("EXAMPLE_RESPONSE_DELAY_MS", "300")
        .start();
    let pid1 = pid1_of(&p);
    let target = Target::Tcp(p.addr());

    // Orphans of the workers (and of the reload's new workers) come to PID 1.
    let load = Load::start(target.clone(), 3, 2);
    load.wait_for_requests(20);
    p.reload();
    // And the orphans of a process that entered the namespace from outside
    // (`docker exec`, `kubectl exec`): its parent is not in the namespace.
    let exec = Command::new("nsenter")
        .args(["-t", &pid1.to_string(), "--pid", "--mount", "--", "sh", "-c", "sleep 2 >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    assert!(exec.status.success(), "nsenter: {}", String::from_utf8_lossy(&exec.stderr));
    let exec_orphan: i32 = String::from_utf8_lossy(&exec.stdout).trim().parse().unwrap();
    let orphans = adopted_sleeps(pid1);
    // 2 workers of generation 1 and 2 of generation 2 (those of generation 1
    // may have gone with their workers' process groups), and the exec's.
    assert!(orphans.len() >= 3, "orphans adopted by hotswap: {orphans:?} of {:#?}", namespace_processes(pid1));
    assert!(
        namespace_processes(pid1).iter().any(|o| o.ns_pid == exec_orphan && o.ppid == pid1),
        "the exec'd shell's orphan (pid {exec_orphan} in the namespace) is hotswap's"
    );
    load.wait_for_requests(20);
    for o in &orphans {
        wait_until(Duration::from_secs(10), format_args!("orphan {o} to exit and be reaped"), || reaped(*o));
    }
    let zombies: Vec<_> = namespace_processes(pid1).into_iter().filter(|p| p.state == 'Z').collect();
    assert!(zombies.is_empty(), "zombies left in the namespace: {zombies:?}");

    // SIGTERM from outside (as `docker stop` or the kubelet sends it):
    // handled, since hotswap has a handler; the requests already sent are
    // answered, and hotswap exits 0 (unshare passes its status on).
    load.wait_for_requests(20);
    let workers: Vec<i32> = namespace_processes(pid1).into_iter().filter(|w| w.ppid == pid1).map(|w| w.pid).collect();
    let term = Instant::now();
    unsafe { libc::kill(pid1, libc::SIGTERM) };
    let code = p.wait_exit(Duration::from_secs(15));
    let records = load.finish();
    assert_eq!(code, Some(0), "exit status of hotswap as PID 1 after SIGTERM; log:\n{}", p.log_text());
    let before: Vec<_> = records.iter().filter(|r| r.sent < term).cloned().collect();
    assert_no_failures(&before, "requests sent before SIGTERM to PID 1");
    // With 300 ms per request, some were in flight when SIGTERM came.
    let in_flight = before.iter().filter(|r| term.duration_since(r.sent) < Duration::from_millis(250)).count();
    assert!(in_flight > 0, "no request was in flight at SIGTERM");
    for w in workers {
        assert!(process_gone(w), "process {w} outlived hotswap");
    }
}

#[test]
fn as_pid_1_a_second_sigterm_forces_the_stop_and_exits_1() {
    if !pid_namespaces_work() {
        return;
    }
    let dir = TempDir::new("pid1-forced");
    let mut p = Primary::builder(probe())
        .wrap(&PID1)
        .env("TMPDIR", dir.0.display().to_string())
        .probe_dir(&dir)
        .env("PROBE_IGNORE_SHUTDOWN", "1")
        .start();
    let pid1 = pid1_of(&p);
    unsafe { libc::kill(pid1, libc::SIGTERM) };
    wait_until(Duration::from_secs(5), "hotswap to be stopping", || p.status()["stopping"] == true);
    unsafe { libc::kill(pid1, libc::SIGTERM) };
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1), "log:\n{}", p.log_text());
}

/// Not PID 1: orphans still come to the primary (a child subreaper), not to
/// whatever init the machine has, and it reaps them.
#[test]
fn the_primary_adopts_and_reaps_its_workers_orphans() {
    let dir = TempDir::new("subreaper");
    let start = dir.path("start.sh");
    script(&start, &format!("(sleep 1 & echo $! > {}/orphan.$$) ; exec {}", dir.0.display(), rust_worker()[0]));
    let p = Primary::builder(vec![start.display().to_string()]).workers(1).start();
    let worker = p.worker_pids()[0];
    let orphan: i32 = std::fs::read_to_string(dir.path(&format!("orphan.{worker}"))).unwrap().trim().parse().unwrap();
    if let Some(o) = read_proc(orphan) {
        assert_eq!(o.ppid, p.pid(), "the orphan's parent is the primary: {o:?}");
    }
    wait_until(Duration::from_secs(5), format_args!("orphan {orphan} to exit and be reaped"), || reaped(orphan));
}

/// A directory updated the way the kubelet updates a ConfigMap or Secret
/// volume (its `AtomicWriter`): the files live in a timestamped directory,
/// `..data` is a symlink to it, and each key is a symlink `KEY ->
/// ..data/KEY`. An update writes a new timestamped directory, points a new
/// symlink `..data_tmp` at it, renames that over `..data` (the one atomic
/// step) and removes the old directory. No file a reader opens by its key
/// path is ever written in place.
struct ConfigMapVolume {
    dir: std::path::PathBuf,
    version: u32,
}

impl ConfigMapVolume {
    fn new(dir: std::path::PathBuf, files: &[(&str, &str)]) -> ConfigMapVolume {
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = ConfigMapVolume { dir, version: 0 };
        v.update(files);
        v
    }

    fn update(&mut self, files: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        self.version += 1;
        let stamp = format!("..2026_11_29_09_30_{:02}.{}", self.version, 100_000 + self.version);
        let ts = self.dir.join(&stamp);
        std::fs::create_dir(&ts).unwrap();
        for (name, text) in files {
            std::fs::write(ts.join(name), text).unwrap();
        }
        symlink(&stamp, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let key = self.dir.join(name);
            if std::fs::symlink_metadata(&key).is_err() {
                symlink(Path::new("..data").join(name), &key).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

/// A worker that logs the config it read at start, then serves.
fn config_reading_worker(dir: &TempDir, config: &Path) -> Vec<String> {
    let start = dir.path("config-worker.sh");
    script(&start, &format!("echo \"config=$(cat {})\"; exec {}", config.display(), rust_worker()[0]));
    vec![start.display().to_string()]
}

/// Each update of the volume (`..data` swapped) gives one rolling reload,
/// whose workers read the new config; the load sees no failed request.
fn configmap_update_reloads(watch: impl Fn(&Path) -> std::path::PathBuf) {
    let dir = TempDir::new("configmap");
    let mut volume = ConfigMapVolume::new(dir.path("etc-app"), &[("config.json", "v1"), ("other", "x")]);
    let p = Primary::builder(config_reading_worker(&dir, &volume.dir.join("config.json")))
        .arg("--watch")
        .arg(watch(&volume.dir).display().to_string())
        .arg("--watch-debounce")
        .arg("100ms")
        .start();
    assert!(p.log_text().contains("config=v1"));
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(50);
    for g in 2..=4u64 {
        volume.update(&[("config.json", &format!("v{g}")), ("other", "x")]);
        wait_until(Duration::from_secs(10), format_args!("the update to v{g} to reload"), || {
            let s = p.status();
            s["generation"] == g && !s["reloading"].as_bool().unwrap()
        });
        let log = p.log_text();
        assert_eq!(log.matches(&format!("config=v{g}")).count(), 2, "both new workers read v{g}:\n{log}");
        load.wait_for_requests(50);
    }
    // Part of the scenario: an update is one reload, not one per step.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(p.generation(), 4, "one reload per update");
    assert_no_failures(&load.finish(), "load across ConfigMap updates");
    // The swap removes watched directories under the watcher's feet; that is
    // the normal course of an update, not news for the log (#26).
    let log = p.log_text();
    assert!(!log.contains("watch descriptor"), "{log}");
    assert!(!log.contains("WARN"), "an update is no warning:\n{log}");
}

#[test]
fn a_configmap_update_of_a_watched_mount_directory_reloads_once() {
    configmap_update_reloads(|volume| volume.to_path_buf());
}

#[test]
fn a_configmap_update_of_a_watched_key_reloads_once() {
    configmap_update_reloads(|volume| volume.join("config.json"));
}

/// A code volume or deploy that swaps a `current` symlink and keeps the old
/// release (no event on the old target at all): `--watch current` follows
/// the swap, and a later change in the old release no longer counts.
#[test]
fn a_swapped_current_symlink_is_followed() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new("current");
    for r in ["r1", "r2"] {
        std::fs::create_dir_all(dir.path(r)).unwrap();
        std::fs::write(dir.path(&format!("{r}/app.js")), r).unwrap();
    }
    symlink("r1", dir.path("current")).unwrap();
    let p = Primary::builder(rust_worker())
        .arg("--watch")
        .arg(dir.path("current").display().to_string())
        .arg("--watch-debounce")
        .arg("100ms")
        .start();
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    symlink("r2", dir.path("current.new")).unwrap();
    std::fs::rename(dir.path("current.new"), dir.path("current")).unwrap();
    wait_until(Duration::from_secs(10), "the swap to reload", || {
        let s = p.status();
        s["generation"] == 2 && !s["reloading"].as_bool().unwrap()
    });
    load.wait_for_requests(50);
    std::fs::write(dir.path("r1/app.js"), "old release, edited").unwrap();
    // Part of the scenario: time for a reload the old release must not give.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(p.generation(), 2, "the old release is no longer watched: {}", p.log_text());
    std::fs::write(dir.path("r2/app.js"), "r2, edited").unwrap();
    wait_until(Duration::from_secs(10), "the edit of the new release to reload", || {
        let s = p.status();
        s["generation"] == 3 && !s["reloading"].as_bool().unwrap()
    });
    assert_no_failures(&load.finish(), "load across a swap of the watched symlink");
    assert!(p.log_text().contains("now points to"), "{}", p.log_text());
}

/// The runtime directories in `base`.
fn runtime_dirs(base: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(base)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("hotswap-primary."))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_primary_in_another_pid_namespace_leaves_a_live_runtime_directory_alone() {
    if !pid_namespaces_work() {
        return;
    }
    // Two containers sharing one /tmp: the same place for runtime
    // directories, and pids that mean different processes in each.
    let base = TempDir::new("shared-tmp");
    let shared = base.0.display().to_string();
    let a = Primary::builder(rust_worker()).env("TMPDIR", &shared).env("XDG_RUNTIME_DIR", "").start();
    let before = runtime_dirs(&base.0);
    assert_eq!(before.len(), 1, "{before:?}");
    // B, in a PID namespace of its own, cleans up leftovers as it starts:
    // A's pid names no process there (or another one).
    let b = Primary::builder(rust_worker())
        .wrap(&PID1)
        .env("TMPDIR", &shared)
        .env("XDG_RUNTIME_DIR", "")
        .workers(1)
        .start();
    let both = runtime_dirs(&base.0);
    assert!(both.contains(&before[0]), "B removed A's runtime directory: {both:?}\nB's log:\n{}", b.log_text());
    assert_eq!(both.len(), 2, "{both:?}");

    let load = Load::start(Target::Tcp(a.addr()), 2, 1);
    load.wait_for_requests(50);
    a.reload();
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "A's load through a reload");
    assert!(!a.log_text().contains("is not the directory this primary made"), "A kept its directory");
    assert_eq!(runtime_dirs(&base.0), both);
}
