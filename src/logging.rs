//! How firstmate logs: `tracing` to standard error, set up once per process by `main`.
//!
//! - The filter is `FIRSTMATE_LOG`, else `RUST_LOG`, else the subcommand's default (an
//!   empty variable counts as unset). A filter that does not parse is an error naming the
//!   variable, the value and the directive at fault; never silently dropped.
//! - `FIRSTMATE_LOG_FORMAT` is `text` (the default: human lines) or `json` (one JSON object
//!   a line: `timestamp`, `level`, `target`, `fields` with the `message`, and `span` /
//!   `spans` when the event is inside spans).
//! - Colour only when standard error is a terminal and `NO_COLOR` is unset or empty.
//!
//! Everything but [`init`] is pure: it reads the environment only through the lookup
//! function it is handed, and is told whether standard error is a terminal.

use std::fmt;

use tracing_subscriber::EnvFilter;

/// The variable that picks the log filter; `RUST_LOG` is read when it is unset.
pub const FILTER_VAR: &str = "FIRSTMATE_LOG";
/// The conventional filter variable of Rust programs, the fallback of [`FILTER_VAR`].
pub const RUST_LOG: &str = "RUST_LOG";
/// The variable that picks the log format.
pub const FORMAT_VAR: &str = "FIRSTMATE_LOG_FORMAT";

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
const FILTER_HELP: &str = "a filter is comma-separated directives, each a level or \
    TARGET=LEVEL, such as `info` or `warn,firstmate=debug` (levels: off, error, warn, info, \
    debug, trace)";

/// A log setting the user has to fix: exit code 2.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("{FORMAT_VAR}={value:?} is not a log format: set it to `text` (the default) or `json`")]
    Format { value: String },
    #[error("{source_name}={value:?} is not a log filter: `{directive}` {reason}; {FILTER_HELP}")]
    Filter {
        /// The variable the filter came from (or "the built-in default").
        source_name: String,
        value: String,
        directive: String,
        reason: String,
    },
}

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human lines, the default.
    Text,
    /// One JSON object a line.
    Json,
}

impl Format {
    /// The value of `FIRSTMATE_LOG_FORMAT`: unset or empty is `text`; case is ignored.
    pub fn parse(value: Option<&str>) -> Result<Format, LogError> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Format::Text);
        };
        match v.to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(LogError::Format {
                value: value.unwrap_or_default().to_string(),
            }),
        }
    }
}

/// Where the filter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterSource {
    /// `FIRSTMATE_LOG`.
    Firstmate,
    /// `RUST_LOG`, with `FIRSTMATE_LOG` unset.
    RustLog,
    /// Neither is set: the subcommand's default.
    Default,
}

impl fmt::Display for FilterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilterSource::Firstmate => FILTER_VAR,
            FilterSource::RustLog => RUST_LOG,
            FilterSource::Default => "the built-in log filter",
        })
    }
}

/// The filter text to use and where it came from: `FIRSTMATE_LOG`, else `RUST_LOG`, else
/// `default`. A variable that is empty (or only spaces) counts as unset.
pub fn choose_filter(
    default: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (FilterSource, String) {
    let set = |var| env(var).filter(|v: &String| !v.trim().is_empty());
    if let Some(v) = set(FILTER_VAR) {
        (FilterSource::Firstmate, v)
    } else if let Some(v) = set(RUST_LOG) {
        (FilterSource::RustLog, v)
    } else {
        (FilterSource::Default, default.to_string())
    }
}

/// Checks a filter strictly and returns it normalised (directives trimmed, empty ones
/// dropped), ready for [`EnvFilter`]. Beyond what `EnvFilter` refuses, a target with a
/// space in it and a bare word that looks like a misspelt level (`warning`, `inof`) are
/// refused: `EnvFilter` would take either as a target that matches nothing.
pub fn check_filter(source: FilterSource, value: &str) -> Result<String, LogError> {
    let bad = |directive: &str, reason: String| LogError::Filter {
        source_name: source.to_string(),
        value: value.to_string(),
        directive: directive.to_string(),
        reason,
    };
    let mut directives = Vec::new();
    for d in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let head = d.split(['=', '[']).next().unwrap_or_default();
        if head.contains(char::is_whitespace) {
            return Err(bad(
                d,
                "has a space in it (separate directives with commas)".into(),
            ));
        }
        if let Err(e) = EnvFilter::builder().parse(d) {
            return Err(bad(d, format!("is not a directive ({e})")));
        }
        if d == head
            && !d.contains("::")
            && let Some(level) = misspelt_level(d)
        {
            return Err(bad(
                d,
                format!(
                    "is not a level: did you mean `{level}`? (a bare word other than a level \
                     names a target; write `{d}=trace` if that is what you mean)"
                ),
            ));
        }
        directives.push(d);
    }
    Ok(directives.join(","))
}

