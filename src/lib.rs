pub mod address;
pub mod message;
pub mod recipients;
pub mod sandbox;
pub mod smtp;
pub mod template;
