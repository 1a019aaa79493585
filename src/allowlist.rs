//! `[egress] allow`: the host patterns workers may reach through the gateway's egress
//! proxy (`gateway/egress.rs`), parsed and checked when the config is read. A pattern is
//! a name (`pypi.org`), every name below a domain (`*.githubusercontent.com`), or an
//! address literal, with an optional port (without one: 443 and 80). Pure.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Serialize, Serializer};

/// What one `[egress] allow` entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `pypi.org`: that name only (case-insensitive).
    Name(String),
    /// `*.githubusercontent.com`: every name below it, at any depth, but not the name
    /// itself.
    Below(String),
    /// `203.0.113.7`, `[2001:db8::1]`: a request to that address literal.
    Ip(IpAddr),
}

/// One `[egress] allow` entry: a host pattern and, optionally, the one port it allows
/// (without one: 443 and 80).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    host: HostPattern,
    port: Option<u16>,
}

/// The ports a pattern without `:PORT` allows.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];

const EXPECTED: &str = "expected a host name (\"pypi.org\"), \"*.\" and a domain for the names below it \
     (\"*.githubusercontent.com\"), or an IP address (\"203.0.113.7\", \"[2001:db8::1]\"), \
     with an optional \":PORT\"";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

impl Pattern {
    /// Parses one entry; the error says what is wrong (the caller names the key).
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let t = text.trim().to_ascii_lowercase();
        if t.is_empty() {
            return Err(format!("is empty: {EXPECTED}"));
        }
        if t.contains("://") || t.contains('/') {
            return Err(format!("{text:?} is not a host: {EXPECTED}"));
        }
        // A bare IPv6 address has colons of its own: it takes no port.
        if let Ok(ip) = t.parse::<Ipv6Addr>() {
            return Ok(Pattern {
                host: HostPattern::Ip(IpAddr::V6(ip)),
                port: None,
            });
        }
        let (host, port) = split_port(&t).map_err(|e| format!("{text:?}: {e}"))?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => match v6.parse::<Ipv6Addr>() {
                Ok(ip) => HostPattern::Ip(IpAddr::V6(ip)),
                Err(_) => return Err(format!("{text:?}: [{v6}] is not an IPv6 address")),
            },
            None => {
                let host = host.strip_suffix('.').unwrap_or(host);
                if let Ok(ip) = host.parse::<Ipv4Addr>() {
                    HostPattern::Ip(IpAddr::V4(ip))
                } else if host == "*" {
                    return Err(format!(
                        "{text:?} would allow every host: list the hosts, or \"*.\" and a domain"
                    ));
                } else if let Some(domain) = host.strip_prefix("*.") {
                    if !valid_name(domain) || !domain.contains('.') {
                        return Err(format!(
                            "{text:?}: after \"*.\" comes a domain with a dot, like \"*.example.com\""
                        ));
                    }
                    HostPattern::Below(domain.to_string())
                } else if valid_name(host) {
                    HostPattern::Name(host.to_string())
                } else {
                    return Err(format!("{text:?} is not a host name: {EXPECTED}"));
                }
            }
        };
        Ok(Pattern { host, port })
    }

    /// Whether a request for `host` (lowercase, no trailing dot, no brackets) on `port`
    /// matches.
    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        port_ok
            && match (&self.host, ip) {
                (HostPattern::Ip(a), Some(b)) => *a == b,
                (HostPattern::Name(n), None) => n == host,
                (HostPattern::Below(d), None) => host
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
                _ => false,
            }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Name(n) => f.write_str(n)?,
            HostPattern::Below(d) => write!(f, "*.{d}")?,
            HostPattern::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostPattern::Ip(IpAddr::V6(ip)) if self.port.is_some() => write!(f, "[{ip}]")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "{ip}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// `host:port` → (host, Some(port)); `host` → (host, None).
fn split_port(t: &str) -> Result<(&str, Option<u16>), String> {
    let Some((host, port)) = t.rsplit_once(':') else {
        return Ok((t, None));
    };
    if host.contains(':') && !host.ends_with(']') {
        return Err("an IPv6 address with a port is written [ADDRESS]:PORT".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, Some(p))),
        _ => Err(format!("the port {port:?} is not a number from 1 to 65535")),
    }
}

/// `[egress] allow`, validated. Empty: no egress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    patterns: Vec<Pattern>,
}