/// The level a bare word seems meant to be, if it is not a level but close to one.
fn misspelt_level(word: &str) -> Option<&'static str> {
    let w = word.to_ascii_lowercase();
    if LEVELS.contains(&w.as_str()) || w.parse::<u8>().is_ok() {
        return None;
    }
    LEVELS.into_iter().filter(|l| *l != "off").find(|l| {
        w.starts_with(l)
            || (w.len() >= 3 && l.starts_with(w.as_str()))
            || strsim::damerau_levenshtein(&w, l) <= 1
    })
}

/// Whether log lines get ANSI colours: only on a terminal, and never with `NO_COLOR` set to
/// anything but the empty string (<https://no-color.org>).
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&str>) -> bool {
    stderr_is_terminal && no_color.is_none_or(str::is_empty)
}

/// The logging of this process, decided from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub format: Format,
    pub source: FilterSource,
    /// The checked filter directives.
    pub filter: String,
    pub colour: bool,
}

impl Settings {
    /// Reads `FIRSTMATE_LOG_FORMAT`, `FIRSTMATE_LOG`, `RUST_LOG` and `NO_COLOR` through
    /// `env`; `default` is the filter when neither filter variable is set.
    pub fn from_env(
        default: &str,
        env: &dyn Fn(&str) -> Option<String>,
        stderr_is_terminal: bool,
    ) -> Result<Settings, LogError> {
        let format = Format::parse(env(FORMAT_VAR).as_deref())?;
        let (source, value) = choose_filter(default, env);
        let filter = check_filter(source, &value)?;
        let colour =
            format == Format::Text && use_colour(stderr_is_terminal, env("NO_COLOR").as_deref());
        Ok(Settings {
            format,
            source,
            filter,
            colour,
        })
    }
}

