//! The OpenAI Chat Completions API wire format: client-side parsing/encoding and upstream-side encoding/decoding.
//!
//! Mapping to the canonical model: `system`/`developer` messages become
//! [`ChatRequest::system`] (joined with a blank line); `tool` messages become
//! [`ContentPart::ToolResult`]s in a user message (consecutive ones merged); tool-call
//! `arguments` strings are parsed into JSON (kept as a JSON string when they are not valid
//! JSON). Going out, a user message's tool results become `tool` messages first and its
//! other parts (plus any images returned by tools, which `tool` messages cannot carry) a
//! `user` message after them; `is_error` on a tool result has no OpenAI equivalent.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::{DecodeError, UpstreamError};
use crate::sse::{SseEvent, write_json_event};
use crate::wire::{self, TextOr};
use crate::{
    ApiError, BlockKind, ChatRequest, ChatResponse, ContentPart, ErrorKind, Message, ProtoError, Role, StopReason,
    StreamEvent, ToolChoice, ToolDef, Usage,
};

/// Separator between merged `system`/`developer` messages.
const SYSTEM_JOIN: &str = "\n\n";

/// Which field carries the output token cap in an upstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensField {
    /// `max_completion_tokens`: what OpenAI wants (its reasoning models reject `max_tokens`).
    #[default]
    MaxCompletionTokens,
    /// `max_tokens`: for OpenAI-compatible servers that only know the old name.
    MaxTokens,
}

/// Knobs of [`encode_request_with`] for OpenAI-compatible upstreams that differ from OpenAI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestOptions {
    pub max_tokens_field: MaxTokensField,
}

/// Parses a client's request body.
///
/// Rejected as unsupported (they change what the answer is and cannot be carried to another
/// provider): `n` > 1, a `response_format` other than text, `logprobs`, audio, legacy
/// `functions`/`function_call`, non-function tools. Other unknown fields are ignored.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ProtoError> {
    let raw: InRequest<'_> = serde_json::from_slice(body).map_err(|e| ProtoError::invalid("request", e))?;
    if raw.n.is_some_and(|n| n > 1) {
        return Err(ProtoError::unsupported("parameter", "n > 1 (several choices per request)"));
    }
    if let Some(f) = &raw.response_format
        && f.kind != "text"
    {
        return Err(ProtoError::unsupported(
            "parameter",
            format!("response_format {:?} (structured output cannot be translated)", f.kind),
        ));
    }
    if raw.logprobs == Some(true) {
        return Err(ProtoError::unsupported("parameter", "logprobs"));
    }
    if raw.audio.is_some() || raw.modalities.iter().flatten().any(|m| m == "audio") {
        return Err(ProtoError::unsupported("parameter", "audio output"));
    }
    if raw.functions.is_some() || raw.function_call.is_some() {
        return Err(ProtoError::unsupported("parameter", "legacy functions/function_call (use tools/tool_choice)"));
    }

    let mut system: Option<String> = None;
    let mut messages: Vec<Message> = Vec::with_capacity(raw.messages.len());
    for m in raw.messages {
        match m.role.as_ref() {
            "system" | "developer" => {
                let text = text_content(m.content, "system message")?;
                match &mut system {
                    None => system = Some(text),
                    Some(s) => {
                        s.push_str(SYSTEM_JOIN);
                        s.push_str(&text);
                    }
                }
            }
            "user" => {
                let content = match m.content {
                    None => return Err(ProtoError::invalid("user message", "missing content")),
                    Some(TextOr::Text(text)) => vec![ContentPart::Text { text }],
                    Some(TextOr::Parts(parts)) => {
                        let mut out = Vec::with_capacity(parts.len());
                        for p in parts {
                            out.push(user_part(p)?);
                        }
                        out
                    }
                };
                messages.push(Message { role: Role::User, content });
            }
            "assistant" => {
                if m.function_call.is_some() {
                    return Err(ProtoError::unsupported("assistant message", "legacy function_call (use tool_calls)"));
                }
                let has_calls = m.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
                let mut content = Vec::new();
                match m.content {
                    None => {}
                    // An empty content string beside tool calls is no text block.
                    Some(TextOr::Text(text)) if text.is_empty() && has_calls => {}
                    Some(TextOr::Text(text)) => content.push(ContentPart::Text { text }),
                    Some(TextOr::Parts(parts)) => {
                        for p in parts {
                            let text = match p.kind.as_ref() {
                                "text" => p.text,
                                "refusal" => p.refusal,
                                other => {
                                    return Err(ProtoError::unsupported(
                                        "assistant content part",
                                        format!("type {other:?}"),
                                    ));
                                }
                            };
                            content.push(ContentPart::Text { text: text.unwrap_or_default() });
                        }
                    }
                }
                if let Some(refusal) = m.refusal {
                    content.push(ContentPart::Text { text: refusal });
                }
                for call in m.tool_calls.into_iter().flatten() {
                    content.push(ContentPart::ToolUse {
                        id: call.id,
                        name: call.function.name,
                        input: wire::parse_tool_args(call.function.arguments),
                    });
                }
                messages.push(Message { role: Role::Assistant, content });
            }
            "tool" => {
                let tool_use_id =
                    m.tool_call_id.ok_or_else(|| ProtoError::invalid("tool message", "missing tool_call_id"))?;
                let content = match m.content {
                    None => Vec::new(),
                    Some(TextOr::Text(text)) if text.is_empty() => Vec::new(),
                    Some(TextOr::Text(text)) => vec![ContentPart::Text { text }],
                    Some(TextOr::Parts(parts)) => {
                        let mut out = Vec::with_capacity(parts.len());
                        for p in parts {
                            if p.kind != "text" {
                                return Err(ProtoError::unsupported(
                                    "tool message content part",
                                    format!("type {:?} (only text)", p.kind),
                                ));
                            }
                            out.push(ContentPart::Text { text: p.text.unwrap_or_default() });
                        }
                        out
                    }
                };
                let part = ContentPart::ToolResult { tool_use_id, content, is_error: false };
                // Results of one assistant turn travel together in one user message, as
                // Anthropic requires.
                match messages.last_mut() {
                    Some(last) if wire::is_tool_results(last) => last.content.push(part),
                    _ => messages.push(Message { role: Role::User, content: vec![part] }),
                }
            }
            "function" => {
                return Err(ProtoError::unsupported("message role", "legacy function messages (use tool messages)"));
            }
            other => {
                return Err(ProtoError::invalid("message", format!("unknown role {other:?}")));
            }
        }
    }

    let mut tools = Vec::new();
    for t in raw.tools.unwrap_or_default() {
        if t.kind != "function" {
            return Err(ProtoError::unsupported("tool", format!("type {:?} (only function tools)", t.kind)));
        }
        let f = t.function.ok_or_else(|| ProtoError::invalid("tool", "function tool without function"))?;
        tools.push(ToolDef {
            name: f.name,
            description: f.description,
            input_schema: f.parameters.unwrap_or_else(wire::empty_schema),
        });
    }

    let tool_choice = match raw.tool_choice {
        None => None,
        Some(InToolChoice::Mode(mode)) => Some(match mode.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Any,
            other => {
                return Err(ProtoError::invalid("tool_choice", format!("unknown mode {other:?}")));
            }
        }),
        Some(InToolChoice::Named { kind, function }) => {
            if kind != "function" {
                return Err(ProtoError::unsupported("tool_choice", format!("type {kind:?} (only function)")));
            }
            let f = function.ok_or_else(|| ProtoError::invalid("tool_choice", "function choice without function"))?;
            Some(ToolChoice::Tool { name: f.name })
        }
    };

    Ok(ChatRequest {
        model: raw.model,
        system,
        messages,
        max_tokens: raw.max_completion_tokens.or(raw.max_tokens),
        temperature: raw.temperature,
        top_p: raw.top_p,
        stop: match raw.stop {
            None => Vec::new(),
            Some(TextOr::Text(s)) => vec![s],
            Some(TextOr::Parts(v)) => v,
        },
        tools,
        tool_choice,
        stream: raw.stream.unwrap_or(false),
        user: raw.user.or(raw.safety_identifier),
    })
}

