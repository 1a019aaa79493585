//! Counting what a model API response used, as it streams through: a server-sent events
//! scanner, the usage fields of the Anthropic Messages API and the OpenAI Responses API,
//! and the price table that turns tokens into dollars. Pure code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::Usage;

/// One server-sent event: its `event:` name (if any) and its joined `data:` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into server-sent events, however the stream is chunked.
#[derive(Debug, Default)]
pub struct SseScanner {
    line: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseScanner {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(nl);
            rest = &tail[1..];
            let line: std::borrow::Cow<'_, [u8]> = if self.line.is_empty() {
                std::borrow::Cow::Borrowed(head)
            } else {
                self.line.extend_from_slice(head);
                std::borrow::Cow::Owned(std::mem::take(&mut self.line))
            };
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            self.take_line(&String::from_utf8_lossy(line), &mut out);
        }
        self.line.extend_from_slice(rest);
        out
    }

    fn take_line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if !self.data.is_empty() || self.event.is_some() {
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return; // a comment
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
    }
}

/// Which API a response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Anthropic,
    OpenAi,
}

/// What one response used, built up as its events pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meter {
    pub model: Option<String>,
    pub usage: Usage,
    /// The answer's last event went by: its usage is final.
    pub finished: bool,
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

impl Meter {
    /// Takes one server-sent event's data.
    pub fn event(&mut self, api: Api, data: &str) {
        // Only a few events carry usage: skip parsing the many text deltas.
        let wanted = match api {
            Api::Anthropic => {
                data.contains("message_start")
                    || data.contains("message_delta")
                    || data.contains("message_stop")
            }
            Api::OpenAi => {
                data.contains("response.completed")
                    || data.contains("response.failed")
                    || data.contains("response.incomplete")
            }
        };
        if !wanted {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match api {
            Api::Anthropic => match v.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    if let Some(m) = v.get("message") {
                        self.anthropic_message(m);
                    }
                }
                // Counts in message_delta are cumulative for the message.
                Some("message_delta") => {
                    if let Some(u) = v.get("usage") {
                        self.anthropic_usage(u);
                    }
                }
                Some("message_stop") => self.finished = true,
                _ => {}
            },
            Api::OpenAi => {
                if let Some(r) = v.get("response").filter(|_| {
                    matches!(
                        v.get("type").and_then(Value::as_str),
                        Some("response.completed" | "response.failed" | "response.incomplete")
                    )
                }) {
                    self.openai_response(r);
                    self.finished = true;
                }
            }
        }
    }

    /// Takes a whole (not streamed) JSON response body.
    pub fn json_body(&mut self, api: Api, body: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        match api {
            Api::Anthropic => self.anthropic_message(&v),
            Api::OpenAi => self.openai_response(&v),
        }
    }

    fn anthropic_message(&mut self, m: &Value) {
        if let Some(model) = m.get("model").and_then(Value::as_str) {
            self.model = Some(model.to_string());
        }
        if let Some(u) = m.get("usage") {
            self.anthropic_usage(u);
        }
    }

    fn anthropic_usage(&mut self, u: &Value) {
        if let Some(n) = int(u, "input_tokens") {
            self.usage.input_tokens = n;
        }
        if let Some(n) = int(u, "output_tokens") {
            self.usage.output_tokens = n;
        }
        if let Some(n) = int(u, "cache_read_input_tokens") {
            self.usage.cache_read_tokens = n;
        }
        if let Some(n) = int(u, "cache_creation_input_tokens") {
            self.usage.cache_write_tokens = n;
        }
    }

    fn openai_response(&mut self, r: &Value) {
        if let Some(model) = r.get("model").and_then(Value::as_str) {
            self.model = Some(model.to_string());
        }
        let Some(u) = r.get("usage") else { return };
        // OpenAI counts cached input inside input_tokens.
        let cached = u
            .get("input_tokens_details")
            .and_then(|d| int(d, "cached_tokens"))
            .unwrap_or(0);
        if let Some(n) = int(u, "input_tokens") {
            self.usage.input_tokens = (n - cached).max(0);
            self.usage.cache_read_tokens = cached;
        }
        if let Some(n) = int(u, "output_tokens") {
            self.usage.output_tokens = n;
        }
    }
}

/// Dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: f64,
    #[serde(default)]
    pub cache_write: f64,
}

impl Price {
    pub fn cost(&self, u: &Usage) -> f64 {
        (u.input_tokens as f64 * self.input
            + u.output_tokens as f64 * self.output
            + u.cache_read_tokens as f64 * self.cache_read
            + u.cache_write_tokens as f64 * self.cache_write)
            / 1_000_000.0
    }
}

const fn p(input: f64, output: f64, cache_read: f64, cache_write: f64) -> Price {
    Price {
        input,
        output,
        cache_read,
        cache_write,
    }
}

