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
    ApiError, BlockKind, ChatRequest, ChatResponse, ContentPart, ImageSource, Message, ProtoError,
    Role, StopReason, StreamEvent, ToolChoice, ToolDef, Usage,
};

/// Separator between `instructions` and merged `system`/`developer` input messages.
const SYSTEM_JOIN: &str = "\n\n";

/// Parses a client's request body.
///
/// Rejected as unsupported: `previous_response_id`, `conversation`, `prompt` (server-side
/// state flotilla does not keep), `background`, structured `text.format`, built-in tools,
/// and input items other than messages, function calls, their outputs and reasoning.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ProtoError> {
    let raw: InRequest<'_> =
        serde_json::from_slice(body).map_err(|e| ProtoError::invalid("request", e))?;
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
            name: t
                .name
                .ok_or_else(|| ProtoError::invalid("tool", "function tool without name"))?,
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
                return Err(ProtoError::invalid(
                    "tool_choice",
                    format!("unknown mode {other:?}"),
                ));
            }
        }),
        Some(InToolChoice::Named { kind, name }) => {
            if kind != "function" {
                return Err(ProtoError::unsupported(
                    "tool_choice",
                    format!("type {kind:?} (only function)"),
                ));
            }
            Some(ToolChoice::Tool {
                name: name
                    .ok_or_else(|| ProtoError::invalid("tool_choice", "function choice without name"))?,
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

fn input_item(
    item: InItem<'_>,
    system: &mut Option<String>,
    messages: &mut Vec<Message>,
) -> Result<(), ProtoError> {
    match item.kind.as_deref().unwrap_or("message") {
        "message" => {
            let role = item
                .role
                .ok_or_else(|| ProtoError::invalid("input item", "message without role"))?;
            match role.as_ref() {
                "system" | "developer" => {
                    let text = match item.content {
                        None => String::new(),
                        Some(TextOr::Text(s)) => s,
                        Some(TextOr::Parts(parts)) => {
                            let mut out = String::new();
                            for p in parts {
                                match p.kind.as_ref() {
                                    "input_text" | "output_text" => {
                                        out.push_str(p.text.as_deref().unwrap_or_default())
                                    }
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
                    messages.push(Message {
                        role: Role::User,
                        content,
                    });
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
                                content.push(ContentPart::Text {
                                    text: text.unwrap_or_default(),
                                });
                            }
                        }
                    }
                    push_assistant(messages, content);
                }
                other => {
                    return Err(ProtoError::invalid(
                        "input item",
                        format!("unknown role {other:?}"),
                    ));
                }
            }
        }
        "function_call" => {
            let part = ContentPart::ToolUse {
                id: item
                    .call_id
                    .ok_or_else(|| ProtoError::invalid("function_call", "missing call_id"))?,
                name: item
                    .name
                    .ok_or_else(|| ProtoError::invalid("function_call", "missing name"))?,
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
                _ => messages.push(Message {
                    role: Role::User,
                    content: vec![part],
                }),
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
        _ => messages.push(Message {
            role: Role::Assistant,
            content,
        }),
    }
}

fn input_part(p: InPart<'_>) -> Result<ContentPart, ProtoError> {
    match p.kind.as_ref() {
        "input_text" | "output_text" => Ok(ContentPart::Text {
            text: p.text.unwrap_or_default(),
        }),
        "input_image" => match p.image_url {
            Some(url) => Ok(ContentPart::Image {
                source: wire::image_from_url(url),
            }),
            None => Err(ProtoError::unsupported(
                "input_image",
                "images by file_id (only image_url)",
            )),
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
        reasoning: OutReasoning {
            effort: (),
            summary: (),
        },
        store: false,
        temperature: (),
        text: OutTextConfig {
            format: OutFormat { kind: "text" },
        },
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
        max_output_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stream,
        store: false,
        user: req.user.as_deref(),
    })
}

/// Parses an upstream's complete answer.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ProtoError> {
    let raw: InResponse<'_> =
        serde_json::from_slice(body).map_err(|e| ProtoError::invalid("response", e))?;
    if raw.status.as_deref() == Some("failed") {
        let msg = raw
            .error
            .and_then(|e| e.message)
            .unwrap_or_else(|| "no error message".to_owned());
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
                        "output_text" => content.push(ContentPart::Text {
                            text: p.text.unwrap_or_default(),
                        }),
                        "refusal" => {
                            refused = true;
                            content.push(ContentPart::Text {
                                text: p.refusal.unwrap_or_default(),
                            });
                        }
                        _ => {}
                    }
                }
            }
            "function_call" => {
                has_calls = true;
                content.push(ContentPart::ToolUse {
                    id: item
                        .call_id
                        .ok_or_else(|| ProtoError::invalid("response", "function_call without call_id"))?,
                    name: item
                        .name
                        .ok_or_else(|| ProtoError::invalid("response", "function_call without name"))?,
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

fn stop_reason(
    status: Option<&str>,
    incomplete_reason: Option<&str>,
    has_calls: bool,
    refused: bool,
) -> StopReason {
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
    Message {
        id: String,
        text: String,
        done: bool,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        done: bool,
    },
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
            ItemState::FunctionCall {
                id,
                call_id,
                name,
                arguments,
                done,
            } => OutItem::FunctionCall {
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
                    BlockKind::Text => ItemState::Message {
                        id: format!("msg_{base}_{n}"),
                        text: String::new(),
                        done: false,
                    },
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
                    &OutEvent::OutputItemAdded {
                        sequence_number: seq,
                        output_index: n,
                        item: item.out(),
                    },
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
            StreamEvent::ToolArgsDelta {
                index,
                partial_json,
            } => {
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
                let name = if incomplete.is_some() {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
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
                    OutEvent::Incomplete {
                        sequence_number: seq,
                        response,
                    }
                } else {
                    OutEvent::Completed {
                        sequence_number: seq,
                        response,
                    }
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
            &OutEvent::Error {
                sequence_number: seq,
                code,
                message: &err.message,
                param: (),
            },
        );
        let seq = self.bump();
        let output: Vec<OutItem<'_>> = self.items.iter().map(ItemState::out).collect();
        let response = self.response(
            "failed",
            None,
            Some(OutRespError {
                code,
                message: &err.message,
            }),
            &output,
            None,
        );
        write_json_event(
            out,
            Some("response.failed"),
            &OutEvent::Failed {
                sequence_number: seq,
                response,
            },
        );
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
            reasoning: OutReasoning {
                effort: (),
                summary: (),
            },
            store: false,
            temperature: (),
            text: OutTextConfig {
                format: OutFormat { kind: "text" },
            },
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
            &OutEvent::Created {
                sequence_number: seq,
                response: self.response("in_progress", None, None, &[], None),
            },
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
                    &OutEvent::OutputItemDone {
                        sequence_number: s3,
                        output_index: n,
                        item: item.out(),
                    },
                );
            }
            ItemState::FunctionCall {
                id,
                name,
                arguments,
                ..
            } => {
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
                    &OutEvent::OutputItemDone {
                        sequence_number: s2,
                        output_index: n,
                        item: item.out(),
                    },
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
    pub fn feed_into(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), DecodeError> {
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
            out.push(StreamEvent::Start {
                id,
                model,
                input_tokens: 0,
            });
        }
    }

    fn is_open(&self, output_index: u32, content_index: Option<u32>) -> bool {
        self.open
            .is_some_and(|o| o.output_index == output_index && o.content_index == content_index)
    }

    fn open_text(&mut self, output_index: u32, content_index: u32, out: &mut Vec<StreamEvent>) {
        self.ensure_started(String::new(), String::new(), out);
        self.close_open(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some(OpenBlock {
            output_index,
            content_index: Some(content_index),
            index,
            streamed: false,
        });
        out.push(StreamEvent::BlockStart {
            index,
            block: BlockKind::Text,
        });
    }

    fn open_call(&mut self, output_index: u32, item: InItem<'_>, out: &mut Vec<StreamEvent>) {
        self.ensure_started(String::new(), String::new(), out);
        self.close_open(out);
        self.seen_calls.push(output_index);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some(OpenBlock {
            output_index,
            content_index: None,
            index,
            streamed: false,
        });
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
            out.push(StreamEvent::TextDelta {
                index: open.index,
                text,
            });
        }
    }

    fn args(&mut self, partial_json: String, out: &mut Vec<StreamEvent>) {
        if let Some(open) = &mut self.open {
            open.streamed = true;
            out.push(StreamEvent::ToolArgsDelta {
                index: open.index,
                partial_json,
            });
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
        Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        }
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
                            ContentPart::ToolResult {
                                tool_use_id,
                                content,
                                ..
                            } => seq.serialize_element(&OutInputItem::FunctionCallOutput {
                                call_id: tool_use_id,
                                output: OutToolOutput(content),
                            })?,
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
                                while i < m.content.len()
                                    && matches!(m.content[i], ContentPart::Text { .. })
                                {
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
    InputText {
        text: &'a str,
    },
    InputImage {
        image_url: Cow<'a, str>,
        detail: &'static str,
    },
}

impl<'a> OutInputPart<'a> {
    fn from_part(p: &'a ContentPart) -> Option<Self> {
        match p {
            ContentPart::Text { text } => Some(OutInputPart::InputText { text }),
            ContentPart::Image { source } => Some(OutInputPart::InputImage {
                image_url: image_url(source),
                detail: "auto",
            }),
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
        OutTextPart {
            kind: "output_text",
            text,
            annotations: EmptyArray,
        }
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
            ToolChoice::Tool { name } => OutToolChoice::Named {
                kind: "function",
                name,
            },
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

#[derive(Serialize, Clone, Copy)]
struct OutInputDetails {
    cached_tokens: u32,
}

#[derive(Serialize, Clone, Copy)]
struct OutOutputDetails {
    reasoning_tokens: u32,
}

impl From<Usage> for OutUsage {
    fn from(u: Usage) -> Self {
        OutUsage {
            input_tokens: u.input_tokens,
            input_tokens_details: OutInputDetails { cached_tokens: 0 },
            output_tokens: u.output_tokens,
            output_tokens_details: OutOutputDetails {
                reasoning_tokens: 0,
            },
            total_tokens: u.input_tokens.saturating_add(u.output_tokens),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutItem<'a> {
    Message {
        id: Cow<'a, str>,
        status: &'static str,
        role: &'static str,
        content: OutTexts<'a>,
    },
    FunctionCall {
        id: Cow<'a, str>,
        call_id: &'a str,
        name: &'a str,
        arguments: Cow<'a, str>,
        status: &'static str,
    },
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum OutEvent<'a> {
    #[serde(rename = "response.created")]
    Created {
        sequence_number: u64,
        response: OutResponse<'a>,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        sequence_number: u64,
        response: OutResponse<'a>,
    },
    #[serde(rename = "response.completed")]
    Completed {
        sequence_number: u64,
        response: OutResponse<'a>,
    },
    #[serde(rename = "response.incomplete")]
    Incomplete {
        sequence_number: u64,
        response: OutResponse<'a>,
    },
    #[serde(rename = "response.failed")]
    Failed {
        sequence_number: u64,
        response: OutResponse<'a>,
    },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        sequence_number: u64,
        output_index: usize,
        item: OutItem<'a>,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        sequence_number: u64,
        output_index: usize,
        item: OutItem<'a>,
    },
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
    FunctionCallArgumentsDelta {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        delta: &'a str,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        name: &'a str,
        arguments: &'a str,
    },
    #[serde(rename = "error")]
    Error {
        sequence_number: u64,
        code: &'a str,
        message: &'a str,
        param: (),
    },
}
