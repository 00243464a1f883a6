//! Package-manager wrappers (`npm start`, `npx next start`, `yarn`, `pnpm`):
//! they start the app in a child process that does not get hotswap's IPC
//! channel, so a command that runs one is refused, with the command that
//! runs the app itself instead.
//!
//! What to run instead is read where the wrapper would read it: the script
//! of `package.json` that `npm start` or `npm run NAME` runs, or the program
//! `npx X` runs, found in `node_modules/.bin` of the directory or one above
//! it (npm puts each of them on a script's `PATH`). A `.bin` program that is
//! a node script (`next`, `fastify`) runs under hotswap as it is, and is
//! named; one known to run the app in a child process of its own (`nest
//! start` compiles the app, then spawns node) is not, and a `node ...`
//! script beside it (NestJS's `start:prod`) is named instead.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{base, program, runs_node};

/// The wrappers that swallow the IPC channel.
const WRAPPERS: [&str; 5] = ["npm", "yarn", "npx", "pnpm", "pnpx"];

/// `.bin` programs that run the app in a child process of their own (they
/// compile it, watch it or restart it), so naming them would not help.
const SPAWNERS: [&str; 4] = ["nest", "nodemon", "ts-node-dev", "node-dev"];

/// The scripts looked at for a `node ...` command when the start script
/// runs a spawner (`start:prod` is NestJS's).
const PRODUCTION_SCRIPTS: [&str; 3] = ["start:prod", "start:production", "serve"];

/// What a wrapper command would run.
#[derive(Debug, PartialEq)]
enum Runs<'a> {
    /// The `package.json` script of this name (`npm start`, `npm run x`).
    Script(&'a str),
    /// The script of this name if there is one, else the `.bin` program of
    /// this name with these arguments (`yarn dev`, `pnpm next start`).
    ScriptOrBin(&'a str, &'a [String]),
    /// This program from `node_modules/.bin` with these arguments (`npx`).
    Bin(&'a str, &'a [String]),
    /// Something else (`npm install`, a wrapper with nothing after it).
    Unknown,
}

/// The command's words: for `sh -c 'exec npm start'` (a config file's
/// command string), the script's.
fn words(command: &[String]) -> Vec<String> {
    match command {
        [sh, c, script, ..] if sh.ends_with("sh") && c == "-c" => {
            script.strip_prefix("exec ").unwrap_or(script).split_whitespace().map(String::from).collect()
        }
        _ => command.to_vec(),
    }
}

/// Reads a wrapper's arguments (the words after its name).
fn what_it_runs<'a>(wrapper: &str, args: &'a [String]) -> Runs<'a> {
    // Options in front of the subcommand (`npm --silent start`, `npx -y
    // next`), with npx's `-p PKG`/`--package PKG`, whose value is no program.
    let mut i = 0;
    while let Some(a) = args.get(i).filter(|a| a.starts_with('-')) {
        i += if matches!(a.as_str(), "-p" | "--package") { 2 } else { 1 };
    }
    let rest = args.get(i..).unwrap_or_default();
    let bin = |r: &'a [String]| match r.split_first() {
        Some((prog, args)) => Runs::Bin(prog, args),
        None => Runs::Unknown,
    };
    if matches!(wrapper, "npx" | "pnpx") {
        return bin(rest);
    }
    match rest {
        [cmd, name, ..] if matches!(cmd.as_str(), "run" | "run-script") => Runs::Script(name),
        [cmd, rest @ ..] if matches!(cmd.as_str(), "exec" | "x") => bin(rest),
        [cmd, ..] if cmd == "start" => Runs::Script(cmd),
        // `yarn dev`, `pnpm next start`: yarn and pnpm run the script of
        // that name, or else the `.bin` program.
        [name, rest @ ..] if wrapper != "npm" && !matches!(name.as_str(), "install" | "add" | "dlx" | "create") => {
            Runs::ScriptOrBin(name, rest)
        }
        _ => Runs::Unknown,
    }
}

/// Refuses a command that starts the app through a package-manager
/// wrapper, saying what to run instead.
pub fn check_wrapper(command: &[String], cwd: &Path) -> Result<(), String> {
    let Some(name) = program(command).map(base) else { return Ok(()) };
    if !WRAPPERS.contains(&name) {
        return Ok(());
    }
    let words = words(command);
    let runs = what_it_runs(name, words.get(1..).unwrap_or_default());
    let instead = instead(&runs, cwd);
    Err(format!(
        "`{name}` runs your app in a child process that does not get hotswap's IPC channel, so hotswap \
         could neither hand it its sockets nor tell when it is ready or how to stop it; run it directly: {instead}"
    ))
}

