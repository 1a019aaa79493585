//! Approvals from chat (`permission_mode = "ask"`): what a person answers, what the
//! thread shows of the tool call asked about, and who may answer. Pure.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How an approval ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Run this call.
    Approve,
    /// Run this call and, for the rest of the session, every call of the same tool.
    Always,
    /// Do not run it (a person, `interrupt` or `stop`).
    Deny,
    /// Nobody answered within `sessions.approval_timeout`: not run.
    Timeout,
}

impl Answer {
    pub const ALL: [Answer; 4] = [
        Answer::Approve,
        Answer::Always,
        Answer::Deny,
        Answer::Timeout,
    ];

    /// The stored name, also the `outcome` label of the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Approve => "approved",
            Answer::Always => "always",
            Answer::Deny => "denied",
            Answer::Timeout => "timed_out",
        }
    }

    /// Whether the tool call runs.
    pub fn allows(self) -> bool {
        matches!(self, Answer::Approve | Answer::Always)
    }

    /// The word a person types for it (`approve`, `always`, `deny`), if any.
    pub fn from_word(word: &str) -> Option<Answer> {
        match word.trim().to_ascii_lowercase().as_str() {
            "approve" => Some(Answer::Approve),
            "always" => Some(Answer::Always),
            "deny" => Some(Answer::Deny),
            _ => None,
        }
    }

    /// The answer a Matrix reaction key stands for (✅ ♾️ ❌, with or without the
    /// variation selector).
    pub fn from_reaction(key: &str) -> Option<Answer> {
        match key.trim_end_matches('\u{fe0f}') {
            "✅" | "✔" | "👍" => Some(Answer::Approve),
            "♾" => Some(Answer::Always),
            "❌" | "👎" => Some(Answer::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Answer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Answer::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown approval outcome {s:?}"))
    }
}

/// Who answered an approval and how, as the thread shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    pub answer: Answer,
    /// Who answered (a mention), empty when no person did.
    pub by: String,
    /// Why, when no person's choice explains it ("no answer within 10m", "the turn
    /// was interrupted").
    pub why: Option<String>,
}

impl Answered {
    /// "✅ approved by @alice", "♾️ approved for this session by @alice", "❌ denied by
    /// @bob", "❌ denied: the turn was interrupted", "⌛ denied: no answer within 10m".
    pub fn line(&self) -> String {
        let by = if self.by.is_empty() {
            String::new()
        } else {
            format!(" by {}", self.by)
        };
        let why = self
            .why
            .as_deref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        match self.answer {
            Answer::Approve => format!("✅ approved{by}"),
            Answer::Always => format!("♾️ approved for this session{by}"),
            Answer::Deny => format!("❌ denied{by}{why}"),
            Answer::Timeout => format!("⌛ denied{why}"),
        }
    }

    /// What the agent (and the model) reads when the call is denied.
    pub fn refusal(&self) -> String {
        match (&self.answer, self.why.as_deref()) {
            (Answer::Timeout, Some(why)) => format!("Not run: nobody approved it ({why})."),
            (_, Some(why)) if self.by.is_empty() => format!("Not run: denied ({why})."),
            (_, Some(why)) => format!("Not run: denied by {} ({why}).", self.by),
            (_, None) if self.by.is_empty() => "Not run: denied.".to_string(),
            (_, None) => format!("Not run: denied by {} in the chat.", self.by),
        }
    }
}

/// Lines of a preview in the thread.
const PREVIEW_LINES: usize = 20;
/// Characters of a preview in the thread.
const PREVIEW_CHARS: usize = 1500;

