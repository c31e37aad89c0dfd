//! The Anthropic Messages API wire format: client-side parsing/encoding and upstream-side encoding/decoding.
//!
//! Canonical usage counts all input tokens: Anthropic's `input_tokens` plus the cache
//! creation and cache read counts, which Anthropic reports separately.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::{DecodeError, UpstreamError};
use crate::sse::{SseEvent, write_json_event};
use crate::wire::{self, EmptyArray, EmptyObject, TextOr};
use crate::{
    ApiError, BlockKind, ChatRequest, ChatResponse, ContentPart, ErrorKind, ImageSource, Message,
    ProtoError, Role, StopReason, StreamEvent, ToolChoice, ToolDef, Usage,
};

/// The `max_tokens` sent upstream when the client did not choose one (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Separator used when several system text blocks are merged into the canonical system prompt.
const SYSTEM_JOIN: &str = "\n\n";

/// Parses a client's request body.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ProtoError> {
    let raw: InRequest<'_> =
        serde_json::from_slice(body).map_err(|e| ProtoError::invalid("request", e))?;
    if raw.top_k.is_some() {
        return Err(ProtoError::unsupported(
            "parameter",
            "top_k cannot be translated to other providers",
        ));
    }
    if let Some(t) = &raw.thinking
        && t.kind != "disabled"
    {
        return Err(ProtoError::unsupported(
            "parameter",
            format!("thinking of type {:?} (extended thinking) is not supported", t.kind),
        ));
    }
    let system = match raw.system {
        None => None,
        Some(TextOr::Text(s)) => Some(s),
        Some(TextOr::Parts(blocks)) => {
            let mut out = String::new();
            for (i, b) in blocks.into_iter().enumerate() {
                if b.kind != "text" {
                    return Err(ProtoError::unsupported(
                        "system block",
                        format!("type {:?} (only text blocks are supported)", b.kind),
                    ));
                }
                if i > 0 {
                    out.push_str(SYSTEM_JOIN);
                }
                out.push_str(b.text.as_deref().unwrap_or_default());
            }
            Some(out)
        }
    }
    .filter(|s| !s.is_empty());

    let mut messages = Vec::with_capacity(raw.messages.len());
    for m in raw.messages {
        let content = match m.content {
            TextOr::Text(text) => vec![ContentPart::Text { text }],
            TextOr::Parts(blocks) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for b in blocks {
                    if let Some(p) = block_to_part(b)? {
                        parts.push(p);
                    }
                }
                parts
            }
        };
        messages.push(Message {
            role: m.role,
            content,
        });
    }

    let mut tools = Vec::new();
    for t in raw.tools.unwrap_or_default() {
        if let Some(kind) = &t.kind
            && kind != "custom"
        {
            return Err(ProtoError::unsupported(
                "tool",
                format!(
                    "server tool type {kind:?} (only custom tools with input_schema are supported)"
                ),
            ));
        }
        let input_schema = t
            .input_schema
            .ok_or_else(|| ProtoError::invalid("tool", format!("{:?} has no input_schema", t.name)))?;
        tools.push(ToolDef {
            name: t.name,
            description: t.description,
            input_schema,
        });
    }

    let tool_choice = match raw.tool_choice {
        None => None,
        Some(tc) => Some(match tc.kind.as_ref() {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Any,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Tool {
                name: tc.name.ok_or_else(|| {
                    ProtoError::invalid("tool_choice", "type tool without a name")
                })?,
            },
            other => {
                return Err(ProtoError::invalid(
                    "tool_choice",
                    format!("unknown type {other:?}"),
                ));
            }
        }),
    };

    Ok(ChatRequest {
        model: raw.model,
        system,
        messages,
        max_tokens: raw.max_tokens,
        temperature: raw.temperature,
        top_p: raw.top_p,
        stop: raw.stop_sequences.unwrap_or_default(),
        tools,
        tool_choice,
        stream: raw.stream.unwrap_or(false),
        user: raw.metadata.and_then(|m| m.user_id),
    })
}

