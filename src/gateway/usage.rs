//! Counting what a model API response used, as it streams through: a server-sent events
//! scanner, the usage fields of the Anthropic Messages API and the OpenAI Responses API,
//! and the price table that turns tokens into dollars. Pure code.

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
}
