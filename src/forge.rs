//! Pull and merge requests through each forge's documented REST API (SPEC section 8):
//! GitHub (`POST /repos/{owner}/{repo}/pulls`), Forgejo and Gitea (`POST
//! /api/v1/repos/{owner}/{repo}/pulls`), GitLab (`POST
//! /api/v4/projects/{id}/merge_requests`, the id being the URL-encoded project path).
//!
//! The request is built and the answer read by pure functions, tested below; `open`
//! sends it. The forge's own error message reaches the thread (an existing pull request,
//! a bad token), never a bare status code.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Forge;

/// What a pull request says.
#[derive(Debug, Clone, PartialEq)]
pub struct PullRequest {
    pub title: String,
    pub body: String,
    /// The session's branch.
    pub head: String,
    /// Where it should go.
    pub base: String,
}

/// One HTTP request to a forge.
#[derive(Debug, Clone, PartialEq)]
pub struct ForgeRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// The request that opens `pr` on the repository `project` (`owner/repo`, or a GitLab
/// group path) at `api` (the API base), or why this forge has none.
pub fn request(
    forge: Forge,
    api: &str,
    project: &str,
    token: &str,
    pr: &PullRequest,
) -> Result<ForgeRequest, String> {
    let api = api.trim_end_matches('/');
    let json_type = ("content-type", "application/json".to_string());
    Ok(match forge {
        Forge::Github => ForgeRequest {
            url: format!("{api}/repos/{project}/pulls"),
            headers: vec![
                ("authorization", format!("Bearer {token}")),
                ("accept", "application/vnd.github+json".into()),
                ("x-github-api-version", "2022-11-28".into()),
                json_type,
            ],
            body: json!({"title": pr.title, "head": pr.head, "base": pr.base, "body": pr.body}),
        },
        Forge::Forgejo => ForgeRequest {
            url: format!("{api}/api/v1/repos/{project}/pulls"),
            headers: vec![
                ("authorization", format!("token {token}")),
                ("accept", "application/json".into()),
                json_type,
            ],
            body: json!({"title": pr.title, "head": pr.head, "base": pr.base, "body": pr.body}),
        },
        Forge::Gitlab => ForgeRequest {
            url: format!(
                "{api}/api/v4/projects/{}/merge_requests",
                encode_path(project)
            ),
            headers: vec![
                ("private-token", token.to_string()),
                ("accept", "application/json".into()),
                json_type,
            ],
            body: json!({
                "source_branch": pr.head,
                "target_branch": pr.base,
                "title": pr.title,
                "description": pr.body,
            }),
        },
        Forge::Git => {
            return Err(
                "this repository's forge is \"git\", which has no pull requests: set forge = \"github\", \"forgejo\" or \"gitlab\" in its [repos.<alias>] table; `push` still works"
                    .into(),
            );
        }
    })
}

/// GitLab's project id as a path: every `/` (and anything not plain) percent-encoded.
fn encode_path(project: &str) -> String {
    let mut out = String::new();
    for b in project.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The link of the pull request the forge answered with (201), or the forge's reason.
pub fn read_answer(forge: Forge, status: u16, body: &[u8]) -> Result<String, String> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        let key = if forge == Forge::Gitlab {
            "web_url"
        } else {
            "html_url"
        };
        return v
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("the forge answered {status} without {key}"));
    }
    Err(format!(
        "the forge answered {status}: {}",
        forge_message(&v, body)
    ))
}

/// The human part of a forge's error body: GitHub's message and its errors' messages,
/// Forgejo's message, GitLab's message (a string, a list or a map) or error.
fn forge_message(v: &Value, raw: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    match v.get("message") {
        Some(Value::String(s)) => parts.push(s.clone()),
        Some(Value::Array(a)) => {
            parts.extend(a.iter().filter_map(|m| m.as_str().map(str::to_string)))
        }
        Some(Value::Object(o)) => parts.extend(o.iter().map(|(k, m)| {
            format!(
                "{k}: {}",
                m.as_array().map_or(m.to_string(), |a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
            )
        })),
        _ => {}
    }
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        parts.push(e.to_string());
    }
    if let Some(errors) = v.get("errors").and_then(Value::as_array) {
        parts.extend(errors.iter().filter_map(|e| {
            e.get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    Some(format!(
                        "{} {}",
                        e.get("field")?.as_str()?,
                        e.get("code")?.as_str()?
                    ))
                })
        }));
    }
    if parts.is_empty() {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        return text[..text.floor_char_boundary(200)].to_string();
    }
    parts.join("; ")
}

