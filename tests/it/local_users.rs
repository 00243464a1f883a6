//! Local users who should not get in: another user's directory is never used
//! for the control socket, a server of another user is never obeyed, the
//! per-primary runtime directory cannot be predicted or pre-created, nor
//! removed and made again to run code as the primary's user, a killed
//! primary's one is cleaned up, and `--socket-mode` decides who may connect
//! to a Unix listener.
//!
//! These act as other users: the tests run as root (as CI does) and use
//! `nobody` as the hostile user and an unused uid as the victim.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const NOBODY: u32 = 65534;

/// Whether the test can act as other users; prints why it is skipped if not.
fn can_switch_users(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{test} needs root to act as another user, and CI runs as root");
    // Straight to stderr, past the test harness's capture, so the skip shows.
    #[allow(clippy::explicit_write)]
    writeln!(std::io::stderr(), "local_users::{test} skipped: needs root to act as another user").unwrap();
    false
}

/// `program ARGS` as `uid` (group the same number, no supplementary
/// groups), with no `XDG_RUNTIME_DIR`, `HOTSWAP_CONTROL` or `TMPDIR`: the
/// defaults a user without a login session gets.
fn as_user(uid: u32, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).uid(uid).gid(uid);
    for var in ["XDG_RUNTIME_DIR", "HOTSWAP_CONTROL", "TMPDIR", "HOTSWAP_CONFIG"] {
        c.env_remove(var);
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Runs to the end, or is killed after `timeout`: (exit code, output).
fn finish_within(mut child: Child, timeout: Duration) -> (Option<i32>, Output) {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), out)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Removes a directory (made by another user, so not a [`TempDir`]) on drop.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies of hotswap and the Rust example worker that any user may run.
fn runnable_by_all() -> (TempDir, PathBuf, PathBuf) {
    let dir = TempDir::new("bins");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hotswap = dir.path("hotswap");
    copy_executable(Path::new(HOTSWAP), &hotswap);
    let worker = dir.path("http-worker");
    copy_executable(Path::new(&rust_worker()[0]), &worker);
    (dir, hotswap, worker)
}

/// The value of `var` in a process's environment.
fn env_of(pid: i32, var: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{var}=")).map(str::to_string))
}

/// The runtime directory of a primary: where its workers' notify sockets are.
fn runtime_dir_of(p: &Primary) -> PathBuf {
    let pid = p.worker_pids()[0];
    let notify = env_of(pid, "NOTIFY_SOCKET").expect("the worker has a NOTIFY_SOCKET (--ready ipc-or-notify)");
    Path::new(&notify).parent().unwrap().to_path_buf()
}

