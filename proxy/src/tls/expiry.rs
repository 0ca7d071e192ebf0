//! The MITM CA's coming expiry, said in words before it happens: once the CA
//! expires the proxy refuses to start with it (and clients refuse the leaf
//! certificates it signed), and the `ca_expiry_timestamp_seconds` metric
//! helps only whoever alerts on it. `validate`, start-up, a reload and
//! `init` (when it keeps an existing CA) each say it when fewer than
//! [`WARN_WITHIN`] are left.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

/// How long before the CA's expiry the warnings start: 30 days, the
/// renewal window ACME clients use, long enough to distribute a new CA to
/// every workload's trust store.
pub const WARN_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// A CA certificate that expires within [`WARN_WITHIN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiresSoon {
    /// The certificate file (`tls.ca_cert`).
    pub file: PathBuf,
    /// When it expires.
    pub not_after: OffsetDateTime,
    /// Whole days left (0 on its last day).
    pub days_left: i64,
}

/// The warning for the CA in `file` expiring at `not_after`, if it does
/// within [`WARN_WITHIN`] of `now`; `None` for one already expired (the
/// load refuses that one, an error of its own).
pub fn expires_soon(
    file: &Path,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<ExpiresSoon> {
    let left = not_after - now;
    if left.is_negative() || left > WARN_WITHIN {
        return None;
    }
    Some(ExpiresSoon {
        file: file.to_path_buf(),
        not_after,
        days_left: left.whole_days(),
    })
}

/// `ca`, loaded from `file`, checked against the clock.
pub fn check(ca: &super::CertificateAuthority, file: &Path) -> Option<ExpiresSoon> {
    expires_soon(file, ca.not_after(), OffsetDateTime::now_utc())
}

/// [`check`] for `ca` as loaded from the certificate file `m` names
/// (start-up, a reload).
pub fn of_config(
    ca: &super::CertificateAuthority,
    m: &crate::config::MitmConfig,
) -> Option<ExpiresSoon> {
    let (cert, _) = m.ca_paths().ok()?;
    check(ca, cert)
}

impl ExpiresSoon {
    /// The expiry as `2026-12-20 14:03 UTC`.
    pub fn date(&self) -> String {
        let t = self.not_after.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    }

    /// Logs the warning (start-up, a reload), with the file and the date as
    /// fields too.
    pub fn log(&self) {
        tracing::warn!(
            ca_cert = %self.file.display(),
            not_after = %self.date(),
            days_left = self.days_left,
            "{self}"
        );
    }
}

impl fmt::Display for ExpiresSoon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = match self.days_left {
            0 => "less than a day".to_string(),
            1 => "1 day".to_string(),
            n => format!("{n} days"),
        };
        write!(
            f,
            "the CA certificate {} expires on {} (in {left}): the proxy will not start with it \
             after that; generate a new CA (iron-proxy generate-ca) and add it to the \
             workloads' trust stores before then",
            self.file.display(),
            self.date()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(s).expect("in range")
    }

    #[test]
    fn only_a_ca_expiring_within_30_days_is_warned_about() {
        let now = at(1_800_000_000);
        let day = 24 * 3600;
        let file = Path::new("/etc/iron-proxy/ca.crt");
        assert_eq!(expires_soon(file, at(1_800_000_000 + 31 * day), now), None);
        assert_eq!(
            expires_soon(file, at(1_800_000_000 - 1), now),
            None,
            "expired"
        );
        let soon = expires_soon(file, at(1_800_000_000 + 12 * day + 5), now).expect("soon");
        assert_eq!(soon.days_left, 12);
        // 1_800_000_000 is 2027-01-15 08:00:00 UTC.
        assert_eq!(soon.date(), "2027-01-27 08:00 UTC");
        let text = soon.to_string();
        assert!(
            text.starts_with(
                "the CA certificate /etc/iron-proxy/ca.crt expires on 2027-01-27 08:00 UTC (in 12 days)"
            ),
            "{text}"
        );
        let last = expires_soon(file, at(1_800_000_000 + 60), now).expect("last day");
        assert!(last.to_string().contains("(in less than a day)"), "{last}");
    }
}