/// Encodes a complete answer for a client.
///
/// Text parts are concatenated into `message.content`; stop reasons map to `stop`,
/// `length`, `tool_calls` or `content_filter` (refusals included).
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let id = wire::prefixed_id(&resp.id, "chatcmpl-");
    let text = wire::joined_text(&resp.content);
    let calls = OutToolCalls(&resp.content);
    let content = match text {
        None if calls.is_empty() => Some(Cow::Borrowed("")),
        t => t,
    };
    wire::to_vec(&OutCompletion {
        id: &id,
        object: "chat.completion",
        created: wire::unix_now(),
        model: &resp.model,
        choices: [OutChoice {
            index: 0,
            message: OutResponseMessage { role: "assistant", content, refusal: (), tool_calls: calls },
            logprobs: (),
            finish_reason: finish_reason_str(resp.stop_reason),
        }],
        usage: OutUsage::from(resp.usage),
    })
}

/// Encodes an error body for a client (the HTTP status is `err.status`):
/// `{"error":{"message","type","param","code"}}`.
pub fn encode_error(err: &ApiError) -> Vec<u8> {
    wire::to_vec(&OutErrorEnvelope { error: OutError::from(err) })
}

/// The OpenAI `error.type` and `error.code` for an error kind, as OpenAI itself sends them.
pub fn error_type_and_code(kind: ErrorKind) -> (&'static str, Option<&'static str>) {
    match kind {
        ErrorKind::InvalidRequest => ("invalid_request_error", None),
        ErrorKind::Authentication => ("invalid_request_error", Some("invalid_api_key")),
        ErrorKind::PermissionDenied => ("invalid_request_error", Some("permission_denied")),
        ErrorKind::NotFound => ("invalid_request_error", Some("not_found")),
        ErrorKind::RequestTooLarge => ("invalid_request_error", Some("request_too_large")),
        ErrorKind::RateLimit => ("requests", Some("rate_limit_exceeded")),
        ErrorKind::Api => ("server_error", None),
        ErrorKind::Overloaded => ("server_error", Some("server_overloaded")),
        ErrorKind::Timeout => ("server_error", Some("timeout")),
    }
}

/// Encodes a request for an upstream of this format, naming `upstream_model`, with
/// [`RequestOptions::default`] (`max_completion_tokens`). A stream asks for usage
/// (`stream_options.include_usage`).
pub fn encode_request(req: &ChatRequest, upstream_model: &str, stream: bool) -> Vec<u8> {
    encode_request_with(req, upstream_model, stream, &RequestOptions::default())
}

/// [`encode_request`] with options for OpenAI-compatible servers.
pub fn encode_request_with(req: &ChatRequest, upstream_model: &str, stream: bool, opts: &RequestOptions) -> Vec<u8> {
    let (max_completion_tokens, max_tokens) = match opts.max_tokens_field {
        MaxTokensField::MaxCompletionTokens => (req.max_tokens, None),
        MaxTokensField::MaxTokens => (None, req.max_tokens),
    };
    wire::to_vec(&OutRequest {
        model: upstream_model,
        messages: OutMessages { system: req.system.as_deref(), messages: &req.messages },
        max_completion_tokens,
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        tools: OutTools(&req.tools),
        tool_choice: req.tool_choice.as_ref().map(OutToolChoice::from),
        stream,
        stream_options: stream.then_some(OutStreamOptions { include_usage: true }),
        user: req.user.as_deref(),
    })
}

/// Parses an upstream's complete answer (the first choice).
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ProtoError> {
    let raw: InCompletion<'_> = serde_json::from_slice(body).map_err(|e| ProtoError::invalid("response", e))?;
    let choice = raw.choices.into_iter().next().ok_or_else(|| ProtoError::invalid("response", "no choices"))?;
    let mut content = Vec::new();
    match choice.message.content {
        None => {}
        Some(TextOr::Text(text)) if text.is_empty() => {}
        Some(TextOr::Text(text)) => content.push(ContentPart::Text { text }),
        Some(TextOr::Parts(parts)) => {
            for p in parts {
                if let Some(text) = p.text.filter(|t| !t.is_empty()) {
                    content.push(ContentPart::Text { text });
                }
            }
        }
    }
    let refused = choice.message.refusal.is_some();
    if let Some(text) = choice.message.refusal {
        content.push(ContentPart::Text { text });
    }
    let mut has_calls = false;
    for call in choice.message.tool_calls.into_iter().flatten() {
        has_calls = true;
        content.push(ContentPart::ToolUse {
            id: call.id,
            name: call.function.name,
            input: wire::parse_tool_args(call.function.arguments),
        });
    }
    let stop_reason =
        if refused { StopReason::Refusal } else { parse_finish_reason(choice.finish_reason.as_deref(), has_calls) };
    Ok(ChatResponse {
        id: raw.id,
        model: raw.model,
        content,
        stop_reason,
        usage: raw.usage.map(Usage::from).unwrap_or_default(),
    })
}

/// Parses an upstream's error body, if it has this format's error shape
/// (`{"error":{...}}`, or `{"error":"text"}` as some compatible servers send).
/// `error_type` is `error.code` when it is set (`insufficient_quota`,
/// `context_length_exceeded`, `rate_limit_exceeded`, ...), else `error.type`.
pub fn parse_error(body: &[u8]) -> Option<UpstreamError> {
    let raw: InErrorEnvelope = serde_json::from_slice(body).ok()?;
    upstream_error(raw.error)
}

