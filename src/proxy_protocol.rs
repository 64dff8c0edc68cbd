//! The PROXY protocol (v1 text, v2 binary) that L4 load balancers put in
//! front of a connection to tell the server who the client is: haproxy's
//! `send-proxy`/`send-proxy-v2`, AWS NLB/ELB, GCP and Azure load balancers.
//!
//! Behind such a balancer every connection comes from the balancer's
//! address, so `allowed_ips`, lockout, per-address limits and the passive
//! data-connection check would see only the proxy. With
//! `server.proxy_protocol` on, the gateway reads this header first on every
//! control and data connection it accepts and uses the address in it.
//!
//! The reader takes exactly the header's bytes off the socket and nothing
//! after them: the FTP bytes that follow belong to libunftp (or to the TLS
//! handshake), so it reads the fixed v2 prefix, then either the announced
//! v2 length or the v1 line one byte at a time (at most 107 bytes; a
//! control connection pays ~100 tiny reads once). A header that does not
//! complete within the deadline is refused, so a slow sender holds a
//! connection slot no longer than that.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest v1 header, CRLF included (the spec's bound).
const V1_MAX: usize = 107;

/// Largest v2 address block accepted. The addresses take at most 216 bytes
/// (AF_UNIX); the rest are TLVs (AWS puts the VPC endpoint id there, Azure
/// the link id). 1 KiB holds every balancer's TLVs with room; anything
/// larger is not a load balancer talking.
const V2_MAX_BODY: usize = 1024;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    /// The header did not complete in time.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The connection failed or closed before the header ended.
    #[error("connection closed or failed while reading the PROXY header")]
    Io(#[source] std::io::Error),
    /// The connection does not start with a PROXY header.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// A header that does not follow the specification.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxiedAddress {
    /// The client's address (and the address it connected to).
    Client {
        /// The client, as the balancer saw it.
        source: SocketAddr,
        /// The address the client connected to (the balancer's).
        destination: SocketAddr,
    },
    /// The balancer speaking for itself (v2 `LOCAL`, e.g. a health check,
    /// or v1 `UNKNOWN`): the socket's own addresses apply.
    Local,
}

/// Reads one PROXY header (v1 or v2) from the start of `stream`, within
/// `deadline`, leaving every byte after it unread.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
    deadline: Duration,
) -> Result<ProxiedAddress, ProxyHeaderError> {
    tokio::time::timeout(deadline, read_header_now(stream))
        .await
        .map_err(|_| ProxyHeaderError::Timeout(deadline))?
}

async fn read_header_now<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<ProxiedAddress, ProxyHeaderError> {
    // Every header is at least 15 bytes (`PROXY UNKNOWN\r\n`) and a v2 one
    // starts with 16 fixed bytes: reading 12 first never reads past a
    // header.
    let mut prefix = [0u8; 12];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(ProxyHeaderError::Io)?;
    if prefix == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        stream
            .read_exact(&mut fixed)
            .await
            .map_err(ProxyHeaderError::Io)?;
        let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if len > V2_MAX_BODY {
            return Err(ProxyHeaderError::Malformed("v2 header longer than 1 KiB"));
        }
        let mut body = vec![0u8; len];
        stream
            .read_exact(&mut body)
            .await
            .map_err(ProxyHeaderError::Io)?;
        return parse_v2(fixed[0], fixed[1], &body);
    }
    if !prefix.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing);
    }
    let mut line = prefix.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
        }
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(ProxyHeaderError::Io)?;
        line.push(byte[0]);
    }
    parse_v1(&line)
}

