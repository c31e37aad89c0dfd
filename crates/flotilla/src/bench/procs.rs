//! The processes under measurement: simulators and the gateway (children of this executable)
//! and nginx. Every child is killed when its handle is dropped, so an error, a panic or
//! Ctrl-C never leaves one running; `/proc` gives their memory and CPU time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::client::{HttpClient, get};

/// How long a child may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Linux reports CPU times in /proc in units of USER_HZ, which is 100 on every architecture
/// it supports (the kernel converts from its internal HZ).
const USER_HZ: f64 = 100.0;

/// A running child process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    pid: u32,
    /// Where its stderr goes, for error messages.
    log: PathBuf,
    /// Kept open so the child never writes into a closed pipe.
    _stdout: Option<tokio::io::Lines<BufReader<ChildStdout>>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf, capture_stdout: bool) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(if capture_stdout { Stdio::piped() } else { Stdio::null() })
            // A file, not a pipe: nobody reads a pipe during the run and a full one would block
            // the child's logging (and so the child).
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().with_context(|| format!("{name} exited at once"))?;
        Ok(Proc { name: name.to_owned(), child, pid, log, _stdout: None })
    }

    /// The end of the child's stderr, to explain a failure.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n");
        if tail.is_empty() { format!("(nothing in {})", self.log.display()) } else { tail }
    }

    /// Fails with the child's last words if it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// Kills the child and waits for it to be gone.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> Option<u64> {
        parse_rss_kib(&std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?)
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> Option<Duration> {
        parse_cpu_time(&std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?)
    }
}

/// `VmRSS` from the text of `/proc/PID/status`.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime from the text of `/proc/PID/stat`.
fn parse_cpu_time(stat: &str) -> Option<Duration> {
    // The command name (field 2) may contain spaces and parentheses; the fields after its
    // last ')' are fixed: field 3 (state) onward, so utime (field 14) is the 12th of them.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// A port that was free a moment ago (for programs that cannot report the port they bound).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a local port")?;
    Ok(l.local_addr()?.port())
}

