//! The simulated model: decides whether to answer with text or a tool call and generates
//! it from a hash of the conversation, so the same request always gets the same answer.

use serde_json::{Map, Value};

use crate::util::{Fnv, div_ceil_u64};

/// The parts of a request the generator needs, extracted by each API's parser.
#[derive(Debug, Clone)]
pub(crate) struct Prompt {
    pub model: String,
    pub stream: bool,
    /// The request's output cap (`max_tokens`, `max_completion_tokens`, `max_output_tokens`).
    pub max_tokens: Option<u64>,
    pub tools: Vec<Tool>,
    pub choice: Choice,
    pub last: Last,
    /// Characters of every string in the prompt (system, messages including their roles,
    /// tool definitions): a cheap stand-in for a tokenizer.
    pub prompt_chars: u64,
    /// Hash of the conversation; the seed of the reply.
    pub seed: u64,
}

impl Prompt {
    /// Tokens ≈ characters / 4, at least 1.
    pub fn input_tokens(&self) -> u64 {
        div_ceil_u64(self.prompt_chars, 4).max(1)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Tool {
    pub name: String,
    pub schema: Value,
}

/// How the request wants tools used.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Choice {
    Auto,
    None,
    /// Must call some tool (Anthropic `any`, OpenAI `required`).
    Any,
    /// Must call this tool.
    Tool(String),
}

/// What the conversation ends with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Last {
    /// A user message that is not a tool result.
    User,
    /// A tool result; its text content.
    ToolResult(String),
    /// An assistant message (prefill).
    Assistant,
}

/// The generated answer, format-neutral.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub body: ReplyBody,
    pub stop: Stop,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone)]
pub(crate) enum ReplyBody {
    /// Text, pre-split into the deltas a stream sends (one word ≈ one token each).
    Text { chunks: Vec<String> },
    ToolCall {
        name: String,
        input: Value,
        /// `input` serialised, and split into the fragments a stream sends.
        arguments: String,
        fragments: Vec<String>,
    },
}

impl ReplyBody {
    #[cfg(test)]
    pub fn text(&self) -> String {
        match self {
            ReplyBody::Text { chunks } => chunks.concat(),
            ReplyBody::ToolCall { .. } => String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    EndTurn,
    MaxTokens,
    ToolUse,
}

const WORDS: &[&str] = &[
    "the", "fleet", "agent", "answers", "quickly", "while", "a", "provider", "is", "busy", "and", "every", "message",
    "arrives", "safely", "through", "journal", "router", "breaker", "opens", "then", "closes", "again", "after",
    "cooldown", "so", "nothing", "gets", "lost", "on", "any", "node", "harbor", "sails", "wind", "steady", "course",
    "signal", "clear", "morning", "tide", "compass", "north", "river", "stone", "bright", "calm", "work", "done",
    "today", "with", "care", "thread", "reply", "simple", "small", "model", "token", "stream", "ready", "fine", "plan",
    "good", "yes",
];

/// Tool results quoted back are cut to this many words, so a huge result can't make a huge
/// reply.
const MAX_QUOTED_WORDS: usize = 200;

/// Decides and generates the reply.
pub(crate) fn plan(p: &Prompt, reply_tokens: u32) -> Reply {
    let input_tokens = p.input_tokens();
    if let Some(tool) = pick_tool(p) {
        let input = input_from_schema(&tool.schema);
        let arguments = serde_json::to_string(&input).unwrap_or_else(|_| "{}".to_owned());
        let fragments = split_fragments(&arguments, 3);
        let output_tokens = div_ceil_u64((tool.name.len() + arguments.len()) as u64, 4) + 1;
        return Reply {
            body: ReplyBody::ToolCall { name: tool.name.clone(), input, arguments, fragments },
            stop: Stop::ToolUse,
            input_tokens,
            output_tokens,
        };
    }

    let mut chunks = vec![format!("[{}]", p.model)];
    match &p.last {
        Last::ToolResult(content) => {
            chunks.push(" Tool".to_owned());
            chunks.push(" result:".to_owned());
            let words: Vec<&str> = content.split_whitespace().collect();
            if words.is_empty() {
                chunks.push(" (empty)".to_owned());
            }
            chunks.extend(words.iter().take(MAX_QUOTED_WORDS).map(|w| format!(" {w}")));
        }
        Last::User | Last::Assistant => {
            let mut rng = fastrand::Rng::with_seed(p.seed);
            let n = reply_tokens.max(1) as usize;
            for i in 1..n {
                let w = WORDS[rng.usize(..WORDS.len())];
                chunks.push(if i + 1 == n { format!(" {w}.") } else { format!(" {w}") });
            }
        }
    }

    let mut stop = Stop::EndTurn;
    if let Some(cap) = p.max_tokens {
        let cap = usize::try_from(cap.max(1)).unwrap_or(usize::MAX);
        if chunks.len() > cap {
            chunks.truncate(cap);
            stop = Stop::MaxTokens;
        }
    }
    let output_tokens = chunks.len() as u64;
    Reply { body: ReplyBody::Text { chunks }, stop, input_tokens, output_tokens }
}

/// The tool to call, if the reply should be a tool call: a forced choice always calls; `auto`
/// calls the first tool when the conversation ends with a user turn that is not a tool result.
fn pick_tool(p: &Prompt) -> Option<&Tool> {
    if p.tools.is_empty() {
        return None;
    }
    match &p.choice {
        Choice::None => None,
        Choice::Tool(name) => p.tools.iter().find(|t| &t.name == name),
        Choice::Any => p.tools.first(),
        Choice::Auto => {
            if p.last == Last::User {
                p.tools.first()
            } else {
                None
            }
        }
    }
}

/// A value satisfying a JSON schema's required properties: strings `"x"` (or the first enum
/// value), numbers `1`, booleans `true`, arrays `[]`, objects recursively.
pub(crate) fn input_from_schema(schema: &Value) -> Value {
    value_for(schema, 0)
}

fn value_for(schema: &Value, depth: usize) -> Value {
    // Guards against self-referencing schemas written inline.
    if depth > 8 {
        return Value::Null;
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|a| a.first()) {
        return first.clone();
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|a| a.first()) {
            return value_for(first, depth + 1);
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        // `["string", "null"]`: the first non-null type.
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "object",
    };
    match ty {
        "string" => Value::String("x".to_owned()),
        "integer" | "number" => Value::from(1),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        "array" => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            match schema.get("items") {
                Some(items) if min > 0 => Value::Array((0..min.min(8)).map(|_| value_for(items, depth + 1)).collect()),
                _ => Value::Array(Vec::new()),
            }
        }
        _ => {
            let mut out = Map::new();
            let props = schema.get("properties").and_then(Value::as_object);
            if let (Some(required), Some(props)) = (schema.get("required").and_then(Value::as_array), props) {
                for name in required.iter().filter_map(Value::as_str) {
                    let sub = props.get(name).unwrap_or(&Value::Null);
                    out.insert(name.to_owned(), value_for(sub, depth + 1));
                }
            }
            Value::Object(out)
        }
    }
}

/// Splits `s` into at most `n` non-empty pieces on char boundaries.
fn split_fragments(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(n.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// Hashes a JSON value and counts the characters of its string leaves, in one walk.
pub(crate) fn digest(v: &Value, h: &mut Fnv) -> u64 {
    match v {
        Value::Null => {
            h.write(b"n");
            0
        }
        Value::Bool(b) => {
            h.write(if *b { b"t" } else { b"f" });
            0
        }
        Value::Number(n) => {
            h.write(n.to_string().as_bytes());
            0
        }
        Value::String(s) => {
            h.write(b"s");
            h.write(s.as_bytes());
            h.write(b"\0");
            s.chars().count() as u64
        }
        Value::Array(a) => {
            h.write(b"[");
            let n = a.iter().map(|x| digest(x, h)).sum();
            h.write(b"]");
            n
        }
        Value::Object(o) => {
            h.write(b"{");
            let mut n = 0;
            for (k, x) in o {
                h.write(k.as_bytes());
                h.write(b":");
                n += digest(x, h);
            }
            h.write(b"}");
            n
        }
    }
}

/// Text of a content value that is either a string or an array of `{type, text}` parts.
pub(crate) fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                let t = match p {
                    Value::String(s) => Some(s.as_str()),
                    _ => p.get("text").and_then(Value::as_str),
                };
                if let Some(t) = t {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(t);
                }
            }
            out
        }
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(last: Last) -> Prompt {
        Prompt {
            model: "m1".into(),
            stream: false,
            max_tokens: None,
            tools: vec![],
            choice: Choice::Auto,
            last,
            prompt_chars: 10,
            seed: 99,
        }
    }