/// Encodes a complete answer for a client.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    wire::to_vec(&OutResponse {
        id: wire::prefixed_id(&resp.id, "msg_"),
        kind: "message",
        role: "assistant",
        model: &resp.model,
        content: OutBlocks {
            parts: &resp.content,
            skip_empty_text: false,
        },
        stop_reason: stop_reason_str(resp.stop_reason),
        stop_sequence: (),
        usage: OutUsage::from(resp.usage),
    })
}

/// Encodes an error body for a client (the HTTP status is `err.status`).
pub fn encode_error(err: &ApiError) -> Vec<u8> {
    wire::to_vec(&OutErrorEnvelope {
        kind: "error",
        error: OutError {
            kind: error_type(err.kind),
            message: &err.message,
        },
    })
}

/// The Anthropic `error.type` string for an error kind.
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Api => "api_error",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::Timeout => "timeout_error",
    }
}

/// Encodes a request for an upstream of this format, naming `upstream_model`.
///
/// `max_tokens` defaults to [`DEFAULT_MAX_TOKENS`]; `temperature` is capped at 1.0 (the
/// OpenAI range goes to 2.0, Anthropic's stops at 1.0); empty text blocks and messages left
/// empty by that are dropped (Anthropic rejects them); a tool call whose input is not a JSON
/// object (invalid arguments written by an OpenAI model) is wrapped as `{"value": ...}`.
pub fn encode_request(req: &ChatRequest, upstream_model: &str, stream: bool) -> Vec<u8> {
    wire::to_vec(&OutRequest {
        model: upstream_model,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system: req.system.as_deref(),
        messages: OutMessages(&req.messages),
        temperature: req.temperature.map(|t| t.min(1.0)),
        top_p: req.top_p,
        stop_sequences: &req.stop,
        tools: OutTools(&req.tools),
        tool_choice: req.tool_choice.as_ref().map(OutToolChoice::from),
        stream,
        metadata: req
            .user
            .as_deref()
            .map(|user_id| OutMetadata { user_id }),
    })
}

/// Parses an upstream's complete answer.
///
/// Thinking blocks and server-tool blocks are skipped: the canonical response carries only
/// text and tool calls.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ProtoError> {
    let raw: InResponse<'_> =
        serde_json::from_slice(body).map_err(|e| ProtoError::invalid("response", e))?;
    let mut content = Vec::with_capacity(raw.content.len());
    for b in raw.content {
        match b.kind.as_ref() {
            "text" => content.push(ContentPart::Text {
                text: b.text.unwrap_or_default(),
            }),
            "tool_use" => content.push(ContentPart::ToolUse {
                id: b
                    .id
                    .ok_or_else(|| ProtoError::invalid("response", "tool_use block without id"))?,
                name: b.name.ok_or_else(|| {
                    ProtoError::invalid("response", "tool_use block without name")
                })?,
                input: b.input.unwrap_or_else(|| Value::Object(Default::default())),
            }),
            _ => {}
        }
    }
    Ok(ChatResponse {
        id: raw.id,
        model: raw.model,
        content,
        stop_reason: parse_stop_reason(raw.stop_reason.as_deref()),
        usage: Usage {
            input_tokens: raw.usage.input_total().unwrap_or(0),
            output_tokens: raw.usage.output_tokens.unwrap_or(0),
        },
    })
}

/// Parses an upstream's error body, if it has this format's error shape
/// (`{"type":"error","error":{"type":...,"message":...}}`); `error_type` is `error.type`.
pub fn parse_error(body: &[u8]) -> Option<UpstreamError> {
    let raw: InErrorEnvelope = serde_json::from_slice(body).ok()?;
    upstream_error(raw.error)
}

fn upstream_error(e: InErrorBody) -> Option<UpstreamError> {
    if e.kind.is_none() && e.message.is_none() {
        return None;
    }
    Some(UpstreamError {
        error_type: e.kind.unwrap_or_default(),
        message: e.message.unwrap_or_default(),
    })
}

/// Turns canonical stream events into this format's SSE frames for a client.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    started: bool,
    open: Option<u32>,
}

impl StreamEncoder {
    pub fn new() -> Self {
        StreamEncoder::default()
    }

