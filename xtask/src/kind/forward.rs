//! How the host reaches PostgreSQL: the NodePort URL that Kind publishes on 127.0.0.1, or a
//! port-forward over the Kubernetes API with tokio-postgres on the forwarded stream.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use e2e_migrations::kube::{connect_forwarded, Credentials};
use kube::Client;

/// The URL of the NodePort published on 127.0.0.1.
pub(crate) fn node_port_url(user: &str, password: &str, host_port: u16, database: &str) -> String {
    format!("postgres://{user}:{password}@127.0.0.1:{host_port}/{database}")
}

/// Connects to `url`, retrying while the NodePort's proxy rules settle (up to `within`); each
/// attempt may take `timeout`.
pub(crate) async fn connect_url(url: &str, within: Duration, timeout: Duration) -> Result<tokio_postgres::Client> {
    let start = Instant::now();
    loop {
        match e2e_migrations::db::connect_within(url, timeout).await {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() < within => {
                tracing::debug!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "PostgreSQL is ready in the cluster but not reachable on the published port after {} s",
                        within.as_secs()
                    )
                })
            }
        }
    }
}

/// Connects through a port-forward to `pod`; the forward lives as long as the connection.
pub(crate) async fn connect_port_forward(
    client: &Client,
    namespace: &str,
    pod: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Result<tokio_postgres::Client> {
    let (pg, _forward) = connect_forwarded(client, namespace, pod, creds, timeout).await?;
    Ok(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_port_url_is_on_loopback() {
        assert_eq!(node_port_url("e2e", "pw", 15432, "e2e"), "postgres://e2e:pw@127.0.0.1:15432/e2e");
    }
}
