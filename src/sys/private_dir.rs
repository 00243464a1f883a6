//! Directories only this user may write: the control socket's directory and
//! each primary's runtime directory (workers' notify sockets, the Node
//! preload).
//!
//! Without `XDG_RUNTIME_DIR` both live in the temp dir, a namespace every
//! local user shares: whoever creates a name first owns it. A directory
//! another user created (or can write) lets that user replace the control
//! socket, or a worker's notify socket, with one of their own. So a
//! directory is used only when `lstat` shows a real directory (no symlink)
//! that belongs to this user (or root) and that no one else can write
//! (sticky directories such as `/tmp` excepted: there no one may replace
//! another's file). Runtime directories get an unpredictable name
//! (`mkdtemp`, mode 0700), record their primary's pid, and are removed by
//! that primary on exit, or by the next primary of the same user when the
//! first was killed.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How a runtime directory's name starts (never `hotswap-UID`, the default
/// control directory's name).
const RUNTIME_PREFIX: &str = "hotswap-primary.";
/// The file in a runtime directory naming its primary: `PID START_TIME`.
const OWNER_FILE: &str = "primary";
/// A runtime directory without [`OWNER_FILE`] younger than this may belong
/// to a primary that is just starting; older, it is a leftover.
const CREATION_GRACE: Duration = Duration::from_secs(60);

/// What to do about an unsafe control socket directory.
pub const CONTROL_REMEDY: &str =
    "remove it, or choose another place with --control PATH (or HOTSWAP_CONTROL, or XDG_RUNTIME_DIR)";
/// What to do about an unsafe place for runtime directories.
const RUNTIME_REMEDY: &str = "set XDG_RUNTIME_DIR (or TMPDIR) to a directory of your own";

/// Creates `dir` (mode 0700) if it is missing, then checks that it is safe to
/// hold a socket: see [`check`]. `what` names the directory in errors,
/// `remedy` says what to do about an unsafe one.
pub fn ensure(dir: &Path, what: &str, remedy: &str) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).recursive(true).create(dir) {
        Ok(()) => {}
        // Created by someone else in the meantime, or a file: `check` says which.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {what} {}", dir.display())),
    }
    check(dir, what, remedy)
}

/// Fails, saying what to do, unless `dir` is a real directory (not a
/// symlink) owned by this user or root that no other user can write (a
/// sticky directory, like `/tmp`, excepted).
pub fn check(dir: &Path, what: &str, remedy: &str) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("checking {what} {}", dir.display()))?;
    if meta.file_type().is_symlink() {
        bail!("{what} {} is a symbolic link; refusing to use it: {remedy}", dir.display());
    }
    if !meta.is_dir() {
        bail!("{what} {} is not a directory: {remedy}", dir.display());
    }
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "{what} {} belongs to uid {}, not to this user (uid {me}): another user may have created it to take \
             over hotswap's sockets; refusing to use it: {remedy}",
            dir.display(),
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        bail!(
            "{what} {} is writable by other users (mode {mode:04o}): any of them could replace hotswap's sockets; \
             refusing to use it: {remedy}",
            dir.display()
        );
    }
    Ok(())
}

/// Where runtime directories go: `$XDG_RUNTIME_DIR` when set, else the temp
/// dir.
pub fn runtime_base() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir(),
    }
}

/// Creates this primary's runtime directory in `base`: an unpredictable name,
/// mode 0700, with this process's pid recorded inside. `base` itself must be
/// safe (see [`check`]): in a directory others may write, they could rename
/// ours away and put theirs in its place.
pub fn create_runtime(base: &Path) -> Result<PathBuf> {
    check(base, "the place for runtime directories", RUNTIME_REMEDY)?;
    let template = base.join(format!("{RUNTIME_PREFIX}XXXXXX"));
    let dir = nix::unistd::mkdtemp(&template)
        .with_context(|| format!("creating a runtime directory in {}", base.display()))?;
    let pid = std::process::id() as i32;
    let owner = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
    // Written aside and renamed: another primary's cleanup never reads it
    // half-written.
    let aside = dir.join(format!(".{OWNER_FILE}"));
    if let Err(e) = std::fs::write(&aside, owner).and_then(|()| std::fs::rename(&aside, dir.join(OWNER_FILE))) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e).with_context(|| format!("writing {}", dir.join(OWNER_FILE).display()));
    }
    Ok(dir)
}