    /// Appends the SSE frames for `ev` to `out`.
    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if let StreamEvent::Start {
            id,
            model,
            input_tokens,
        } = ev
        {
            self.start(id, model, *input_tokens, out);
            return;
        }
        if !self.started {
            // The router always sends `Start` first; if it ever does not, the client still
            // needs a `message_start` before anything else.
            self.start("", "", 0, out);
        }
        match ev {
            StreamEvent::Start { .. } => {}
            StreamEvent::BlockStart { index, block } => {
                self.close_open(out);
                self.open = Some(*index);
                let content_block = match block {
                    BlockKind::Text => OutStartBlock::Text { text: "" },
                    BlockKind::ToolUse { id, name } => OutStartBlock::ToolUse {
                        id,
                        name,
                        input: EmptyObject,
                    },
                };
                write_json_event(
                    out,
                    Some("content_block_start"),
                    &OutEvent::ContentBlockStart {
                        index: *index,
                        content_block,
                    },
                );
            }
            StreamEvent::TextDelta { index, text } => write_json_event(
                out,
                Some("content_block_delta"),
                &OutEvent::ContentBlockDelta {
                    index: *index,
                    delta: OutDelta::TextDelta { text },
                },
            ),
            StreamEvent::ToolArgsDelta {
                index,
                partial_json,
            } => write_json_event(
                out,
                Some("content_block_delta"),
                &OutEvent::ContentBlockDelta {
                    index: *index,
                    delta: OutDelta::InputJsonDelta { partial_json },
                },
            ),
            StreamEvent::BlockStop { index } => {
                self.open = None;
                write_json_event(
                    out,
                    Some("content_block_stop"),
                    &OutEvent::ContentBlockStop { index: *index },
                );
            }
            StreamEvent::Finish { stop_reason, usage } => {
                self.close_open(out);
                write_json_event(
                    out,
                    Some("message_delta"),
                    &OutEvent::MessageDelta {
                        delta: OutMessageDelta {
                            stop_reason: stop_reason_str(*stop_reason),
                            stop_sequence: (),
                        },
                        usage: OutUsage::from(*usage),
                    },
                );
                write_json_event(out, Some("message_stop"), &OutEvent::MessageStop);
            }
        }
    }

    /// Appends the frames that end the stream with an error, as this format does it
    /// (an `error` event; Anthropic sends nothing after it).
    pub fn encode_error(&mut self, err: &ApiError, out: &mut Vec<u8>) {
        write_json_event(
            out,
            Some("error"),
            &OutEvent::Error {
                error: OutError {
                    kind: error_type(err.kind),
                    message: &err.message,
                },
            },
        );
    }

    fn start(&mut self, id: &str, model: &str, input_tokens: u32, out: &mut Vec<u8>) {
        self.started = true;
        write_json_event(
            out,
            Some("message_start"),
            &OutEvent::MessageStart {
                message: OutStartMessage {
                    id: wire::prefixed_id(id, "msg_"),
                    kind: "message",
                    role: "assistant",
                    content: EmptyArray,
                    model,
                    stop_reason: (),
                    stop_sequence: (),
                    usage: OutUsage {
                        input_tokens,
                        output_tokens: 0,
                    },
                },
            },
        );
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        if let Some(index) = self.open.take() {
            write_json_event(
                out,
                Some("content_block_stop"),
                &OutEvent::ContentBlockStop { index },
            );
        }
    }
}

/// Turns an upstream's SSE events of this format into canonical stream events.
///
/// Thinking and server-tool blocks are skipped and the remaining blocks renumbered, so the
/// canonical indexes stay dense. `ping` and unknown event types are ignored.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// Input tokens from `message_start`.
    input_tokens: u32,
    /// Input tokens from `message_delta`, which newer API versions report there too.
    final_input_tokens: Option<u32>,
    output_tokens: u32,
    stop_reason: Option<StopReason>,
    open: Option<OpenBlock>,
    next_index: u32,
    done: bool,
}

