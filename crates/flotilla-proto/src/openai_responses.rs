//! The OpenAI Responses API wire format: client-side parsing/encoding and upstream-side encoding/decoding.
//!
//! Mapping to the canonical model: `instructions` and `system`/`developer` input messages
//! become [`ChatRequest::system`]; consecutive assistant items (messages and
//! `function_call`s) form one assistant message; `function_call_output` items become tool
//! results in a user message; `reasoning` items are dropped (they carry no instructions).
//! Going out, each canonical text block of an answer is one `message` output item, each tool
//! call one `function_call` item. Flotilla is stateless: requests go upstream with
//! `store: false` and `previous_response_id` is refused. The Responses API has no stop
//! sequences, so [`ChatRequest::stop`] is not sent to a Responses upstream.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::{DecodeError, UpstreamError};
use crate::openai_chat;
use crate::sse::{SseEvent, write_json_event};
use crate::wire::{self, EmptyArray, EmptyObject, TextOr};
use crate::{
    ApiError, BlockKind, ChatRequest, ChatResponse, ContentPart, ImageSource, Message, ProtoError, Role, StopReason,
    StreamEvent, ToolChoice, ToolDef, Usage,
};

/// Separator between `instructions` and merged `system`/`developer` input messages.
const SYSTEM_JOIN: &str = "\n\n";

/// The smallest `max_output_tokens` the Responses API accepts.
pub const MIN_OUTPUT_TOKENS: u32 = 16;

/// Parses a client's request body.
///
/// Rejected as unsupported: `previous_response_id`, `conversation`, `prompt` (server-side
/// state flotilla does not keep), `background`, structured `text.format`, built-in tools,
/// and input items other than messages, function calls, their outputs and reasoning.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ProtoError> {
    let raw: InRequest<'_> = serde_json::from_slice(body).map_err(|e| ProtoError::invalid("request", e))?;
    if raw.previous_response_id.is_some() || raw.conversation.is_some() {
        return Err(ProtoError::unsupported(
            "parameter",
            "previous_response_id/conversation (flotilla keeps no server-side state; send the whole conversation as input)",
        ));
    }
    if raw.prompt.is_some() {
        return Err(ProtoError::unsupported("parameter", "prompt templates"));
    }
    if raw.background == Some(true) {
        return Err(ProtoError::unsupported("parameter", "background mode"));
    }
    if let Some(format) = raw.text.as_ref().and_then(|t| t.format.as_ref())
        && format.kind != "text"
    {
        return Err(ProtoError::unsupported(
            "parameter",
            format!("text.format {:?} (structured output cannot be translated)", format.kind),
        ));
    }

    let mut system = raw.instructions.filter(|s| !s.is_empty());
    let mut messages: Vec<Message> = Vec::new();
    match raw.input {
        None => {}
        Some(TextOr::Text(text)) => messages.push(Message::text(Role::User, text)),
        Some(TextOr::Parts(items)) => {
            messages.reserve(items.len());
            for item in items {
                input_item(item, &mut system, &mut messages)?;
            }
        }
    }

    let mut tools = Vec::new();
    for t in raw.tools.unwrap_or_default() {
        if t.kind != "function" {
            return Err(ProtoError::unsupported(
                "tool",
                format!("type {:?} (only function tools; built-in tools cannot be translated)", t.kind),
            ));
        }
        tools.push(ToolDef {
            name: t.name.ok_or_else(|| ProtoError::invalid("tool", "function tool without name"))?,
            description: t.description,
            input_schema: t.parameters.unwrap_or_else(wire::empty_schema),
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
        Some(InToolChoice::Named { kind, name }) => {
            if kind != "function" {
                return Err(ProtoError::unsupported("tool_choice", format!("type {kind:?} (only function)")));
            }
            Some(ToolChoice::Tool {
                name: name.ok_or_else(|| ProtoError::invalid("tool_choice", "function choice without name"))?,
            })
        }
    };

    Ok(ChatRequest {
        model: raw.model,
        system,
        messages,
        max_tokens: raw.max_output_tokens,
        temperature: raw.temperature,
        top_p: raw.top_p,
        stop: Vec::new(),
        tools,
        tool_choice,
        stream: raw.stream.unwrap_or(false),
        user: raw.user.or(raw.safety_identifier),
    })
}

fn input_item(item: InItem<'_>, system: &mut Option<String>, messages: &mut Vec<Message>) -> Result<(), ProtoError> {
    match item.kind.as_deref().unwrap_or("message") {
        "message" => {
            let role = item.role.ok_or_else(|| ProtoError::invalid("input item", "message without role"))?;
            match role.as_ref() {
                "system" | "developer" => {
                    let text = match item.content {
                        None => String::new(),
                        Some(TextOr::Text(s)) => s,
                        Some(TextOr::Parts(parts)) => {
                            let mut out = String::new();
                            for p in parts {
                                match p.kind.as_ref() {
                                    "input_text" | "output_text" => out.push_str(p.text.as_deref().unwrap_or_default()),
                                    other => {
                                        return Err(ProtoError::unsupported(
                                            "system message content",
                                            format!("type {other:?} (only text)"),
                                        ));
                                    }
                                }
                            }
                            out
                        }
                    };
                    match system {
                        None => *system = Some(text),
                        Some(s) => {
                            s.push_str(SYSTEM_JOIN);
                            s.push_str(&text);
                        }
                    }
                }
                "user" => {
                    let content = match item.content {
                        None => Vec::new(),
                        Some(TextOr::Text(text)) => vec![ContentPart::Text { text }],
                        Some(TextOr::Parts(parts)) => {
                            let mut out = Vec::with_capacity(parts.len());
                            for p in parts {
                                out.push(input_part(p)?);
                            }
                            out
                        }
                    };
                    messages.push(Message { role: Role::User, content });
                }
                "assistant" => {
                    let mut content = Vec::new();
                    match item.content {
                        None => {}
                        Some(TextOr::Text(text)) => content.push(ContentPart::Text { text }),
                        Some(TextOr::Parts(parts)) => {
                            for p in parts {
                                let text = match p.kind.as_ref() {
                                    "output_text" | "input_text" => p.text,
                                    "refusal" => p.refusal,
                                    other => {
                                        return Err(ProtoError::unsupported(
                                            "assistant message content",
                                            format!("type {other:?}"),
                                        ));
                                    }
                                };
                                content.push(ContentPart::Text { text: text.unwrap_or_default() });
                            }
                        }
                    }
                    push_assistant(messages, content);
                }
                other => {
                    return Err(ProtoError::invalid("input item", format!("unknown role {other:?}")));
                }
            }
        }
        "function_call" => {
            let part = ContentPart::ToolUse {
                id: item.call_id.ok_or_else(|| ProtoError::invalid("function_call", "missing call_id"))?,
                name: item.name.ok_or_else(|| ProtoError::invalid("function_call", "missing name"))?,
                input: wire::parse_tool_args(item.arguments.unwrap_or_default()),
            };
            push_assistant(messages, vec![part]);
        }
        "function_call_output" => {
            let content = match item.output {
                None => Vec::new(),
                Some(TextOr::Text(text)) if text.is_empty() => Vec::new(),
                Some(TextOr::Text(text)) => vec![ContentPart::Text { text }],
                Some(TextOr::Parts(parts)) => {
                    let mut out = Vec::with_capacity(parts.len());
                    for p in parts {
                        out.push(input_part(p)?);
                    }
                    out
                }
            };
            let part = ContentPart::ToolResult {
                tool_use_id: item
                    .call_id
                    .ok_or_else(|| ProtoError::invalid("function_call_output", "missing call_id"))?,
                content,
                is_error: false,
            };
            match messages.last_mut() {
                Some(last) if wire::is_tool_results(last) => last.content.push(part),
                _ => messages.push(Message { role: Role::User, content: vec![part] }),
            }
        }
        // Reasoning of earlier turns (often encrypted) only helps the same OpenAI model
        // continue; it holds no instruction another model needs.
        "reasoning" => {}
        other => {
            return Err(ProtoError::unsupported(
                "input item",
                format!("type {other:?} (flotilla translates messages, function calls and their outputs)"),
            ));
        }
    }
    Ok(())
}

fn push_assistant(messages: &mut Vec<Message>, content: Vec<ContentPart>) {
    match messages.last_mut() {
        Some(last) if last.role == Role::Assistant => last.content.extend(content),
        _ => messages.push(Message { role: Role::Assistant, content }),
    }
}

fn input_part(p: InPart<'_>) -> Result<ContentPart, ProtoError> {
    match p.kind.as_ref() {
        "input_text" | "output_text" => Ok(ContentPart::Text { text: p.text.unwrap_or_default() }),
        "input_image" => match p.image_url {
            Some(url) => Ok(ContentPart::Image { source: wire::image_from_url(url) }),
            None => Err(ProtoError::unsupported("input_image", "images by file_id (only image_url)")),
        },
        other => Err(ProtoError::unsupported(
            "input content part",
            format!("type {other:?} (flotilla translates input_text and input_image)"),
        )),
    }
}

/// Encodes a complete answer for a client.
///
/// `MaxTokens` gives `status: "incomplete"` with reason `max_output_tokens`, `ContentFilter`
/// reason `content_filter`; everything else `status: "completed"`.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let id = wire::prefixed_id(&resp.id, "resp_");
    let base = id.strip_prefix("resp_").unwrap_or(&id);
    let mut output = Vec::new();
    let mut i = 0;
    while i < resp.content.len() {
        let n = output.len();
        match &resp.content[i] {
            ContentPart::Text { .. } => {
                let start = i;
                while i < resp.content.len() && matches!(resp.content[i], ContentPart::Text { .. }) {
                    i += 1;
                }
                output.push(OutItem::Message {
                    id: Cow::Owned(format!("msg_{base}_{n}")),
                    status: "completed",
                    role: "assistant",
                    content: OutTexts::Parts(&resp.content[start..i]),
                });
                continue;
            }
            ContentPart::ToolUse { id, name, input } => output.push(OutItem::FunctionCall {
                id: Cow::Owned(format!("fc_{base}_{n}")),
                call_id: id,
                name,
                arguments: Cow::Owned(wire::tool_args_string(input)),
                status: "completed",
            }),
            // Images and tool results never appear in an answer.
            _ => {}
        }
        i += 1;
    }
    let (status, incomplete) = status_for(resp.stop_reason);
    wire::to_vec(&OutResponse {
        id: &id,
        object: "response",
        created_at: wire::unix_now(),
        status,
        error: None,
        incomplete_details: incomplete.map(|reason| OutIncomplete { reason }),
        instructions: (),
        max_output_tokens: (),
        model: &resp.model,
        output: &output,
        parallel_tool_calls: true,
        previous_response_id: (),
        reasoning: OutReasoning { effort: (), summary: () },
        store: false,
        temperature: (),
        text: OutTextConfig { format: OutFormat { kind: "text" } },
        tool_choice: "auto",
        tools: EmptyArray,
        top_p: (),
        truncation: "disabled",
        usage: Some(OutUsage::from(resp.usage)),
        user: (),
        metadata: EmptyObject,
    })
}

