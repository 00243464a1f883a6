//! The `hotswap` binary: parses the command line and hands each subcommand
//! to its part of the library (see `lib.rs` for the map).

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use hotswap::cli::{Cli, Command};
use hotswap::io::log_files::LogFiles;
use hotswap::io::log_format::set_style;
use hotswap::io::output::{LogSink, Output};
use hotswap::options::{Options, Settings};
use hotswap::supervisor::{self, Origin};
use hotswap::sys::{fd_limit, guardian, listeners, sd_notify::Systemd, spawn};
use hotswap::{client, daemon, handover};

/// How long an exiting primary waits for its output to be written (a
/// stalled stderr reader must not keep it from exiting).
const EXIT_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    // Before anything can replace the binary on disk.
    let origin = Origin {
        exe: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
        argv: std::env::args_os().collect(),
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A self-upgrade to a release that rejects the primary's command
            // line: the previous image takes everything back.
            if e.use_stderr() {
                let why = format!("the new binary rejects the command line: {}", first_line(&e.to_string()));
                if let Some(err) = handover::give_back_early(&why) {
                    eprintln!("hotswap: {err:#}");
                    return ExitCode::FAILURE;
                }
            }
            e.exit()
        }
    };
    init_logging();
    if std::env::var_os(handover::STATE_ENV).is_some() && !matches!(cli.command, Command::Run(_)) {
        // A handover to a binary that reads the primary's argv as another
        // subcommand: give everything back rather than run that.
        let err = handover::give_back_early("the new binary does not read the command line as `hotswap run`");
        eprintln!("hotswap: {:#}", err.unwrap_or_else(|| anyhow::anyhow!("no handover")));
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(flags) => run(flags, origin),
        Command::Check(flags) => return hotswap::check::run(&flags),
        Command::Start(flags) => daemon::start(&flags, std::env::args_os().skip(2).collect()),
        Command::Restart(n) => daemon::restart(&n.app),
        Command::Scale(a) => scale(a),
        Command::Import { file, output, force } => hotswap::import::run(&file, &output, force),
        Command::Ls { json } => hotswap::apps::ls(json),
        Command::Logs(l) if l.reopen => client::reopen(&l.control.path()),
        Command::Logs(l) => {
            let file = l.control.app.as_ref().map(|a| a.log());
            daemon::logs(&l.control.path(), file.as_deref(), l.lines, l.follow)
        }
        Command::LogWriter { file, max_size, keep } => daemon::log_writer(&file, max_size, keep),
        Command::Upgrade(c) => client::upgrade(&c.path()),
        Command::UpgradeCheck => return handover::check_main(check_argv),
        Command::Reload(r) => client::reload(&r.control.path(), r.no_build, r.surge, r.canary),
        Command::Status(s) => client::status(&s.control.path(), s.json),
        Command::Stop(c) => client::stop(&c.path()),
        Command::Events(s) => client::events(&s.control.path(), s.json),
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
            Output::flush_if_running(EXIT_FLUSH);
            eprintln!("{}", hotswap::io::log_format::error_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// `hotswap scale [APP] COUNT`.
fn scale(a: hotswap::cli::ScaleArgs) -> anyhow::Result<ExitCode> {
    let (app, count) = match a.args.as_slice() {
        [count] => (None, count),
        [app, count] => (Some(app.parse::<hotswap::options::AppName>().map_err(anyhow::Error::msg)?), count),
        _ => unreachable!("clap takes 1 or 2"),
    };
    let to = match count.parse() {
        Ok(to) => to,
        Err(e) => {
            eprintln!("hotswap: scale: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let path = hotswap::cli::ControlArgs { app, control: a.control }.path();
    client::scale(&path, to, a.timeout.unwrap_or(std::time::Duration::from_secs(60)))
}

/// `upgrade-check`'s test of the primary's argv: this binary must parse it
/// as `hotswap run`, exactly as it will after the exec.
fn check_argv(argv: &[std::ffi::OsString]) -> Result<(), String> {
    match Cli::try_parse_from(argv) {
        Ok(Cli { command: Command::Run(_) }) => Ok(()),
        Ok(_) => Err("the primary's command line is not `hotswap run` to this binary".into()),
        Err(e) => Err(format!("this binary rejects the primary's command line: {}", first_line(&e.to_string()))),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text).trim()
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HOTSWAP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(LogSink)
        .event_format(hotswap::io::log_format::PrimaryFormat::default())
        .init();
}

fn run(flags: Options, origin: Origin) -> anyhow::Result<ExitCode> {
    // Room for hundreds of workers under the common soft limit of 1024;
    // the workers get the limit hotswap was given.
    let raised = fd_limit::raise();
    // A previous image of this primary handed over (self-upgrade)?
    match handover::take_over() {
        Some(Ok(t)) => {
            if let Some(soft) = t.state.worker_nofile {
                fd_limit::set_worker_soft(soft);
            }
            // What the primary was first started as, not this image's own
            // path (after a rollback, that of a file replaced on disk).
            let origin = Origin { exe: t.state.exe.clone(), argv: t.state.argv.clone() };
            set_style(t.state.settings.log_format, t.state.settings.timestamps);
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return Err(t.handback.rollback(&format!("starting the runtime: {e}"))),
            };
            // Lines the previous image wrote in part end here, first.
            let cut = |i: usize| t.state.output_cut.get(i).copied().unwrap_or(false);
            Output::global().end_cut_lines([cut(0), cut(1)]);
            // --out-file and --error-file, opened again by path (after
            // this image's first lines, which end the previous one's).
            match LogFiles::open(&t.state.settings) {
                Ok(Some(files)) => {
                    Output::global().use_files(files);
                }
                Ok(None) => {}
                Err(e) => tracing::error!("{e:#}; the workers' lines go to stdout and stderr"),
            }
            let (code, why) =
                rt.block_on(supervisor::resume(flags, origin, t.state, t.inherited, t.rollback, t.handback))?;
            return Ok(finish(code, why));
        }
        Some(Err(refused)) => {
            tracing::error!("cannot take over from the previous image: {}; rolling back", refused.why);
            return Err(handover::rollback(refused));
        }
        None => {}
    }
    match raised {
        Ok(r) if r.now > r.was => {
            tracing::info!("raised the soft file-descriptor limit from {} to {} (workers get {})", r.was, r.now, r.was)
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the file-descriptor limit: {e}"),
    }
    let settings = match Settings::load(&flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswap: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    set_style(settings.log_format, settings.timestamps);
    // A name in use: said before anything is bound (its ports would clash
    // first otherwise).
    if let Some(name) = &settings.name {
        if std::os::unix::net::UnixStream::connect(&settings.control_path).is_ok() {
            return Err(supervisor::name_taken(name));
        }
    }
    // --out-file and --error-file: a path that cannot be written is an
    // error now, not lines lost later.
    let files = match LogFiles::open(&settings) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hotswap: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let env = supervisor::base_env();
    // (With --build, the build may be what creates the program.)
    if settings.build.is_none() {
        let program = &settings.command[0];
        match &settings.cwd {
            Some(dir) if program.contains('/') && !program.starts_with('/') => {
                spawn::resolve_program(&dir.join(program).to_string_lossy(), &env)?
            }
            _ => spawn::resolve_program(program, &env)?,
        };
    }
    let systemd = Systemd::from_env()?;
    // Before any thread exists: taking systemd's sockets edits the environment.
    let node = supervisor::runs_node(&settings, &env);
    let listeners = match listeners::open_all(
        &settings.listen,
        settings.backlog,
        settings.socket_mode,
        node,
        settings.balance.per_slot(),
    ) {
        Ok(l) => l,
        Err(e) if e.is::<listeners::NothingToListenOn>() => {
            eprintln!("hotswap: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e),
    };
    // From here on the log goes through the output thread (the first thread
    // besides this one): a stalled stderr never blocks the event loop.
    let output = Output::global();
    if let Some(files) = files {
        output.use_files(files);
    }
    let (code, why) = runtime()?.block_on(supervisor::run(flags, origin, settings, listeners, systemd))?;
    Ok(finish(code, why))
}

/// The primary's runtime, for a fresh start and for a self-upgrade alike.
/// One thread: workers must be forked from the thread that lives as long as
/// the primary (their parent-death signal follows that thread), and an
/// in-place exec keeps only that thread's children safe. (tokio's blocking
/// pool is capped so the thread count stays flat over a long run; its
/// threads keep the primary's signals for the main thread, see
/// `sys::signal_mask`.)
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .on_thread_start(|| {
            hotswap::sys::signal_mask::block();
        })
        .build()
}

fn finish(code: i32, why: String) -> ExitCode {
    if code == 0 {
        tracing::info!("{why}");
    }
    Output::flush_if_running(EXIT_FLUSH);
    if code != 0 {
        eprintln!("{}", hotswap::io::log_format::error_line(&why));
    }
    ExitCode::from(code as u8)
}

/// Writes the man pages: `hotswap.1`, one per subcommand, `hotswap.toml.5`.
fn manpages(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    hotswap::manual::write_all(dir)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_check_parses_the_primarys_argv() {
        let argv = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(check_argv(&argv(&["hotswap", "run", "-l", "127.0.0.1:0", "--", "app"])).is_ok());
        let err = check_argv(&argv(&["hotswap", "run", "--no-such-option", "--", "app"])).unwrap_err();
        assert!(err.contains("rejects the primary's command line") && err.contains("--no-such-option"), "{err}");
        assert!(check_argv(&argv(&["hotswap", "status"])).unwrap_err().contains("not `hotswap run`"));
    }
}
