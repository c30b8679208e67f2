//! `daisi sessions|pods|routes`: the coordinator's read/kill API for people, as tables or JSON.

use crate::cli::CoordinatorArgs;
use crate::output;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use daisi_domain::{AdminId, AgentId, ChatId, CompanyId, UserId};
use daisi_proto::coordinator::v1 as pb;
use daisi_proto::coordinator::v1::coordinator_admin_client::CoordinatorAdminClient;
use daisi_runtime::internal::{ClientAuth, InternalSecurity};
use serde_json::{Value, json};
use std::process::ExitCode;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Debug, Subcommand)]
pub(crate) enum SessionsCommand {
    /// Sessions of a company, of one agent, or admin sessions.
    List(ListArgs),
    /// One session: holder pod, connection, since when, selected chat, fencing token.
    Get(KeyArgs),
    /// End a session: its socket is closed with 4402.
    Kill(KillArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Company whose sessions to list.
    #[arg(long, required_unless_present = "admins")]
    company: Option<CompanyId>,
    /// Only this agent's sessions (with --company).
    #[arg(long, requires = "company")]
    agent: Option<AgentId>,
    /// List admin sessions instead.
    #[arg(long, conflicts_with_all = ["company", "agent"])]
    admins: bool,
    /// Sessions per page asked from the coordinator.
    #[arg(long, default_value_t = 500)]
    page_size: u32,
    #[command(flatten)]
    target: CoordinatorArgs,
}

/// A session key: a user (company, agent, user) or an admin.
#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// Company of the user.
    #[arg(long, requires_all = ["agent", "user"], required_unless_present = "admin")]
    company: Option<CompanyId>,
    /// Agent of the user.
    #[arg(long)]
    agent: Option<AgentId>,
    /// User id.
    #[arg(long)]
    user: Option<UserId>,
    /// Admin id (instead of a user).
    #[arg(long, conflicts_with_all = ["company", "agent", "user"])]
    admin: Option<AdminId>,
    #[command(flatten)]
    target: CoordinatorArgs,
}

#[derive(Debug, Args)]
pub(crate) struct KillArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Why (logged and sent with the kill command).
    #[arg(long, default_value = "killed by an operator")]
    reason: String,
}

#[derive(Debug, Args)]
pub(crate) struct PodsArgs {
    #[command(flatten)]
    target: CoordinatorArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RoutesArgs {
    /// Everything this pod holds.
    #[arg(long, conflicts_with_all = ["company", "agent", "chat", "admins"])]
    pod: Option<String>,
    /// Company of the route.
    #[arg(long, requires = "agent", required_unless_present = "pod")]
    company: Option<CompanyId>,
    /// Agent of the route.
    #[arg(long)]
    agent: Option<AgentId>,
    /// A chat's message route instead of the agent route.
    #[arg(long, conflicts_with = "admins")]
    chat: Option<ChatId>,
    /// Admin subscriptions matching the company/agent.
    #[arg(long)]
    admins: bool,
    #[command(flatten)]
    target: CoordinatorArgs,
}

type AdminClient = CoordinatorAdminClient<InterceptedService<Channel, ClientAuth>>;

/// A client of the admin API with the operator's credentials from `DAISI_INTERNAL_*` (the
/// admin token, or a certificate for `admin.daisi.internal`), as the services read them.
async fn client(target: &CoordinatorArgs) -> anyhow::Result<AdminClient> {
    let security = InternalSecurity::from_env(&daisi_config::Env::from_process())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let auth = security.admin_client();
    let endpoint = Channel::from_shared(target.coordinator.to_string())
        .context("coordinator URL")?
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(10));
    let channel = auth
        .connect(&endpoint)
        .await
        .with_context(|| format!("cannot reach the coordinator at {}", target.coordinator))?;
    Ok(CoordinatorAdminClient::with_interceptor(channel, auth))
}

fn status(error: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("coordinator: {:?}: {}", error.code(), error.message())
}

