//! Repository sessions in the engine (SPEC section 8): the workspace cloned before the
//! agent starts, the diffstat at each turn's end, and the thread commands `diff`,
//! `push` and `pr`. The scripts and their output formats are `crate::repo`'s; the
//! gateway serves the git traffic (`gateway/git.rs`); the forge calls are
//! `crate::forge`'s.
//!
//! Invariants: git runs only in the worker (`docker exec`, as its own user, through the
//! gateway); the forge token is read from the config only where a pull request is
//! opened and goes nowhere else; a session's branch is recorded before the gateway lets
//! it be pushed.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Engine, EngineError, Msg, Result, SessionTask};
use crate::event::EventBody;
use crate::forge;
use crate::gateway::git::GitGrant;
use crate::repo::{self, DiffStat};
use crate::runtime::ExecEnd;
use crate::store::SessionRecord;

/// The most output a repository script's answer (not a diff) may have.
const SMALL_OUTPUT: u64 = 64 * 1024;

/// Pushes the session's branch (`sh -c PUSH_SCRIPT sh BRANCH SESSION`): uncommitted
/// work is committed first; exits 3 when there is nothing to push; prints the commit.
const PUSH_SCRIPT: &str = r#"set -eu
cd /workspace
branch=$1 session=$2
git add -A
if ! git diff --cached --quiet; then
  git commit --quiet -m "firstmate: work of session $session"
fi
head=$(git rev-parse HEAD)
if [ "$head" = "$(git rev-parse refs/firstmate/base)" ]; then
  echo "no commits since the session began" >&2
  exit 3
fi
git push --quiet "$FIRSTMATE_GIT_REMOTE" "HEAD:refs/heads/$branch" >&2
echo "$head"
"#;

fn no_repo(id: &str) -> EngineError {
    EngineError::Other(format!(
        "session {id} has no repository: `diff`, `push` and `pr` work on sessions started with `new --repo ALIAS|URL`"
    ))
}

/// The last lines of a script's standard error, for a reply.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join(" / ")
}

impl Engine {
    /// Runs `script` with `args` in the session's running container; its exit and at
    /// most `limit` bytes of its standard output (more is an error).
    async fn run_script(
        &self,
        id: &str,
        container: &str,
        script: &str,
        args: &[&str],
        limit: u64,
    ) -> Result<(ExecEnd, Vec<u8>)> {
        let argv = ["sh", "-c", script, "sh"]
            .into_iter()
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect();
        let mut out = Vec::new();
        let end = self
            .inner
            .runtime
            .exec_io(id, container, argv, None, &mut |chunk: &[u8]| {
                if out.len() as u64 + chunk.len() as u64 > limit {
                    return Err(std::io::Error::other(format!(
                        "more than {}",
                        crate::files::human_size(limit)
                    )));
                }
                out.extend_from_slice(chunk);
                Ok(())
            })
            .await?;
        Ok((end, out))
    }

    /// A repository session, running (what `diff`, `push` and `pr` need).
    async fn repo_session(&self, id: &str) -> Result<(SessionRecord, String)> {
        let s = self.session(id).await?;
        if s.repo.is_none() {
            return Err(no_repo(id));
        }
        let container = self.running_container(id).await?;
        let s = self.session(id).await?;
        if s.base_commit.is_none() {
            return Err(EngineError::Other(format!(
                "session {id}'s workspace is not cloned yet; try again when its first turn has started"
            )));
        }
        Ok((s, container))
    }

    /// `diff`: the session's changes since it began, committed or not, as a patch of at
    /// most `limit` bytes (its file name and bytes); None when nothing changed.
    pub async fn diff(&self, id: &str, limit: u64) -> Result<Option<(String, Vec<u8>)>> {
        let (s, container) = self.repo_session(id).await?;
        let (end, out) = self
            .run_script(id, &container, repo::DIFF_SCRIPT, &["--stat", "--patch", "--no-color"], limit)
            .await
            .map_err(|e| match e {
                EngineError::Runtime(r) if r.to_string().contains("more than") => EngineError::Other(format!(
                    "the diff of session {id} is larger than this chat takes ({}); `push` it and read it on the forge",
                    crate::files::human_size(limit)
                )),
                e => e,
            })?;
        if end.code != Some(0) {
            return Err(EngineError::Other(format!(
                "cannot make the diff: {}",
                tail(&end.stderr)
            )));
        }
        if out.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let short = s
            .base_commit
            .as_deref()
            .map(repo::short)
            .unwrap_or_default();
        Ok(Some((format!("firstmate-{id}-since-{short}.diff"), out)))
    }

