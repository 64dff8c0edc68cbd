//! A tiny FTP control-channel client over a raw `TcpStream`, for sessions
//! that must go byte for byte the way a particular client sends them
//! (FileZilla's command order, WinSCP's `.filepart` dance, bare `\n` line
//! endings, NOOP in the middle of a transfer). A library client such as
//! suppaftp would normalise exactly what these tests are about.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Longest a test waits for one reply before it fails (a hang, not a
/// timing assertion).
const REPLY_WAIT: Duration = Duration::from_secs(30);

/// One complete server reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The three-digit code.
    pub code: u32,
    /// Every line as received, without the line ending.
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined, for assertions and messages.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A control connection that sends exactly the lines it is given.
pub struct LineClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    eol: &'static str,
    /// The commands sent and replies read, to explain a failure.
    pub transcript: Vec<String>,
}

impl LineClient {
    /// Connects (retrying while the gateway starts) and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> LineClient {
        let mut last = None;
        for _ in 0..100 {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let (read, writer) = stream.into_split();
                    let mut client = LineClient {
                        reader: BufReader::new(read),
                        writer,
                        eol: "\r\n",
                        transcript: Vec::new(),
                    };
                    let greeting = client.reply().await;
                    assert_eq!(greeting.code, 220, "greeting: {}", greeting.text());
                    return client;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot connect to {addr}: {last:?}");
    }

    /// From now on, ends commands with a bare `\n` (old embedded clients).
    pub fn bare_lf(mut self) -> Self {
        self.eol = "\n";
        self
    }

    /// Sends one command line.
    pub async fn send(&mut self, line: &str) {
        let shown = if line.starts_with("PASS ") {
            "PASS ****"
        } else {
            line
        };
        self.transcript.push(format!("> {shown}"));
        let wire = format!("{line}{}", self.eol);
        self.writer
            .write_all(wire.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("send {shown}: {e}\n{}", self.transcript.join("\n")));
    }

    /// Reads one complete reply (multi-line aware); panics on EOF.
    pub async fn reply(&mut self) -> Reply {
        self.try_reply()
            .await
            .unwrap_or_else(|| panic!("connection closed\n{}", self.transcript.join("\n")))
    }

    /// Reads one complete reply, or `None` when the server closed the
    /// connection first.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u32>().ok())
                .filter(|_| line.len() == 3 || matches!(line.as_bytes()[3], b' ' | b'-'));
            lines.push(line.clone());
            // A reply ends at its first line "NNN " (or "NNN"), or, when it
            // began "NNN-", at the next line that starts with the same code
            // and a space.
            let first = lines[0].as_bytes();
            let multi = first.len() > 3 && first[3] == b'-';
            let done = match (multi, code) {
                (false, Some(_)) => true,
                (true, Some(_)) if lines.len() > 1 => {
                    line.starts_with(&lines[0][..3]) && line.as_bytes().get(3) != Some(&b'-')
                }
                _ => false,
            };
            if done {
                let code = lines[0][..3].parse().expect("reply code");
                return Some(Reply { code, lines });
            }
            assert!(
                multi,
                "malformed reply line {line:?}\n{}",
                self.transcript.join("\n")
            );
        }
    }

    async fn read_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(REPLY_WAIT, self.reader.read_until(b'\n', &mut buf))
            .await
            .unwrap_or_else(|_| panic!("no reply in time\n{}", self.transcript.join("\n")))
            .ok()?;
        if n == 0 {
            return None;
        }
        assert!(
            buf.ends_with(b"\r\n"),
            "reply line not ended by CRLF: {buf:?}"
        );
        let line = String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned();
        self.transcript.push(format!("< {line}"));
        Some(line)
    }

    /// Sends a command and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(line).await;
        self.reply().await
    }

    /// Sends a command and insists on one reply code.
    pub async fn expect(&mut self, line: &str, code: u32) -> Reply {
        let reply = self.cmd(line).await;
        assert_eq!(reply.code, code, "{line}\n{}", self.transcript.join("\n"));
        reply
    }

    /// USER + PASS, then binary mode.
    pub async fn login(&mut self, user: &str, password: &str) {
        self.expect(&format!("USER {user}"), 331).await;
        self.expect(&format!("PASS {password}"), 230).await;
        self.expect("TYPE I", 200).await;
    }

    /// PASV, and the address it names.
    pub async fn pasv(&mut self) -> SocketAddr {
        let reply = self.expect("PASV", 227).await;
        let text = reply.text();
        let inner = text
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(inner, _)| inner)
            .unwrap_or_else(|| panic!("PASV reply without (h,h,h,h,p,p): {text}"));
        let n: Vec<u16> = inner
            .split(',')
            .map(|v| v.trim().parse().expect("PASV number"))
            .collect();
        assert_eq!(n.len(), 6, "{text}");
        format!("{}.{}.{}.{}:{}", n[0], n[1], n[2], n[3], n[4] * 256 + n[5])
            .parse()
            .expect("PASV address")
    }

    /// Opens a passive data connection.
    pub async fn data(&mut self) -> TcpStream {
        let addr = self.pasv().await;
        TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("data connection to {addr}: {e}"))
    }

    /// A command that sends data to us (RETR, LIST, MLSD, NLST): returns
    /// the bytes after the transfer's `226`.
    pub async fn download(&mut self, command: &str) -> Vec<u8> {
        let data = self.data().await;
        self.receive(data, command).await
    }

    /// Sends `command` (e.g. RETR after REST) and reads its data from a
    /// data connection opened earlier with [`LineClient::data`].
    pub async fn receive(&mut self, mut data: TcpStream, command: &str) -> Vec<u8> {
        let start = self.cmd(command).await;
        assert!(
            matches!(start.code, 125 | 150),
            "{command}\n{}",
            self.transcript.join("\n")
        );
        let mut out = Vec::new();
        data.read_to_end(&mut out).await.expect("read data");
        let done = self.reply().await;
        assert_eq!(done.code, 226, "{command}\n{}", self.transcript.join("\n"));
        out
    }

    /// STOR over a passive data connection.
    pub async fn upload(&mut self, command: &str, bytes: &[u8]) {
        let mut data = self.data().await;
        let start = self.cmd(command).await;
        assert!(
            matches!(start.code, 125 | 150),
            "{command}\n{}",
            self.transcript.join("\n")
        );
        data.write_all(bytes).await.expect("write data");
        data.shutdown().await.expect("close data");
        drop(data);
        let done = self.reply().await;
        assert_eq!(done.code, 226, "{command}\n{}", self.transcript.join("\n"));
    }
}
