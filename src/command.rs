//! The chat command grammar, shared by every front end: Matrix and the console parse
//! text lines with it; Discord builds the same [`Command`]s and [`NewArgs`] from its
//! slash command's options. Pure code, no I/O.
//!
//! A command is a name (case-insensitive) and its arguments. `new` takes flags
//! (`--flag value` or `--flag=value`) and then a prompt: the first word that does not
//! start with `--` (or the word after a lone `--`) starts the prompt, which runs
//! verbatim to the end of the message, newlines included. Anything that is not a
//! command is a prompt for the session of the thread it was written in.

use std::borrow::Cow;
use std::time::Duration;

/// One thing a user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start a session (in a room).
    New(NewArgs),
    /// Stop the session of this thread.
    Stop,
    /// Interrupt the agent's current turn.
    Interrupt,
    /// Show the session's state, usage and cost.
    Status,
    /// Show the session's transcript.
    Logs,
    /// Restart a stopped session.
    Resume,
    /// Show the changes the agent made.
    Diff,
    /// Push the session's branch.
    Push,
    /// Open a pull request for the session's branch.
    Pr,
    /// Send a workspace file (a folder as `.tar.gz`) back.
    Get { path: String },
    /// Answer the oldest approval that waits (`approve`, `always`, `deny`).
    Answer(crate::approval::Answer),
    /// Console only: copy a local file into the workspace's inbox.
    Put { path: String },
    /// The sessions of this room.
    List,
    /// The commands.
    Help,
    /// Console only: make `session` the current session.
    Use { session: String },
    /// Not a command: the text is the next prompt of the thread's session.
    Prompt(String),
}

/// The arguments of `new`. `None` means "the configured default".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewArgs {
    /// The agent to run (a key of `[agents.*]`; validated by the engine).
    pub agent: Option<String>,
    /// The model the agent should use.
    pub model: Option<String>,
    /// A repository alias or URL.
    pub repo: Option<String>,
    /// The branch to work on.
    pub branch: Option<String>,
    /// The container image.
    pub image: Option<String>,
    /// The idle timeout.
    pub timeout: Option<Duration>,
    /// The first prompt, verbatim (may span several lines).
    pub prompt: String,
}

/// A line that names a command but does not follow its grammar. The message says what
/// is wrong and how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    message: String,
}

impl CommandError {
    fn new(message: impl Into<String>) -> Self {
        CommandError {
            message: message.into(),
        }
    }

    /// The message (the same text as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The usage line of `new`.
const NEW_USAGE: &str = "new [--agent NAME] [--model NAME] [--repo ALIAS|URL] [--branch NAME] \
                         [--image IMAGE] [--timeout DURATION] PROMPT";

/// What a command takes after its name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    /// Words that are ignored (`help new` is `help`).
    Anything,
    FlagsAndPrompt,
    SessionId,
    /// The rest of the line, a path (spaces included).
    Path,
}

/// Where a command makes sense, for the help text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Room,
    Thread,
    Anywhere,
    Console,
}

struct Spec {
    name: &'static str,
    usage: &'static str,
    about: &'static str,
    place: Place,
    takes: Takes,
}

