//! This primary's runtime directory: workers' notify sockets and the
//! preloads that Node.js and Python workers load (`NODE_OPTIONS --require`,
//! `PYTHONPATH`).
//!
//! It is made with an unpredictable name, mode 0700, in `$XDG_RUNTIME_DIR`
//! or the temp dir. Its name is no secret: the temp dir can be listed by
//! everyone and the notify sockets show in `/proc/net/unix`. What makes it
//! safe to load code from:
//!
//! - **Held, and checked before every worker starts.** The directory is
//!   opened when it is made; before each spawn [`RuntimeDir::ensure`] checks
//!   that its path still names that very directory (same device and inode,
//!   a real directory, ours, mode 0700) and that the preloads are there. A
//!   directory removed (a temp cleaner, `rm -rf`) and re-made by someone
//!   else is never used: a new private one is made and the workers from then
//!   on point there.
//! - **Preloads behind a secret name.** The preloads live in a subdirectory
//!   named with 128 random bits, which only this user can list (0700) and
//!   which appears only in workers' environments (readable by this user and
//!   root). Between the check and the moment a starting worker reads its
//!   preload, another user who re-made the directory under its public name
//!   still cannot put a file where the worker looks.
//! - **Locked for the primary's life.** A `lock` file in it is held with
//!   `flock` (handed over across self-upgrades): the kernel drops the lock
//!   when the primary is gone, whatever PID namespace it ran in. A primary
//!   removes, at start, only directories of its own user whose lock it can
//!   take (their primary was killed), never one whose primary runs in
//!   another PID namespace (containers sharing `/tmp`, `unshare --pid`),
//!   where pids mean other processes.
//!
//! The directory is removed when the primary exits, and only if its path
//! still names the directory it made.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

use super::private_dir;

/// How a runtime directory's name starts (never `hotswap-UID`, the default
/// control directory's name).
const PREFIX: &str = "hotswap-primary.";
/// The file locked (`flock`, exclusive) by the primary for its life.
const LOCK_FILE: &str = "lock";
/// The file in which older versions named their primary: `PID START_TIME`.
/// Still written, so that an older hotswap of the same user does not take
/// this directory for a leftover.
const OWNER_FILE: &str = "primary";
/// A runtime directory without [`LOCK_FILE`] younger than this may belong to
/// a primary that is just starting; older, it is a leftover.
const CREATION_GRACE: Duration = Duration::from_secs(60);
/// What to do about an unsafe place for runtime directories.
pub const REMEDY: &str = "set XDG_RUNTIME_DIR (or TMPDIR) to a directory of your own";

/// A file the runtime directory holds for workers: its path below the
/// preloads' directory and its contents.
pub type Preload = (&'static str, &'static str);

/// This primary's runtime directory, held open and locked.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
    /// The directory as made (or taken over): what `path` must still name.
    dir: File,
    /// [`LOCK_FILE`], locked for as long as this primary runs.
    lock: Flock<File>,
    /// The preloads' directory: `path/preload.<128 random bits in hex>`.
    preloads: PathBuf,
    files: &'static [Preload],
    /// Removed when dropped (this image is in charge of it).
    owned: bool,
}

/// Where runtime directories go: `$XDG_RUNTIME_DIR` when set, else the temp
/// dir.
pub fn base() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir(),
    }
}

impl RuntimeDir {
    /// Makes a new runtime directory in `base` (which must itself be safe,
    /// see [`private_dir::check`]: in a directory others may write, they
    /// could rename ours away), locked, with `files` written into a new
    /// preloads' directory. It is removed on drop.
    pub fn create(base: &Path, files: &'static [Preload]) -> Result<RuntimeDir> {
        private_dir::check(base, "the place for runtime directories", REMEDY)?;
        let template = base.join(format!("{PREFIX}XXXXXX"));
        let path = nix::unistd::mkdtemp(&template)
            .with_context(|| format!("creating a runtime directory in {}", base.display()))?;
        let made = (|| {
            let dir = open_dir(&path)?;
            // Locked before it has its final name, so that no other
            // primary's cleanup ever sees it unlocked.
            let aside = path.join(format!(".{LOCK_FILE}"));
            let lock = lock_new(&aside)?;
            std::fs::rename(&aside, path.join(LOCK_FILE)).with_context(|| format!("naming {}", aside.display()))?;
            write_owner(&path)?;
            let preloads = write_preloads(&path, files)?;
            Ok(RuntimeDir { path: path.clone(), dir, lock, preloads, files, owned: true })
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&path);
        }
        made
    }