    /// `push`: commits what is not committed, pushes the session's branch, records the
    /// commit and says so in the thread. The commit pushed.
    pub async fn push(&self, id: &str) -> Result<String> {
        let lock = self.repo_lock(id);
        let _one_at_a_time = lock.lock().await;
        self.push_branch(id, false).await
    }

    /// The session's lock for repository commands.
    fn repo_lock(&self, id: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        self.inner
            .repo_locks
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Pushes; `quiet`: says nothing when the branch was pushed already.
    async fn push_branch(&self, id: &str, quiet: bool) -> Result<String> {
        let (s, container) = self.repo_session(id).await?;
        let branch = s.branch.clone().unwrap_or_else(|| repo::own_branch(id));
        let (end, out) = self
            .run_script(id, &container, PUSH_SCRIPT, &[&branch, id], SMALL_OUTPUT)
            .await?;
        match end.code {
            Some(0) => {}
            Some(3) => {
                return Err(EngineError::Other(format!(
                    "nothing to push: session {id} has no changes since it began (on {} at {})",
                    s.base_branch.as_deref().unwrap_or("?"),
                    s.base_commit.as_deref().map(repo::short).unwrap_or("?")
                )));
            }
            _ => {
                return Err(EngineError::Other(format!(
                    "the push of {branch} failed: {}",
                    tail(&end.stderr)
                )));
            }
        }
        let commit = String::from_utf8_lossy(&out).trim().to_string();
        self.inner.store.set_pushed(id, &commit).await?;
        let label = s.repo.as_deref().unwrap_or_default();
        if s.pushed_commit.as_deref() == Some(commit.as_str()) {
            // Nothing new (a `pr` after a `push`): said once already.
            if !quiet {
                self.notice(
                    id,
                    format!("⬆ {branch} is pushed already, at {}", repo::short(&commit)),
                )
                .await;
            }
            return Ok(commit);
        }
        info!(session = %id, %branch, commit = %commit, "pushed");
        self.notice(
            id,
            format!("⬆ pushed {branch} at {} to {label}", repo::short(&commit)),
        )
        .await;
        Ok(commit)
    }

    /// `pr`: pushes, then opens a pull (merge) request from the session's branch on the
    /// forge and posts its link. A session that has one already gets its link again.
    pub async fn pr(&self, id: &str, thread_link: Option<String>) -> Result<String> {
        let lock = self.repo_lock(id);
        let _one_at_a_time = lock.lock().await;
        let s = self.session(id).await?;
        let label = s.repo.clone().ok_or_else(|| no_repo(id))?;
        let cfg = self.config();
        let target = repo::resolve(cfg, &label).map_err(EngineError::Other)?;
        let token = target
            .credential_alias
            .as_ref()
            .and_then(|a| cfg.repos.get(a))
            .and_then(|r| r.token.value().map(|t| (r, t.to_string())));
        let Some((repo_cfg, token)) = token else {
            return Err(EngineError::Other(format!(
                "no forge token for {label}: a pull request needs [repos.<alias>] token_env (or token_file) for {}",
                target.url.authority()
            )));
        };
        if let Some(url) = &s.pr_url {
            self.notice(id, format!("🔀 pull request (opened earlier): {url}"))
                .await;
            return Ok(url.clone());
        }
        match self.push_branch(id, true).await {
            Ok(_) => {}
            // Pushed earlier, nothing new since: the pull request can still be opened.
            Err(_) if s.pushed_commit.is_some() => {}
            Err(e) => return Err(e),
        }
        let s = self.session_report(id).await?;
        let head = s.branch.clone().unwrap_or_else(|| repo::own_branch(id));
        let base = s
            .base_branch
            .clone()
            .unwrap_or_else(|| target.default_branch.clone());
        let pr = forge::PullRequest {
            title: pr_title(&s.first_prompt),
            body: pr_body(&s, thread_link.as_deref()),
            head,
            base,
        };
        let api = repo::api_base(target.forge, &target.url, repo_cfg.api_url.as_deref());
        let req = forge::request(target.forge, &api, target.url.project(), &token, &pr)
            .map_err(EngineError::Other)?;
        let url = forge::open(target.forge, req).await.map_err(|e| {
            EngineError::Other(format!(
                "cannot open the pull request on {}: {e}",
                target.url.authority()
            ))
        })?;
        self.inner.store.set_pr_url(id, &url).await?;
        info!(session = %id, %url, "pull request opened");
        self.notice(id, format!("🔀 pull request opened: {url}"))
            .await;
        Ok(url)
    }

    /// Says `text` in the session's thread (its task writes it), and returns once it
    /// is stored: what a command says is in the thread before its answer.
    async fn notice(&self, id: &str, text: String) {
        let (done, stored) = tokio::sync::oneshot::channel();
        if !self.send(
            id,
            Msg::Notice {
                text,
                done: Some(done),
            },
        ) {
            warn!(session = %id, "no task to say a repository notice");
            return;
        }
        if tokio::time::timeout(Duration::from_secs(30), stored)
            .await
            .is_err()
        {
            warn!(session = %id, "a repository notice was not stored within 30 s");
        }
    }
}

/// A pull request's title: the first line of the first prompt, at most 72 characters.
fn pr_title(prompt: &str) -> String {
    let line = prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("firstmate session");
    if line.chars().count() <= 72 {
        return line.to_string();
    }
    let cut: String = line.chars().take(71).collect();
    format!("{}…", cut.trim_end())
}

/// A pull request's description: who asked, the agent, model, turns, tokens, cost and
/// the thread.
fn pr_body(s: &SessionRecord, thread: Option<&str>) -> String {
    let u = &s.usage;
    let mut body = format!(
        "Opened by firstmate from session `{}`.\n\n\
         - Requested by: {}\n\
         - Agent: {}{}\n\
         - Turns: {}\n\
         - Tokens: {} in, {} out, {} cache read, {} cache write\n\
         - Cost: ${:.4}\n",
        s.id,
        s.owner,
        s.agent,
        s.model
            .as_deref()
            .map(|m| format!(" (model {m})"))
            .unwrap_or_default(),
        s.turns,
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        s.cost_usd,
    );
    match thread {
        Some(link) => body.push_str(&format!("- Thread: {link}\n")),
        None => body.push_str(&format!(
            "- Thread: `{}` session {} (no link)\n",
            s.frontend, s.id
        )),
    }
    body.push_str("\nThe first prompt:\n\n");
    for line in s.first_prompt.lines() {
        body.push_str("> ");
        body.push_str(line);
        body.push('\n');
    }
    body
}

impl SessionTask {
    /// What the gateway may do for this session's git traffic, if it has a repository.
    pub(super) fn git_grant(&self) -> Result<Option<GitGrant>> {
        let Some(label) = &self.s.repo else {
            return Ok(None);
        };
        let cfg = &self.engine.inner.config;
        let target = repo::resolve(cfg, label).map_err(EngineError::Other)?;
        let authorization = target
            .credential_alias
            .as_ref()
            .and_then(|a| cfg.repos.get(a))
            .and_then(repo::git_authorization);
        Ok(Some(GitGrant {
            upstream: target.url.to_url(),
            authorization,
            push_branch: self
                .s
                .base_commit
                .is_some()
                .then(|| self.s.branch.clone())
                .flatten(),
        }))
    }

