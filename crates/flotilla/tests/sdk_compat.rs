//! The official Anthropic and OpenAI Python SDKs against the real gateway binary, unchanged but
//! for base URL and key (tests/sdk/check_sdks.py), streaming included: once with Anthropic
//! serving the agent, once with Anthropic overloaded so OpenAI answers Anthropic-format calls,
//! and once with every upstream cutting its streams mid-way (each SDK must raise its error).
//!
//! The SDKs must be installed (`python3 -m pip install -r tests/sdk/requirements.txt`, which
//! scripts/test does); without them this test fails rather than skips, so a green run always
//! means the SDKs were exercised.

#![allow(clippy::expect_used, reason = "test setup failures should panic with context")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/sdk/check_sdks.py");
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/sdk/requirements.txt");
const INSTALL_HINT: &str = "python3 -m pip install -r tests/sdk/requirements.txt";

// Distinct keys on each hop: the SDK authenticates to the gateway with GW_KEY, and the
// simulators only accept the gateway's own upstream credentials, so a key passed through
// instead of swapped fails loudly.
const GW_KEY: &str = "gw-sdk-compat-key";
const ANT_KEY: &str = "sk-ant-sdk-compat";
const OAI_KEY: &str = "sk-oai-sdk-compat";

/// Startup of a child process (bind, config load) must not hang the suite when it breaks.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// A child process of the real binary, killed when dropped (also when an assertion panics).
struct Proc {
    child: Child,
    /// Kept open so a late write to stdout does not kill the child with SIGPIPE.
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `flotilla sim <api>` on a free port accepting only `key`; returns it and its URL
/// (the first line it prints).
fn start_sim(api: &str, key: &str) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(["sim", api, "--listen", "127.0.0.1:0", "--key", key])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn flotilla sim");
    let mut stdout = BufReader::new(child.stdout.take().expect("sim stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the sim's address");
    let url = line.trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "flotilla sim {api} printed {line:?} instead of its address");
    (Proc { child, _stdout: Some(stdout) }, url)
}

/// The gateway's stderr, collected by a thread for diagnostics.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn text(&self) -> String {
        self.0.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

/// Starts `flotilla gateway` on a free port; returns it, its URL (read from its "listening
/// on" line, so no port is picked in advance and raced for) and its stderr.
fn start_gateway(config: &Path, log_file: &Path) -> (Proc, String, Log) {
    let mut child = Command::new(BIN)
        .arg("gateway")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--log-level", "info", "--log-file"])
        .arg(log_file)
        .env("GW_KEY", GW_KEY)
        .env("ANT_KEY", ANT_KEY)
        .env("OAI_KEY", OAI_KEY)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flotilla gateway");
    let stderr = child.stderr.take().expect("gateway stderr");
    let log = Log::default();
    let (tx, rx) = mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            if let Ok(mut l) = lines.0.lock() {
                l.push(line);
            }
        }
    });
    let proc = Proc { child, _stdout: None };
    let deadline = Instant::now() + STARTUP_DEADLINE;
    let url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let addr: String =
                        addr.chars().take_while(|c| c.is_ascii_alphanumeric() || ".:".contains(*c)).collect();
                    break format!("http://{addr}");
                }
            }
            Err(_) => panic!("the gateway did not report its address; stderr:\n{}", log.text()),
        }
    };
    (proc, url, log)
}

/// One HTTP/1.1 request over loopback; returns (status, body). The test needs only a few
/// plain requests (readiness, fault injection), not a client library.
fn http(method: &str, url: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".to_owned()));
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(STARTUP_DEADLINE))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

