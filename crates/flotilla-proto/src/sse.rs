//! Incremental server-sent-events parsing and writing (the subset LLM APIs use).

use crate::ProtoError;

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if present.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Parses a byte stream into SSE events, chunk by chunk.
#[derive(Debug, Default)]
pub struct SseParser {}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }
    /// Feeds bytes; complete events are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), ProtoError> {
        let _ = (chunk, out);
        todo!()
    }
    /// True when bytes of an unfinished event are buffered (a cut stream).
    pub fn has_partial(&self) -> bool {
        todo!()
    }
}

/// Appends one SSE frame.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    let _ = (out, event, data);
    todo!()
}
