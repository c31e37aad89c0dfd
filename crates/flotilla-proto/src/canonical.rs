//! The canonical, format-neutral request, response and stream event types.
//!
//! The model is close to Anthropic Messages (the richest of the three formats): a system
//! prompt, alternating user/assistant messages made of content parts, tool definitions, and a
//! response made of text and tool-use blocks with a stop reason and usage.

use serde::{Deserialize, Serialize};

/// One chat request, whatever format it arrived in.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model name as the client wrote it (an agent id, `provider/model`, or a chain name).
    pub model: String,
    /// The system prompt, if any (OpenAI `system`/`developer` messages are merged here).
    pub system: Option<String>,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// Output token cap; `None` lets the encoder choose the format's default.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoice>,
    /// Whether the client asked for a server-sent-event stream.
    pub stream: bool,
    /// An end-user id, if the client passed one (`metadata.user_id` / `user`).
    pub user: Option<String>,
}

/// Who said a message. System prompts live in [`ChatRequest::system`], tool results in user
/// messages (as Anthropic does it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentPart>,
}

impl Message {
    /// A message holding one text part.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message { role, content: vec![ContentPart::Text { text: text.into() }] }
    }
}

/// One piece of message content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    /// A tool call made by the assistant.
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// The result of a tool call, sent back by the user side.
    ToolResult {
        tool_use_id: String,
        content: Vec<ContentPart>,
        is_error: bool,
    },
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    Url { url: String },
    Base64 { media_type: String, data: String },
}

/// A tool the model may call; `input_schema` is a JSON Schema object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: serde_json::Value,
}

/// How the model must use tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    /// Must call some tool (OpenAI `required`, Anthropic `any`).
    Any,
    None,
    Tool {
        name: String,
    },
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    /// The model that actually answered (upstream name, without provider prefix).
    pub model: String,
    /// Text and tool-use parts, in order.
    pub content: Vec<ContentPart>,
    pub stop_reason: StopReason,
    pub usage: Usage,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    ContentFilter,
    Refusal,
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// One event of a streamed answer, format-neutral.
///
/// A well-formed stream is: `Start`, then for each content block `BlockStart`, any number of
/// deltas for that index, `BlockStop`; then `Finish`. Encoders emit the closing frames of their
/// format (`message_stop`, `[DONE]`, `response.completed`) on `Finish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// Lifecycle: the answer began. Held back by the router until the first content arrives.
    Start { id: String, model: String, input_tokens: u32 },
    /// A content block opens at `index` (0-based, in order).
    BlockStart { index: u32, block: BlockKind },
    /// Text appended to the text block at `index`.
    TextDelta { index: u32, text: String },
    /// A fragment of the JSON arguments of the tool-use block at `index`.
    ToolArgsDelta { index: u32, partial_json: String },
    /// The block at `index` is complete.
    BlockStop { index: u32 },
    /// The answer is complete.
    Finish { stop_reason: StopReason, usage: Usage },
}

impl StreamEvent {
    /// True for events that carry content the client would see (the failover point of no
    /// return): text, tool calls, or a finish.
    pub fn is_content(&self) -> bool {
        !matches!(self, StreamEvent::Start { .. })
    }
}

/// The kind of a streamed content block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BlockKind {
    Text,
    ToolUse { id: String, name: String },
}
