//! A small FTP client for the fleet test: it chooses its source address, so
//! that one machine can stand for many clients behind a load balancer
//! (Linux routes all of 127.0.0.0/8 to the loopback interface), and it
//! reports every reply code it was given, which is what the test judges.
//!
//! Only what the test needs: USER/PASS, TYPE I, PASV or EPSV, STOR, LIST,
//! RETR, QUIT (RFC 959, RFC 2428). Data connections come from the same
//! source address as the control connection, as a real client's would.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// How the client asks for a data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passive {
    /// `PASV`: the reply carries an IPv4 address and a port.
    Pasv,
    /// `EPSV`: the reply carries a port; the address is the control one.
    Epsv,
}

/// One reply from the server (the last line's code, all lines' text).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The three-digit code.
    pub code: u32,
    /// Every line, joined.
    pub text: String,
}

/// Why a step of a session did not succeed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What the client was doing, e.g. `STOR a.bin`.
    pub step: String,
    /// The server's reply code, when there was one.
    pub code: Option<u32>,
    /// The reply text or the I/O error.
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{}: {code} {}", self.step, self.detail),
            None => write!(f, "{}: no reply: {}", self.step, self.detail),
        }
    }
}

/// The size of each write on a data connection.
const CHUNK: usize = 64 << 10;

/// The time between two chunks of a trickling upload.
const TRICKLE: Duration = Duration::from_millis(100);

/// How fast an upload goes.
#[derive(Debug, Clone)]
pub enum Pace {
    /// As fast as the connection takes it.
    Full,
    /// The first `fast` bytes at full speed (then `reached` is told), then
    /// a chunk every 100 ms, and never the last chunk before `release`
    /// turns true: an upload that outlasts whatever the test wants.
    Hold {
        /// Bytes sent at full speed.
        fast: usize,
        /// Told once `fast` bytes are out.
        reached: tokio::sync::mpsc::UnboundedSender<()>,
        /// Lets the upload finish.
        release: watch::Receiver<bool>,
    },
}

/// A logged-in control connection from one source address.
pub struct Session {
    /// The server's greeting (the fleet's replicas name themselves in it).
    pub greeting: String,
    source: Ipv4Addr,
    server: SocketAddr,
    passive: Passive,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// Opens a TCP connection from `source` (any free port) to `to`.
pub async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    socket.connect(to).await
}

fn io_failure(step: &str, e: std::io::Error) -> Failure {
    Failure {
        step: step.to_string(),
        code: None,
        detail: e.to_string(),
    }
}

impl Session {
    /// Connects from `source`, logs in and switches to binary mode.
    pub async fn login(
        source: Ipv4Addr,
        server: SocketAddr,
        user: &str,
        password: &str,
        passive: Passive,
    ) -> Result<Session, Failure> {
        let stream = connect_from(source, server)
            .await
            .map_err(|e| io_failure("connect", e))?;
        let (read, writer) = stream.into_split();
        let mut session = Session {
            greeting: String::new(),
            source,
            server,
            passive,
            reader: BufReader::new(read),
            writer,
        };
        session.greeting = session.expect_reply("greeting", &[220]).await?.text;
        session.command(&format!("USER {user}"), &[331]).await?;
        session.send(&format!("PASS {password}")).await?;
        session.expect_reply("PASS", &[230]).await?;
        session.command("TYPE I", &[200]).await?;
        Ok(session)
    }

    /// Uploads `data` to `path`; success means the server answered 226
    /// after every byte went out.
    pub async fn store(&mut self, path: &str, data: &[u8], pace: Pace) -> Result<(), Failure> {
        let step = format!("STOR {path}");
        let mut data_conn = self.open_data(&step).await?;
        self.command(&step, &[125, 150]).await?;
        let written = send_paced(&mut data_conn, data, pace).await;
        // Closing the data connection is the end of the file (FIN, not
        // RST, so the server can tell a complete upload).
        let _ = data_conn.shutdown().await;
        drop(data_conn);
        let last = self.reply(&step).await?;
        match (written, last.code) {
            (Ok(()), 226) => Ok(()),
            (Err(e), 226) => Err(Failure {
                step,
                code: Some(226),
                detail: format!("226 although the upload was cut: {e}"),
            }),
            (_, code) => Err(Failure {
                step,
                code: Some(code),
                detail: last.text,
            }),
        }
    }

    /// Downloads `path`.
    pub async fn retrieve(&mut self, path: &str) -> Result<Vec<u8>, Failure> {
        self.read_data(&format!("RETR {path}")).await
    }

    /// The `LIST` of `path`, as text.
    pub async fn list(&mut self, path: &str) -> Result<String, Failure> {
        let bytes = self.read_data(&format!("LIST {path}")).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Says goodbye (the reply is not judged: the session's work is done).
    pub async fn quit(mut self) {
        if self.send("QUIT").await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.reply("QUIT")).await;
        }
    }

    /// Sends a command whose data the server sends back, reads it to the
    /// end and expects 226.
    async fn read_data(&mut self, step: &str) -> Result<Vec<u8>, Failure> {
        let mut data_conn = self.open_data(step).await?;
        self.command(step, &[125, 150]).await?;
        let mut bytes = Vec::new();
        let read = data_conn.read_to_end(&mut bytes).await;
        let last = self.reply(step).await?;
        match (read, last.code) {
            (Ok(_), 226) => Ok(bytes),
            (Err(e), 226) => Err(io_failure(step, e)),
            (_, code) => Err(Failure {
                step: step.to_string(),
                code: Some(code),
                detail: last.text,
            }),
        }
    }

