//! An app written for `systemfd`/`listenfd`, not for hotswap, in the shape
//! of the `listenfd` crate's README: it takes its socket with
//! `ListenFd::from_env().take_tcp_listener(0)` (or binds one itself when
//! run alone) and serves it with tokio. It runs under hotswap unchanged,
//! with the default readiness (`auto`: hotswap sees the listener in
//! tokio's epoll set):
//!
//! ```sh
//! cargo build --example listenfd-app
//! hotswap run -l 127.0.0.1:8080 -w 2 -- target/debug/examples/listenfd-app
//! ```
//!
//! HTTP/1.1 with keep-alive (requests without a body). On SIGTERM it drains:
//! it stops accepting (its copy of the listener is dropped; the socket stays
//! open for the other workers), answers each open connection's next request
//! with `Connection: close`, closes a connection that stays idle for
//! [`GRACE`], and exits once every connection is done.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a draining connection may stay idle before it is closed: a
/// client may be sending its next request as the drain begins.
const GRACE: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut listenfd = listenfd::ListenFd::from_env();
    let listener = match listenfd.take_tcp_listener(0)? {
        Some(listener) => {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)?
        }
        None => TcpListener::bind("127.0.0.1:3000").await?,
    };
    println!("listenfd-app: serving on {:?}", listener.local_addr()?);
    let mut term = signal(SignalKind::terminate())?;
    let (stopping, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    connections.spawn(serve(conn, stop.clone()));
                }
                Err(e) => eprintln!("listenfd-app: accept: {e}"),
            },
            _ = term.recv() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener); // our copy; the socket stays open for the other workers
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
    println!("listenfd-app: drained");
    Ok(())
}

/// Serves one connection until the client closes it, asks to, or the app
/// stops (see the module's doc).
async fn serve(conn: TcpStream, mut stop: watch::Receiver<bool>) {
    let (read, mut write) = conn.into_split();
    let mut reader = BufReader::new(read);
    let body = format!(
        "generation={} worker={} pid={}\n",
        std::env::var("HOTSWAP_GENERATION").unwrap_or_else(|_| "0".into()),
        std::env::var("HOTSWAP_WORKER_ID").unwrap_or_else(|_| "0".into()),
        std::process::id()
    );
    let mut line = String::new();
    loop {
        // Wait for the next request's first line; once stopping, for at
        // most GRACE more (the read is never cancelled midway otherwise:
        // read_line is not cancel-safe).
        line.clear();
        let grace = async {
            let _ = stop.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(GRACE).await;
        };
        let n = tokio::select! {
            n = reader.read_line(&mut line) => n,
            _ = grace => return, // idle for GRACE while stopping
        };
        if !matches!(n, Ok(n) if n > 0) {
            return;
        }
        let mut close = line.ends_with("HTTP/1.0\r\n");
        // The rest of the head.
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header).await {
                Ok(0) | Err(_) => return,
                Ok(_) if header == "\r\n" || header == "\n" => break,
                Ok(_) => {
                    let lower = header.to_ascii_lowercase();
                    if lower.starts_with("connection:") {
                        close = lower.contains("close");
                    }
                }
            }
        }
        close |= *stop.borrow();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        if write.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}