/// The [`UpstreamError`] in an OpenAI-style `error` value.
pub(crate) fn upstream_error(error: Value) -> Option<UpstreamError> {
    match error {
        Value::String(message) => Some(UpstreamError { error_type: String::new(), message }),
        Value::Object(mut m) => {
            let text = |v: Option<Value>| match v {
                Some(Value::String(s)) if !s.is_empty() => Some(s),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let code = text(m.remove("code"));
            let kind = text(m.remove("type"));
            let message = text(m.remove("message"));
            if code.is_none() && kind.is_none() && message.is_none() {
                return None;
            }
            Some(UpstreamError { error_type: code.or(kind).unwrap_or_default(), message: message.unwrap_or_default() })
        }
        _ => None,
    }
}

/// Turns canonical stream events into this format's SSE frames for a client.
///
/// `Start` becomes the first chunk (`delta: {role: "assistant", content: ""}`); text and
/// tool-call deltas become chunks; `Finish` becomes a chunk with `finish_reason` and an empty
/// delta, then a usage chunk (`choices: []`, sent even when the client did not ask for it:
/// clients skip chunks without choices), then `data: [DONE]`.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    id: String,
    model: String,
    created: u64,
    started: bool,
    next_tool: u32,
    /// The canonical index and OpenAI `tool_calls[].index` of the open tool block.
    open_tool: Option<(u32, u32)>,
}

impl StreamEncoder {
    pub fn new() -> Self {
        StreamEncoder::default()
    }

    /// Appends the SSE frames for `ev` to `out`.
    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if let StreamEvent::Start { id, model, .. } = ev {
            self.start(id, model, out);
            return;
        }
        if !self.started {
            self.start("", "", out);
        }
        match ev {
            StreamEvent::Start { .. } | StreamEvent::BlockStart { block: BlockKind::Text, .. } => {}
            StreamEvent::BlockStart { index, block: BlockKind::ToolUse { id, name } } => {
                let tool_index = self.next_tool;
                self.next_tool += 1;
                self.open_tool = Some((*index, tool_index));
                self.chunk(
                    out,
                    OutDelta {
                        tool_calls: Some([OutToolCallDelta {
                            index: tool_index,
                            id: Some(id),
                            kind: Some("function"),
                            function: OutFunctionDelta { name: Some(name), arguments: "" },
                        }]),
                        ..OutDelta::default()
                    },
                    None,
                );
            }
            StreamEvent::TextDelta { text, .. } => {
                self.chunk(out, OutDelta { content: Some(text), ..OutDelta::default() }, None)
            }
            StreamEvent::ToolArgsDelta { index, partial_json } => {
                let tool_index = match self.open_tool {
                    Some((open, tool_index)) if open == *index => tool_index,
                    // Arguments for a block that was never opened as a tool: attach them to
                    // the latest tool rather than invent one.
                    _ => self.next_tool.saturating_sub(1),
                };
                self.chunk(
                    out,
                    OutDelta {
                        tool_calls: Some([OutToolCallDelta {
                            index: tool_index,
                            id: None,
                            kind: None,
                            function: OutFunctionDelta { name: None, arguments: partial_json },
                        }]),
                        ..OutDelta::default()
                    },
                    None,
                );
            }
            StreamEvent::BlockStop { index } => {
                if self.open_tool.is_some_and(|(open, _)| open == *index) {
                    self.open_tool = None;
                }
            }
            StreamEvent::Finish { stop_reason, usage } => {
                self.chunk(out, OutDelta::default(), Some(finish_reason_str(*stop_reason)));
                write_json_event(
                    out,
                    None,
                    &OutChunk {
                        id: &self.id,
                        object: "chat.completion.chunk",
                        created: self.created,
                        model: &self.model,
                        choices: &[],
                        usage: Some(OutUsage::from(*usage)),
                    },
                );
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
        }
    }

    /// Appends the frames that end the stream with an error, as this format does it
    /// (a `data:` line holding `{"error":{...}}`, then nothing: no `[DONE]`).
    pub fn encode_error(&mut self, err: &ApiError, out: &mut Vec<u8>) {
        write_json_event(out, None, &OutErrorEnvelope { error: OutError::from(err) });
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        self.started = true;
        self.id = wire::prefixed_id(id, "chatcmpl-");
        self.model = model.to_owned();
        self.created = wire::unix_now();
        self.chunk(out, OutDelta { role: Some("assistant"), content: Some(""), ..OutDelta::default() }, None);
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: OutDelta<'_>, finish_reason: Option<&'static str>) {
        write_json_event(
            out,
            None,
            &OutChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: &[OutChunkChoice { index: 0, delta, logprobs: (), finish_reason }],
                usage: None,
            },
        );
    }
}