#[test]
fn another_users_directory_is_never_used_for_the_control_socket() {
    if !can_switch_users("another_users_directory_is_never_used_for_the_control_socket") {
        return;
    }
    let victim = 64101;
    let default_dir = PathBuf::from(format!("/tmp/hotswap-{victim}"));
    let _ = std::fs::remove_dir_all(&default_dir);
    let _cleanup = RemoveOnDrop(default_dir.clone());
    let (_bins, hotswap, worker) = runnable_by_all();
    let worker = worker.display().to_string();
    let run_args = ["run", "-l", "127.0.0.1:0", "-w", "1", "--", &worker];

    // nobody creates the victim's default directory first, open to all.
    let made = as_user(NOBODY, Path::new("mkdir"), &["-m", "0777"]).arg(&default_dir).output().unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let (code, out) = finish_within(as_user(victim, &hotswap, &run_args).spawn().unwrap(), Duration::from_secs(10));
    let said = text(&out);
    assert_eq!(code, Some(1), "the victim's primary must refuse the directory: {said}");
    assert!(
        said.contains(&format!("{} belongs to uid {NOBODY}", default_dir.display())) && said.contains("--control"),
        "{said}"
    );
    assert_eq!(std::fs::read_dir(&default_dir).unwrap().count(), 0, "nothing was put there");

    // nobody answers there as if it were the victim's primary.
    let fake = r#"
import os, socket, sys
os.umask(0)
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(8)
while True:
    c, _ = s.accept()
    try:
        c.recv(65536)
        c.sendall(b'{"type":"done","message":"stopped"}\n')
    except OSError:
        pass
    c.close()
"#;
    let sock = default_dir.join("hotswap.sock");
    // Killed on drop, so that a failed assertion leaves no server behind.
    let fake = KillOnDrop(
        as_user(NOBODY, Path::new("/usr/bin/python3"), &["-c", fake])
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the fake primary's socket", || sock.exists());
    for cmd in ["stop", "reload", "status", "upgrade"] {
        let (code, out) = finish_within(as_user(victim, &hotswap, &[cmd]).spawn().unwrap(), Duration::from_secs(10));
        let said = text(&out);
        assert_eq!(code, Some(1), "`hotswap {cmd}` obeyed another user's server: {said}");
        assert!(said.contains("refusing the server") && said.contains(&format!("uid {NOBODY}")), "{cmd}: {said}");
        assert!(!said.contains("stopped"), "{cmd}: {said}");
    }
    drop(fake);

    // Without the hostile directory the victim's primary makes its own,
    // private, and answers its user.
    std::fs::remove_dir_all(&default_dir).unwrap();
    let primary = as_user(victim, &hotswap, &run_args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let primary = KillOnDrop(primary);
    let status = || as_user(victim, &hotswap, &["status", "--json"]).output().unwrap();
    wait_until(Duration::from_secs(20), "the victim's primary to answer", || status().status.success());
    let meta = std::fs::symlink_metadata(&default_dir).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (victim, 0o700));
    assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);
    // Root may control it too (the primary's directory says whose it is).
    let out = Command::new(&hotswap).args(["status", "--control"]).arg(&sock).output().unwrap();
    assert!(out.status.success(), "root's `hotswap status`: {}", text(&out));
    let out = as_user(victim, &hotswap, &["stop"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut primary = primary;
    assert_eq!(finish_within_ref(&mut primary.0, Duration::from_secs(10)), Some(0));
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn finish_within_ref(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

#[test]
fn a_pre_created_runtime_directory_neither_stops_the_primary_nor_sees_anything() {
    if !can_switch_users("a_pre_created_runtime_directory_neither_stops_the_primary_nor_sees_anything") {
        return;
    }
    // nobody creates what used to be the primary's runtime directory,
    // TMPDIR/hotswap-PID (the pid is the wrapper's, which execs hotswap), and
    // keeps a file of its own in it, as a live directory of a user whose uid
    // equals that pid would. (One of that name left by an earlier primary,
    // killed before it could remove it, goes first.)
    let bin = TempDir::new("wrap");
    let wrapper = bin.path("hotswap");
    let tmp = std::env::temp_dir();
    script(
        &wrapper,
        &format!(
            "d={tmp}/hotswap-$$\nrm -rf \"$d\"\nsetpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups sh -c 'mkdir -m 0777 \"$1\" && echo mine > \"$1/keep\"' sh \"$d\" || exit 99\nexec {HOTSWAP} \"$@\"",
            tmp = tmp.display()
        ),
    );
    let mut p = Primary::builder(rust_worker()).binary(&wrapper).arg("--ready").arg("ipc-or-notify").start();
    let hostile = tmp.join(format!("hotswap-{}", p.pid()));
    let _cleanup = RemoveOnDrop(hostile.clone());
    assert_eq!(std::fs::symlink_metadata(&hostile).unwrap().uid(), NOBODY, "the hostile directory exists");

    let runtime = runtime_dir_of(&p);
    assert_ne!(runtime, hostile, "the workers' notify sockets are not in the other user's directory");
    let meta = std::fs::symlink_metadata(&runtime).unwrap();
    assert!(meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o7777 == 0o700, "{}: {meta:?}", runtime.display());
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    p.reload();
    assert_eq!(runtime_dir_of(&p), runtime, "the next generation's notify sockets are there too");
    assert_no_failures(&load.finish(), "load through a reload");
    let out = p.ctl(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));

    let names: Vec<String> =
        std::fs::read_dir(&hostile).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["keep"], "the other user's directory is untouched: nothing put there, nothing removed");
    assert!(!runtime.exists(), "the primary removed its own runtime directory");
}

#[test]
fn a_killed_primarys_runtime_directory_is_removed_by_the_next_start() {
    let mut a = Primary::builder(rust_worker()).arg("--ready").arg("ipc-or-notify").workers(1).start();
    let runtime = runtime_dir_of(&a);
    let worker = a.worker_pids()[0];
    assert!(runtime.join("w1.notify").exists());
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit_status(Duration::from_secs(10)).is_some());
    wait_until(Duration::from_secs(10), "the guardian to kill the worker", || process_gone(worker));
    let b = Primary::builder(rust_worker()).workers(1).start();
    assert!(!runtime.exists(), "{} outlived its primary; log of the next one:\n{}", runtime.display(), b.log_text());
}

#[test]
fn the_runtime_directory_is_kept_across_self_upgrade() {
    let p = Primary::builder(rust_worker()).arg("--ready").arg("ipc-or-notify").start();
    let runtime = runtime_dir_of(&p);
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(runtime.join("w1.notify").exists() && runtime.join("w2.notify").exists(), "adopted workers' sockets");
    p.reload();
    assert_eq!(runtime_dir_of(&p), runtime);
    assert_no_failures(&load.finish(), "load through an upgrade and a reload");
    let out = p.ctl(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until(Duration::from_secs(10), "the runtime directory to be removed", || !runtime.exists());
}

#[test]
fn the_socket_mode_decides_who_may_connect_to_a_unix_listener() {
    if !can_switch_users("the_socket_mode_decides_who_may_connect_to_a_unix_listener") {
        return;
    }
    let dir = TempDir::new("mode");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let connect_as_nobody = |sock: &Path| {
        let code = "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\nsys.stdout.write(s.recv(100).decode())\n";
        let out = as_user(NOBODY, Path::new("/usr/bin/python3"), &["-c", code]).arg(sock).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Under the umask of most systems (022) a socket file would be 0755:
    // no one else could connect. The default is systemd's 0666.
    let open = dir.path("open.sock");
    let _p = Primary::bare(rust_worker()).arg("-l").arg(format!("unix:{}", open.display())).workers(1).start();
    assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o777, 0o666);
    let (code, answer) = connect_as_nobody(&open);
    assert!(code == Some(0) && answer.starts_with("HTTP/1.1 200"), "{code:?} {answer}");

    let private = dir.path("private.sock");
    let _q = Primary::bare(rust_worker())
        .arg("-l")
        .arg(format!("unix:{}", private.display()))
        .arg("--socket-mode")
        .arg("0600")
        .workers(1)
        .start();
    assert_eq!(std::fs::metadata(&private).unwrap().mode() & 0o777, 0o600);
    assert_eq!(connect_as_nobody(&private).0, Some(13), "permission denied to another user");
    assert_eq!(get(&Target::Unix(private.clone()), "/").unwrap().status, 200, "the owner connects");
}

/// Where a worker looks for its preload: the file `NODE_OPTIONS --require`
/// names, or `sitecustomize.py` in the first `PYTHONPATH` entry.
fn preload_of(pid: i32) -> PathBuf {
    if let Some(opts) = env_of(pid, "NODE_OPTIONS") {
        // `--require "PATH"` (hotswap's quoting: no quote in this path).
        let quoted = opts.strip_prefix("--require ").expect("the preload first");
        return PathBuf::from(quoted.split('"').nth(1).unwrap_or(quoted));
    }
    let path = env_of(pid, "PYTHONPATH").expect("a Node or Python worker");
    Path::new(path.split(':').next().unwrap()).join("sitecustomize.py")
}

/// The runtime directory a preload is in (`DIR/preload.SECRET/...`, or
/// `DIR/...` before the secret directory).
fn runtime_of(preload: &Path, base: &Path) -> PathBuf {
    let mut dir = preload;
    while dir.parent() != Some(base) {
        dir = dir.parent().unwrap();
    }
    dir.to_path_buf()
}

#[test]
fn a_runtime_directory_made_again_by_another_user_runs_none_of_their_code() {
    if !can_switch_users("a_runtime_directory_made_again_by_another_user_runs_none_of_their_code") {
        return;
    }
    // Runtime directories go in a place like /tmp: sticky, open to all.
    let base = TempDir::new("rt-base");
    std::fs::set_permissions(&base.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let marker_dir = TempDir::new("rt-marker");
    let marker = marker_dir.path("hijacked");
    let evil = [
        ("NODE_OPTIONS", format!("require('fs').writeFileSync({:?}, 'node');\n", marker.display().to_string())),
        ("PYTHONPATH", format!("open({:?}, 'w').write('python')\n", marker.display().to_string())),
    ];
    for (command, (var, code)) in [node_worker(), python_worker()].into_iter().zip(evil) {
        let mut p = Primary::builder(command).env("XDG_RUNTIME_DIR", base.0.display().to_string()).start();
        let preload = preload_of(p.worker_pids()[0]);
        let runtime = runtime_of(&preload, &base.0);
        assert!(preload.is_file(), "{var}: {}", preload.display());
        // A temp cleaner removes it; nobody makes it again, open to all, with
        // their own preload exactly where the workers looked (as if they
        // knew every name).
        std::fs::remove_dir_all(&runtime).unwrap();
        let _cleanup = RemoveOnDrop(runtime.clone());
        let plant = "umask 0; mkdir -m 0777 \"$1\" && mkdir -p \"$(dirname \"$2\")\" && printf '%s' \"$3\" > \"$2\"";
        let out = as_user(NOBODY, Path::new("sh"), &["-c", plant, "sh"])
            .arg(&runtime)
            .arg(&preload)
            .arg(&code)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(std::fs::symlink_metadata(&runtime).unwrap().uid(), NOBODY);

        let load = Load::start(Target::Tcp(p.addr()), 2, 1);
        load.wait_for_requests(50);
        p.reload();
        load.wait_for_requests(50);
        assert_no_failures(&load.finish(), &format!("{var}: load through a reload"));
        assert!(!marker.exists(), "{var}: the other user's preload ran as the primary's user");
        let now = preload_of(p.worker_pids()[0]);
        let new_runtime = runtime_of(&now, &base.0);
        assert_ne!(new_runtime, runtime, "{var}: the workers still point into the other user's directory");
        let meta = std::fs::symlink_metadata(&new_runtime).unwrap();
        assert!(meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o7777 == 0o700, "{meta:?}");
        assert!(now.is_file());
        assert!(p.log_text().contains("is not the directory this primary made"), "{var}: said why");
        let out = p.ctl(&["stop"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
        assert!(!new_runtime.exists(), "{var}: its own directory is removed at exit");
        assert!(preload.is_file(), "{var}: the other user's directory is left alone");
    }
}