/// Sends `req` and reads the answer: the pull request's link.
pub async fn open(forge: Forge, req: ForgeRequest) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("firstmate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up an HTTP client: {e}"))?;
    let mut call = client.post(&req.url).body(req.body.to_string());
    for (k, v) in &req.headers {
        call = call.header(*k, v);
    }
    let resp = call.send().await.map_err(|e| {
        format!(
            "cannot reach the forge at {}: {}",
            req.url,
            crate::error::cause(&e.without_url())
        )
    })?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("the forge's answer broke off: {}", e.without_url()))?;
    read_answer(forge, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr() -> PullRequest {
        PullRequest {
            title: "Fix it".into(),
            body: "why".into(),
            head: "firstmate/s1".into(),
            base: "main".into(),
        }
    }

    #[test]
    fn each_forge_gets_its_documented_request() {
        let gh = request(Forge::Github, "https://api.github.com/", "o/r", "T", &pr()).unwrap();
        assert_eq!(gh.url, "https://api.github.com/repos/o/r/pulls");
        assert!(gh.headers.contains(&("authorization", "Bearer T".into())));
        assert_eq!(gh.body["head"], "firstmate/s1");
        let fj = request(Forge::Forgejo, "https://code.org", "o/r", "T", &pr()).unwrap();
        assert_eq!(fj.url, "https://code.org/api/v1/repos/o/r/pulls");
        assert!(fj.headers.contains(&("authorization", "token T".into())));
        let gl = request(
            Forge::Gitlab,
            "https://gitlab.com",
            "grp/sub/proj",
            "T",
            &pr(),
        )
        .unwrap();
        assert_eq!(
            gl.url,
            "https://gitlab.com/api/v4/projects/grp%2Fsub%2Fproj/merge_requests"
        );
        assert!(gl.headers.contains(&("private-token", "T".into())));
        assert_eq!(
            (
                gl.body["source_branch"].as_str(),
                gl.body["target_branch"].as_str()
            ),
            (Some("firstmate/s1"), Some("main"))
        );
        assert_eq!(gl.body["description"], "why");
        assert!(
            request(Forge::Git, "x", "o/r", "T", &pr())
                .unwrap_err()
                .contains("no pull requests")
        );
    }

    #[test]
    fn answers_give_the_link_or_the_forges_reason() {
        assert_eq!(
            read_answer(
                Forge::Github,
                201,
                br#"{"html_url":"https://g/o/r/pull/1"}"#
            )
            .unwrap(),
            "https://g/o/r/pull/1"
        );
        assert_eq!(
            read_answer(
                Forge::Gitlab,
                201,
                br#"{"web_url":"https://l/g/p/-/merge_requests/1"}"#
            )
            .unwrap(),
            "https://l/g/p/-/merge_requests/1"
        );
        let e = read_answer(Forge::Github, 422, br#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for o:b."}]}"#).unwrap_err();
        assert!(
            e.contains("422") && e.contains("A pull request already exists"),
            "{e}"
        );
        let e = read_answer(Forge::Gitlab, 409, br#"{"message":["Another open merge request already exists for this source branch: !1"]}"#).unwrap_err();
        assert!(e.contains("Another open merge request"), "{e}");
        let e = read_answer(
            Forge::Forgejo,
            401,
            br#"{"message":"token is required","url":"x"}"#,
        )
        .unwrap_err();
        assert!(e.contains("token is required"), "{e}");
        let e = read_answer(Forge::Gitlab, 400, br#"{"error":"title is missing"}"#).unwrap_err();
        assert!(e.contains("title is missing"), "{e}");
        assert!(
            read_answer(Forge::Github, 502, b"<html>bad gateway</html>")
                .unwrap_err()
                .contains("bad gateway")
        );
    }
}
