//! What the rescue passes on: an HTTP/1.x request head, rewritten to end
//! the connection after its answer, and what it refuses to touch.
//!
//! Only a request the client sent whole and from its first byte is passed
//! on: bytes that do not start with a request line are the tail of
//! something the worker read (a body, a half request), and passing them on
//! would serve something twice or garble it.

/// Why a held connection is not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A TLS handshake or record (first byte 0x16, or 0x14-0x17): the bytes
    /// cannot be read without the worker's keys.
    Tls,
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0`).
    Http2,
    /// A request asking for `Upgrade` (WebSocket, h2c): the connection would
    /// change protocol after the answer.
    Upgrade,
    /// Bytes that do not start an HTTP/1.x request line.
    NotHttp,
    /// A head longer than [`MAX_HEAD`].
    TooLarge,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Tls => "TLS (its bytes cannot be read)",
            Refusal::Http2 => "HTTP/2",
            Refusal::Upgrade => "a request with Upgrade",
            Refusal::NotHttp => "bytes that start no HTTP/1 request",
            Refusal::TooLarge => "a request head over 64 KiB",
        })
    }
}

/// The longest request head passed on.
pub const MAX_HEAD: usize = 64 * 1024;

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Too few bytes to tell.
    Incomplete,
    /// A complete head: `head` is what goes to the serving generation
    /// (with `Connection: close`), `len` how many bytes of the input it was.
    Request {
        head: Vec<u8>,
        len: usize,
    },
    Refused(Refusal),
}

/// Reads the start of `buf`, what a client sent on a connection after its
/// last answer.
pub fn parse(buf: &[u8]) -> Head {
    if let Some(r) = refuse_start(buf) {
        return Head::Refused(r);
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Head::Refused(Refusal::TooLarge);
        }
        // The request line must be plausible as soon as it is complete.
        if let Some(eol) = find(buf, b"\r\n") {
            if !request_line(&buf[..eol]) {
                return Head::Refused(Refusal::NotHttp);
            }
        }
        return Head::Incomplete;
    };
    if end + 4 > MAX_HEAD {
        return Head::Refused(Refusal::TooLarge);
    }
    let text = &buf[..end];
    let mut lines = text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    if !request_line(first) {
        return Head::Refused(Refusal::NotHttp);
    }
    let mut head = Vec::with_capacity(end + 24);
    head.extend_from_slice(first);
    head.extend_from_slice(b"\r\n");
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Head::Refused(Refusal::NotHttp);
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"upgrade")
            || (name.eq_ignore_ascii_case(b"connection") && contains_token(value, b"upgrade"))
        {
            return Head::Refused(Refusal::Upgrade);
        }
        // The connection ends with this answer: hop-by-hop headers that
        // said otherwise go.
        if ["connection", "keep-alive", "proxy-connection"].iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes())) {
            continue;
        }
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    Head::Request { head, len: end + 4 }
}

/// Refuses from the first bytes alone, if they already tell.
fn refuse_start(buf: &[u8]) -> Option<Refusal> {
    let &first = buf.first()?;
    if (0x14..=0x17).contains(&first) {
        return Some(Refusal::Tls);
    }
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    if PREFACE.starts_with(&buf[..buf.len().min(PREFACE.len())]) && buf.len() >= 4 {
        return Some(Refusal::Http2);
    }
    // A method is an uppercase token (RFC 9110 allows any token; every
    // method in use is uppercase letters and `-`).
    let method = buf.iter().take_while(|b| b.is_ascii_uppercase() || **b == b'-').count();
    match buf.get(method) {
        None if method < 20 => None,
        Some(b' ') if method > 0 => None,
        _ => Some(Refusal::NotHttp),
    }
}

/// `METHOD SP TARGET SP HTTP/1.x`.
fn request_line(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-')
        && !target.is_empty()
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(buf: &[u8]) -> (String, usize) {
        match parse(buf) {
            Head::Request { head, len } => (String::from_utf8(head).unwrap(), len),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_keep_alive_request_leaves_with_connection_close() {
        let (head, len) = request(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\nrest");
        assert_eq!(head, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(len, 67);
    }

    #[test]
    fn a_post_keeps_its_framing_headers() {
        let (head, _) = request(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        assert!(head.contains("Content-Length: 3\r\n") && head.ends_with("Connection: close\r\n\r\n"), "{head}");
        let (head, _) = request(b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    }

    #[test]
    fn partial_heads_wait_and_bad_ones_are_refused_early() {
        assert_eq!(parse(b""), Head::Incomplete);
        assert_eq!(parse(b"GE"), Head::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost"), Head::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Head::Incomplete);
        assert_eq!(parse(b"GET /\r\n"), Head::Refused(Refusal::NotHttp));
        assert_eq!(parse(b"GET / SPDY/3\r\n\r\n"), Head::Refused(Refusal::NotHttp));
        assert_eq!(parse(b"hello=world&x=1"), Head::Refused(Refusal::NotHttp), "a body's tail");
        assert_eq!(parse(b"{\"a\":1}"), Head::Refused(Refusal::NotHttp));
        assert_eq!(parse(b"\r\nGET / HTTP/1.1\r\n\r\n"), Head::Refused(Refusal::NotHttp));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"), Head::Refused(Refusal::NotHttp));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse(&big), Head::Refused(Refusal::TooLarge));
    }

    #[test]
    fn tls_http2_and_upgrade_are_left_alone() {
        assert_eq!(parse(&[0x16, 0x03, 0x01]), Head::Refused(Refusal::Tls));
        assert_eq!(parse(&[0x17, 0x03, 0x03, 0, 5]), Head::Refused(Refusal::Tls));
        assert_eq!(parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Head::Refused(Refusal::Http2));
        assert_eq!(parse(b"PRI "), Head::Refused(Refusal::Http2));
        let ws = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(parse(ws), Head::Refused(Refusal::Upgrade));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nconnection: keep-alive, upgrade\r\n\r\n"),
            Head::Refused(Refusal::Upgrade)
        );
    }
}
