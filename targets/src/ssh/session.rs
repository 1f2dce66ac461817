//! One authenticated SSH connection to a host: run commands, open streams to the host's
//! Unix sockets and to TCP addresses it can reach.
//!
//! Channels are multiplexed over the one connection, so a [`Session`] is shared (`Arc`)
//! between concurrent users: the Docker transport, health probes, commands.

use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::{Channel, ChannelMsg, Sig};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use super::auth::{Login, authenticate};
use super::host_key::{HandshakeError, HostKeyCheck, preferred_algorithms};
use super::{SshError, SshOptions, expand_home, host_port};

/// How often an idle connection is checked; three unanswered checks close it, so a host
/// that vanishes mid-rollout is noticed within about 45 seconds.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// A byte stream through the SSH connection (to a remote Unix socket or TCP address).
/// Dropping it closes the channel.
pub type SshStream = russh::ChannelStream<Msg>;

/// What a remote command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit status; 255 when the command was killed by a signal (as `ssh` reports it).
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The signal that killed the command (`TERM`, `KILL`, …), if one did.
    pub signal: Option<String>,
}

impl ExecOutput {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0 && self.signal.is_none()
    }
}

/// An authenticated connection to `user@host:port`.
pub struct Session {
    handle: Handle<HostKeyCheck>,
    user: String,
    host: String,
    port: u16,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// Commands running at once on this connection: OpenSSH refuses more session channels
    /// than its `MaxSessions` (10 by default) per connection.
    commands: tokio::sync::Semaphore,
}

/// Commands one connection runs at once (well below OpenSSH's default `MaxSessions` of 10).
pub const COMMANDS_AT_ONCE: usize = 6;

/// Connects to `host:port`, verifies its host key against `options.known_hosts` and logs in
/// as `user` with a key. All of it must finish within `options.connect_timeout`.
pub async fn connect(host: &str, port: u16, user: &str, options: &SshOptions) -> Result<Session, SshError> {
    let known_hosts = expand_home(&options.known_hosts)?;
    let deadline = Instant::now() + options.connect_timeout;
    let timed_out =
        |phase| SshError::ConnectTimeout { host: host.to_string(), port, timeout: options.connect_timeout, phase };

    let socket = timeout_at(deadline, TcpStream::connect((host, port)))
        .await
        .map_err(|_| timed_out("the TCP connection"))?
        .map_err(|source| SshError::Connect { host: host.to_string(), port, source })?;
    let _ = socket.set_nodelay(true);

    // Pinned keys: russh's own preference (ed25519 first), since the pins hold every type
    // the host has.
    let preferred = match &options.pinned {
        Some(_) => russh::Preferred::default(),
        None => preferred_algorithms(host, port, &known_hosts)?,
    };
    let config = client::Config {
        preferred,
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    };
    let check = HostKeyCheck::new(host, port, known_hosts, options.pinned.clone());
    let mut handle = timeout_at(deadline, client::connect_stream(Arc::new(config), socket, check))
        .await
        .map_err(|_| timed_out("the key exchange"))?
        .map_err(|err| match err {
            HandshakeError::Refused(err) => *err,
            HandshakeError::Russh(source) => {
                SshError::Handshake { host: host.to_string(), port, source: Box::new(source) }
            }
        })?;

    let login = Login { user, host, port };
    timeout_at(deadline, authenticate(&mut handle, &login, options))
        .await
        .map_err(|_| timed_out("authentication"))??;

    Ok(Session {
        handle,
        user: user.to_string(),
        host: host.to_string(),
        port,
        connect_timeout: options.connect_timeout,
        command_timeout: options.command_timeout,
        commands: tokio::sync::Semaphore::new(COMMANDS_AT_ONCE),
    })
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("address", &self.address()).field("closed", &self.is_closed()).finish()
    }
}

