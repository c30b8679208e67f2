//! The NATS subject model: `{prefix}.{company}.{agent}.{kind}[.{chat}]` (compat.md, "NATS").
//!
//! Parsing tells the router who receives an event and which `event_type` it carries. Every
//! token is validated like an id, so a malformed subject is refused (then acknowledged and
//! counted by the caller) instead of being routed somewhere unexpected.

use crate::ids::{AgentId, ChatId, CompanyId, IdError, IdKind, validate_id};

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "websocket";

/// A subject that does not follow the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject does not start with `{prefix}.`.
    #[error("subject does not start with the configured prefix")]
    WrongPrefix,
    /// Fewer tokens than `{company}.{agent}.{kind}` (or `messages` without a chat).
    #[error("subject has too few tokens")]
    TooFewTokens,
    /// More tokens than the kind allows.
    #[error("subject has too many tokens")]
    TooManyTokens,
    /// A token is not a valid id.
    #[error("invalid subject token: {0}")]
    Token(#[from] IdError),
}

/// What a subject is about; decides the recipients and the `event_type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// `chats`: every user socket of the agent, event type `chat`.
    Chats,
    /// `contacts`: every user socket of the agent, event type `contact`.
    Contacts,
    /// `agents`: user sockets of the agent and matching admin sockets, event type `agent`.
    Agents,
    /// `messages.{chat}`: user sockets of the agent that selected the chat, event type `message`.
    Messages(ChatId),
    /// Any other 4th token: delivered like `chats`, with the token as event type.
    Other(String),
}

impl SubjectKind {
    /// The `event_type` written into the delivered payload.
    pub fn event_type(&self) -> &str {
        match self {
            Self::Chats => "chat",
            Self::Contacts => "contact",
            Self::Agents => "agent",
            Self::Messages(_) => "message",
            Self::Other(token) => token,
        }
    }

    /// Which sockets of the agent receive it.
    pub fn scope(&self) -> Scope {
        match self {
            Self::Chats | Self::Contacts | Self::Other(_) => Scope::Agent,
            Self::Agents => Scope::AgentAndAdmins,
            Self::Messages(chat) => Scope::Chat(chat.clone()),
        }
    }
}

/// Which sockets of a (company, agent) receive an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every user socket of the agent.
    Agent,
    /// User sockets of the agent whose selected chat is this one.
    Chat(ChatId),
    /// Every user socket of the agent plus admin sockets whose subscription matches.
    AgentAndAdmins,
}

/// The recipients of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryTarget {
    /// The company in the subject.
    pub company: CompanyId,
    /// The agent in the subject.
    pub agent: AgentId,
    /// Which of the agent's sockets (and whether admins too).
    pub scope: Scope,
}

/// A parsed event subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventSubject {
    /// The company token.
    pub company: CompanyId,
    /// The agent token.
    pub agent: AgentId,
    /// The kind token(s).
    pub kind: SubjectKind,
}

impl EventSubject {
    /// The `event_type` written into the delivered payload.
    pub fn event_type(&self) -> &str {
        self.kind.event_type()
    }

    /// Who receives it.
    pub fn target(&self) -> DeliveryTarget {
        DeliveryTarget {
            company: self.company.clone(),
            agent: self.agent.clone(),
            scope: self.kind.scope(),
        }
    }
}

/// Parses and renders subjects under one validated prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectModel {
    /// The prefix followed by a dot, so parsing is one `strip_prefix`.
    prefix_dot: String,
}

impl Default for SubjectModel {
    fn default() -> Self {
        Self {
            prefix_dot: format!("{DEFAULT_PREFIX}."),
        }
    }
}

impl SubjectModel {
    /// A model for `prefix`: one or more dot-separated tokens (e.g. `websocket`, `wa`, `a.b`),
    /// each following the id rules.
    pub fn new(prefix: &str) -> Result<Self, SubjectError> {
        for token in prefix.split('.') {
            validate_id(IdKind::SubjectPrefix, token)?;
        }
        Ok(Self {
            prefix_dot: format!("{prefix}."),
        })
    }

    /// The configured prefix, without the trailing dot.
    pub fn prefix(&self) -> &str {
        self.prefix_dot
            .strip_suffix('.')
            .unwrap_or(&self.prefix_dot)
    }

    /// The stream's subject filter, `{prefix}.>`.
    pub fn stream_subjects(&self) -> String {
        format!("{}>", self.prefix_dot)
    }

