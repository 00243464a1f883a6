//! The `hotswap` binary: parses the command line and hands each subcommand
//! to its part of the library (see `lib.rs` for the map).

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use hotswap::cli::{Cli, Command};
use hotswap::options::{control_path, Options, Settings};
use hotswap::supervisor::{self, Origin};
use hotswap::sys::{guardian, listeners, sd_notify::Systemd, spawn};
use hotswap::{client, handover};

fn main() -> ExitCode {
    // Before anything can replace the binary on disk.
    let origin = Origin {
        exe: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
        argv: std::env::args_os().collect(),
    };
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run(flags) => run(flags, origin),
        Command::Upgrade(c) => client::upgrade(&control_path(c.control)),
        Command::UpgradeCheck => return handover::check_main(),
        Command::Reload(r) => client::reload(&control_path(r.control.control), r.no_build, r.surge),
        Command::Status(s) => client::status(&control_path(s.control.control), s.json),
        Command::Stop(c) => client::stop(&control_path(c.control)),
        Command::Events(s) => client::events(&control_path(s.control.control), s.json),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hotswap", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpages { dir } => manpages(&dir),
        Command::Guardian => guardian::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hotswap: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HOTSWAP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(flags: Options, origin: Origin) -> anyhow::Result<ExitCode> {
    // A previous image of this primary handed over (self-upgrade)?
    match handover::take_over() {
        Some(Ok(t)) => {
            let systemd = Systemd::from_env()?;
            let (code, why) =
                runtime()?.block_on(supervisor::resume(flags, origin, t.state, t.inherited, t.rollback, systemd))?;
            return Ok(finish(code, why));
        }
        Some(Err(refused)) => {
            tracing::error!("cannot take over from the previous image: {}; rolling back", refused.why);
            return Err(handover::rollback(refused));
        }
        None => {}
    }
    let settings = match Settings::load(&flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswap: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let env = supervisor::base_env();
    spawn::resolve_program(&settings.command[0], &env)?;
    let systemd = Systemd::from_env()?;
    // Before any thread exists: taking systemd's sockets edits the environment.
    let node = supervisor::runs_node(&settings, &env);
    let listeners = listeners::open_all(&settings.listen, settings.backlog, node)?;
    let (code, why) = runtime()?.block_on(supervisor::run(flags, origin, settings, listeners, systemd))?;
    Ok(finish(code, why))
}

/// The primary's runtime, for a fresh start and for a self-upgrade alike.
/// One thread: workers must be forked from the thread that lives as long as
/// the primary (their parent-death signal follows that thread), and an
/// in-place exec keeps only that thread's children safe. (tokio's blocking
/// pool is capped so the thread count stays flat over a long run.)
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(2).build()
}

fn finish(code: i32, why: String) -> ExitCode {
    if code == 0 {
        tracing::info!("{why}");
    } else {
        eprintln!("hotswap: {why}");
    }
    ExitCode::from(code as u8)
}

/// Writes `hotswap.1` and one page per subcommand (`hotswap-run.1`, ...).
fn manpages(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut pages = vec![("hotswap".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("hotswap-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name).version(env!("CARGO_PKG_VERSION"))));
    }
    for (name, page) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).render(&mut buf)?;
        std::fs::write(dir.join(format!("{name}.1")), buf)?;
    }
    Ok(ExitCode::SUCCESS)
}
