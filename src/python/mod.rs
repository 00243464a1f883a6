//! What unchanged Python servers need from hotswap: the drain preload.
//!
//! uvicorn's shutdown (also under gunicorn's `UvicornWorker`) closes idle
//! keep-alive connections at once, losing requests that clients had
//! already sent on them. hotswap puts a `sitecustomize` module
//! ([`SITECUSTOMIZE`], written into the runtime directory) first on a
//! Python worker's `PYTHONPATH`; it patches uvicorn's HTTP protocols when
//! the app imports them, so that shutdown answers each connection's next
//! request with `Connection: close` and closes idle ones only after a
//! grace. Depends on nothing else in the crate.

use std::ffi::OsString;
use std::path::Path;

/// The preload, written as `<runtime dir>/python/sitecustomize.py`.
pub const SITECUSTOMIZE: &str = include_str!("sitecustomize.py");

/// Programs that are Python: the interpreter, or the servers' scripts.
fn is_python(program: &str) -> bool {
    let base = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or(program);
    base.starts_with("python") || matches!(base, "uvicorn" | "gunicorn" | "hypercorn" | "pypy" | "pypy3")
}

/// Whether `command` runs Python: `python3 ...`, `uvicorn ...` (and the
/// other servers' entry points), `sh -c "exec python3 ..."`, or a script
/// whose `#!` line names python. `path` is the `PATH` to find a bare name in.
pub fn runs_python(command: &[String], path: &OsString) -> bool {
    let program = match command {
        [sh, c, script, ..] if sh.ends_with("sh") && c == "-c" => {
            script.strip_prefix("exec ").unwrap_or(script).split_whitespace().next()
        }
        [first, ..] => Some(first.as_str()),
        [] => None,
    };
    let Some(program) = program else { return false };
    if is_python(program) {
        return true;
    }
    let resolved = if program.contains('/') {
        Some(std::path::PathBuf::from(program))
    } else {
        std::env::split_paths(path).map(|d| d.join(program)).find(|p| p.is_file())
    };
    let Some(file) = resolved else { return false };
    let Ok(mut f) = std::fs::File::open(file) else { return false };
    let mut head = [0u8; 128];
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    let line = String::from_utf8_lossy(&head[..n]);
    line.starts_with("#!") && line.lines().next().is_some_and(|l| l.split_whitespace().any(is_python))
}

/// `PYTHONPATH` for a Python worker: the preload's directory first, then
/// whatever the primary's environment had.
pub fn pythonpath(existing: Option<&OsString>, dir: &Path) -> OsString {
    let mut v = OsString::from(dir.as_os_str());
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        v.push(":");
        v.push(e);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn python_commands_are_recognised() {
        let path = OsString::from("/nonexistent");
        assert!(runs_python(&cmd(&["python3", "app.py"]), &path));
        assert!(runs_python(&cmd(&["/usr/bin/python3.11", "-m", "uvicorn"]), &path));
        assert!(runs_python(&cmd(&["uvicorn", "--fd", "3", "app:app"]), &path));
        assert!(runs_python(&cmd(&["/bin/sh", "-c", "exec gunicorn app:app"]), &path));
        assert!(!runs_python(&cmd(&["node", "app.js"]), &path));
        assert!(!runs_python(&cmd(&[]), &path));
    }

    #[test]
    fn pythonpath_keeps_what_was_there() {
        let dir = Path::new("/run/hotswap-1/python");
        assert_eq!(pythonpath(None, dir), "/run/hotswap-1/python");
        assert_eq!(pythonpath(Some(&"".into()), dir), "/run/hotswap-1/python");
        assert_eq!(pythonpath(Some(&"/app:/lib".into()), dir), "/run/hotswap-1/python:/app:/lib");
    }
}
