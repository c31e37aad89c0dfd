//! `POST /v1/responses`: validation, the response object, and the semantic event stream
//! (`response.created` … `response.completed`, each with a `sequence_number`).

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value, json};

use super::{missing, type_name};
use crate::api::ErrorKind;
use crate::model::{self, Choice, Last, Prompt, Reply, ReplyBody, Stop, Tool};
use crate::sse::{self, Events, Pace};
use crate::util::{Fnv, alnum_id, hex_id, unix_secs};

/// Validates a Responses request and extracts the prompt.
pub(crate) fn parse(req: &Value) -> Result<Prompt, ErrorKind> {
    let obj = req.as_object().ok_or_else(|| {
        ErrorKind::invalid(format!(
            "Invalid type for request body: expected an object, but got {} instead.",
            type_name(req)
        ))
    })?;
    let model = match obj.get("model") {
        None | Some(Value::Null) => return Err(missing("model")),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(ErrorKind::invalid_param(
                format!("Invalid type for 'model': expected a string, but got {} instead.", type_name(v)),
                "model",
                Some("invalid_type"),
            ));
        }
    };
    let last = match obj.get("input") {
        None | Some(Value::Null) => {
            if obj.get("previous_response_id").is_some_and(|v| !v.is_null()) {
                Last::User
            } else {
                return Err(missing("input"));
            }
        }
        Some(Value::String(_)) => Last::User,
        Some(Value::Array(items)) => check_items(items)?,
        Some(v) => {
            return Err(ErrorKind::invalid_param(
                format!(
                    "Invalid type for 'input': expected one of a string or array of input items, but got {} instead.",
                    type_name(v)
                ),
                "input",
                Some("invalid_type"),
            ));
        }
    };

    let mut tools = Vec::new();
    let tool_list = obj.get("tools").and_then(Value::as_array);
    for (i, t) in tool_list.into_iter().flatten().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            None => return Err(missing(&format!("tools[{i}].type"))),
            Some("function") => {}
            // Built-in tools (web_search, file_search…) are never called by the simulator.
            Some(_) => continue,
        }
        let name = t.get("name").and_then(Value::as_str).ok_or_else(|| missing(&format!("tools[{i}].name")))?;
        tools.push(Tool {
            name: name.to_owned(),
            schema: t.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    let choice = match obj.get("tool_choice").filter(|c| !c.is_null()) {
        None => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
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
        Some(c) => {
            let name = c.get("name").and_then(Value::as_str).ok_or_else(|| missing("tool_choice.name"))?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ErrorKind::invalid_param(
                    format!("Tool choice '{name}' not found in 'tools' parameter."),
                    "tool_choice",
                    None,
                ));
            }
            Choice::Tool(name.to_owned())
        }
    };
    let max_tokens = match obj.get("max_output_tokens").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 16 => Some(n),
            _ => {
                return Err(ErrorKind::invalid_param(
                    format!(
                        "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got {v} instead."
                    ),
                    "max_output_tokens",
                    Some("integer_below_min_value"),
                ));
            }
        },
    };
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);

    let mut h = Fnv::new();
    h.write(model.as_bytes());
    let mut chars = 0;
    for key in ["instructions", "input", "tools", "tool_choice"] {
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

/// Checks the input items and says what the conversation ends with.
fn check_items(items: &[Value]) -> Result<Last, ErrorKind> {
    let mut last = Last::User;
    for (i, item) in items.iter().enumerate() {
        let ty = item.get("type").and_then(Value::as_str);
        last = match ty {
            None | Some("message") => {
                let role =
                    item.get("role").and_then(Value::as_str).ok_or_else(|| missing(&format!("input[{i}].role")))?;
                if item.get("content").is_none_or(Value::is_null) {
                    return Err(missing(&format!("input[{i}].content")));
                }
                match role {
                    "user" | "system" | "developer" => Last::User,
                    "assistant" => Last::Assistant,
                    other => {
                        return Err(ErrorKind::invalid_param(
                            format!(
                                "Invalid value: '{other}'. Supported values are: 'assistant', 'system', 'developer', and 'user'."
                            ),
                            format!("input[{i}].role"),
                            Some("invalid_value"),
                        ));
                    }
                }
            }
            Some("function_call_output") => {
                if item.get("call_id").and_then(Value::as_str).is_none() {
                    return Err(missing(&format!("input[{i}].call_id")));
                }
                let output = item.get("output").ok_or_else(|| missing(&format!("input[{i}].output")))?;
                Last::ToolResult(model::content_text(output))
            }
            Some("function_call") => {
                for field in ["call_id", "name", "arguments"] {
                    if item.get(field).and_then(Value::as_str).is_none() {
                        return Err(missing(&format!("input[{i}].{field}")));
                    }
                }
                Last::Assistant
            }
            // Reasoning items and other item types are carried along untouched.
            Some(_) => last,
        };
    }
    Ok(last)
}

/// Ids and timestamps shared by every event of one response.
struct Ids {
    response: String,
    item: String,
    call: String,
    created_at: u64,
}

impl Ids {
    fn new(r: &Reply) -> Self {
        let item = match r.body {
            ReplyBody::Text { .. } => hex_id("msg_", 50),
            ReplyBody::ToolCall { .. } => hex_id("fc_", 50),
        };
        Ids { response: hex_id("resp_", 50), item, call: alnum_id("call_", 24), created_at: unix_secs() }
    }
}

fn usage(r: &Reply) -> Value {
    json!({
        "input_tokens": r.input_tokens,
        "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": r.output_tokens,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": r.input_tokens + r.output_tokens,
    })
}

/// The response object. `status` is `in_progress`, `completed`, `incomplete` or `failed`;
/// `output` and `usage` are what the response has so far.
fn response_object(req: &Value, p: &Prompt, ids: &Ids, status: &str, output: Value, usage: Value) -> Value {
    let get = |k: &str, default: Value| match req.get(k) {
        Some(v) if !v.is_null() => v.clone(),
        _ => default,
    };
    let incomplete = if status == "incomplete" { json!({ "reason": "max_output_tokens" }) } else { Value::Null };
    let mut o = Map::new();
    o.insert("id".into(), json!(ids.response));
    o.insert("object".into(), json!("response"));
    o.insert("created_at".into(), json!(ids.created_at));
    o.insert("status".into(), json!(status));
    o.insert("background".into(), json!(false));
    o.insert("error".into(), Value::Null);
    o.insert("incomplete_details".into(), incomplete);
    o.insert("instructions".into(), get("instructions", Value::Null));
    o.insert("max_output_tokens".into(), get("max_output_tokens", Value::Null));
    o.insert("max_tool_calls".into(), Value::Null);
    o.insert("model".into(), json!(p.model));
    o.insert("output".into(), output);
    o.insert("parallel_tool_calls".into(), get("parallel_tool_calls", json!(true)));
    o.insert("previous_response_id".into(), get("previous_response_id", Value::Null));
    o.insert("reasoning".into(), json!({ "effort": null, "summary": null }));
    o.insert("service_tier".into(), json!("default"));
    o.insert("store".into(), get("store", json!(true)));
    o.insert("temperature".into(), get("temperature", json!(1.0)));
    o.insert("text".into(), json!({ "format": { "type": "text" }, "verbosity": "medium" }));
    o.insert("tool_choice".into(), get("tool_choice", json!("auto")));
    o.insert("tools".into(), get("tools", json!([])));
    o.insert("top_logprobs".into(), json!(0));
    o.insert("top_p".into(), get("top_p", json!(1.0)));
    o.insert("truncation".into(), json!("disabled"));
    o.insert("usage".into(), usage);
    o.insert("user".into(), get("user", Value::Null));
    o.insert("metadata".into(), get("metadata", json!({})));
    Value::Object(o)
}

fn final_status(r: &Reply) -> &'static str {
    if r.stop == Stop::MaxTokens { "incomplete" } else { "completed" }
}

