//! The Slack Web API methods flotilla uses, with Slack's error model: HTTP 200 with
//! `{"ok": false, "error": "..."}`, and HTTP 429 + `Retry-After` for rate limits.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use thiserror::Error;

/// Slack's real API base; tests and the demo point this at the simulator.
pub const SLACK_API_BASE: &str = "https://slack.com/api";

/// A Web API call failed.
#[derive(Debug, Error, Clone)]
pub enum SlackError {
    /// Slack answered `ok: false`.
    #[error("slack api error: {method}: {error}")]
    Api { method: &'static str, error: String },
    /// HTTP 429: retry after the given time.
    #[error("slack rate limited {method}: retry after {} ms", retry_after.as_millis())]
    RateLimited { method: &'static str, retry_after: Duration },
    /// No answer: connect error, timeout, 5xx.
    #[error("slack transport error: {method}: {detail}")]
    Transport { method: &'static str, detail: String },
}

impl SlackError {
    /// Whether trying again later can help (rate limits and transport trouble).
    pub fn is_retryable(&self) -> bool {
        match self {
            SlackError::RateLimited { .. } | SlackError::Transport { .. } => true,
            SlackError::Api { error, .. } => {
                matches!(error.as_str(), "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout")
            }
        }
    }

    /// Whether the token is bad (stop and report, do not loop).
    pub fn is_auth(&self) -> bool {
        matches!(self, SlackError::Api { error, .. } if matches!(error.as_str(), "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" | "token_expired" | "not_allowed_token_type"))
    }
}

/// A message as Slack returns it in history/replies.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SlackMessage {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub text: String,
    pub ts: String,
    #[serde(default)]
    pub thread_ts: Option<String>,
    #[serde(default)]
    pub subtype: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub reply_count: Option<u32>,
}

/// One page of `conversations.history` / `conversations.replies`.
#[derive(Debug, Clone)]
pub struct Page {
    pub messages: Vec<SlackMessage>,
    pub next_cursor: Option<String>,
}

/// `auth.test`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Identity {
    pub user_id: String,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
}

/// A Web API client for one Slack app (its app-level and bot tokens).
#[derive(Clone)]
pub struct SlackWeb {
    http: reqwest::Client,
    base: String,
    app_token: SecretString,
    bot_token: SecretString,
}

impl std::fmt::Debug for SlackWeb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackWeb").field("base", &self.base).finish_non_exhaustive()
    }
}

impl SlackWeb {
    pub fn new(http: reqwest::Client, base: &str, app_token: SecretString, bot_token: SecretString) -> Self {
        SlackWeb { http, base: base.trim_end_matches('/').to_owned(), app_token, bot_token }
    }

