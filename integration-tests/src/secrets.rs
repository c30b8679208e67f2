//! Keys, API keys and tokens of one stack, fresh for every run.

use daisi_domain::token::{AdminClaims, TokenKeyring, UserClaims};
use daisi_domain::{AdminId, AgentId, CompanyId, UserId};

/// Secrets shared by the stack's services and its test clients.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// User token key (64 hex).
    pub user_key_hex: String,
    /// Admin token key (64 hex).
    pub admin_key_hex: String,
    /// API key of user sockets.
    pub api_key: String,
    /// API key of admin sockets.
    pub admin_api_key: String,
    /// Router publish API key.
    pub publish_key: String,
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
}

impl Secrets {
    /// New random secrets.
    pub fn generate() -> Self {
        Self {
            user_key_hex: random_hex(),
            admin_key_hex: random_hex(),
            api_key: random_hex(),
            admin_api_key: random_hex(),
            publish_key: random_hex(),
        }
    }

    fn ring(hex: &str) -> anyhow::Result<TokenKeyring> {
        Ok(TokenKeyring::from_hex(&[hex])?)
    }

    /// A user with a valid one-hour token.
    pub fn user(&self, company: &str, agent: &str, user: &str) -> anyhow::Result<User> {
        let claims = UserClaims::expiring_in(
            CompanyId::new(company)?,
            AgentId::new(agent)?,
            UserId::new(user)?,
            jiff::Timestamp::now(),
            3600,
        )?;
        Ok(User {
            company: company.to_owned(),
            agent: agent.to_owned(),
            token: Self::ring(&self.user_key_hex)?.encode_user(&claims)?,
            admin: false,
        })
    }

    /// An admin with a valid one-hour token and the given filters.
    pub fn admin(
        &self,
        admin: &str,
        subscribed_company: Option<&str>,
        subscribed_agent: Option<&str>,
    ) -> anyhow::Result<User> {
        let mut claims =
            AdminClaims::expiring_in(AdminId::new(admin)?, jiff::Timestamp::now(), 3600)?;
        claims.subscribed_company_id = subscribed_company.map(CompanyId::new).transpose()?;
        claims.subscribed_agent_id = subscribed_agent.map(AgentId::new).transpose()?;
        Ok(User {
            company: String::new(),
            agent: String::new(),
            token: Self::ring(&self.admin_key_hex)?.encode_admin(&claims)?,
            admin: true,
        })
    }
}

/// Who connects: the socket path and the token.
#[derive(Debug, Clone)]
pub struct User {
    /// Company (user sockets).
    pub company: String,
    /// Agent (user sockets).
    pub agent: String,
    /// The token.
    pub token: String,
    /// Whether this is an admin socket.
    pub admin: bool,
}
