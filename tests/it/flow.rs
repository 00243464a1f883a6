//! The event loop never blocks, and no output goes missing: a stalled
//! stderr reader, flooding workers, events clients that leave or never
//! read, workers that never read their channel, and every line of output
//! through stops, failed starts and self-upgrades.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// Children of `pid` that are zombies (exited, not reaped).
fn zombie_children(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let parent: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if parent == pid && state == "Z" {
            found.push(child);
        }
    }
    found
}

/// Item 10: the primary's stderr (and stdout) is a FIFO whose reader is
/// stopped. Through 200 reloads every reload and status answers and no
/// worker stays a zombie; once the reader resumes, the primary says how
/// many of its own lines it had to drop.
#[test]
fn a_stalled_stderr_reader_blocks_nothing() {
    let dir = TempDir::new("stall");
    let fifo = dir.path("stderr.fifo");
    let captured = dir.path("captured.log");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // The reader: started first, so that the primary's open of the FIFO
    // does not wait.
    let mut reader = Command::new("sh")
        .args(["-c", "exec cat \"$1\" > \"$2\"", "sh"])
        .arg(&fifo)
        .arg(&captured)
        .spawn()
        .unwrap();
    let wrapper = dir.path("hotswap-to-fifo");
    script(&wrapper, &format!("exec {HOTSWAP} \"$@\" > '{}' 2>&1", fifo.display()));
    let p = Primary::builder(rust_worker()).workers(1).binary(&wrapper).start();
    // The FIFO holds 64 KiB; the reader is stopped from now on.
    unsafe { libc::kill(reader.id() as i32, libc::SIGSTOP) };
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    for i in 0..200 {
        let started = Instant::now();
        let out = p.ctl(&["reload"]);
        assert!(out.status.success(), "reload {i} failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(started.elapsed() < Duration::from_secs(10), "reload {i} took {:?}", started.elapsed());
        if i % 50 == 0 {
            p.status();
        }
    }
    assert_no_failures(&load.finish(), "reloads with a stalled stderr");
    let s = p.status();
    assert_eq!(s["generation"], 201);
    wait_until(Duration::from_secs(5), "no zombie children", || zombie_children(p.pid()).is_empty());
    // The reader comes back: the note follows what was queued.
    unsafe { libc::kill(reader.id() as i32, libc::SIGCONT) };
    wait_until(Duration::from_secs(10), "the drop note", || {
        std::fs::read_to_string(&captured).unwrap_or_default().contains("lines dropped: stderr was not being read")
    });
    drop(p);
    let _ = reader.kill();
    let _ = reader.wait();
}
