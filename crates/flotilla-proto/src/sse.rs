//! Incremental server-sent-events parsing and writing (the subset LLM APIs use).
//!
//! The parser follows the WHATWG event-stream rules: `\n`, `\r\n` and `\r` line endings, `:`
//! comments, several `data:` lines joined with `\n`, one optional space after the colon, and
//! `id:`/`retry:` ignored. Bytes are buffered until a line is complete, so chunks may be cut
//! anywhere, including inside a UTF-8 character or between `\r` and `\n`.

use serde::Serialize;

use crate::ProtoError;

/// The largest single event the parser accepts; a bigger one is an upstream gone wrong.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

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
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` of the next one ends nothing.
    skip_lf: bool,
    /// A line was processed already (a byte-order mark is dropped only before the first).
    seen_line: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds bytes; complete events are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), ProtoError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    if self.line.is_empty() {
                        self.line_done(&rest[..end], out)?;
                    } else {
                        self.line.extend_from_slice(&rest[..end]);
                        self.check_size()?;
                        // Taken out and put back so the buffer keeps its capacity.
                        let line = std::mem::take(&mut self.line);
                        let r = self.line_done(&line, out);
                        self.line = line;
                        self.line.clear();
                        r?;
                    }
                    self.skip_lf = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                }
                None => {
                    self.line.extend_from_slice(rest);
                    self.check_size()?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// True when bytes of an unfinished event are buffered (a cut stream).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.event.is_some()
    }

    fn check_size(&self) -> Result<(), ProtoError> {
        if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(ProtoError::invalid("event stream", format!("event larger than {MAX_EVENT_BYTES} bytes")));
        }
        Ok(())
    }

    fn line_done(&mut self, mut line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), ProtoError> {
        if !self.seen_line {
            self.seen_line = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                out.push(SseEvent { event: self.event.take(), data: std::mem::take(&mut self.data) });
            } else {
                self.event = None;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.has_data = true;
                self.data.push_str(&String::from_utf8_lossy(value));
                if self.data.len() > MAX_EVENT_BYTES {
                    return Err(ProtoError::invalid(
                        "event stream",
                        format!("event larger than {MAX_EVENT_BYTES} bytes"),
                    ));
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // `id`, `retry` and unknown fields carry nothing the LLM APIs use.
            _ => {}
        }
        Ok(())
    }
}

/// Appends one SSE frame.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    let mut rest = data;
    loop {
        let (line, next) = match rest.find(['\n', '\r']) {
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..i], Some(&rest[i + skip..]))
            }
            None => (rest, None),
        };
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    out.push(b'\n');
}

/// Appends one SSE frame whose data is `payload` as JSON, serialized straight into `out`
/// (JSON never contains a raw newline, so it is always a single `data:` line).
pub fn write_json_event<T: Serialize + ?Sized>(out: &mut Vec<u8>, event: Option<&str>, payload: &T) {
    let start = out.len();
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    // Only our own wire structs are written here and they cannot fail to serialize; if one
    // ever did, dropping the frame beats sending half of it.
    if serde_json::to_writer(&mut *out, payload).is_err() {
        out.truncate(start);
        return;
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], split: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in input.chunks(split.max(1)) {
            p.push(c, &mut out).unwrap();
        }
        assert!(!p.has_partial(), "partial left for split {split}");
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: event.map(str::to_owned), data: data.to_owned() }
    }

    #[test]
    fn parses_fields_comments_and_line_endings_at_every_split() {
        let input = "\u{feff}: comment\r\nevent: message_start\r\ndata: {\"a\":1}\r\nid: 7\r\nretry: 100\r\n\r\n\
                     data: first\rdata:second\r\rdata: h\u{e9}llo \u{1f680}\n\n: only a comment\n\n\
                     event: ping\n\ndata\n\n";
        let expected = vec![
            ev(Some("message_start"), "{\"a\":1}"),
            ev(None, "first\nsecond"),
            ev(None, "h\u{e9}llo \u{1f680}"),
            ev(None, ""),
        ];
        for split in 1..input.len() {
            assert_eq!(parse_all(input.as_bytes(), split), expected, "split {split}");
        }
    }

    #[test]
    fn crlf_split_between_cr_and_lf_is_one_line_ending() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"data: a\r", &mut out).unwrap();
        p.push(b"\ndata: b\r", &mut out).unwrap();
        p.push(b"\n\r", &mut out).unwrap();
        p.push(b"\n", &mut out).unwrap();
        assert_eq!(out, vec![ev(None, "a\nb")]);
        assert!(!p.has_partial());
    }

    #[test]
    fn reports_a_cut_event_as_partial() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"event: x\ndata: {\"half\":", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.has_partial());
        p.push(b"1}\n", &mut out).unwrap();
        assert!(p.has_partial(), "no blank line yet");
        p.push(b"\n", &mut out).unwrap();
        assert_eq!(out, vec![ev(Some("x"), "{\"half\":1}")]);
        assert!(!p.has_partial());
    }

    #[test]
    fn rejects_an_event_over_the_cap() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"data: ", &mut out).unwrap();
        let block = vec![b'x'; 1024 * 1024];
        let mut failed = false;
        for _ in 0..17 {
            if p.push(&block, &mut out).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "17 MiB event accepted");

        // The cap also holds when the event is made of many short data lines.
        let mut p = SseParser::new();
        let line = format!("data: {}\n", "y".repeat(1023));
        let many = line.repeat(1024);
        let mut failed = false;
        for _ in 0..17 {
            if p.push(many.as_bytes(), &mut out).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "17 MiB of data lines accepted");
        assert!(out.is_empty());
    }

    #[test]
    fn write_event_splits_multiline_data_and_round_trips() {
        let mut buf = Vec::new();
        write_event(&mut buf, Some("message"), "one\ntwo\r\nthree\rfour");
        write_event(&mut buf, None, "");
        assert_eq!(
            String::from_utf8(buf.clone()).unwrap(),
            "event: message\ndata: one\ndata: two\ndata: three\ndata: four\n\ndata: \n\n"
        );
        assert_eq!(parse_all(&buf, 3), vec![ev(Some("message"), "one\ntwo\nthree\nfour"), ev(None, "")]);
    }

    #[test]
    fn write_json_event_writes_one_data_line() {
        let mut buf = Vec::new();
        write_json_event(&mut buf, Some("e"), &serde_json::json!({"t": "a\nb"}));
        assert_eq!(String::from_utf8(buf).unwrap(), "event: e\ndata: {\"t\":\"a\\nb\"}\n\n");
    }
}
