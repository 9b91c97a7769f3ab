//! The `handoff` command: parses the command line and hands over to the library.

use clap::{Parser, Subcommand};
use handoff::config::Config;
use handoff::server::Server;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "handoff",
    version,
    about = "SIP B2BUA handing AI phone agent calls to Zendesk Talk"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (for every command; default `config.toml`).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

/// The configuration file when none is named.
const DEFAULT_CONFIG: &str = "config.toml";

#[derive(Subcommand)]
enum Command {
    /// Run handoff (the default).
    Run,
    /// Check a configuration file and exit: 0 when valid.
    CheckConfig {
        /// The file to check (or give it with `--config`).
        file: Option<PathBuf>,
    },
    /// Print the voice-prefetch webhook URL for an org (token minted with the newest
    /// `[[http.signing_keys]]` entry), for pasting into a Zendesk webhook.
    WebhookUrl {
        /// The org id the URL stamps tickets for.
        #[arg(long)]
        org: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { file } => match (file, cli.config) {
            (Some(file), Some(flag)) if file != flag => {
                eprintln!(
                    "handoff: check-config: two files named ({} and --config {}); give one",
                    file.display(),
                    flag.display()
                );
                ExitCode::from(2)
            }
            (Some(file), _) => check_config(&file),
            (None, _) => check_config(&config),
        },
        Command::WebhookUrl { org } => webhook_url(&config, &org),
        Command::Run => run(&config),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(settings) => {
            for w in settings.startup_warnings() {
                eprintln!("handoff: warning: {w}");
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("handoff: {e}");
            ExitCode::from(2)
        }
    }
}

fn webhook_url(path: &std::path::Path, org: &str) -> ExitCode {
    let settings = match Config::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("handoff: {e}");
            return ExitCode::from(2);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match handoff::http::webhook_url(&settings.http, org, now) {
        Ok(url) => {
            println!("{url}");
            // What [[http.revoked_tokens]] needs to revoke this URL later.
            let token = url.rsplit('/').next().unwrap_or_default();
            if let Some((jti, exp)) = handoff::http::auth::minted_id_and_expiry(token) {
                let exp = handoff::http::auth::format_iso8601(exp as i64);
                eprintln!("handoff: token jti {jti}, expires {exp} (org {org})");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("handoff: {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let settings = match Config::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("handoff: {e}");
            return ExitCode::from(2);
        }
    };
    handoff::redact::set_phone_redaction(settings.redact_phone_numbers);
    init_logging(&settings.log_level, settings.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("handoff: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut stop = StopSignals::install();
        let server = match Server::start(settings).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("handoff: {e}");
                return ExitCode::FAILURE;
            }
        };
        {
            // Tests and scripts read the bound addresses from here (port 0 picks one).
            let mut out = std::io::stdout().lock();
            for a in server.udp_addrs() {
                let _ = writeln!(out, "listening udp {a}");
            }
            for a in server.tcp_addrs() {
                let _ = writeln!(out, "listening tcp {a}");
            }
            for a in server.tls_addrs() {
                let _ = writeln!(out, "listening tls {a}");
            }
            let _ = writeln!(out, "listening http {}", server.http_addr());
            let _ = out.flush();
        }
        tracing::info!(udp = ?server.udp_addrs(), tcp = ?server.tcp_addrs(), tls = ?server.tls_addrs(), http = %server.http_addr(), "handoff started");
        // SIGHUP: read the TLS certificate and key again, without dropping anything.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let reload = async {
                match &mut hup {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.next() => break,
                _ = reload => {
                    // Logged and counted by the server; the error is already in the log.
                    let _ = server.reload_tls();
                }
            }
        }
        tokio::select! {
            _ = server.drain() => {}
            _ = stop.next() => tracing::warn!("second stop signal: exiting now"),
        }
        ExitCode::SUCCESS
    })
}

/// SIGTERM and SIGINT, caught from the moment this exists: installed before the
/// listening addresses are printed, so a signal sent as soon as they are seen
/// drains instead of killing the process.
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next SIGTERM or SIGINT (never, if neither could be caught).
    async fn next(&mut self) {
        async fn on(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = on(&mut self.term) => {}
            _ = on(&mut self.int) => {}
        }
    }
}

fn init_logging(level: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
