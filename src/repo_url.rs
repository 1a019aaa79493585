//! Repository URLs and branch names, checked: the vocabulary the config (which checks
//! `[repos.*]` when it loads) and the repository commands (`repo.rs`) share. Pure.

/// A repository URL, checked: http or https, a host, a path, and no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    pub scheme: String,
    /// Lowercase.
    pub host: String,
    pub port: Option<u16>,
    /// From the first `/`, as written (`/team/demo.git`).
    pub path: String,
}

impl RepoUrl {
    pub fn parse(url: &str) -> Result<RepoUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            "is not a URL: write it like https://git.example.org/team/demo.git".to_string()
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(format!(
                "uses {scheme}://; firstmate reaches repositories over https:// (or http://) only, through its gateway"
            ));
        }
        if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("has a query, a fragment or spaces: give the plain clone URL".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(
                "holds credentials: put the token in [repos.<alias>] token_env (or token_file), never in the URL"
                    .into(),
            );
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("has a bad port {p:?}"))?;
                (h, Some(port))
            }
            _ => (authority, None),
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        // A name or an address, nothing a URL parser could read as something else (a
        // backslash is a slash to WHATWG parsers, `%` an escape).
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
        let v6 = host.starts_with('[')
            && host.ends_with(']')
            && host[1..host.len() - 1]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        if !(host.chars().all(plain) || v6) {
            return Err(format!(
                "has a host {host:?} that is not a plain name or address"
            ));
        }
        let trimmed = path.trim_matches('/');
        if trimmed.is_empty()
            || trimmed
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err("has no repository path, like /team/demo.git".into());
        }
        Ok(RepoUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: format!("/{trimmed}"),
        })
    }

    /// `host` or `host:port`.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// The repository's path on the forge without `.git`: `team/demo`.
    pub fn project(&self) -> &str {
        let p = self.path.trim_start_matches('/');
        p.strip_suffix(".git").unwrap_or(p)
    }

    /// The URL the gateway fetches from.
    pub fn to_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority(), self.path)
    }
}

/// Why `name` is not a branch name git takes (its `check-ref-format` rules), if it is not.
pub fn check_branch(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{name:?} is not a branch name git takes: {why}"));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 characters");
    }
    if name.starts_with('-') || name.starts_with('/') || name.ends_with('/') {
        return bad("it starts with - or /, or ends with /");
    }
    if name.ends_with('.') || name.ends_with(".lock") || name == "@" {
        return bad("it ends with . or .lock, or is @");
    }
    if name.contains("..") || name.contains("//") || name.contains("@{") {
        return bad("it holds .., // or @{");
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return bad("it holds a space, a control character or one of ~ ^ : ? * [ \\");
    }
    if name.split('/').any(|seg| seg.starts_with('.')) {
        return bad("a part of it starts with .");
    }
    Ok(())
}

/// Whether `url`'s host is on `allowed`: each entry is a host (any port), `host:port`,
/// or `*.domain` (its subdomains).
pub fn host_allowed(allowed: &[String], url: &RepoUrl) -> bool {
    allowed.iter().any(|pattern| {
        let p = pattern.trim().to_ascii_lowercase();
        if let Some(domain) = p.strip_prefix("*.") {
            url.host.ends_with(&format!(".{domain}"))
        } else if p.contains(':') && !p.starts_with('[') {
            p == url.authority()
        } else {
            p == url.host
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_a_path_and_no_credentials() {
        let u = RepoUrl::parse("https://Git.Example.org:8443/team/demo.git").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("git.example.org", Some(8443), "/team/demo.git")
        );
        assert_eq!(u.project(), "team/demo");
        assert_eq!(u.to_url(), "https://git.example.org:8443/team/demo.git");
        for bad in [
            "git@github.com:o/r.git",
            "ssh://git@github.com/o/r.git",
            "file:///etc/passwd",
            "https://user:tok@github.com/o/r.git",
            "https://github.com",
            "https://github.com/",
            "https://github.com/o/../r.git",
            "https://github.com/o/r.git?x=1",
            "https://:80/o/r",
            "https://h:99999/o/r",
            "https://evil.com\\.git.example.org/o/r",
            "https://evil%2ecom/o/r",
            "https://ex ample.org/o/r",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(
            RepoUrl::parse("https://user@x.org/o/r")
                .unwrap_err()
                .contains("token_env")
        );
    }

    #[test]
    fn branch_names_follow_git() {
        for ok in ["main", "feature/x", "firstmate/abc123", "v1.2-fix_3"] {
            assert!(check_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", "/x", "x/", "a..b", "a b", "a~1", "x.lock", "a/.b", "a@{1}", "a:b", "x\n",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_match_exactly_by_port_or_by_subdomain() {
        let allowed = vec![
            "git.example.org".to_string(),
            "127.0.0.1:3000".to_string(),
            "*.corp.net".to_string(),
        ];
        let ok = |u: &str| host_allowed(&allowed, &RepoUrl::parse(u).unwrap());
        assert!(ok("https://git.example.org/a/b"));
        assert!(ok("https://GIT.example.org:444/a/b"));
        assert!(ok("http://127.0.0.1:3000/a/b"));
        assert!(!ok("http://127.0.0.1:3001/a/b"));
        assert!(ok("https://x.corp.net/a/b"));
        assert!(!ok("https://corp.net/a/b"));
        assert!(!ok("https://evilcorp.net/a/b"));
        assert!(!ok("https://git.example.org.evil.com/a/b"));
    }
}
