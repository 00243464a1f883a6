//! The integration tests: one crate, one test binary, so the shared harness in
//! `common` is compiled once. Each module runs real `hotswap` primaries with
//! real worker processes (Rust, Node, Python, gunicorn).

mod common;

mod accepting;
mod axum;
mod balance;
mod config;
mod container;
mod control;
mod daily;
mod docs_links;
mod exhaust;
mod failures;
mod flow;
mod hardening;
mod known_servers;
mod layout;
mod lifecycle;
mod local_users;
mod log_files;
mod log_format;
mod node;
mod node_frameworks;
mod node_primary;
mod observe;
mod outlive;
mod own_bind;
mod package;
mod protocol;
mod proven;
mod python;
mod reload;
mod rescue;
mod rescue_measure;
mod rollout;
mod signals;
mod socketio;
mod surge;
mod systemd;
mod upgrade;
mod warmup;
mod watch;