/// Turns an upstream's SSE events of this format into canonical stream events.
///
/// Chat chunks have no block boundaries: a text block opens at the first non-empty content
/// and closes when a tool call starts or the choice finishes; each new `tool_calls[].index`
/// opens a tool block. `Finish` is emitted once both the finish reason and the usage chunk
/// arrived, or at `[DONE]` with whatever is known. Only choice 0 is read.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    open: Open,
    next_index: u32,
    /// OpenAI tool indexes already seen, to reject arguments for a closed call.
    seen_tools: Vec<u32>,
    stop_reason: Option<StopReason>,
    usage: Option<Usage>,
    finished: bool,
    done: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Open {
    #[default]
    None,
    Text {
        index: u32,
    },
    Tool {
        index: u32,
        upstream: u32,
    },
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    /// Feeds one SSE event; returns the canonical events it completes.
    pub fn feed(&mut self, ev: &SseEvent) -> Result<Vec<StreamEvent>, crate::error::DecodeError> {
        let mut out = Vec::new();
        self.feed_into(ev, &mut out)?;
        Ok(out)
    }

    /// Like [`StreamDecoder::feed`], appending to a caller-owned buffer.
    pub fn feed_into(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        if self.done {
            return Ok(());
        }
        if ev.data.trim_ascii() == "[DONE]" {
            self.done = true;
            if !self.finished {
                self.ensure_started(String::new(), String::new(), out);
                self.finish(out);
            }
            return Ok(());
        }
        let chunk: InChunk = serde_json::from_str(&ev.data)
            .map_err(|e| DecodeError::Proto(ProtoError::invalid("openai chat stream chunk", e)))?;
        if let Some(error) = chunk.error {
            let err = upstream_error(error).unwrap_or_else(|| UpstreamError::new("error", ev.data.clone()));
            return Err(DecodeError::Upstream(err));
        }
        if self.finished {
            return Ok(());
        }
        let choices = chunk.choices.unwrap_or_default();
        // Azure sends a first chunk with empty id and no choices (prompt filter results);
        // the answer starts with the first chunk that says something.
        if !self.started && (!choices.is_empty() || chunk.id.as_ref().is_some_and(|i| !i.is_empty())) {
            self.ensure_started(chunk.id.unwrap_or_default(), chunk.model.unwrap_or_default(), out);
        }
        for choice in choices {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    self.text(text, out);
                }
                if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
                    self.stop_reason = Some(StopReason::Refusal);
                    self.text(text, out);
                }
                for call in delta.tool_calls.into_iter().flatten() {
                    self.tool_call(call, out)?;
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.close_open(out);
                if self.stop_reason != Some(StopReason::Refusal) {
                    self.stop_reason = Some(parse_finish_reason(Some(&reason), false));
                }
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage::from(u));
        }
        if self.stop_reason.is_some() && self.usage.is_some() {
            self.finish(out);
        }
        Ok(())
    }

    /// True once the upstream's terminal event (`data: [DONE]`) was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn ensure_started(&mut self, id: String, model: String, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { id, model, input_tokens: 0 });
        }
    }

    fn text(&mut self, text: String, out: &mut Vec<StreamEvent>) {
        let index = match self.open {
            Open::Text { index } => index,
            _ => {
                self.close_open(out);
                let index = self.next_index;
                self.next_index += 1;
                self.open = Open::Text { index };
                out.push(StreamEvent::BlockStart { index, block: BlockKind::Text });
                index
            }
        };
        out.push(StreamEvent::TextDelta { index, text });
    }

    fn tool_call(&mut self, call: InToolCallDelta, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let current = match self.open {
            Open::Tool { upstream, .. } => Some(upstream),
            _ => None,
        };
        // Some compatible servers omit `index`: a call with an id is then a new one.
        let upstream = call.index.unwrap_or(match (&call.id, current) {
            (None, Some(cur)) => cur,
            _ => self.seen_tools.len() as u32,
        });
        let index = match self.open {
            Open::Tool { index, upstream: u } if u == upstream => index,
            _ => {
                if self.seen_tools.contains(&upstream) {
                    return Err(DecodeError::Proto(ProtoError::unsupported(
                        "openai chat stream chunk",
                        format!("arguments for tool call {upstream} after another call started"),
                    )));
                }
                self.seen_tools.push(upstream);
                self.close_open(out);
                let index = self.next_index;
                self.next_index += 1;
                self.open = Open::Tool { index, upstream };
                let (id, name) = match &call.function {
                    Some(f) => (call.id.clone(), f.name.clone()),
                    None => (call.id.clone(), None),
                };
                out.push(StreamEvent::BlockStart {
                    index,
                    block: BlockKind::ToolUse { id: id.unwrap_or_default(), name: name.unwrap_or_default() },
                });
                index
            }
        };
        if let Some(partial_json) = call.function.and_then(|f| f.arguments).filter(|a| !a.is_empty()) {
            out.push(StreamEvent::ToolArgsDelta { index, partial_json });
        }
        Ok(())
    }

    fn close_open(&mut self, out: &mut Vec<StreamEvent>) {
        match std::mem::take(&mut self.open) {
            Open::None => {}
            Open::Text { index } | Open::Tool { index, .. } => {
                out.push(StreamEvent::BlockStop { index });
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        self.close_open(out);
        self.finished = true;
        out.push(StreamEvent::Finish {
            stop_reason: self.stop_reason.unwrap_or(StopReason::EndTurn),
            usage: self.usage.unwrap_or_default(),
        });
    }
}

fn text_content(content: Option<TextOr<InPart<'_>>>, what: &'static str) -> Result<String, ProtoError> {
    match content {
        None => Ok(String::new()),
        Some(TextOr::Text(s)) => Ok(s),
        Some(TextOr::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(ProtoError::unsupported(what, format!("content part type {:?} (only text)", p.kind)));
                }
                out.push_str(p.text.as_deref().unwrap_or_default());
            }
            Ok(out)
        }
    }
}

fn user_part(p: InPart<'_>) -> Result<ContentPart, ProtoError> {
    match p.kind.as_ref() {
        "text" => Ok(ContentPart::Text { text: p.text.unwrap_or_default() }),
        "image_url" => {
            let image =
                p.image_url.ok_or_else(|| ProtoError::invalid("content part", "image_url part without image_url"))?;
            Ok(ContentPart::Image { source: wire::image_from_url(image.url) })
        }
        other => Err(ProtoError::unsupported(
            "user content part",
            format!("type {other:?} (flotilla translates text and image_url)"),
        )),
    }
}

fn parse_finish_reason(s: Option<&str>, has_calls: bool) -> StopReason {
    match s {
        Some("length") => StopReason::MaxTokens,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("content_filter") => StopReason::ContentFilter,
        Some("stop") => StopReason::EndTurn,
        _ if has_calls => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    }
}

fn finish_reason_str(r: StopReason) -> &'static str {
    match r {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter | StopReason::Refusal => "content_filter",
    }
}

// ---- Inbound wire shapes ----

#[derive(Deserialize)]
struct InRequest<'a> {
    model: String,
    #[serde(borrow)]
    messages: Vec<InMessage<'a>>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Option<TextOr<String>>,
    #[serde(borrow)]
    tools: Option<Vec<InTool<'a>>>,
    tool_choice: Option<InToolChoice>,
    stream: Option<bool>,
    user: Option<String>,
    safety_identifier: Option<String>,
    n: Option<u32>,
    #[serde(borrow)]
    response_format: Option<InTypeOnly<'a>>,
    logprobs: Option<bool>,
    modalities: Option<Vec<String>>,
    audio: Option<IgnoredAny>,
    functions: Option<IgnoredAny>,
    function_call: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct InTypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct InMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Option<TextOr<InPart<'a>>>,
    tool_calls: Option<Vec<InToolCall>>,
    tool_call_id: Option<String>,
    refusal: Option<String>,
    function_call: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct InPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    text: Option<String>,
    image_url: Option<InImageUrl>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct InImageUrl {
    url: String,
}

#[derive(Deserialize)]
struct InToolCall {
    id: String,
    function: InFunctionCall,
}

#[derive(Deserialize)]
struct InFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct InTool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    function: Option<InFunctionDef>,
}

#[derive(Deserialize)]
struct InFunctionDef {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InToolChoice {
    Mode(String),
    Named {
        #[serde(rename = "type")]
        kind: String,
        function: Option<InFunctionName>,
    },
}

#[derive(Deserialize)]
struct InFunctionName {
    name: String,
}

#[derive(Deserialize)]
struct InCompletion<'a> {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(borrow)]
    choices: Vec<InChoice<'a>>,
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
struct InChoice<'a> {
    #[serde(borrow)]
    message: InResponseMessage<'a>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct InResponseMessage<'a> {
    #[serde(borrow)]
    content: Option<TextOr<InPart<'a>>>,
    refusal: Option<String>,
    tool_calls: Option<Vec<InToolCall>>,
}

#[derive(Deserialize, Clone, Copy)]
struct InUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

impl From<InUsage> for Usage {
    fn from(u: InUsage) -> Self {
        Usage { input_tokens: u.prompt_tokens, output_tokens: u.completion_tokens }
    }
}

#[derive(Deserialize)]
struct InErrorEnvelope {
    error: Value,
}

#[derive(Deserialize)]
struct InChunk {
    id: Option<String>,
    model: Option<String>,
    choices: Option<Vec<InChunkChoice>>,
    usage: Option<InUsage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct InChunkChoice {
    index: Option<u32>,
    delta: Option<InChunkDelta>,
    finish_reason: Option<String>,
}

/// `reasoning_content` (DeepSeek, vLLM) and other extras are skipped: not canonical.
#[derive(Deserialize)]
struct InChunkDelta {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<InToolCallDelta>>,
}

#[derive(Deserialize)]
struct InToolCallDelta {
    index: Option<u32>,
    id: Option<String>,
    function: Option<InFunctionDelta>,
}

#[derive(Deserialize)]
struct InFunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

// ---- Outbound wire shapes ----

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_empty_slice<T>(s: &&[T]) -> bool {
    s.is_empty()
}

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    messages: OutMessages<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "is_empty_slice")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "OutTools::is_empty")]
    tools: OutTools<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "is_false")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OutStreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct OutStreamOptions {
    include_usage: bool,
}

