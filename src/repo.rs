//! Repositories (SPEC section 8), the pure parts: which repository `new --repo` names
//! and with which credential, the branch names a session may use, the git
//! configuration a worker gets, the scripts it runs (clone, diff, diffstat) and what
//! they print.
//!
//! Invariants: a worker never holds a forge token: its git remote is the gateway
//! (`<gateway url>/git/<session id>`), reached with the session's gateway token as an
//! `http.extraHeader` given through the environment, never written to
//! `/workspace/.git/config`; the gateway puts the real credential on the way out
//! (`gateway/git.rs`). Only http(s) repositories are served, without credentials in
//! the URL, and an ad-hoc URL only on `[sessions] allowed_repo_hosts`.

use base64::Engine as _;

use crate::config::{Config, Forge, RepoConfig};
pub use crate::repo_url::{RepoUrl, check_branch, host_allowed};

/// A repository `new --repo` names, resolved against the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What the session records and shows: the alias, or the URL as given.
    pub label: String,
    pub url: RepoUrl,
    pub default_branch: String,
    pub forge: Forge,
    /// The `[repos.*]` table whose token (and forge settings) it uses, if any: the
    /// alias's own, or for a URL the first table on the same host.
    pub credential_alias: Option<String>,
}

/// The repository `spec` (an alias or a URL) names, or what is wrong with it.
pub fn resolve(cfg: &Config, spec: &str) -> Result<Target, String> {
    let spec = spec.trim();
    if let Some(r) = cfg.repos.get(spec) {
        let url = RepoUrl::parse(&r.url).map_err(|e| format!("[repos.{spec}] url {e}"))?;
        return Ok(Target {
            label: spec.to_string(),
            url,
            default_branch: r.default_branch.clone(),
            forge: r.forge,
            credential_alias: Some(spec.to_string()),
        });
    }
    let known = || {
        let aliases: Vec<&str> = cfg.repos.keys().map(String::as_str).collect();
        let hosts = &cfg.sessions.allowed_repo_hosts;
        format!(
            "the aliases are {}; URLs may be on {}",
            if aliases.is_empty() {
                "none ([repos.<alias>] in the config)".to_string()
            } else {
                aliases.join(", ")
            },
            if hosts.is_empty() {
                "no host ([sessions] allowed_repo_hosts is empty)".to_string()
            } else {
                hosts.join(", ")
            },
        )
    };
    if !spec.contains("://") {
        return Err(format!(
            "--repo {spec}: no such repository alias; {}",
            known()
        ));
    }
    let url = RepoUrl::parse(spec).map_err(|e| format!("--repo {spec} {e}"))?;
    if !host_allowed(&cfg.sessions.allowed_repo_hosts, &url) {
        return Err(format!(
            "--repo {spec}: {} is not an allowed repository host; {}",
            url.authority(),
            known()
        ));
    }
    // A token configured for this host serves its other repositories too.
    let same_host = cfg
        .repos
        .iter()
        .find(|(_, r)| RepoUrl::parse(&r.url).is_ok_and(|u| u.authority() == url.authority()));
    Ok(Target {
        label: spec.to_string(),
        default_branch: same_host
            .map_or_else(|| "main".to_string(), |(_, r)| r.default_branch.clone()),
        forge: same_host.map_or(Forge::Git, |(_, r)| r.forge),
        credential_alias: same_host.map(|(a, _)| a.clone()),
        url,
    })
}

/// The user name of the HTTP basic credential: what each forge documents for a token.
pub fn basic_user(forge: Forge, username: Option<&str>) -> String {
    if let Some(u) = username.filter(|u| !u.is_empty()) {
        return u.to_string();
    }
    match forge {
        Forge::Github => "x-access-token",
        Forge::Gitlab => "oauth2",
        Forge::Forgejo | Forge::Git => "firstmate",
    }
    .to_string()
}

/// The `Authorization` value git requests go upstream with, when the repository has a
/// token.
pub fn git_authorization(repo: &RepoConfig) -> Option<String> {
    let token = repo.token.value()?;
    let user = basic_user(repo.forge, repo.username.as_deref());
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    Some(format!("Basic {pair}"))
}

/// The base the forge's REST paths are appended to.
pub fn api_base(forge: Forge, url: &RepoUrl, api_url: Option<&str>) -> String {
    if let Some(api) = api_url {
        return api.trim_end_matches('/').to_string();
    }
    match forge {
        Forge::Github if url.host == "github.com" => "https://api.github.com".to_string(),
        Forge::Github => format!("{}://{}/api/v3", url.scheme, url.authority()),
        _ => format!("{}://{}", url.scheme, url.authority()),
    }
}

/// The session's branch when it did not name one.
pub fn own_branch(session: &str) -> String {
    format!("firstmate/{session}")
}

/// The worker's git remote: the gateway, for this session.
pub fn remote_url(gateway_url: &str, session: &str) -> String {
    format!("{}/git/{session}", gateway_url.trim_end_matches('/'))
}

