//! `POST /v1/chat/completions`: validation, the JSON answer and the `chat.completion.chunk`
//! stream (with `stream_options.include_usage` and the closing `data: [DONE]`).

use serde_json::{Value, json};

use super::{SYSTEM_FINGERPRINT, chat_usage, finish_reason, missing, type_name};
use crate::api::ErrorKind;
use crate::model::{self, Choice, Last, Prompt, Reply, ReplyBody, Tool};
use crate::sse::{Events, Pace};
use crate::util::{Fnv, alnum_id, unix_secs};

/// The error chunk OpenAI sends when a stream fails after its `200` head.
pub(crate) const MID_STREAM_ERROR: &[u8] = b"data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";

const ROLES: &str = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'";

/// Validates a Chat Completions request and extracts the prompt.
pub(crate) fn parse(req: &Value) -> Result<Prompt, ErrorKind> {
    let obj = req.as_object().ok_or_else(|| {
        ErrorKind::invalid(format!(
            "Invalid type for request body: expected an object, but got {} instead.",
            type_name(req)
        ))
    })?;
    let model = match obj.get("model") {
        None | Some(Value::Null) => {
            return Err(ErrorKind::invalid("you must provide a model parameter"));
        }
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(ErrorKind::invalid_param(
                format!("Invalid type for 'model': expected a string, but got {} instead.", type_name(v)),
                "model",
                Some("invalid_type"),
            ));
        }
    };
    let messages = match obj.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(ErrorKind::invalid_param(
                format!("Invalid type for 'messages': expected an array of objects, but got {} instead.", type_name(v)),
                "messages",
                Some("invalid_type"),
            ));
        }
    };
    if messages.is_empty() {
        return Err(ErrorKind::invalid_param(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            Some("empty_array"),
        ));
    }
    let mut prev_had_tool_calls = false;
    for (i, m) in messages.iter().enumerate() {
        let role = match m.get("role") {
            None | Some(Value::Null) => return Err(missing(&format!("messages[{i}].role"))),
            Some(Value::String(r)) => r.as_str(),
            Some(v) => {
                return Err(ErrorKind::invalid_param(
                    format!(
                        "Invalid type for 'messages[{i}].role': expected one of {ROLES}, but got {} instead.",
                        type_name(v)
                    ),
                    format!("messages[{i}].role"),
                    Some("invalid_type"),
                ));
            }
        };
        match role {
            "system" | "developer" | "user" | "function" => {
                if m.get("content").is_none_or(Value::is_null) {
                    return Err(missing(&format!("messages[{i}].content")));
                }
                prev_had_tool_calls = false;
            }
            "assistant" => {
                let has_calls = m.get("tool_calls").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
                if !has_calls && m.get("content").is_none_or(Value::is_null) {
                    return Err(missing(&format!("messages[{i}].content")));
                }
                prev_had_tool_calls = has_calls;
            }
            "tool" => {
                if m.get("tool_call_id").and_then(Value::as_str).is_none() {
                    return Err(missing(&format!("messages[{i}].tool_call_id")));
                }
                if !prev_had_tool_calls {
                    // The API's own spelling, typo included.
                    return Err(ErrorKind::invalid_param(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                        format!("messages.[{i}].role"),
                        None,
                    ));
                }
            }
            other => {
                return Err(ErrorKind::invalid_param(
                    format!("Invalid value: '{other}'. Supported values are: {ROLES}."),
                    format!("messages[{i}].role"),
                    Some("invalid_value"),
                ));
            }
        }
    }

    let mut tools = Vec::new();
    let tool_list = obj.get("tools").and_then(Value::as_array);
    for (i, t) in tool_list.into_iter().flatten().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            continue;
        }
        let f = t.get("function").ok_or_else(|| missing(&format!("tools[{i}].function")))?;
        let name =
            f.get("name").and_then(Value::as_str).ok_or_else(|| missing(&format!("tools[{i}].function.name")))?;
        tools.push(Tool {
            name: name.to_owned(),
            schema: f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    let choice = match obj.get("tool_choice").filter(|c| !c.is_null()) {
        None => Choice::Auto,
        Some(c) => {
            if tool_list.is_none_or(Vec::is_empty) {
                return Err(ErrorKind::invalid_param(
                    "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                    "tool_choice",
                    None,
                ));
            }
            match c {
                Value::String(s) => match s.as_str() {
                    "auto" => Choice::Auto,
                    "none" => Choice::None,
                    "required" => Choice::Any,
                    other => {
                        return Err(ErrorKind::invalid_param(
                            format!("Invalid value: '{other}'. Supported values are: 'none', 'auto', and 'required'."),
                            "tool_choice",
                            Some("invalid_value"),
                        ));
                    }
                },
                _ => {
                    let name = c
                        .get("function")
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| missing("tool_choice.function.name"))?;
                    if !tools.iter().any(|t| t.name == name) {
                        return Err(ErrorKind::invalid_param(
                            format!("Invalid 'tool_choice': function '{name}' not found in 'tools'."),
                            "tool_choice",
                            Some("invalid_value"),
                        ));
                    }
                    Choice::Tool(name.to_owned())
                }
            }
        }
    };
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream && obj.get("stream_options").is_some_and(|v| !v.is_null()) {
        return Err(ErrorKind::invalid_param(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            None,
        ));
    }
    let max_tokens = obj
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| obj.get("max_tokens").and_then(Value::as_u64));

    let last = messages.last().unwrap_or(&Value::Null);
    let last = match last.get("role").and_then(Value::as_str) {
        Some("tool" | "function") => Last::ToolResult(model::content_text(last.get("content").unwrap_or(&Value::Null))),
        Some("assistant") => Last::Assistant,
        _ => Last::User,
    };

    let mut h = Fnv::new();
    h.write(model.as_bytes());
    let mut chars = 0;
    for key in ["messages", "tools", "tool_choice"] {
        if let Some(v) = obj.get(key) {
            h.write(key.as_bytes());
            let n = model::digest(v, &mut h);
            if key != "tool_choice" {
                chars += n;
            }
        }
    }
    Ok(Prompt { model, stream, max_tokens, tools, choice, last, prompt_chars: chars, seed: h.finish() })
}