fn session_key(args: &KeyArgs) -> anyhow::Result<pb::SessionKey> {
    let kind = match (&args.admin, &args.company, &args.agent, &args.user) {
        (Some(admin), ..) => pb::session_key::Kind::Admin(pb::AdminSessionKey {
            admin_id: admin.to_string(),
        }),
        (None, Some(c), Some(a), Some(u)) => pb::session_key::Kind::User(pb::UserSessionKey {
            company_id: c.to_string(),
            agent_id: a.to_string(),
            user_id: u.to_string(),
        }),
        _ => bail!("name a session with --company, --agent and --user, or with --admin"),
    };
    Ok(pb::SessionKey { kind: Some(kind) })
}

fn key_text(key: Option<&pb::SessionKey>) -> String {
    match key.and_then(|k| k.kind.as_ref()) {
        Some(pb::session_key::Kind::User(u)) => {
            format!("user {}/{}/{}", u.company_id, u.agent_id, u.user_id)
        }
        Some(pb::session_key::Kind::Admin(a)) => format!("admin {}", a.admin_id),
        None => "?".into(),
    }
}

fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map(|t| {
            t.round(jiff::Unit::Second)
                .map_or_else(|_| t.to_string(), |r| r.to_string())
        })
        .unwrap_or_default()
}

fn session_json(s: &pb::SessionInfo) -> Value {
    let holder = s.holder.clone().unwrap_or_default();
    json!({
        "key": key_text(s.key.as_ref()),
        "pod_id": holder.pod_id,
        "connection_id": holder.connection_id,
        "fencing_token": holder.fencing_token,
        "since": time_text(s.since.as_ref()),
        "lease_expires_at": time_text(s.lease_expires_at.as_ref()),
        "selected_chat_id": s.selected_chat_id,
    })
}

const SESSION_COLUMNS: [&str; 6] = [
    "session",
    "pod",
    "connection",
    "fencing",
    "since",
    "selected chat",
];

fn session_row(s: &pb::SessionInfo) -> Vec<String> {
    let holder = s.holder.clone().unwrap_or_default();
    vec![
        key_text(s.key.as_ref()),
        holder.pod_id,
        holder.connection_id,
        holder.fencing_token.to_string(),
        time_text(s.since.as_ref()),
        s.selected_chat_id.clone(),
    ]
}