/// The environment that lets git in the worker reach the gateway: the session token as
/// an extra header for the gateway's git URLs only, an identity for commits, and no
/// password prompt. Set through `GIT_CONFIG_*`, so no file in the workspace holds it.
pub fn git_env(gateway_url: &str, token: &str, session: &str) -> Vec<String> {
    let scope = format!("{}/git/", gateway_url.trim_end_matches('/'));
    let pairs = [
        (
            format!("http.{scope}.extraHeader"),
            format!("Authorization: Bearer {token}"),
        ),
        ("user.name".to_string(), "firstmate".to_string()),
        (
            "user.email".to_string(),
            format!("firstmate+{session}@users.noreply.invalid"),
        ),
    ];
    let mut env = vec![
        format!("GIT_CONFIG_COUNT={}", pairs.len()),
        "GIT_TERMINAL_PROMPT=0".to_string(),
        format!("FIRSTMATE_GIT_REMOTE={}", remote_url(gateway_url, session)),
    ];
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        env.push(format!("GIT_CONFIG_KEY_{i}={k}"));
        env.push(format!("GIT_CONFIG_VALUE_{i}={v}"));
    }
    env
}

/// The file whose presence lets a repository session's agent start: the workspace is
/// ready. In `/tmp`, a tmpfs of the container's own, so each new container waits.
pub const READY_FILE: &str = "/tmp/.firstmate-workspace-ready";

/// The agent's command, made to wait until the workspace is ready.
pub fn gated(cmd: Vec<String>) -> Vec<String> {
    let wait = format!("while [ ! -e {READY_FILE} ]; do sleep 0.05; done; exec \"$@\"");
    [
        "sh".to_string(),
        "-c".to_string(),
        wait,
        "firstmate-wait".to_string(),
    ]
    .into_iter()
    .chain(cmd)
    .collect()
}

/// Prepares `/workspace` (`sh -c CLONE_SCRIPT sh REMOTE DEFAULT WANT OWN`): a clone (one
/// branch, no tags: a full clone, as measured faster than a blobless one for 50,000
/// files, whose checkout fetches every blob again by id) on
/// `WANT` when that branch exists (work goes on a new `OWN`), else a new branch (`WANT`,
/// or `OWN`) from `DEFAULT`; a workspace already cloned (a resumed session) is kept, one
/// whose clone was cut short (the bot stopped meanwhile) is cloned again.
/// Prints `branch`, `base` and `commit` lines and marks the workspace ready.
pub const CLONE_SCRIPT: &str = r#"set -eu
remote=$1 default=$2 want=$3 own=$4
cd /workspace
if [ -d .git ] && ! git config firstmate.base >/dev/null; then
  # A clone cut short (the bot stopped while it ran): start again.
  find . -mindepth 1 -maxdepth 1 -exec rm -rf {} +
fi
if [ ! -d .git ]; then
  base=$default branch=$own
  if [ -n "$want" ]; then
    heads=$(git ls-remote --heads "$remote" "refs/heads/$want")
    if [ -n "$heads" ]; then base=$want; else branch=$want; fi
  fi
  git clone --quiet --no-tags --single-branch --branch "$base" -- "$remote" . >&2
  git checkout --quiet -b "$branch" >&2
  git update-ref refs/firstmate/base HEAD
  git config firstmate.base "$base"
fi
printf 'branch %s\n' "$(git symbolic-ref --short -q HEAD || true)"
printf 'base %s\n' "$(git config firstmate.base || true)"
printf 'commit %s\n' "$(git rev-parse refs/firstmate/base)"
: > /tmp/.firstmate-workspace-ready
"#;

/// The workspace's changes since the session began, committed or not, new files
/// included, as `git diff` prints them with the options given (`sh -c DIFF_SCRIPT sh
/// OPTION...`). A copy of the index takes the new files, so the agent's own index is
/// left as it was.
pub const DIFF_SCRIPT: &str = r#"set -eu
cd /workspace
idx=$(mktemp /tmp/.firstmate-index.XXXXXX)
trap 'rm -f "$idx"' EXIT
if [ -f .git/index ]; then cp .git/index "$idx"; else rm -f "$idx"; fi
GIT_INDEX_FILE=$idx git add -A
GIT_INDEX_FILE=$idx git diff --cached "$@" refs/firstmate/base
"#;

/// What the clone script reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prepared {
    pub branch: String,
    pub base: String,
    pub commit: String,
}

pub fn parse_prepared(out: &str) -> Result<Prepared, String> {
    let mut p = Prepared::default();
    for line in out.lines() {
        match line.split_once(' ') {
            Some(("branch", v)) => p.branch = v.trim().to_string(),
            Some(("base", v)) => p.base = v.trim().to_string(),
            Some(("commit", v)) => p.commit = v.trim().to_string(),
            _ => {}
        }
    }
    if p.branch.is_empty() || p.commit.is_empty() {
        return Err(format!(
            "the workspace is not on a branch (the clone said {out:?})"
        ));
    }
    Ok(p)
}

/// Files changed and lines added and removed (from `git diff --numstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiffStat {
    pub files: u64,
    pub added: u64,
    pub removed: u64,
}