/// Checks a runtime directory handed over by the previous image of this
/// primary (self-upgrade): still ours, still private.
pub fn check_runtime(dir: &Path) -> Result<()> {
    check(dir, "runtime directory", RUNTIME_REMEDY)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        bail!("runtime directory {} does not belong to this user", dir.display());
    }
    Ok(())
}

/// Removes the runtime directories in `base` that belong to this user and
/// whose primary no longer runs (it was killed before it could clean up).
/// Returns the directories removed.
pub fn remove_stale(base: &Path) -> Vec<PathBuf> {
    let me = nix::unistd::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir(base) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(RUNTIME_PREFIX) {
            continue;
        }
        let path = entry.path();
        // lstat: a symlink or another user's directory is never touched.
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        // No owner yet (or one being written: a primary starting this very
        // moment): stale only once past the grace period.
        let young = || meta.modified().ok().and_then(|m| m.elapsed().ok()).is_none_or(|age| age <= CREATION_GRACE);
        let stale = match std::fs::read_to_string(path.join(OWNER_FILE)) {
            Ok(text) if owner_pid(&text).is_some() => !owner_runs(&text),
            _ => !young(),
        };
        if stale && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// The pid an owner file names, if it is complete.
fn owner_pid(text: &str) -> Option<i32> {
    text.split_whitespace().next().and_then(|p| p.parse().ok())
}

/// Whether the primary an owner file names (`PID START_TIME`) still runs:
/// the same pid with the same start time (a reused pid is another process).
fn owner_runs(text: &str) -> bool {
    let Some(pid) = owner_pid(text) else { return false };
    let mut parts = text.split_whitespace().skip(1);
    let recorded: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    match start_time(pid) {
        Some(now) => recorded == 0 || now == 0 || now == recorded,
        None => false,
    }
}

/// A live (not zombie) process's start time in clock ticks since boot; 0
/// where that cannot be read; `None` when the process is gone.
#[cfg(target_os = "linux")]
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    // starttime is field 22 of the whole line, the 20th after the name.
    Some(fields.get(19).and_then(|s| s.parse().ok()).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
fn start_time(pid: i32) -> Option<u64> {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => None,
        _ => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hotswap-pd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn unsafe_directories_are_refused_with_the_remedy() {
        let base = scratch("check");
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = format!("{:#}", ensure(&open, "control socket directory", CONTROL_REMEDY).unwrap_err());
        assert!(err.contains("writable by other users (mode 0777)") && err.contains("--control"), "{err}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check(&open, "x", "").expect("a sticky directory is fine");
        let link = base.join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        assert!(format!("{:#}", check(&link, "x", "").unwrap_err()).contains("symbolic link"));
        let fresh = base.join("a/b");
        ensure(&fresh, "x", "").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let open_base = format!("{:#}", create_runtime(&open).unwrap_err());
        assert!(open_base.contains("writable by other users") && open_base.contains("XDG_RUNTIME_DIR"), "{open_base}");
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn runtime_dirs_are_private_and_only_dead_primaries_lose_theirs() {
        let base = scratch("rt");
        let mine = create_runtime(&base).unwrap();
        assert_eq!(std::fs::metadata(&mine).unwrap().permissions().mode() & 0o777, 0o700);
        let other = create_runtime(&base).unwrap();
        assert_ne!(mine, other, "names are unpredictable, not the pid");
        // A primary that died: a pid that is not running.
        let dead = base.join(format!("{RUNTIME_PREFIX}dead01"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(OWNER_FILE), "2147483000 5\n").unwrap();
        // Our own pid with another start time: the pid was reused.
        let reused = base.join(format!("{RUNTIME_PREFIX}reuse1"));
        std::fs::create_dir(&reused).unwrap();
        std::fs::write(reused.join(OWNER_FILE), format!("{} 1\n", std::process::id())).unwrap();
        // Just created, no owner file yet: left alone.
        let young = base.join(format!("{RUNTIME_PREFIX}young1"));
        std::fs::create_dir(&young).unwrap();
        let mut removed = remove_stale(&base);
        removed.sort();
        let mut expected = vec![dead, reused];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(mine.exists() && other.exists() && young.exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
