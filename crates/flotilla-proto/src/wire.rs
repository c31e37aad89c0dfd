//! Small pieces shared by the three wire formats: string-or-array fields, data URLs, tool
//! argument strings, id prefixes and clocks.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::{ContentPart, ImageSource, Message, Role};

/// A field that is either a plain string or an array of typed parts (message `content`,
/// Anthropic `system`, OpenAI `stop`, ...). Deserialized with a visitor so neither form is
/// buffered through an intermediate tree, which an untagged enum would do.
#[derive(Debug)]
pub(crate) enum TextOr<T> {
    Text(String),
    Parts(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = TextOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(TextOr::Parts)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Serializes an empty JSON array (`annotations`, `logprobs` on Responses events).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EmptyArray;

impl Serialize for EmptyArray {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(std::iter::empty::<()>())
    }
}

/// Serializes an empty JSON object (`metadata`, Anthropic's initial tool `input`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(std::iter::empty::<((), ())>())
    }
}

/// Serializes a value that cannot fail to serialize (plain structs of strings and numbers)
/// into a fresh buffer.
pub(crate) fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Room for a typical short answer, so that it is written without growing the buffer.
    let mut out = Vec::with_capacity(1024);
    // Our wire structs have string keys only, so serialization cannot fail; should it ever,
    // an empty body is easier to diagnose than a half-written one.
    if serde_json::to_writer(&mut out, value).is_err() {
        out.clear();
    }
    out
}

/// Turns a `data:` URL into a base64 image, leaving any other URL as a URL.
pub(crate) fn image_from_url(url: String) -> ImageSource {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
    }
    ImageSource::Url { url }
}

/// The URL form of an image (a `data:` URL for base64 images), as both OpenAI formats want it.
pub(crate) fn image_url(source: &ImageSource) -> Cow<'_, str> {
    match source {
        ImageSource::Url { url } => Cow::Borrowed(url),
        ImageSource::Base64 { media_type, data } => Cow::Owned(format!("data:{media_type};base64,{data}")),
    }
}

/// Parses OpenAI's tool-call `arguments` string. Models sometimes produce invalid JSON; that
/// is kept verbatim as a JSON string so it can be sent back to an OpenAI upstream unchanged
/// instead of failing the whole conversation.
pub(crate) fn parse_tool_args(args: String) -> serde_json::Value {
    if args.trim().is_empty() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    match serde_json::from_str(&args) {
        Ok(v) => v,
        Err(_) => serde_json::Value::String(args),
    }
}

/// The inverse of [`parse_tool_args`].
pub(crate) fn tool_args_string(input: &serde_json::Value) -> String {
    match input {
        serde_json::Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// Gives an id the prefix the client's format uses (`msg_`, `chatcmpl-`, `resp_`), so that ids
/// coming from another format still look native; an id that already has it is kept as is.
pub(crate) fn prefixed_id(id: &str, prefix: &str) -> String {
    if id.starts_with(prefix) {
        return id.to_owned();
    }
    let bare = ["msg_", "chatcmpl-", "resp_"].iter().find_map(|p| id.strip_prefix(p)).unwrap_or(id);
    let mut out = String::with_capacity(prefix.len() + bare.len());
    out.push_str(prefix);
    out.push_str(bare);
    out
}

/// Seconds since the Unix epoch (the `created` fields of the OpenAI formats).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Concatenates the text parts of a content list; borrows when there is only one.
pub(crate) fn joined_text(parts: &[ContentPart]) -> Option<Cow<'_, str>> {
    let mut out: Option<Cow<'_, str>> = None;
    for p in parts {
        if let ContentPart::Text { text } = p {
            match &mut out {
                None => out = Some(Cow::Borrowed(text)),
                Some(acc) => acc.to_mut().push_str(text),
            }
        }
    }
    out
}

/// Whether a JSON value is an empty object (Anthropic's placeholder tool input).
pub(crate) fn is_empty_object(v: &serde_json::Value) -> bool {
    matches!(v, serde_json::Value::Object(m) if m.is_empty())
}

/// The JSON Schema used for a tool declared without parameters (Anthropic requires one).
pub(crate) fn empty_schema() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// Whether a message holds only tool results (where the next tool result is merged in, so
/// the results of one assistant turn travel together as Anthropic requires).
pub(crate) fn is_tool_results(m: &Message) -> bool {
    m.role == Role::User
        && !m.content.is_empty()
        && m.content.iter().all(|p| matches!(p, ContentPart::ToolResult { .. }))
}
