//! Model prices: what a million tokens cost, by model name prefix. The built-in table
//! and `[gateway.prices]` in the config (which adds or overrides entries) meet here; the
//! gateway's meter prices each call with [`price_of`]. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::Usage;

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
