//! firstmate's own values in the SDK's store: the sync position, the handled events,
//! the rooms, each thread's status message.

use super::*;

// --- firstmate's values in the SDK store -----------------------------------------------

pub(super) async fn load_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    key: &str,
) -> Option<T> {
    let bytes = client
        .state_store()
        .get_custom_value(key.as_bytes())
        .await
        .ok()
        .flatten()?;
    serde_json::from_slice(&bytes).ok()
}

pub(super) async fn save_json<T: serde::Serialize>(client: &Client, key: &str, value: &T) {
    let Ok(bytes) = serde_json::to_vec(value) else {
        return;
    };
    if let Err(e) = client
        .state_store()
        .set_custom_value(key.as_bytes(), bytes)
        .await
    {
        warn!(key, error = %e, "cannot save to the Matrix store");
    }
}

pub(super) fn status_key_of(session: &str) -> String {
    format!("firstmate.status.{session}")
}

/// The ids of the last messages handled.
pub(super) struct Handled {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Handled {
    pub(super) async fn load(client: &Client) -> Handled {
        let order: VecDeque<String> = load_json::<Vec<String>>(client, KEY_HANDLED)
            .await
            .unwrap_or_default()
            .into();
        let set = order.iter().cloned().collect();
        Handled { order, set }
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub(super) async fn add(&mut self, client: &Client, id: &str) {
        if !self.set.insert(id.to_string()) {
            return;
        }
        self.order.push_back(id.to_string());
        while self.order.len() > HANDLED_KEEP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        let list: Vec<&String> = self.order.iter().collect();
        save_json(client, KEY_HANDLED, &list).await;
    }
}
