//! Logging in: the client on its store, the saved login restored (the same device at every
//! start), a fresh login when there is none, and `doctor`'s check.

use super::*;

/// The bot's client on its SQLite store (state, sync position, encryption keys), not yet
/// logged in.
///
/// Requests time out after 30 s; a homeserver's `M_LIMIT_EXCEEDED` is retried after its
/// `retry_after_ms` (and network errors with a growing pause) for up to 2 minutes, then
/// the request fails: the outbox tries again later with what came meanwhile, and says
/// so at WARN with the session.
///
/// The SDK's own record of the last sync position is dropped: firstmate keeps its own
/// (stored only once a response is fully handled) and syncs from it. Were the SDK's kept,
/// the SDK would throw away a response it saw before a crash ("the same sync response
/// twice") instead of handing its messages over again.
pub(super) async fn open_client(cfg: &MatrixConfig) -> Result<Client> {
    let path = &cfg.store_path;
    // Every request has a deadline, and gives up retrying after a while: a homeserver
    // that does not answer shows as a logged failure, never as a thread that hangs.
    let requests = RequestConfig::new()
        .timeout(Duration::from_secs(30))
        .max_retry_time(Duration::from_secs(120));
    let client = client_builder(cfg)
        .request_config(requests)
        .sqlite_store(path, None)
        .build()
        .await
        .map_err(|e| MatrixError::Store {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    client
        .state_store()
        .remove_kv_data(StateStoreDataKey::SyncToken)
        .await
        .map_err(|e| MatrixError::Store {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(client)
}

/// Drops the saved login and the encryption keys of a device that no longer exists.
pub(super) fn forget_device(store: &Path) -> Result<()> {
    let files = [
        SESSION_FILE,
        "matrix-sdk-crypto.sqlite3",
        "matrix-sdk-crypto.sqlite3-wal",
        "matrix-sdk-crypto.sqlite3-shm",
    ];
    for f in files {
        match std::fs::remove_file(store.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(MatrixError::Store {
                    path: store.join(f),
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

pub(super) fn create_private_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| MatrixError::Store {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

pub(super) fn read_saved_login(store: &Path) -> Option<MatrixSession> {
    let text = std::fs::read_to_string(store.join(SESSION_FILE)).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "the saved Matrix login cannot be read; logging in afresh");
            None
        }
    }
}

pub(super) fn save_login(store: &Path, session: &MatrixSession) -> Result<()> {
    let path = store.join(SESSION_FILE);
    let json = serde_json::to_vec_pretty(session).map_err(other)?;
    let tmp = store.join(format!("{SESSION_FILE}.tmp"));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(|e| MatrixError::Store {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(|e| MatrixError::Store {
                path: tmp.clone(),
                reason: e.to_string(),
            })?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| MatrixError::Store {
        path,
        reason: e.to_string(),
    })
}

pub(super) async fn restore(client: &Client, session: MatrixSession, path: &Path) -> Result<()> {
    client.restore_session(session).await.map_err(|e| {
        let reason = e.to_string();
        if reason.contains("doesn't match") || reason.contains("mismatch") {
            MatrixError::StoreMismatch {
                path: path.to_path_buf(),
                reason,
            }
        } else {
            MatrixError::Store {
                path: path.to_path_buf(),
                reason,
            }
        }
    })
}

pub(super) fn check_user(cfg: &MatrixConfig, actual: &str) -> Result<()> {
    if actual != cfg.user_id {
        return Err(MatrixError::WrongUser {
            configured: cfg.user_id.clone(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Who an access token belongs to, asked with a throwaway client.
pub(super) async fn whoami_token(
    cfg: &MatrixConfig,
    token: &str,
) -> Result<(OwnedUserId, Option<String>)> {
    let probe = probe_client(cfg).await?;
    let user: OwnedUserId = cfg.user_id.as_str().try_into().map_err(other)?;
    probe
        .restore_session(MatrixSession {
            meta: SessionMeta {
                user_id: user,
                device_id: "FIRSTMATEPROBE".into(),
            },
            tokens: SessionTokens {
                access_token: token.to_string(),
                refresh_token: None,
            },
        })
        .await
        .map_err(other)?;
    let w = probe.whoami().await.map_err(|e| http_failure(cfg, &e))?;
    Ok((w.user_id, w.device_id.map(|d| d.to_string())))
}

/// Logs in with the configured credential as a new device and saves the login.
pub(super) async fn fresh_login(client: &Client, cfg: &MatrixConfig) -> Result<()> {
    let path = &cfg.store_path;
    if let Some(token) = cfg.access_token.value() {
        let (user, device_id) = whoami_token(cfg, token).await?;
        check_user(cfg, user.as_str())?;
        let device_id = device_id.ok_or_else(|| MatrixError::Login {
            user: cfg.user_id.clone(),
            credential: credential(cfg),
            reason: "the homeserver did not say which device the access token belongs to".into(),
        })?;
        let session = MatrixSession {
            meta: SessionMeta {
                user_id: user,
                device_id: device_id.as_str().into(),
            },
            tokens: SessionTokens {
                access_token: token.to_string(),
                refresh_token: None,
            },
        };
        restore(client, session.clone(), path).await?;
        save_login(path, &session)?;
        info!(device = %device_id, "logged in to Matrix with the access token");
        return Ok(());
    }
    let Some(password) = cfg.password.value() else {
        return Err(MatrixError::NoCredential);
    };
    let resp = client
        .matrix_auth()
        .login_username(&cfg.user_id, password)
        .initial_device_display_name("firstmate")
        .send()
        .await
        .map_err(|e| {
            let reason = e.to_string();
            if reason.contains("doesn't match") || reason.contains("mismatch") {
                MatrixError::StoreMismatch {
                    path: path.clone(),
                    reason,
                }
            } else {
                sdk_failure(cfg, &e)
            }
        })?;
    check_user(cfg, resp.user_id.as_str())?;
    let session = client
        .matrix_auth()
        .session()
        .ok_or_else(|| other("the login gave no session"))?;
    save_login(path, &session)?;
    info!(device = %resp.device_id, "logged in to Matrix with the password");
    Ok(())
}

/// A client builder for the configured homeserver. The configured `homeserver_url` wins
/// over the address a login response advertises (`well_known`): a bot in a container or
/// behind a reverse proxy reaches the server by an address the server does not know.
pub(super) fn client_builder(cfg: &MatrixConfig) -> matrix_sdk::ClientBuilder {
    Client::builder()
        .homeserver_url(&cfg.homeserver_url)
        .respect_login_well_known(false)
}

/// A client without a store, for a short check of the configured login (requests give
/// up after 20 s).
async fn probe_client(cfg: &MatrixConfig) -> Result<Client> {
    client_builder(cfg)
        .request_config(RequestConfig::short_retry().timeout(Duration::from_secs(20)))
        .build()
        .await
        .map_err(|e| MatrixError::Connect {
            url: cfg.homeserver_url.clone(),
            reason: e.to_string(),
        })
}

/// For `firstmate doctor`: checks that the configured login works (a `whoami`), without
/// touching the bot's store. Returns what it found.
pub async fn check(cfg: &MatrixConfig) -> Result<String> {
    let client = probe_client(cfg).await?;
    if let Some(saved) = read_saved_login(&cfg.store_path) {
        let device = saved.meta.device_id.to_string();
        client.restore_session(saved).await.map_err(other)?;
        match client.whoami().await {
            Ok(w) => {
                check_user(cfg, w.user_id.as_str())?;
                return Ok(format!(
                    "logged in as {} on {} (device {device}, saved in {})",
                    w.user_id,
                    cfg.homeserver_url,
                    cfg.store_path.display()
                ));
            }
            Err(e)
                if !matches!(
                    e.client_api_error_kind(),
                    Some(ErrorKind::UnknownToken { .. })
                ) =>
            {
                return Err(http_failure(cfg, &e));
            }
            // Revoked: `run` logs in again with the credential; check that instead.
            Err(_) => {}
        }
    }
    if let Some(token) = cfg.access_token.value() {
        let (user, device) = whoami_token(cfg, token).await?;
        check_user(cfg, user.as_str())?;
        return Ok(format!(
            "the access token is {user}'s (device {}) on {}",
            device.as_deref().unwrap_or("?"),
            cfg.homeserver_url
        ));
    }
    let Some(password) = cfg.password.value() else {
        return Err(MatrixError::NoCredential);
    };
    let probe = probe_client(cfg).await?;
    probe
        .matrix_auth()
        .login_username(&cfg.user_id, password)
        .initial_device_display_name("firstmate doctor")
        .send()
        .await
        .map_err(|e| sdk_failure(cfg, &e))?;
    let w = probe.whoami().await.map_err(|e| http_failure(cfg, &e))?;
    // The probe's device is not needed any more.
    let _ = probe.logout().await;
    check_user(cfg, w.user_id.as_str())?;
    Ok(format!(
        "the password logs in as {} on {}",
        w.user_id, cfg.homeserver_url
    ))
}