    /// Parses a subject of this model.
    pub fn parse(&self, subject: &str) -> Result<EventSubject, SubjectError> {
        let rest = subject
            .strip_prefix(&self.prefix_dot)
            .ok_or(SubjectError::WrongPrefix)?;
        let mut tokens = rest.split('.');
        let (Some(company), Some(agent), Some(kind)) =
            (tokens.next(), tokens.next(), tokens.next())
        else {
            return Err(SubjectError::TooFewTokens);
        };
        let company = company.parse()?;
        let agent = agent.parse()?;
        let kind = match kind {
            "chats" => SubjectKind::Chats,
            "contacts" => SubjectKind::Contacts,
            "agents" => SubjectKind::Agents,
            "messages" => {
                let chat = tokens.next().ok_or(SubjectError::TooFewTokens)?;
                SubjectKind::Messages(chat.parse()?)
            }
            other => {
                validate_id(IdKind::EventType, other)?;
                SubjectKind::Other(other.to_owned())
            }
        };
        if tokens.next().is_some() {
            return Err(SubjectError::TooManyTokens);
        }
        Ok(EventSubject {
            company,
            agent,
            kind,
        })
    }

    /// Builds the subject of an event (for publishers and tests). An `Other` kind that is not
    /// a valid token renders a subject that [`SubjectModel::parse`] will refuse.
    pub fn render(&self, company: &CompanyId, agent: &AgentId, kind: &SubjectKind) -> String {
        let tail = match kind {
            SubjectKind::Chats => "chats",
            SubjectKind::Contacts => "contacts",
            SubjectKind::Agents => "agents",
            SubjectKind::Messages(chat) => {
                return format!("{}{company}.{agent}.messages.{chat}", self.prefix_dot);
            }
            SubjectKind::Other(token) => token,
        };
        format!("{}{company}.{agent}.{tail}", self.prefix_dot)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_every_kind() {
        let model = SubjectModel::default();
        let cases = [
            ("websocket.c1.a1.chats", "chat", Scope::Agent),
            ("websocket.c1.a1.contacts", "contact", Scope::Agent),
            ("websocket.c1.a1.agents", "agent", Scope::AgentAndAdmins),
            (
                "websocket.c1.a1.messages.ch9",
                "message",
                Scope::Chat("ch9".parse().unwrap()),
            ),
            ("websocket.c1.a1.labels", "labels", Scope::Agent),
        ];
        for (subject, event_type, scope) in cases {
            let parsed = model.parse(subject).unwrap();
            assert_eq!(parsed.event_type(), event_type, "{subject}");
            let target = parsed.target();
            assert_eq!(target.scope, scope, "{subject}");
            assert_eq!(target.company.as_str(), "c1");
            assert_eq!(target.agent.as_str(), "a1");
            assert_eq!(
                model.render(&parsed.company, &parsed.agent, &parsed.kind),
                subject
            );
        }
    }

    #[test]
    fn refuses_malformed_subjects() {
        let model = SubjectModel::default();
        let cases = [
            ("wa.c1.a1.chats", SubjectError::WrongPrefix),
            ("websocketx.c1.a1.chats", SubjectError::WrongPrefix),
            ("websocket.c1.a1", SubjectError::TooFewTokens),
            ("websocket.c1.a1.messages", SubjectError::TooFewTokens),
            ("websocket.c1.a1.chats.x", SubjectError::TooManyTokens),
            ("websocket.c1.a1.messages.ch.x", SubjectError::TooManyTokens),
            ("websocket.c1.a1.labels.x", SubjectError::TooManyTokens),
        ];
        for (subject, error) in cases {
            assert_eq!(model.parse(subject), Err(error), "{subject}");
        }
        for subject in [
            "websocket..a1.chats",
            "websocket.c1.*.chats",
            "websocket.c1.a1.>",
            "websocket.c1.a1.messages.",
        ] {
            assert!(
                matches!(model.parse(subject), Err(SubjectError::Token(_))),
                "{subject}"
            );
        }
    }

    #[test]
    fn prefixes_may_have_several_tokens() {
        let model = SubjectModel::new("a.b").unwrap();
        assert_eq!(model.prefix(), "a.b");
        assert_eq!(model.stream_subjects(), "a.b.>");
        assert_eq!(model.parse("a.b.c1.a1.chats").unwrap().event_type(), "chat");
        assert_eq!(SubjectModel::new("wa").unwrap().stream_subjects(), "wa.>");
        assert_eq!(SubjectModel::default().stream_subjects(), "websocket.>");
        for bad in ["", "a.", ".a", "a..b", "a.*", ">"] {
            assert!(SubjectModel::new(bad).is_err(), "{bad:?}");
        }
    }
}
