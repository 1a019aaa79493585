//! The front-end-neutral events of a session: what the engine stores in the event log and
//! publishes to front ends. Every event has a per-session sequence number, dense from 1,
//! so a front end that remembers the last one it delivered never shows a gap or a duplicate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::approval::Answered;
use crate::protocol::AgentEvent;

/// The life cycle of a session (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Queued,
    Starting,
    Running,
    Waiting,
    Stopped,
    Failed,
}

impl SessionState {
    pub const ALL: [SessionState; 6] = [
        SessionState::Queued,
        SessionState::Starting,
        SessionState::Running,
        SessionState::Waiting,
        SessionState::Stopped,
        SessionState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Queued => "queued",
            SessionState::Starting => "starting",
            SessionState::Running => "running",
            SessionState::Waiting => "waiting",
            SessionState::Stopped => "stopped",
            SessionState::Failed => "failed",
        }
    }

    /// A live session holds a container (or is about to).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            SessionState::Starting | SessionState::Running | SessionState::Waiting
        )
    }

    /// Stopped or failed: nothing runs until `resume`.
    pub fn is_ended(self) -> bool {
        matches!(self, SessionState::Stopped | SessionState::Failed)
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown session state {s:?}"))
    }
}

/// What happened, in a form every front end can render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// The session changed state; `detail` says why when it is not obvious.
    State {
        state: SessionState,
        detail: Option<String>,
    },
    /// A prompt was handed to the agent: the start of a turn.
    Prompt { text: String, author: String },
    /// Something the agent said or did.
    Agent { event: AgentEvent },
    /// A line the agent wrote to stderr (kept for `logs`, not shown in chat).
    Stderr { line: String },
    /// A message from firstmate itself to the people in the thread.
    Notice { text: String },
    /// A tool call waits for a person's approval (`answer` is None), or was answered.
    /// The answer's event repeats the call, so each event shows the whole message.
    Approval {
        id: String,
        tool: String,
        summary: String,
        preview: Option<String>,
        answer: Option<Answered>,
    },
}

/// One entry of a session's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub session: String,
    pub seq: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub body: EventBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for st in SessionState::ALL {
            assert_eq!(st.as_str().parse::<SessionState>(), Ok(st));
        }
        assert!("paused".parse::<SessionState>().is_err());
    }

    #[test]
    fn event_bodies_round_trip_through_json() {
        let bodies = [
            EventBody::State {
                state: SessionState::Waiting,
                detail: None,
            },
            EventBody::Agent {
                event: AgentEvent::Text { text: "hi".into() },
            },
            EventBody::Notice {
                text: "stopped".into(),
            },
        ];
        for b in bodies {
            let json = serde_json::to_string(&b).expect("serialize");
            assert_eq!(serde_json::from_str::<EventBody>(&json).expect("parse"), b);
        }
    }
}