    /// Takes over the runtime directory of the previous image of this
    /// primary (self-upgrade): still a private directory of this user, its
    /// lock handed over (`None` from an image that did not lock it: locked
    /// now). The preloads are written anew (this image's), into a new
    /// preloads' directory; the previous one stays for processes that may
    /// still read it. Not removed on drop until [`RuntimeDir::own`].
    pub fn adopt(path: &Path, lock: Option<OwnedFd>, files: &'static [Preload]) -> Result<RuntimeDir> {
        private_dir::check(path, "runtime directory", REMEDY)?;
        let dir = open_dir(path)?;
        let meta = dir.metadata()?;
        if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
            bail!("runtime directory {} is not private to this user", path.display());
        }
        let lock = match lock {
            Some(fd) => {
                let file = File::from(fd);
                let lock_meta = file.metadata()?;
                let named = std::fs::symlink_metadata(path.join(LOCK_FILE))
                    .with_context(|| format!("checking {}", path.join(LOCK_FILE).display()))?;
                if (lock_meta.dev(), lock_meta.ino()) != (named.dev(), named.ino()) {
                    bail!("the lock handed over is not {}", path.join(LOCK_FILE).display());
                }
                // Held already (the same open file): this only says so.
                Flock::lock(file, FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.join(LOCK_FILE).display()))?
            }
            None => {
                let aside = path.join(format!(".{LOCK_FILE}"));
                let lock = lock_new(&aside)?;
                std::fs::rename(&aside, path.join(LOCK_FILE)).with_context(|| format!("naming {}", aside.display()))?;
                lock
            }
        };
        let preloads = write_preloads(path, files)?;
        Ok(RuntimeDir { path: path.to_path_buf(), dir, lock, preloads, files, owned: false })
    }

    /// From now on this image removes the directory when it exits.
    pub fn own(&mut self) {
        self.owned = true;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the preload `name` (a path of [`Preload`]) is for workers.
    pub fn preload(&self, name: &str) -> PathBuf {
        self.preloads.join(name)
    }

    /// The lock's fd, to hand over to the next image.
    pub fn lock_fd(&self) -> RawFd {
        self.lock.as_raw_fd()
    }

    /// Before a worker starts: makes sure the path still names this
    /// directory, private, with every preload in it. A directory that is
    /// gone or is another (removed, then made again by anyone) is left
    /// alone and a new private one is made in the same place; a missing
    /// preload is written again. Returns what was wrong, when something
    /// was; an error when no safe directory could be made.
    pub fn ensure(&mut self) -> Result<Option<String>> {
        match self.check() {
            Ok(()) => Ok(None),
            Err(Damage::Preloads(why)) => {
                self.preloads = write_preloads(&self.path, self.files)?;
                Ok(Some(format!("{why}; wrote the preloads again in {}", self.preloads.display())))
            }
            Err(Damage::Directory(why)) => {
                let base = self.path.parent().map(Path::to_path_buf).unwrap_or_else(base);
                let mut new = RuntimeDir::create(&base, self.files)
                    .with_context(|| format!("{why}, and no new one could be made"))?;
                new.owned = self.owned;
                // The old one is not ours any more: never removed by us.
                self.owned = false;
                *self = new;
                Ok(Some(format!("{why}; made a new one, {}", self.path.display())))
            }
        }
    }

    fn check(&self) -> std::result::Result<(), Damage> {
        let gone = |what: String| Damage::Directory(format!("runtime directory {} {what}", self.path.display()));
        let named = std::fs::symlink_metadata(&self.path).map_err(|e| gone(format!("cannot be read ({e})")))?;
        let held = self.dir.metadata().map_err(|e| gone(format!("cannot be read ({e})")))?;
        if (named.dev(), named.ino()) != (held.dev(), held.ino()) || !named.is_dir() {
            return Err(gone(format!(
                "is not the directory this primary made (it was removed, and maybe made again by uid {})",
                named.uid()
            )));
        }
        if named.uid() != nix::unistd::geteuid().as_raw() || named.mode() & 0o077 != 0 {
            return Err(gone(format!(
                "is no longer private (uid {}, mode {:04o})",
                named.uid(),
                named.mode() & 0o7777
            )));
        }
        for (name, _) in self.files {
            let file = self.preloads.join(name);
            if !std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
                return Err(Damage::Preloads(format!("{} is missing", file.display())));
            }
        }
        Ok(())
    }
}

