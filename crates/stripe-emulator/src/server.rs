//! Starting and stopping the HTTP server, in process (tests) or from the CLI.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::any;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{handle_unrecognized_v1, handle_v1};
use crate::config::EmulatorConfig;
use crate::connection::{ConnectionCutter, CuttableListener};
use crate::control;
use crate::state::{EmulatorHandle, SharedState};

/// A running emulator. Dropping it stops the server too, without waiting.
pub struct Emulator {
    address: SocketAddr,
    handle: EmulatorHandle,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<io::Result<()>>>,
}

impl Emulator {
    /// Binds `config.bind` and serves in the background on the current tokio runtime.
    /// Fails if the address cannot be bound or the fault rates are not probabilities.
    pub async fn start(config: EmulatorConfig) -> io::Result<Emulator> {
        config
            .faults
            .validate()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let listener = TcpListener::bind(config.bind).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(SharedState::new(&config));
        let app = router(shared.clone());
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(
                CuttableListener::new(listener),
                app.into_make_service_with_connect_info::<ConnectionCutter>(),
            )
            .with_graceful_shutdown(async {
                let _ = shutdown_signal.await;
            })
            .await
        });
        Ok(Emulator {
            address,
            handle: EmulatorHandle { shared },
            shutdown: Some(shutdown),
            server: Some(server),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: the API base to give a Stripe client.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    pub fn handle(&self) -> EmulatorHandle {
        self.handle.clone()
    }

    /// Stops accepting, lets requests in flight finish (for at most 2 s), then returns.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn router(shared: Arc<SharedState>) -> Router {
    Router::new()
        .route("/v1/customers", any(handle_v1))
        .route("/v1/customers/search", any(handle_v1))
        .route("/v1/customers/{id}", any(handle_v1))
        .route("/v1/balance", any(handle_v1))
        .route("/v1/account", any(handle_v1))
        .route("/v1/events", any(handle_v1))
        .route("/v1/events/{id}", any(handle_v1))
        .route("/v1/products", any(handle_v1))
        .route("/v1/products/{id}", any(handle_v1))
        .route("/v1/prices", any(handle_v1))
        .route("/v1/prices/{id}", any(handle_v1))
        .route("/v1/subscriptions", any(handle_v1))
        .route("/v1/subscriptions/{id}", any(handle_v1))
        .route("/v1/invoices", any(handle_v1))
        .route("/v1/invoices/search", any(handle_v1))
        .route("/v1/invoices/{id}", any(handle_v1))
        .route("/v1/invoices/{id}/lines", any(handle_v1))
        .route("/v1/invoices/{id}/finalize", any(handle_v1))
        .route("/v1/invoices/{id}/send", any(handle_v1))
        .route("/v1/invoices/{id}/void", any(handle_v1))
        .route("/v1/invoices/{id}/mark_uncollectible", any(handle_v1))
        .route("/v1/invoices/{id}/pay", any(handle_v1))
        .route("/v1/invoiceitems", any(handle_v1))
        .route("/v1/invoiceitems/{id}", any(handle_v1))
        .route("/v1/products/search", any(handle_v1))
        .route("/v1/prices/search", any(handle_v1))
        .route("/v1/{*rest}", any(handle_unrecognized_v1))
        .merge(control::routes())
        .with_state(shared)
}