    async fn call(&self, method: &'static str, app_token: bool, body: Value) -> Result<Value, SlackError> {
        let token = if app_token { &self.app_token } else { &self.bot_token };
        let resp = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token.expose_secret())
            .timeout(Duration::from_secs(15))
            .json(&body)
            .send()
            .await
            .map_err(|e| SlackError::Transport { method, detail: e.to_string() })?;
        let status = resp.status().as_u16();
        if status == 429 {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(1));
            return Err(SlackError::RateLimited { method, retry_after });
        }
        if status >= 500 {
            return Err(SlackError::Transport { method, detail: format!("http {status}") });
        }
        let v: Value =
            resp.json().await.map_err(|e| SlackError::Transport { method, detail: format!("bad json: {e}") })?;
        if v.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(v)
        } else {
            let error = v.get("error").and_then(Value::as_str).unwrap_or("unknown_error").to_owned();
            Err(SlackError::Api { method, error })
        }
    }

    /// `apps.connections.open`: a fresh Socket Mode URL (app-level token).
    pub async fn connections_open(&self) -> Result<String, SlackError> {
        let v = self.call("apps.connections.open", true, json!({})).await?;
        v.get("url")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(SlackError::Api { method: "apps.connections.open", error: "missing url in response".to_owned() })
    }

    /// `auth.test` with the bot token: who the bot is.
    pub async fn auth_test(&self) -> Result<Identity, SlackError> {
        let v = self.call("auth.test", false, json!({})).await?;
        serde_json::from_value(v)
            .map_err(|e| SlackError::Api { method: "auth.test", error: format!("unexpected response: {e}") })
    }

    /// `chat.postMessage` in a thread, with metadata that lets flotilla recognise its own reply
    /// later (idempotency after a crash between posting and recording). Returns the new `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        text: &str,
        metadata: Option<Value>,
    ) -> Result<String, SlackError> {
        let mut body = json!({"channel": channel, "text": text});
        if let Some(t) = thread_ts {
            body["thread_ts"] = json!(t);
        }
        if let Some(m) = metadata {
            body["metadata"] = m;
        }
        let v = self.call("chat.postMessage", false, body).await?;
        v.get("ts")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(SlackError::Api { method: "chat.postMessage", error: "missing ts in response".to_owned() })
    }

    /// `conversations.history`: top-level messages newer than `oldest`, newest first.
    pub async fn history(&self, channel: &str, oldest: Option<&str>, cursor: Option<&str>) -> Result<Page, SlackError> {
        let mut body = json!({"channel": channel, "limit": 200, "include_all_metadata": true});
        if let Some(o) = oldest {
            body["oldest"] = json!(o);
        }
        if let Some(c) = cursor {
            body["cursor"] = json!(c);
        }
        page(self.call("conversations.history", false, body).await?, "conversations.history")
    }

    /// `conversations.replies`: a thread's parent and replies newer than `oldest`.
    pub async fn replies(
        &self,
        channel: &str,
        thread_ts: &str,
        oldest: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Page, SlackError> {
        let mut body = json!({"channel": channel, "ts": thread_ts, "limit": 200, "include_all_metadata": true});
        if let Some(o) = oldest {
            body["oldest"] = json!(o);
        }
        if let Some(c) = cursor {
            body["cursor"] = json!(c);
        }
        page(self.call("conversations.replies", false, body).await?, "conversations.replies")
    }

    /// `users.conversations`: channels and DMs the bot is a member of.
    pub async fn member_conversations(&self) -> Result<Vec<String>, SlackError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut body = json!({"types": "public_channel,private_channel,im,mpim", "limit": 200});
            if let Some(c) = &cursor {
                body["cursor"] = json!(c);
            }
            let v = self.call("users.conversations", false, body).await?;
            if let Some(chs) = v.get("channels").and_then(Value::as_array) {
                out.extend(chs.iter().filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_owned)));
            }
            cursor = next_cursor(&v);
            if cursor.is_none() {
                return Ok(out);
            }
        }
    }
}

fn next_cursor(v: &Value) -> Option<String> {
    v.pointer("/response_metadata/next_cursor").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_owned)
}

fn page(v: Value, method: &'static str) -> Result<Page, SlackError> {
    let next_cursor = next_cursor(&v);
    let messages = v
        .get("messages")
        .cloned()
        .map(serde_json::from_value::<Vec<SlackMessage>>)
        .transpose()
        .map_err(|e| SlackError::Api { method, error: format!("unexpected messages: {e}") })?
        .unwrap_or_default();
    Ok(Page { messages, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_classify_themselves() {
        assert!(SlackError::RateLimited { method: "x", retry_after: Duration::from_secs(1) }.is_retryable());
        assert!(SlackError::Api { method: "x", error: "invalid_auth".into() }.is_auth());
        assert!(!SlackError::Api { method: "x", error: "channel_not_found".into() }.is_retryable());
    }

    #[test]
    fn pages_parse_slack_shapes() {
        let v = json!({"ok": true, "messages": [{"type": "message", "user": "U1", "text": "hi", "ts": "1.000100", "thread_ts": "1.000100", "reply_count": 2}], "has_more": true, "response_metadata": {"next_cursor": "bmV4dA=="}});
        let p = page(v, "conversations.history").expect("page");
        assert_eq!(p.messages[0].user.as_deref(), Some("U1"));
        assert_eq!(p.next_cursor.as_deref(), Some("bmV4dA=="));
        let v = json!({"ok": true, "messages": [], "response_metadata": {"next_cursor": ""}});
        assert_eq!(page(v, "conversations.history").expect("page").next_cursor, None);
    }
}
