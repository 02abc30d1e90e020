//! The wake-up listener: one `LISTEN` connection per process, outside the pool.
//!
//! Owns: a dedicated connection that listens on [`NOTIFY_CHANNEL`] and turns each notification
//! into a wake-up, and the task that drives that connection.
//! Never: carries data (a wake-up only says "read from your last position"), is the only way a
//! reader learns of new events (notifications are lost while a listener reconnects: readers
//! also poll on a timer), or reconnects by itself (a lost connection is reported; the caller
//! opens a new listener and catches up by position: [`crate::follower`] does).

use crate::error::{Error, Result};
use crate::store::{NOTIFY_CHANNEL, PgStore};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

enum Wake {
    Notified,
    Lost(String),
}

/// A `LISTEN` connection to the store's database.
pub struct Listener {
    wakes: mpsc::UnboundedReceiver<Wake>,
    // Kept so the session (and its LISTEN) stays open.
    _client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// Connects (outside the pool) and starts listening.
    pub async fn connect(store: &PgStore) -> Result<Listener> {
        Listener::connect_with(store.config(), store.target()).await
    }

    /// Connects with `config` (outside any pool) and starts listening; `target` names the
    /// server in errors.
    pub(crate) async fn connect_with(
        config: &tokio_postgres::Config,
        target: &str,
    ) -> Result<Listener> {
        let (client, mut connection) =
            config
                .connect(NoTls)
                .await
                .map_err(|error| Error::Connect {
                    target: target.to_string(),
                    cause: error.to_string(),
                })?;
        let (sender, wakes) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                let message =
                    std::future::poll_fn(|context| connection.poll_message(context)).await;
                let wake = match message {
                    Some(Ok(AsyncMessage::Notification(_))) => Wake::Notified,
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => Wake::Lost(error.to_string()),
                    None => Wake::Lost("the server closed the connection".to_string()),
                };
                let lost = matches!(wake, Wake::Lost(_));
                if sender.send(wake).is_err() || lost {
                    return;
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
            .map_err(|error| Error::from_driver("listen", error))?;
        Ok(Listener {
            wakes,
            _client: client,
            driver,
        })
    }

    /// Waits up to `timeout` for a wake-up: `Ok(true)` woken, `Ok(false)` timed out (poll
    /// anyway), [`Error::Unavailable`] when the connection is lost.
    pub async fn wait(&mut self, timeout: Duration) -> Result<bool> {
        match tokio::time::timeout(timeout, self.wakes.recv()).await {
            Err(_) => Ok(false),
            Ok(Some(Wake::Notified)) => Ok(true),
            Ok(Some(Wake::Lost(cause))) => Err(Error::Unavailable {
                operation: "listen",
                cause,
            }),
            Ok(None) => Err(Error::Unavailable {
                operation: "listen",
                cause: "the listener connection ended".to_string(),
            }),
        }
    }

    /// Takes every wake-up already received without waiting; returns how many.
    pub fn drain(&mut self) -> usize {
        let mut count = 0;
        while let Ok(Wake::Notified) = self.wakes.try_recv() {
            count += 1;
        }
        count
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