/// Encodes an error body for a client (the HTTP status is `err.status`); the same body as
/// OpenAI Chat Completions.
pub fn encode_error(err: &ApiError) -> Vec<u8> {
    openai_chat::encode_error(err)
}

/// Encodes a request for an upstream of this format, naming `upstream_model`.
///
/// Function tools are sent with `strict: false` (the Responses API defaults to strict
/// schemas, which ordinary tool schemas fail); stop sequences cannot be sent.
pub fn encode_request(req: &ChatRequest, upstream_model: &str, stream: bool) -> Vec<u8> {
    wire::to_vec(&OutRequest {
        model: upstream_model,
        instructions: req.system.as_deref(),
        input: OutInput(&req.messages),
        tools: OutTools(&req.tools),
        tool_choice: req.tool_choice.as_ref().map(OutToolChoice::from),
        // The Responses API rejects caps below 16; a smaller cap from another format's client
        // is raised rather than turned into a 400 the caller never caused.
        max_output_tokens: req.max_tokens.map(|n| n.max(MIN_OUTPUT_TOKENS)),
        temperature: req.temperature,
        top_p: req.top_p,
        stream,
        store: false,
        user: req.user.as_deref(),
    })
}

/// Parses an upstream's complete answer.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ProtoError> {
    let raw: InResponse<'_> = serde_json::from_slice(body).map_err(|e| ProtoError::invalid("response", e))?;
    if raw.status.as_deref() == Some("failed") {
        let msg = raw.error.and_then(|e| e.message).unwrap_or_else(|| "no error message".to_owned());
        return Err(ProtoError::invalid("response", format!("status failed: {msg}")));
    }
    let mut content = Vec::new();
    let mut has_calls = false;
    let mut refused = false;
    for item in raw.output {
        match item.kind.as_ref() {
            "message" => {
                for p in item.content.into_iter().flatten() {
                    match p.kind.as_ref() {
                        "output_text" => content.push(ContentPart::Text { text: p.text.unwrap_or_default() }),
                        "refusal" => {
                            refused = true;
                            content.push(ContentPart::Text { text: p.refusal.unwrap_or_default() });
                        }
                        _ => {}
                    }
                }
            }
            "function_call" => {
                has_calls = true;
                content.push(ContentPart::ToolUse {
                    id: item.call_id.ok_or_else(|| ProtoError::invalid("response", "function_call without call_id"))?,
                    name: item.name.ok_or_else(|| ProtoError::invalid("response", "function_call without name"))?,
                    input: wire::parse_tool_args(item.arguments.unwrap_or_default()),
                });
            }
            // reasoning and built-in tool items carry nothing canonical.
            _ => {}
        }
    }
    let stop_reason = stop_reason(
        raw.status.as_deref(),
        raw.incomplete_details.as_ref().and_then(|d| d.reason.as_deref()),
        has_calls,
        refused,
    );
    Ok(ChatResponse {
        id: raw.id,
        model: raw.model,
        content,
        stop_reason,
        usage: raw.usage.map(Usage::from).unwrap_or_default(),
    })
}

/// Parses an upstream's error body, if it has this format's error shape (the OpenAI
/// `{"error":{...}}` body); `error_type` is `error.code` when set, else `error.type`.
pub fn parse_error(body: &[u8]) -> Option<UpstreamError> {
    openai_chat::parse_error(body)
}

fn stop_reason(status: Option<&str>, incomplete_reason: Option<&str>, has_calls: bool, refused: bool) -> StopReason {
    if status == Some("incomplete") {
        match incomplete_reason {
            Some("max_output_tokens") => return StopReason::MaxTokens,
            Some("content_filter") => return StopReason::ContentFilter,
            _ => {}
        }
    }
    if has_calls {
        StopReason::ToolUse
    } else if refused {
        StopReason::Refusal
    } else {
        StopReason::EndTurn
    }
}

