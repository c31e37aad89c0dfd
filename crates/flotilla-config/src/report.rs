//! The human-readable report of `flotilla config check FILE`: every resolved chain with its
//! wire API and credential names, or every error and their count. Never prints a secret.

use std::fmt::Write as _;

use crate::{Chain, Config, ConfigErrors};

/// Renders the outcome of [`crate::parse_config`] / [`crate::load_config`] for a terminal.
///
/// On success: the gateway line, then one block per agent, per named chain and for the default
/// chain, one line per candidate (position, `provider/model`, provider api and wire API, the
/// credential names in the order they are tried), then a summary line. On failure: each error
/// on its own line, then the count (`2 errors`).
pub fn render_check_report(result: &Result<Config, ConfigErrors>) -> String {
    match result {
        Ok(config) => render_config(config),
        Err(errors) => render_errors(errors),
    }
}

fn render_errors(errors: &ConfigErrors) -> String {
    let mut out = String::new();
    for e in errors {
        let _ = writeln!(out, "{e}");
    }
    let n = errors.len();
    let _ = writeln!(out, "{n} error{}", if n == 1 { "" } else { "s" });
    out
}

/// One candidate line before alignment.
struct Row {
    model: String,
    api: String,
    auth: String,
}

fn render_config(config: &Config) -> String {
    let mut blocks: Vec<(String, Vec<Row>)> = Vec::new();
    for agent in &config.agents {
        let title = match &agent.slack {
            Some(app) => format!("agent {} (slack: {app})", agent.id),
            None => format!("agent {}", agent.id),
        };
        blocks.push((title, rows(config, &agent.chain)));
    }
    for chain in config.chains.values() {
        blocks.push((format!("chain {}", chain.name), rows(config, chain)));
    }
    if let Some(chain) = &config.default_chain {
        blocks.push(("default chain (agents.defaults)".to_owned(), rows(config, chain)));
    }

    // One alignment for the whole report, so the columns line up across blocks.
    let all = blocks.iter().flat_map(|(_, rows)| rows);
    let model_w = all.clone().map(|r| r.model.len()).max().unwrap_or(0);
    let api_w = all.clone().map(|r| r.api.len()).max().unwrap_or(0);
    let max_len = blocks.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
    let pos_w = max_len.to_string().len();

    let mut out = String::new();
    let gw = &config.gateway;
    let keys = gw.keys.len();
    let _ = write!(out, "gateway: listen {}, {keys} client key{}", gw.listen, if keys == 1 { "" } else { "s" });
    if let Some(log) = &gw.log_file {
        let _ = write!(out, ", log {}", log.display());
    }
    out.push('\n');
    for (title, rows) in &blocks {
        let _ = writeln!(out, "\n{title}");
        for (i, row) in rows.iter().enumerate() {
            let line =
                format!("  {:>pos_w$}. {:<model_w$}   {:<api_w$}   auth: {}", i + 1, row.model, row.api, row.auth);
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let _ = writeln!(
        out,
        "\nok: {} agent{}, {} named chain{}, {} provider{}, {} slack app{}",
        config.agents.len(),
        plural(config.agents.len()),
        config.chains.len(),
        plural(config.chains.len()),
        config.providers.len(),
        plural(config.providers.len()),
        config.slack.len(),
        plural(config.slack.len()),
    );
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn rows(config: &Config, chain: &Chain) -> Vec<Row> {
    chain
        .candidates
        .iter()
        .map(|candidate| {
            let provider = config.providers.get(&candidate.provider);
            let api = match provider {
                Some(p) => format!("{} {}", p.api, p.wire_api(&candidate.model)),
                // A checked config always has the provider; say so plainly if not.
                None => "unknown provider".to_owned(),
            };
            let auth = match provider {
                Some(p) if !p.credentials.is_empty() => {
                    p.credentials.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                }
                _ => "none".to_owned(),
            };
            Row { model: candidate.to_string(), api, auth }
        })
        .collect()
}
