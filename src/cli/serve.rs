//! `ferry serve` and `ferry token …`: the REST API and web UI, and the tokens that open them.

use super::output::print_table;
use super::{CliError, CliResult};
use clap::{Args, Subcommand};
use ferry_state::StateStore;
use std::net::SocketAddr;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on. Anything but loopback needs an API token to exist first.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Mark the session cookie Secure: set this when users reach ferry over HTTPS (through a
    /// TLS-terminating proxy).
    #[arg(long)]
    pub secure_cookies: bool,
    /// Let connections created over the API read their secret from this environment variable of
    /// the server (repeatable). Without it, API callers must send secrets themselves.
    #[arg(long = "allow-secret-env", value_name = "NAME")]
    pub allow_secret_env: Vec<String>,
    /// A host name people reach the server by (repeatable), such as the DNS name of this machine
    /// or of a proxy in front of it. Requests whose Host header names anything else than
    /// loopback, the bind address or these names are refused, which defeats DNS rebinding.
    #[arg(long = "public-host", value_name = "NAME")]
    pub public_host: Vec<String>,
    /// Also serve `/metrics` (Prometheus) on this address, without authentication, as
    /// Prometheus scrapes exporters; e.g. 127.0.0.1:9464. The API serves `/metrics` with a
    /// token either way. It holds counts and sync names, no secret: bind it where only your
    /// monitoring reaches it.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds between looks for scheduled syncs that are due (tests shorten it).
    #[arg(long, hide = true)]
    pub scheduler_tick_seconds: Option<f64>,
    /// Runs this server holds at once; more wait in the run queue, for this server or another
    /// `ferry serve` on the same PostgreSQL workspace.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_runs: Option<u16>,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token: shown once, stored only as a hash.
    Create { name: String },
    /// List the API tokens (names and prefixes, never the tokens).
    List,
    /// Revoke an API token; requests and sessions that use it stop working.
    Revoke { name: String },
}

pub async fn serve(store: StateStore, args: ServeArgs) -> CliResult {
    ferry_server::check_bind(&store, &args.bind)
        .await
        .map_err(|message| CliError::config(anyhow::anyhow!(message)))?;
    ferry_server::AllowedHosts::new(args.bind.ip(), &args.public_host)
        .map_err(|message| CliError::config(anyhow::anyhow!(message)))?;
    // A first start on this machine: make the token to sign in with, as Jupyter does, so the
    // UI is usable at once without leaving it open.
    let first_token = if store.count_api_tokens().await? == 0 {
        let (_, token) = store.create_api_token("first-sign-in").await?;
        Some(token)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| CliError::config(anyhow::anyhow!("cannot listen on {}: {e}", args.bind)))?;
    let address = listener.local_addr().map_err(CliError::failed)?;
    let metrics_listener = match args.metrics_addr {
        Some(metrics_addr) => Some(
            tokio::net::TcpListener::bind(metrics_addr)
                .await
                .map_err(|e| {
                    CliError::config(anyhow::anyhow!(
                        "cannot listen on {metrics_addr} for --metrics-addr: {e}; pick a free port, or leave --metrics-addr out and scrape /metrics on the API with a token"
                    ))
                })?,
        ),
        None => None,
    };
    println!("ferry is serving the workspace at http://{address}/");
    println!("  API: http://{address}/api/v1 (described at /api/openapi.json; send `Authorization: Bearer <token>`)");
    match &metrics_listener {
        Some(metrics) => println!(
            "  Metrics: http://{}/metrics (Prometheus, no token), and /metrics on the API with a token",
            metrics.local_addr().map_err(CliError::failed)?
        ),
        None => println!("  Metrics: http://{address}/metrics (Prometheus; send the token)"),
    }
    if let Some(token) = first_token {
        println!(
            "  Sign in with this API token (shown once; `ferry token create NAME` makes more):"
        );
        println!("  {}", token.expose());
    } else {
        println!("  Sign in with an API token of this workspace (`ferry token create NAME`).");
    }
    let options = ferry_server::ServerOptions {
        bind: address,
        secure_cookies: args.secure_cookies,
        allowed_secret_env: args.allow_secret_env,
        public_hosts: args.public_host,
        metrics_listener,
        max_runs: args.max_runs.map(usize::from),
        scheduler_tick: args
            .scheduler_tick_seconds
            .map(|s| std::time::Duration::from_secs_f64(s.max(0.05))),
    };
    ferry_server::serve(store, options, listener, shutdown_signal())
        .await
        .map_err(CliError::failed)?;
    println!("Stopped.");
    Ok(0)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

pub async fn token(store: &StateStore, command: TokenCommand) -> CliResult {
    match command {
        TokenCommand::Create { name } => {
            let (_, token) = store.create_api_token(&name).await?;
            eprintln!(
                "Created API token '{name}'. It is shown once; store it in your secret manager:"
            );
            println!("{}", token.expose());
        }
        TokenCommand::List => {
            let tokens = store.list_api_tokens().await?;
            if tokens.is_empty() {
                println!("No API tokens. Create one with `ferry token create NAME`.");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        format!("{}…", t.prefix),
                        t.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        t.last_used_at
                            .map(|at| at.format("%Y-%m-%d %H:%M").to_string())
                            .unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            print_table(&["NAME", "TOKEN", "CREATED", "LAST USED"], &rows);
        }
        TokenCommand::Revoke { name } => {
            if !store.revoke_api_token(&name).await? {
                return Err(CliError::config(anyhow::anyhow!(
                    "no API token named '{name}'; `ferry token list` lists them"
                )));
            }
            println!("Revoked API token '{name}'.");
        }
    }
    Ok(0)
}