fn status_for(r: StopReason) -> (&'static str, Option<&'static str>) {
    match r {
        StopReason::MaxTokens => ("incomplete", Some("max_output_tokens")),
        StopReason::ContentFilter => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// Turns canonical stream events into this format's SSE frames for a client.
///
/// Each canonical text block becomes a `message` output item with one `output_text` part
/// (`output_item.added`, `content_part.added`, `output_text.delta`s, `output_text.done`,
/// `content_part.done`, `output_item.done`); each tool block a `function_call` item. `Start`
/// gives `response.created` and `response.in_progress`; `Finish` gives `response.completed`
/// (or `response.incomplete`) with the whole response and usage.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    id: String,
    model: String,
    created_at: u64,
    seq: u64,
    started: bool,
    items: Vec<ItemState>,
    /// The canonical index of the open block and its position in `items`.
    open: Option<(u32, usize)>,
}

#[derive(Debug)]
enum ItemState {
    Message { id: String, text: String, done: bool },
    FunctionCall { id: String, call_id: String, name: String, arguments: String, done: bool },
}

impl ItemState {
    fn out(&self) -> OutItem<'_> {
        match self {
            ItemState::Message { id, text, done } => OutItem::Message {
                id: Cow::Borrowed(id),
                status: if *done { "completed" } else { "in_progress" },
                role: "assistant",
                content: OutTexts::One(text),
            },
            ItemState::FunctionCall { id, call_id, name, arguments, done } => OutItem::FunctionCall {
                id: Cow::Borrowed(id),
                call_id,
                name,
                arguments: Cow::Borrowed(arguments),
                status: if *done { "completed" } else { "in_progress" },
            },
        }
    }
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
            StreamEvent::Start { .. } => {}
            StreamEvent::BlockStart { index, block } => {
                self.close_open(out);
                let n = self.items.len();
                let base = self.id.strip_prefix("resp_").unwrap_or(&self.id);
                let item = match block {
                    BlockKind::Text => {
                        ItemState::Message { id: format!("msg_{base}_{n}"), text: String::new(), done: false }
                    }
                    BlockKind::ToolUse { id, name } => ItemState::FunctionCall {
                        id: format!("fc_{base}_{n}"),
                        call_id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                        done: false,
                    },
                };
                self.items.push(item);
                self.open = Some((*index, n));
                let seq = self.bump();
                let part_seq = match block {
                    BlockKind::Text => self.bump(),
                    BlockKind::ToolUse { .. } => seq,
                };
                let item = &self.items[n];
                write_json_event(
                    out,
                    Some("response.output_item.added"),
                    &OutEvent::OutputItemAdded { sequence_number: seq, output_index: n, item: item.out() },
                );
                if let ItemState::Message { id, .. } = item {
                    let seq = part_seq;
                    write_json_event(
                        out,
                        Some("response.content_part.added"),
                        &OutEvent::ContentPartAdded {
                            sequence_number: seq,
                            item_id: id,
                            output_index: n,
                            content_index: 0,
                            part: OutTextPart::new(""),
                        },
                    );
                }
            }
            StreamEvent::TextDelta { index, text } => {
                let Some(n) = self.open_item(*index) else {
                    return;
                };
                let seq = self.bump();
                if let ItemState::Message { id, text: acc, .. } = &mut self.items[n] {
                    acc.push_str(text);
                    write_json_event(
                        out,
                        Some("response.output_text.delta"),
                        &OutEvent::OutputTextDelta {
                            sequence_number: seq,
                            item_id: id,
                            output_index: n,
                            content_index: 0,
                            delta: text,
                            logprobs: EmptyArray,
                        },
                    );
                }
            }
            StreamEvent::ToolArgsDelta { index, partial_json } => {
                let Some(n) = self.open_item(*index) else {
                    return;
                };
                let seq = self.bump();
                if let ItemState::FunctionCall { id, arguments, .. } = &mut self.items[n] {
                    arguments.push_str(partial_json);
                    write_json_event(
                        out,
                        Some("response.function_call_arguments.delta"),
                        &OutEvent::FunctionCallArgumentsDelta {
                            sequence_number: seq,
                            item_id: id,
                            output_index: n,
                            delta: partial_json,
                        },
                    );
                }
            }
            StreamEvent::BlockStop { index } => {
                if self.open.is_some_and(|(open, _)| open == *index) {
                    self.close_open(out);
                }
            }
            StreamEvent::Finish { stop_reason, usage } => {
                self.close_open(out);
                let (status, incomplete) = status_for(*stop_reason);
                let name = if incomplete.is_some() { "response.incomplete" } else { "response.completed" };
                let seq = self.bump();
                let output: Vec<OutItem<'_>> = self.items.iter().map(ItemState::out).collect();
                let response = self.response(
                    status,
                    incomplete.map(|reason| OutIncomplete { reason }),
                    None,
                    &output,
                    Some(OutUsage::from(*usage)),
                );
                let event = if incomplete.is_some() {
                    OutEvent::Incomplete { sequence_number: seq, response }
                } else {
                    OutEvent::Completed { sequence_number: seq, response }
                };
                write_json_event(out, Some(name), &event);
            }
        }
    }

    /// Appends the frames that end the stream with an error, as this format does it: an
    /// `error` event, then `response.failed` carrying the same code and message.
    pub fn encode_error(&mut self, err: &ApiError, out: &mut Vec<u8>) {
        let (kind, code) = openai_chat::error_type_and_code(err.kind);
        let code = code.unwrap_or(kind);
        let seq = self.bump();
        write_json_event(
            out,
            Some("error"),
            &OutEvent::Error { sequence_number: seq, code, message: &err.message, param: () },
        );
        let seq = self.bump();
        let output: Vec<OutItem<'_>> = self.items.iter().map(ItemState::out).collect();
        let response = self.response("failed", None, Some(OutRespError { code, message: &err.message }), &output, None);
        write_json_event(out, Some("response.failed"), &OutEvent::Failed { sequence_number: seq, response });
    }

    fn bump(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    fn open_item(&self, index: u32) -> Option<usize> {
        match self.open {
            Some((open, n)) if open == index => Some(n),
            _ => None,
        }
    }

    fn response<'a>(
        &'a self,
        status: &'static str,
        incomplete_details: Option<OutIncomplete>,
        error: Option<OutRespError<'a>>,
        output: &'a [OutItem<'a>],
        usage: Option<OutUsage>,
    ) -> OutResponse<'a> {
        OutResponse {
            id: &self.id,
            object: "response",
            created_at: self.created_at,
            status,
            error,
            incomplete_details,
            instructions: (),
            max_output_tokens: (),
            model: &self.model,
            output,
            parallel_tool_calls: true,
            previous_response_id: (),
            reasoning: OutReasoning { effort: (), summary: () },
            store: false,
            temperature: (),
            text: OutTextConfig { format: OutFormat { kind: "text" } },
            tool_choice: "auto",
            tools: EmptyArray,
            top_p: (),
            truncation: "disabled",
            usage,
            user: (),
            metadata: EmptyObject,
        }
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        self.started = true;
        self.id = wire::prefixed_id(id, "resp_");
        self.model = model.to_owned();
        self.created_at = wire::unix_now();
        let seq = self.bump();
        write_json_event(
            out,
            Some("response.created"),
            &OutEvent::Created { sequence_number: seq, response: self.response("in_progress", None, None, &[], None) },
        );
        let seq = self.bump();
        write_json_event(
            out,
            Some("response.in_progress"),
            &OutEvent::InProgress {
                sequence_number: seq,
                response: self.response("in_progress", None, None, &[], None),
            },
        );
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        let Some((_, n)) = self.open.take() else {
            return;
        };
        // A message closes with three events, a function call with two.
        let s1 = self.seq;
        let (s2, s3) = (s1 + 1, s1 + 2);
        self.seq += match &mut self.items[n] {
            ItemState::Message { done, .. } => {
                *done = true;
                3
            }
            ItemState::FunctionCall { done, .. } => {
                *done = true;
                2
            }
        };
        let item = &self.items[n];
        match item {
            ItemState::Message { id, text, .. } => {
                write_json_event(
                    out,
                    Some("response.output_text.done"),
                    &OutEvent::OutputTextDone {
                        sequence_number: s1,
                        item_id: id,
                        output_index: n,
                        content_index: 0,
                        text,
                        logprobs: EmptyArray,
                    },
                );
                write_json_event(
                    out,
                    Some("response.content_part.done"),
                    &OutEvent::ContentPartDone {
                        sequence_number: s2,
                        item_id: id,
                        output_index: n,
                        content_index: 0,
                        part: OutTextPart::new(text),
                    },
                );
                write_json_event(
                    out,
                    Some("response.output_item.done"),
                    &OutEvent::OutputItemDone { sequence_number: s3, output_index: n, item: item.out() },
                );
            }
            ItemState::FunctionCall { id, name, arguments, .. } => {
                write_json_event(
                    out,
                    Some("response.function_call_arguments.done"),
                    &OutEvent::FunctionCallArgumentsDone {
                        sequence_number: s1,
                        item_id: id,
                        output_index: n,
                        name,
                        arguments,
                    },
                );
                write_json_event(
                    out,
                    Some("response.output_item.done"),
                    &OutEvent::OutputItemDone { sequence_number: s2, output_index: n, item: item.out() },
                );
            }
        }
    }
}

