//! The TransformService messages (proxy/proto/transform/v1/transform.proto), as
//! prost types written out by hand: the schema is small and stable, and this
//! keeps `protoc` out of the build. `wire_matches_the_proto` below checks the
//! field numbers against the .proto file.

use std::collections::HashMap;

/// `TransformAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TransformAction {
    /// Treated as CONTINUE.
    Unspecified = 0,
    /// Go on.
    Continue = 1,
    /// Refuse.
    Reject = 2,
}

/// `TransformContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransformContext {
    /// TLS server name.
    #[prost(string, tag = "1")]
    pub sni: String,
    /// Client certificate (never sent).
    #[prost(bytes = "bytes", tag = "2")]
    pub client_cert_der: bytes::Bytes,
    /// The tunnel, when there is one.
    #[prost(message, optional, tag = "3")]
    pub tunnel: Option<TunnelInfo>,
}

/// `TunnelInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TunnelInfo {
    /// host:port.
    #[prost(string, tag = "1")]
    pub target: String,
}

/// `HeaderValues`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValues {
    /// The values, in order.
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

/// `HttpRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    /// Method.
    #[prost(string, tag = "1")]
    pub method: String,
    /// Absolute URL.
    #[prost(string, tag = "2")]
    pub url: String,
    /// Headers by lowercase name.
    #[prost(map = "string, message", tag = "3")]
    pub headers: HashMap<String, HeaderValues>,
    /// Body (when sent).
    #[prost(bytes = "bytes", tag = "4")]
    pub body: bytes::Bytes,
    /// Destination host.
    #[prost(string, tag = "5")]
    pub host: String,
    /// Client ip:port.
    #[prost(string, tag = "6")]
    pub remote_addr: String,
}

/// `HttpResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpResponse {
    /// Status.
    #[prost(int32, tag = "1")]
    pub status_code: i32,
    /// Headers by lowercase name.
    #[prost(map = "string, message", tag = "2")]
    pub headers: HashMap<String, HeaderValues>,
    /// Body (when sent).
    #[prost(bytes = "bytes", tag = "3")]
    pub body: bytes::Bytes,
}

/// `TransformRequestRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransformRequestRequest {
    /// The connection.
    #[prost(message, optional, tag = "1")]
    pub context: Option<TransformContext>,
    /// The request.
    #[prost(message, optional, tag = "2")]
    pub request: Option<HttpRequest>,
}

/// `TransformRequestResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransformRequestResponse {
    /// What to do.
    #[prost(enumeration = "TransformAction", tag = "1")]
    pub action: i32,
    /// REJECT: the response to send.
    #[prost(message, optional, tag = "2")]
    pub response: Option<HttpResponse>,
    /// CONTINUE: changes.
    #[prost(message, optional, tag = "3")]
    pub modified_request: Option<HttpRequest>,
    /// Trace annotations.
    #[prost(map = "string, string", tag = "4")]
    pub annotations: HashMap<String, String>,
}

/// `TransformResponseRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransformResponseRequest {
    /// The connection.
    #[prost(message, optional, tag = "1")]
    pub context: Option<TransformContext>,
    /// The request, as sent in the request phase.
    #[prost(message, optional, tag = "2")]
    pub request: Option<HttpRequest>,
    /// The upstream's response.
    #[prost(message, optional, tag = "3")]
    pub response: Option<HttpResponse>,
}

/// `TransformResponseResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransformResponseResponse {
    /// What to do.
    #[prost(enumeration = "TransformAction", tag = "1")]
    pub action: i32,
    /// REJECT: the replacement; CONTINUE: changes.
    #[prost(message, optional, tag = "2")]
    pub modified_response: Option<HttpResponse>,
    /// Trace annotations.
    #[prost(map = "string, string", tag = "3")]
    pub annotations: HashMap<String, String>,
}

/// The service's method paths.
pub const TRANSFORM_REQUEST: &str = "/transform.v1.TransformService/TransformRequest";
/// See [`TRANSFORM_REQUEST`].
pub const TRANSFORM_RESPONSE: &str = "/transform.v1.TransformService/TransformResponse";

#[cfg(test)]
mod tests {
    /// Every `name = N;` field of the .proto appears with the same tag here.
    #[test]
    fn wire_matches_the_proto() {
        let proto = include_str!("../../../proto/transform/v1/transform.proto");
        let rust = include_str!("wire.rs");
        let mut checked = 0;
        let mut message = "";
        for line in proto.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("message ") {
                message = m.trim_end_matches(" {");
                continue;
            }
            if line.starts_with("enum ") || line.starts_with("service ") {
                message = "";
            }
            if message.is_empty() {
                continue;
            }
            let Some((decl, tag)) = line.trim_end_matches(';').split_once(" = ") else {
                continue;
            };
            let field = decl.split_whitespace().last().unwrap_or_default();
            let needle = format!("tag = \"{tag}\")]\n    pub {field}:");
            assert!(
                rust.contains(&needle),
                "{message}.{field} = {tag} has no matching prost field"
            );
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} fields checked");
    }
}
