//! `flotilla bench router --quick --json` end to end: the real binary starts the simulators,
//! the gateway (and nginx when installed), drives every phase and reports it as JSON.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::process::Command;

use serde_json::Value;

fn phase<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["phases"]
        .as_array()
        .expect("phases array")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("phase {name} missing from {report:#}"))
}

#[test]
fn quick_bench_reports_every_phase() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["bench", "router", "--quick", "--json"])
        .output()
        .expect("run flotilla bench router");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed ({}):\n{stderr}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout)));

    let nginx_installed = std::path::Path::new("/usr/sbin/nginx").is_file()
        || std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nginx").is_file()));
    for name in
        ["direct-anthropic", "nginx", "gateway", "stream-direct", "stream-gateway", "direct-openai", "breaker-open"]
    {
        let p = phase(&report, name);
        if name == "nginx" && !nginx_installed {
            assert!(p["skipped"].is_string(), "without nginx its phase says why it was skipped: {p:#}");
            continue;
        }
        assert!(p["skipped"].is_null(), "phase {name} was skipped: {p:#}");
        assert!(p["sent"].as_u64().unwrap_or(0) > 0, "phase {name} sent nothing: {p:#}");
        assert!(p["ok"].as_u64().unwrap_or(0) > 0, "phase {name} got no answer: {p:#}");
        assert!(p["p50_us"].as_f64().unwrap_or(0.0) > 0.0, "phase {name} has no latency: {p:#}");
    }
    for name in ["direct-anthropic", "gateway"] {
        let p = phase(&report, name);
        assert_eq!(p["errors"], 0, "phase {name} had errors: {p:#}");
    }

    // Everything the table is built from is there too.
    let added: Vec<&str> =
        report["added"].as_array().expect("added").iter().filter_map(|a| a["phase"].as_str()).collect();
    for name in ["gateway", "breaker-open", "stream-gateway"] {
        assert!(added.contains(&name), "no added latency for {name}: {added:?}");
    }
    assert!(report["router_overhead"]["count"].as_u64().unwrap_or(0) > 0, "no router overhead: {report:#}");
    assert!(report["gateway"]["rss_idle_kib"].as_u64().unwrap_or(0) > 0, "no gateway RSS: {report:#}");
    assert!(report["gateway"]["cpu_us_per_req"].as_f64().is_some(), "no gateway CPU time: {report:#}");
    assert!(report["targets"].as_array().is_some_and(|t| !t.is_empty()), "no targets: {report:#}");
}