struct OutMessages<'a> {
    system: Option<&'a str>,
    messages: &'a [Message],
}

impl Serialize for OutMessages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        if let Some(content) = self.system {
            seq.serialize_element(&OutMessage::System { content })?;
        }
        for m in self.messages {
            match m.role {
                Role::Assistant => {
                    let calls = OutToolCalls(&m.content);
                    let content = match wire::joined_text(&m.content) {
                        None if calls.is_empty() => Some(Cow::Borrowed("")),
                        t => t,
                    };
                    seq.serialize_element(&OutMessage::Assistant { content, tool_calls: calls })?;
                }
                Role::User => {
                    let mut rest: Vec<&ContentPart> = Vec::new();
                    for p in &m.content {
                        match p {
                            ContentPart::ToolResult { tool_use_id, content, .. } => {
                                seq.serialize_element(&OutMessage::Tool {
                                    tool_call_id: tool_use_id,
                                    content: OutToolContent(content),
                                })?;
                                rest.extend(content.iter().filter(|c| matches!(c, ContentPart::Image { .. })));
                            }
                            ContentPart::Text { .. } | ContentPart::Image { .. } => rest.push(p),
                            // A tool call in a user message has no meaning to send.
                            ContentPart::ToolUse { .. } => {}
                        }
                    }
                    if !rest.is_empty() {
                        seq.serialize_element(&OutMessage::User { content: OutUserContent(&rest) })?;
                    }
                }
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum OutMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: OutUserContent<'a>,
    },
    Assistant {
        content: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "OutToolCalls::is_empty")]
        tool_calls: OutToolCalls<'a>,
    },
    Tool {
        tool_call_id: &'a str,
        content: OutToolContent<'a>,
    },
}

struct OutUserContent<'a>(&'a [&'a ContentPart]);

impl Serialize for OutUserContent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            [ContentPart::Text { text }] => s.serialize_str(text),
            parts => s.collect_seq(parts.iter().filter_map(|p| OutPart::from_part(p))),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: OutImageUrl<'a> },
}

impl<'a> OutPart<'a> {
    fn from_part(p: &'a ContentPart) -> Option<Self> {
        match p {
            ContentPart::Text { text } => Some(OutPart::Text { text }),
            ContentPart::Image { source } => {
                Some(OutPart::ImageUrl { image_url: OutImageUrl { url: wire::image_url(source) } })
            }
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct OutImageUrl<'a> {
    url: Cow<'a, str>,
}

/// The text of a tool result (`tool` messages carry text only).
struct OutToolContent<'a>(&'a [ContentPart]);

impl Serialize for OutToolContent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let texts = || {
            self.0.iter().filter_map(|p| match p {
                ContentPart::Text { text } => Some(text),
                _ => None,
            })
        };
        match texts().count() {
            0 => s.serialize_str(""),
            1 => s.serialize_str(texts().next().map(String::as_str).unwrap_or_default()),
            _ => s.collect_seq(texts().map(|text| OutPart::Text { text })),
        }
    }
}

struct OutToolCalls<'a>(&'a [ContentPart]);

impl OutToolCalls<'_> {
    fn is_empty(&self) -> bool {
        !self.0.iter().any(|p| matches!(p, ContentPart::ToolUse { .. }))
    }
}

impl Serialize for OutToolCalls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Call<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            function: Function<'a>,
        }
        #[derive(Serialize)]
        struct Function<'a> {
            name: &'a str,
            arguments: String,
        }
        s.collect_seq(self.0.iter().filter_map(|p| match p {
            ContentPart::ToolUse { id, name, input } => Some(Call {
                id,
                kind: "function",
                function: Function { name, arguments: wire::tool_args_string(input) },
            }),
            _ => None,
        }))
    }
}

struct OutTools<'a>(&'a [ToolDef]);

impl OutTools<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for OutTools<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Tool<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            function: Function<'a>,
        }
        #[derive(Serialize)]
        struct Function<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            parameters: &'a Value,
        }
        s.collect_seq(self.0.iter().map(|t| Tool {
            kind: "function",
            function: Function { name: &t.name, description: t.description.as_deref(), parameters: &t.input_schema },
        }))
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutToolChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: OutFunctionName<'a>,
    },
}

#[derive(Serialize)]
struct OutFunctionName<'a> {
    name: &'a str,
}

impl<'a> From<&'a ToolChoice> for OutToolChoice<'a> {
    fn from(c: &'a ToolChoice) -> Self {
        match c {
            ToolChoice::Auto => OutToolChoice::Mode("auto"),
            ToolChoice::None => OutToolChoice::Mode("none"),
            ToolChoice::Any => OutToolChoice::Mode("required"),
            ToolChoice::Tool { name } => OutToolChoice::Named { kind: "function", function: OutFunctionName { name } },
        }
    }
}

#[derive(Serialize)]
struct OutCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [OutChoice<'a>; 1],
    usage: OutUsage,
}

#[derive(Serialize)]
struct OutChoice<'a> {
    index: u32,
    message: OutResponseMessage<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutResponseMessage<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    refusal: (),
    #[serde(skip_serializing_if = "OutToolCalls::is_empty")]
    tool_calls: OutToolCalls<'a>,
}

#[derive(Serialize, Clone, Copy)]
struct OutUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<Usage> for OutUsage {
    fn from(u: Usage) -> Self {
        OutUsage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.input_tokens.saturating_add(u.output_tokens),
        }
    }
}

#[derive(Serialize)]
struct OutErrorEnvelope<'a> {
    error: OutError<'a>,
}

#[derive(Serialize)]
struct OutError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: (),
    code: Option<&'static str>,
}

impl<'a> From<&'a ApiError> for OutError<'a> {
    fn from(err: &'a ApiError) -> Self {
        let (kind, code) = error_type_and_code(err.kind);
        OutError { message: &err.message, kind, param: (), code }
    }
}

#[derive(Serialize)]
struct OutChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [OutChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct OutChunkChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OutToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct OutToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutFunctionDelta<'a>,
}