/// Turns an upstream's SSE events of this format into canonical stream events.
///
/// Each `output_text` (or `refusal`) content part becomes a text block, each `function_call`
/// item a tool block; reasoning and built-in tool items are skipped. `response.completed`
/// and `response.incomplete` give `Finish`; `response.failed` and `error` give
/// [`DecodeError::Upstream`].
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    open: Option<OpenBlock>,
    next_index: u32,
    /// Output indexes of function calls already turned into blocks.
    seen_calls: Vec<u32>,
    refused: bool,
    done: bool,
}

#[derive(Debug, Clone, Copy)]
struct OpenBlock {
    output_index: u32,
    /// `None` for a function call.
    content_index: Option<u32>,
    index: u32,
    /// Whether any delta was emitted (else the `.done` event's full text is used).
    streamed: bool,
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
        let data = ev.data.as_bytes();
        let peeked;
        let kind: &str = match ev.event.as_deref() {
            Some(k) => k,
            None => {
                peeked = serde_json::from_slice::<TypePeek<'_>>(data).map_err(invalid_event)?;
                peeked.kind.as_ref()
            }
        };
        match kind {
            "response.created" | "response.in_progress" | "response.queued" if !self.started => {
                let e: InResponseEvent<'_> = serde_json::from_slice(data).map_err(invalid_event)?;
                self.ensure_started(e.response.id, e.response.model, out);
            }
            "response.output_item.added" => {
                let e: InItemEvent<'_> = serde_json::from_slice(data).map_err(invalid_event)?;
                if e.item.kind.as_deref() == Some("function_call") {
                    self.open_call(e.output_index, e.item, out);
                }
            }
            "response.content_part.added" => {
                let e: InPartEvent<'_> = serde_json::from_slice(data).map_err(invalid_event)?;
                if matches!(e.part.kind.as_ref(), "output_text" | "refusal") {
                    self.refused |= e.part.kind == "refusal";
                    self.open_text(e.output_index, e.content_index, out);
                    let text = e.part.text.or(e.part.refusal).filter(|t| !t.is_empty());
                    if let Some(text) = text {
                        self.text(text, out);
                    }
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                let e: InDeltaEvent = serde_json::from_slice(data).map_err(invalid_event)?;
                self.refused |= kind == "response.refusal.delta";
                if !self.is_open(e.output_index, Some(e.content_index.unwrap_or(0))) {
                    // Some servers skip `content_part.added`.
                    self.open_text(e.output_index, e.content_index.unwrap_or(0), out);
                }
                if let Some(delta) = e.delta.filter(|d| !d.is_empty()) {
                    self.text(delta, out);
                }
            }
            "response.output_text.done" | "response.refusal.done" => {
                let e: InDoneEvent = serde_json::from_slice(data).map_err(invalid_event)?;
                if self.is_open(e.output_index, Some(e.content_index.unwrap_or(0)))
                    && let Some(text) = e.text.or(e.refusal).filter(|t| !t.is_empty())
                    && !self.open.is_some_and(|o| o.streamed)
                {
                    self.text(text, out);
                }
            }
            "response.content_part.done" => {
                let e: InDoneEvent = serde_json::from_slice(data).map_err(invalid_event)?;
                if self.is_open(e.output_index, Some(e.content_index.unwrap_or(0))) {
                    self.close_open(out);
                }
            }
            "response.function_call_arguments.delta" => {
                let e: InDeltaEvent = serde_json::from_slice(data).map_err(invalid_event)?;
                if !self.is_open(e.output_index, None) {
                    return Err(DecodeError::Proto(ProtoError::invalid(
                        "openai responses stream event",
                        format!("arguments for output item {}, which is not an open function call", e.output_index),
                    )));
                }
                if let Some(delta) = e.delta.filter(|d| !d.is_empty()) {
                    self.args(delta, out);
                }
            }
            "response.function_call_arguments.done" => {
                let e: InDoneEvent = serde_json::from_slice(data).map_err(invalid_event)?;
                if self.is_open(e.output_index, None)
                    && !self.open.is_some_and(|o| o.streamed)
                    && let Some(args) = e.arguments.filter(|a| !a.is_empty())
                {
                    self.args(args, out);
                }
            }
            "response.output_item.done" => {
                let e: InItemEvent<'_> = serde_json::from_slice(data).map_err(invalid_event)?;
                if e.item.kind.as_deref() == Some("function_call") && !self.seen_calls.contains(&e.output_index) {
                    // A server that sends the call only when done.
                    self.open_call(e.output_index, e.item, out);
                    self.close_open(out);
                } else if self.open.is_some_and(|o| o.output_index == e.output_index) {
                    if self.is_open(e.output_index, None)
                        && !self.open.is_some_and(|o| o.streamed)
                        && let Some(args) = e.item.arguments.filter(|a| !a.is_empty())
                    {
                        self.args(args, out);
                    }
                    self.close_open(out);
                }
            }
            "response.completed" | "response.incomplete" => {
                let e: InFinalEvent<'_> = serde_json::from_slice(data).map_err(invalid_event)?;
                let r = e.response;
                self.ensure_started(r.id, r.model, out);
                self.close_open(out);
                self.done = true;
                let has_calls = r.output.iter().any(|i| i.kind == "function_call");
                out.push(StreamEvent::Finish {
                    stop_reason: stop_reason(
                        r.status.as_deref(),
                        r.incomplete_details.as_ref().and_then(|d| d.reason.as_deref()),
                        has_calls,
                        self.refused,
                    ),
                    usage: r.usage.map(Usage::from).unwrap_or_default(),
                });
            }
            "response.failed" => {
                self.done = true;
                let err = serde_json::from_slice::<InFailedEvent>(data)
                    .ok()
                    .and_then(|e| e.response.error)
                    .map(|e| UpstreamError {
                        error_type: e.code.unwrap_or_else(|| "response_failed".to_owned()),
                        message: e.message.unwrap_or_default(),
                    })
                    .unwrap_or_else(|| UpstreamError::new("response_failed", ev.data.clone()));
                return Err(DecodeError::Upstream(err));
            }
            "error" => {
                let err = serde_json::from_slice::<InErrorEvent>(data)
                    .ok()
                    .and_then(|e| match e.error {
                        Some(inner) => openai_chat::upstream_error(inner),
                        None => Some(UpstreamError {
                            error_type: e.code.unwrap_or_else(|| "error".to_owned()),
                            message: e.message.unwrap_or_default(),
                        }),
                    })
                    .unwrap_or_else(|| UpstreamError::new("error", ev.data.clone()));
                return Err(DecodeError::Upstream(err));
            }
            // Reasoning summaries, built-in tool progress, annotations, new event types.
            _ => {}
        }
        Ok(())
    }

    /// True once the upstream's terminal event (`response.completed`, `response.incomplete`
    /// or `response.failed`) was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn ensure_started(&mut self, id: String, model: String, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { id, model, input_tokens: 0 });
        }
    }

    fn is_open(&self, output_index: u32, content_index: Option<u32>) -> bool {
        self.open.is_some_and(|o| o.output_index == output_index && o.content_index == content_index)
    }

    fn open_text(&mut self, output_index: u32, content_index: u32, out: &mut Vec<StreamEvent>) {
        self.ensure_started(String::new(), String::new(), out);
        self.close_open(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some(OpenBlock { output_index, content_index: Some(content_index), index, streamed: false });
        out.push(StreamEvent::BlockStart { index, block: BlockKind::Text });
    }

    fn open_call(&mut self, output_index: u32, item: InItem<'_>, out: &mut Vec<StreamEvent>) {
        self.ensure_started(String::new(), String::new(), out);
        self.close_open(out);
        self.seen_calls.push(output_index);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some(OpenBlock { output_index, content_index: None, index, streamed: false });
        out.push(StreamEvent::BlockStart {
            index,
            block: BlockKind::ToolUse {
                id: item.call_id.or(item.id).unwrap_or_default(),
                name: item.name.unwrap_or_default(),
            },
        });
        if let Some(args) = item.arguments.filter(|a| !a.is_empty()) {
            self.args(args, out);
        }
    }

    fn text(&mut self, text: String, out: &mut Vec<StreamEvent>) {
        if let Some(open) = &mut self.open {
            open.streamed = true;
            out.push(StreamEvent::TextDelta { index: open.index, text });
        }
    }

    fn args(&mut self, partial_json: String, out: &mut Vec<StreamEvent>) {
        if let Some(open) = &mut self.open {
            open.streamed = true;
            out.push(StreamEvent::ToolArgsDelta { index: open.index, partial_json });
        }
    }

    fn close_open(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(open) = self.open.take() {
            out.push(StreamEvent::BlockStop { index: open.index });
        }
    }
}

