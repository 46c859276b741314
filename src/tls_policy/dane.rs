//! DANE for SMTP (RFC 7672, RFC 7671): DNSSEC-validated TLSA records of an MX host and the
//! certificate check they imply.
