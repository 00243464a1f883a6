//! Where the control socket is when no option says: the default path, also
//! used by the client subcommands that find a running primary.

use std::path::PathBuf;

/// The control socket's path when neither `--control` nor
/// `HOTSWAP_CONTROL` names one: `$XDG_RUNTIME_DIR/hotswap.sock`,
/// `/run/hotswap.sock` for root, else `/tmp/hotswap-UID/hotswap.sock`.
pub fn default_control_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("hotswap.sock");
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        PathBuf::from("/run/hotswap.sock")
    } else {
        PathBuf::from(format!("/tmp/hotswap-{uid}/hotswap.sock"))
    }
}

/// `--control`, else the default.
pub fn control_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(default_control_path)
}
