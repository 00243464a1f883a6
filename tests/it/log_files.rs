//! `--out-file` and `--error-file`: the workers' lines in files of their
//! own, prefixed as on stdout, opened again on SIGUSR1 (logrotate) and by
//! the new image of a self-upgrade.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn worker_lines_go_to_their_files_reopened_on_sigusr1_and_after_an_upgrade() {
    let dir = TempDir::new("outfile");
    let start = dir.path("start.sh");
    script(&start, &format!("echo out-$$\necho err-$$ >&2\nexec {}", rust_worker()[0]));
    let bin = dir.path("hotswap");
    copy_executable(Path::new(HOTSWAP), &bin);
    let (out, err) = (dir.path("out.log"), dir.path("err.log"));
    let p = Primary::builder(vec![start.display().to_string()])
        .workers(1)
        .binary(&bin)
        .arg("--out-file")
        .arg(out.display().to_string())
        .arg("--error-file")
        .arg(err.display().to_string())
        .start();
    let lines_of = |pid: i32| {
        wait_until(Duration::from_secs(20), format!("worker {pid}'s lines in the files"), || {
            read(&out).contains(&format!("out-{pid}")) && read(&err).contains(&format!("err-{pid}"))
        })
    };
    let first = p.worker_pids()[0];
    lines_of(first);
    assert!(read(&out).contains(&format!("[w1 g1 {first}] out-{first}\n")), "{}", read(&out));
    assert!(read(&err).contains(&format!("[w1 g1 {first}] err-{first}\n")), "{}", read(&err));
    assert!(!read(&out).contains("err-") && !read(&err).contains("out-"));
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o137, 0, "created 0640 at most");
    // The primary's own log stays where it was; the workers' lines left it.
    assert!(!p.log_text().contains(&format!("out-{first}")), "{}", p.log_text());

    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    // logrotate: rename, then SIGUSR1.
    std::fs::rename(&out, dir.path("out.log.1")).unwrap();
    std::fs::rename(&err, dir.path("err.log.1")).unwrap();
    p.signal(libc::SIGUSR1);
    wait_until(Duration::from_secs(20), "both files reopened", || {
        p.log_text().matches("SIGUSR1: reopened").count() == 2
    });
    p.reload();
    let second = p.worker_pids()[0];
    lines_of(second);
    let old = read(&dir.path("out.log.1"));
    assert!(old.contains(&format!("out-{first}")) && !old.contains(&format!("out-{second}")), "{old}");
    assert!(!read(&out).contains(&format!("out-{first}")), "{}", read(&out));
    assert!(read(&dir.path("err.log.1")).contains(&format!("err-{first}")));

    // A self-upgrade: the new image opens them again by path.
    copy_executable(Path::new(HOTSWAP), &bin);
    let up = p.ctl(&["upgrade"]);
    assert!(up.status.success(), "{}{}", String::from_utf8_lossy(&up.stdout), String::from_utf8_lossy(&up.stderr));
    p.reload();
    let third = p.worker_pids()[0];
    lines_of(third);
    assert!(!p.log_text().contains(&format!("out-{third}")), "{}", p.log_text());
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load across SIGUSR1, reloads and a self-upgrade with --out-file");
}

#[test]
fn an_out_file_in_a_missing_directory_is_an_error_at_start_and_in_check_that_names_it() {
    let dir = TempDir::new("outfile-bad");
    let bad = dir.path("missing/out.log");
    let o = Command::new(HOTSWAP)
        .args(["run", "--control"])
        .arg(dir.path("c.sock"))
        .arg("--out-file")
        .arg(&bad)
        .args(["-l", "127.0.0.1:0", "--", "true"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(said.contains(&format!("out-file {}", bad.display())) && said.contains("directory must exist"), "{said}");
    // `hotswap check` says the same, and creates nothing for a good path.
    let check = |path: &Path| {
        Command::new(HOTSWAP).arg("check").arg("--out-file").arg(path).args(["--", "true"]).output().unwrap()
    };
    let o = check(&bad);
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(said.contains(&format!("out-file {}", bad.display())) && said.contains("directory must exist"), "{said}");
    let good = dir.path("out.log");
    let o = check(&good);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("out-file: {}", good.display())));
    assert!(!good.exists(), "check created the file");
}

#[test]
fn logs_reopen_asks_the_primary_to_reopen_its_files_over_the_control_socket() {
    let dir = TempDir::new("reopen");
    let start = dir.path("start.sh");
    script(&start, &format!("echo out-$$\nexec {}", rust_worker()[0]));
    let out = dir.path("out.log");
    let p = Primary::builder(vec![start.display().to_string()])
        .workers(1)
        .arg("--out-file")
        .arg(out.display().to_string())
        .start();
    let first = p.worker_pids()[0];
    wait_until(Duration::from_secs(20), "the first worker's line", || read(&out).contains(&format!("out-{first}")));
    // logrotate: rename, then `hotswap logs --reopen` (no pid, no signal).
    std::fs::rename(&out, dir.path("out.log.1")).unwrap();
    let o = p.ctl(&["logs", "--reopen"]);
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{said}");
    assert!(said.contains(&format!("reopened {}", out.display())), "{said}");
    assert!(out.exists(), "not created again");
    assert!(p.log_text().contains("hotswap logs --reopen: reopened"), "{}", p.log_text());
    p.reload();
    let second = p.worker_pids()[0];
    wait_until(Duration::from_secs(20), "the second worker's line", || read(&out).contains(&format!("out-{second}")));
    assert!(!read(&dir.path("out.log.1")).contains(&format!("out-{second}")));

    // Nothing to reopen: said, exit 1 (a postrotate that reopens nothing is a mistake).
    let plain = Primary::builder(rust_worker()).workers(1).start();
    let o = plain.ctl(&["logs", "--reopen"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no --out-file or --error-file to reopen"));
}