impl Allowlist {
    /// The entries in order; an error carries the index of the first bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Allowlist, (usize, String)> {
        let patterns = entries
            .iter()
            .enumerate()
            .map(|(i, e)| Pattern::parse(e.as_ref()).map_err(|m| (i, m)))
            .collect::<Result<_, _>>()?;
        Ok(Allowlist { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a request for `host` (as a client wrote it) on `port` is allowed.
    pub fn permits(&self, host: &str, port: u16) -> bool {
        let host = normalize_host(host);
        let ip = host.parse::<IpAddr>().ok();
        self.patterns.iter().any(|p| p.matches(&host, ip, port))
    }
}

impl Serialize for Allowlist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.patterns.iter().map(ToString::to_string))
    }
}

/// Lowercase, no trailing dot, no IPv6 brackets.
pub(crate) fn normalize_host(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    let h = h.strip_suffix('.').unwrap_or(&h);
    h.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(h)
        .to_string()
}

// --- addresses ------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> Allowlist {
        Allowlist::parse(entries).expect("valid patterns")
    }

    #[test]
    fn names_match_exactly_and_case_insensitively() {
        let a = allow(&["pypi.org", "Registry.NPMjs.org."]);
        for (host, port, want) in [
            ("pypi.org", 443, true),
            ("PyPI.org.", 443, true),
            ("pypi.org", 80, true),
            ("files.pypi.org", 443, false),
            ("pypi.org.evil.com", 443, false),
            ("xpypi.org", 443, false),
            ("registry.npmjs.org", 443, true),
            ("pypi.org", 22, false),
            ("pypi.org", 8443, false),
        ] {
            assert_eq!(a.permits(host, port), want, "{host}:{port}");
        }
    }

    #[test]
    fn a_wildcard_matches_names_below_it_only() {
        let a = allow(&["*.githubusercontent.com"]);
        for (host, want) in [
            ("raw.githubusercontent.com", true),
            ("a.b.githubusercontent.com", true),
            ("RAW.GitHubUserContent.com", true),
            ("githubusercontent.com", false),
            ("evilgithubusercontent.com", false),
            (".githubusercontent.com", false),
            ("githubusercontent.com.evil.com", false),
        ] {
            assert_eq!(a.permits(host, 443), want, "{host}");
        }
    }

    #[test]
    fn ports_and_address_literals() {
        let a = allow(&[
            "203.0.113.7",
            "203.0.113.8:8000",
            "[2001:db8::1]:8443",
            "2001:db8::2",
            "pkg.example.com:5000",
        ]);
        for (host, port, want) in [
            ("203.0.113.7", 443, true),
            ("203.0.113.7", 8000, false),
            ("203.0.113.8", 8000, true),
            ("203.0.113.8", 443, false),
            ("[2001:db8::1]", 8443, true),
            ("2001:db8::1", 8443, true),
            ("2001:db8:0::1", 8443, true),
            ("[2001:db8::2]", 443, true),
            ("pkg.example.com", 5000, true),
            ("pkg.example.com", 443, false),
            // A name is not its address, nor the reverse.
            ("203.0.113.9", 443, false),
        ] {
            assert_eq!(a.permits(host, port), want, "{host}:{port}");
        }
        assert!(!Allowlist::default().permits("pypi.org", 443));
    }

    #[test]
    fn bad_patterns_say_which_and_what_is_expected() {
        for (bad, says) in [
            ("", "empty"),
            ("*", "every host"),
            ("*.com", "domain with a dot"),
            ("a.*.example.com", "not a host name"),
            ("https://pypi.org", "not a host"),
            ("pypi.org/simple", "not a host"),
            ("pypi.org:0", "1 to 65535"),
            ("pypi.org:http", "1 to 65535"),
            ("pypi.org:70000", "1 to 65535"),
            ("[::1", "IPv6"),
            ("[nothing]:80", "not an IPv6 address"),
            ("under score.org", "not a host name"),
            ("-bad.org", "not a host name"),
        ] {
            let e = Pattern::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let (i, _) = Allowlist::parse(&["pypi.org", "ok.org", "no way"]).expect_err("bad");
        assert_eq!(i, 2);
    }

    #[test]
    fn patterns_print_as_written_normalized() {
        let a = allow(&[
            "PyPI.org",
            "*.Example.com",
            "203.0.113.7:81",
            "[2001:db8::1]:8443",
            "2001:DB8::2",
        ]);
        assert_eq!(
            serde_json::to_string(&a).expect("json"),
            r#"["pypi.org","*.example.com","203.0.113.7:81","[2001:db8::1]:8443","2001:db8::2"]"#
        );
    }
}