/// The built-in prices (USD per million tokens, list prices), by model name prefix.
/// `[gateway.prices."<prefix>"]` in the config adds or overrides entries.
pub fn default_prices() -> BTreeMap<String, Price> {
    [
        ("claude-opus-4-5", p(5.0, 25.0, 0.5, 6.25)),
        ("claude-opus-4", p(15.0, 75.0, 1.5, 18.75)),
        ("claude-sonnet-4", p(3.0, 15.0, 0.3, 3.75)),
        ("claude-3-7-sonnet", p(3.0, 15.0, 0.3, 3.75)),
        ("claude-haiku-4", p(1.0, 5.0, 0.1, 1.25)),
        ("claude-3-5-haiku", p(0.8, 4.0, 0.08, 1.0)),
        ("gpt-5-mini", p(0.25, 2.0, 0.025, 0.0)),
        ("gpt-5-nano", p(0.05, 0.4, 0.005, 0.0)),
        ("gpt-5", p(1.25, 10.0, 0.125, 0.0)),
        ("gpt-4.1-mini", p(0.4, 1.6, 0.1, 0.0)),
        ("gpt-4.1", p(2.0, 8.0, 0.5, 0.0)),
        ("o4-mini", p(1.1, 4.4, 0.275, 0.0)),
        ("o3", p(2.0, 8.0, 0.5, 0.0)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The price of a model: the entry with the longest name that prefixes it.
pub fn price_of<'a>(prices: &'a BTreeMap<String, Price>, model: &str) -> Option<&'a Price> {
    prices
        .iter()
        .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, price)| price)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANTHROPIC_STREAM: &str = "event: message_start\r\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-5-20250929\",\"usage\":{\"input_tokens\":120,\"cache_creation_input_tokens\":30,\"cache_read_input_tokens\":400,\"output_tokens\":1}}}\r\n\
\r\n\
event: ping\r\n\
data: {\"type\": \"ping\"}\r\n\
\r\n\
: a comment\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\
\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":57}}\n\
\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    fn meter_of(api: Api, stream: &str, chunk: usize) -> Meter {
        let mut scanner = SseScanner::default();
        let mut meter = Meter::default();
        for part in stream.as_bytes().chunks(chunk) {
            for ev in scanner.push(part) {
                meter.event(api, &ev.data);
            }
        }
        meter
    }

    #[test]
    fn anthropic_streams_are_counted_however_they_are_chunked() {
        for chunk in [1, 2, 7, 64, 4096] {
            let m = meter_of(Api::Anthropic, ANTHROPIC_STREAM, chunk);
            assert_eq!(m.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
            assert!(m.finished, "message_stop ends the answer");
            assert_eq!(
                m.usage,
                Usage {
                    input_tokens: 120,
                    output_tokens: 57,
                    cache_read_tokens: 400,
                    cache_write_tokens: 30
                },
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn the_scanner_keeps_event_names_and_multiline_data() {
        let mut s = SseScanner::default();
        let evs = s.push(b"event: a\ndata: 1\ndata: 2\n\ndata:3\n\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: Some("a".into()),
                    data: "1\n2".into()
                },
                SseEvent {
                    event: None,
                    data: "3".into()
                }
            ]
        );
        assert!(s.push(b"data: partial").is_empty());
    }

    #[test]
    fn openai_responses_count_cached_input_apart() {
        let stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-5-codex\"}}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5-codex\",\"usage\":{\"input_tokens\":1000,\"input_tokens_details\":{\"cached_tokens\":600},\"output_tokens\":50,\"total_tokens\":1050}}}\n\n";
        let m = meter_of(Api::OpenAi, stream, 5);
        assert_eq!(m.model.as_deref(), Some("gpt-5-codex"));
        assert_eq!(m.usage.input_tokens, 400);
        assert_eq!(m.usage.cache_read_tokens, 600);
        assert_eq!(m.usage.output_tokens, 50);
    }

    #[test]
    fn whole_json_bodies_are_counted() {
        let mut m = Meter::default();
        m.json_body(
            Api::Anthropic,
            br#"{"model":"claude-haiku-4-5","usage":{"input_tokens":10,"output_tokens":3}}"#,
        );
        assert_eq!((m.usage.input_tokens, m.usage.output_tokens), (10, 3));
        let mut m = Meter::default();
        m.json_body(Api::Anthropic, b"not json");
        assert_eq!(m, Meter::default());
    }

    #[test]
    fn prices_match_the_longest_prefix() {
        let prices = default_prices();
        assert_eq!(
            price_of(&prices, "claude-opus-4-5-20251101").unwrap().input,
            5.0
        );
        assert_eq!(
            price_of(&prices, "claude-opus-4-1-20250805").unwrap().input,
            15.0
        );
        assert_eq!(price_of(&prices, "gpt-5-mini-2025").unwrap().input, 0.25);
        assert!(price_of(&prices, "llama-3").is_none());
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        };
        let cost = price_of(&prices, "claude-sonnet-4-5").unwrap().cost(&u);
        assert!((cost - 4.5).abs() < 1e-9, "{cost}");
    }
}