/// The advice: the command that runs the app itself, and where it was read.
fn instead(runs: &Runs, cwd: &Path) -> String {
    let scripts = scripts(cwd);
    let script = |name: &str| scripts.iter().find(|(n, _)| n == name).map(|(_, s)| s.as_str());
    let from_script = |name: &str, text: &str| match direct(text, cwd) {
        Direct::Runs(cmd) => Some(format!("`hotswap run ... -- {cmd}` (what your package.json's {name} script runs)")),
        Direct::Spawner(prog) => PRODUCTION_SCRIPTS.iter().find_map(|p| {
            let text = script(p)?.trim();
            text.starts_with("node ").then(|| {
                format!(
                    "`hotswap run ... -- {text}` (your package.json's {p} script; its {name} script's `{prog}` \
                     runs your app in a child process of its own)"
                )
            })
        }),
        Direct::Unknown => None,
    };
    let found = match *runs {
        Runs::Script(name) => script(name).and_then(|text| from_script(name, text)),
        Runs::ScriptOrBin(name, args) => match script(name) {
            Some(text) => from_script(name, text),
            None => from_bin(name, args, cwd),
        },
        Runs::Bin(prog, args) => from_bin(prog, args, cwd),
        Runs::Unknown => None,
    };
    found.unwrap_or_else(|| "`hotswap run ... -- node app.js` (the file your start script runs)".to_string())
}

fn from_bin(prog: &str, args: &[String], cwd: &Path) -> Option<String> {
    let bin = node_bin(prog, cwd).filter(|_| !SPAWNERS.contains(&prog))?;
    let cmd = std::iter::once(bin).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");
    Some(format!("`hotswap run ... -- {cmd}` (the program `{prog}` in node_modules/.bin, a node script)"))
}

/// What a `package.json` script runs, as hotswap could run it.
enum Direct {
    /// This command line.
    Runs(String),
    /// A `.bin` program that runs the app in a child process of its own.
    Spawner(String),
    /// Neither `node ...` nor a node script in `node_modules/.bin`.
    Unknown,
}

fn direct(script: &str, cwd: &Path) -> Direct {
    let script = script.trim();
    let mut words = script.split_whitespace();
    let Some(first) = words.next() else { return Direct::Unknown };
    if first == "node" {
        return Direct::Runs(script.to_string());
    }
    if SPAWNERS.contains(&first) {
        return Direct::Spawner(first.to_string());
    }
    match node_bin(first, cwd) {
        Some(bin) => Direct::Runs(std::iter::once(bin.as_str()).chain(words).collect::<Vec<_>>().join(" ")),
        None => Direct::Unknown,
    }
}

/// `node_modules/.bin/PROG` of `cwd` or the nearest directory above it that
/// has one, as a path relative to `cwd`, if it is a node script.
fn node_bin(prog: &str, cwd: &Path) -> Option<String> {
    if prog.contains('/') {
        return None;
    }
    let mut up = PathBuf::new();
    for dir in cwd.ancestors() {
        let bin = dir.join("node_modules/.bin").join(prog);
        if bin.is_file() {
            let rel = up.join("node_modules/.bin").join(prog);
            let shown = rel.to_str()?.to_string();
            // Read the `#!` line of the file as the command will name it.
            return runs_node(&[bin.to_str()?.to_string()], &OsString::new(), None).then_some(shown);
        }
        up.push("..");
    }
    None
}