/// Sets up logging to standard error for the rest of the process. Call it once, first
/// thing; a second call changes nothing.
pub fn init(default: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(), LogError> {
    use std::io::IsTerminal;
    let s = Settings::from_env(default, env, std::io::stderr().is_terminal())?;
    let filter = EnvFilter::builder()
        .parse(&s.filter)
        .map_err(|e| LogError::Filter {
            source_name: s.source.to_string(),
            value: s.filter.clone(),
            directive: s.filter.clone(),
            reason: format!("is not a filter ({e})"),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Already set (a second call): the first setup stays.
    let _ = match s.format {
        Format::Text => builder.with_target(false).with_ansi(s.colour).try_init(),
        Format::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_format_is_text_unless_json_and_anything_else_is_refused() {
        for (value, want) in [
            (None, Format::Text),
            (Some(""), Format::Text),
            (Some("  "), Format::Text),
            (Some("text"), Format::Text),
            (Some("json"), Format::Json),
            (Some("JSON"), Format::Json),
            (Some(" json "), Format::Json),
        ] {
            assert_eq!(Format::parse(value), Ok(want), "{value:?}");
        }
        for value in ["yaml", "jsonl", "pretty", "1"] {
            let err = Format::parse(Some(value)).expect_err(value).to_string();
            assert!(err.contains("FIRSTMATE_LOG_FORMAT"), "{err}");
            assert!(err.contains(value), "{err}");
            assert!(err.contains("`text`") && err.contains("`json`"), "{err}");
        }
    }

    #[test]
    fn the_filter_is_firstmate_log_else_rust_log_else_the_default() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Vars, FilterSource, &str); 6] = [
            (&[], FilterSource::Default, "warn"),
            (&[("RUST_LOG", "debug")], FilterSource::RustLog, "debug"),
            (
                &[("FIRSTMATE_LOG", "info")],
                FilterSource::Firstmate,
                "info",
            ),
            (
                &[("FIRSTMATE_LOG", "info"), ("RUST_LOG", "debug")],
                FilterSource::Firstmate,
                "info",
            ),
            (
                &[("FIRSTMATE_LOG", ""), ("RUST_LOG", "debug")],
                FilterSource::RustLog,
                "debug",
            ),
            (
                &[("FIRSTMATE_LOG", " "), ("RUST_LOG", "")],
                FilterSource::Default,
                "warn",
            ),
        ];
        for (vars, source, value) in cases {
            assert_eq!(
                choose_filter("warn", &env_of(vars)),
                (source, value.to_string()),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn good_filters_pass_normalised() {
        for (value, want) in [
            ("info", "info"),
            ("warn,firstmate=debug", "warn,firstmate=debug"),
            (
                " info , firstmate::engine=trace ,",
                "info,firstmate::engine=trace",
            ),
            ("firstmate", "firstmate"),
            ("sqlx=off,3", "sqlx=off,3"),
            ("WARN", "WARN"),
            ("[session]=debug", "[session]=debug"),
            ("want=trace", "want=trace"),
        ] {
            assert_eq!(
                check_filter(FilterSource::Firstmate, value),
                Ok(want.to_string()),
                "{value:?}"
            );
        }
    }

    #[test]
    fn a_bad_filter_names_the_variable_the_value_and_the_directive() {
        for (value, directive) in [
            ("firstmate=loud", "firstmate=loud"),
            ("info,firstmate=loud", "firstmate=loud"),
            ("%%%", "%%%"),
            ("a=b=c", "a=b=c"),
            ("info debug", "info debug"),
            ("warning", "warning"),
            ("inof", "inof"),
            ("debgu,firstmate=info", "debgu"),
        ] {
            for source in [FilterSource::Firstmate, FilterSource::RustLog] {
                let err = check_filter(source, value).expect_err(value).to_string();
                assert!(err.starts_with(&format!("{source}=")), "{err}");
                assert!(err.contains(&format!("{value:?}")), "{err}");
                assert!(err.contains(&format!("`{directive}`")), "{err}");
                assert!(err.contains("warn,firstmate=debug"), "{err}");
            }
        }
        let err = check_filter(FilterSource::Firstmate, "warning").unwrap_err();
        assert!(err.to_string().contains("did you mean `warn`"), "{err}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("")));
        assert!(!use_colour(true, Some("1")));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some("")));
    }

    #[test]
    fn settings_combine_the_variables_and_json_has_no_colour() {
        let s = Settings::from_env("warn", &env_of(&[]), true).expect("defaults");
        assert_eq!(
            s,
            Settings {
                format: Format::Text,
                source: FilterSource::Default,
                filter: "warn".into(),
                colour: true,
            }
        );
        let s = Settings::from_env(
            "warn",
            &env_of(&[("FIRSTMATE_LOG_FORMAT", "json"), ("RUST_LOG", "info")]),
            true,
        )
        .expect("json");
        assert_eq!(
            (s.format, s.source, s.filter.as_str(), s.colour),
            (Format::Json, FilterSource::RustLog, "info", false)
        );
        let s = Settings::from_env("warn", &env_of(&[("NO_COLOR", "1")]), true).expect("no");
        assert!(!s.colour);
        assert!(
            Settings::from_env("warn", &env_of(&[("FIRSTMATE_LOG_FORMAT", "xml")]), false).is_err()
        );
        assert!(Settings::from_env("warn", &env_of(&[("RUST_LOG", "x=y")]), false).is_err());
    }
}
