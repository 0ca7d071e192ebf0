//! The transforms, one file each. `build` turns a transform's config into a
//! ready-to-run [`crate::pipeline::Transform`].

pub mod allowlist;
pub mod annotate;
pub mod aws_auth;
pub mod body_capture;
pub mod gcp_auth;
pub mod grpc;
pub mod header_allowlist;
pub mod hmac_sign;
pub mod judge;
pub mod oauth_token;
pub mod secrets;
pub mod signed_body;
#[cfg(test)]
pub(crate) mod test_support;
pub mod wire_case;
