//! The sandbox: real servers on loopback that stand in for the Internet.
//!
//! `--sandbox` runs the normal pipeline (DNS → MX → SMTP) against these, and the integration
//! tests script them to fail in every way a real receiver does.

pub mod dns;
pub mod receiver;
