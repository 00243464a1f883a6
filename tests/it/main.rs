//! The integration tests: one crate, one test binary, so the shared harness in
//! `common` is compiled once. Each module runs real `hotswap` primaries with
//! real worker processes (Rust, Node, Python, gunicorn).

mod common;

mod accepting;
mod config;
mod control;
mod hardening;
mod layout;
mod lifecycle;
mod node;
mod protocol;
mod python;
mod reload;
mod systemd;
mod upgrade;
mod watch;
