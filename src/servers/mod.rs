//! Known servers and their habits: nginx, unicorn, puma, php-fpm,
//! lighttpd, gunicorn, uvicorn, hypercorn, Apache httpd, Jetty, caddy, and
//! two without a graceful stop: PHP's built-in server (`php -S`) and
//! Python's `http.server`, which hotswap quiesces before it stops them
//! (docs/own-bind.md).
//!
//! Each stock server has its own graceful stop and its own way of taking an
//! inherited socket, and a user should not have to know them: with
//! hotswap's default SIGTERM, nginx, unicorn and php-fpm stop at once
//! (their graceful stop is SIGQUIT) and lighttpd too (SIGINT), losing the
//! requests in flight on every reload. hotswap recognises the server by
//! its command, through the wrappers in front of it ([`command`]), and
//! unless `--stop-signal` (config `stop-signal`) says otherwise stops it
//! with the signal that drains it; it also sets the environment variable
//! the server reads its inherited sockets from (nginx's `NGINX`, php-fpm's
//! `FPM_SOCKETS`) unless the user's environment has it, and says in the
//! start-up log and in `status` what it chose and why, with what the
//! server's own configuration must say (nginx keeps an inherited socket
//! only for a `listen` of exactly its address).
//!
//! Pure decisions: depends on nothing else in the crate but its types.

pub mod command;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::types::listen::ListenAddr;

/// A server hotswap knows the habits of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Server {
    Nginx,
    Unicorn,
    Puma,
    PhpFpm,
    Lighttpd,
    Gunicorn,
    Uvicorn,
    Hypercorn,
    Apache,
    Jetty,
    Caddy,
    /// `php -S`: PHP's development server.
    PhpBuiltin,
    /// `python3 -m http.server`.
    PythonHttpServer,
}

/// A recognised server and its own arguments (what follows its program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recognised {
    pub server: Server,
    pub args: Vec<String>,
}

