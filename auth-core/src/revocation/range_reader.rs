//! Reading stream ranges in bulk, for the full load a verifier makes at start. redis-rs turns a
//! reply into a tree of owned values, which for the revocation stream costs about 1.5 µs per entry
//! (three times what Redis spends producing it) and made loading 100,000 revocations slower than
//! a sidecar may take to become ready. This reader sends `XRANGE` on its own RESP2 connection and
//! indexes each entry straight from the read buffer, which holds one read's worth of the reply.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use super::{RevocationIndex, RevocationRef};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const READ_SIZE: usize = 64 * 1024;
// What one entry can hold: an id, a kind, a UUID or a `kid`, two instants. A larger announced
// length is not a revocation entry and must not make the reader buffer it.
const MAX_BULK: usize = 1024;
const MAX_FIELDS: usize = 32;

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// One connection reading stream ranges into an index.
pub(super) struct RangeReader {
    io: Box<dyn Duplex>,
    buffer: Vec<u8>,
}

/// What one range read found.
pub(super) struct RangeRead {
    /// Entries in the reply (indexed or, when not understood, skipped).
    pub entries: usize,
    /// The id of the last one.
    pub last_id: Option<String>,
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected reply from Redis: {what}"),
    )
}

async fn within<T>(limit: Duration, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "Redis did not answer in time"))?
}

impl RangeReader {
    /// Connects (TCP, TLS with `tls`, or a Unix socket) and authenticates and selects the database
    /// as `info` says.
    pub async fn connect(info: &ConnectionInfo, tls: Option<Arc<ClientConfig>>) -> io::Result<Self> {
        let tcp = async |host: &str, port: u16| {
            let stream = within(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await?;
            stream.set_nodelay(true)?;
            io::Result::Ok(stream)
        };
        let io: Box<dyn Duplex> = match (info.addr(), tls) {
            (ConnectionAddr::Tcp(host, port), _) => Box::new(tcp(host, *port).await?),
            (ConnectionAddr::TcpTls { host, port, .. }, Some(tls)) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
                let stream = tcp(host, *port).await?;
                Box::new(within(CONNECT_TIMEOUT, TlsConnector::from(tls).connect(name, stream)).await?)
            }
            #[cfg(unix)]
            (ConnectionAddr::Unix(path), _) => {
                Box::new(within(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path)).await?)
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a TLS address needs its TLS configuration",
                ));
            }
        };
        let mut reader = Self {
            io,
            buffer: Vec::with_capacity(READ_SIZE),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            auth.extend(settings.username().map(str::as_bytes));
            auth.push(password.as_bytes());
            reader.expect_ok(&auth).await?;
        }
        if settings.db() != 0 {
            reader
                .expect_ok(&[b"SELECT", settings.db().to_string().as_bytes()])
                .await?;
        }
        Ok(reader)
    }

    async fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut command = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            command.extend_from_slice(arg);
            command.extend_from_slice(b"\r\n");
        }
        self.io.write_all(&command).await
    }

    async fn fill(&mut self) -> io::Result<()> {
        self.buffer.reserve(READ_SIZE);
        let read = within(READ_TIMEOUT, self.io.read_buf(&mut self.buffer)).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "Redis closed the connection",
            ));
        }
        Ok(())
    }

    async fn expect_ok(&mut self, args: &[&[u8]]) -> io::Result<()> {
        self.send(args).await?;
        loop {
            if let Some((kind, text, used)) = line(&self.buffer, 0)? {
                let answer = (kind, text == b"OK");
                self.buffer.drain(..used);
                return match answer {
                    (b'+', true) => Ok(()),
                    _ => Err(protocol_error("a command of the handshake was refused")),
                };
            }
            self.fill().await?;
        }
    }

    /// Reads up to `count` entries of `stream` from `from` to `to` (ids as `XRANGE` takes them)
    /// into `index`.
    pub async fn read_into(
        &mut self,
        stream: &str,
        (from, to): (&str, &str),
        count: usize,
        index: &RevocationIndex,
    ) -> io::Result<RangeRead> {
        self.send(&[
            b"XRANGE",
            stream.as_bytes(),
            from.as_bytes(),
            to.as_bytes(),
            b"COUNT",
            count.to_string().as_bytes(),
        ])
        .await?;
        let mut pending: Option<usize> = None;
        let mut read = RangeRead {
            entries: 0,
            last_id: None,
        };
        loop {
            let mut at = 0;
            if pending.is_none()
                && let Some((kind, text, used)) = line(&self.buffer, 0)?
            {
                match kind {
                    b'*' => {
                        let entries = number(text)?;
                        if entries > count {
                            return Err(protocol_error("more entries than asked for"));
                        }
                        pending = Some(entries);
                    }
                    b'-' => {
                        return Err(io::Error::other(format!(
                            "Redis refused XRANGE: {}",
                            String::from_utf8_lossy(text)
                        )));
                    }
                    _ => return Err(protocol_error("XRANGE did not answer with an array")),
                }
                at = used;
            }
            if let Some(left) = pending {
                let (used, entries, last_id) = index_entries(&self.buffer[at..], left, index)?;
                at += used;
                pending = Some(left - entries);
                read.entries += entries;
                read.last_id = last_id.or(read.last_id);
            }
            self.buffer.drain(..at);
            if pending == Some(0) {
                return Ok(read);
            }
            self.fill().await?;
        }
    }
}

