//! Running unchanged Node.js apps: cluster apps, Express, Fastify, PM2 apps.
//!
//! A worker whose command is `node` (or a script whose `#!` line runs node)
//! is treated as a Node.js cluster worker unless `--node off`:
//! - it gets `NODE_UNIQUE_ID`, so Node sets it up as a cluster worker: the
//!   worker branch of a cluster app runs, and every `server.listen()` asks
//!   the primary for its socket ([`cluster`]);
//! - `NODE_OPTIONS` gains `--require` of a small preload shipped inside
//!   the binary ([`PRELOAD`]) that drains HTTP keep-alive connections
//!   correctly when a server closes, and makes a `process.send()` after the
//!   channel closed harmless; it removes itself from `NODE_OPTIONS` so the
//!   app's own child processes are untouched;
//! - it is stopped the way Node's cluster primary stops workers.
//!
//! Node deletes `NODE_UNIQUE_ID` and `NODE_CHANNEL_FD` from its environment
//! as it starts, so grandchildren never see them. Wrappers (`npm start`,
//! `yarn start`, `npx`, `pnpm`) start the app in a child process without
//! the channel: they are refused with a message that says what to run
//! ([`wrapper`]).

pub mod cluster;
pub mod primary;
pub mod wrapper;

pub use wrapper::check_wrapper;

use std::ffi::OsString;
use std::path::Path;

/// The drain preload, written into the primary's runtime directory at start.
pub const PRELOAD: &str = include_str!("preload.js");

/// The program a command runs: the first word, or for `/bin/sh -c 'exec
/// ...'` (a config file's command string) the first word after `exec`.
fn program(command: &[String]) -> Option<&str> {
    match command {
        [sh, c, script, ..] if sh.ends_with("sh") && c == "-c" => {
            script.strip_prefix("exec ").unwrap_or(script).split_whitespace().next()
        }
        [first, ..] => Some(first.as_str()),
        [] => None,
    }
}

fn base(program: &str) -> &str {
    Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or(program)
}

/// Whether `command` runs node: the program is `node`/`nodejs`, or a
/// script whose `#!` line names node. A relative path to the program is the
/// workers' (`cwd`, `--cwd`), as when they are started.
pub fn runs_node(command: &[String], path: &OsString, cwd: Option<&Path>) -> bool {
    let Some(prog) = program(command) else { return false };
    let is_node =
        |p: &str| matches!(base(p), "node" | "nodejs") || base(p).starts_with("node-v") || base(p) == "node.exe";
    if is_node(prog) {
        return true;
    }
    // A script run directly: look at its `#!` line.
    let resolved = if prog.contains('/') {
        Some(cwd.map_or_else(|| Path::new(prog).to_path_buf(), |d| d.join(prog)))
    } else {
        std::env::split_paths(path).map(|d| d.join(prog)).find(|p| p.is_file())
    };
    let Some(file) = resolved else { return false };
    let Ok(mut f) = std::fs::File::open(file) else { return false };
    let mut head = [0u8; 128];
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    let line = String::from_utf8_lossy(&head[..n]);
    line.starts_with("#!") && line.lines().next().is_some_and(|l| l.split_whitespace().any(is_node))
}

/// `NODE_OPTIONS` with `--require "PRELOAD"` in front of what the user has.
///
/// Node splits `NODE_OPTIONS` itself (`ParseNodeOptionsEnvVar` in
/// `src/node_options.cc`): spaces separate, double quotes group, and inside
/// them a backslash takes the next character as it is. So the path is
/// always quoted, with `"` and `\` escaped: a runtime directory under a
/// `TMPDIR` or `XDG_RUNTIME_DIR` holding spaces, quotes or backslashes
/// still names the preload.
pub fn node_options(existing: Option<&OsString>, preload: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut quoted = b"--require \"".to_vec();
    for &b in preload.as_os_str().as_bytes() {
        if b == b'"' || b == b'\\' {
            quoted.push(b'\\');
        }
        quoted.push(b);
    }
    quoted.push(b'"');
    let mut v = OsString::from_vec(quoted);
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        v.push(" ");
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
    fn node_commands_are_recognised() {
        let path = OsString::from("/nonexistent");
        assert!(runs_node(&cmd(&["node", "app.js"]), &path, None));
        assert!(runs_node(&cmd(&["/usr/local/bin/node", "--enable-source-maps", "app.js"]), &path, None));
        assert!(runs_node(&cmd(&["/bin/sh", "-c", "exec node server.js"]), &path, None));
        assert!(!runs_node(&cmd(&["python3", "app.py"]), &path, None));
        assert!(!runs_node(&cmd(&["nodemon", "app.js"]), &path, None));
    }

    #[test]
    fn a_script_with_a_node_shebang_is_node() {
        let dir = std::env::temp_dir().join(format!("hotswap-node-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("server");
        std::fs::write(&script, "#!/usr/bin/env node\nrequire('http')\n").unwrap();
        let py = dir.join("tool");
        std::fs::write(&py, "#!/usr/bin/env python3\n").unwrap();
        let path = OsString::from(dir.as_os_str());
        assert!(runs_node(&cmd(&["server"]), &path, None));
        assert!(runs_node(&cmd(&[script.to_str().unwrap()]), &path, None));
        assert!(!runs_node(&cmd(&["tool"]), &path, None));
        // A relative path is the workers' directory's (`--cwd`), not the
        // primary's (`../node_modules/.bin/next` from an app's directory).
        let sub = dir.join("app");
        std::fs::create_dir_all(&sub).unwrap();
        assert!(runs_node(&cmd(&["../server", "start"]), &path, Some(&sub)));
        assert!(!runs_node(&cmd(&["../server", "start"]), &path, None));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_preload_goes_in_front_of_the_users_node_options() {
        let p = Path::new("/run/h/preload.js");
        assert_eq!(node_options(None, p), OsString::from("--require \"/run/h/preload.js\""));
        let mine = OsString::from("--max-old-space-size=512");
        assert_eq!(
            node_options(Some(&mine), p),
            OsString::from("--require \"/run/h/preload.js\" --max-old-space-size=512")
        );
        // Node's own splitting: inside quotes a backslash escapes the next
        // character (a real Node worker under such paths: tests/it).
        assert_eq!(
            node_options(None, Path::new(r#"/a b/q"u\ü/p.js"#)),
            OsString::from(r#"--require "/a b/q\"u\\ü/p.js""#)
        );
    }
}
