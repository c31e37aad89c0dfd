//! The real `flotilla gateway` process: config errors, readiness, failover, logs without
//! secrets, SIGHUP reload and graceful SIGTERM shutdown.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_sim::{Fault, FaultRule, SimConfig};

const ANT_KEY: &str = "sk-ant-e2e-SECRET-0123456789";
const OAI_KEY: &str = "sk-oai-e2e-SECRET-9876543210";
const GW_KEY: &str = "gw-e2e-SECRET-key";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn config(ant: &str, oai: &str, log: &std::path::Path, fallbacks: &str) -> String {
    format!(
        r#"
[gateway]
keys = ["env:GW_KEY"]
log_file = "{log}"

[router]
overload_cooldown = "30s"

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = {fallbacks}

[[agents.list]]
id = "family"

[providers.anthropic]
api = "anthropic"
base_url = "{ant}"
auth = ["ant-main"]

[providers.openai]
api = "openai"
base_url = "{oai}"
auth = ["oai-main"]

[auth.ant-main]
provider = "anthropic"
type = "api-key"
key = "env:ANT_KEY"

[auth.oai-main]
provider = "openai"
type = "api-key"
key = "env:OAI_KEY"
"#,
        log = log.display()
    )
}

fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::blocking::get(format!("{url}/readyz")).is_ok_and(|r| r.status().is_success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway at {url} never became ready");
}

fn ask(url: &str, key: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", key)
        .json(
            &serde_json::json!({"model": "family", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .expect("send")
}

#[test]
fn gateway_process_fails_over_logs_no_secrets_reloads_and_stops_cleanly() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ant = rt.block_on(flotilla_sim::spawn(SimConfig::anthropic())).expect("sim");
    let oai = rt.block_on(flotilla_sim::spawn(SimConfig::openai())).expect("sim");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("gateway.log");
    let cfg_path = dir.path().join("flotilla.toml");
    std::fs::write(&cfg_path, config(&ant.url(), &oai.url(), &log, r#"["openai/gpt-5"]"#)).expect("write config");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Proc(
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["gateway", "--config"])
            .arg(&cfg_path)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log-level", "debug"])
            .env("ANT_KEY", ANT_KEY)
            .env("OAI_KEY", OAI_KEY)
            .env("GW_KEY", GW_KEY)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gateway"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let stderr_lines =
        std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    wait_ready(&url);

    // Healthy, then an outage with a bad credential for good measure: failover, no secrets.
    assert_eq!(ask(&url, GW_KEY).status().as_u16(), 200);
    assert_eq!(ask(&url, "wrong-key").status().as_u16(), 401);
    ant.handle().add_fault(FaultRule::new(Fault::Overloaded));
    let r = ask(&url, GW_KEY);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-flotilla-model"], "openai/gpt-5");
    oai.handle().add_fault(FaultRule::new(Fault::Unauthorized).count(1));
    let r = ask(&url, GW_KEY);
    assert_eq!(r.headers().get("x-flotilla-attempts").map(|v| v.to_str().unwrap_or("")), Some("2"));

    // SIGHUP with a config that drops the fallback: the next request has nowhere to go but
    // the (overloaded) primary, so it fails with the aggregate error.
    std::fs::write(&cfg_path, config(&ant.url(), &oai.url(), &log, "[]")).expect("rewrite config");
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask(&url, GW_KEY);
        if r.status().as_u16() == 529 {
            break;
        }
        assert!(Instant::now() < deadline, "config was not reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGTERM: exits 0 after draining.
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "gateway did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let stderr = stderr_lines.join().expect("stderr").join("\n");
    let json_log = std::fs::read_to_string(&log).expect("json log written");

    for secret in [ANT_KEY, OAI_KEY, GW_KEY, "wrong-key"] {
        assert!(!stderr.contains(secret), "secret {secret} in stderr:\n{stderr}");
        assert!(!json_log.contains(secret), "secret {secret} in the JSON log");
    }
    // The failover decisions are in the JSON log, with chain, reason and elapsed time.
    let failover = json_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["event"] == "provider_attempt_failed")
        .expect("a failover decision in the JSON log");
    assert_eq!(failover["fields"]["chain"], "family");
    assert_eq!(failover["fields"]["reason"], "overloaded");
    assert_eq!(failover["fields"]["next"], "next candidate");
    assert!(failover["fields"]["elapsed_ms"].is_number());
    assert!(json_log.contains("config_reloaded"));
    assert!(stderr.contains("shutting down"), "{stderr}");
}

#[test]
fn bad_config_is_explained_and_exits_nonzero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        r#"
[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = ["opnai/gpt-5"]

[providers.anthropic]
api = "anthropic"

[providers.openai]
api = "openai"
"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla")).args(["config", "check"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("agents.defaults.model.fallbacks[0]: unknown provider \"opnai\"; did you mean \"openai\"?"),
        "{stdout}"
    );

    let out =
        Command::new(env!("CARGO_BIN_EXE_flotilla")).args(["gateway", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean \"openai\""), "{stderr}");
}

#[test]
fn config_check_prints_resolved_chains_for_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/flotilla.toml");
    let text = std::fs::read_to_string(example).expect("example config");
    // Next to a copy of the example, the OAuth file it references (OpenClaw's shape).
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("flotilla.toml");
    std::fs::write(&copy, &text).expect("copy");
    std::fs::create_dir_all(dir.path().join("secrets")).expect("mkdir");
    std::fs::write(
        dir.path().join("secrets/anthropic-oauth.json"),
        r#"{"access": "dummy-value-for-check", "expires": 4102444800000}"#,
    )
    .expect("oauth file");
    // Supply every env var the example references, with dummy values.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args(["config", "check"]).arg(&copy);
    for var in text.split("env:").skip(1).filter_map(|s| s.split('"').next()) {
        cmd.env(var, "dummy-value-for-check");
    }
    let out = cmd.output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1. anthropic/"), "{stdout}");
    assert!(!stdout.contains("dummy-value-for-check"), "secrets must not be printed");
}
