//! How common upstreams read a request path, so tests can check that the verifier decided on the
//! path the app routes, and a raw HTTP client that sends a path exactly as written.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unicode_normalization::UnicodeNormalization;

/// Ordinary path segments, in a few spellings.
pub const PLAIN: &[&str] = &[
    "admin",
    "public",
    "users",
    "x",
    "ADMIN",
    "Admin",
    "PUBLIC",
    "Public",
    "%61dmin",
    "adm%69n",
    "%41DMIN",
    "publ%69c",
    "caf%C3%A9",
    "%C3%A9",
    "files.txt",
    "~",
    "a+b",
    "%7e",
    "%3A",
    "@",
    "!",
    "v1.2",
    "..x",
    "a.b.c",
];

/// Segments some upstream reads differently: dot segments in every encoding, parameters, escaped
/// separators, double encoding, control characters, non-canonical UTF-8, Unicode look-alikes,
/// trailing dots and spaces.
pub const HOSTILE: &[&str] = &[
    "..",
    ".",
    "",
    "%2e%2e",
    "%2E%2e",
    ".%2e",
    "%2e",
    "admin;x",
    "..;",
    ";",
    "%3B",
    "admin%3bx",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    "a\\..",
    "%00",
    "%0a",
    "%25",
    "%2561dmin",
    "%252e%252e",
    "cafe%CC%81",
    "%EF%BD%81dmin",
    "%E2%84%AA",
    "%C5%BFx",
    "%E2%80%A4%E2%80%A4",
    "admin.",
    "admin..",
    "admin%20",
    "%20admin",
    "%ff",
    "%c0%ae%c0%ae",
    "%",
    "%zz",
];

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// Percent-decodes what decodes; malformed escapes stay as they are.
pub fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match (
            bytes[at],
            bytes.get(at + 1).copied().and_then(hex),
            bytes.get(at + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push(high << 4 | low);
                at += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 dot-segment removal with empty segments merged, as most routers clean a path.
pub fn clean(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    format!("/{}", segments.join("/"))
}

fn strip_parameters(raw: &str) -> String {
    raw.split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

fn windows_style(raw: &str) -> String {
    decode(&raw.replace('\\', "/"))
        .replace('\\', "/")
        .split('/')
        .map(|segment| segment.trim_end_matches(['.', ' ']))
        .collect::<Vec<_>>()
        .join("/")
}

/// The paths different upstreams route `raw` to: Go/Flask/Django (decode, clean), Tomcat/Jetty
/// (drop `;` parameters, decode, clean), IIS (`\` as `/`, trailing dots and spaces dropped), a
/// double-decoding proxy, Unicode compatibility normalisation — each also case-folded, as
/// case-insensitive routers read it.
pub fn readings(raw: &str) -> Vec<String> {
    let decoded = decode(raw);
    let readings = [
        clean(&decoded),
        clean(&decode(&strip_parameters(raw))),
        clean(&windows_style(raw)),
        clean(&decode(&decoded)),
        clean(&decoded.nfkc().collect::<String>()),
    ];
    readings
        .iter()
        .flat_map(|reading| [reading.clone(), reading.to_lowercase()])
        .collect()
}

/// Whether `prefix` covers `path` on a segment boundary.
pub fn under(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix) && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

/// A deterministic sequence of `count` path spellings, a third of their segments hostile.
pub fn spellings(seed: u64, count: usize) -> Vec<String> {
    let mut state = seed;
    let mut next = move |bound: usize| {
        // xorshift64*: reproducible without a dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % bound
    };
    (0..count)
        .map(|_| {
            let segments = 1 + next(4);
            let mut path = String::new();
            for _ in 0..segments {
                let pieces = if next(3) == 0 { HOSTILE } else { PLAIN };
                path.push('/');
                path.push_str(pieces[next(pieces.len())]);
            }
            path
        })
        .collect()
}

/// Sends `GET {target}` exactly as written over a fresh connection to `port`, with `headers`;
/// returns the status and the body.
pub async fn raw_get(port: u16, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        std::io::Result::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s")
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}
