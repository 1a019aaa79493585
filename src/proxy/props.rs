//! Property tests (the fuzz targets of issue 3): the path normaliser and the query reader
//! never panic and never let a traversal through; the body policy never panics, and
//! refuses exactly the bodies that Docker's decoder would read as dangerous, however the
//! keys are spelled (case, `ſ`/Kelvin folding, `\u` escapes), repeated, nulled or split
//! over several `HostConfig` objects.

use proptest::prelude::*;

use super::path;
use super::policy;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_normaliser_never_panics(s in ".{0,64}") {
        let _ = path::normalise(&s);
        let _ = path::parse_query(Some(&s));
    }

    #[test]
    fn a_normalised_path_never_escapes(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                "/", "//", ".", "..", "%2e", "%2f", "%2E%2E", "\\", ";", "v1.41", "v1.23",
                "containers", "create", "build", "json", "abc", "exec", "images", "x:y@z", "?", "#",
            ]),
            0..10,
        ),
        method in prop::sample::select(vec!["GET", "POST", "DELETE", "HEAD", "PUT"]),
    ) {
        let raw: String = parts.concat();
        if let Ok(t) = path::normalise(&raw) {
            prop_assert!(t.segments.iter().all(|s| !s.is_empty() && s != "." && s != ".."));
            prop_assert!(!raw.contains('%') && !raw.contains('\\') && !raw.contains("//"));
            let m = hyper::Method::from_bytes(method.as_bytes()).unwrap();
            if let Ok(r) = path::route(&m, &t) {
                // Only allow-listed shapes route; a build never does.
                prop_assert!(!t.segments.iter().any(|s| s == "build") || matches!(r, path::Route::ImageInspect(_) | path::Route::Container(..) | path::Route::ExecCreate(_) | path::Route::Exec(..) | path::Route::Volume(..) | path::Route::Network(..)));
            }
        }
    }

    #[test]
    fn the_policy_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = policy::container_create(&body);
        let _ = policy::exec_create(&body);
        let _ = policy::volume_create(&body);
        let _ = policy::network_create(&body);
    }

    #[test]
    fn the_policy_never_panics_on_json_shaped_text(body in r#"[\[\]{}",:0-9a-zA-Z nul\\]{0,80}"#) {
        let _ = policy::container_create(body.as_bytes());
    }

    #[test]
    fn a_body_is_refused_exactly_when_docker_reads_it_as_dangerous(
        fields in prop::collection::vec(
            (0..FIELDS.len(), prop::collection::vec(occurrence(), 1..5)),
            1..4,
        ),
        hc_keys in prop::collection::vec(key_mask(), 2),
    ) {
        let mut top = Vec::new();
        let mut chunks = [Vec::new(), Vec::new()];
        let mut dangerous = false;
        let mut seen = std::collections::HashSet::new();
        for (fi, occs) in &fields {
            if !seen.insert(*fi) {
                continue; // one occurrence list per field, so the oracle reads it whole
            }
            let f = &FIELDS[*fi];
            let mut top_seq = Vec::new();
            let mut hc_seq: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
            for o in occs {
                let value = f.values[o.value % f.values.len()];
                let member = format!("\"{}\":{}", spell(f.name, &o.key), value);
                match o.place % 3 {
                    0 => { top.push(member); top_seq.push(value); }
                    p => { chunks[p - 1].push(member); hc_seq[p - 1].push(value); }
                }
            }
            let hc_all: Vec<&str> = hc_seq.concat();
            dangerous |= f.reads_dangerous(&top_seq) || f.reads_dangerous(&hc_all);
        }
        let mut body = String::from(r#"{"Image":"x","Labels":{"firstmate.managed":"true"}"#);
        for m in &top {
            body.push(',');
            body.push_str(m);
        }
        for (i, c) in chunks.iter().enumerate() {
            body.push_str(&format!(",\"{}\":{{\"Memory\":1,\"PidsLimit\":64", spell("HostConfig", &hc_keys[i])));
            for m in c {
                body.push(',');
                body.push_str(m);
            }
            body.push('}');
        }
        body.push('}');
        let decision = policy::container_create(body.as_bytes());
        if dangerous {
            prop_assert!(decision.is_err(), "allowed a dangerous body: {body}");
        } else {
            prop_assert!(decision.is_ok(), "refused a safe body: {body}: {:?}", decision.err());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A bool or string: `null` leaves it; the last other value counts.
    Scalar,
    /// A slice, strslice or pointer: the last value counts (`null` resets).
    Replace,
    /// A map: objects merge, `null` resets.
    Map,
}

struct Field {
    name: &'static str,
    kind: Kind,
    values: &'static [&'static str],
    /// How many of `values` (from the start) are dangerous.
    bad: usize,
}

impl Field {
    fn is_bad(&self, v: &str) -> bool {
        self.values[..self.bad].contains(&v)
    }

    /// The oracle: what Docker's decoder ends up with, from the values in order.
    fn reads_dangerous(&self, seq: &[&str]) -> bool {
        match self.kind {
            Kind::Scalar => seq
                .iter()
                .rev()
                .find(|v| **v != "null")
                .is_some_and(|v| self.is_bad(v)),
            Kind::Replace => seq.last().is_some_and(|v| self.is_bad(v)),
            Kind::Map => {
                let start = seq.iter().rposition(|v| *v == "null").map_or(0, |i| i + 1);
                seq[start..].iter().any(|v| self.is_bad(v))
            }
        }
    }
}

const FIELDS: &[Field] = &[
    Field {
        name: "Privileged",
        kind: Kind::Scalar,
        values: &["true", "false", "null"],
        bad: 1,
    },
    Field {
        name: "CapAdd",
        kind: Kind::Replace,
        values: &[r#"["SYS_ADMIN"]"#, r#""ALL""#, "[]", "null"],
        bad: 2,
    },
    Field {
        name: "Binds",
        kind: Kind::Replace,
        values: &[r#"["/:/host"]"#, "[]", "null"],
        bad: 1,
    },
    Field {
        name: "Devices",
        kind: Kind::Replace,
        values: &[
            r#"[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda"}]"#,
            "[]",
            "null",
        ],
        bad: 1,
    },
    Field {
        name: "Mounts",
        kind: Kind::Replace,
        values: &[
            r#"[{"Type":"bind","Source":"/","Target":"/h"}]"#,
            "[]",
            "null",
        ],
        bad: 1,
    },
    Field {
        name: "NetworkMode",
        kind: Kind::Scalar,
        values: &[
            r#""host""#,
            r#""Container:victim""#,
            r#""bridge""#,
            r#""none""#,
            "null",
        ],
        bad: 2,
    },
    Field {
        name: "PidMode",
        kind: Kind::Scalar,
        values: &[r#""host""#, r#""""#, "null"],
        bad: 1,
    },
    Field {
        name: "UsernsMode",
        kind: Kind::Scalar,
        values: &[r#""host""#, r#""""#, "null"],
        bad: 1,
    },
    Field {
        name: "IpcMode",
        kind: Kind::Scalar,
        values: &[r#""host""#, r#""private""#, "null"],
        bad: 1,
    },
    Field {
        name: "SecurityOpt",
        kind: Kind::Replace,
        values: &[
            r#"["seccomp=unconfined"]"#,
            r#"["apparmor:unconfined"]"#,
            r#"["no-new-privileges"]"#,
            "[]",
            "null",
        ],
        bad: 2,
    },
    Field {
        name: "Sysctls",
        kind: Kind::Map,
        values: &[r#"{"kernel.shmmax":"1"}"#, "{}", "null"],
        bad: 1,
    },
    Field {
        name: "CgroupParent",
        kind: Kind::Scalar,
        values: &[r#""/""#, r#""""#, "null"],
        bad: 1,
    },
    Field {
        name: "OomKillDisable",
        kind: Kind::Replace,
        values: &["true", "false", "null"],
        bad: 1,
    },
    Field {
        name: "VolumesFrom",
        kind: Kind::Replace,
        values: &[r#"["victim"]"#, "[]", "null"],
        bad: 1,
    },
];

#[derive(Debug, Clone)]
struct Occurrence {
    /// 0: top level; 1, 2: the first or second `HostConfig` object.
    place: usize,
    value: usize,
    key: Vec<u8>,
}

fn occurrence() -> impl Strategy<Value = Occurrence> {
    (0usize..3, 0usize..8, key_mask()).prop_map(|(place, value, key)| Occurrence {
        place,
        value,
        key,
    })
}

fn key_mask() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..8, 16)
}

/// A spelling of `name` that Go's decoder matches to the field `name`: per letter, as is,
/// the other case, the non-ASCII fold (`ſ` for s, Kelvin for k), or a `\u` escape.
fn spell(name: &str, mask: &[u8]) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| match mask.get(i).copied().unwrap_or(0) {
            0..=2 => c.to_string(),
            3 | 4 => {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase().to_string()
                } else {
                    c.to_ascii_uppercase().to_string()
                }
            }
            5 => match c {
                's' | 'S' => "\u{17F}".into(),
                'k' | 'K' => "\u{212A}".into(),
                c => c.to_ascii_uppercase().to_string(),
            },
            6 => match c {
                's' | 'S' => "\\u017f".into(),
                'k' | 'K' => "\\u212A".into(),
                c => format!("\\u{:04x}", c as u32),
            },
            _ => format!("\\u{:04X}", c.to_ascii_lowercase() as u32),
        })
        .collect()
}

#[test]
fn spellings_read_as_the_field() {
    assert_eq!(spell("Binds", &[0, 3, 0, 0, 5]), "BIndſ");
    assert_eq!(spell("Ok", &[6, 6]), "\\u004f\\u212A");
}
