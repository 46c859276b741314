//! Our own SMTP client (RFC 5321): replies and commands as types, the DATA payload, and a
//! connection driven phase by phase with a timeout per phase, and STARTTLS.

pub mod client;
pub mod command;
pub mod data;
pub mod reply;
pub mod tls;

pub use client::{
    BEHIND_DOT_WAIT, Capabilities, ClientError, Connection, Dialect, Envelope, Health, Phase,
    Timeouts, Transaction,
};
pub use command::Command;
pub use data::DataPayload;
pub use reply::{EnhancedCode, Reply, ReplyError, parse_reply};
pub use tls::{MaybeTls, TlsMode, TlsPolicy};