const COMMANDS: &[Spec] = &[
    Spec {
        name: "new",
        usage: "new [flags] PROMPT",
        about: "start a session",
        place: Place::Room,
        takes: Takes::FlagsAndPrompt,
    },
    Spec {
        name: "stop",
        usage: "stop",
        about: "stop the session",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "interrupt",
        usage: "interrupt",
        about: "interrupt the current turn",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "status",
        usage: "status",
        about: "state, turns and cost",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "logs",
        usage: "logs",
        about: "the transcript so far",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "resume",
        usage: "resume",
        about: "restart a stopped session",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "diff",
        usage: "diff",
        about: "the changes so far",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "push",
        usage: "push",
        about: "push the session's branch",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "pr",
        usage: "pr",
        about: "open a pull request",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "approve",
        usage: "approve",
        about: "run the tool call asked about",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "always",
        usage: "always",
        about: "approve, and that tool from now on",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "deny",
        usage: "deny",
        about: "do not run it",
        place: Place::Thread,
        takes: Takes::Nothing,
    },
    Spec {
        name: "get",
        usage: "get PATH",
        about: "a workspace file or folder",
        place: Place::Thread,
        takes: Takes::Path,
    },
    Spec {
        name: "list",
        usage: "list",
        about: "the sessions of this room",
        place: Place::Anywhere,
        takes: Takes::Nothing,
    },
    Spec {
        name: "help",
        usage: "help",
        about: "this text",
        place: Place::Anywhere,
        takes: Takes::Anything,
    },
    Spec {
        name: "use",
        usage: "use ID",
        about: "pick the current session",
        place: Place::Console,
        takes: Takes::SessionId,
    },
    Spec {
        name: "put",
        usage: "put LOCAL_PATH",
        about: "copy a file into inbox/",
        place: Place::Console,
        takes: Takes::Path,
    },
];

/// The flags of `new`: name, value placeholder, description.
const FLAGS: &[(&str, &str, &str)] = &[
    ("agent", "NAME", "the agent to run"),
    ("model", "NAME", "the model it uses"),
    ("repo", "ALIAS|URL", "the repository"),
    ("branch", "NAME", "the branch to work on"),
    ("image", "IMAGE", "the container image"),
    ("timeout", "30m", "stop when idle this long"),
];

/// How the text reached us; decides what error messages suggest.
#[derive(Clone, Copy)]
enum Mode<'a> {
    Console,
    Prefixed(&'a str),
}

impl Mode<'_> {
    /// How to write `command` in this front end.
    fn spell(self, command: &str) -> String {
        match self {
            Mode::Console => format!("`{command}`"),
            Mode::Prefixed(prefix) => format!("`{prefix} {command}`"),
        }
    }
}

/// Parses one line of the console (no prefix): the first word decides. A line whose
/// first word is not a command name is `Command::Prompt(line)` (the whole line,
/// untrimmed except for a trailing newline).
pub fn parse_line(line: &str) -> Result<Command, CommandError> {
    let line = strip_newline(line);
    let Some((word, rest)) = first_word(line) else {
        return Ok(Command::Prompt(line.to_string()));
    };
    match lookup(word) {
        Some(spec) => parse_args(spec, rest, Mode::Console),
        None => Ok(Command::Prompt(line.to_string())),
    }
}

/// Matrix: `body` is a command only when it starts with `prefix` followed by
/// whitespace (or is exactly the prefix, which means `help`); returns `None` when the
/// message is not addressed to the bot (then the front end treats it as a prompt in a
/// thread). A message addressed to the bot whose first word is not a command is an
/// error (with a did-you-mean), not a prompt. An empty `prefix` addresses every
/// message to the bot, with the console's rules.
pub fn parse_prefixed(body: &str, prefix: &str) -> Option<Result<Command, CommandError>> {
    if prefix.is_empty() {
        return Some(parse_line(body));
    }
    let rest = body.strip_prefix(prefix)?;
    if rest.trim().is_empty() {
        return Some(Ok(Command::Help));
    }
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = strip_newline(rest);
    let (word, args) = first_word(rest)?;
    let mode = Mode::Prefixed(prefix);
    Some(match lookup(word) {
        Some(spec) if spec.place == Place::Console => Err(CommandError::new(format!(
            "`{}` works only in the console; here, write in the session's thread instead",
            spec.name
        ))),
        Some(spec) => parse_args(spec, args, mode),
        None => Err(unknown_command(word, mode)),
    })
}

/// How many characters of a user's own input an error message quotes.
pub const ECHO_CHARS: usize = 80;