#[derive(Debug, Clone, Copy)]
struct OpenBlock {
    upstream: u32,
    /// `None` for a block that is skipped (thinking, server tools).
    canonical: Option<u32>,
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
            "message_start" => {
                let m: InMessageStart =
                    serde_json::from_slice(data).map_err(invalid_event)?;
                self.input_tokens = m.message.usage.input_total().unwrap_or(0);
                out.push(StreamEvent::Start {
                    id: m.message.id,
                    model: m.message.model,
                    input_tokens: self.input_tokens,
                });
            }
            "content_block_start" => {
                let s: InBlockStart<'_> = serde_json::from_slice(data).map_err(invalid_event)?;
                self.close_open(out);
                let block = s.content_block;
                let canonical = match block.kind.as_ref() {
                    "text" => {
                        let index = self.next_index;
                        out.push(StreamEvent::BlockStart {
                            index,
                            block: BlockKind::Text,
                        });
                        if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta { index, text });
                        }
                        Some(index)
                    }
                    "tool_use" => {
                        let index = self.next_index;
                        out.push(StreamEvent::BlockStart {
                            index,
                            block: BlockKind::ToolUse {
                                id: block.id.unwrap_or_default(),
                                name: block.name.unwrap_or_default(),
                            },
                        });
                        // The input is normally `{}` and arrives as deltas; a proxy that
                        // sends it whole in the start event is handled as one delta.
                        if let Some(input) = block.input.filter(|v| !wire::is_empty_object(v)) {
                            out.push(StreamEvent::ToolArgsDelta {
                                index,
                                partial_json: input.to_string(),
                            });
                        }
                        Some(index)
                    }
                    _ => None,
                };
                if canonical.is_some() {
                    self.next_index += 1;
                }
                self.open = Some(OpenBlock {
                    upstream: s.index,
                    canonical,
                });
            }
            "content_block_delta" => {
                let d: InBlockDelta<'_> = serde_json::from_slice(data).map_err(invalid_event)?;
                let open = self.expect_open(d.index)?;
                let Some(index) = open.canonical else {
                    return Ok(());
                };
                match d.delta.kind.as_ref() {
                    "text_delta" => {
                        if let Some(text) = d.delta.text.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta { index, text });
                        }
                    }
                    "input_json_delta" => {
                        if let Some(partial_json) = d.delta.partial_json.filter(|t| !t.is_empty())
                        {
                            out.push(StreamEvent::ToolArgsDelta {
                                index,
                                partial_json,
                            });
                        }
                    }
                    // thinking_delta, signature_delta, citations_delta: nothing canonical.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let s: InBlockStop = serde_json::from_slice(data).map_err(invalid_event)?;
                let open = self.expect_open(s.index)?;
                self.open = None;
                if let Some(index) = open.canonical {
                    out.push(StreamEvent::BlockStop { index });
                }
            }
            "message_delta" => {
                let d: InMessageDelta<'_> = serde_json::from_slice(data).map_err(invalid_event)?;
                if let Some(r) = d.delta.stop_reason {
                    self.stop_reason = Some(parse_stop_reason(Some(&r)));
                }
                if let Some(u) = d.usage {
                    if let Some(n) = u.output_tokens {
                        self.output_tokens = n;
                    }
                    if let Some(n) = u.input_total() {
                        self.final_input_tokens = Some(n);
                    }
                }
            }
            "message_stop" => {
                self.close_open(out);
                self.done = true;
                out.push(StreamEvent::Finish {
                    stop_reason: self.stop_reason.unwrap_or(StopReason::EndTurn),
                    usage: Usage {
                        input_tokens: self.final_input_tokens.unwrap_or(self.input_tokens),
                        output_tokens: self.output_tokens,
                    },
                });
            }
            "error" => {
                let err = serde_json::from_slice::<InErrorEnvelope>(data)
                    .ok()
                    .and_then(|e| upstream_error(e.error))
                    .unwrap_or_else(|| UpstreamError::new("api_error", ev.data.clone()));
                return Err(DecodeError::Upstream(err));
            }
            // `ping`, and event types added after this was written.
            _ => {}
        }
        Ok(())
    }

    /// True once the upstream's terminal event was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn close_open(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(OpenBlock {
            canonical: Some(index),
            ..
        }) = self.open.take()
        {
            out.push(StreamEvent::BlockStop { index });
        }
    }

    fn expect_open(&self, index: u32) -> Result<OpenBlock, DecodeError> {
        match self.open {
            Some(open) if open.upstream == index => Ok(open),
            _ => Err(DecodeError::Proto(ProtoError::invalid(
                "anthropic stream event",
                format!("event for content block {index}, which is not open"),
            ))),
        }
    }
}

