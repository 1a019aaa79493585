//! How errors are shown: the one scheme every error type follows.
//!
//! An error's `Display` is the whole message a user reads: what failed, its real cause
//! (once), and what to do. `main` prints `{}` only, never the `{:#}` chain, so a type
//! that names its cause in its message shows it exactly once.
//!
//! Foreign errors do not all name their cause: reqwest says "error sending request for
//! url (...)" and keeps "Connection refused" in its source chain. [`cause`] renders a
//! foreign error for a message: its own text, plus the innermost cause of its chain when
//! that text does not already hold it.

use std::error::Error;

/// A foreign error as the cause part of a message: its text, and the innermost cause of
/// its source chain when its text does not already say it.
pub fn cause(e: &(dyn Error + 'static)) -> String {
    let text = e.to_string();
    let mut innermost = None;
    let mut next = e.source();
    while let Some(s) = next {
        innermost = Some(s);
        next = s.source();
    }
    match innermost.map(|s| s.to_string()) {
        Some(inner) if !inner.is_empty() && !text.contains(&inner) => {
            if text.is_empty() {
                inner
            } else {
                format!("{text}: {inner}")
            }
        }
        _ => text,
    }
}

/// The first error of type `T` in `e`'s source chain, `e` included.
pub fn find<'a, T: Error + 'static>(e: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        next = err.source();
    }
    None
}

/// When `e` is (or wraps) an HTTP request that never got an answer (connection refused,
/// DNS, timeout, TLS), the reason: the innermost cause, without reqwest's "error sending
/// request for url (...)". None when the server answered.
pub fn network_failure(e: &(dyn Error + 'static)) -> Option<String> {
    let r = find::<reqwest::Error>(e)?;
    if r.status().is_some() || r.is_decode() || r.is_body() || r.is_builder() {
        return None;
    }
    let mut innermost: &(dyn Error + 'static) = r;
    while let Some(s) = innermost.source() {
        innermost = s;
    }
    let inner = innermost.to_string();
    Some(if r.is_timeout() && !inner.contains("timed out") {
        format!("no answer in time ({inner})")
    } else {
        inner
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer hides it")]
    struct Hiding(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer says {0}")]
    struct Saying(#[source] std::io::Error);

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused")
    }

    #[test]
    fn a_hidden_cause_is_appended_once() {
        assert_eq!(
            cause(&Hiding(refused())),
            "outer hides it: Connection refused"
        );
    }

    #[test]
    fn a_cause_already_in_the_text_is_not_repeated() {
        let text = cause(&Saying(refused()));
        assert_eq!(text, "outer says Connection refused");
        assert_eq!(text.matches("Connection refused").count(), 1);
    }

    #[test]
    fn an_error_without_source_is_its_text() {
        assert_eq!(cause(&refused()), "Connection refused");
    }

    #[tokio::test]
    async fn a_refused_request_is_a_network_failure_naming_the_refusal() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        let why = network_failure(&e).expect("a network failure");
        assert!(why.to_lowercase().contains("refused"), "{why}");
        assert!(!why.contains("error sending request"), "{why}");
        let full = cause(&e);
        assert_eq!(full.matches(&why).count(), 1, "{full}");
    }
}
