//! `daisi token user|admin`: mint a token locally with the token keys (same codec as the edge)
//! or ask an edge's minting listener (`DAISI_EDGE_MINT_ADDR`) with its backend credential.
//! An edge still in the migration window (`DAISI_EDGE_PUBLIC_MINTING`) also mints on its public
//! port: point `--edge` there and pass the socket API key with `--api-key`.

use crate::cli::parse_duration;
use crate::output;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use daisi_domain::token::{AdminClaims, TokenKey, TokenKeyring, UserClaims};
use daisi_domain::{AdminId, AgentId, CompanyId, UserId};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;
use url::Url;

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// A user token for /ws/{company}/{agent}.
    User(UserArgs),
    /// An admin token for /ws/admin.
    Admin(AdminArgs),
}

#[derive(Debug, Args)]
pub(crate) struct UserArgs {
    /// Company id.
    #[arg(long)]
    company: CompanyId,
    /// Agent id.
    #[arg(long)]
    agent: AgentId,
    /// User id.
    #[arg(long)]
    user: UserId,
    #[command(flatten)]
    common: Common,
    /// User token key(s), 64 hex characters; the first one encrypts.
    #[arg(
        long,
        env = "DAISI_EDGE_TOKEN_AES_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    key: Option<String>,
    /// Backend credential of the edge's minting listener, used with --edge.
    #[arg(
        long,
        env = "DAISI_EDGE_MINT_API_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    api_key: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// Admin id.
    #[arg(long)]
    admin: AdminId,
    /// Only `agents` events of this company.
    #[arg(long)]
    subscribed_company: Option<CompanyId>,
    /// Only `agents` events of this agent.
    #[arg(long)]
    subscribed_agent: Option<AgentId>,
    /// Never deliver events of other companies.
    #[arg(long)]
    company_restriction: Option<CompanyId>,
    #[command(flatten)]
    common: Common,
    /// Admin token key(s), 64 hex characters; the first one encrypts.
    #[arg(
        long,
        env = "DAISI_EDGE_ADMIN_TOKEN_AES_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    key: Option<String>,
    /// Admin credential of the edge's minting listener, used with --edge.
    #[arg(
        long,
        env = "DAISI_EDGE_ADMIN_MINT_API_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    api_key: Option<String>,
}

#[derive(Debug, Args)]
struct Common {
    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    expires_in: Duration,
    /// Mint through this edge's minting listener instead of locally (e.g.
    /// http://127.0.0.1:8082, `DAISI_EDGE_MINT_ADDR`).
    #[arg(long, env = "DAISI_EDGE_MINT_URL")]
    edge: Option<Url>,
    /// Print JSON ({"token": ...}) instead of the bare token.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let (token, json_out) = match command {
        TokenCommand::User(args) => (user(&args).await?, args.common.json),
        TokenCommand::Admin(args) => (admin(&args).await?, args.common.json),
    };
    if json_out {
        output::json(&json!({ "token": token }), false);
    } else {
        output::line(&token);
    }
    Ok(ExitCode::SUCCESS)
}

fn seconds(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// The keyring from a comma-separated key list, or an error naming the flag and variable.
pub(crate) fn keyring(keys: Option<&str>, flag: &str, var: &str) -> anyhow::Result<TokenKeyring> {
    let Some(keys) = keys.filter(|k| !k.trim().is_empty()) else {
        bail!("no token key: pass {flag} or set {var} (or use --edge to mint through an edge)");
    };
    let keys = keys
        .split(',')
        .map(|k| TokenKey::from_hex(k.trim()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{flag} / {var}"))?;
    Ok(TokenKeyring::new(keys)?)
}

async fn user(args: &UserArgs) -> anyhow::Result<String> {
    let secs = seconds(args.common.expires_in);
    if let Some(edge) = &args.common.edge {
        let body = json!({
            "company_id": args.company.as_str(),
            "agent_id": args.agent.as_str(),
            "user_id": args.user.as_str(),
            "expires_in_seconds": secs,
        });
        let key = args.api_key.as_deref().context(
            "minting through an edge needs its backend credential: pass --api-key or set DAISI_EDGE_MINT_API_KEY",
        )?;
        return remote(edge, "generate-token", key, body).await;
    }
    let ring = keyring(args.key.as_deref(), "--key", "DAISI_EDGE_TOKEN_AES_KEY")?;
    let claims = UserClaims::expiring_in(
        args.company.clone(),
        args.agent.clone(),
        args.user.clone(),
        jiff::Timestamp::now(),
        secs,
    )?;
    Ok(ring.encode_user(&claims)?)
}

async fn admin(args: &AdminArgs) -> anyhow::Result<String> {
    let secs = seconds(args.common.expires_in);
    if let Some(edge) = &args.common.edge {
        let mut body = json!({ "admin_id": args.admin.as_str(), "expires_in_seconds": secs });
        for (field, value) in [
            (
                "subscribed_company_id",
                args.subscribed_company.as_ref().map(|c| c.as_str()),
            ),
            (
                "subscribed_agent_id",
                args.subscribed_agent.as_ref().map(|a| a.as_str()),
            ),
            (
                "company_id_restriction",
                args.company_restriction.as_ref().map(|c| c.as_str()),
            ),
        ] {
            if let Some(value) = value {
                body[field] = Value::from(value);
            }
        }
        let key = args.api_key.as_deref().context(
            "minting through an edge needs its admin credential: pass --api-key or set DAISI_EDGE_ADMIN_MINT_API_KEY",
        )?;
        return remote(edge, "admin/generate-token", key, body).await;
    }
    let ring = keyring(
        args.key.as_deref(),
        "--key",
        "DAISI_EDGE_ADMIN_TOKEN_AES_KEY",
    )?;
    let mut claims = AdminClaims::expiring_in(args.admin.clone(), jiff::Timestamp::now(), secs)?;
    claims.subscribed_company_id = args.subscribed_company.clone();
    claims.subscribed_agent_id = args.subscribed_agent.clone();
    claims.company_id_restriction = args.company_restriction.clone();
    Ok(ring.encode_admin(&claims)?)
}

/// POSTs `body` to `{edge}/{path}` and returns the `token` of the answer.
async fn remote(edge: &Url, path: &str, api_key: &str, body: Value) -> anyhow::Result<String> {
    let url = edge.join(path).context("edge URL")?;
    let response = crate::http::client()?
        .post(url.clone())
        .header("X-API-Key", api_key)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if status == reqwest::StatusCode::NOT_FOUND {
        bail!(
            "{url} answered 404: point --edge at the edge's minting listener (DAISI_EDGE_MINT_ADDR, port 8082 by default), not its public port"
        );
    }
    if !status.is_success() {
        bail!("{url} answered {status}: {answer}");
    }
    answer["token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{url} answered without a token: {answer}"))
}