    #[test]
    fn schema_input_fills_required_properties_only() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "opt": {"type": "string"},
                "nested": {"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["city", "days", "metric", "unit", "nested", "tags"]
        });
        assert_eq!(
            input_from_schema(&schema),
            json!({"city": "x", "days": 1, "metric": true, "unit": "c", "nested": {"a": 1}, "tags": []})
        );
        assert_eq!(input_from_schema(&json!({"type": "object"})), json!({}));
    }

    #[test]
    fn text_reply_is_deterministic_and_sized() {
        let a = plan(&prompt(Last::User), 12);
        let b = plan(&prompt(Last::User), 12);
        assert_eq!(a.body.text(), b.body.text());
        assert!(a.body.text().starts_with("[m1] "));
        assert_eq!(a.output_tokens, 12);
        let mut other = prompt(Last::User);
        other.seed = 100;
        assert_ne!(plan(&other, 12).body.text(), a.body.text());
    }

    #[test]
    fn max_tokens_truncates_with_max_tokens_stop() {
        let mut p = prompt(Last::User);
        p.max_tokens = Some(3);
        let r = plan(&p, 20);
        assert_eq!(r.stop, Stop::MaxTokens);
        assert_eq!(r.output_tokens, 3);
    }

    #[test]
    fn tool_choice_rules() {
        let tools = vec![
            Tool { name: "a".into(), schema: json!({"type": "object"}) },
            Tool { name: "b".into(), schema: json!({"type": "object"}) },
        ];
        let mut p = prompt(Last::User);
        p.tools = tools;
        assert!(matches!(plan(&p, 5).body, ReplyBody::ToolCall { ref name, .. } if name == "a"));
        p.choice = Choice::Tool("b".into());
        assert!(matches!(plan(&p, 5).body, ReplyBody::ToolCall { ref name, .. } if name == "b"));
        p.choice = Choice::None;
        assert!(matches!(plan(&p, 5).body, ReplyBody::Text { .. }));
        p.choice = Choice::Auto;
        p.last = Last::ToolResult("sunny 21C".into());
        let r = plan(&p, 5);
        assert_eq!(r.stop, Stop::EndTurn);
        assert_eq!(r.body.text(), "[m1] Tool result: sunny 21C");
    }

    #[test]
    fn fragments_rejoin() {
        let s = r#"{"city":"x","days":1}"#;
        let f = split_fragments(s, 3);
        assert_eq!(f.len(), 3);
        assert_eq!(f.concat(), s);
    }
}
