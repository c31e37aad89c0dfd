//! Helpers shared by the format tests: canonical samples and a chunk-splitting SSE feeder.

use serde_json::json;

use crate::error::DecodeError;
use crate::sse::{SseEvent, SseParser};
use crate::{
    BlockKind, ChatRequest, ChatResponse, ContentPart, ImageSource, Message, Role, StopReason, StreamEvent, ToolChoice,
    ToolDef, Usage,
};

/// A tiny deterministic generator (xorshift64*), so split points differ per seed but every
/// run is the same.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// Cuts `bytes` into random chunks (1 to 40 bytes, so cuts land inside UTF-8 characters, CRLF
/// pairs and JSON), parses them as SSE and feeds every event to `feed`.
pub(crate) fn decode_split(
    bytes: &[u8],
    seed: u64,
    mut feed: impl FnMut(&SseEvent) -> Result<Vec<StreamEvent>, DecodeError>,
) -> Result<Vec<StreamEvent>, DecodeError> {
    let mut rng = Rng::new(seed);
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (1 + rng.below(40)).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        parser.push(chunk, &mut events).map_err(DecodeError::Proto)?;
        for ev in events.drain(..) {
            out.extend(feed(&ev)?);
        }
    }
    assert!(!parser.has_partial(), "encoder output ends mid-event");
    Ok(out)
}

/// A canonical answer stream with a text block (multi-byte characters, a newline) and a
/// tool-use block whose arguments arrive in pieces.
pub(crate) fn sample_stream(id: &str, input_tokens: u32) -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start { id: id.to_owned(), model: "model-x".to_owned(), input_tokens },
        StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
        StreamEvent::TextDelta { index: 0, text: "Let me check h\u{e9}r\u{e9} \u{1f680}".to_owned() },
        StreamEvent::TextDelta { index: 0, text: " for you:\n\"quoted\"".to_owned() },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart {
            index: 1,
            block: BlockKind::ToolUse { id: "call_w1".to_owned(), name: "get_weather".to_owned() },
        },
        StreamEvent::ToolArgsDelta { index: 1, partial_json: "{\"location\": \"Par".to_owned() },
        StreamEvent::ToolArgsDelta { index: 1, partial_json: "is\"}".to_owned() },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::BlockStart {
            index: 2,
            block: BlockKind::ToolUse { id: "call_w2".to_owned(), name: "get_time".to_owned() },
        },
        StreamEvent::ToolArgsDelta { index: 2, partial_json: "{}".to_owned() },
        StreamEvent::BlockStop { index: 2 },
        StreamEvent::Finish { stop_reason: StopReason::ToolUse, usage: Usage { input_tokens: 321, output_tokens: 45 } },
    ]
}

/// A text-only stream that ends on the token cap.
pub(crate) fn sample_text_stream(id: &str, input_tokens: u32) -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start { id: id.to_owned(), model: "model-x".to_owned(), input_tokens },
        StreamEvent::BlockStart { index: 0, block: BlockKind::Text },
        StreamEvent::TextDelta { index: 0, text: "Once upon".to_owned() },
        StreamEvent::TextDelta { index: 0, text: " a time".to_owned() },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::Finish { stop_reason: StopReason::MaxTokens, usage: Usage { input_tokens: 10, output_tokens: 2 } },
    ]
}

pub(crate) fn weather_tool() -> ToolDef {
    ToolDef {
        name: "get_weather".to_owned(),
        description: Some("Get the current weather in a given location".to_owned()),
        input_schema: json!({
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"]
        }),
    }
}

/// A canonical request using everything all three formats can carry: system prompt, several
/// turns, images by URL and base64, tools, parallel tool calls and their results.
pub(crate) fn sample_request() -> ChatRequest {
    ChatRequest {
        model: "agent-1".to_owned(),
        system: Some("You are terse.\n\nAnswer in English.".to_owned()),
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::Text { text: "Weather in Paris and the time? Also this:".to_owned() },
                    ContentPart::Image { source: ImageSource::Url { url: "https://example.com/cat.png".to_owned() } },
                    ContentPart::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".to_owned(),
                            data: "iVBORw0KGgo=".to_owned(),
                        },
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Text { text: "Checking.".to_owned() },
                    ContentPart::ToolUse {
                        id: "call_1".to_owned(),
                        name: "get_weather".to_owned(),
                        input: json!({"location": "Paris"}),
                    },
                    ContentPart::ToolUse { id: "call_2".to_owned(), name: "get_time".to_owned(), input: json!({}) },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::ToolResult {
                        tool_use_id: "call_1".to_owned(),
                        content: vec![ContentPart::Text { text: "18C, cloudy".to_owned() }],
                        is_error: false,
                    },
                    ContentPart::ToolResult {
                        tool_use_id: "call_2".to_owned(),
                        content: vec![ContentPart::Text { text: "14:05".to_owned() }],
                        is_error: false,
                    },
                ],
            },
            Message::text(Role::Assistant, "18C and cloudy; it is 14:05."),
            Message::text(Role::User, "Thanks!"),
        ],
        max_tokens: Some(512),
        temperature: Some(0.5),
        top_p: Some(0.9),
        stop: Vec::new(),
        tools: vec![
            weather_tool(),
            ToolDef {
                name: "get_time".to_owned(),
                description: None,
                input_schema: json!({"type": "object", "properties": {}}),
            },
        ],
        tool_choice: Some(ToolChoice::Auto),
        stream: true,
        user: Some("user-42".to_owned()),
    }
}

/// A canonical answer with text and a tool call.
pub(crate) fn sample_response(id: &str) -> ChatResponse {
    ChatResponse {
        id: id.to_owned(),
        model: "model-x".to_owned(),
        content: vec![
            ContentPart::Text { text: "Checking the weather.".to_owned() },
            ContentPart::ToolUse {
                id: "call_9".to_owned(),
                name: "get_weather".to_owned(),
                input: json!({"location": "Paris", "units": ["c", "f"]}),
            },
        ],
        stop_reason: StopReason::ToolUse,
        usage: Usage { input_tokens: 100, output_tokens: 20 },
    }
}
