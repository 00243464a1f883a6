//! An app written for `systemfd`/`listenfd`, not for hotswap: it takes its
//! socket with the `listenfd` crate and drains on SIGTERM. It runs under
//! hotswap unchanged, with a readiness mode that needs no cooperation:
//!
//! ```sh
//! cargo build --example listenfd-app
//! hotswap run -l 127.0.0.1:8080 --ready none -- target/debug/examples/listenfd-app
//! ```
//!
//! `--ready none` is safe here because the socket is already listening:
//! connections that arrive before this process accepts wait in the kernel's
//! queue. Responses are HTTP/1.0 (one request per connection), so draining
//! is: stop accepting, finish in-flight requests, exit.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    let mut fds = listenfd::ListenFd::from_env();
    let listener = match fds.take_tcp_listener(0) {
        Ok(Some(l)) => l,
        Ok(None) => {
            eprintln!("listenfd-app: no socket passed (LISTEN_FDS/LISTEN_PID)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("listenfd-app: {e}");
            std::process::exit(1);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).expect("SIGTERM handler");
    listener.set_nonblocking(true).expect("nonblocking listener");
    println!("listenfd-app: serving on {:?}", listener.local_addr());

    let mut in_flight = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => in_flight.push(std::thread::spawn(move || serve(conn))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => eprintln!("listenfd-app: accept: {e}"),
        }
        in_flight.retain(|t| !t.is_finished());
    }
    drop(listener); // close our copy; the socket stays open for the others
    for t in in_flight {
        let _ = t.join();
    }
    println!("listenfd-app: drained");
}

fn serve(conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    // Read the request head; the body, if any, is ignored.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let body = format!(
        "generation={} worker={} pid={}\n",
        std::env::var("HOTSWAP_GENERATION").unwrap_or_else(|_| "0".into()),
        std::env::var("HOTSWAP_WORKER_ID").unwrap_or_else(|_| "0".into()),
        std::process::id()
    );
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = (&conn).write_all(response.as_bytes());
}
