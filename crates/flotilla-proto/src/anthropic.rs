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
    ApiError, BlockKind, ChatRequest, ChatResponse, ContentPart, ErrorKind, ImageSource, Message, ProtoError, Role,
    StopReason, StreamEvent, ToolChoice, ToolDef, Usage,
};

/// The `max_tokens` sent upstream when the client did not choose one (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Separator used when several system text blocks are merged into the canonical system prompt.
const SYSTEM_JOIN: &str = "\n\n";

/// Parses a client's request body.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ProtoError> {
    let raw: InRequest<'_> = serde_json::from_slice(body).map_err(|e| ProtoError::invalid("request", e))?;
    if raw.top_k.is_some() {
        return Err(ProtoError::unsupported("parameter", "top_k cannot be translated to other providers"));
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
        messages.push(Message { role: m.role, content });
    }

    let mut tools = Vec::new();
    for t in raw.tools.unwrap_or_default() {
        if let Some(kind) = &t.kind
            && kind != "custom"
        {
            return Err(ProtoError::unsupported(
                "tool",
                format!("server tool type {kind:?} (only custom tools with input_schema are supported)"),
            ));
        }
        let input_schema =
            t.input_schema.ok_or_else(|| ProtoError::invalid("tool", format!("{:?} has no input_schema", t.name)))?;
        tools.push(ToolDef { name: t.name, description: t.description, input_schema });
    }

    let tool_choice = match raw.tool_choice {
        None => None,
        Some(tc) => Some(match tc.kind.as_ref() {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Any,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Tool {
                name: tc.name.ok_or_else(|| ProtoError::invalid("tool_choice", "type tool without a name"))?,
            },
            other => {
                return Err(ProtoError::invalid("tool_choice", format!("unknown type {other:?}")));
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
        content: OutBlocks { parts: &resp.content, skip_empty_text: false },
        stop_reason: stop_reason_str(resp.stop_reason),
        stop_sequence: (),
        usage: OutUsage::from(resp.usage),
    })
}

/// Encodes an error body for a client (the HTTP status is `err.status`).
pub fn encode_error(err: &ApiError) -> Vec<u8> {
    wire::to_vec(&OutErrorEnvelope {
        kind: "error",
        error: OutError { kind: error_type(err.kind), message: &err.message },
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
        metadata: req.user.as_deref().map(|user_id| OutMetadata { user_id }),
    })
}

/// Parses an upstream's complete answer.
///
/// Thinking blocks and server-tool blocks are skipped: the canonical response carries only
/// text and tool calls.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ProtoError> {
    let raw: InResponse<'_> = serde_json::from_slice(body).map_err(|e| ProtoError::invalid("response", e))?;
    let mut content = Vec::with_capacity(raw.content.len());
    for b in raw.content {
        match b.kind.as_ref() {
            "text" => content.push(ContentPart::Text { text: b.text.unwrap_or_default() }),
            "tool_use" => content.push(ContentPart::ToolUse {
                id: b.id.ok_or_else(|| ProtoError::invalid("response", "tool_use block without id"))?,
                name: b.name.ok_or_else(|| ProtoError::invalid("response", "tool_use block without name"))?,
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
    Some(UpstreamError { error_type: e.kind.unwrap_or_default(), message: e.message.unwrap_or_default() })
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
        if let StreamEvent::Start { id, model, input_tokens } = ev {
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
                    BlockKind::ToolUse { id, name } => OutStartBlock::ToolUse { id, name, input: EmptyObject },
                };
                write_json_event(
                    out,
                    Some("content_block_start"),
                    &OutEvent::ContentBlockStart { index: *index, content_block },
                );
            }
            StreamEvent::TextDelta { index, text } => write_json_event(
                out,
                Some("content_block_delta"),
                &OutEvent::ContentBlockDelta { index: *index, delta: OutDelta::TextDelta { text } },
            ),
            StreamEvent::ToolArgsDelta { index, partial_json } => write_json_event(
                out,
                Some("content_block_delta"),
                &OutEvent::ContentBlockDelta { index: *index, delta: OutDelta::InputJsonDelta { partial_json } },
            ),
            StreamEvent::BlockStop { index } => {
                self.open = None;
                write_json_event(out, Some("content_block_stop"), &OutEvent::ContentBlockStop { index: *index });
            }
            StreamEvent::Finish { stop_reason, usage } => {
                self.close_open(out);
                write_json_event(
                    out,
                    Some("message_delta"),
                    &OutEvent::MessageDelta {
                        delta: OutMessageDelta { stop_reason: stop_reason_str(*stop_reason), stop_sequence: () },
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
            &OutEvent::Error { error: OutError { kind: error_type(err.kind), message: &err.message } },
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
                    usage: OutUsage { input_tokens, output_tokens: 0 },
                },
            },
        );
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        if let Some(index) = self.open.take() {
            write_json_event(out, Some("content_block_stop"), &OutEvent::ContentBlockStop { index });
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
            "message_start" => {
                let m: InMessageStart = serde_json::from_slice(data).map_err(invalid_event)?;
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
                        out.push(StreamEvent::BlockStart { index, block: BlockKind::Text });
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
                            out.push(StreamEvent::ToolArgsDelta { index, partial_json: input.to_string() });
                        }
                        Some(index)
                    }
                    _ => None,
                };
                if canonical.is_some() {
                    self.next_index += 1;
                }
                self.open = Some(OpenBlock { upstream: s.index, canonical });
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
                        if let Some(partial_json) = d.delta.partial_json.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::ToolArgsDelta { index, partial_json });
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
        if let Some(OpenBlock { canonical: Some(index), .. }) = self.open.take() {
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
            text: b.text.ok_or_else(|| ProtoError::invalid("content block", "text block without text"))?,
        },
        "image" => ContentPart::Image { source: image_source(b.source)? },
        "tool_use" => ContentPart::ToolUse {
            id: b.id.ok_or_else(|| ProtoError::invalid("content block", "tool_use without id"))?,
            name: b.name.ok_or_else(|| ProtoError::invalid("content block", "tool_use without name"))?,
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
                                format!("block type {:?} (only text and image are supported)", inner.kind),
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
                tool_use_id: b
                    .tool_use_id
                    .ok_or_else(|| ProtoError::invalid("content block", "tool_result without tool_use_id"))?,
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
            media_type: s.media_type.ok_or_else(|| ProtoError::invalid("image", "base64 source without media_type"))?,
            data: s.data.ok_or_else(|| ProtoError::invalid("image", "base64 source without data"))?,
        }),
        "url" => {
            Ok(ImageSource::Url { url: s.url.ok_or_else(|| ProtoError::invalid("image", "url source without url"))? })
        }
        other => {
            Err(ProtoError::unsupported("image source", format!("type {other:?} (only base64 and url are supported)")))
        }
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
                content: OutBlocks { parts: &m.content, skip_empty_text: true },
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
        s.collect_seq(self.parts.iter().filter(|p| !(skip && is_empty_text(p))).map(OutBlock::from))
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
            ContentPart::Image { source } => OutBlock::Image { source: OutImageSource::from(source) },
            ContentPart::ToolUse { id, name, input } => OutBlock::ToolUse { id, name, input: OutToolInput(input) },
            ContentPart::ToolResult { tool_use_id, content, is_error } => {
                OutBlock::ToolResult { tool_use_id, content: OutToolResultContent(content), is_error: *is_error }
            }
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
        OutUsage { input_tokens: u.input_tokens, output_tokens: u.output_tokens }
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
    MessageStart { message: OutStartMessage<'a> },
    ContentBlockStart { index: u32, content_block: OutStartBlock<'a> },
    ContentBlockDelta { index: u32, delta: OutDelta<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: OutMessageDelta, usage: OutUsage },
    MessageStop,
    Error { error: OutError<'a> },
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
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: EmptyObject },
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::test_util::{decode_split, sample_request, sample_response, sample_stream, sample_text_stream};

    // The tool-use example of the Messages API documentation, with a cached system block,
    // an image by URL and a tool result.
    const REQUEST: &str = r#"{
      "model": "claude-opus-4-1-20250805",
      "max_tokens": 1024,
      "system": [
        {"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Use metric units."}
      ],
      "tools": [{
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "input_schema": {
          "type": "object",
          "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
          },
          "required": ["location"]
        }
      }],
      "tool_choice": {"type": "auto", "disable_parallel_tool_use": false},
      "messages": [
        {"role": "user", "content": "What's the weather like in San Francisco?"},
        {"role": "assistant", "content": [
          {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
          {"type": "text", "text": "I'll check."},
          {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
           "input": {"location": "San Francisco, CA", "unit": "celsius"}}
        ]},
        {"role": "user", "content": [
          {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
          {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": true,
           "content": [{"type": "text", "text": "timeout"},
                       {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}]},
          {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
          {"type": "text", "text": "And this picture?", "cache_control": {"type": "ephemeral"}}
        ]}
      ],
      "metadata": {"user_id": "user-123"},
      "stop_sequences": ["\n\nHuman:"],
      "temperature": 0.5,
      "stream": true
    }"#;

    #[test]
    fn parses_the_documented_request() {
        let r = parse_request(REQUEST.as_bytes()).unwrap();
        assert_eq!(r.model, "claude-opus-4-1-20250805");
        assert_eq!(r.system.as_deref(), Some("You are a weather bot.\n\nUse metric units."));
        assert_eq!(r.max_tokens, Some(1024));
        assert_eq!(r.temperature, Some(0.5));
        assert_eq!(r.stop, vec!["\n\nHuman:".to_owned()]);
        assert!(r.stream);
        assert_eq!(r.user.as_deref(), Some("user-123"));
        assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(r.tools.len(), 1);
        assert_eq!(r.tools[0].input_schema["required"], json!(["location"]));
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[0], Message::text(Role::User, "What's the weather like in San Francisco?"));
        // The thinking block of an earlier turn is dropped.
        assert_eq!(
            r.messages[1].content,
            vec![
                ContentPart::Text { text: "I'll check.".to_owned() },
                ContentPart::ToolUse {
                    id: "toolu_01A09q90qw90lq917835lq9".to_owned(),
                    name: "get_weather".to_owned(),
                    input: json!({"location": "San Francisco, CA", "unit": "celsius"}),
                },
            ]
        );
        assert_eq!(
            r.messages[2].content[1],
            ContentPart::ToolResult {
                tool_use_id: "toolu_02".to_owned(),
                content: vec![
                    ContentPart::Text { text: "timeout".to_owned() },
                    ContentPart::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/jpeg".to_owned(),
                            data: "/9j/4AAQ".to_owned()
                        }
                    },
                ],
                is_error: true,
            }
        );
        assert_eq!(
            r.messages[2].content[2],
            ContentPart::Image { source: ImageSource::Url { url: "https://upload.wikimedia.org/a.jpg".to_owned() } }
        );
    }

    #[test]
    fn request_round_trips_through_encode() {
        let r1 = parse_request(REQUEST.as_bytes()).unwrap();
        let r2 = parse_request(&encode_request(&r1, &r1.model, r1.stream)).unwrap();
        assert_eq!(r1, r2);

        let mut sample = sample_request();
        sample.stop = vec!["STOP".to_owned()];
        sample.tool_choice = Some(ToolChoice::Tool { name: "get_weather".to_owned() });
        let back = parse_request(&encode_request(&sample, "agent-1", true)).unwrap();
        assert_eq!(back, sample);
        for choice in [ToolChoice::Any, ToolChoice::None, ToolChoice::Auto] {
            sample.tool_choice = Some(choice);
            let back = parse_request(&encode_request(&sample, "agent-1", true)).unwrap();
            assert_eq!(back, sample);
        }
    }

    #[test]
    fn encode_request_applies_anthropic_rules() {
        let mut req = sample_request();
        req.max_tokens = None;
        req.temperature = Some(1.7);
        req.messages.insert(1, Message::text(Role::Assistant, ""));
        req.messages[2].content.push(ContentPart::ToolUse {
            id: "call_bad".to_owned(),
            name: "get_time".to_owned(),
            input: Value::String("{not json".to_owned()),
        });
        let body: Value = serde_json::from_slice(&encode_request(&req, "claude-sonnet-4-5", false)).unwrap();
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["temperature"], 1.0);
        assert!(body.get("stream").is_none());
        assert_eq!(body["system"], "You are terse.\n\nAnswer in English.");
        assert_eq!(body["metadata"], json!({"user_id": "user-42"}));
        // The empty assistant message is gone, so roles still alternate.
        let roles: Vec<&str> =
            body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
        assert_eq!(
            body["messages"][0]["content"][2],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
        );
        assert_eq!(body["messages"][1]["content"][3]["input"], json!({"value": "{not json"}));
        assert_eq!(
            body["messages"][2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "call_1", "content": "18C, cloudy"})
        );
        assert_eq!(body["tools"][1], json!({"name": "get_time", "input_schema": {"type": "object", "properties": {}}}));
    }

    #[test]
    fn rejects_what_cannot_be_translated() {
        let cases = [
            (r#"{"model":"m","max_tokens":1,"top_k":5,"messages":[]}"#, "top_k"),
            (
                r#"{"model":"m","max_tokens":1,"thinking":{"type":"enabled","budget_tokens":2000},"messages":[]}"#,
                "thinking",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"x"}}]}]}"#,
                "document",
            ),
            (
                r#"{"model":"m","max_tokens":1,"tools":[{"type":"web_search_20250305","name":"web_search"}],"messages":[]}"#,
                "web_search_20250305",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}"#,
                "file",
            ),
        ];
        for (body, needle) in cases {
            match parse_request(body.as_bytes()) {
                Err(e @ ProtoError::Unsupported { .. }) => {
                    assert!(e.to_string().contains(needle), "{e} lacks {needle}")
                }
                other => panic!("{body}: expected unsupported, got {other:?}"),
            }
        }
        let ok = r#"{"model":"m","max_tokens":1,"thinking":{"type":"disabled"},"messages":[]}"#;
        assert!(parse_request(ok.as_bytes()).is_ok());
        for bad in [
            "not json",
            r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
        ] {
            assert!(matches!(parse_request(bad.as_bytes()), Err(ProtoError::Invalid { .. })), "{bad}");
        }
    }

    #[test]
    fn parses_the_documented_response() {
        let body = r#"{
          "id": "msg_01Aq9w938a90dw8q",
          "type": "message",
          "role": "assistant",
          "model": "claude-opus-4-1-20250805",
          "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "I'll check the weather."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "celsius"}}
          ],
          "stop_reason": "tool_use",
          "stop_sequence": null,
          "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100}
        }"#;
        let r = parse_response(body.as_bytes()).unwrap();
        assert_eq!(r.id, "msg_01Aq9w938a90dw8q");
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        assert_eq!(r.usage, Usage { input_tokens: 2200, output_tokens: 503 });
        assert_eq!(r.content.len(), 2);
        assert!(matches!(&r.content[1], ContentPart::ToolUse { name, .. } if name == "get_weather"));

        for (reason, expected) in [
            ("end_turn", StopReason::EndTurn),
            ("pause_turn", StopReason::EndTurn),
            ("max_tokens", StopReason::MaxTokens),
            ("stop_sequence", StopReason::StopSequence),
            ("refusal", StopReason::Refusal),
        ] {
            let body = json!({"id": "msg_1", "model": "m", "content": [], "stop_reason": reason,
                              "usage": {"input_tokens": 1, "output_tokens": 1}});
            assert_eq!(parse_response(body.to_string().as_bytes()).unwrap().stop_reason, expected);
        }
    }

    #[test]
    fn response_round_trips_and_has_the_sdk_shape() {
        let resp = sample_response("msg_01XYZ");
        let bytes = encode_response(&resp);
        assert_eq!(parse_response(&bytes).unwrap(), resp);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["stop_sequence"], Value::Null);
        assert_eq!(v["usage"], json!({"input_tokens": 100, "output_tokens": 20}));
        assert_eq!(v["content"][1]["type"], "tool_use");

        // An id from another format gets Anthropic's prefix.
        let mut other = resp.clone();
        other.id = "chatcmpl-abc".to_owned();
        let v: Value = serde_json::from_slice(&encode_response(&other)).unwrap();
        assert_eq!(v["id"], "msg_abc");
    }

    #[test]
    fn error_bodies() {
        let body = encode_error(&ApiError::new(ErrorKind::Overloaded, "Overloaded"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        for (kind, t) in [
            (ErrorKind::InvalidRequest, "invalid_request_error"),
            (ErrorKind::Authentication, "authentication_error"),
            (ErrorKind::PermissionDenied, "permission_error"),
            (ErrorKind::NotFound, "not_found_error"),
            (ErrorKind::RequestTooLarge, "request_too_large"),
            (ErrorKind::RateLimit, "rate_limit_error"),
            (ErrorKind::Api, "api_error"),
            (ErrorKind::Timeout, "timeout_error"),
        ] {
            let e = parse_error(&encode_error(&ApiError::new(kind, "m"))).unwrap();
            assert_eq!(e.error_type, t);
        }
        let e = parse_error(
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"},"request_id":"req_1"}"#,
        )
        .unwrap();
        assert_eq!(e.error_type, "invalid_request_error");
        assert!(e.is_context_too_long());
        assert!(parse_error(b"<html>502 Bad Gateway</html>").is_none());
        assert!(parse_error(br#"{"error":{}}"#).is_none());
    }

    fn decode(bytes: &[u8], seed: u64) -> Result<(Vec<StreamEvent>, bool), DecodeError> {
        let mut d = StreamDecoder::new();
        let events = decode_split(bytes, seed, |ev| d.feed(ev))?;
        Ok((events, d.is_done()))
    }

    #[test]
    fn stream_round_trips_through_encoder_and_decoder() {
        for events in [sample_stream("msg_1", 321), sample_text_stream("msg_2", 10)] {
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
        for ev in &sample_text_stream("chatcmpl-9", 7) {
            enc.encode(ev, &mut bytes);
        }
        let text = String::from_utf8(bytes).unwrap();
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let datas: Vec<Value> =
            text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
        assert_eq!(datas[0]["message"]["id"], "msg_9");
        assert_eq!(datas[0]["message"]["content"], json!([]));
        assert_eq!(datas[0]["message"]["usage"]["input_tokens"], 7);
        assert_eq!(datas[1]["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(datas[2]["delta"], json!({"type": "text_delta", "text": "Once upon"}));
        assert_eq!(datas[5]["delta"]["stop_reason"], "max_tokens");
        assert_eq!(datas[5]["usage"]["output_tokens"], 2);
        assert_eq!(datas[6], json!({"type": "message_stop"}));
    }

    #[test]
    fn decodes_the_documented_streams() {
        let text = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-1-20250805", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"#;
        let (events, done) = decode(text.replace('\n', "\r\n").as_bytes(), 3).unwrap();
        assert!(done);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".to_owned(),
                    model: "claude-opus-4-1-20250805".to_owned(),
                    input_tokens: 25
                },
                StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
                StreamEvent::TextDelta { index: 0, text: "Hello".to_owned() },
                StreamEvent::TextDelta { index: 0, text: "!".to_owned() },
                StreamEvent::BlockStop { index: 0 },
                StreamEvent::Finish {
                    stop_reason: StopReason::EndTurn,
                    usage: Usage { input_tokens: 25, output_tokens: 15 }
                },
            ]
        );

        // Extended thinking before a tool call: the thinking block is skipped and the tool
        // block renumbered to 0.
        let tools = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2,"cache_read_input_tokens":28},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me look up the weather."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;
        let (events, done) = decode(tools.as_bytes(), 11).unwrap();
        assert!(done);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "msg_014p7gG3wDgGV9EUtLvnow3U".to_owned(),
                    model: "claude-sonnet-4-5".to_owned(),
                    input_tokens: 500
                },
                StreamEvent::BlockStart {
                    index: 0,
                    block: BlockKind::ToolUse {
                        id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".to_owned(),
                        name: "get_weather".to_owned()
                    }
                },
                StreamEvent::ToolArgsDelta { index: 0, partial_json: "{\"location\": \"San Fra".to_owned() },
                StreamEvent::ToolArgsDelta { index: 0, partial_json: "ncisco, CA\"}".to_owned() },
                StreamEvent::BlockStop { index: 0 },
                StreamEvent::Finish {
                    stop_reason: StopReason::ToolUse,
                    usage: Usage { input_tokens: 500, output_tokens: 89 }
                },
            ]
        );
    }

    #[test]
    fn decoder_reports_errors() {
        let overloaded = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3}}}\n\n\
                          event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        match decode(overloaded.as_bytes(), 1) {
            Err(DecodeError::Upstream(e)) => {
                assert_eq!(e, UpstreamError::new("overloaded_error", "Overloaded"));
                assert!(e.is_overloaded());
            }
            other => panic!("expected upstream error, got {other:?}"),
        }
        // The error event is recognised by its data type too, without an `event:` line.
        let mut d = StreamDecoder::new();
        let ev = SseEvent {
            event: None,
            data: r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#.to_owned(),
        };
        assert!(matches!(d.feed(&ev), Err(DecodeError::Upstream(e)) if e.error_type == "api_error"));

        let garbage = SseEvent {
            event: Some("content_block_delta".to_owned()),
            data: "{\"type\": \"content_block_delta\", \"index\": ".to_owned(),
        };
        assert!(matches!(StreamDecoder::new().feed(&garbage), Err(DecodeError::Proto(_))));
        let not_json = SseEvent { event: None, data: "hello".to_owned() };
        assert!(matches!(StreamDecoder::new().feed(&not_json), Err(DecodeError::Proto(_))));
        // A delta for a block that was never opened.
        let orphan = SseEvent {
            event: Some("content_block_delta".to_owned()),
            data: r#"{"type":"content_block_delta","index":4,"delta":{"type":"text_delta","text":"x"}}"#.to_owned(),
        };
        assert!(matches!(StreamDecoder::new().feed(&orphan), Err(DecodeError::Proto(_))));
    }

    #[test]
    fn decoder_accepts_content_given_whole_in_block_starts() {
        // Some proxies put the text or the whole tool input in content_block_start.
        let text = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_p\",\"model\":\"m\",\"usage\":{\"input_tokens\":4}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"Hi\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{\"a\":1}}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"input_tokens\":9,\"output_tokens\":2}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let (events, done) = decode(text.as_bytes(), 7).unwrap();
        assert!(done);
        assert_eq!(
            events[1..],
            [
                StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
                StreamEvent::TextDelta { index: 0, text: "Hi".to_owned() },
                StreamEvent::BlockStop { index: 0 },
                StreamEvent::BlockStart {
                    index: 1,
                    block: BlockKind::ToolUse { id: "t1".to_owned(), name: "f".to_owned() }
                },
                StreamEvent::ToolArgsDelta { index: 1, partial_json: "{\"a\":1}".to_owned() },
                StreamEvent::BlockStop { index: 1 },
                StreamEvent::Finish {
                    stop_reason: StopReason::MaxTokens,
                    // message_delta's input count (newer API versions) wins.
                    usage: Usage { input_tokens: 9, output_tokens: 2 }
                },
            ]
        );
    }

    #[test]
    fn stream_error_frame_is_an_error_event() {
        let mut enc = StreamEncoder::new();
        let mut bytes = Vec::new();
        enc.encode(&sample_text_stream("msg_1", 1)[0], &mut bytes);
        enc.encode_error(&ApiError::new(ErrorKind::Overloaded, "all upstreams failed"), &mut bytes);
        match decode(&bytes, 5) {
            Err(DecodeError::Upstream(e)) => {
                assert_eq!(e, UpstreamError::new("overloaded_error", "all upstreams failed"))
            }
            other => panic!("expected upstream error, got {other:?}"),
        }
    }
}