fn invalid_event(e: serde_json::Error) -> DecodeError {
    DecodeError::Proto(ProtoError::invalid("anthropic stream event", e))
}

fn block_to_part(b: InBlock<'_>) -> Result<Option<ContentPart>, ProtoError> {
    Ok(Some(match b.kind.as_ref() {
        "text" => ContentPart::Text {
            text: b
                .text
                .ok_or_else(|| ProtoError::invalid("content block", "text block without text"))?,
        },
        "image" => ContentPart::Image {
            source: image_source(b.source)?,
        },
        "tool_use" => ContentPart::ToolUse {
            id: b
                .id
                .ok_or_else(|| ProtoError::invalid("content block", "tool_use without id"))?,
            name: b
                .name
                .ok_or_else(|| ProtoError::invalid("content block", "tool_use without name"))?,
            input: b.input.unwrap_or_else(|| Value::Object(Default::default())),
        },
        "tool_result" => {
            let content = match b.content {
                None => Vec::new(),
                Some(TextOr::Text(text)) if text.is_empty() => Vec::new(),
                Some(TextOr::Text(text)) => vec![ContentPart::Text { text }],
                Some(TextOr::Parts(blocks)) => {
                    let mut parts = Vec::with_capacity(blocks.len());
                    for inner in blocks {
                        if inner.kind != "text" && inner.kind != "image" {
                            return Err(ProtoError::unsupported(
                                "tool_result content",
                                format!(
                                    "block type {:?} (only text and image are supported)",
                                    inner.kind
                                ),
                            ));
                        }
                        if let Some(p) = block_to_part(inner)? {
                            parts.push(p);
                        }
                    }
                    parts
                }
            };
            ContentPart::ToolResult {
                tool_use_id: b.tool_use_id.ok_or_else(|| {
                    ProtoError::invalid("content block", "tool_result without tool_use_id")
                })?,
                content,
                is_error: b.is_error.unwrap_or(false),
            }
        }
        // Thinking from earlier turns does not influence a request without extended
        // thinking (Anthropic strips it too), and such requests are the only ones accepted.
        "thinking" | "redacted_thinking" => return Ok(None),
        other => {
            return Err(ProtoError::unsupported(
                "content block",
                format!("type {other:?} (flotilla translates text, image, tool_use and tool_result)"),
            ));
        }
    }))
}

fn image_source(source: Option<InImageSource<'_>>) -> Result<ImageSource, ProtoError> {
    let s = source.ok_or_else(|| ProtoError::invalid("image", "image block without source"))?;
    match s.kind.as_ref() {
        "base64" => Ok(ImageSource::Base64 {
            media_type: s
                .media_type
                .ok_or_else(|| ProtoError::invalid("image", "base64 source without media_type"))?,
            data: s
                .data
                .ok_or_else(|| ProtoError::invalid("image", "base64 source without data"))?,
        }),
        "url" => Ok(ImageSource::Url {
            url: s
                .url
                .ok_or_else(|| ProtoError::invalid("image", "url source without url"))?,
        }),
        other => Err(ProtoError::unsupported(
            "image source",
            format!("type {other:?} (only base64 and url are supported)"),
        )),
    }
}

fn parse_stop_reason(s: Option<&str>) -> StopReason {
    match s {
        Some("max_tokens" | "model_context_window_exceeded") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence,
        Some("tool_use") => StopReason::ToolUse,
        Some("refusal") => StopReason::Refusal,
        // end_turn, pause_turn (a server tool paused; for the client the turn ended), null.
        _ => StopReason::EndTurn,
    }
}

fn stop_reason_str(r: StopReason) -> &'static str {
    match r {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        // Anthropic has no content filter stop; a refusal is the closest meaning.
        StopReason::ContentFilter | StopReason::Refusal => "refusal",
    }
}