fn invalid_event(e: serde_json::Error) -> DecodeError {
    DecodeError::Proto(ProtoError::invalid("openai responses stream event", e))
}

// ---- Inbound wire shapes ----

#[derive(Deserialize)]
struct InRequest<'a> {
    model: String,
    instructions: Option<String>,
    #[serde(borrow)]
    input: Option<TextOr<InItem<'a>>>,
    #[serde(borrow)]
    tools: Option<Vec<InTool<'a>>>,
    tool_choice: Option<InToolChoice>,
    max_output_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stream: Option<bool>,
    user: Option<String>,
    safety_identifier: Option<String>,
    previous_response_id: Option<String>,
    conversation: Option<IgnoredAny>,
    prompt: Option<IgnoredAny>,
    background: Option<bool>,
    #[serde(borrow)]
    text: Option<InTextConfig<'a>>,
}

#[derive(Deserialize)]
struct InTextConfig<'a> {
    #[serde(borrow)]
    format: Option<InTypeOnly<'a>>,
}

#[derive(Deserialize)]
struct InTypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct InItem<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<TextOr<InPart<'a>>>,
    id: Option<String>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
    #[serde(borrow)]
    output: Option<TextOr<InPart<'a>>>,
}

#[derive(Deserialize)]
struct InPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    text: Option<String>,
    image_url: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct InTool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    name: Option<String>,
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
        name: Option<String>,
    },
}

#[derive(Deserialize)]
struct InResponse<'a> {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    output: Vec<InOutputItem<'a>>,
    usage: Option<InUsage>,
    incomplete_details: Option<InIncomplete>,
    error: Option<InRespError>,
}

#[derive(Deserialize)]
struct InOutputItem<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    content: Option<Vec<InOutputPart<'a>>>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct InOutputPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    text: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct InUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
}

impl From<InUsage> for Usage {
    fn from(u: InUsage) -> Self {
        Usage { input_tokens: u.input_tokens, output_tokens: u.output_tokens }
    }
}

#[derive(Deserialize)]
struct InIncomplete {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct InRespError {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct TypePeek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct InResponseEvent<'a> {
    #[serde(borrow)]
    response: InResponseHead<'a>,
}

#[derive(Deserialize)]
struct InResponseHead<'a> {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    output: Vec<InTypeOnly<'a>>,
    usage: Option<InUsage>,
    incomplete_details: Option<InIncomplete>,
}

#[derive(Deserialize)]
struct InFinalEvent<'a> {
    #[serde(borrow)]
    response: InResponseHead<'a>,
}

#[derive(Deserialize)]
struct InFailedEvent {
    response: InFailedResponse,
}

#[derive(Deserialize)]
struct InFailedResponse {
    error: Option<InRespError>,
}

#[derive(Deserialize)]
struct InErrorEvent {
    code: Option<String>,
    message: Option<String>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct InItemEvent<'a> {
    output_index: u32,
    #[serde(borrow)]
    item: InItem<'a>,
}

#[derive(Deserialize)]
struct InPartEvent<'a> {
    output_index: u32,
    content_index: u32,
    #[serde(borrow)]
    part: InOutputPart<'a>,
}

#[derive(Deserialize)]
struct InDeltaEvent {
    output_index: u32,
    content_index: Option<u32>,
    delta: Option<String>,
}

#[derive(Deserialize)]
struct InDoneEvent {
    output_index: u32,
    content_index: Option<u32>,
    text: Option<String>,
    refusal: Option<String>,
    arguments: Option<String>,
}

// ---- Outbound wire shapes ----

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a str>,
    input: OutInput<'a>,
    #[serde(skip_serializing_if = "OutTools::is_empty")]
    tools: OutTools<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "is_false")]
    stream: bool,
    store: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

struct OutInput<'a>(&'a [Message]);

impl Serialize for OutInput<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for m in self.0 {
            match m.role {
                Role::User => {
                    let mut others = 0;
                    for p in &m.content {
                        match p {
                            ContentPart::ToolResult { tool_use_id, content, .. } => {
                                seq.serialize_element(&OutInputItem::FunctionCallOutput {
                                    call_id: tool_use_id,
                                    output: OutToolOutput(content),
                                })?
                            }
                            ContentPart::Text { .. } | ContentPart::Image { .. } => others += 1,
                            ContentPart::ToolUse { .. } => {}
                        }
                    }
                    if others > 0 {
                        seq.serialize_element(&OutInputItem::Message {
                            role: "user",
                            content: OutInputParts(&m.content),
                        })?;
                    }
                }
                Role::Assistant => {
                    let mut i = 0;
                    while i < m.content.len() {
                        match &m.content[i] {
                            ContentPart::Text { .. } => {
                                let start = i;
                                while i < m.content.len() && matches!(m.content[i], ContentPart::Text { .. }) {
                                    i += 1;
                                }
                                seq.serialize_element(&OutInputItem::AssistantMessage {
                                    role: "assistant",
                                    content: OutTexts::Parts(&m.content[start..i]),
                                })?;
                                continue;
                            }
                            ContentPart::ToolUse { id, name, input } => {
                                seq.serialize_element(&OutInputItem::FunctionCall {
                                    call_id: id,
                                    name,
                                    arguments: wire::tool_args_string(input),
                                })?
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                }
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutInputItem<'a> {
    Message {
        role: &'static str,
        content: OutInputParts<'a>,
    },
    #[serde(rename = "message")]
    AssistantMessage {
        role: &'static str,
        content: OutTexts<'a>,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: String,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: OutToolOutput<'a>,
    },
}

/// The text and image parts of a user message as `input_text`/`input_image`.
struct OutInputParts<'a>(&'a [ContentPart]);

impl Serialize for OutInputParts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().filter_map(OutInputPart::from_part))
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutInputPart<'a> {
    InputText { text: &'a str },
    InputImage { image_url: Cow<'a, str>, detail: &'static str },
}

impl<'a> OutInputPart<'a> {
    fn from_part(p: &'a ContentPart) -> Option<Self> {
        match p {
            ContentPart::Text { text } => Some(OutInputPart::InputText { text }),
            ContentPart::Image { source } => {
                Some(OutInputPart::InputImage { image_url: image_url(source), detail: "auto" })
            }
            _ => None,
        }
    }
}

fn image_url(source: &ImageSource) -> Cow<'_, str> {
    wire::image_url(source)
}

/// A tool result's `output`: a string when it is one text, else a list of input parts.
struct OutToolOutput<'a>(&'a [ContentPart]);

impl Serialize for OutToolOutput<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            [] => s.serialize_str(""),
            [ContentPart::Text { text }] => s.serialize_str(text),
            parts => s.collect_seq(parts.iter().filter_map(OutInputPart::from_part)),
        }
    }
}

/// `output_text` parts, from a run of canonical text parts or one accumulated string.
enum OutTexts<'a> {
    Parts(&'a [ContentPart]),
    One(&'a str),
}

impl Serialize for OutTexts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OutTexts::One(text) => s.collect_seq(std::iter::once(OutTextPart::new(text))),
            OutTexts::Parts(parts) => s.collect_seq(parts.iter().filter_map(|p| match p {
                ContentPart::Text { text } => Some(OutTextPart::new(text)),
                _ => None,
            })),
        }
    }
}

#[derive(Serialize)]
struct OutTextPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: EmptyArray,
}