/// The output item in its final state.
fn final_item(ids: &Ids, r: &Reply) -> Value {
    match &r.body {
        ReplyBody::Text { chunks } => json!({
            "id": ids.item,
            "type": "message",
            "status": final_status(r),
            "content": [text_part(&chunks.concat())],
            "role": "assistant",
        }),
        ReplyBody::ToolCall { name, arguments, .. } => json!({
            "id": ids.item,
            "type": "function_call",
            "status": "completed",
            "arguments": arguments,
            "call_id": ids.call,
            "name": name,
        }),
    }
}

fn text_part(text: &str) -> Value {
    json!({ "type": "output_text", "annotations": [], "logprobs": [], "text": text })
}

/// The non-streamed answer.
pub(crate) fn response_json(req: &Value, p: &Prompt, r: &Reply) -> Value {
    let ids = Ids::new(r);
    response_object(req, p, &ids, final_status(r), json!([final_item(&ids, r)]), usage(r))
}

/// Numbers events as they are added.
struct Seq<'a> {
    events: &'a mut Events,
    n: u64,
}

impl Seq<'_> {
    fn push(&mut self, ty: &str, mut fields: Value, pace: Pace) {
        if let Value::Object(m) = &mut fields {
            m.insert("type".into(), json!(ty));
            m.insert("sequence_number".into(), json!(self.n));
        }
        self.n += 1;
        self.events.named(ty, &fields, pace);
    }
}