// ---- Inbound wire shapes (flat structs: no buffering of internally tagged enums) ----

#[derive(Deserialize)]
struct InRequest<'a> {
    model: String,
    #[serde(borrow)]
    system: Option<TextOr<InBlock<'a>>>,
    #[serde(borrow)]
    messages: Vec<InMessage<'a>>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop_sequences: Option<Vec<String>>,
    #[serde(borrow)]
    tools: Option<Vec<InTool<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<InToolChoice<'a>>,
    stream: Option<bool>,
    metadata: Option<InMetadata>,
    top_k: Option<IgnoredAny>,
    #[serde(borrow)]
    thinking: Option<InThinking<'a>>,
}

#[derive(Deserialize)]
struct InMessage<'a> {
    role: Role,
    #[serde(borrow)]
    content: TextOr<InBlock<'a>>,
}

#[derive(Deserialize)]
struct InBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    text: Option<String>,
    #[serde(borrow)]
    source: Option<InImageSource<'a>>,
    id: Option<String>,
    name: Option<String>,
    input: Option<Value>,
    tool_use_id: Option<String>,
    #[serde(borrow)]
    content: Option<TextOr<InBlock<'a>>>,
    is_error: Option<bool>,
}

#[derive(Deserialize)]
struct InImageSource<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    media_type: Option<String>,
    data: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct InTool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    name: String,
    description: Option<String>,
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
struct InToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct InThinking<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct InMetadata {
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct InResponse<'a> {
    id: String,
    model: String,
    #[serde(borrow)]
    content: Vec<InBlock<'a>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: InUsage,
}

#[derive(Deserialize, Default)]
struct InUsage {
    input_tokens: Option<u32>,
    cache_creation_input_tokens: Option<u32>,
    cache_read_input_tokens: Option<u32>,
    output_tokens: Option<u32>,
}

impl InUsage {
    fn input_total(&self) -> Option<u32> {
        if self.input_tokens.is_none()
            && self.cache_creation_input_tokens.is_none()
            && self.cache_read_input_tokens.is_none()
        {
            return None;
        }
        Some(
            self.input_tokens
                .unwrap_or(0)
                .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
                .saturating_add(self.cache_read_input_tokens.unwrap_or(0)),
        )
    }
}

#[derive(Deserialize)]
struct InErrorEnvelope {
    error: InErrorBody,
}

#[derive(Deserialize)]
struct InErrorBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct TypePeek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct InMessageStart {
    message: InStartMessage,
}

#[derive(Deserialize)]
struct InStartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: InUsage,
}

#[derive(Deserialize)]
struct InBlockStart<'a> {
    index: u32,
    #[serde(borrow)]
    content_block: InBlock<'a>,
}

#[derive(Deserialize)]
struct InBlockDelta<'a> {
    index: u32,
    #[serde(borrow)]
    delta: InDelta<'a>,
}

#[derive(Deserialize)]
struct InDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    text: Option<String>,
    partial_json: Option<String>,
}

#[derive(Deserialize)]
struct InBlockStop {
    index: u32,
}

#[derive(Deserialize)]
struct InMessageDelta<'a> {
    #[serde(borrow)]
    delta: InMessageDeltaBody<'a>,
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
struct InMessageDeltaBody<'a> {
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

// ---- Outbound wire shapes (borrowing from canonical values) ----

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_empty_slice<T>(s: &&[T]) -> bool {
    s.is_empty()
}

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: OutMessages<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "is_empty_slice")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "OutTools::is_empty")]
    tools: OutTools<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "is_false")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<OutMetadata<'a>>,
}

#[derive(Serialize)]
struct OutMetadata<'a> {
    user_id: &'a str,
}

fn is_empty_text(p: &ContentPart) -> bool {
    matches!(p, ContentPart::Text { text } if text.is_empty())
}

struct OutMessages<'a>(&'a [Message]);