    /// Clones the repository into the new container's workspace (a resumed session's is
    /// kept) and lets the agent start. False when it could not: the session failed, with
    /// the reason in the thread.
    pub(super) async fn prepare_workspace(&mut self, container: &str) -> Result<bool> {
        let Some(label) = self.s.repo.clone() else {
            return Ok(true);
        };
        let Some(gw) = self.engine.inner.gateway.clone() else {
            return Err(EngineError::Other(
                "a repository session needs [gateway] in the config".into(),
            ));
        };
        let cfg = &self.engine.inner.config;
        let target = repo::resolve(cfg, &label).map_err(EngineError::Other)?;
        let want = if self.s.base_commit.is_some() {
            String::new()
        } else {
            self.s.branch.clone().unwrap_or_default()
        };
        let own = repo::own_branch(&self.s.id);
        let remote = gw.git_remote(&self.s.id);
        if self.s.base_commit.is_none() {
            self.pending.push(EventBody::Notice {
                text: format!("cloning {label}…"),
            });
            self.commit().await?;
        }
        let started = Instant::now();
        let id = self.s.id.clone();
        let (end, out) = self
            .engine
            .run_script(
                &id,
                container,
                repo::CLONE_SCRIPT,
                &[&remote, &target.default_branch, &want, &own],
                SMALL_OUTPUT,
            )
            .await?;
        let prepared = match end.code {
            Some(0) => repo::parse_prepared(&String::from_utf8_lossy(&out)),
            _ => Err(tail(&end.stderr)),
        };
        let p = match prepared {
            Ok(p) => p,
            Err(why) => {
                warn!(session = %id, repo = %label, %why, "cannot prepare the workspace");
                let _ = self
                    .runtime()
                    .stop(&id, container, Duration::from_secs(1))
                    .await;
                self.fail(format!("cannot clone {label}: {why}")).await;
                return Ok(false);
            }
        };
        let fresh = self.s.base_commit.is_none();
        self.store()
            .set_workspace(&id, &p.branch, &p.base, &p.commit)
            .await?;
        self.s.branch = Some(p.branch.clone());
        self.s.base_branch = Some(p.base.clone());
        self.s.base_commit = Some(p.commit.clone());
        if let Some(grant) = self.git_grant()? {
            gw.grant_git(&id, grant);
        }
        if fresh {
            let took = started.elapsed();
            info!(session = %id, repo = %label, branch = %p.branch, ms = took.as_millis() as u64, "workspace cloned");
            self.pending.push(EventBody::Notice {
                text: format!(
                    "workspace: {label} on branch {} from {} at {} (cloned in {:.1} s)",
                    p.branch,
                    p.base,
                    repo::short(&p.commit),
                    took.as_secs_f64()
                ),
            });
            self.commit().await?;
        }
        Ok(true)
    }