/// The `scripts` of `package.json` in `dir`.
fn scripts(dir: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(dir.join("package.json")) else { return Vec::new() };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return Vec::new() };
    let Some(scripts) = v.get("scripts").and_then(|s| s.as_object()) else { return Vec::new() };
    scripts.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A directory with this package.json and these `.bin` programs (name,
    /// first line) in `node_modules/.bin` of `bin_depth` directories up.
    struct Project(PathBuf, PathBuf);

    impl Project {
        fn new(tag: &str, package: &str, bins: &[(&str, &str)], nested: bool) -> Project {
            let top = std::env::temp_dir().join(format!("hotswap-wrapper-{tag}-{}", std::process::id()));
            let app = if nested { top.join("app") } else { top.clone() };
            std::fs::create_dir_all(top.join("node_modules/.bin")).unwrap();
            std::fs::create_dir_all(&app).unwrap();
            std::fs::write(app.join("package.json"), package).unwrap();
            for (name, line) in bins {
                std::fs::write(top.join("node_modules/.bin").join(name), format!("{line}\n")).unwrap();
            }
            Project(top, app)
        }
        fn refuse(&self, command: &[&str]) -> String {
            check_wrapper(&cmd(command), &self.1).unwrap_err()
        }
    }

    impl Drop for Project {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const NODE: &str = "#!/usr/bin/env node";

    #[test]
    fn a_node_start_script_is_named_as_it_is() {
        let p = Project::new("node", r#"{"scripts":{"start":"node server.js --port 3000"}}"#, &[], false);
        let err = p.refuse(&["npm", "start"]);
        assert!(err.contains("`npm` runs your app in a child process"), "{err}");
        assert!(err.contains("-- node server.js --port 3000` (what your package.json's start script runs)"), "{err}");
        assert!(p.refuse(&["/bin/sh", "-c", "exec yarn start"]).contains("-- node server.js --port 3000"));
        assert!(p.refuse(&["npm", "--silent", "run", "start"]).contains("-- node server.js"));
        assert!(check_wrapper(&cmd(&["node", "server.js"]), &p.1).is_ok());
    }

    #[test]
    fn a_start_script_running_a_node_program_of_node_modules_names_that_program() {
        // Next.js: `"start": "next start"`, with node_modules one directory up.
        let p = Project::new("next", r#"{"scripts":{"start":"next start -p 3000"}}"#, &[("next", NODE)], true);
        let err = p.refuse(&["npm", "start"]);
        assert!(err.contains("`hotswap run ... -- ../node_modules/.bin/next start -p 3000`"), "{err}");
        let err = p.refuse(&["npx", "next", "start"]);
        assert!(err.contains("`hotswap run ... -- ../node_modules/.bin/next start` (the program `next`"), "{err}");
        assert!(p.refuse(&["npx", "-y", "next", "start"]).contains("-- ../node_modules/.bin/next start`"));
        assert!(p.refuse(&["pnpm", "next", "start"]).contains("-- ../node_modules/.bin/next start`"));
        assert!(p.refuse(&["pnpm", "start"]).contains("-- ../node_modules/.bin/next start -p 3000`"));
    }

    #[test]
    fn a_program_that_is_no_node_script_is_not_named() {
        // pnpm's `.bin` entries are shell scripts: hotswap would not see node.
        let p = Project::new("sh", r#"{"scripts":{"start":"next start"}}"#, &[("next", "#!/bin/sh")], false);
        let err = p.refuse(&["npm", "start"]);
        assert!(err.contains("`hotswap run ... -- node app.js` (the file your start script runs)"), "{err}");
        assert!(p.refuse(&["npx", "ts-node", "a.ts"]).contains("-- node app.js`"));
    }

    #[test]
    fn a_start_script_that_spawns_the_app_names_the_node_script_beside_it() {
        // The NestJS starter's package.json.
        let nest = r#"{"scripts":{"start":"nest start","start:prod":"node dist/main"}}"#;
        let p = Project::new("nest", nest, &[("nest", NODE)], false);
        let err = p.refuse(&["npm", "start"]);
        assert!(
            err.contains(
                "`hotswap run ... -- node dist/main` (your package.json's start:prod script; its start script's `nest`"
            ),
            "{err}"
        );
        assert!(p.refuse(&["npm", "run", "start:prod"]).contains("-- node dist/main` (what your"));
        assert!(p.refuse(&["npx", "nest", "start"]).contains("-- node app.js`"), "nest itself is never named");
    }

    #[test]
    fn what_a_wrapper_runs() {
        let a = cmd(&["start"]);
        assert_eq!(what_it_runs("npm", &a), Runs::Script("start"));
        let a = cmd(&["run", "dev"]);
        assert_eq!(what_it_runs("npm", &a), Runs::Script("dev"));
        let a = cmd(&["install"]);
        assert_eq!(what_it_runs("npm", &a), Runs::Unknown);
        assert_eq!(what_it_runs("yarn", &a), Runs::Unknown);
        let a = cmd(&["-p", "next", "next", "start"]);
        assert_eq!(what_it_runs("npx", &a), Runs::Bin("next", &a[3..]));
        let a = cmd(&["exec", "next", "start"]);
        assert_eq!(what_it_runs("npm", &a), Runs::Bin("next", &a[2..]));
        let a = cmd(&["dev", "--turbo"]);
        assert_eq!(what_it_runs("yarn", &a), Runs::ScriptOrBin("dev", &a[1..]));
        assert_eq!(what_it_runs("npx", &[]), Runs::Unknown);
    }
}