/// Parses a complete v1 line (`PROXY TCP4 src dst sport dport\r\n`).
fn parse_v1(line: &[u8]) -> Result<ProxiedAddress, ProxyHeaderError> {
    let text = std::str::from_utf8(line)
        .ok()
        .and_then(|t| t.strip_suffix("\r\n"))
        .ok_or(ProxyHeaderError::Malformed("v1 line is not ASCII"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(ProxiedAddress::Local),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, ProxyHeaderError> {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| ProxyHeaderError::Malformed("v1 address"))?;
                match (*family, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(ProxyHeaderError::Malformed(
                        "v1 address of the other family",
                    )),
                }
            };
            let port = |s: &str| -> Result<u16, ProxyHeaderError> {
                // The spec forbids leading zeros and signs; u16's parser
                // would take "+80" and "080".
                if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProxyHeaderError::Malformed("v1 port"));
                }
                if s.len() > 1 && s.starts_with('0') {
                    return Err(ProxyHeaderError::Malformed("v1 port"));
                }
                s.parse()
                    .map_err(|_| ProxyHeaderError::Malformed("v1 port"))
            };
            Ok(ProxiedAddress::Client {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            })
        }
        _ => Err(ProxyHeaderError::Malformed("v1 line")),
    }
}

/// Parses a v2 header from its version/command byte, its family/transport
/// byte and the address block (TLVs ignored).
fn parse_v2(
    version_command: u8,
    family_transport: u8,
    body: &[u8],
) -> Result<ProxiedAddress, ProxyHeaderError> {
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed("v2 version is not 2"));
    }
    match version_command & 0x0f {
        // LOCAL: the balancer's own connection; the block is ignored.
        0 => return Ok(ProxiedAddress::Local),
        1 => {}
        _ => return Err(ProxyHeaderError::Malformed("v2 command")),
    }
    let (family, transport) = (family_transport >> 4, family_transport & 0x0f);
    // FTP runs over TCP: a datagram header is not ours to take.
    if transport != 1 && !(family == 0 && transport == 0) {
        return Err(ProxyHeaderError::Malformed("v2 transport is not TCP"));
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family {
        // AF_UNSPEC: the sender does not know the addresses.
        0 => Ok(ProxiedAddress::Local),
        1 => {
            let a = body
                .get(..12)
                .ok_or(ProxyHeaderError::Malformed("v2 IPv4 block too short"))?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(ProxiedAddress::Client {
                source: SocketAddr::new(ip(&a[0..4]), port(&a[8..10])),
                destination: SocketAddr::new(ip(&a[4..8]), port(&a[10..12])),
            })
        }
        2 => {
            let a = body
                .get(..36)
                .ok_or(ProxyHeaderError::Malformed("v2 IPv6 block too short"))?;
            let ip = |b: &[u8]| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Ok(ProxiedAddress::Client {
                source: SocketAddr::new(ip(&a[0..16]), port(&a[32..34])),
                destination: SocketAddr::new(ip(&a[16..32]), port(&a[34..36])),
            })
        }
        // AF_UNIX clients have no address the gateway could use.
        3 => Ok(ProxiedAddress::Local),
        _ => Err(ProxyHeaderError::Malformed("v2 address family")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const WAIT: Duration = Duration::from_secs(5);

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn v4_block() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 7, 10, 0, 0, 1];
        b.extend_from_slice(&40123u16.to_be_bytes());
        b.extend_from_slice(&21u16.to_be_bytes());
        b
    }

    /// Reads a header from `bytes` followed by FTP bytes; returns the
    /// result and what was left unread.
    async fn read(bytes: &[u8]) -> (Result<ProxiedAddress, ProxyHeaderError>, Vec<u8>) {
        let mut input = bytes.to_vec();
        input.extend_from_slice(b"USER alice\r\n");
        let mut reader = &input[..];
        let result = read_header(&mut reader, WAIT).await;
        (result, reader.to_vec())
    }

    fn client(source: &str, destination: &str) -> ProxiedAddress {
        ProxiedAddress::Client {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn v1_tcp4_and_tcp6_and_nothing_read_past_them() {
        let (r, rest) = read(b"PROXY TCP4 192.0.2.7 10.0.0.1 40123 21\r\n").await;
        assert_eq!(r.unwrap(), client("192.0.2.7:40123", "10.0.0.1:21"));
        assert_eq!(rest, b"USER alice\r\n");
        let (r, rest) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 40123 21\r\n").await;
        assert_eq!(
            r.unwrap(),
            client("[2001:db8::7]:40123", "[2001:db8::1]:21")
        );
        assert_eq!(rest, b"USER alice\r\n");
        let (r, rest) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(r.unwrap(), ProxiedAddress::Local);
        assert_eq!(rest, b"USER alice\r\n");
    }

    #[tokio::test]
    async fn v2_inet_inet6_local_and_tlvs_skipped() {
        let (r, rest) = read(&v2(1, 0x11, &v4_block())).await;
        assert_eq!(r.unwrap(), client("192.0.2.7:40123", "10.0.0.1:21"));
        assert_eq!(rest, b"USER alice\r\n");

        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&40123u16.to_be_bytes());
        block.extend_from_slice(&21u16.to_be_bytes());
        let (r, _) = read(&v2(1, 0x21, &block)).await;
        assert_eq!(
            r.unwrap(),
            client("[2001:db8::7]:40123", "[2001:db8::1]:21")
        );

        // TLVs after the addresses (AWS's VPC endpoint id) are skipped whole.
        let mut with_tlv = v4_block();
        with_tlv.extend_from_slice(&[0xea, 0, 5, 1, b'v', b'p', b'c', b'e']);
        let (r, rest) = read(&v2(1, 0x11, &with_tlv)).await;
        assert_eq!(r.unwrap(), client("192.0.2.7:40123", "10.0.0.1:21"));
        assert_eq!(rest, b"USER alice\r\n");

        // LOCAL (health checks) and AF_UNSPEC: the socket's address applies.
        let (r, rest) = read(&v2(0, 0x00, &[])).await;
        assert_eq!(r.unwrap(), ProxiedAddress::Local);
        assert_eq!(rest, b"USER alice\r\n");
    }

    #[tokio::test]
    async fn malformed_headers_are_refused() {
        for bad in [
            &b"USER alice\r\n"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 40123\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 40123 21 9\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 40123 21\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 40123 21\r\n",
            b"PROXY TCP4 192.0.2.300 10.0.0.1 40123 21\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +4012 21\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 040123 21\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 21\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 40123 21\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 40123 21\r\n",
        ] {
            let (r, _) = read(bad).await;
            assert!(
                r.is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
        // v2: wrong version, unknown command, UDP, short address blocks.
        let mut wrong_version = v2(1, 0x11, &v4_block());
        wrong_version[12] = 0x11;
        for bad in [
            wrong_version,
            v2(2, 0x11, &v4_block()),
            v2(1, 0x12, &v4_block()),
            v2(1, 0x11, &v4_block()[..11]),
            v2(1, 0x21, &v4_block()),
            v2(1, 0x41, &v4_block()),
        ] {
            let (r, _) = read(&bad).await;
            assert!(
                matches!(r, Err(ProxyHeaderError::Malformed(_))),
                "{bad:?}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn oversized_headers_are_refused_without_reading_them() {
        // A v1 line without CRLF within 107 bytes.
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 200));
        let (r, rest) = read(&long).await;
        assert!(matches!(r, Err(ProxyHeaderError::Malformed(_))), "{r:?}");
        assert_eq!(rest.len(), long.len() + 12 - V1_MAX, "read past 107 bytes");
        // A v2 header announcing 64 KiB is refused on its length alone.
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let (r, rest) = read(&big).await;
        assert!(matches!(r, Err(ProxyHeaderError::Malformed(_))), "{r:?}");
        assert_eq!(rest, b"USER alice\r\n");
    }

    #[tokio::test]
    async fn truncated_headers_are_refused() {
        let full = v2(1, 0x11, &v4_block());
        for cut in [5, 12, 14, 16, full.len() - 1] {
            let mut reader = &full[..cut];
            let r = read_header(&mut reader, WAIT).await;
            assert!(
                matches!(r, Err(ProxyHeaderError::Io(_))),
                "cut at {cut}: {r:?}"
            );
        }
        let mut reader = &b"PROXY TCP4 192.0.2.7 10.0.0.1 40123 21\r"[..];
        let r = read_header(&mut reader, WAIT).await;
        assert!(matches!(r, Err(ProxyHeaderError::Io(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_header_that_never_completes_times_out() {
        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        // The client stays connected and silent: only the deadline ends it.
        let r = read_header(&mut server, Duration::from_millis(200)).await;
        assert!(matches!(r, Err(ProxyHeaderError::Timeout(_))), "{r:?}");
        drop(client);
    }
}
