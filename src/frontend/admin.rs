//! The admin socket: `firstmate run` serves the console on a local Unix socket
//! (`[admin] socket`, by default `<database file>.admin.sock`), so `firstmate console`
//! next to a running service is that service's client: no second engine, gateway or
//! metrics listener. With no service answering, the console runs its own engine.
//!
//! The protocol (version [`PROTOCOL`]): frames both ways, each a kind byte, a payload
//! length (`u32`, big-endian, at most [`MAX_FRAME`]) and the payload ([`Frame`]).
//! 1. The service sends `Hello` (JSON `{"protocol":1,"version":"…"}`); the client sends
//!    `Hello` (JSON `{"protocol":1,"user":"…","cwd":"…"}`: who acts, and where `logs`
//!    writes transcripts). Neither waits for the other's.
//! 2. The client sends its standard input as `Input` frames (the bytes as read), a read
//!    failure as `InputError`, and `End` at end of input; it keeps the connection open.
//! 3. The service runs a [`Console`] on that input: `Out` and `Err` carry what it prints
//!    to standard output and standard error, and `Exit` (one byte: 0 every line
//!    accepted, 2 one refused, 1 a failure or a refusal of the connection) ends it.
//!
//! A client that closes the connection ends its console (like a killed console: the line
//! being handled is finished, the lines after it are dropped; its sessions go on, and what
//! it could not write is shown to the next console). One console at a time:
//! a second client is refused. Only the socket's owner may use it: the file is 0600, and
//! the peer's uid is checked on every connection.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::engine::Engine;
use crate::frontend::console::{AbortOnDrop, Console, Outcome, Sink, Stream};

/// The protocol version both sides announce in their `Hello`.
pub const PROTOCOL: u32 = 1;
/// The largest payload of one frame; longer output is sent in several.
pub const MAX_FRAME: usize = 1 << 20;
/// How long the service waits for a client's `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How much standard input the client sends in one frame.
const INPUT_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "another firstmate service already answers on the admin socket {0}: stop it first, \
         or give this one its own database or [admin] socket"
    )]
    AlreadyServed(PathBuf),
    #[error(
        "{0} exists and is not a socket: move it away, or set [admin] socket in the config \
         to another path"
    )]
    NotASocket(PathBuf),
    #[error(
        "cannot serve the admin socket {path}: {source}; set [admin] socket in the config to \
         a shorter path (at most 107 bytes) in a folder this user can write"
    )]
    Bind { path: PathBuf, source: io::Error },
    #[error(
        "a firstmate service runs, but this user may not use its admin socket {0}: run the \
         console as the user that runs `firstmate run` (with Docker Compose: `docker compose \
         exec firstmate firstmate console`)"
    )]
    NotOwner(PathBuf),
    #[error("cannot connect to the admin socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error(
        "the firstmate service closed the connection before the console ended (did it stop?); \
         sessions keep running: run `firstmate console` again to see their output"
    )]
    Closed,
    #[error("the connection to the firstmate service failed: {0}")]
    Io(#[from] io::Error),
    #[error("the admin socket protocol was broken: {0}")]
    Protocol(String),
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First, both ways: JSON saying who speaks.
    Hello(Vec<u8>),
    /// Client: bytes of its standard input.
    Input(Vec<u8>),
    /// Client: reading its input failed; the lines after are not read.
    InputError(String),
    /// Client: end of input.
    End,
    /// Service: bytes for standard output.
    Out(Vec<u8>),
    /// Service: bytes for standard error.
    Err(Vec<u8>),
    /// Service: the console ended with this exit code.
    Exit(u8),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => 0,
            Frame::Input(_) => 1,
            Frame::InputError(_) => 2,
            Frame::End => 3,
            Frame::Out(_) => 4,
            Frame::Err(_) => 5,
            Frame::Exit(_) => 6,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Frame::Hello(b) | Frame::Input(b) | Frame::Out(b) | Frame::Err(b) => b,
            Frame::InputError(m) => m.as_bytes(),
            Frame::End => &[],
            Frame::Exit(code) => std::slice::from_ref(code),
        }
    }

    /// The frame's bytes on the wire. The payload must not exceed [`MAX_FRAME`].
    pub fn encode(&self) -> Vec<u8> {
        let payload = self.payload();
        debug_assert!(payload.len() <= MAX_FRAME);
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The payload length a header announces, checked against [`MAX_FRAME`].
    fn length(header: [u8; 5]) -> Result<usize, AdminError> {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_FRAME {
            return Err(AdminError::Protocol(format!(
                "a frame of {len} bytes (at most {MAX_FRAME})"
            )));
        }
        Ok(len)
    }

    /// A frame from its kind and payload.
    fn decode(kind: u8, payload: Vec<u8>) -> Result<Frame, AdminError> {
        Ok(match kind {
            0 => Frame::Hello(payload),
            1 => Frame::Input(payload),
            2 => Frame::InputError(String::from_utf8_lossy(&payload).into_owned()),
            3 if payload.is_empty() => Frame::End,
            4 => Frame::Out(payload),
            5 => Frame::Err(payload),
            6 if payload.len() == 1 => Frame::Exit(payload[0]),
            3 | 6 => {
                return Err(AdminError::Protocol(format!(
                    "a frame of kind {kind} with {} bytes",
                    payload.len()
                )));
            }
            _ => return Err(AdminError::Protocol(format!("unknown frame kind {kind}"))),
        })
    }
}