/// The server a worker command runs, if it is one hotswap knows.
pub fn recognise(cmd: &[String]) -> Option<Recognised> {
    let argv = command::server_argv(cmd)?;
    let (program, args) = argv.split_first()?;
    let name = command::base(program);
    let server = match name {
        "nginx" => Server::Nginx,
        "unicorn" | "unicorn_rails" => Server::Unicorn,
        "puma" => Server::Puma,
        "lighttpd" => Server::Lighttpd,
        "gunicorn" => Server::Gunicorn,
        "uvicorn" => Server::Uvicorn,
        "hypercorn" => Server::Hypercorn,
        "apache2" | "httpd" | "apachectl" | "apache2ctl" => Server::Apache,
        "caddy" => Server::Caddy,
        "http.server" => Server::PythonHttpServer,
        // `php -S ADDR`, `php -q -S ADDR -t DIR`, `php8.2 -S ...`.
        n if (n == "php"
            || n.strip_prefix("php").is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.')))
            && args.iter().any(|a| a == "-S") =>
        {
            Server::PhpBuiltin
        }
        // Debian's /usr/sbin/php-fpm8.2, the upstream php-fpm, php8.2-fpm.
        n if n.starts_with("php-fpm") || (n.starts_with("php") && n.ends_with("-fpm")) => Server::PhpFpm,
        "java" => {
            // `java [opts] -jar .../start.jar` (Jetty's launcher) or a
            // `jetty-runner` jar.
            let jar = args.iter().skip_while(|a| *a != "-jar").nth(1)?;
            let jar = command::base(jar);
            if jar == "start.jar" || jar.starts_with("jetty") {
                Server::Jetty
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(Recognised { server, args: args.to_vec() })
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Nginx => "nginx",
            Server::Unicorn => "unicorn",
            Server::Puma => "puma",
            Server::PhpFpm => "php-fpm",
            Server::Lighttpd => "lighttpd",
            Server::Gunicorn => "gunicorn",
            Server::Uvicorn => "uvicorn",
            Server::Hypercorn => "hypercorn",
            Server::Apache => "Apache httpd",
            Server::Jetty => "Jetty",
            Server::Caddy => "caddy",
            Server::PhpBuiltin => "php -S",
            Server::PythonHttpServer => "Python http.server",
        }
    }

    /// The signal that makes it drain: stop accepting, finish what is in
    /// flight, exit.
    pub fn stop_signal(self) -> Signal {
        match self {
            Server::Nginx | Server::Unicorn | Server::PhpFpm => Signal::SIGQUIT,
            Server::Lighttpd => Signal::SIGINT,
            Server::Apache => Signal::SIGWINCH,
            Server::Puma
            | Server::Gunicorn
            | Server::Uvicorn
            | Server::Hypercorn
            | Server::Jetty
            | Server::Caddy
            | Server::PhpBuiltin
            | Server::PythonHttpServer => Signal::SIGTERM,
        }
    }

    /// Whether it has a graceful stop at all. `php -S` and Python's
    /// `http.server` have none: their stop signal (SIGTERM, not caught;
    /// `php -S` catches it only while it runs a request, to end it first)
    /// ends them with the requests they are answering, so hotswap quiesces
    /// them first (`--quiesce`).
    pub fn has_graceful_stop(self) -> bool {
        !matches!(self, Server::PhpBuiltin | Server::PythonHttpServer)
    }

    /// Why that signal, in words.
    fn drains(self) -> &'static str {
        match self {
            Server::Nginx | Server::Unicorn | Server::PhpFpm => "its graceful stop; SIGTERM stops it at once",
            Server::Lighttpd => "its graceful stop; SIGTERM stops it at once",
            Server::Apache => "its graceful-stop; SIGTERM stops it at once",
            Server::Puma | Server::Gunicorn | Server::Uvicorn | Server::Hypercorn => "its graceful stop",
            Server::Jetty => {
                "its graceful stop, in the JVM's shutdown hook: it stops accepting, answers 503 to requests on \
                 open connections and closes them (it waits for requests in flight, up to its stopTimeout, only \
                 with its `stats` module)"
            }
            Server::Caddy => "its graceful stop",
            Server::PhpBuiltin | Server::PythonHttpServer => {
                "it has no graceful stop: each old worker is told once it answers nothing, unless --quiesce off"
            }
        }
    }

    /// Whether it needs its inherited sockets non-blocking. nginx never sets
    /// `O_NONBLOCK` on a socket it inherits (its own binary upgrade hands
    /// over sockets the old master made non-blocking); with two masters on
    /// one blocking socket, a worker woken for a connection the other took
    /// blocks in `accept()` and serves nothing until the next connection.
    pub fn wants_nonblocking(self) -> bool {
        matches!(self, Server::Nginx)
    }

    /// The environment variables it reads its inherited sockets from, for
    /// hotswap's listeners (fd 3 on), beyond `LISTEN_FDS`.
    pub fn env(self, listeners: &[ListenAddr]) -> Vec<(&'static str, String)> {
        match self {
            // nginx's binary upgrade: "3;4;" (ngx_add_inherited_sockets).
            Server::Nginx => vec![("NGINX", (0..listeners.len()).map(|i| format!("{};", 3 + i)).collect())],
            // php-fpm's own re-exec: "ADDR=FD,..." with ADDR as it prints
            // a pool's address (fpm_sockets.c): `127.0.0.1:9000`,
            // `::1:9000`, or the socket's path.
            Server::PhpFpm => vec![(
                "FPM_SOCKETS",
                listeners
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let key = match l {
                            ListenAddr::Tcp(sa) => format!("{}:{}", sa.ip(), sa.port()),
                            ListenAddr::Unix(p) => p.display().to_string(),
                        };
                        format!("{key}={}", 3 + i)
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            )],
            _ => Vec::new(),
        }
    }

    /// How it takes hotswap's sockets, and what its own configuration must
    /// say for that.
    fn socket(self, args: &[String], listeners: &[ListenAddr]) -> String {
        let addrs = listeners.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let env = self.env(listeners).into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        match self {
            Server::Nginx => format!(
                "socket via {env} (nginx keeps an inherited socket only for a `listen` of exactly its address: \
                 its config must say `listen {addrs};`; with NGINX set it stays in the foreground; the socket is made \
                 non-blocking, as nginx needs)"
            ),
            Server::PhpFpm => {
                format!("socket via {env} (the pool's `listen` must be {addrs}; run it with -F, or `daemonize = no`)")
            }
            Server::Unicorn => "socket via LISTEN_FDS (unicorn 5 and later read it; no `-l`/`listen` needed)".into(),
            Server::Puma => format!(
                "socket via LISTEN_FDS (puma 5 and later, with `--bind-to-activated-sockets only` or a `-b` \
                 of exactly tcp://{addrs})"
            ),
            Server::Lighttpd => "socket via LISTEN_FDS (its config must say server.systemd-socket-activation = \
                                 \"enable\"; run it with -D)"
                .into(),
            Server::Gunicorn => "socket via LISTEN_FDS (gunicorn reads it)".into(),
            Server::Uvicorn => "socket via `--fd 3` (give it)".into(),
            Server::Hypercorn => "socket via `--bind fd://3` (give it)".into(),
            Server::Apache => "it binds its own port: its bind of a --listen address gets hotswap's socket (bind \
                               interception, docs/own-bind.md), so its `Listen` must be that address"
                .into(),
            Server::Caddy => "it binds its own port: its bind of a --listen address gets hotswap's socket (bind \
                              interception, docs/own-bind.md), so its site address must have that port"
                .into(),
            Server::Jetty => format!(
                "it binds its own port: its bind of a --listen address gets hotswap's socket (bind interception, \
                 docs/own-bind.md), so its jetty.http.port ({}) must be that port",
                match jetty_port(args) {
                    Some(p) => format!("{p}, on its command line"),
                    None => "8080 unless its jetty.base's start.ini says otherwise".into(),
                }
            ),
            Server::PhpBuiltin | Server::PythonHttpServer => {
                "it binds its own port: its bind of a --listen address gets hotswap's socket (docs/own-bind.md)".into()
            }
        }
    }

    /// What its arguments lack for it to serve hotswap's socket, if that
    /// can be told from them.
    fn missing(self, args: &[String]) -> Option<&'static str> {
        let has = |flag: &str| args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        match self {
            Server::Uvicorn if !has("--fd") && !has("--uds") => {
                Some("uvicorn serves hotswap's socket only with `--fd 3`; without it, it binds 127.0.0.1:8000 itself")
            }
            Server::Hypercorn if !args.iter().any(|a| a.contains("fd://")) => {
                Some("hypercorn serves hotswap's socket only with `--bind fd://3`")
            }
            Server::Puma if !has("--bind-to-activated-sockets") && !has("-b") && !has("--bind") => Some(
                "puma serves hotswap's socket only with `--bind-to-activated-sockets only` or a matching `-b`; \
                 without either it binds tcp://0.0.0.0:9292 itself",
            ),
            Server::PhpFpm if !has("-F") && !has("--nodaemonize") => {
                Some("php-fpm goes into the background unless `-F` (or `daemonize = no` in its config)")
            }
            Server::Lighttpd if !has("-D") => Some("lighttpd goes into the background unless `-D`"),
            _ => None,
        }
    }

    /// A port its command line names that no `--listen` has: its bind of
    /// it stays its own (and it does not serve hotswap's socket).
    fn port_elsewhere(self, args: &[String], listeners: &[ListenAddr]) -> Option<String> {
        let Server::Jetty = self else { return None };
        let port = jetty_port(args)?;
        let ports: Vec<u16> = listeners
            .iter()
            .filter_map(|l| match l {
                ListenAddr::Tcp(sa) => Some(sa.port()),
                ListenAddr::Unix(_) => None,
            })
            .collect();
        if ports.is_empty() || ports.contains(&port) {
            return None;
        }
        let addrs = listeners.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        Some(format!(
            "its command line says jetty.http.port={port}, which hotswap does not listen on ({addrs}): Jetty binds \
             that port itself and serves none of hotswap's connections; give it the --listen port"
        ))
    }

    /// What to change when it listens on an address of its own instead of
    /// hotswap's socket, for the warning that names that address.
    pub fn own_listener_fix(self, listeners: &[ListenAddr]) -> Option<String> {
        let addrs = listeners.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        Some(match self {
            Server::Nginx => format!("make nginx's `listen` say exactly {addrs} (hotswap sets NGINX=3; for it)"),
            Server::PhpFpm => format!("make the pool's `listen` say exactly {addrs} (hotswap sets FPM_SOCKETS)"),
            Server::Lighttpd => {
                "add server.systemd-socket-activation = \"enable\" to lighttpd's config, with a server.bind and \
                 server.port of hotswap's address"
                    .into()
            }
            Server::Puma => format!("run puma with `--bind-to-activated-sockets only` (or `-b tcp://{addrs}`)"),
            Server::Uvicorn => "give uvicorn the socket: `uvicorn --fd 3`".into(),
            Server::Hypercorn => "give hypercorn the socket: `hypercorn --bind fd://3`".into(),
            Server::Jetty => {
                let tcp = listeners.iter().find_map(|l| match l {
                    ListenAddr::Tcp(sa) => Some(sa),
                    ListenAddr::Unix(_) => None,
                })?;
                format!(
                    "set Jetty's jetty.http.port={} (on its command line or in its jetty.base's start.ini), and its \
                     jetty.http.host unset or {}: its bind of that port then gets hotswap's socket",
                    tcp.port(),
                    tcp.ip()
                )
            }
            _ => return None,
        })
    }

    /// Whether a listening socket it holds is its own control socket, not
    /// a port it serves: gunicorn 25.1 and later open one
    /// (`$XDG_RUNTIME_DIR/gunicorn.ctl`, else `~/.gunicorn/gunicorn.ctl`,
    /// or `--control-socket PATH`) for `gunicornc`.
    pub fn is_control_socket(self, args: &[String], addr: &str) -> bool {
        let Some(path) = addr.strip_prefix("unix:") else { return false };
        match self {
            Server::Gunicorn => {
                let given = args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--control-socket") {
                    Some("") => args.get(i + 1).map(String::as_str),
                    Some(v) => v.strip_prefix('='),
                    None => None,
                });
                command::base(path) == "gunicorn.ctl"
                    || given.is_some_and(|g| path.ends_with(g.trim_start_matches("./")))
            }
            _ => false,
        }
    }
}