impl DiffStat {
    pub fn from_numstat(out: &str) -> DiffStat {
        let mut s = DiffStat::default();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let mut cols = line.split('\t');
            let (a, r) = (cols.next(), cols.next());
            s.files += 1;
            // A binary file: "-\t-\tpath".
            s.added += a.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            s.removed += r.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        s
    }

    /// "2 files changed, +10 −3" (or "no changes").
    pub fn summary(&self) -> String {
        if self.files == 0 {
            return "no changes".to_string();
        }
        let files = if self.files == 1 { "file" } else { "files" };
        format!(
            "{} {files} changed, +{} −{}",
            self.files, self.added, self.removed
        )
    }
}

/// The first 7 characters of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        let env = |k: &str| (k == "TOK").then(|| "s3cret".to_string());
        Config::from_str(text, "bot.toml", Path::new("/"), &env).unwrap()
    }

    #[test]
    fn a_repo_is_an_alias_or_an_allowed_url() {
        let c = config(
            "[sessions]\nallowed_repo_hosts = [\"git.example.org\"]\n\
             [repos.demo]\nurl = \"https://git.example.org/team/demo.git\"\ndefault_branch = \"trunk\"\ntoken_env = \"TOK\"\nforge = \"forgejo\"\n",
        );
        let t = resolve(&c, "demo").unwrap();
        assert_eq!(
            (t.label.as_str(), t.default_branch.as_str(), t.forge),
            ("demo", "trunk", Forge::Forgejo)
        );
        let t = resolve(&c, "https://git.example.org/team/other.git").unwrap();
        assert_eq!(t.credential_alias.as_deref(), Some("demo"));
        assert_eq!(t.forge, Forge::Forgejo);
        let e = resolve(&c, "https://github.com/o/r.git").unwrap_err();
        assert!(
            e.contains("not an allowed repository host")
                && e.contains("demo")
                && e.contains("git.example.org"),
            "{e}"
        );
        let e = resolve(&c, "nope").unwrap_err();
        assert!(
            e.contains("no such repository alias") && e.contains("demo"),
            "{e}"
        );
    }

    #[test]
    fn the_credential_is_basic_with_each_forge_user() {
        let c = config(
            "[repos.gh]\nurl = \"https://github.com/o/r.git\"\ntoken_env = \"TOK\"\nforge = \"github\"\n",
        );
        let auth = git_authorization(&c.repos["gh"]).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"x-access-token:s3cret");
        assert_eq!(basic_user(Forge::Gitlab, None), "oauth2");
        assert_eq!(basic_user(Forge::Forgejo, Some("bot")), "bot");
        let u = RepoUrl::parse("https://github.com/o/r.git").unwrap();
        assert_eq!(api_base(Forge::Github, &u, None), "https://api.github.com");
        let u = RepoUrl::parse("https://ghe.corp/o/r.git").unwrap();
        assert_eq!(api_base(Forge::Github, &u, None), "https://ghe.corp/api/v3");
        assert_eq!(api_base(Forge::Gitlab, &u, Some("http://x/")), "http://x");
    }

    #[test]
    fn the_worker_env_scopes_the_token_to_the_gateway() {
        let env = git_env("http://firstmate:8787", "fm-tok", "s1");
        assert!(
            env.contains(
                &"GIT_CONFIG_KEY_0=http.http://firstmate:8787/git/.extraHeader".to_string()
            )
        );
        assert!(env.contains(&"GIT_CONFIG_VALUE_0=Authorization: Bearer fm-tok".to_string()));
        assert!(env.contains(&"FIRSTMATE_GIT_REMOTE=http://firstmate:8787/git/s1".to_string()));
        assert!(env.contains(&"GIT_CONFIG_COUNT=3".to_string()));
    }

    #[test]
    fn what_the_scripts_print_is_read() {
        let p =
            parse_prepared("branch firstmate/s1\nbase main\ncommit 0123456789abcdef\n").unwrap();
        assert_eq!(
            (p.branch.as_str(), p.base.as_str(), short(&p.commit)),
            ("firstmate/s1", "main", "0123456")
        );
        assert!(parse_prepared("branch \nbase main\ncommit \n").is_err());
        let s = DiffStat::from_numstat("3\t1\tsrc/a.rs\n-\t-\timg.png\n10\t0\tnew.txt\n");
        assert_eq!(
            s,
            DiffStat {
                files: 3,
                added: 13,
                removed: 1
            }
        );
        assert_eq!(s.summary(), "3 files changed, +13 −1");
        assert_eq!(DiffStat::from_numstat("").summary(), "no changes");
    }

    #[test]
    fn the_agent_waits_for_the_workspace() {
        let cmd = gated(vec!["claude".into(), "-p".into()]);
        assert_eq!(&cmd[..2], ["sh", "-c"]);
        assert!(cmd[2].contains(READY_FILE) && cmd[2].ends_with("exec \"$@\""));
        assert_eq!(&cmd[3..], ["firstmate-wait", "claude", "-p"]);
        assert!(CLONE_SCRIPT.contains(READY_FILE));
    }
}