/// Reads the next frame; None when the stream ends between frames.
pub async fn read_frame<R>(r: &mut R) -> Result<Option<Frame>, AdminError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; 5];
    if r.read(&mut header[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut header[1..]).await?;
    let len = Frame::length(header)?;
    let mut payload = vec![0; len];
    r.read_exact(&mut payload).await?;
    Frame::decode(header[0], payload).map(Some)
}

async fn write_frame<W>(w: &mut W, frame: &Frame) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    w.write_all(&frame.encode()).await?;
    w.flush().await
}

#[derive(Serialize, Deserialize)]
struct ServiceHello {
    protocol: u32,
    version: String,
}

#[derive(Serialize, Deserialize)]
struct ClientHello {
    protocol: u32,
    user: String,
    cwd: String,
}

// --- the service ----------------------------------------------------------------------

/// The admin socket of `firstmate run`, bound; its file is removed when it is dropped.
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's owner: the only user served.
    owner: u32,
    /// A console is connected.
    busy: Arc<AtomicBool>,
}

impl AdminSocket {
    /// Binds `path` (mode 0600). A stale socket file (nothing answers) is removed first;
    /// a socket on which a service answers is an error, and so is a path that is not a
    /// socket.
    pub async fn bind(path: &Path) -> Result<AdminSocket, AdminError> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
                Ok(_) => return Err(AdminError::AlreadyServed(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing a stale admin socket");
                    std::fs::remove_file(path).map_err(|source| AdminError::Bind {
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
                Err(source) => {
                    return Err(AdminError::Bind {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            },
            Ok(_) => return Err(AdminError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(AdminError::Bind {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let bind_err = |source| AdminError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        // Owner only. A peer that connected before the chmod is still checked by uid.
        let owner = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::metadata(path))
            .map(|m| m.uid())
            .map_err(|e| {
                let _ = std::fs::remove_file(path);
                bind_err(e)
            })?;
        Ok(AdminSocket {
            listener,
            path: path.to_path_buf(),
            owner,
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves one console per connection on `engine`, one at a time; never returns.
    pub async fn serve(&self, engine: Engine) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let engine = engine.clone();
                    let busy = self.busy.clone();
                    let owner = self.owner;
                    tokio::spawn(async move {
                        if let Err(e) = serve_client(stream, engine, owner, busy).await {
                            tracing::warn!(error = %e, "admin socket: a console connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Frees the console slot when dropped.
struct Slot(Arc<AtomicBool>);

impl Slot {
    fn take(busy: &Arc<AtomicBool>) -> Option<Slot> {
        (!busy.swap(true, Ordering::SeqCst)).then(|| Slot(busy.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The console's output, as frames to its client.
struct ClientSink {
    conn: Mutex<OwnedWriteHalf>,
    /// The client closed the connection.
    closed: AtomicBool,
}

impl ClientSink {
    fn new(conn: OwnedWriteHalf) -> ClientSink {
        ClientSink {
            conn: Mutex::new(conn),
            closed: AtomicBool::new(false),
        }
    }

    async fn send(&self, frame: &Frame) -> io::Result<()> {
        write_frame(&mut *self.conn.lock().await, frame).await
    }

    /// Tells the client why it is not served, and ends.
    async fn refuse(&self, why: &str) {
        let _ = self
            .send(&Frame::Err(format!("firstmate: {why}\n").into_bytes()))
            .await;
        let _ = self.send(&Frame::Exit(1)).await;
    }
}

impl Sink for ClientSink {
    fn write<'a>(
        &'a self,
        stream: Stream,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            if self.closed.load(Ordering::SeqCst) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let mut conn = self.conn.lock().await;
            for chunk in text.as_bytes().chunks(MAX_FRAME) {
                let frame = match stream {
                    Stream::Out => Frame::Out(chunk.to_vec()),
                    Stream::Err => Frame::Err(chunk.to_vec()),
                };
                conn.write_all(&frame.encode()).await?;
            }
            conn.flush().await
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A byte stream fed by a channel: the client's `Input` frames as the console's input,
/// and the client's standard input read on a thread.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

/// Standard input, read on a plain thread: a client that ends before its input does (a
/// refused connection) exits at once, where tokio's stdin would hold the runtime until
/// the next line is typed.
pub fn stdin() -> impl AsyncRead + Send + Unpin + 'static {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; INPUT_CHUNK];
        loop {
            let chunk = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => Ok(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let last = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || last {
                break;
            }
        }
    });
    ChannelReader::new(rx)
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.buf.len() {
                let n = out.remaining().min(this.buf.len() - this.pos);
                out.put_slice(&this.buf[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(this.rx.poll_recv(cx)) {
                Some(Ok(bytes)) => {
                    this.buf = bytes;
                    this.pos = 0;
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Feeds the client's input to its console until `End`, then watches the connection:
/// when the client closes it (or breaks the protocol), `left` fires.
async fn forward_input(
    mut conn: BufReader<OwnedReadHalf>,
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    left: oneshot::Sender<()>,
) {
    let mut tx = Some(tx);
    loop {
        match read_frame(&mut conn).await {
            Ok(Some(Frame::Input(bytes))) => {
                if let Some(t) = &tx
                    && t.send(Ok(bytes)).await.is_err()
                {
                    tx = None;
                }
            }
            Ok(Some(Frame::InputError(msg))) => {
                if let Some(t) = tx.take() {
                    let _ = t.send(Err(io::Error::other(msg))).await;
                }
            }
            Ok(Some(Frame::End)) => tx = None,
            Ok(Some(other)) => {
                tracing::debug!(kind = other.kind(), "admin socket: unexpected frame");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "admin socket: reading the client failed");
                break;
            }
        }
    }
    let _ = left.send(());
}

async fn serve_client(
    stream: UnixStream,
    engine: Engine,
    owner: u32,
    busy: Arc<AtomicBool>,
) -> Result<(), AdminError> {
    let peer = stream.peer_cred()?;
    let (rd, wr) = stream.into_split();
    let out = Arc::new(ClientSink::new(wr));
    if peer.uid() != owner {
        tracing::warn!(
            uid = peer.uid(),
            "admin socket: refused a console of another user"
        );
        out.refuse(
            "only the user that runs the service may use its admin socket: run the console as that user",
        )
            .await;
        return Ok(());
    }
    let hello = ServiceHello {
        protocol: PROTOCOL,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    out.send(&Frame::Hello(
        serde_json::to_vec(&hello).unwrap_or_default(),
    ))
    .await?;
    let mut rd = BufReader::new(rd);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut rd)).await {
        Ok(Ok(Some(Frame::Hello(bytes)))) => bytes,
        // A probe (another `run` checking for a live service), or a client that left.
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(other))) => {
            return Err(AdminError::Protocol(format!(
                "the client began with a frame of kind {}, not its hello",
                other.kind()
            )));
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(AdminError::Protocol("no hello from the client".into())),
    };
    let hello: ClientHello = serde_json::from_slice(&hello)
        .map_err(|e| AdminError::Protocol(format!("the client's hello: {e}")))?;
    if hello.protocol != PROTOCOL {
        out.refuse(&format!(
            "this service speaks admin protocol {PROTOCOL}, the console {}: use the same \
             firstmate version for both",
            hello.protocol
        ))
        .await;
        return Ok(());
    }
    let Some(_slot) = Slot::take(&busy) else {
        out.refuse(
            "another `firstmate console` is connected to this service: wait until it ends \
             (its sessions are shared; `use ID` picks one up)",
        )
        .await;
        return Ok(());
    };
    let user = if hello.user.is_empty() {
        "console".to_string()
    } else {
        hello.user
    };
    tracing::info!(user = %user, "console connected on the admin socket");
    let (tx, rx) = mpsc::channel(16);
    let (left_tx, left_rx) = oneshot::channel();
    let _reader = AbortOnDrop(tokio::spawn(forward_input(rd, tx, left_tx)));
    let console = Console::new(engine, user, PathBuf::from(hello.cwd), out.clone());
    let input = ChannelReader::new(rx);
    let run = console.run(input);
    tokio::pin!(run);
    let outcome = tokio::select! {
        r = &mut run => r,
        _ = left_rx => {
            // Not dropped mid-line (an engine call half done would stay so in this
            // service): the console stops at its next safe point.
            out.closed.store(true, Ordering::SeqCst);
            run.await
        }
    };
    match outcome {
        _ if out.is_closed() => tracing::info!("the console left; its sessions go on"),
        Ok(Outcome::Left) => tracing::info!("the console left; its sessions go on"),
        Ok(o) => {
            tracing::info!(exit = o.exit_code(), "console ended");
            out.send(&Frame::Exit(o.exit_code())).await?;
        }
        Err(e) => {
            tracing::warn!(error = %e, "the console failed");
            out.send(&Frame::Err(format!("firstmate: {e}\n").into_bytes()))
                .await?;
            out.send(&Frame::Exit(1)).await?;
        }
    }
    Ok(())
}

// --- the client -----------------------------------------------------------------------

/// Connects to the service at `path`: None when no service answers there (no file, or a
/// stale one), so the console runs its own engine.
pub async fn connect(path: &Path) -> Result<Option<UnixStream>, AdminError> {
    match UnixStream::connect(path).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.kind() {
            io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotADirectory
            // A path too long to bind: no service can be there.
            | io::ErrorKind::InvalidInput => {
                tracing::debug!(path = %path.display(), error = %e, "no service on the admin socket");
                Ok(None)
            }
            io::ErrorKind::PermissionDenied => Err(AdminError::NotOwner(path.to_path_buf())),
            _ => Err(AdminError::Connect {
                path: path.to_path_buf(),
                source: e,
            }),
        },
    }
}

/// Runs a console through the service on `conn`: `input` goes to it, what it prints
/// comes out on `out` and `err`. Returns the console's exit code.
pub async fn run_client<I, O, E>(
    conn: UnixStream,
    mut input: I,
    user: &str,
    cwd: &Path,
    mut out: O,
    mut err: E,
) -> Result<u8, AdminError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let (rd, mut wr) = conn.into_split();
    let hello = ClientHello {
        protocol: PROTOCOL,
        user: user.to_string(),
        cwd: cwd.to_string_lossy().into_owned(),
    };
    let hello = Frame::Hello(serde_json::to_vec(&hello).unwrap_or_default());
    // The hello, then standard input, on their own task, so `interrupt` reaches the
    // service at once. A write that fails ends only this task: what the service sent
    // before it went away (a refusal, say) is still read below. The write half stays
    // open after `End`: closing it would mean the console left.
    let _pump = AbortOnDrop(tokio::spawn(async move {
        if write_frame(&mut wr, &hello).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; INPUT_CHUNK];
        loop {
            let frame = match input.read(&mut buf).await {
                Ok(0) => Frame::End,
                Ok(n) => Frame::Input(buf[..n].to_vec()),
                Err(e) => Frame::InputError(e.to_string()),
            };
            let last = !matches!(frame, Frame::Input(_));
            if write_frame(&mut wr, &frame).await.is_err() {
                return;
            }
            if matches!(frame, Frame::InputError(_)) {
                let _ = write_frame(&mut wr, &Frame::End).await;
            }
            if last {
                break;
            }
        }
        // Hold the write half open until the service ends the console.
        std::future::pending::<()>().await;
    }));
    let mut rd = BufReader::new(rd);
    loop {
        let frame = read_frame(&mut rd).await.map_err(|e| match e {
            AdminError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                AdminError::Closed
            }
            e => e,
        })?;
        match frame {
            Some(Frame::Hello(bytes)) => {
                let hello: ServiceHello = serde_json::from_slice(&bytes)
                    .map_err(|e| AdminError::Protocol(format!("the service's hello: {e}")))?;
                if hello.protocol != PROTOCOL {
                    return Err(AdminError::Protocol(format!(
                        "the service (firstmate {}) speaks admin protocol {}, this console {PROTOCOL}: \
                         use the same firstmate version for both",
                        hello.version, hello.protocol
                    )));
                }
            }
            Some(Frame::Out(bytes)) => {
                out.write_all(&bytes).await?;
                out.flush().await?;
            }
            Some(Frame::Err(bytes)) => {
                err.write_all(&bytes).await?;
                err.flush().await?;
            }
            Some(Frame::Exit(code)) => return Ok(code),
            Some(other) => {
                return Err(AdminError::Protocol(format!(
                    "the service sent a frame of kind {}",
                    other.kind()
                )));
            }
            None => return Err(AdminError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Hello(br#"{"protocol":1}"#.to_vec()),
            Frame::Input(b"new say hi\n\xff\xfe\n".to_vec()),
            Frame::Input(Vec::new()),
            Frame::InputError("Input/output error".into()),
            Frame::End,
            Frame::Out("[abc] hé\n".as_bytes().to_vec()),
            Frame::Err(b"firstmate: no\n".to_vec()),
            Frame::Exit(2),
        ]
    }

    #[tokio::test]
    async fn frames_read_back_as_written_then_end_cleanly() {
        let frames = all_frames();
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut r = &wire[..];
        let mut got = Vec::new();
        while let Some(f) = read_frame(&mut r).await.expect("valid frames") {
            got.push(f);
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn the_header_is_kind_then_big_endian_length() {
        assert_eq!(Frame::Exit(2).encode(), [6, 0, 0, 0, 1, 2]);
        assert_eq!(Frame::End.encode(), [3, 0, 0, 0, 0]);
        assert_eq!(
            Frame::Out(b"hi".to_vec()).encode(),
            [4, 0, 0, 0, 2, b'h', b'i']
        );
    }

    #[tokio::test]
    async fn bad_frames_are_refused() {
        let cases: [(&[u8], &str); 5] = [
            (&[9, 0, 0, 0, 0], "unknown frame kind 9"),
            (&[6, 0, 0, 0, 2, 0, 0], "kind 6 with 2 bytes"),
            (&[3, 0, 0, 0, 1, 0], "kind 3 with 1 bytes"),
            (&[4, 0x7f, 0, 0, 0], "at most"),
            (&[4, 0, 0, 0, 5, b'a'], "early eof"),
        ];
        for (wire, needle) in cases {
            let mut r = wire;
            let e = read_frame(&mut r).await.expect_err("refused").to_string();
            assert!(e.contains(needle), "{wire:?}: {e}");
        }
    }

    #[tokio::test]
    async fn the_console_input_is_the_frames_bytes_and_ends_with_the_channel() {
        let (tx, rx) = mpsc::channel(4);
        let mut reader = ChannelReader::new(rx);
        tokio::spawn(async move {
            for chunk in [&b"new say "[..], b"", b"hi\nst", b"op\n"] {
                tx.send(Ok(chunk.to_vec())).await.expect("send");
            }
        });
        let mut all = String::new();
        reader.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "new say hi\nstop\n");

        let (tx, rx) = mpsc::channel(4);
        let mut reader = ChannelReader::new(rx);
        tx.send(Ok(b"one\n".to_vec())).await.expect("send");
        tx.send(Err(io::Error::other("disk on fire")))
            .await
            .expect("send");
        let mut buf = [0u8; 2];
        assert_eq!(reader.read(&mut buf).await.expect("first bytes"), 2);
        let mut rest = Vec::new();
        let e = reader.read_to_end(&mut rest).await.expect_err("the error");
        assert_eq!(rest, b"e\n");
        assert_eq!(e.to_string(), "disk on fire");
    }

    #[tokio::test]
    async fn bind_is_owner_only_replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fm.db.admin.sock");

        // A stale socket: its listener is gone, the file stays.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        assert!(connect(&path).await.expect("no error").is_none(), "stale");

        let socket = AdminSocket::bind(&path).await.expect("stale replaced");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(connect(&path).await.expect("no error").is_some(), "live");
        let e = AdminSocket::bind(&path).await.err().expect("refused");
        assert!(matches!(e, AdminError::AlreadyServed(_)), "{e}");

        drop(socket);
        assert!(!path.exists(), "the socket file stays after the service");
        assert!(connect(&path).await.expect("no error").is_none(), "gone");

        std::fs::write(&path, "not a socket").expect("write");
        let e = AdminSocket::bind(&path).await.err().expect("refused");
        assert!(matches!(e, AdminError::NotASocket(_)), "{e}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("kept"),
            "not a socket"
        );
    }

    #[tokio::test]
    async fn a_refused_client_prints_why_and_gets_exit_1() {
        let (service, client) = UnixStream::pair().expect("pair");
        let (_rd, wr) = service.into_split();
        let sink = ClientSink::new(wr);
        sink.refuse("another `firstmate console` is connected")
            .await;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_client(
            client,
            tokio::io::empty(),
            "me",
            Path::new("/tmp"),
            &mut out,
            &mut err,
        )
        .await
        .expect("an answer");
        assert_eq!(code, 1);
        assert!(out.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&err),
            "firstmate: another `firstmate console` is connected\n"
        );
    }

    #[tokio::test]
    async fn a_service_that_goes_away_is_an_error_not_an_exit_code() {
        let (service, client) = UnixStream::pair().expect("pair");
        let (_rd, mut wr) = service.into_split();
        write_frame(&mut wr, &Frame::Out(b"[x] partial\n".to_vec()))
            .await
            .expect("write");
        drop(wr);
        drop(_rd);
        let mut out = Vec::new();
        let e = run_client(
            client,
            tokio::io::empty(),
            "me",
            Path::new("/tmp"),
            &mut out,
            Vec::new(),
        )
        .await
        .expect_err("closed");
        assert!(matches!(e, AdminError::Closed), "{e}");
        assert_eq!(out, b"[x] partial\n");
    }
}