impl Serialize for OutMessages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for m in self.0 {
            if m.content.iter().all(is_empty_text) {
                continue;
            }
            seq.serialize_element(&OutMessage {
                role: m.role,
                content: OutBlocks {
                    parts: &m.content,
                    skip_empty_text: true,
                },
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: Role,
    content: OutBlocks<'a>,
}

struct OutBlocks<'a> {
    parts: &'a [ContentPart],
    skip_empty_text: bool,
}

impl Serialize for OutBlocks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let skip = self.skip_empty_text;
        s.collect_seq(
            self.parts
                .iter()
                .filter(|p| !(skip && is_empty_text(p)))
                .map(OutBlock::from),
        )
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: OutImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: OutToolInput<'a>,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "OutToolResultContent::is_empty")]
        content: OutToolResultContent<'a>,
        #[serde(skip_serializing_if = "is_false")]
        is_error: bool,
    },
}

impl<'a> From<&'a ContentPart> for OutBlock<'a> {
    fn from(p: &'a ContentPart) -> Self {
        match p {
            ContentPart::Text { text } => OutBlock::Text { text },
            ContentPart::Image { source } => OutBlock::Image {
                source: OutImageSource::from(source),
            },
            ContentPart::ToolUse { id, name, input } => OutBlock::ToolUse {
                id,
                name,
                input: OutToolInput(input),
            },
            ContentPart::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => OutBlock::ToolResult {
                tool_use_id,
                content: OutToolResultContent(content),
                is_error: *is_error,
            },
        }
    }
}

/// Anthropic requires tool input to be an object.
struct OutToolInput<'a>(&'a Value);

impl Serialize for OutToolInput<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(_) => self.0.serialize(s),
            other => {
                #[derive(Serialize)]
                struct Wrapped<'a> {
                    value: &'a Value,
                }
                Wrapped { value: other }.serialize(s)
            }
        }
    }
}

struct OutToolResultContent<'a>(&'a [ContentPart]);

impl OutToolResultContent<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for OutToolResultContent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            [ContentPart::Text { text }] => s.serialize_str(text),
            parts => s.collect_seq(parts.iter().map(OutBlock::from)),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

impl<'a> From<&'a ImageSource> for OutImageSource<'a> {
    fn from(s: &'a ImageSource) -> Self {
        match s {
            ImageSource::Url { url } => OutImageSource::Url { url },
            ImageSource::Base64 { media_type, data } => OutImageSource::Base64 { media_type, data },
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
        struct OutTool<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            input_schema: &'a Value,
        }
        s.collect_seq(self.0.iter().map(|t| OutTool {
            name: &t.name,
            description: t.description.as_deref(),
            input_schema: &t.input_schema,
        }))
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutToolChoice<'a> {
    Auto,
    Any,
    None,
    Tool { name: &'a str },
}

impl<'a> From<&'a ToolChoice> for OutToolChoice<'a> {
    fn from(c: &'a ToolChoice) -> Self {
        match c {
            ToolChoice::Auto => OutToolChoice::Auto,
            ToolChoice::Any => OutToolChoice::Any,
            ToolChoice::None => OutToolChoice::None,
            ToolChoice::Tool { name } => OutToolChoice::Tool { name },
        }
    }
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: OutBlocks<'a>,
    stop_reason: &'static str,
    stop_sequence: (),
    usage: OutUsage,
}

#[derive(Serialize, Clone, Copy)]
struct OutUsage {
    input_tokens: u32,
    output_tokens: u32,
}

impl From<Usage> for OutUsage {
    fn from(u: Usage) -> Self {
        OutUsage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        }
    }
}

#[derive(Serialize)]
struct OutErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: OutError<'a>,
}

#[derive(Serialize)]
struct OutError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutEvent<'a> {
    MessageStart {
        message: OutStartMessage<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: OutStartBlock<'a>,
    },
    ContentBlockDelta {
        index: u32,
        delta: OutDelta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: OutMessageDelta,
        usage: OutUsage,
    },
    MessageStop,
    Error {
        error: OutError<'a>,
    },
}

#[derive(Serialize)]
struct OutStartMessage<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    content: EmptyArray,
    model: &'a str,
    stop_reason: (),
    stop_sequence: (),
    usage: OutUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutStartBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: EmptyObject,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct OutMessageDelta {
    stop_reason: &'static str,
    stop_sequence: (),
}
