//! The domain of daisi: identifiers, tokens, the WebSocket wire protocol, the NATS subject model
//! and the vocabulary of the session coordinator.
//!
//! Pure logic with no I/O, so every service (edge, router, coordinator) and every test shares one
//! definition of the wire contract (`spec/compat.md`). Anything observable by clients lives here
//! exactly once: error codes and messages, token format, frame shapes.

pub mod coordination;
pub mod error_body;
pub mod error_code;
pub mod event;
pub mod ids;
pub mod protocol;
pub mod session_key;
pub mod subject;
pub mod token;

pub use error_body::ErrorBody;
pub use error_code::ErrorCode;
pub use ids::{AdminId, AgentId, ChatId, CompanyId, ConnectionId, IdError, IdKind, PodId, UserId};
pub use session_key::SessionKey;
