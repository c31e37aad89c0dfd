//! Test support (feature `testing`): a real, throwaway, single-member etcd on loopback ports with its data in
//! a temporary directory, for the conformance suite here and for other crates' end-to-end tests.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{EtcdStore, Store, StoreError};

/// How long a fresh etcd may take to elect itself and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to start etcd, because the free ports picked may be taken by someone else before etcd binds them.
const START_ATTEMPTS: usize = 3;

/// Why a test etcd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdServerError {
    #[error(
        "the etcd binary was not found (searched PATH and /usr/bin/etcd); install Debian's etcd-server \
         (`apt-get install etcd-server`) to run the etcd tests"
    )]
    NotInstalled,
    #[error("cannot start etcd: {0}")]
    Start(String),
    #[error("etcd did not become ready: {0}")]
    NotReady(String),
}

/// A running etcd, killed (and its data deleted) on drop.
pub struct EtcdServer {
    child: Child,
    client_port: u16,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts etcd on two free loopback ports and waits until it serves linearizable reads.
    pub async fn start() -> Result<EtcdServer, EtcdServerError> {
        let binary = find_etcd().ok_or(EtcdServerError::NotInstalled)?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match start_once(&binary).await {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| EtcdServerError::Start("no attempt was made".to_owned())))
    }

    /// The client endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The store URL for `flotilla_store::open`, `etcd://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    /// A connected store.
    pub async fn store(&self) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect(&[self.endpoint()]).await
    }

    /// The end of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("etcd.log"))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // Errors mean the process is already gone, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_once(binary: &Path) -> Result<EtcdServer, EtcdServerError> {
    let dir = tempfile::Builder::new()
        .prefix("flotilla-etcd-")
        .tempdir()
        .map_err(|e| EtcdServerError::Start(format!("temporary directory: {e}")))?;
    let (client_port, peer_port) = free_ports()?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let log =
        File::create(dir.path().join("etcd.log")).map_err(|e| EtcdServerError::Start(format!("log file: {e}")))?;
    let log_err = log.try_clone().map_err(|e| EtcdServerError::Start(format!("log file: {e}")))?;
    let mut command = Command::new(binary);
    command
        .arg("--name=flotilla-test")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=flotilla-test={peer_url}"))
        .arg("--initial-cluster-state=new")
        // Fast ticks: a one-member cluster elects itself in milliseconds, and the shortest lease TTL etcd
        // allows (1.5 election timeouts, rounded up to seconds) becomes 1 s, so expiry tests stay short.
        .arg("--heartbeat-interval=10")
        .arg("--election-timeout=100")
        .arg("--logger=zap")
        .arg("--log-outputs=stderr")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // A system-wide etcd configuration in the environment must not leak into the test server.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ETCD_") {
            command.env_remove(name);
        }
    }
    let child = command.spawn().map_err(|e| EtcdServerError::Start(format!("{}: {e}", binary.display())))?;
    let mut server = EtcdServer { child, client_port, dir };
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(EtcdServerError::Start(format!("etcd exited with {status}: {}", server.log_tail())));
        }
        let probe = match server.store().await {
            // A linearizable read needs a leader, so it proves etcd can serve writes too.
            Ok(store) => store.get("flotilla-test-ready-probe").await.map(|_| ()),
            Err(e) => Err(e),
        };
        match probe {
            Ok(()) => return Ok(server),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(EtcdServerError::NotReady(format!("{e}; log: {}", server.log_tail())));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn find_etcd() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"));
    on_path.chain([PathBuf::from("/usr/bin/etcd"), PathBuf::from("/usr/local/bin/etcd")]).find(|path| path.is_file())
}

/// Two distinct free loopback ports (both listeners are open at once, so the kernel cannot hand out one twice).
fn free_ports() -> Result<(u16, u16), EtcdServerError> {
    // The ports are free once the listeners close; etcd binds them a moment later (a race `start` retries).
    let bind = || {
        TcpListener::bind("127.0.0.1:0")
            .map_err(|e| EtcdServerError::Start(format!("cannot find a free loopback port: {e}")))
    };
    let (first, second) = (bind()?, bind()?);
    let port = |listener: &TcpListener| {
        listener
            .local_addr()
            .map(|addr| addr.port())
            .map_err(|e| EtcdServerError::Start(format!("cannot find a free loopback port: {e}")))
    };
    Ok((port(&first)?, port(&second)?))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
