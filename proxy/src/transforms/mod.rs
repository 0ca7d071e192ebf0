//! The transforms, one file each. `build` turns a transform's config into a
//! ready-to-run [`crate::pipeline::Transform`].

pub mod allowlist;
pub mod annotate;
pub mod aws_auth;
pub mod body_capture;
pub mod header_allowlist;
pub mod hmac_sign;
pub mod secrets;
pub mod signed_body;
pub mod wire_case;