impl<'a> OutTextPart<'a> {
    fn new(text: &'a str) -> Self {
        OutTextPart { kind: "output_text", text, annotations: EmptyArray }
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
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            parameters: &'a Value,
            strict: bool,
        }
        s.collect_seq(self.0.iter().map(|t| Tool {
            kind: "function",
            name: &t.name,
            description: t.description.as_deref(),
            parameters: &t.input_schema,
            strict: false,
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
        name: &'a str,
    },
}

impl<'a> From<&'a ToolChoice> for OutToolChoice<'a> {
    fn from(c: &'a ToolChoice) -> Self {
        match c {
            ToolChoice::Auto => OutToolChoice::Mode("auto"),
            ToolChoice::None => OutToolChoice::Mode("none"),
            ToolChoice::Any => OutToolChoice::Mode("required"),
            ToolChoice::Tool { name } => OutToolChoice::Named { kind: "function", name },
        }
    }
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<OutRespError<'a>>,
    incomplete_details: Option<OutIncomplete>,
    instructions: (),
    max_output_tokens: (),
    model: &'a str,
    output: &'a [OutItem<'a>],
    parallel_tool_calls: bool,
    previous_response_id: (),
    reasoning: OutReasoning,
    store: bool,
    temperature: (),
    text: OutTextConfig,
    tool_choice: &'static str,
    tools: EmptyArray,
    top_p: (),
    truncation: &'static str,
    usage: Option<OutUsage>,
    user: (),
    metadata: EmptyObject,
}

#[derive(Serialize)]
struct OutRespError<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct OutIncomplete {
    reason: &'static str,
}

#[derive(Serialize)]
struct OutReasoning {
    effort: (),
    summary: (),
}

#[derive(Serialize)]
struct OutTextConfig {
    format: OutFormat,
}

#[derive(Serialize)]
struct OutFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize, Clone, Copy)]
struct OutUsage {
    input_tokens: u32,
    input_tokens_details: OutInputDetails,
    output_tokens: u32,
    output_tokens_details: OutOutputDetails,
    total_tokens: u32,
}

/// Both counts are required fields of the OpenAI SDKs' `InputTokensDetails` (openai-python 3.x
/// declares `cache_write_tokens: int` without a default), so both are always written.
#[derive(Serialize, Clone, Copy)]
struct OutInputDetails {
    cached_tokens: u32,
    cache_write_tokens: u32,
}

#[derive(Serialize, Clone, Copy)]
struct OutOutputDetails {
    reasoning_tokens: u32,
}