#[derive(Serialize)]
struct OutFunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::ImageSource;
    use crate::test_util::{decode_split, sample_request, sample_response, sample_stream, sample_text_stream};

    // Built from the Chat Completions reference examples: a developer message, vision input,
    // parallel tool calls and their results.
    const REQUEST: &str = r#"{
      "model": "gpt-4.1",
      "messages": [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [
          {"type": "text", "text": "What's in this image, and what's the weather in Boston?"},
          {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg", "detail": "high"}},
          {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}}
        ]},
        {"role": "assistant", "content": null, "tool_calls": [
          {"id": "call_abc123", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Boston, MA\"}"}},
          {"id": "call_def456", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Madison, WI\", \"unit\": \"celsius\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "72F and sunny"},
        {"role": "tool", "tool_call_id": "call_def456", "content": [{"type": "text", "text": "18C"}, {"type": "text", "text": " and windy"}]},
        {"role": "user", "content": "Thanks"}
      ],
      "tools": [{
        "type": "function",
        "function": {
          "name": "get_current_weather",
          "description": "Get the current weather in a given location",
          "parameters": {
            "type": "object",
            "properties": {
              "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
              "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            },
            "required": ["location"]
          }
        }
      }],
      "tool_choice": "auto",
      "max_completion_tokens": 500,
      "temperature": 0.2,
      "stop": "END",
      "stream": true,
      "stream_options": {"include_usage": true},
      "parallel_tool_calls": true,
      "seed": 7,
      "user": "user-1234"
    }"#;

    #[test]
    fn parses_the_documented_request() {
        let r = parse_request(REQUEST.as_bytes()).unwrap();
        assert_eq!(r.model, "gpt-4.1");
        assert_eq!(r.system.as_deref(), Some("You are a helpful assistant.\n\nBe brief."));
        assert_eq!(r.max_tokens, Some(500));
        assert_eq!(r.stop, vec!["END".to_owned()]);
        assert!(r.stream);
        assert_eq!(r.user.as_deref(), Some("user-1234"));
        assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(r.tools[0].name, "get_current_weather");
        assert_eq!(r.messages.len(), 4);
        assert_eq!(
            r.messages[0].content[2],
            ContentPart::Image {
                source: ImageSource::Base64 {
                    media_type: "image/jpeg".to_owned(),
                    data: "/9j/4AAQSkZJRg==".to_owned()
                }
            }
        );
        assert_eq!(
            r.messages[1].content,
            vec![
                ContentPart::ToolUse {
                    id: "call_abc123".to_owned(),
                    name: "get_current_weather".to_owned(),
                    input: json!({"location": "Boston, MA"})
                },
                ContentPart::ToolUse {
                    id: "call_def456".to_owned(),
                    name: "get_current_weather".to_owned(),
                    input: json!({"location": "Madison, WI", "unit": "celsius"})
                },
            ]
        );
        // The two tool messages are one user message of tool results.
        assert_eq!(r.messages[2].role, Role::User);
        assert_eq!(
            r.messages[2].content,
            vec![
                ContentPart::ToolResult {
                    tool_use_id: "call_abc123".to_owned(),
                    content: vec![ContentPart::Text { text: "72F and sunny".to_owned() }],
                    is_error: false
                },
                ContentPart::ToolResult {
                    tool_use_id: "call_def456".to_owned(),
                    content: vec![
                        ContentPart::Text { text: "18C".to_owned() },
                        ContentPart::Text { text: " and windy".to_owned() }
                    ],
                    is_error: false
                },
            ]
        );
        assert_eq!(r.messages[3], Message::text(Role::User, "Thanks"));

        let legacy = r#"{"model":"m","max_tokens":9,"stop":["a","b"],"messages":[{"role":"user","content":"hi"}],
                         "tool_choice":{"type":"function","function":{"name":"f"}}}"#;
        let r = parse_request(legacy.as_bytes()).unwrap();
        assert_eq!(r.max_tokens, Some(9));
        assert_eq!(r.stop, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(r.tool_choice, Some(ToolChoice::Tool { name: "f".to_owned() }));
    }

    #[test]
    fn request_round_trips_through_encode() {
        let r1 = parse_request(REQUEST.as_bytes()).unwrap();
        let r2 = parse_request(&encode_request(&r1, &r1.model, r1.stream)).unwrap();
        assert_eq!(r1, r2);

        let mut sample = sample_request();
        sample.stop = vec!["STOP".to_owned(), "END".to_owned()];
        for choice in
            [ToolChoice::Auto, ToolChoice::Any, ToolChoice::None, ToolChoice::Tool { name: "get_weather".to_owned() }]
        {
            sample.tool_choice = Some(choice);
            let back = parse_request(&encode_request(&sample, "agent-1", true)).unwrap();
            assert_eq!(back, sample);
        }
    }

    #[test]
    fn encode_request_has_the_openai_shape() {
        let mut req = sample_request();
        // A tool that returned an image: tool messages carry text only, so the image
        // follows in a user message after all the tool messages.
        if let ContentPart::ToolResult { content, .. } = &mut req.messages[2].content[0] {
            content.push(ContentPart::Image {
                source: ImageSource::Url { url: "https://example.com/chart.png".to_owned() },
            });
        }
        let body: Value = serde_json::from_slice(&encode_request(&req, "gpt-5.3-codex", true)).unwrap();
        assert_eq!(body["model"], "gpt-5.3-codex");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["max_completion_tokens"], 512);
        assert!(body.get("max_tokens").is_none());
        let msgs = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "tool", "user", "assistant", "user"]);
        assert_eq!(msgs[0]["content"], "You are terse.\n\nAnswer in English.");
        assert_eq!(
            msgs[1]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}})
        );
        assert_eq!(msgs[1]["content"][2]["image_url"]["url"], "data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(msgs[2]["content"], "Checking.");
        assert_eq!(
            msgs[2]["tool_calls"][0],
            json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}})
        );
        assert_eq!(msgs[3], json!({"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"}));
        assert_eq!(
            msgs[5]["content"],
            json!([{"type": "image_url", "image_url": {"url": "https://example.com/chart.png"}}])
        );
        assert_eq!(msgs[7]["content"], "Thanks!");
        assert_eq!(
            body["tools"][0],
            json!({"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a given location",
                   "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}})
        );
        assert_eq!(body["tool_choice"], "auto");

        let plain = encode_request_with(
            &req,
            "qwen3-8b",
            false,
            &RequestOptions { max_tokens_field: MaxTokensField::MaxTokens },
        );
        let v: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(v["max_tokens"], 512);
        assert!(v.get("max_completion_tokens").is_none());
        assert!(v.get("stream").is_none() && v.get("stream_options").is_none());
    }

    #[test]
    fn invalid_tool_arguments_survive_a_round_trip() {
        let body = r#"{"model":"m","messages":[{"role":"assistant","content":"","tool_calls":[
            {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\": tru"}}]}]}"#;
        let r = parse_request(body.as_bytes()).unwrap();
        assert_eq!(
            r.messages[0].content,
            vec![ContentPart::ToolUse {
                id: "c1".to_owned(),
                name: "f".to_owned(),
                input: Value::String("{\"a\": tru".to_owned())
            }]
        );
        let v: Value = serde_json::from_slice(&encode_request(&r, "m", false)).unwrap();
        assert_eq!(v["messages"][0]["tool_calls"][0]["function"]["arguments"], "{\"a\": tru");
        assert_eq!(v["messages"][0]["content"], Value::Null);
    }

    #[test]
    fn rejects_what_cannot_be_translated() {
        let user = r#"[{"role":"user","content":"hi"}]"#;
        let cases = [
            format!(r#"{{"model":"m","n":2,"messages":{user}}}"#),
            format!(r#"{{"model":"m","response_format":{{"type":"json_schema","json_schema":{{}}}},"messages":{user}}}"#),
            format!(r#"{{"model":"m","logprobs":true,"messages":{user}}}"#),
            format!(r#"{{"model":"m","modalities":["text","audio"],"messages":{user}}}"#),
            format!(r#"{{"model":"m","functions":[{{"name":"f"}}],"messages":{user}}}"#),
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]}"#.to_owned(),
            r#"{"model":"m","messages":[{"role":"function","name":"f","content":"x"}]}"#.to_owned(),
            format!(r#"{{"model":"m","tools":[{{"type":"custom","custom":{{"name":"x"}}}}],"messages":{user}}}"#),
        ];
        for body in &cases {
            assert!(matches!(parse_request(body.as_bytes()), Err(ProtoError::Unsupported { .. })), "{body}");
        }
        let fine =
            format!(r#"{{"model":"m","n":1,"response_format":{{"type":"text"}},"logprobs":false,"messages":{user}}}"#);
        assert!(parse_request(fine.as_bytes()).is_ok());
        for bad in [
            "[]",
            r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
        ] {
            assert!(matches!(parse_request(bad.as_bytes()), Err(ProtoError::Invalid { .. })), "{bad}");
        }
    }

    #[test]
    fn parses_the_documented_response() {
        let body = r#"{
          "id": "chatcmpl-abc123",
          "object": "chat.completion",
          "created": 1699896916,
          "model": "gpt-4o-mini",
          "choices": [{
            "index": 0,
            "message": {
              "role": "assistant",
              "content": null,
              "tool_calls": [{"id": "call_abc123", "type": "function",
                              "function": {"name": "get_current_weather", "arguments": "{\n\"location\": \"Boston, MA\"\n}"}}]
            },
            "logprobs": null,
            "finish_reason": "tool_calls"
          }],
          "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
                    "completion_tokens_details": {"reasoning_tokens": 0}}
        }"#;
        let r = parse_response(body.as_bytes()).unwrap();
        assert_eq!(r.id, "chatcmpl-abc123");
        assert_eq!(r.model, "gpt-4o-mini");
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        assert_eq!(r.usage, Usage { input_tokens: 82, output_tokens: 17 });
        assert_eq!(
            r.content,
            vec![ContentPart::ToolUse {
                id: "call_abc123".to_owned(),
                name: "get_current_weather".to_owned(),
                input: json!({"location": "Boston, MA"})
            }]
        );
        for (reason, expected) in [
            ("stop", StopReason::EndTurn),
            ("length", StopReason::MaxTokens),
            ("content_filter", StopReason::ContentFilter),
        ] {
            let body = json!({"id": "x", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": reason}]});
            let r = parse_response(body.to_string().as_bytes()).unwrap();
            assert_eq!(r.stop_reason, expected);
            assert_eq!(r.content, vec![ContentPart::Text { text: "hi".to_owned() }]);
        }
        assert!(parse_response(br#"{"id":"x","model":"m","choices":[]}"#).is_err());
    }

    #[test]
    fn response_round_trips_and_has_the_sdk_shape() {
        let resp = sample_response("chatcmpl-77");
        let bytes = encode_response(&resp);
        assert_eq!(parse_response(&bytes).unwrap(), resp);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["choices"][0]["message"]["content"], "Checking the weather.");
        assert_eq!(v["usage"], json!({"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}));

        let mut text_only = resp.clone();
        text_only.content.truncate(1);
        text_only.stop_reason = StopReason::MaxTokens;
        assert_eq!(parse_response(&encode_response(&text_only)).unwrap(), text_only);
        let v: Value = serde_json::from_slice(&encode_response(&text_only)).unwrap();
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    }

    #[test]
    fn error_bodies() {
        let v: Value =
            serde_json::from_slice(&encode_error(&ApiError::new(ErrorKind::RateLimit, "slow down"))).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
        );
        let v: Value = serde_json::from_slice(&encode_error(&ApiError::new(ErrorKind::InvalidRequest, "bad"))).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], Value::Null);

        let quota = br#"{"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#;
        let e = parse_error(quota).unwrap();
        assert_eq!(e.error_type, "insufficient_quota");
        assert!(e.is_quota_exhausted());
        let ctx = br#"{"error": {"message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#;
        let e = parse_error(ctx).unwrap();
        assert_eq!(e.error_type, "context_length_exceeded");
        assert!(e.is_context_too_long());
        let e = parse_error(br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":null}}"#).unwrap();
        assert_eq!(e.error_type, "invalid_request_error");
        let e = parse_error(br#"{"error":"model not loaded"}"#).unwrap();
        assert_eq!(e, UpstreamError::new("", "model not loaded"));
        assert!(parse_error(br#"{"detail":"Not Found"}"#).is_none());
        assert!(parse_error(b"Bad Gateway").is_none());
    }

    fn decode(bytes: &[u8], seed: u64) -> Result<(Vec<StreamEvent>, bool), DecodeError> {
        let mut d = StreamDecoder::new();
        let events = decode_split(bytes, seed, |ev| d.feed(ev))?;
        Ok((events, d.is_done()))
    }

    #[test]
    fn stream_round_trips_through_encoder_and_decoder() {
        // Chat chunks carry input tokens only at the end, so `Start` has none.
        for events in [sample_stream("chatcmpl-1", 0), sample_text_stream("chatcmpl-2", 0)] {
            let mut enc = StreamEncoder::new();
            let mut bytes = Vec::new();
            for ev in &events {
                enc.encode(ev, &mut bytes);
            }
            assert!(bytes.ends_with(b"data: [DONE]\n\n"));
            for seed in 0..20 {
                let (decoded, done) = decode(&bytes, seed).unwrap();
                assert_eq!(decoded, events, "seed {seed}");
                assert!(done);
            }
        }
    }

    #[test]
    fn encoder_writes_sdk_compatible_chunks() {
        let mut enc = StreamEncoder::new();
        let mut bytes = Vec::new();
        for ev in &sample_stream("msg_abc", 5) {
            enc.encode(ev, &mut bytes);
        }
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("event:"));
        let chunks: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["id"], "chatcmpl-abc");
            assert_eq!(c["model"], "model-x");
        }
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
        );
        assert_eq!(
            chunks[4]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "function": {"arguments": "{\"location\": \"Par"}})
        );
        assert_eq!(chunks[6]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        let n = chunks.len();
        assert_eq!(chunks[n - 2]["choices"][0]["delta"], json!({}));
        assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[n - 1]["choices"], json!([]));
        assert_eq!(chunks[n - 1]["usage"], json!({"prompt_tokens": 321, "completion_tokens": 45, "total_tokens": 366}));
    }

    #[test]
    fn decodes_real_upstream_streams() {
        // The reference streaming example.
        let text = concat!(
            "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (events, done) = decode(text.as_bytes(), 2).unwrap();
        assert!(done);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start { id: "chatcmpl-123".to_owned(), model: "gpt-4o-mini".to_owned(), input_tokens: 0 },
                StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
                StreamEvent::TextDelta { index: 0, text: "Hello".to_owned() },
                StreamEvent::BlockStop { index: 0 },
                StreamEvent::Finish { stop_reason: StopReason::EndTurn, usage: Usage::default() },
            ]
        );

        // Content and finish_reason in one chunk (vLLM, Ollama), two tool calls with their
        // arguments spread over chunks, and a usage chunk.
        let text = concat!(
            ": keep-alive\n\n",
            "data: {\"id\":\"c2\",\"model\":\"qwen3-8b\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"On it.\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c2\",\"model\":\"qwen3-8b\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c2\",\"model\":\"qwen3-8b\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"location\\\":\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c2\",\"model\":\"qwen3-8b\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c2\",\"model\":\"qwen3-8b\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c2\",\"model\":\"qwen3-8b\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":12,\"total_tokens\":62}}\n\n",
            "data: [DONE]\n\n",
        );
        let (events, done) = decode(text.as_bytes(), 9).unwrap();
        assert!(done);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start { id: "c2".to_owned(), model: "qwen3-8b".to_owned(), input_tokens: 0 },
                StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
                StreamEvent::TextDelta { index: 0, text: "On it.".to_owned() },
                StreamEvent::BlockStop { index: 0 },
                StreamEvent::BlockStart {
                    index: 1,
                    block: BlockKind::ToolUse { id: "call_a".to_owned(), name: "get_weather".to_owned() }
                },
                StreamEvent::ToolArgsDelta { index: 1, partial_json: "{\"location\":".to_owned() },
                StreamEvent::ToolArgsDelta { index: 1, partial_json: "\"Paris\"}".to_owned() },
                StreamEvent::BlockStop { index: 1 },
                StreamEvent::BlockStart {
                    index: 2,
                    block: BlockKind::ToolUse { id: "call_b".to_owned(), name: "get_time".to_owned() }
                },
                StreamEvent::ToolArgsDelta { index: 2, partial_json: "{}".to_owned() },
                StreamEvent::BlockStop { index: 2 },
                StreamEvent::Finish {
                    stop_reason: StopReason::ToolUse,
                    usage: Usage { input_tokens: 50, output_tokens: 12 }
                },
            ]
        );

        // Text and finish_reason in the same chunk.
        let text = concat!(
            "data: {\"id\":\"c3\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Bye\"},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n",
        );
        let (events, _) = decode(text.as_bytes(), 4).unwrap();
        assert_eq!(
            events[1..],
            [
                StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
                StreamEvent::TextDelta { index: 0, text: "Bye".to_owned() },
                StreamEvent::BlockStop { index: 0 },
                StreamEvent::Finish {
                    stop_reason: StopReason::MaxTokens,
                    usage: Usage { input_tokens: 3, output_tokens: 1 }
                },
            ]
        );
    }

    #[test]
    fn decoder_reports_errors() {
        let text = concat!(
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n",
            "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
        );
        match decode(text.as_bytes(), 1) {
            Err(DecodeError::Upstream(e)) => assert_eq!(e.error_type, "server_error"),
            other => panic!("expected upstream error, got {other:?}"),
        }
        let garbage = SseEvent { event: None, data: "{\"id\":\"c\",\"choices\":[".to_owned() };
        assert!(matches!(StreamDecoder::new().feed(&garbage), Err(DecodeError::Proto(_))));
        let not_json = SseEvent { event: None, data: "DONE".to_owned() };
        assert!(matches!(StreamDecoder::new().feed(&not_json), Err(DecodeError::Proto(_))));

        // Arguments for a call that is already closed cannot be put back in order.
        let mut d = StreamDecoder::new();
        let chunk = |calls: Value| SseEvent {
            event: None,
            data: json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": calls}}]})
                .to_string(),
        };
        d.feed(&chunk(json!([{"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}]))).unwrap();
        d.feed(&chunk(json!([{"index": 1, "id": "b", "function": {"name": "g", "arguments": ""}}]))).unwrap();
        assert!(matches!(
            d.feed(&chunk(json!([{"index": 0, "function": {"arguments": "{}"}}]))),
            Err(DecodeError::Proto(ProtoError::Unsupported { .. }))
        ));
    }

    #[test]
    fn stream_error_frame_is_an_error_line_without_done() {
        let mut enc = StreamEncoder::new();
        let mut bytes = Vec::new();
        enc.encode(&sample_text_stream("c", 0)[0], &mut bytes);
        let start = bytes.len();
        enc.encode_error(&ApiError::new(ErrorKind::Overloaded, "every candidate failed"), &mut bytes);
        let tail = std::str::from_utf8(&bytes[start..]).unwrap();
        assert!(!tail.contains("[DONE]"));
        match decode(&bytes, 3) {
            Err(DecodeError::Upstream(e)) => {
                assert_eq!(e, UpstreamError::new("server_overloaded", "every candidate failed"))
            }
            other => panic!("expected upstream error, got {other:?}"),
        }
    }

    #[test]
    fn cross_format_openai_request_to_anthropic_and_back() {
        let canonical = parse_request(REQUEST.as_bytes()).unwrap();
        let anthropic_body = crate::anthropic::encode_request(&canonical, "claude-opus-4-6", true);
        let v: Value = serde_json::from_slice(&anthropic_body).unwrap();
        assert_eq!(v["system"], "You are a helpful assistant.\n\nBe brief.");
        assert_eq!(v["max_tokens"], 500);
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(v["tools"][0]["input_schema"]["required"], json!(["location"]));
        assert_eq!(v["tool_choice"], json!({"type": "auto"}));
        assert_eq!(v["messages"][0]["content"][2]["source"]["type"], "base64");
        assert_eq!(v["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(v["messages"][1]["content"][0]["input"], json!({"location": "Boston, MA"}));
        assert_eq!(v["messages"][2]["role"], "user");
        assert_eq!(v["messages"][2]["content"][0]["type"], "tool_result");
        assert_eq!(v["messages"][2]["content"][1]["tool_use_id"], "call_def456");

        let via_anthropic = crate::anthropic::parse_request(&anthropic_body).unwrap();
        let expected = ChatRequest { model: "claude-opus-4-6".to_owned(), ..canonical.clone() };
        assert_eq!(via_anthropic, expected);

        let back = parse_request(&encode_request(&via_anthropic, "gpt-4.1", true)).unwrap();
        assert_eq!(back, canonical);
    }
}