/// The streamed answer, plus the error events to send instead of the rest if
/// [`crate::Fault::ErrorMidStream`] strikes after `error_after` events.
pub(crate) fn stream_events(req: &Value, p: &Prompt, r: &Reply, error_after: Option<u32>) -> (Events, Bytes) {
    let ids = Ids::new(r);
    let mut events = Events::default();
    let mut s = Seq { events: &mut events, n: 0 };
    let pending = response_object(req, p, &ids, "in_progress", json!([]), Value::Null);
    s.push("response.created", json!({ "response": pending }), Pace::Now);
    s.push("response.in_progress", json!({ "response": pending }), Pace::Now);
    match &r.body {
        ReplyBody::Text { chunks } => {
            let item = json!({
                "id": ids.item, "type": "message", "status": "in_progress", "content": [], "role": "assistant",
            });
            s.push("response.output_item.added", json!({ "output_index": 0, "item": item }), Pace::Now);
            let at = json!({ "item_id": ids.item, "output_index": 0, "content_index": 0 });
            let with = |extra: Value| {
                let mut v = at.clone();
                if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
                    a.extend(b);
                }
                v
            };
            s.push("response.content_part.added", with(json!({ "part": text_part("") })), Pace::Now);
            for (i, c) in chunks.iter().enumerate() {
                let pace = if i == 0 { Pace::FirstToken } else { Pace::Token };
                s.push("response.output_text.delta", with(json!({ "delta": c, "logprobs": [] })), pace);
            }
            let text = chunks.concat();
            s.push("response.output_text.done", with(json!({ "text": text, "logprobs": [] })), Pace::Now);
            s.push("response.content_part.done", with(json!({ "part": text_part(&text) })), Pace::Now);
        }
        ReplyBody::ToolCall { name, arguments, fragments, .. } => {
            let item = json!({
                "id": ids.item, "type": "function_call", "status": "in_progress",
                "arguments": "", "call_id": ids.call, "name": name,
            });
            s.push("response.output_item.added", json!({ "output_index": 0, "item": item }), Pace::Now);
            for (i, f) in fragments.iter().enumerate() {
                let pace = if i == 0 { Pace::FirstToken } else { Pace::Token };
                s.push(
                    "response.function_call_arguments.delta",
                    json!({ "item_id": ids.item, "output_index": 0, "delta": f }),
                    pace,
                );
            }
            s.push(
                "response.function_call_arguments.done",
                json!({ "item_id": ids.item, "output_index": 0, "name": name, "arguments": arguments }),
                Pace::Now,
            );
        }
    }
    s.push("response.output_item.done", json!({ "output_index": 0, "item": final_item(&ids, r) }), Pace::Now);
    let status = final_status(r);
    let done = response_object(req, p, &ids, status, json!([final_item(&ids, r)]), usage(r));
    let terminal = if status == "incomplete" { "response.incomplete" } else { "response.completed" };
    s.push(terminal, json!({ "response": done }), Pace::Now);

    let at = error_after.map_or(0, |n| sse::fault_index(n, events.len()));
    let error = mid_stream_error(req, p, &ids, at as u64);
    (events, error)
}

/// An `error` event followed by `response.failed`, numbered from `seq`.
fn mid_stream_error(req: &Value, p: &Prompt, ids: &Ids, seq: u64) -> Bytes {
    let message = "Our servers are currently overloaded. Please try again later.";
    let mut failed = response_object(req, p, ids, "failed", json!([]), Value::Null);
    failed["error"] = json!({ "code": "server_error", "message": message });
    let mut b = BytesMut::new();
    b.extend_from_slice(&sse::frame(
        Some("error"),
        &json!({
            "type": "error",
            "code": "server_is_overloaded",
            "message": message,
            "param": null,
            "sequence_number": seq,
        }),
    ));
    b.extend_from_slice(&sse::frame(
        Some("response.failed"),
        &json!({ "type": "response.failed", "sequence_number": seq + 1, "response": failed }),
    ));
    b.freeze()
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
        assert_eq!(msg(json!({"input": "hi"})), "Missing required parameter: 'model'.");
        assert_eq!(msg(json!({"model": "m"})), "Missing required parameter: 'input'.");
        assert!(msg(json!({"model": "m", "input": "hi", "max_output_tokens": 5})).contains("Expected a value >= 16"));
        assert_eq!(
            msg(json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]})),
            "Missing required parameter: 'input[0].call_id'."
        );
    }

    #[test]
    fn last_item_kinds() {
        let p = parse(&json!({"model": "m", "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "rainy"}
        ]}))
        .unwrap();
        assert_eq!(p.last, Last::ToolResult("rainy".into()));
        let p = parse(&json!({"model": "m", "input": "hello", "instructions": "be brief"})).unwrap();
        assert_eq!(p.last, Last::User);
        assert_eq!(p.prompt_chars, 13);
    }
}