impl From<Usage> for OutUsage {
    fn from(u: Usage) -> Self {
        OutUsage {
            input_tokens: u.input_tokens,
            input_tokens_details: OutInputDetails { cached_tokens: 0, cache_write_tokens: 0 },
            output_tokens: u.output_tokens,
            output_tokens_details: OutOutputDetails { reasoning_tokens: 0 },
            total_tokens: u.input_tokens.saturating_add(u.output_tokens),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutItem<'a> {
    Message { id: Cow<'a, str>, status: &'static str, role: &'static str, content: OutTexts<'a> },
    FunctionCall { id: Cow<'a, str>, call_id: &'a str, name: &'a str, arguments: Cow<'a, str>, status: &'static str },
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum OutEvent<'a> {
    #[serde(rename = "response.created")]
    Created { sequence_number: u64, response: OutResponse<'a> },
    #[serde(rename = "response.in_progress")]
    InProgress { sequence_number: u64, response: OutResponse<'a> },
    #[serde(rename = "response.completed")]
    Completed { sequence_number: u64, response: OutResponse<'a> },
    #[serde(rename = "response.incomplete")]
    Incomplete { sequence_number: u64, response: OutResponse<'a> },
    #[serde(rename = "response.failed")]
    Failed { sequence_number: u64, response: OutResponse<'a> },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { sequence_number: u64, output_index: usize, item: OutItem<'a> },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { sequence_number: u64, output_index: usize, item: OutItem<'a> },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        part: OutTextPart<'a>,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        part: OutTextPart<'a>,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        delta: &'a str,
        logprobs: EmptyArray,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        text: &'a str,
        logprobs: EmptyArray,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta { sequence_number: u64, item_id: &'a str, output_index: usize, delta: &'a str },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        name: &'a str,
        arguments: &'a str,
    },
    #[serde(rename = "error")]
    Error { sequence_number: u64, code: &'a str, message: &'a str, param: () },
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::test_util::{decode_split, sample_request, sample_response, sample_stream, sample_text_stream};
    use crate::{ErrorKind, ImageSource};

    // Built from the Responses reference and function-calling guide, as Codex-style clients
    // send it (reasoning item carried over, store false).
    const REQUEST: &str = r#"{
      "model": "gpt-4.1",
      "instructions": "You are a coding assistant that talks like a pirate.",
      "input": [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": [
          {"type": "input_text", "text": "what is in this image?"},
          {"type": "input_image", "image_url": "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg", "detail": "auto"}
        ]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB"},
        {"type": "message", "id": "msg_abc", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "A wooden boardwalk.", "annotations": []}]},
        {"type": "function_call", "id": "fc_12345xyz", "call_id": "call_12345xyz", "name": "get_weather",
         "arguments": "{\"location\":\"Paris, France\"}"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "get_weather",
         "arguments": "{\"location\":\"Bogot\u00e1, Colombia\"}"},
        {"type": "function_call_output", "call_id": "call_12345xyz", "output": "{\"temperature\": 20}"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "25"}]},
        {"role": "user", "content": "thanks"}
      ],
      "tools": [{
        "type": "function",
        "name": "get_weather",
        "description": "Get current temperature for a given location.",
        "parameters": {
          "type": "object",
          "properties": {"location": {"type": "string", "description": "City and country e.g. Bogot\u00e1, Colombia"}},
          "required": ["location"],
          "additionalProperties": false
        },
        "strict": true
      }],
      "tool_choice": {"type": "function", "name": "get_weather"},
      "max_output_tokens": 1000,
      "temperature": 0.7,
      "stream": true,
      "store": false,
      "reasoning": {"effort": "low"},
      "include": ["reasoning.encrypted_content"],
      "user": "user-9"
    }"#;

    #[test]
    fn parses_the_documented_request() {
        let r = parse_request(REQUEST.as_bytes()).unwrap();
        assert_eq!(
            r.system.as_deref(),
            Some("You are a coding assistant that talks like a pirate.\n\nAnswer briefly.")
        );
        assert_eq!(r.max_tokens, Some(1000));
        assert_eq!(r.tool_choice, Some(ToolChoice::Tool { name: "get_weather".to_owned() }));
        assert_eq!(r.user.as_deref(), Some("user-9"));
        assert!(r.stream);
        assert_eq!(r.tools[0].input_schema["additionalProperties"], false);
        assert_eq!(r.messages.len(), 4);
        assert_eq!(
            r.messages[0].content[1],
            ContentPart::Image {
                source: ImageSource::Url {
                    url: "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg".to_owned()
                }
            }
        );
        // The assistant message and both calls are one assistant turn.
        assert_eq!(r.messages[1].role, Role::Assistant);
        assert_eq!(r.messages[1].content.len(), 3);
        assert_eq!(
            r.messages[1].content[2],
            ContentPart::ToolUse {
                id: "call_2".to_owned(),
                name: "get_weather".to_owned(),
                input: json!({"location": "Bogot\u{e1}, Colombia"})
            }
        );
        assert_eq!(r.messages[2].role, Role::User);
        assert_eq!(
            r.messages[2].content[1],
            ContentPart::ToolResult {
                tool_use_id: "call_2".to_owned(),
                content: vec![ContentPart::Text { text: "25".to_owned() }],
                is_error: false
            }
        );
        assert_eq!(r.messages[3], Message::text(Role::User, "thanks"));

        let simple =
            parse_request(br#"{"model":"gpt-4.1","input":"Tell me a three sentence bedtime story about a unicorn."}"#)
                .unwrap();
        assert_eq!(
            simple.messages,
            vec![Message::text(Role::User, "Tell me a three sentence bedtime story about a unicorn.")]
        );
    }

    #[test]
    fn request_round_trips_through_encode() {
        let r1 = parse_request(REQUEST.as_bytes()).unwrap();
        let r2 = parse_request(&encode_request(&r1, &r1.model, r1.stream)).unwrap();
        assert_eq!(r1, r2);

        let mut sample = sample_request();
        for choice in
            [ToolChoice::Auto, ToolChoice::Any, ToolChoice::None, ToolChoice::Tool { name: "get_weather".to_owned() }]
        {
            sample.tool_choice = Some(choice);
            let back = parse_request(&encode_request(&sample, "agent-1", true)).unwrap();
            assert_eq!(back, sample);
        }
    }

    #[test]
    fn encode_request_has_the_responses_shape() {
        let body: Value = serde_json::from_slice(&encode_request(&sample_request(), "gpt-5.3-codex", true)).unwrap();
        assert_eq!(body["model"], "gpt-5.3-codex");
        assert_eq!(body["instructions"], "You are terse.\n\nAnswer in English.");
        assert_eq!(body["store"], false);
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_output_tokens"], 512);
        assert_eq!(
            body["tools"][0],
            json!({"type": "function", "name": "get_weather", "description": "Get the current weather in a given location",
                   "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
                   "strict": false})
        );
        let input = body["input"].as_array().unwrap();
        assert_eq!(
            input[0]["content"],
            json!([
                {"type": "input_text", "text": "Weather in Paris and the time? Also this:"},
                {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}
            ])
        );
        assert_eq!(
            input[1],
            json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]})
        );
        assert_eq!(
            input[2],
            json!({"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"location\":\"Paris\"}"})
        );
        assert_eq!(input[4], json!({"type": "function_call_output", "call_id": "call_1", "output": "18C, cloudy"}));
        assert_eq!(input.len(), 8);
    }

    #[test]
    fn rejects_what_cannot_be_translated() {
        let cases = [
            r#"{"model":"m","previous_response_id":"resp_1","input":"hi"}"#,
            r#"{"model":"m","conversation":"conv_1","input":"hi"}"#,
            r#"{"model":"m","background":true,"input":"hi"}"#,
            r#"{"model":"m","text":{"format":{"type":"json_schema","name":"x","schema":{}}},"input":"hi"}"#,
            r#"{"model":"m","tools":[{"type":"web_search_preview"}],"input":"hi"}"#,
            r#"{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}"#,
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]}"#,
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"file-1"}]}]}"#,
        ];
        for body in cases {
            assert!(matches!(parse_request(body.as_bytes()), Err(ProtoError::Unsupported { .. })), "{body}");
        }
        assert!(parse_request(br#"{"model":"m","text":{"format":{"type":"text"}},"input":"hi"}"#).is_ok());
        assert!(matches!(parse_request(b"{"), Err(ProtoError::Invalid { .. })));
        assert!(matches!(
            parse_request(br#"{"model":"m","input":[{"type":"function_call","name":"f"}]}"#),
            Err(ProtoError::Invalid { .. })
        ));
    }

    #[test]
    fn parses_the_documented_response() {
        let body = r#"{
          "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
          "object": "response",
          "created_at": 1741476542,
          "status": "completed",
          "error": null,
          "incomplete_details": null,
          "instructions": null,
          "max_output_tokens": null,
          "model": "gpt-4.1-2025-04-14",
          "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "In a peaceful grove beneath a silver moon...", "annotations": []}]},
            {"type": "function_call", "id": "fc_12345xyz", "call_id": "call_12345xyz", "name": "get_weather",
             "arguments": "{\"location\":\"Paris, France\"}", "status": "completed"}
          ],
          "parallel_tool_calls": true,
          "previous_response_id": null,
          "reasoning": {"effort": null, "summary": null},
          "store": true,
          "temperature": 1.0,
          "text": {"format": {"type": "text"}},
          "tool_choice": "auto",
          "tools": [],
          "top_p": 1.0,
          "truncation": "disabled",
          "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 87,
                    "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 123},
          "user": null,
          "metadata": {}
        }"#;
        let r = parse_response(body.as_bytes()).unwrap();
        assert_eq!(r.id, "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b");
        assert_eq!(r.model, "gpt-4.1-2025-04-14");
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        assert_eq!(r.usage, Usage { input_tokens: 36, output_tokens: 87 });
        assert_eq!(
            r.content,
            vec![
                ContentPart::Text { text: "In a peaceful grove beneath a silver moon...".to_owned() },
                ContentPart::ToolUse {
                    id: "call_12345xyz".to_owned(),
                    name: "get_weather".to_owned(),
                    input: json!({"location": "Paris, France"})
                },
            ]
        );
        let incomplete = json!({"id": "resp_1", "model": "m", "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "Once"}]}]});
        assert_eq!(parse_response(incomplete.to_string().as_bytes()).unwrap().stop_reason, StopReason::MaxTokens);
        let failed = json!({"id": "resp_1", "model": "m", "status": "failed", "error": {"code": "server_error", "message": "boom"}, "output": []});
        assert!(parse_response(failed.to_string().as_bytes()).is_err());
    }

    #[test]
    fn response_round_trips_and_has_the_sdk_shape() {
        let resp = sample_response("resp_42");
        let bytes = encode_response(&resp);
        assert_eq!(parse_response(&bytes).unwrap(), resp);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["output"][0]["type"], "message");
        assert_eq!(v["output"][0]["id"], "msg_42_0");
        assert_eq!(
            v["output"][0]["content"][0],
            json!({"type": "output_text", "text": "Checking the weather.", "annotations": []})
        );
        assert_eq!(v["output"][1]["type"], "function_call");
        assert_eq!(v["output"][1]["call_id"], "call_9");
        assert_eq!(v["usage"]["total_tokens"], 120);

        let mut two_texts = resp.clone();
        two_texts.content =
            vec![ContentPart::Text { text: "a".to_owned() }, ContentPart::Text { text: "b".to_owned() }];
        two_texts.stop_reason = StopReason::MaxTokens;
        let bytes = encode_response(&two_texts);
        assert_eq!(parse_response(&bytes).unwrap(), two_texts);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"], json!({"reason": "max_output_tokens"}));
    }

    #[test]
    fn usage_has_every_field_the_sdks_require() {
        // openai-python types `usage.input_tokens_details` as {cached_tokens, cache_write_tokens}
        // and `output_tokens_details` as {reasoning_tokens}, all required; the same usage object
        // goes into `response.completed`.
        let expected = json!({
            "input_tokens": 100, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 120
        });
        let v: Value = serde_json::from_slice(&encode_response(&sample_response("resp_1"))).unwrap();
        assert_eq!(v["usage"], expected);
        let mut enc = StreamEncoder::new();
        let mut bytes = Vec::new();
        let events = sample_stream("resp_1", 0);
        for ev in &events {
            enc.encode(ev, &mut bytes);
        }
        let text = String::from_utf8(bytes).unwrap();
        let last = text.lines().filter_map(|l| l.strip_prefix("data: ")).next_back().unwrap();
        let v: Value = serde_json::from_str(last).unwrap();
        assert_eq!(v["type"], "response.completed");
        assert_eq!(v["response"]["usage"]["input_tokens_details"], expected["input_tokens_details"]);
        assert_eq!(v["response"]["usage"]["output_tokens_details"], expected["output_tokens_details"]);
    }

    #[test]
    fn error_bodies() {
        let v: Value =
            serde_json::from_slice(&encode_error(&ApiError::new(ErrorKind::Authentication, "bad key"))).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "bad key", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
        );
        let e = parse_error(br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#).unwrap();
        assert_eq!(e.error_type, "rate_limit_exceeded");
        assert!(parse_error(b"upstream connect error").is_none());
    }

    fn decode(bytes: &[u8], seed: u64) -> Result<(Vec<StreamEvent>, bool), DecodeError> {
        let mut d = StreamDecoder::new();
        let events = decode_split(bytes, seed, |ev| d.feed(ev))?;
        Ok((events, d.is_done()))
    }

    #[test]
    fn stream_round_trips_through_encoder_and_decoder() {
        for events in [sample_stream("resp_1", 0), sample_text_stream("resp_2", 0)] {
            let mut enc = StreamEncoder::new();
            let mut bytes = Vec::new();
            for ev in &events {
                enc.encode(ev, &mut bytes);
            }
            for seed in 0..20 {
                let (decoded, done) = decode(&bytes, seed).unwrap();
                assert_eq!(decoded, events, "seed {seed}");
                assert!(done);
            }
        }
    }

    #[test]
    fn encoder_writes_the_documented_event_sequence() {
        let mut enc = StreamEncoder::new();
        let mut bytes = Vec::new();
        for ev in &sample_stream("msg_01", 0) {
            enc.encode(ev, &mut bytes);
        }
        let text = String::from_utf8(bytes).unwrap();
        let mut frames = Vec::new();
        let mut name = "";
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n;
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d).unwrap();
                assert_eq!(v["type"], name, "event name and data type agree");
                frames.push(v);
            }
        }
        let names: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f["sequence_number"], i as u64);
        }
        assert_eq!(frames[0]["response"]["id"], "resp_01");
        assert_eq!(frames[0]["response"]["status"], "in_progress");
        assert_eq!(frames[0]["response"]["usage"], Value::Null);
        assert_eq!(frames[6]["text"], "Let me check h\u{e9}r\u{e9} \u{1f680} for you:\n\"quoted\"");
        assert_eq!(frames[12]["arguments"], "{\"location\": \"Paris\"}");
        assert_eq!(frames[13]["item"]["status"], "completed");
        let done = &frames[18]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["usage"]["input_tokens"], 321);
        assert_eq!(done["output"].as_array().unwrap().len(), 3);
        assert_eq!(done["output"][1]["arguments"], "{\"location\": \"Paris\"}");
        assert_eq!(done["output"][0]["id"], frames[2]["item"]["id"]);

        let mut enc = StreamEncoder::new();
        let mut bytes = Vec::new();
        for ev in &sample_text_stream("resp_2", 0) {
            enc.encode(ev, &mut bytes);
        }
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("event: response.incomplete\n"));
        assert!(text.contains("\"incomplete_details\":{\"reason\":\"max_output_tokens\"}"));
    }

    #[test]
    fn decodes_a_real_upstream_stream() {
        let text = r#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"in_progress","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}}

event: response.in_progress
data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","status":"in_progress","model":"gpt-4.1-2025-04-14","output":[]}}

event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}

