//! hotswap: a zero-downtime hot-reload supervisor for network services.
//!
//! A map of the crate, one room per idea:
//! - [`cli`]: the command line (subcommands and flags).
//! - [`config`]: settings from flags and `hotswap.toml`, re-read on reload.
//! - [`listeners`]: parsing `--listen`, binding the sockets the primary keeps for life.
//! - [`supervisor`]: the event loop that owns all state: workers, slots, generations.
//! - [`reload`]: the rolling reload, one worker at a time.
//! - [`exits`]: reaping children by pid; crash restarts with backoff.
//! - [`worker`]: one worker: its state and how it is started.
//! - [`spawn`]: fork and exec with exact fds and `LISTEN_PID`.
//! - [`ipc`]: the newline-delimited JSON channel to each worker.
//! - [`output`]: workers' stdout/stderr, prefixed and passed through.
//! - [`control`]: the control socket: protocol and server.
//! - [`client`]: the `reload`, `upgrade`, `status`, `stop`, `events` subcommands.
//! - [`signals`]: Unix signals as events.
//! - [`guardian`]: a helper process that kills worker trees if the primary is killed.
//! - [`status`]: what `hotswap status` shows.
//! - [`stop`]: the graceful stop (and the forced one).
//! - [`watch`]: development mode: file changes become reloads.
//! - [`build`]: the `--build` command run before a reload.
//! - [`upgrade`]: self-upgrade: re-exec in place, handing everything over.
//! - [`events`]: lifecycle events streamed to `hotswap events`.
//! - [`notify`]: `sd_notify` to systemd (ready, reloading, status, watchdog).
//! - [`notify_socket`]: each worker's own `NOTIFY_SOCKET` (`--ready notify`).

mod build;
mod cli;
mod client;
mod config;
mod control;
mod events;
mod exits;
mod guardian;
mod ipc;
mod listeners;
mod notify;
mod notify_socket;
mod output;
mod reload;
mod signals;
mod spawn;
mod status;
mod stop;
mod supervisor;
mod upgrade;
mod watch;
mod worker;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, RunArgs};

fn main() -> ExitCode {
    // Before anything can replace the binary on disk.
    let origin = supervisor::Origin {
        exe: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
        argv: std::env::args_os().collect(),
    };
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run(args) => run(args, origin),
        Command::Upgrade(c) => client::upgrade(&control::resolve(c.control)),
        Command::UpgradeCheck => return upgrade::check_main(),
        Command::Reload(r) => client::reload(&control::resolve(r.control.control), r.no_build),
        Command::Status(s) => client::status(&control::resolve(s.control.control), s.json),
        Command::Stop(c) => client::stop(&control::resolve(c.control)),
        Command::Events(s) => client::events(&control::resolve(s.control.control), s.json),
        Command::Completions { shell } => {
            use clap::CommandFactory;
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
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HOTSWAP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(args: RunArgs, origin: supervisor::Origin) -> anyhow::Result<ExitCode> {
    // A previous image of this primary handed over (self-upgrade)?
    match upgrade::take_over() {
        Some(Ok(t)) => {
            let notifier = notify::Notifier::from_env()?;
            let (code, why) =
                runtime()?.block_on(supervisor::resume(args, origin, t.state, t.inherited, t.rollback, notifier))?;
            return Ok(finish(code, why));
        }
        Some(Err(refused)) => {
            tracing::error!("cannot take over from the previous image: {}; rolling back", refused.why);
            return Err(upgrade::rollback(refused));
        }
        None => {}
    }
    let settings = match config::Settings::load(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswap: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    spawn::resolve_program(&settings.command[0], &worker::base_env())?;
    let notifier = notify::Notifier::from_env()?;
    // Before any thread exists: taking systemd's sockets edits the environment.
    let listeners = listeners::open_all(&settings.listen, settings.backlog)?;
    let (code, why) = runtime()?.block_on(supervisor::run(args, origin, settings, listeners, notifier))?;
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
    use clap::CommandFactory;
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
