//! The manual: `hotswap.1`, one page per subcommand, and `hotswap.toml(5)`,
//! all generated from the very definitions the command line is parsed with,
//! so that a page cannot describe a flag or a key that does not exist.
//!
//! The config page lists `hotswap run`'s long flags as keys: [`Options`]
//! derives both from one declaration (`crate::options`), and a test checks
//! that the file accepts every key the page names.
//!
//! [`Options`]: crate::options::Options

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// `run`'s arguments that are not config-file keys: the file itself, and
/// the positional command (documented apart, as it takes two forms).
const NOT_KEYS: [&str; 2] = ["config", "command"];

/// Writes `hotswap.1`, `hotswap-SUB.1` for each visible subcommand, and
/// `hotswap.toml.5` into `dir` (into `../man5` when `dir` is a `man1`).
pub fn write_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = Cli::command();
    // The top page lists the subcommands; `help` has no page of its own.
    let mut pages = vec![("hotswap.1".to_string(), cmd.clone().disable_help_subcommand(true))];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("hotswap-{}", sub.get_name());
        pages.push((format!("{name}.1"), sub.clone().name(name).version(env!("CARGO_PKG_VERSION"))));
    }
    for (file, page) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).render(&mut buf)?;
        let path = dir.join(&file);
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    }
    // Into a man hierarchy (`.../man/man1`), the file format's page goes to
    // its section's folder, where `man hotswap.toml` looks.
    let five = match (dir.file_name(), dir.parent()) {
        (Some(name), Some(parent)) if name == "man1" => parent.join("man5"),
        _ => dir.to_path_buf(),
    };
    std::fs::create_dir_all(&five).with_context(|| format!("creating {}", five.display()))?;
    let path = five.join("hotswap.toml.5");
    std::fs::write(&path, config_page()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The config file's keys: `run`'s long flags, but for `--config` (the
/// file itself) and the command (documented apart).
pub fn config_keys() -> Vec<(String, clap::Arg)> {
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run").expect("the run subcommand");
    run.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| Some((a.get_long()?.to_string(), a.clone())))
        .filter(|(long, _)| !NOT_KEYS.contains(&long.as_str()) && long != "help" && long != "version")
        .collect()
}

/// `hotswap.toml(5)` in roff.
pub fn config_page() -> String {
    let mut p = String::new();
    let version = env!("CARGO_PKG_VERSION");
    p.push_str(&format!(".TH hotswap.toml 5 \"\" \"hotswap {version}\" \"File Formats\"\n"));
    p.push_str(".SH NAME\nhotswap.toml \\- configuration file of hotswap run\n");
    p.push_str(".SH SYNOPSIS\n\\fBhotswap run \\-\\-config\\fR \\fI/etc/hotswap/APP.toml\\fR\n");
    p.push_str(".SH DESCRIPTION\n");
    p.push_str(&text(
        "A TOML file with any of the options of hotswap run: each key is the long flag without its dashes \
         (--ready-timeout 10s is ready-timeout = \"10s\"). Flags given on the command line override the file. \
         Unknown keys are an error, reported with the key and its line; hotswap check --config FILE checks a \
         file without starting anything.",
    ));
    p.push_str(".PP\n");
    p.push_str(&text(
        "The file is read again on every reload, so a deploy can change the command, the worker count, the \
         timeouts and the readiness mode without a restart. Listeners, the control socket and the backlog are \
         bound once: a change to them is reported as needing a restart.",
    ));
    p.push_str(".PP\n");
    p.push_str(&text(
        "Durations are strings with a unit (\"500ms\", \"10s\", \"2m\"); sizes take K, M or G (\"512M\"); \
         signals are names (\"SIGQUIT\" or \"QUIT\"); flags that repeat are arrays.",
    ));
    p.push_str(".SH KEYS\n");
    p.push_str(".TP\n\\fBcommand\\fR = [\"PROGRAM\", \"ARG\", ...] | \"SHELL LINE\"\n");
    p.push_str(&text(
        "The worker command: an array is run as it is; a string is run by /bin/sh -c. The command after -- on \
         the command line overrides it.",
    ));
    for (key, arg) in config_keys() {
        let value = arg
            .get_value_names()
            .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| "true".into());
        let repeats = matches!(arg.get_action(), clap::ArgAction::Append);
        let value = if repeats { format!("[\"{value}\", ...]") } else { value };
        p.push_str(&format!(".TP\n\\fB{}\\fR = {}\n", escape(&key), escape(&value)));
        let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
        p.push_str(&text(&help));
    }
    p.push_str(".SH EXAMPLE\n.nf\n");
    for line in include_str!("../contrib/systemd/example.toml").lines() {
        p.push_str(&escape(line));
        p.push('\n');
    }
    p.push_str(".fi\n");
    p.push_str(".SH SEE ALSO\n\\fBhotswap\\-run\\fR(1), \\fBhotswap\\-check\\fR(1), \\fBhotswap\\fR(1)\n");
    p
}

/// A paragraph of running text.
fn text(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push_str(&escape(line));
        out.push('\n');
    }
    out
}

/// Escapes what roff would read as markup: backslashes, dashes (which
/// would hyphenate), and a control character at the start of a line.
fn escape(s: &str) -> String {
    let body = s.replace('\\', "\\e").replace('-', "\\-");
    if body.starts_with('.') || body.starts_with('\'') {
        format!("\\&{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;

    /// Every key the page names is one the file accepts (a wrong value is
    /// fine here: the point is that it is not an unknown field).
    #[test]
    fn every_key_on_the_page_is_a_config_key() {
        let keys = config_keys();
        assert!(keys.len() > 20, "{}", keys.len());
        for (key, _) in keys {
            if let Err(e) = Options::from_toml(&format!("{key} = \"\"\n")) {
                let e = format!("{e:#}");
                assert!(!e.contains("unknown field"), "{key}: {e}");
            }
        }
    }

    #[test]
    fn the_page_is_roff_and_shows_the_keys() {
        let page = config_page();
        assert!(page.starts_with(".TH hotswap.toml 5"));
        assert!(page.contains("\\fBready\\-timeout\\fR = DUR"), "{page}");
        assert!(page.contains("\\fBlisten\\fR = [\"ADDR\", ...]"), "{page}");
        assert!(!page.contains("\\fBconfig\\fR"));
        // No line starts with a stray dot or quote from the help text.
        for line in page.lines() {
            assert!(!line.starts_with('\''), "{line}");
        }
    }

    #[test]
    fn escape_neutralises_roff() {
        assert_eq!(escape(".x"), "\\&.x");
        assert_eq!(escape("a-b\\c"), "a\\-b\\ec");
    }
}