/// What the approval message shows below the tool's one-line summary, if anything: a
/// command longer than its summary, a diff of an edit, the start of a file written.
pub fn preview(tool: &str, input: &Value) -> Option<String> {
    let field = |k: &str| input.get(k).and_then(Value::as_str);
    let text = match tool {
        "Bash" => {
            let command = field("command")?;
            (command.contains('\n') || command.chars().count() > 80).then(|| command.to_string())?
        }
        "Edit" => diff(field("old_string")?, field("new_string")?),
        "MultiEdit" => input
            .get("edits")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(|e| {
                Some(diff(
                    e.get("old_string")?.as_str()?,
                    e.get("new_string")?.as_str()?,
                ))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        "Write" => field("content")?
            .lines()
            .map(|l| format!("+{l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        "NotebookEdit" => field("new_source")?.to_string(),
        _ => return None,
    };
    let text = text.trim_end();
    (!text.is_empty()).then(|| cut_lines(text))
}

/// An edit as a diff: the old lines with `-`, the new with `+`.
fn diff(old: &str, new: &str) -> String {
    let mut out: Vec<String> = old.lines().map(|l| format!("-{l}")).collect();
    out.extend(new.lines().map(|l| format!("+{l}")));
    out.join("\n")
}

/// At most [`PREVIEW_LINES`] lines and [`PREVIEW_CHARS`] characters; a cut says how
/// many lines it left out.
fn cut_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut kept = 0;
    for l in &lines {
        if kept == PREVIEW_LINES || out.chars().count() + l.chars().count() > PREVIEW_CHARS {
            break;
        }
        if kept > 0 {
            out.push('\n');
        }
        out.push_str(l);
        kept += 1;
    }
    if kept == 0 {
        out = lines
            .first()
            .map(|l| l.chars().take(PREVIEW_CHARS).collect())
            .unwrap_or_default();
        kept = 1;
    }
    if kept < lines.len() {
        out.push_str(&format!("\n… {} more line(s)", lines.len() - kept));
    }
    out
}

/// Who asks to answer an approval.
#[derive(Debug, Clone, Copy)]
pub struct Answerer<'a> {
    /// Their id (a Matrix user id, a Discord user id, the console's user).
    pub id: &'a str,
    /// Their Discord roles (empty elsewhere).
    pub roles: &'a [String],
    /// Whether the front end's allow lists let them steer sessions.
    pub allowed: bool,
}

/// Whether `who` may answer an approval of a session `owner` started:
/// `sessions.approvers` empty lets the requester and allowed people answer; otherwise
/// only the people (and Discord roles) it lists.
pub fn may_answer(approvers: &[String], owner: &str, who: Answerer) -> bool {
    if approvers.is_empty() {
        return who.allowed || who.id == owner;
    }
    approvers
        .iter()
        .any(|a| a == who.id || who.roles.iter().any(|r| r == a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_round_trip_and_come_from_words_and_reactions() {
        for a in Answer::ALL {
            assert_eq!(a.as_str().parse::<Answer>(), Ok(a));
        }
        assert_eq!(Answer::from_word("Approve"), Some(Answer::Approve));
        assert_eq!(Answer::from_word(" always\n"), Some(Answer::Always));
        assert_eq!(Answer::from_word("deny"), Some(Answer::Deny));
        assert_eq!(Answer::from_word("yes"), None);
        assert_eq!(Answer::from_reaction("✅"), Some(Answer::Approve));
        assert_eq!(Answer::from_reaction("♾️"), Some(Answer::Always));
        assert_eq!(Answer::from_reaction("♾"), Some(Answer::Always));
        assert_eq!(Answer::from_reaction("❌"), Some(Answer::Deny));
        assert_eq!(Answer::from_reaction("🎉"), None);
        assert!(Answer::Always.allows() && !Answer::Timeout.allows());
    }

    #[test]
    fn answered_lines_say_who_and_why() {
        let a = |answer, by: &str, why: Option<&str>| Answered {
            answer,
            by: by.into(),
            why: why.map(String::from),
        };
        assert_eq!(
            a(Answer::Approve, "@alice", None).line(),
            "✅ approved by @alice"
        );
        assert_eq!(
            a(Answer::Always, "@alice", None).line(),
            "♾️ approved for this session by @alice"
        );
        assert_eq!(a(Answer::Deny, "@bob", None).line(), "❌ denied by @bob");
        assert_eq!(
            a(Answer::Deny, "", Some("the turn was interrupted")).line(),
            "❌ denied: the turn was interrupted"
        );
        assert_eq!(
            a(Answer::Timeout, "", Some("no answer within 10m")).line(),
            "⌛ denied: no answer within 10m"
        );
        assert_eq!(
            a(Answer::Deny, "@bob", None).refusal(),
            "Not run: denied by @bob in the chat."
        );
        assert_eq!(
            a(Answer::Timeout, "", Some("no answer within 10m")).refusal(),
            "Not run: nobody approved it (no answer within 10m)."
        );
    }

    #[test]
    fn previews_show_long_commands_diffs_and_written_files() {
        assert_eq!(preview("Bash", &json!({"command": "touch x"})), None);
        let long = "for i in 1 2 3; do\n  echo $i\ndone";
        assert_eq!(
            preview("Bash", &json!({"command": long})),
            Some(long.into())
        );
        assert_eq!(
            preview(
                "Edit",
                &json!({"file_path": "a.rs", "old_string": "let x = 1;", "new_string": "let x = 2;\nlet y = 3;"})
            ),
            Some("-let x = 1;\n+let x = 2;\n+let y = 3;".into())
        );
        assert_eq!(
            preview(
                "MultiEdit",
                &json!({"edits": [{"old_string": "a", "new_string": "b"}, {"old_string": "c", "new_string": "d"}]})
            ),
            Some("-a\n+b\n-c\n+d".into())
        );
        let content: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let p = preview("Write", &json!({"content": content})).expect("a preview");
        assert!(p.starts_with("+line 1\n+line 2\n"), "{p}");
        assert!(p.ends_with("\n… 30 more line(s)"), "{p}");
        assert_eq!(p.lines().count(), 21);
        assert_eq!(preview("WebFetch", &json!({"url": "https://x"})), None);
        // One huge line is cut, not dropped.
        let huge = "x".repeat(5000);
        let p = preview("Bash", &json!({"command": huge})).expect("a preview");
        assert_eq!(p.chars().count(), PREVIEW_CHARS);
    }

    #[test]
    fn who_may_answer() {
        let roles = vec!["42".to_string()];
        let who = |id, roles, allowed| Answerer { id, roles, allowed };
        // No approvers: the requester and allowed people.
        assert!(may_answer(&[], "@o:x", who("@o:x", &[], false)));
        assert!(may_answer(&[], "@o:x", who("@a:x", &[], true)));
        assert!(!may_answer(&[], "@o:x", who("@b:x", &[], false)));
        // Approvers: only those listed, by id or Discord role, allowed or not.
        let approvers = vec!["@lead:x".to_string(), "42".to_string()];
        assert!(may_answer(&approvers, "@o:x", who("@lead:x", &[], false)));
        assert!(may_answer(&approvers, "1", who("7", &roles, false)));
        assert!(!may_answer(&approvers, "@o:x", who("@o:x", &[], true)));
    }
}
