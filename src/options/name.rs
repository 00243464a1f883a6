//! `--name APP`: a primary found by its name instead of a `--control`
//! path, as PM2's apps are.
//!
//! The registry is a directory of this user's: `$XDG_RUNTIME_DIR/hotswap/`,
//! `/run/hotswap/` for root, else `/tmp/hotswap-UID/` (the directory of the
//! default control socket, private to the user, checked as every control
//! socket directory is). A named primary's control socket is `APP.sock`
//! there; `hotswap start` keeps beside it `APP.log` (the primary's output,
//! rotated to `APP.log.1`) and `APP.json` (how it was started, for
//! `hotswap restart`).
//!
//! No lock file is needed: a name is taken by binding its socket, which the
//! primary refuses to do while another primary answers on it, and a socket
//! whose primary is gone (nothing accepts) is removed and bound again.

use std::path::PathBuf;

/// Longest name accepted (a socket path has at most 108 bytes).
const MAX_LEN: usize = 48;

/// A valid app name: `web`, `api-v2`, `shop.eu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppName(String);

impl AppName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `APP.sock` in the registry: the control socket of the primary of
    /// that name.
    pub fn socket(&self) -> PathBuf {
        dir().join(format!("{}.sock", self.0))
    }

    /// `APP.log`: the output of a primary `hotswap start` started.
    pub fn log(&self) -> PathBuf {
        dir().join(format!("{}.log", self.0))
    }

    /// `APP.json`: how `hotswap start` started it (arguments, directory,
    /// environment), for `hotswap restart`.
    pub fn record(&self) -> PathBuf {
        dir().join(format!("{}.json", self.0))
    }
}

impl std::str::FromStr for AppName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && !s.starts_with(['.', '-'])
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(format!(
                "invalid name {s:?}: 1 to {MAX_LEN} letters, digits, '-', '_' or '.', not starting with '.' or '-'"
            ));
        }
        if s == "hotswap" {
            // `/tmp/hotswap-UID/hotswap.sock` is the unnamed primary's.
            return Err("the name \"hotswap\" is the unnamed primary's; choose another".into());
        }
        Ok(AppName(s.to_string()))
    }
}

impl std::fmt::Display for AppName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The registry: `$XDG_RUNTIME_DIR/hotswap`, `/run/hotswap` for root, else
/// `/tmp/hotswap-UID`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("hotswap");
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        PathBuf::from("/run/hotswap")
    } else {
        PathBuf::from(format!("/tmp/hotswap-{uid}"))
    }
}

/// The names with a control socket or a start record in the registry,
/// sorted (whether a primary answers is for the caller to find out).
pub fn listed() -> Vec<AppName> {
    let Ok(entries) = std::fs::read_dir(dir()) else { return Vec::new() };
    let mut names: Vec<AppName> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let stem = file.strip_suffix(".sock").or_else(|| file.strip_suffix(".json"))?;
            stem.parse().ok()
        })
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for good in ["web", "api-v2", "shop.eu", "a_b", "X9"] {
            assert_eq!(good.parse::<AppName>().unwrap().as_str(), good);
        }
        for bad in ["", ".hidden", "-x", "a/b", "..", "a b", "hotswap", &"x".repeat(49)] {
            assert!(bad.parse::<AppName>().is_err(), "{bad:?} accepted");
        }
        let web: AppName = "web".parse().unwrap();
        assert_eq!(web.socket().file_name().unwrap(), "web.sock");
        assert_eq!(web.socket().parent(), Some(dir().as_path()));
    }
}