/// Starts `flotilla sim <api>` on a free port, streaming at `tokens_per_sec`; returns it with
/// its base URL.
pub async fn spawn_sim(exe: &Path, api: &str, tokens_per_sec: f64, dir: &Path) -> anyhow::Result<(Proc, String)> {
    let mut cmd = Command::new(exe);
    cmd.args(["sim", api, "--listen", "127.0.0.1:0", "--tokens-per-sec", &tokens_per_sec.to_string()]);
    let mut proc = Proc::spawn(&format!("{api} simulator"), cmd, dir.join(format!("sim-{api}.log")), true)?;
    let stdout = proc.child.stdout.take().context("simulator stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The simulator's first stdout line is its address.
    let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
    proc._stdout = Some(lines);
    let url = match first {
        Ok(Ok(Some(line))) if line.starts_with("http://") => line.trim().to_owned(),
        Ok(Ok(_)) | Ok(Err(_)) => {
            anyhow::bail!("the {api} simulator did not print its address:\n{}", proc.log_tail())
        }
        Err(_) => anyhow::bail!("the {api} simulator did not start within {} s", START_TIMEOUT.as_secs()),
    };
    Ok((proc, url))
}

/// Starts `flotilla gateway` with `config` on a free port and waits until `/readyz` says
/// ready; returns it with its base URL and how long start-to-ready took.
pub async fn spawn_gateway(
    exe: &Path,
    config: &Path,
    env: &[(&str, &str)],
    dir: &Path,
    client: &HttpClient,
) -> anyhow::Result<(Proc, String, Duration)> {
    let port = free_port()?;
    let mut cmd = Command::new(exe);
    cmd.arg("gateway")
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--log-file")
        .arg(dir.join("gateway.json.log"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut proc = Proc::spawn("gateway", cmd, dir.join("gateway.log"), false)?;
    let url = format!("http://127.0.0.1:{port}");
    let ready = format!("{url}/readyz");
    loop {
        if let Ok(a) = get(client, &ready).await
            && a.status.is_success()
        {
            return Ok((proc, url, started.elapsed()));
        }
        proc.check_alive()?;
        if started.elapsed() > START_TIMEOUT {
            anyhow::bail!("the gateway was not ready within {} s:\n{}", START_TIMEOUT.as_secs(), proc.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Where nginx is installed: `explicit`, else Debian's `/usr/sbin/nginx`, else `nginx` on PATH.
pub fn find_nginx(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let debian = Path::new("/usr/sbin/nginx");
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// The smallest nginx that does what a reverse proxy in front of the simulator would: one
/// worker (a single process, so its CPU time is easy to read), no access log, HTTP/1.1
/// keep-alive to the upstream, and every path inside `dir`.
pub fn nginx_conf(dir: &Path, listen_port: u16, upstream: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    upstream sim {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}

/// Starts nginx proxying to `upstream` (`host:port`) and waits until a request through it
/// reaches the simulator; returns it with its base URL.
pub async fn spawn_nginx(
    nginx: &Path,
    upstream: &str,
    dir: &Path,
    client: &HttpClient,
) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, port, upstream)).context("cannot write nginx.conf")?;
    let mut cmd = Command::new(nginx);
    // -e: the error log before the config is read, which would otherwise go to /var/log.
    cmd.arg("-p").arg(dir).arg("-c").arg(&conf).arg("-e").arg(dir.join("nginx-error.log"));
    let started = Instant::now();
    let mut proc = Proc::spawn("nginx", cmd, dir.join("nginx.stderr"), false)?;
    let url = format!("http://127.0.0.1:{port}");
    let probe = format!("{url}/_sim/health");
    loop {
        if let Ok(a) = get(client, &probe).await
            && a.status.is_success()
        {
            return Ok((proc, url));
        }
        proc.check_alive().map_err(|e| {
            let errors = std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default();
            anyhow::anyhow!("{e}\n{errors}")
        })?;
        if started.elapsed() > START_TIMEOUT {
            anyhow::bail!("nginx did not answer within {} s:\n{}", START_TIMEOUT.as_secs(), proc.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// CPU time of a process between two readings, per request.
pub fn cpu_per_request(before: Option<Duration>, after: Option<Duration>, requests: u64) -> Option<f64> {
    let (b, a) = (before?, after?);
    (requests > 0).then(|| a.saturating_sub(b).as_secs_f64() * 1e6 / requests as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_survives_spaces_and_parens_in_the_command_name() {
        // Fields 14 and 15 (utime, stime) are 250 and 50 ticks.
        let stat = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_time(stat), Some(Duration::from_secs(3)));
        assert_eq!(parse_cpu_time("garbage"), None);
    }

    #[test]
    fn rss_is_read_from_vmrss() {
        let status = "Name:\tflotilla\nVmPeak:\t  99999 kB\nVmRSS:\t   15844 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(15844));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_per_request_divides_the_delta() {
        let per = cpu_per_request(Some(Duration::from_millis(100)), Some(Duration::from_millis(300)), 1000);
        assert_eq!(per, Some(200.0));
        assert_eq!(cpu_per_request(Some(Duration::ZERO), Some(Duration::from_secs(1)), 0), None);
        assert_eq!(cpu_per_request(None, Some(Duration::from_secs(1)), 10), None);
    }

    #[test]
    fn nginx_conf_keeps_upstream_connections_alive_and_stays_in_its_dir() {
        let conf = nginx_conf(Path::new("/tmp/b"), 8081, "127.0.0.1:9000");
        for needle in [
            "server 127.0.0.1:9000;",
            "keepalive 64;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "listen 127.0.0.1:8081;",
            "access_log off;",
            "pid /tmp/b/nginx.pid;",
            "daemon off;",
        ] {
            assert!(conf.contains(needle), "missing {needle:?} in\n{conf}");
        }
        assert!(!conf.contains("/var/"), "nothing outside the temp dir:\n{conf}");
    }
}
