//! The Anthropic Messages API wire format: client-side parsing/encoding and upstream-side encoding/decoding.

use crate::error::UpstreamError;
use crate::sse::SseEvent;
use crate::{ApiError, ChatRequest, ChatResponse, ProtoError, StreamEvent};

/// Parses a client's request body.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ProtoError> {
    let _ = body;
    todo!()
}

/// Encodes a complete answer for a client.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let _ = resp;
    todo!()
}

/// Encodes an error body for a client (the HTTP status is `err.status`).
pub fn encode_error(err: &ApiError) -> Vec<u8> {
    let _ = err;
    todo!()
}

/// Encodes a request for an upstream of this format, naming `upstream_model`.
pub fn encode_request(req: &ChatRequest, upstream_model: &str, stream: bool) -> Vec<u8> {
    let _ = (req, upstream_model, stream);
    todo!()
}

/// Parses an upstream's complete answer.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ProtoError> {
    let _ = body;
    todo!()
}

/// Parses an upstream's error body, if it has this format's error shape.
pub fn parse_error(body: &[u8]) -> Option<UpstreamError> {
    let _ = body;
    todo!()
}

/// Turns canonical stream events into this format's SSE frames for a client.
#[derive(Debug, Default)]
pub struct StreamEncoder {}

impl StreamEncoder {
    pub fn new() -> Self {
        StreamEncoder::default()
    }
    /// Appends the SSE frames for `ev` to `out`.
    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        let _ = (ev, out);
        todo!()
    }
    /// Appends the frames that end the stream with an error, as this format does it.
    pub fn encode_error(&mut self, err: &ApiError, out: &mut Vec<u8>) {
        let _ = (err, out);
        todo!()
    }
}

/// Turns an upstream's SSE events of this format into canonical stream events.
#[derive(Debug, Default)]
pub struct StreamDecoder {}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder::default()
    }
    /// Feeds one SSE event; returns the canonical events it completes.
    pub fn feed(&mut self, ev: &SseEvent) -> Result<Vec<StreamEvent>, crate::error::DecodeError> {
        let _ = ev;
        todo!()
    }
    /// True once the upstream's terminal event was seen.
    pub fn is_done(&self) -> bool {
        todo!()
    }
}