event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":4,"output_index":1,"item":{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"in_progress","role":"assistant","content":[]}}

event: response.content_part.added
data: {"type":"response.content_part.added","sequence_number":5,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":1,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":6,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":1,"content_index":0,"delta":"Hi","logprobs":[]}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":7,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":1,"content_index":0,"delta":" there!","logprobs":[]}

event: response.output_text.done
data: {"type":"response.output_text.done","sequence_number":8,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":1,"content_index":0,"text":"Hi there!","logprobs":[]}

event: response.content_part.done
data: {"type":"response.content_part.done","sequence_number":9,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":1,"content_index":0,"part":{"type":"output_text","text":"Hi there!","annotations":[]}}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":10,"output_index":1,"item":{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there!","annotations":[]}]}}

event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":11,"output_index":2,"item":{"type":"function_call","id":"fc_1234xyz","call_id":"call_1234xyz","name":"get_weather","arguments":"","status":"in_progress"}}

event: response.function_call_arguments.delta
data: {"type":"response.function_call_arguments.delta","sequence_number":12,"item_id":"fc_1234xyz","output_index":2,"delta":"{\"location\":"}

event: response.function_call_arguments.delta
data: {"type":"response.function_call_arguments.delta","sequence_number":13,"item_id":"fc_1234xyz","output_index":2,"delta":"\"Paris, France\"}"}

event: response.function_call_arguments.done
data: {"type":"response.function_call_arguments.done","sequence_number":14,"item_id":"fc_1234xyz","output_index":2,"arguments":"{\"location\":\"Paris, France\"}"}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":15,"output_index":2,"item":{"type":"function_call","id":"fc_1234xyz","call_id":"call_1234xyz","name":"get_weather","arguments":"{\"location\":\"Paris, France\"}","status":"completed"}}

event: response.completed
data: {"type":"response.completed","sequence_number":16,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","status":"completed","model":"gpt-4.1-2025-04-14","output":[{"id":"rs_1","type":"reasoning","summary":[]},{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there!","annotations":[]}]},{"type":"function_call","id":"fc_1234xyz","call_id":"call_1234xyz","name":"get_weather","arguments":"{\"location\":\"Paris, France\"}","status":"completed"}],"usage":{"input_tokens":37,"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}}}

"#;
        let (events, done) = decode(text.as_bytes(), 8).unwrap();
        assert!(done);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654".to_owned(),
                    model: "gpt-4.1-2025-04-14".to_owned(),
                    input_tokens: 0
                },
                StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
                StreamEvent::TextDelta { index: 0, text: "Hi".to_owned() },
                StreamEvent::TextDelta { index: 0, text: " there!".to_owned() },
                StreamEvent::BlockStop { index: 0 },
                StreamEvent::BlockStart {
                    index: 1,
                    block: BlockKind::ToolUse { id: "call_1234xyz".to_owned(), name: "get_weather".to_owned() }
                },
                StreamEvent::ToolArgsDelta { index: 1, partial_json: "{\"location\":".to_owned() },
                StreamEvent::ToolArgsDelta { index: 1, partial_json: "\"Paris, France\"}".to_owned() },
                StreamEvent::BlockStop { index: 1 },
                StreamEvent::Finish {
                    stop_reason: StopReason::ToolUse,
                    usage: Usage { input_tokens: 37, output_tokens: 11 }
                },
            ]
        );
    }

    #[test]
    fn decoder_reports_errors() {
        let failed = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"model\":\"m\",\"output\":[]}}\n\n",
            "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"The model failed to generate a response.\"},\"output\":[]}}\n\n",
        );
        let mut d = StreamDecoder::new();
        match decode_split(failed.as_bytes(), 2, |ev| d.feed(ev)) {
            Err(DecodeError::Upstream(e)) => {
                assert_eq!(e, UpstreamError::new("server_error", "The model failed to generate a response."))
            }
            other => panic!("expected upstream error, got {other:?}"),
        }
        assert!(d.is_done());

        let error = "event: error\ndata: {\"type\":\"error\",\"sequence_number\":3,\"code\":\"rate_limit_exceeded\",\"message\":\"Slow down\",\"param\":null}\n\n";
        match decode(error.as_bytes(), 1) {
            Err(DecodeError::Upstream(e)) => assert_eq!(e, UpstreamError::new("rate_limit_exceeded", "Slow down")),
            other => panic!("expected upstream error, got {other:?}"),
        }
        let garbage = SseEvent { event: Some("response.output_text.delta".to_owned()), data: "{\"delta\":".to_owned() };
        assert!(matches!(StreamDecoder::new().feed(&garbage), Err(DecodeError::Proto(_))));
        let untyped = SseEvent { event: None, data: "[1,2]".to_owned() };
        assert!(matches!(StreamDecoder::new().feed(&untyped), Err(DecodeError::Proto(_))));
        let orphan = SseEvent {
            event: Some("response.function_call_arguments.delta".to_owned()),
            data: r#"{"type":"response.function_call_arguments.delta","output_index":3,"delta":"{"}"#.to_owned(),
        };
        assert!(matches!(StreamDecoder::new().feed(&orphan), Err(DecodeError::Proto(_))));
    }

    #[test]
    fn stream_error_frames_are_error_then_failed() {
        let mut enc = StreamEncoder::new();
        let mut bytes = Vec::new();
        let events = sample_text_stream("resp_3", 0);
        for ev in &events[..3] {
            enc.encode(ev, &mut bytes);
        }
        enc.encode_error(&ApiError::new(ErrorKind::Overloaded, "all candidates failed"), &mut bytes);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let error_at = text.find("event: error\n").unwrap();
        let failed_at = text.find("event: response.failed\n").unwrap();
        assert!(error_at < failed_at);
        assert!(text.contains("\"status\":\"failed\""));
        match decode(&bytes, 6) {
            Err(DecodeError::Upstream(e)) => {
                assert_eq!(e, UpstreamError::new("server_overloaded", "all candidates failed"))
            }
            other => panic!("expected upstream error, got {other:?}"),
        }
    }

    #[test]
    fn cross_format_responses_request_to_anthropic_and_chat() {
        let canonical = parse_request(REQUEST.as_bytes()).unwrap();
        let via_anthropic =
            crate::anthropic::parse_request(&crate::anthropic::encode_request(&canonical, "gpt-4.1", true)).unwrap();
        assert_eq!(via_anthropic, canonical);
        let via_chat =
            crate::openai_chat::parse_request(&crate::openai_chat::encode_request(&canonical, "gpt-4.1", true))
                .unwrap();
        assert_eq!(via_chat, canonical);
    }
}