fn wait_ready(url: &str, log: &Log) {
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        if http("GET", &format!("{url}/readyz"), None).is_ok_and(|(status, _)| status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "gateway at {url} never became ready; stderr:\n{}", log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(ant: &str, oai: &str) -> String {
    format!(
        r#"
[gateway]
keys = ["env:GW_KEY"]

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = ["openai/gpt-5.3-codex"]

[[agents.list]]
id = "family"
system_prompt = "You help the family."

[providers.anthropic]
api = "anthropic"
base_url = "{ant}"
auth = ["ant"]

[providers.openai]
api = "openai"
base_url = "{oai}"
auth = ["oai"]

[auth.ant]
provider = "anthropic"
type = "api-key"
key = "env:ANT_KEY"

[auth.oai]
provider = "openai"
type = "api-key"
key = "env:OAI_KEY"
"#
    )
}

/// Fails (never skips) when python3 or the SDKs are missing, saying how to install them.
fn require_sdks() {
    let out = Command::new("python3")
        .args(["-c", "import anthropic, openai, pydantic"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); install Python 3, then run `{INSTALL_HINT}`"));
    assert!(
        out.status.success(),
        "the official Anthropic and OpenAI SDKs are not importable; run `{INSTALL_HINT}` \
         (from the workspace root; requirements in {REQUIREMENTS})\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs check_sdks.py against the gateway; `models` are `name=provider/model` pairs (the
/// name to send and the upstream that must answer it).
fn run_checks(gateway: &str, models: &[&str], extra: &[&str]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT).args(["--base-url", gateway, "--key", GW_KEY]).args(extra);
    for m in models {
        cmd.args(["--model", m]);
    }
    // The SDKs must not pick up a proxy or credentials from the developer's environment.
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1").env_remove("ANTHROPIC_API_KEY").env_remove("OPENAI_API_KEY");
    cmd.output().expect("run python3 tests/sdk/check_sdks.py")
}

/// How many requests a simulator answered with `fault`.
fn fault_hits(sim: &str, fault: &str) -> u64 {
    let (_, stats) = http("GET", &format!("{sim}/_sim/stats"), None).expect("sim stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("sim stats json");
    stats["by_fault"][fault].as_u64().unwrap_or(0)
}

/// Asserts the script passed every check, and that it ran at least `min_checks` of them.
fn assert_all_passed(run: &str, out: &Output, min_checks: usize, log: &Log) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout.lines().last().unwrap_or_default();
    let passed: usize = summary.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let oks = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(
        out.status.success() && summary.ends_with(" passed, 0 failed") && passed == oks && passed >= min_checks,
        "SDK checks failed ({run}), exit {:?}:\n{stdout}\n--- script stderr ---\n{stderr}\n--- gateway stderr ---\n{}",
        out.status.code(),
        log.text()
    );
}

#[test]
fn official_sdks_work_against_the_gateway_in_both_translation_directions() {
    require_sdks();
    let (_ant, ant_url) = start_sim("anthropic", ANT_KEY);
    let (_oai, oai_url) = start_sim("openai", OAI_KEY);
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("flotilla.toml");
    std::fs::write(&config_path, config(&ant_url, &oai_url)).expect("write config");
    let (_gateway, url, log) = start_gateway(&config_path, &dir.path().join("gateway.log"));
    wait_ready(&url, &log);

    // Anthropic healthy: Anthropic-format calls pass through, OpenAI-format calls are
    // translated to Anthropic.
    let out = run_checks(
        &url,
        &["family=anthropic/claude-opus-4-6", "anthropic/claude-sonnet-4-5=anthropic/claude-sonnet-4-5"],
        &[],
    );
    assert_all_passed("anthropic serving", &out, 40, &log);

    // Anthropic overloaded: the agent fails over to OpenAI, so Anthropic-format calls (and
    // streams) are answered from OpenAI-format upstream responses.
    let (status, body) =
        http("POST", &format!("{ant_url}/_sim/faults"), Some(r#"{"fault":{"kind":"overloaded"}}"#)).expect("add fault");
    assert_eq!(status, 200, "{body}");
    let out = run_checks(&url, &["family=openai/gpt-5.3-codex", "openai/gpt-4.1=openai/gpt-4.1"], &[]);
    assert_all_passed("anthropic overloaded", &out, 40, &log);
    assert!(fault_hits(&ant_url, "overloaded") > 0, "the overload fault was never hit, so no failover was tested");

    // Every upstream cuts its streams after the first content: the gateway can no longer fail
    // over, and each SDK must report the failure as its own error rather than end quietly
    // with a truncated answer. Both simulators are cut, so whichever candidate the breakers
    // pick, the stream breaks.
    for sim in [&ant_url, &oai_url] {
        let (status, body) = http("DELETE", &format!("{sim}/_sim/faults"), None).expect("clear faults");
        assert_eq!(status, 200, "{body}");
        let (status, body) = http(
            "POST",
            &format!("{sim}/_sim/faults"),
            Some(r#"{"fault":{"kind":"cut_mid_stream","after_events":6}}"#),
        )
        .expect("add fault");
        assert_eq!(status, 200, "{body}");
    }
    let out =
        run_checks(&url, &["family", "anthropic/claude-sonnet-4-5", "openai/gpt-4.1"], &["--expect-stream-failure"]);
    assert_all_passed("streams cut mid-way", &out, 15, &log);
    assert!(
        fault_hits(&ant_url, "cut_mid_stream") + fault_hits(&oai_url, "cut_mid_stream") >= 15,
        "fewer streams were cut than the SDK checks expected"
    );
}