    /// `PASV` or `EPSV`, then a connection from our source address to the
    /// address the server gave.
    async fn open_data(&mut self, step: &str) -> Result<TcpStream, Failure> {
        let to = match self.passive {
            Passive::Pasv => {
                let reply = self.command("PASV", &[227]).await?;
                let addr = parse_pasv(&reply.text).ok_or_else(|| Failure {
                    step: "PASV".into(),
                    code: Some(227),
                    detail: format!("unreadable address: {}", reply.text),
                })?;
                // The load balancer's address, not the replica's: a client
                // that used the replica's would bypass the load balancer.
                if addr.ip() != self.server.ip() {
                    return Err(Failure {
                        step: "PASV".into(),
                        code: Some(227),
                        detail: format!("advertises {addr}, not {}", self.server.ip()),
                    });
                }
                addr
            }
            Passive::Epsv => {
                let reply = self.command("EPSV", &[229]).await?;
                let port = parse_epsv(&reply.text).ok_or_else(|| Failure {
                    step: "EPSV".into(),
                    code: Some(229),
                    detail: format!("unreadable port: {}", reply.text),
                })?;
                SocketAddr::new(self.server.ip(), port)
            }
        };
        connect_from(self.source, to)
            .await
            .map_err(|e| io_failure(&format!("{step}: data connection to {to}"), e))
    }

    /// Sends `line` and expects one of `ok`.
    async fn command(&mut self, line: &str, ok: &[u32]) -> Result<Reply, Failure> {
        self.send(line).await?;
        self.expect_reply(line, ok).await
    }

    async fn send(&mut self, line: &str) -> Result<(), Failure> {
        let step = line.split(' ').next().unwrap_or(line);
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| io_failure(step, e))
    }

    async fn expect_reply(&mut self, step: &str, ok: &[u32]) -> Result<Reply, Failure> {
        let reply = self.reply(step).await?;
        if ok.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(Failure {
                step: step.to_string(),
                code: Some(reply.code),
                detail: reply.text,
            })
        }
    }

    /// One reply, multi-line ones (`123-` … `123 `) included.
    async fn reply(&mut self, step: &str) -> Result<Reply, Failure> {
        let mut text = String::new();
        let mut first_code: Option<String> = None;
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .await
                .map_err(|e| io_failure(step, e))?;
            if n == 0 {
                return Err(Failure {
                    step: step.to_string(),
                    code: None,
                    detail: format!("control connection closed (after {text:?})"),
                });
            }
            let line = line.trim_end_matches(['\r', '\n']);
            text.push_str(line);
            text.push('\n');
            let code = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
            let Some(code) = code else { continue };
            let expected = first_code.get_or_insert_with(|| code.to_string());
            if code == expected && line.as_bytes().get(3) == Some(&b' ') {
                return Ok(Reply {
                    code: code.parse().expect("three digits"),
                    text,
                });
            }
        }
    }
}

/// Writes `data` at the given pace.
async fn send_paced(conn: &mut TcpStream, data: &[u8], pace: Pace) -> std::io::Result<()> {
    let mut sent = 0;
    let mut told = false;
    while sent < data.len() {
        let end = (sent + CHUNK).min(data.len());
        if let Pace::Hold {
            fast,
            reached,
            release,
        } = &pace
        {
            if sent >= *fast {
                if !told {
                    told = true;
                    let _ = reached.send(());
                }
                if !*release.borrow() {
                    if end < data.len() {
                        tokio::time::sleep(TRICKLE).await;
                    } else {
                        let mut release = release.clone();
                        let _ = release.wait_for(|r| *r).await;
                    }
                }
            }
        }
        conn.write_all(&data[sent..end]).await?;
        sent = end;
    }
    conn.flush().await
}

/// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`.
fn parse_pasv(text: &str) -> Option<SocketAddr> {
    let inner = text.split('(').nth(1)?.split(')').next()?;
    let n: Vec<u16> = inner
        .split(',')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, p1, p2] = n[..] else {
        return None;
    };
    let octet = |v: u16| u8::try_from(v).ok();
    let ip = Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?);
    Some(SocketAddr::new(
        ip.into(),
        p1.checked_mul(256)?.checked_add(p2)?,
    ))
}

/// `229 Entering Extended Passive Mode (|||port|)`.
fn parse_epsv(text: &str) -> Option<u16> {
    let inner = text.split('(').nth(1)?.split(')').next()?;
    inner.trim_matches('|').parse().ok()
}

#[test]
fn passive_replies_parse() {
    assert_eq!(
        parse_pasv("227 Entering Passive Mode (127,0,0,1,239,10)\n"),
        Some("127.0.0.1:61194".parse().expect("addr"))
    );
    assert_eq!(parse_pasv("227 Entering Passive Mode (1,2,3)\n"), None);
    assert_eq!(
        parse_epsv("229 Entering Extended Passive Mode (|||61194|)\n"),
        Some(61194)
    );
}