fn completion_id() -> String {
    alnum_id("chatcmpl-", 29)
}

fn call_id() -> String {
    alnum_id("call_", 24)
}

/// The non-streamed answer.
pub(crate) fn completion_json(p: &Prompt, r: &Reply) -> Value {
    let message = match &r.body {
        ReplyBody::Text { chunks } => json!({
            "role": "assistant",
            "content": chunks.concat(),
            "refusal": null,
            "annotations": [],
        }),
        ReplyBody::ToolCall { name, arguments, .. } => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": call_id(),
                "type": "function",
                "function": { "name": name, "arguments": arguments },
            }],
            "refusal": null,
            "annotations": [],
        }),
    };
    json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": unix_secs(),
        "model": p.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(r.stop),
        }],
        "usage": chat_usage(r.input_tokens, r.output_tokens),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    })
}

/// The streamed answer: a role chunk, content (or tool-call argument) chunks, a chunk with
/// the `finish_reason`, the usage chunk if asked for, and `data: [DONE]`.
pub(crate) fn stream_events(req: &Value, p: &Prompt, r: &Reply) -> Events {
    let include_usage =
        req.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    let id = completion_id();
    let created = unix_secs();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": p.model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };

    let mut e = Events::default();
    match &r.body {
        ReplyBody::Text { chunks } => {
            e.data(&chunk(json!({ "role": "assistant", "content": "", "refusal": null }), Value::Null), Pace::Now);
            for (i, c) in chunks.iter().enumerate() {
                let pace = if i == 0 { Pace::FirstToken } else { Pace::Token };
                e.data(&chunk(json!({ "content": c }), Value::Null), pace);
            }
        }
        ReplyBody::ToolCall { name, fragments, .. } => {
            e.data(
                &chunk(
                    json!({
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [{
                            "index": 0,
                            "id": call_id(),
                            "type": "function",
                            "function": { "name": name, "arguments": "" },
                        }],
                        "refusal": null,
                    }),
                    Value::Null,
                ),
                Pace::Now,
            );
            for (i, f) in fragments.iter().enumerate() {
                let pace = if i == 0 { Pace::FirstToken } else { Pace::Token };
                e.data(
                    &chunk(json!({ "tool_calls": [{ "index": 0, "function": { "arguments": f } }] }), Value::Null),
                    pace,
                );
            }
        }
    }
    e.data(&chunk(json!({}), json!(finish_reason(r.stop))), Pace::Now);
    if include_usage {
        e.data(
            &json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": p.model,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [],
                "usage": chat_usage(r.input_tokens, r.output_tokens),
            }),
            Pace::Now,
        );
    }
    e.raw(b"data: [DONE]\n\n", Pace::Now);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: Value) -> String {
        match parse(&v) {
            Err(ErrorKind::Invalid { message, .. }) => message,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn validation_messages() {
        assert_eq!(msg(json!({"messages": [{"role": "user", "content": "x"}]})), "you must provide a model parameter");
        assert_eq!(msg(json!({"model": "m"})), "Missing required parameter: 'messages'.");
        assert!(msg(json!({"model": "m", "messages": []})).starts_with("Invalid 'messages': empty array."));
        assert!(
            msg(json!({"model": "m", "messages": [{"role": "bot", "content": "x"}]}))
                .starts_with("Invalid value: 'bot'.")
        );
        assert!(msg(json!({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c", "content": "r"}]}))
            .contains("must be a response to a preceeding message with 'tool_calls'"));
        assert!(msg(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}))
            .contains("only allowed when 'stream' is enabled"));
    }

    #[test]
    fn tool_result_is_the_last_turn() {
        let p = parse(&json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
        ], "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]}))
        .unwrap();
        assert_eq!(p.last, Last::ToolResult("sunny".into()));
        assert_eq!(p.tools.len(), 1);
    }
}
