//! MTA-STS (RFC 8461): a recipient domain's published policy, fetched over HTTPS, cached on
//! disk for its `max_age`.