impl Drop for RuntimeDir {
    /// Removes the directory if this image is in charge of it and its path
    /// still names it. (The exec of a self-upgrade runs no destructor.)
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let same = match (std::fs::symlink_metadata(&self.path), self.dir.metadata()) {
            (Ok(named), Ok(held)) => (named.dev(), named.ino()) == (held.dev(), held.ino()),
            _ => false,
        };
        if same {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What [`RuntimeDir::check`] found wrong.
enum Damage {
    /// The path no longer names our private directory.
    Directory(String),
    /// The directory is fine, a preload is missing.
    Preloads(String),
}

fn open_dir(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Creates `path` (a new file) and locks it.
fn lock_new(path: &Path) -> Result<Flock<File>> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
}

/// Writes [`OWNER_FILE`] (aside, then renamed: never read half-written).
fn write_owner(dir: &Path) -> Result<()> {
    let pid = std::process::id() as i32;
    let owner = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
    let aside = dir.join(format!(".{OWNER_FILE}"));
    std::fs::write(&aside, owner)
        .and_then(|()| std::fs::rename(&aside, dir.join(OWNER_FILE)))
        .with_context(|| format!("writing {}", dir.join(OWNER_FILE).display()))
}

/// Makes a new preloads' directory in `dir`, with a name no one else can
/// know, and writes `files` into it.
fn write_preloads(dir: &Path, files: &[Preload]) -> Result<PathBuf> {
    let mut random = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("reading /dev/urandom for the preloads' directory name")?;
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let preloads = dir.join(format!("preload.{name}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&preloads)
        .with_context(|| format!("creating {}", preloads.display()))?;
    for (name, contents) in files {
        let file = preloads.join(name);
        if let Some(parent) = file.parent() {
            std::fs::DirBuilder::new().mode(0o700).recursive(true).create(parent)?;
        }
        std::fs::write(&file, contents).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(preloads)
}

/// Removes the runtime directories in `base` that belong to this user and
/// whose primary is gone (it was killed before it could clean up): their
/// lock can be taken. Returns the directories removed.
pub fn remove_stale(base: &Path) -> Vec<PathBuf> {
    let me = nix::unistd::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir(base) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        // lstat: a symlink or another user's directory is never touched.
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let lock = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path.join(LOCK_FILE));
        let stale = match lock {
            // Held while we remove it: no primary can be using it.
            Ok(file) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => {
                    let gone = std::fs::remove_dir_all(&path).is_ok();
                    drop(held);
                    if gone {
                        removed.push(path);
                    }
                    continue;
                }
                Err(_) => false,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => legacy_stale(&path, &meta),
            Err(_) => false,
        };
        if stale && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// A directory without a lock: one being made this very moment (left alone
/// for [`CREATION_GRACE`]), or one of an older hotswap, which named its
/// primary by pid: stale when that pid does not run (which, in another PID
/// namespace, cannot be told: see docs/guarantees.md).
fn legacy_stale(path: &Path, meta: &std::fs::Metadata) -> bool {
    let young = || meta.modified().ok().and_then(|m| m.elapsed().ok()).is_none_or(|age| age <= CREATION_GRACE);
    match std::fs::read_to_string(path.join(OWNER_FILE)) {
        Ok(text) if owner_pid(&text).is_some() => !owner_runs(&text),
        _ => !young(),
    }
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
    use procfs_core::FromRead;
    let Ok(text) = std::fs::read(format!("/proc/{pid}/stat")) else { return None };
    match procfs_core::process::Stat::from_read(&text[..]) {
        Ok(stat) if matches!(stat.state, 'Z' | 'X') => None,
        Ok(stat) => Some(stat.starttime),
        Err(_) => Some(0),
    }
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

    const FILES: &[Preload] = &[("a.js", "A"), ("sub/b.py", "B")];

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hotswap-rd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn only_unlocked_directories_are_stale() {
        let base = scratch("stale");
        let mine = RuntimeDir::create(&base, FILES).unwrap();
        assert_eq!(std::fs::metadata(mine.path()).unwrap().permissions().mode() & 0o777, 0o700);
        let other = RuntimeDir::create(&base, FILES).unwrap();
        assert_ne!(mine.path(), other.path(), "names are unpredictable, not the pid");
        // A primary that was killed: its lock file is there, unlocked; the
        // pid it recorded is no proof either way.
        let dead = base.join(format!("{PREFIX}dead01"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(LOCK_FILE), "").unwrap();
        std::fs::write(dead.join(OWNER_FILE), format!("{} 0\n", std::process::id())).unwrap();
        // An older hotswap's, its pid gone.
        let legacy = base.join(format!("{PREFIX}legacy"));
        std::fs::create_dir(&legacy).unwrap();
        std::fs::write(legacy.join(OWNER_FILE), "2147483000 5\n").unwrap();
        // A live primary whose pid means nothing here (another PID
        // namespace): its lock decides.
        std::fs::write(mine.path().join(OWNER_FILE), "2147483000 5\n").unwrap();
        // Just created, no lock yet: left alone.
        let young = base.join(format!("{PREFIX}young1"));
        std::fs::create_dir(&young).unwrap();
        let mut removed = remove_stale(&base);
        removed.sort();
        let mut expected = vec![dead, legacy];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(mine.path().exists() && other.path().exists() && young.exists());
        let path = mine.path().to_path_buf();
        drop(mine);
        assert!(!path.exists(), "removed by its primary");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_directory_made_again_by_someone_else_is_replaced_not_used() {
        let base = scratch("ensure");
        let mut rt = RuntimeDir::create(&base, FILES).unwrap();
        let first = rt.path().to_path_buf();
        let a = rt.preload("a.js");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "A");
        assert!(a.parent().unwrap().file_name().unwrap().len() > 32, "a secret name: {}", a.display());
        assert_eq!(rt.ensure().unwrap(), None);

        // A preload removed: written again, the directory kept.
        std::fs::remove_file(rt.preload("sub/b.py")).unwrap();
        assert!(rt.ensure().unwrap().unwrap().contains("missing"));
        assert_eq!(rt.path(), first);
        assert_eq!(std::fs::read_to_string(rt.preload("sub/b.py")).unwrap(), "B");

        // Removed and made again (open to all) under the same name.
        std::fs::remove_dir_all(&first).unwrap();
        std::fs::create_dir(&first).unwrap();
        std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(first.join("a.js"), "evil").unwrap();
        let why = rt.ensure().unwrap().unwrap();
        assert!(why.contains("not the directory this primary made"), "{why}");
        assert_ne!(rt.path(), first);
        assert_eq!(std::fs::read_to_string(rt.preload("a.js")).unwrap(), "A");
        let second = rt.path().to_path_buf();
        drop(rt);
        assert!(!second.exists(), "the new one is removed at exit");
        assert!(first.join("a.js").exists(), "the other one is never removed");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn an_adopted_directory_keeps_its_lock() {
        let base = scratch("adopt");
        let old = RuntimeDir::create(&base, FILES).unwrap();
        let path = old.path().to_path_buf();
        let fd = old.lock.try_clone().map(OwnedFd::from).unwrap();
        // The exec of a self-upgrade: no destructor runs.
        std::mem::forget(old);
        let mut new = RuntimeDir::adopt(&path, Some(fd), FILES).unwrap();
        assert!(remove_stale(&base).is_empty(), "still locked");
        assert_eq!(new.ensure().unwrap(), None);
        new.own();
        drop(new);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
