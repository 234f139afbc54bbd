//! The slice of HTTP/1.1 the dashboard speaks: it reads one `GET` (or `HEAD`) request
//! head of bounded size and writes one response, then closes the connection (or keeps
//! it for an event stream). Everything a browser might send beyond that is refused with
//! a status code, never guessed at.
//!
//! Hand-written rather than a server crate because the whole protocol the page needs is
//! a request line, two headers and a bounded read, and the limits (head size, header
//! count, read timeout, no bodies) are the security properties the tests pin down; the
//! rejected designs are in `docs/decisions/dashboard.md`.

use std::io::{Read, Write};

/// The largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// The most header lines accepted.
pub const MAX_HEADERS: usize = 64;

/// A parsed request: its method, path (without the query), the query's `token`, and the
/// `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// Why a request was refused, with the status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// Reads a request head from `r` (at most [`MAX_HEAD`] bytes, up to the blank line) and
/// parses it. A read error or timeout is a 408; the caller sets the socket's timeout.
pub fn read_request(r: &mut impl Read) -> Result<Request, Refusal> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = find_head_end(&head) {
            head.truncate(end);
            break;
        }
        if head.len() >= MAX_HEAD {
            return Err(refuse(431, "request head too large"));
        }
        let n = r
            .read(&mut buf)
            .map_err(|_| refuse(408, "request not received in time"))?;
        if n == 0 {
            return Err(refuse(400, "connection closed before the request ended"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    if head.len() > MAX_HEAD {
        return Err(refuse(431, "request head too large"));
    }
    parse_head(&head)
}

/// The index just past the head's blank line (`\r\n\r\n`, or bare `\n\n`).
fn find_head_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a request head (request line and headers, without the body).
pub fn parse_head(head: &[u8]) -> Result<Request, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| refuse(400, "request head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(400, "malformed request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(refuse(505, "HTTP version not supported"));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            return Err(refuse(405, "method not allowed"));
        }
        _ => return Err(refuse(400, "malformed method")),
    };
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(refuse(400, "malformed request target"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let token = query.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    });
    let mut host = None;
    let mut count = 0;
    for l in lines {
        if l.is_empty() {
            break;
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(refuse(431, "too many header fields"));
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(refuse(400, "malformed header field"));
        };
        if name.is_empty() || name.bytes().any(|b| b <= b' ') {
            return Err(refuse(400, "malformed header field"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("host") {
            host = Some(value.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("content-length") {
            if value != "0" {
                return Err(refuse(413, "request bodies are not accepted"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(refuse(413, "request bodies are not accepted"));
        }
    }
    Ok(Request {
        method,
        path: path.to_string(),
        token,
        host,
    })
}

/// Headers every response carries: no caching, no MIME sniffing, no framing by other
/// sites, and scripts, styles, images and connections from this origin only.
const SECURITY_HEADERS: &str = "Cache-Control: no-store\r\n\
X-Content-Type-Options: nosniff\r\n\
X-Frame-Options: DENY\r\n\
Referrer-Policy: no-referrer\r\n\
Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'\r\n";

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Writes a whole response and its body (none for `HEAD`).
pub fn respond(
    w: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{SECURITY_HEADERS}",
        status_text(status),
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    w.write_all(&bytes)?;
    w.flush()
}

/// Answers a refusal with its status and reason as plain text.
pub fn respond_refusal(w: &mut impl Write, r: &Refusal) -> std::io::Result<()> {
    let body = format!("{} {}\n", r.status, r.reason);
    respond(
        w,
        r.status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
    )
}

/// The head of a server-sent event stream.
pub fn event_stream_head(w: &mut impl Write) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive\r\n\
         {SECURITY_HEADERS}\r\n"
    );
    w.write_all(head.as_bytes())?;
    w.flush()
}

/// One server-sent event: `event: NAME` and the data, one `data:` line per line.
pub fn event(name: &str, data: &str) -> String {
    let mut s = format!("event: {name}\n");
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, Refusal> {
        read_request(&mut s.as_bytes())
    }

    #[test]
    fn a_get_with_a_token_and_a_host_parses() {
        let r =
            parse("GET /events?x=1&token=ab12 HTTP/1.1\r\nHost: LocalHost:8000\r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/events");
        assert_eq!(r.token.as_deref(), Some("ab12"));
        assert_eq!(r.host.as_deref(), Some("localhost:8000"));
    }

    #[test]
    fn malformed_requests_are_refused_with_their_status() {
        let cases = [
            ("POST / HTTP/1.1\r\n\r\n", 405),
            ("GET / HTTP/2.0\r\n\r\n", 505),
            ("GET /\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\n\r\n", 400),
            ("get / HTTP/1.1\r\n\r\n", 400),
            ("GET http://evil/ HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
            ("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 413),
            ("GET / HTTP/1.1\r\n", 400),
            ("", 400),
        ];
        for (req, status) in cases {
            let e = parse(req).expect_err(req);
            assert_eq!(e.status, status, "{req:?}: {e:?}");
        }
        let e = read_request(&mut &b"GET /\xff HTTP/1.1\r\n\r\n"[..]).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn oversized_heads_and_header_floods_are_refused() {
        let big = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(&big).unwrap_err().status, 431);
        let endless = "GET / HTTP/1.1\r\nX: y\r\n".repeat(1000);
        assert_eq!(parse(&endless).unwrap_err().status, 431);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(&many).unwrap_err().status, 431);
    }

    #[test]
    fn events_put_each_line_in_its_own_data_field() {
        assert_eq!(event("x", "a\nb"), "event: x\ndata: a\ndata: b\n\n");
    }
}