/// User input as an error message quotes it: whole when it is at most [`ECHO_CHARS`]
/// characters, else cut to [`ECHO_CHARS`] characters (the last one `…`) and followed by
/// its full length, so that a pasted megabyte does not come back whole. Cutting what
/// was cut changes nothing.
pub fn echo(input: &str) -> Cow<'_, str> {
    if input.chars().nth(ECHO_CHARS).is_none() {
        return Cow::Borrowed(input);
    }
    match input.char_indices().nth(ECHO_CHARS - 1) {
        None => Cow::Borrowed(input),
        Some((end, _)) => Cow::Owned(format!(
            "{}… ({} characters)",
            &input[..end],
            input.chars().count()
        )),
    }
}

/// Parses a `--timeout` value: a humantime duration such as `30m`, `2h` or `1h30m`,
/// more than zero.
pub fn parse_timeout(value: &str) -> Result<Duration, CommandError> {
    let bad = |what: &str| {
        CommandError::new(format!(
            "--timeout: {:?} {what}; use e.g. 30m or 2h",
            echo(value)
        ))
    };
    match humantime::parse_duration(value.trim()) {
        Ok(d) if d.is_zero() => Err(bad("is too short")),
        Ok(d) => Ok(d),
        Err(_) => Err(bad("is not a duration")),
    }
}

/// The help text: every command with a one-line description, at most 60 columns wide.
pub fn help_text() -> String {
    let mut out = String::from("Commands\n");
    let sections = [
        (Place::Room, "In a room:"),
        (Place::Thread, "In a session's thread:"),
        (Place::Anywhere, "Anywhere:"),
        (Place::Console, "In the console:"),
    ];
    for (place, title) in sections {
        out.push_str(title);
        out.push('\n');
        if place == Place::Thread {
            push_row(&mut out, "  any other text", "the next prompt");
        }
        for spec in COMMANDS.iter().filter(|s| s.place == place) {
            push_row(&mut out, &format!("  {}", spec.usage), spec.about);
            if spec.takes == Takes::FlagsAndPrompt {
                for (flag, value, about) in FLAGS {
                    push_row(&mut out, &format!("    --{flag} {value}"), about);
                }
            }
        }
    }
    out.push_str(
        "Flags go before the prompt, e.g.\n\
         \x20 new --agent claude fix the failing test\n\
         In Matrix, start commands with the bot's prefix,\n\
         e.g. !fm help.\n",
    );
    out
}

fn push_row(out: &mut String, left: &str, right: &str) {
    const WIDTH: usize = 22;
    let pad = WIDTH.saturating_sub(left.chars().count()).max(1);
    out.push_str(left);
    out.extend(std::iter::repeat_n(' ', pad));
    out.push_str(right);
    out.push('\n');
}

/// Drops one trailing newline (`\n` or `\r\n`).
fn strip_newline(s: &str) -> &str {
    match s.strip_suffix('\n') {
        Some(s) => s.strip_suffix('\r').unwrap_or(s),
        None => s,
    }
}

/// Splits off the first whitespace-separated word: `(word, rest after the word)`.
fn first_word(s: &str) -> Option<(&str, &str)> {
    let start = s.find(|c: char| !c.is_whitespace())?;
    let s = &s[start..];
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

fn lookup(word: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name.eq_ignore_ascii_case(word))
}

fn parse_args(spec: &Spec, rest: &str, mode: Mode) -> Result<Command, CommandError> {
    match spec.takes {
        Takes::FlagsAndPrompt => parse_new(rest).map(Command::New),
        Takes::Anything => Ok(Command::Help),
        Takes::SessionId => {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next()) {
                (Some(id), None) => Ok(Command::Use {
                    session: id.to_string(),
                }),
                (None, _) => Err(CommandError::new(format!(
                    "`use` needs a session id: {} (see `list`)",
                    mode.spell("use ID")
                ))),
                (Some(_), Some(_)) => Err(CommandError::new(format!(
                    "`use` takes one session id: {}",
                    mode.spell("use ID")
                ))),
            }
        }
        Takes::Path => {
            let path = rest.trim();
            if path.is_empty() {
                return Err(CommandError::new(format!(
                    "`{}` needs a path: {}",
                    spec.name,
                    mode.spell(spec.usage)
                )));
            }
            let path = path.to_string();
            Ok(if spec.name == "put" {
                Command::Put { path }
            } else {
                Command::Get { path }
            })
        }
        Takes::Nothing => {
            if !rest.trim().is_empty() {
                return Err(CommandError::new(format!(
                    "`{}` takes no arguments; send just {}",
                    spec.name,
                    mode.spell(spec.name)
                )));
            }
            Ok(match spec.name {
                "stop" => Command::Stop,
                "interrupt" => Command::Interrupt,
                "status" => Command::Status,
                "logs" => Command::Logs,
                "resume" => Command::Resume,
                "diff" => Command::Diff,
                "push" => Command::Push,
                "pr" => Command::Pr,
                "approve" => Command::Answer(crate::approval::Answer::Approve),
                "always" => Command::Answer(crate::approval::Answer::Always),
                "deny" => Command::Answer(crate::approval::Answer::Deny),
                _ => Command::List,
            })
        }
    }
}