impl Session {
    /// `user@host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}@{}", self.user, host_port(&self.host, self.port))
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection has ended (closed, or lost and noticed by the keepalive).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `command` through the remote user's shell, within `command_timeout`.
    ///
    /// Never put secrets in `command`: command lines are visible to every user of the host
    /// (`ps`), may be logged by it, and appear in rivetctl's own error messages. Ship
    /// secrets as files (mode 0600) or through a stream instead.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        self.exec_with_timeout(command, self.command_timeout).await
    }

    /// [`exec`](Self::exec) with its own time limit (a long build, a quick probe). On
    /// timeout the command is sent SIGTERM and its channel closed.
    pub async fn exec_with_timeout(&self, command: &str, limit: Duration) -> Result<ExecOutput, SshError> {
        self.exec_inner(command, None, limit).await
    }

    /// Runs `command` with `input` as its standard input (then end of file), within
    /// `command_timeout`: how files and secrets reach a host without appearing on a command
    /// line (a release tarball into `tar -x`, an environment file into `cat >`).
    pub async fn exec_with_input(&self, command: &str, input: &[u8]) -> Result<ExecOutput, SshError> {
        self.exec_inner(command, Some(input), self.command_timeout).await
    }

    async fn exec_inner(&self, command: &str, input: Option<&[u8]>, limit: Duration) -> Result<ExecOutput, SshError> {
        let _slot = self.commands.acquire().await.expect("the semaphore is never closed");
        let mut channel = self.open_session().await?;
        let failed = |source| SshError::Command { address: self.address(), command: command.to_string(), source };
        let exchange = async {
            channel.exec(true, command).await?;
            if let Some(input) = input {
                channel.data(input).await?;
                channel.eof().await?;
            }
            collect(&mut channel).await
        };
        match timeout(limit, exchange).await {
            Ok(Ok(Some(output))) => Ok(output),
            Ok(Ok(None)) => Err(SshError::CommandRefused { address: self.address(), command: command.to_string() }),
            Ok(Err(source)) => Err(failed(Box::new(source))),
            Err(_) => {
                let _ = channel.signal(Sig::TERM).await;
                let _ = channel.close().await;
                Err(SshError::Timeout { address: self.address(), command: command.to_string(), timeout: limit })
            }
        }
    }

    /// A stream to the Unix socket `path` on the host (`direct-streamlocal@openssh.com`).
    pub async fn open_unix_stream(&self, path: &str) -> Result<SshStream, SshError> {
        let channel =
            self.open(&format!("unix socket {path}"), self.handle.channel_open_direct_streamlocal(path)).await?;
        Ok(channel.into_stream())
    }

    /// A stream to `host:port` as the remote host reaches it (`direct-tcpip`).
    pub async fn open_tcp_stream(&self, host: &str, port: u16) -> Result<SshStream, SshError> {
        let target = format!("TCP connection to {}", host_port(host, port));
        let channel =
            self.open(&target, self.handle.channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)).await?;
        Ok(channel.into_stream())
    }

    /// `GET http://host:port{path}` from the remote host (see [`super::http`]).
    pub async fn http_get(
        &self,
        host: &str,
        port: u16,
        path: &str,
        limit: Duration,
    ) -> Result<(u16, Vec<u8>), SshError> {
        super::http::get(self, host, port, path, limit).await
    }

    /// Ends the connection politely. Dropping the last reference also ends it.
    pub async fn close(&self) -> Result<(), SshError> {
        self.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await.map_err(|source| SshError::Handshake {
            host: self.host.clone(),
            port: self.port,
            source: Box::new(source),
        })
    }

    /// Waits for a channel to be confirmed, within `connect_timeout`.
    /// A session channel. sshd counts a finished command's session until it has seen the
    /// channel's close, so a refusal right after others ended (`MaxSessions`) is retried
    /// for a moment, within `connect_timeout`.
    async fn open_session(&self) -> Result<Channel<Msg>, SshError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.open("a session", self.handle.channel_open_session()).await {
                Err(SshError::ChannelOpen { source, .. })
                    if matches!(*source, russh::Error::ChannelOpenFailure(_))
                        && started.elapsed() + pause < self.connect_timeout =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    async fn open(
        &self,
        target: &str,
        opening: impl Future<Output = Result<Channel<Msg>, russh::Error>>,
    ) -> Result<Channel<Msg>, SshError> {
        let failed = |source| SshError::ChannelOpen {
            address: self.address(),
            target: target.to_string(),
            source: Box::new(source),
        };
        match timeout(self.connect_timeout, opening).await {
            Ok(result) => result.map_err(failed),
            Err(_) => Err(SshError::Timeout {
                address: self.address(),
                command: format!("opening {target}"),
                timeout: self.connect_timeout,
            }),
        }
    }
}

/// Runs `command` on a fresh session channel and collects its output; `None` when the
/// server refuses to run it.
/// The output and exit status of the command running on `channel`.
async fn collect(channel: &mut Channel<Msg>) -> Result<Option<ExecOutput>, russh::Error> {
    let mut output = ExecOutput::default();
    let mut status = None;
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } => output.stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => output.stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => output.signal = Some(signal_name_of(&signal_name)),
            ChannelMsg::Failure if status.is_none() => return Ok(None),
            _ => {}
        }
    }
    output.status = match (status, &output.signal) {
        (Some(status), _) => status,
        (None, Some(_)) => 255,
        // The channel ended without saying how the command did: the connection broke.
        (None, None) => return Err(russh::Error::Disconnect),
    };
    Ok(Some(output))
}

fn signal_name_of(signal: &Sig) -> String {
    match signal {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}