pub(crate) async fn sessions(command: SessionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SessionsCommand::List(args) => list_sessions(args).await,
        SessionsCommand::Get(args) => {
            let mut client = client(&args.target).await?;
            let key = session_key(&args)?;
            let found = client
                .get_session(pb::GetSessionRequest { key: Some(key) })
                .await;
            match found {
                Ok(answer) => {
                    let session = answer.into_inner().session.unwrap_or_default();
                    if args.target.json {
                        output::json(&session_json(&session), false);
                    } else {
                        output::table(&SESSION_COLUMNS, vec![session_row(&session)], "");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.code() == tonic::Code::NotFound => {
                    output::fail("no live session for that key");
                    Ok(ExitCode::from(3))
                }
                Err(e) => Err(status(e)),
            }
        }
        SessionsCommand::Kill(args) => {
            let mut client = client(&args.key.target).await?;
            let key = session_key(&args.key)?;
            let answer = client
                .kill_session(pb::KillSessionRequest {
                    key: Some(key),
                    reason: args.reason.clone(),
                    connection_id: String::new(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if args.key.target.json {
                let session = answer.session.as_ref().map(session_json);
                output::json(
                    &json!({ "killed": answer.killed, "session": session }),
                    false,
                );
            } else if answer.killed {
                output::line("session killed: its socket is closed with 4402");
            } else {
                output::line("no live session for that key: nothing to kill");
            }
            Ok(if answer.killed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
    }
}

async fn list_sessions(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.target).await?;
    let filter = match (&args.company, &args.agent, args.admins) {
        (_, _, true) => pb::list_sessions_request::Filter::Admins(pb::AdminSessionsFilter {}),
        (Some(c), Some(a), false) => pb::list_sessions_request::Filter::Agent(pb::AgentFilter {
            company_id: c.to_string(),
            agent_id: a.to_string(),
        }),
        (Some(c), None, false) => pb::list_sessions_request::Filter::CompanyId(c.to_string()),
        (None, _, false) => bail!("pass --company (and optionally --agent), or --admins"),
    };
    let mut sessions = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_sessions(pb::ListSessionsRequest {
                filter: Some(filter.clone()),
                page_size: args.page_size,
                page_token: page_token.clone(),
            })
            .await
            .map_err(status)?
            .into_inner();
        sessions.extend(page.sessions);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if args.target.json {
        output::json(
            &Value::Array(sessions.iter().map(session_json).collect()),
            false,
        );
    } else {
        let rows = sessions.iter().map(session_row).collect();
        output::table(&SESSION_COLUMNS, rows, "no sessions");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn pods(args: PodsArgs) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.target).await?;
    let mut pods = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_pods(pb::ListPodsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
            })
            .await
            .map_err(status)?
            .into_inner();
        pods.extend(page.pods);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if args.target.json {
        let list = pods
            .iter()
            .map(|p| {
                json!({
                    "pod_id": p.pod_id,
                    "instance_id": p.instance_id,
                    "delivery_address": p.delivery_address,
                    "registered_at": time_text(p.registered_at.as_ref()),
                    "last_heartbeat_at": time_text(p.last_heartbeat_at.as_ref()),
                    "lease_expires_at": time_text(p.lease_expires_at.as_ref()),
                })
            })
            .collect();
        output::json(&Value::Array(list), false);
    } else {
        let rows = pods
            .iter()
            .map(|p| {
                vec![
                    p.pod_id.clone(),
                    p.delivery_address.clone(),
                    time_text(p.registered_at.as_ref()),
                    time_text(p.last_heartbeat_at.as_ref()),
                    time_text(p.lease_expires_at.as_ref()),
                ]
            })
            .collect();
        output::table(
            &[
                "pod",
                "delivery address",
                "registered",
                "last heartbeat",
                "lease expires",
            ],
            rows,
            "no pods registered",
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn route_text(route: Option<&pb::Route>) -> String {
    match route.and_then(|r| r.kind.as_ref()) {
        Some(pb::route::Kind::Agent(a)) => format!("agent {}/{}", a.company_id, a.agent_id),
        Some(pb::route::Kind::Chat(c)) => {
            format!("chat {}/{}/{}", c.company_id, c.agent_id, c.chat_id)
        }
        Some(pb::route::Kind::Admin(a)) => {
            let any = |s: &str| {
                if s.is_empty() {
                    "*".to_owned()
                } else {
                    s.to_owned()
                }
            };
            format!("admins {}/{}", any(&a.company_id), any(&a.agent_id))
        }
        None => "?".into(),
    }
}

pub(crate) async fn routes(args: RoutesArgs) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.target).await?;
    let selector = match (&args.pod, &args.company, &args.agent) {
        (Some(pod), ..) => pb::get_routes_request::Selector::PodId(pod.clone()),
        (None, Some(c), Some(a)) => {
            let (company_id, agent_id) = (c.to_string(), a.to_string());
            let kind = match (&args.chat, args.admins) {
                (Some(chat), _) => pb::route::Kind::Chat(pb::ChatRoute {
                    company_id,
                    agent_id,
                    chat_id: chat.to_string(),
                }),
                (None, true) => pb::route::Kind::Admin(pb::AdminRoute {
                    company_id,
                    agent_id,
                }),
                (None, false) => pb::route::Kind::Agent(pb::AgentRoute {
                    company_id,
                    agent_id,
                }),
            };
            pb::get_routes_request::Selector::Route(pb::Route { kind: Some(kind) })
        }
        _ => bail!("pass --pod, or --company and --agent (with --chat or --admins)"),
    };
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .get_routes(pb::GetRoutesRequest {
                selector: Some(selector.clone()),
                page_size: 1000,
                page_token: page_token.clone(),
            })
            .await
            .map_err(status)?
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if args.target.json {
        let list = entries
            .iter()
            .map(|e| json!({ "route": route_text(e.route.as_ref()), "pod_id": e.pod_id }))
            .collect();
        output::json(&Value::Array(list), false);
    } else {
        let rows = entries
            .iter()
            .map(|e| vec![route_text(e.route.as_ref()), e.pod_id.clone()])
            .collect();
        output::table(&["route", "pod"], rows, "no routes");
    }
    Ok(ExitCode::SUCCESS)
}
