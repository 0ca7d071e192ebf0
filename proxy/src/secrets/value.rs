//! [`SecretValue`]: a credential held in memory. It zeroizes its bytes when the
//! last clone is dropped, and its `Debug` and `Display` print `***`, so a
//! value that slips into a log line or an error message shows nothing.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// A resolved secret. Cloning is cheap (the bytes are shared) and the bytes
/// are wiped when the last clone goes away.
#[derive(Clone)]
pub struct SecretValue(Arc<Zeroizing<String>>);

impl SecretValue {
    /// Wraps `value`; the caller's `String` is moved, never copied.
    pub fn new(value: String) -> Self {
        SecretValue(Arc::new(Zeroizing::new(value)))
    }

    /// The plaintext. Use it only to build the outgoing request; never log it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// True when the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for SecretValue {
    /// Constant-time comparison, so equality checks (rotation detection) leak no timing.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for SecretValue {}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        SecretValue::new(s)
    }
}

impl From<Zeroizing<String>> for SecretValue {
    fn from(s: Zeroizing<String>) -> Self {
        SecretValue(Arc::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let v = SecretValue::new("sk-real".into());
        assert_eq!(format!("{v} {v:?} {:?}", Some(&v)), "*** *** Some(***)");
        assert_eq!(v.expose(), "sk-real");
        assert_eq!(v, SecretValue::new("sk-real".into()));
        assert_ne!(v, SecretValue::new("sk-other".into()));
    }
}