fn unknown_command(word: &str, mode: Mode) -> CommandError {
    let names = COMMANDS.iter().map(|s| s.name);
    let hint = match did_you_mean(&word.to_ascii_lowercase(), names) {
        Some(name) => format!("; did you mean {}?", mode.spell(name)),
        None => ".".to_string(),
    };
    CommandError::new(format!(
        "unknown command `{}`{hint} Send {} for the commands; \
         in a session's thread, write without the prefix to prompt the agent",
        echo(word),
        mode.spell("help")
    ))
}

/// The closest candidate, when one is close enough to be a typo.
fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The name of a flag word (`--agent`, `--agent=x`, or a phone's `—agent`), else None.
fn flag_body(word: &str) -> Option<&str> {
    if let Some(body) = word.strip_prefix("--") {
        return Some(body);
    }
    // Phones turn `--` into an em or en dash; accept that before a letter.
    let body = word
        .strip_prefix('\u{2014}')
        .or_else(|| word.strip_prefix('\u{2013}'))?;
    body.starts_with(|c: char| c.is_ascii_alphabetic())
        .then_some(body)
}

/// Parses what follows `new`: flags, then the prompt.
fn parse_new(rest: &str) -> Result<NewArgs, CommandError> {
    let mut args = NewArgs::default();
    let mut pos = 0;
    let prompt = loop {
        let Some(start) = rest[pos..].find(|c: char| !c.is_whitespace()) else {
            break "";
        };
        let start = pos + start;
        let end = rest[start..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |e| start + e);
        let word = &rest[start..end];
        pos = end;
        if word == "--" {
            break rest[end..].trim_start();
        }
        let Some(body) = flag_body(word) else {
            break &rest[start..];
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let name = name.to_ascii_lowercase();
        let Some(&(flag, _, _)) = FLAGS.iter().find(|(f, _, _)| *f == name) else {
            return Err(unknown_flag(&name));
        };
        let value = match inline {
            Some(v) => v,
            None => {
                let next = first_word(&rest[pos..]).filter(|(w, _)| flag_body(w).is_none());
                match next {
                    Some((w, after)) => {
                        pos = rest.len() - after.len();
                        w
                    }
                    None => "",
                }
            }
        };
        if value.is_empty() {
            return Err(CommandError::new(format!(
                "--{flag} needs a value: --{flag} {} (or --{flag}=…)",
                flag_value(flag)
            )));
        }
        set_flag(&mut args, flag, value)?;
    };
    if prompt.trim().is_empty() {
        return Err(CommandError::new(format!(
            "`new` needs a prompt: {NEW_USAGE}"
        )));
    }
    args.prompt = prompt.to_string();
    Ok(args)
}

fn flag_value(flag: &str) -> &'static str {
    FLAGS
        .iter()
        .find(|(f, _, _)| *f == flag)
        .map_or("VALUE", |(_, v, _)| v)
}

fn unknown_flag(name: &str) -> CommandError {
    let hint = match did_you_mean(name, FLAGS.iter().map(|(f, _, _)| *f)) {
        Some(flag) => format!("; did you mean --{flag}?"),
        None => ".".to_string(),
    };
    CommandError::new(format!(
        "unknown flag --{} for `new`{hint} Usage: {NEW_USAGE}",
        echo(name)
    ))
}

fn set_flag(args: &mut NewArgs, flag: &str, value: &str) -> Result<(), CommandError> {
    let slot = match flag {
        "agent" => &mut args.agent,
        "model" => &mut args.model,
        "repo" => &mut args.repo,
        "branch" => &mut args.branch,
        "image" => &mut args.image,
        _ => {
            if args.timeout.is_some() {
                return Err(twice(flag));
            }
            args.timeout = Some(parse_timeout(value)?);
            return Ok(());
        }
    };
    if slot.is_some() {
        return Err(twice(flag));
    }
    *slot = Some(value.to_string());
    Ok(())
}

fn twice(flag: &str) -> CommandError {
    CommandError::new(format!("--{flag} is given twice; give it once"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` (a console line, or a Matrix body when it starts with `!fm`) and
    /// compares: `expected` is the `Debug` form of the `Ok` value, or `err: SUBSTRING`
    /// of the error message, or `none` (not addressed to the bot).
    fn check(input: &str, expected: &str) {
        let got = if input.starts_with("!fm") {
            parse_prefixed(input, "!fm")
        } else {
            Some(parse_line(input))
        };
        match (got, expected.strip_prefix("err: ")) {
            (None, _) => assert_eq!(expected, "none", "input {input:?}"),
            (Some(Ok(cmd)), None) => assert_eq!(format!("{cmd:?}"), expected, "input {input:?}"),
            (Some(Err(e)), Some(want)) => assert!(
                e.to_string().contains(want),
                "input {input:?}: error {e:?} does not contain {want:?}"
            ),
            (Some(Ok(cmd)), Some(_)) => panic!("input {input:?}: expected an error, got {cmd:?}"),
            (Some(Err(e)), None) => panic!("input {input:?}: expected {expected}, got error {e}"),
        }
    }

    fn new(fields: &str, prompt: &str) -> String {
        let mut a = NewArgs {
            prompt: prompt.into(),
            ..Default::default()
        };
        for kv in fields.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = Some(v.to_string());
            match k {
                "agent" => a.agent = v,
                "model" => a.model = v,
                "repo" => a.repo = v,
                "branch" => a.branch = v,
                "image" => a.image = v,
                "timeout" => {
                    a.timeout = v.and_then(|v| humantime::parse_duration(&v).ok());
                }
                _ => panic!("bad test field {k}"),
            }
        }
        format!("{:?}", Command::New(a))
    }

    #[test]
    fn simple_commands() {
        for (input, expected) in [
            ("stop", "Stop"),
            ("interrupt", "Interrupt"),
            ("status", "Status"),
            ("logs", "Logs"),
            ("resume", "Resume"),
            ("diff", "Diff"),
            ("push", "Push"),
            ("pr", "Pr"),
            ("list", "List"),
            ("help", "Help"),
            ("help new", "Help"),
            ("STOP", "Stop"),
            ("Status\n", "Status"),
            ("  logs  ", "Logs"),
            ("pr\r\n", "Pr"),
        ] {
            check(input, expected);
        }
    }

    #[test]
    fn prompts() {
        for (input, expected) in [
            ("please stop", r#"Prompt("please stop")"#),
            ("fix the tests", r#"Prompt("fix the tests")"#),
            ("  indented  text  ", r#"Prompt("  indented  text  ")"#),
            ("line one\n", r#"Prompt("line one")"#),
            ("two\nlines\n", r#"Prompt("two\nlines")"#),
            ("stopping now", r#"Prompt("stopping now")"#),
            ("--agent x", r#"Prompt("--agent x")"#),
            ("", r#"Prompt("")"#),
            ("日本語 ok", r#"Prompt("日本語 ok")"#),
        ] {
            check(input, expected);
        }
    }

    #[test]
    fn commands_with_extra_words_are_errors() {
        for (input, expected) in [
            (
                "stop now",
                "err: `stop` takes no arguments; send just `stop`",
            ),
            ("Interrupt it", "err: `interrupt` takes no arguments"),
            ("list all", "err: `list` takes no arguments"),
            ("status\nplease", "err: `status` takes no arguments"),
            ("!fm stop now", "err: send just `!fm stop`"),
        ] {
            check(input, expected);
        }
    }

    #[test]
    fn new_command() {
        for (input, expected) in [
            ("new fix the bug", new("", "fix the bug")),
            ("NEW fix it", new("", "fix it")),
            (
                "new --agent claude --model opus fix  it ",
                new("agent=claude model=opus", "fix  it "),
            ),
            (
                "new --agent=codex --repo=fm --branch main do x",
                new("agent=codex repo=fm branch=main", "do x"),
            ),
            (
                "new --repo https://github.com/o/r.git --image img:1 go",
                new("repo=https://github.com/o/r.git image=img:1", "go"),
            ),
            ("new --timeout 30m go", new("timeout=30m", "go")),
            ("new --timeout=1h30m go", new("timeout=1h30m", "go")),
            ("new --AGENT x go", new("agent=x", "go")),
            ("new \u{2014}agent x go", new("agent=x", "go")),
            ("new -- --agent is text", new("", "--agent is text")),
            ("new --agent x -- -- still", new("agent=x", "-- still")),
            ("new -v is a prompt", new("", "-v is a prompt")),
            ("new fix --agent x", new("", "fix --agent x")),
            (
                "new --agent x\nline one\n  line two\n",
                new("agent=x", "line one\n  line two"),
            ),
            ("new --model=a=b go", new("model=a=b", "go")),
            ("new\tgo\there", new("", "go\there")),
        ] {
            check(input, &expected);
        }
    }

    #[test]
    fn new_errors() {
        for (input, expected) in [
            ("new", "err: `new` needs a prompt: new [--agent NAME]"),
            ("new   ", "err: `new` needs a prompt"),
            ("new --agent x", "err: `new` needs a prompt"),
            ("new --agent x --", "err: `new` needs a prompt"),
            ("new --agent x --  \n ", "err: `new` needs a prompt"),
            ("new --agent", "err: --agent needs a value"),
            ("new --agent= go", "err: --agent needs a value"),
            ("new --agent --model m go", "err: --agent needs a value"),
            (
                "new --agnet x go",
                "err: unknown flag --agnet for `new`; did you mean --agent? Usage: new [--agent NAME]",
            ),
            ("new --modle x go", "err: did you mean --model?"),
            ("new --img x go", "err: did you mean --image?"),
            ("new --timout 5m go", "err: did you mean --timeout?"),
            (
                "new --zzz x go",
                "err: unknown flag --zzz for `new`. Usage:",
            ),
            (
                "new --timeout soon go",
                "err: --timeout: \"soon\" is not a duration; use e.g. 30m or 2h",
            ),
            ("new --timeout 0s go", "err: --timeout: \"0s\" is too short"),
            ("new --timeout=30 go", "err: is not a duration"),
            ("new --agent a --agent b go", "err: --agent is given twice"),
            (
                "new --timeout 1m --timeout 2m go",
                "err: --timeout is given twice",
            ),
        ] {
            check(input, expected);
        }
    }

    #[test]
    fn use_command() {
        for (input, expected) in [
            ("use abc123", r#"Use { session: "abc123" }"#),
            ("USE  Ab-1 ", r#"Use { session: "Ab-1" }"#),
            ("use", "err: `use` needs a session id: `use ID`"),
            ("use a b", "err: `use` takes one session id"),
            ("!fm use abc", "err: `use` works only in the console"),
        ] {
            check(input, expected);
        }
    }

    #[test]
    fn prefixed() {
        for (input, expected) in [
            ("!fm", "Help"),
            ("!fm  \n", "Help"),
            ("!fm help", "Help"),
            ("!fm stop", "Stop"),
            ("!fm\tlist", "List"),
            ("!fm\nstatus", "Status"),
            ("!fm  PR", "Pr"),
            ("!fmstop", "none"),
            ("!fm-bot help", "none"),
            ("!fm new fix it", &new("", "fix it")),
            (
                "!fm new --agent scripted say hi\nrun echo 42",
                &new("agent=scripted", "say hi\nrun echo 42"),
            ),
            (
                "!fm new --agent scripted\nsay hi\n\nrun echo 42\n",
                &new("agent=scripted", "say hi\n\nrun echo 42"),
            ),
            (
                "!fm stpo",
                "err: unknown command `stpo`; did you mean `!fm stop`? Send `!fm help`",
            ),
            ("!fm lsit", "err: did you mean `!fm list`?"),
            (
                "!fm fix the bug",
                "err: unknown command `fix`. Send `!fm help`",
            ),
            ("!fm new --agnet x go", "err: did you mean --agent?"),
        ] {
            check(input, expected);
        }
        assert_eq!(parse_prefixed("hello", "!fm"), None);
        assert_eq!(parse_prefixed(" !fm help", "!fm"), None);
        assert_eq!(
            parse_prefixed("fix it", ""),
            Some(Ok(Command::Prompt("fix it".into())))
        );
        assert_eq!(
            parse_prefixed("@bot: stop", "@bot:"),
            Some(Ok(Command::Stop))
        );
    }

    #[test]
    fn timeout_values() {
        assert_eq!(parse_timeout("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_timeout(" 2h "), Ok(Duration::from_secs(7200)));
        assert!(parse_timeout("").is_err());
        assert!(parse_timeout("-5m").is_err());
    }

    #[test]
    fn help_is_narrow_and_complete() {
        let help = help_text();
        for line in help.lines() {
            assert!(line.chars().count() <= 60, "too wide: {line:?}");
        }
        for spec in COMMANDS {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(spec.usage)),
                "help lacks {}",
                spec.name
            );
        }
        for (flag, _, _) in FLAGS {
            assert!(help.contains(&format!("--{flag} ")), "help lacks --{flag}");
        }
    }

    #[test]
    fn echoed_input_is_cut_to_a_readable_length() {
        assert_eq!(echo(""), "");
        let short = "x".repeat(ECHO_CHARS);
        assert_eq!(echo(&short), short.as_str());
        // Cut on a character, not a byte: é is two bytes.
        let long = "é".repeat(ECHO_CHARS + 1);
        let cut = format!(
            "{}… ({} characters)",
            "é".repeat(ECHO_CHARS - 1),
            ECHO_CHARS + 1
        );
        assert_eq!(echo(&long), cut);
        let first = cut.split(' ').next().unwrap_or_default();
        assert_eq!(echo(first), first, "cut twice");
        // Every error that quotes the user's words quotes at most ECHO_CHARS of them.
        let huge = "x".repeat(1 << 20);
        for input in [
            format!("!fm {huge}"),
            format!("!fm new --{huge} go"),
            format!("!fm new --timeout {huge} go"),
        ] {
            let e = parse_prefixed(&input, "!fm")
                .expect("addressed to the bot")
                .expect_err("refused");
            assert!(
                e.message().len() < 1000 && e.message().contains("(1048576 characters)"),
                "not cut: {}…",
                &e.message()[..200.min(e.message().len())]
            );
        }
    }

    #[test]
    fn never_panics() {
        let inputs = [
            "new --",
            "new --=",
            "new --=x y",
            "new —",
            "new –a",
            "new \u{2014}",
            "new --a\u{e9}=",
            "\u{2014}\u{2014}",
            "!fm \u{2014}",
            "new --agent=\u{1f600} \u{1f600}",
            "\r",
            "\n",
            "new\r\n",
            "use\n",
            "!fm\r\n",
        ];
        for input in inputs {
            let _ = parse_line(input);
            let _ = parse_prefixed(input, "!fm");
            let _ = parse_prefixed(input, "new");
        }
    }
}