/// The port a Jetty command line gives its HTTP connector
/// (`jetty.http.port=8081`, or the deprecated `jetty.port`, as start.jar's
/// argument or a `-D` system property); `None` when it is left to the
/// jetty.base's `start.ini` (8080 unless that says otherwise).
fn jetty_port(args: &[String]) -> Option<u16> {
    args.iter().rev().find_map(|a| {
        let a = a.strip_prefix("-D").unwrap_or(a);
        let v = a.strip_prefix("jetty.http.port=").or_else(|| a.strip_prefix("jetty.port="))?;
        v.parse().ok()
    })
}

/// What hotswap chose for a recognised server and why, for the start-up
/// log and `status`: `nginx recognised: stop signal SIGQUIT (its graceful
/// stop; ...), socket via NGINX=3; (...)`. `given` is a `--stop-signal`
/// the user set, which wins.
pub fn describe(r: &Recognised, given: Option<Signal>, listeners: &[ListenAddr]) -> String {
    let server = r.server;
    let signal = match given {
        Some(s) if s == server.stop_signal() => format!("stop signal {s} (--stop-signal; {})", server.drains()),
        Some(s) => {
            format!(
                "stop signal {s} (--stop-signal; {} drains on {}: {})",
                server.name(),
                server.stop_signal(),
                server.drains()
            )
        }
        None => format!("stop signal {} ({})", server.stop_signal(), server.drains()),
    };
    let mut text = format!("{} recognised: {signal}, {}", server.name(), server.socket(&r.args, listeners));
    if let Some(m) = server.missing(&r.args) {
        text += &format!("; NOTE: {m}");
    }
    if let Some(m) = server.port_elsewhere(&r.args, listeners) {
        text += &format!("; NOTE: {m}");
    }
    text
}

#[cfg(test)]
mod tests;