/// Indexes the complete entries at the start of `buffer`, at most `limit`; returns the bytes they
/// took, how many there were and the id of the last.
fn index_entries(
    buffer: &[u8],
    limit: usize,
    index: &RevocationIndex,
) -> io::Result<(usize, usize, Option<String>)> {
    let (mut at, mut entries, mut last_id) = (0, 0, None);
    let mut revocations = Vec::new();
    while entries < limit {
        let Some(entry) = entry(&buffer[at..])? else {
            break;
        };
        revocations.extend(entry.revocation);
        last_id = Some(entry.id);
        at += entry.size;
        entries += 1;
    }
    index.apply_refs(revocations);
    Ok((
        at,
        entries,
        last_id.map(|id| String::from_utf8_lossy(id).into_owned()),
    ))
}

/// The line at `at`: its type byte, its text and the bytes used through `\r\n`; `None` when the
/// buffer ends first.
fn line(buffer: &[u8], at: usize) -> io::Result<Option<(u8, &[u8], usize)>> {
    let rest = &buffer[at..];
    let Some(end) = rest.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    match rest.get(end + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(protocol_error("a line not ended by CRLF")),
    }
    let (&kind, text) = rest[..end]
        .split_first()
        .ok_or_else(|| protocol_error("an empty line"))?;
    Ok(Some((kind, text, end + 2)))
}

/// A length: decimal digits only (a negative one, a nil, never occurs in these replies).
fn number(text: &[u8]) -> io::Result<usize> {
    if text.is_empty() || text.len() > 12 {
        return Err(protocol_error("a length that is not a number"));
    }
    text.iter().try_fold(0, |value: usize, &digit| {
        if digit.is_ascii_digit() {
            Ok(value * 10 + usize::from(digit - b'0'))
        } else {
            Err(protocol_error("a length that is not a number"))
        }
    })
}

/// A header of type `expected` at `at` and the length it announces.
fn header(buffer: &[u8], at: usize, expected: u8) -> io::Result<Option<(usize, usize)>> {
    match line(buffer, at)? {
        Some((kind, text, used)) if kind == expected => Ok(Some((number(text)?, at + used))),
        Some(_) => Err(protocol_error("a stream entry of another shape")),
        None => Ok(None),
    }
}

/// The bulk string at `at` and the position after it.
fn bulk(buffer: &[u8], at: usize) -> io::Result<Option<(&[u8], usize)>> {
    let Some((length, start)) = header(buffer, at, b'$')? else {
        return Ok(None);
    };
    if length > MAX_BULK {
        return Err(protocol_error("a string longer than any entry field"));
    }
    let end = start + length;
    if buffer.len() < end + 2 {
        return Ok(None);
    }
    Ok(Some((&buffer[start..end], end + 2)))
}

/// One stream entry read in place.
struct Entry<'a> {
    id: &'a [u8],
    /// What it revokes, when this version understands it.
    revocation: Option<RevocationRef<'a>>,
    /// Its size in the reply.
    size: usize,
}

/// The stream entry (`[id, [field, value, …]]`) at the start of `buffer`; `None` when it is not
/// all there yet.
fn entry(buffer: &[u8]) -> io::Result<Option<Entry<'_>>> {
    let Some((parts, at)) = header(buffer, 0, b'*')? else {
        return Ok(None);
    };
    if parts != 2 {
        return Err(protocol_error("a stream entry that is not a pair"));
    }
    let Some((id, at)) = bulk(buffer, at)? else {
        return Ok(None);
    };
    let Some((values, fields_start)) = header(buffer, at, b'*')? else {
        return Ok(None);
    };
    if values > MAX_FIELDS {
        return Err(protocol_error("an entry with more fields than any revocation"));
    }
    // First make sure the whole entry is here, then read its fields in place.
    let mut end = fields_start;
    for _ in 0..values {
        let Some((_, next)) = bulk(buffer, end)? else {
            return Ok(None);
        };
        end = next;
    }
    let mut cursor = fields_start;
    let mut fields = std::iter::from_fn(|| {
        let (value, next) = bulk(buffer, cursor).ok()??;
        cursor = next;
        Some(value)
    })
    .take(values);
    let pairs = std::iter::from_fn(|| Some((fields.next()?, fields.next()?)));
    Ok(Some(Entry {
        id,
        revocation: RevocationRef::from_stream_fields(pairs),
        size: end,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &[u8] = b"*2\r\n$3\r\n1-0\r\n*6\r\n$4\r\nkind\r\n$3\r\nkid\r\n$2\r\nid\r\n$2\r\nk1\r\n$5\r\nuntil\r\n$2\r\n99\r\n";

    #[test]
    fn announced_lengths_beyond_an_entry_are_refused_before_buffering() {
        assert!(entry(b"*2\r\n$1000000000000\r\n").is_err());
        assert!(entry(b"*2\r\n$3\r\n1-0\r\n*100000\r\n").is_err());
    }

    #[test]
    fn an_entry_is_read_in_place_and_only_when_complete() {
        let read = entry(ENTRY).unwrap().unwrap();
        assert_eq!(read.id, b"1-0");
        assert_eq!(read.size, ENTRY.len());
        let revocation = read.revocation.unwrap();
        assert_eq!((revocation.id, revocation.until), (&b"k1"[..], 99));
        for cut in 0..ENTRY.len() {
            assert!(entry(&ENTRY[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn an_entry_of_another_shape_is_an_error_not_a_guess() {
        assert!(entry(b"*3\r\n").is_err());
        assert!(entry(b"+OK\r\n").is_err());
        assert!(entry(b"*2\r\n$x\r\n").is_err());
        assert!(entry(b"*2\r\n$-1\r\n").is_err());
        assert!(entry(b"*2\r\n$3\rx").is_err());
    }
}
