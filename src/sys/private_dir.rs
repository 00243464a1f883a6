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
//! another's file). The runtime directory itself is
//! [`super::runtime_dir`]'s.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// What to do about an unsafe control socket directory.
pub const CONTROL_REMEDY: &str =
    "remove it, or choose another place with --control PATH (or HOTSWAP_CONTROL, or XDG_RUNTIME_DIR)";

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

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
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(&base);
    }
}
