//! The server test databases are made on when the caller names none: this checkout's, as the
//! lifecycle resolves it (this module never decides where the database lives).

use super::engine::on_engine;
use crate::error::Result;
use crate::lifecycle::{self, Access, Endpoint, Workspace};

/// A database URL on the server of this process's test databases: `DATABASE_URL`, else what
/// this checkout's setup left, else its local server (started or created on demand), as
/// [`lifecycle::resolve()`] has it. Resolved once per process on the engine's runtime; a
/// port-forward it needs is kept for the life of the process.
pub(super) async fn default_server_url() -> Result<String> {
    static ENDPOINT: tokio::sync::OnceCell<Endpoint> = tokio::sync::OnceCell::const_new();
    on_engine(async {
        ENDPOINT
            .get_or_try_init(|| async {
                let ws = Workspace::current()?;
                let url = std::env::var("DATABASE_URL").ok();
                lifecycle::resolve(&ws, url.as_deref(), Access::StartIfNeeded).await
            })
            .await
            .map(|e| e.url.clone())
    })
    .await
}