    /// At a turn's end: the files changed and lines added and removed since the
    /// session began, as a notice (nothing for a session without a repository).
    pub(super) async fn turn_diffstat(&mut self) {
        if self.s.repo.is_none() || self.s.base_commit.is_none() {
            return;
        }
        let container = self.s.container_id.clone().unwrap_or_default();
        let id = self.s.id.clone();
        match self
            .engine
            .run_script(
                &id,
                &container,
                repo::DIFF_SCRIPT,
                &["--numstat"],
                8 * 1024 * 1024,
            )
            .await
        {
            Ok((end, out)) if end.code == Some(0) => {
                let stat = DiffStat::from_numstat(&String::from_utf8_lossy(&out));
                self.pending.push(EventBody::Notice {
                    text: format!("📝 {} since the session began", stat.summary()),
                });
            }
            Ok((end, _)) => {
                warn!(session = %id, stderr = %end.stderr, "cannot count the workspace's changes")
            }
            Err(e) => warn!(session = %id, error = %e, "cannot count the workspace's changes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_prompts_first_line_kept_short() {
        assert_eq!(pr_title("\n  Fix the login bug\nmore"), "Fix the login bug");
        let long = "x".repeat(100);
        let t = pr_title(&long);
        assert_eq!(t.chars().count(), 72);
        assert!(t.ends_with('…'));
        assert_eq!(pr_title(""), "firstmate session");
    }

    #[test]
    fn the_description_names_who_what_and_where() {
        let mut s = SessionRecord::new_queued(
            "s1".into(),
            "i".into(),
            "claude".into(),
            "claude".into(),
            "img".into(),
            "@alice:x".into(),
            "matrix".into(),
            "!r:x".into(),
            "fix it\nplease".into(),
        );
        s.model = Some("sonnet".into());
        s.turns = 2;
        s.usage.input_tokens = 10;
        s.cost_usd = 0.5;
        let b = pr_body(&s, Some("https://matrix.to/#/!r:x/$e"));
        for want in [
            "@alice:x",
            "claude (model sonnet)",
            "Turns: 2",
            "10 in",
            "$0.5000",
            "https://matrix.to/#/!r:x/$e",
            "> please",
        ] {
            assert!(b.contains(want), "{want} in {b}");
        }
    }
}
