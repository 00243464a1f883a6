//! `hotswap check`: validates a configuration as `hotswap run` would start
//! it, without starting anything (as `nginx -t`): the flags and the config
//! file through the very resolution `run` uses ([`Settings::load`]: every
//! key known, every value valid, with the line of a bad one), then the
//! worker command, found on `PATH` and executable. It binds nothing, so it
//! can run beside the primary it checks a new config for.
//!
//! It exits as `run` would at start: 2 for a usage or config error, 1 for
//! a command that cannot run, 0 with a short summary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::options::{Options, Settings};

/// Checks `flags` (and the config file they name); prints the summary or
/// the error.
pub fn run(flags: &Options) -> ExitCode {
    let what = match &flags.config {
        Some(p) => p.display().to_string(),
        None => "the command line".to_string(),
    };
    let settings = match Settings::load(flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswap: {e:#}");
            eprintln!("hotswap: {what}: check failed");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = crate::io::log_files::LogFiles::check(&settings) {
        eprintln!("hotswap: {e:#}");
        eprintln!("hotswap: {what}: check failed");
        return ExitCode::from(2);
    }
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let program = match programs(&settings.command).iter().try_for_each(|p| executable(p, &env).map(drop)) {
        Ok(()) if settings.build.is_some() => "(not looked for: --build may create it)".to_string(),
        Ok(()) => programs(&settings.command)
            .iter()
            .filter_map(|p| executable(p, &env).ok())
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) if settings.build.is_some() => format!("(not found yet: {e}; --build may create it)"),
        Err(e) => {
            eprintln!("hotswap: {e}");
            eprintln!("hotswap: {what}: check failed");
            return ExitCode::FAILURE;
        }
    };
    println!("hotswap: {what}: ok");
    println!("{}", summary(&settings, &program));
    ExitCode::SUCCESS
}

/// What the primary would run, one line per topic.
fn summary(s: &Settings, program: &str) -> String {
    let listen = if s.listen.is_empty() {
        "none given (socket activation, or what Node.js workers ask for)".to_string()
    } else {
        s.listen.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ")
    };
    let mut lines = vec![
        format!("  command: {} ({program})", shell_words(&s.command)),
        format!("  workers: {}, surge {}, balance {}", s.workers, s.surge, s.balance),
        format!("  listen:  {listen}"),
        format!(
            "  ready:   {} within {}; shutdown-timeout {}",
            s.ready,
            humantime::format_duration(s.ready_timeout),
            humantime::format_duration(s.shutdown_timeout)
        ),
        format!("  control: {}", s.control_path.display()),
    ];
    for (key, path) in [("out-file", &s.out_file), ("error-file", &s.error_file)] {
        if let Some(p) = path {
            lines.push(format!("  {key}: {}", p.display()));
        }
    }
    if let Some(m) = &s.metrics {
        lines.push(format!("  metrics: http://{m}/metrics"));
    }
    let addrs: Vec<_> = s.listen.iter().map(|l| l.addr.clone()).collect();
    if let Some(choice) = s.server_choice(&addrs) {
        lines.push(format!("  server:  {choice}"));
    }
    lines.join("\n")
}

fn shell_words(command: &[String]) -> String {
    match command {
        [sh, c, script] if sh == "/bin/sh" && c == "-c" => script.strip_prefix("exec ").unwrap_or(script).to_string(),
        _ => command.join(" "),
    }
}

/// The programs a command needs: its first word, and for a config file's
/// command string (`/bin/sh -c 'exec node app.js'`) the first word of the
/// line when it is a plain name (not a variable assignment or expansion,
/// which only the shell can resolve).
fn programs(command: &[String]) -> Vec<String> {
    let mut out: Vec<String> = command.first().cloned().into_iter().collect();
    if let [sh, c, script] = command {
        if sh == "/bin/sh" && c == "-c" {
            let first = script.strip_prefix("exec ").unwrap_or(script).split_whitespace().next().unwrap_or("");
            let plain = !first.is_empty() && !first.contains(['=', '$', '`', '(', ';', '&', '|', '<', '>', '{']);
            if plain && !matches!(first, "cd" | "exec" | "export" | "env" | "." | "source") {
                out.push(first.to_string());
            }
        }
    }
    out
}

/// Where `program` is, if it can be run: found on `PATH` (a bare name) or
/// there (a path), a file, executable.
fn executable(program: &str, env: &[(OsString, OsString)]) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = crate::sys::spawn::resolve_program(program, env)?;
    let meta = std::fs::metadata(&path).map_err(|e| anyhow::anyhow!("command {program}: {e}"))?;
    if !meta.is_file() {
        anyhow::bail!("command {program}: {} is not a file", path.display());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        anyhow::bail!("command {program}: {} is not executable (chmod +x it, or name its interpreter)", path.display());
    }
    Ok(absolute(&path))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_string_needs_its_first_plain_word() {
        let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".into(), format!("exec {s}")];
        assert_eq!(programs(&sh("node app.js")), vec!["/bin/sh", "node"]);
        assert_eq!(programs(&sh("NODE_ENV=production node app.js")), vec!["/bin/sh"]);
        assert_eq!(programs(&sh("$HOME/bin/app")), vec!["/bin/sh"]);
        assert_eq!(programs(&["./app".to_string(), "--port".into()]), vec!["./app"]);
        assert_eq!(shell_words(&sh("node app.js")), "node app.js");
    }
}
