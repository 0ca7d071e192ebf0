//! The `allowlist` transform: default-deny on destination host, CIDR, method
//! and path. Domains are indexed so a decision costs a few hash lookups even
//! with 100k entries.

use std::collections::HashSet;

use async_trait::async_trait;
use http::Request;
use ipnet::IpNet;

use crate::body::Body;
use crate::pipeline::{Flow, Rejection, Transform, TransformError, Verdict};
use crate::rules::{canonical_ip, HostPattern, Rule, Target};

/// A set of host globs, indexed for fast lookups.
#[derive(Debug, Default, Clone)]
pub struct HostSet {
    any: bool,
    exact: HashSet<String>,
    /// Apexes of `*.apex` patterns.
    subdomains: HashSet<String>,
    /// Patterns with a `*` elsewhere, checked one by one.
    globs: Vec<HostPattern>,
}

impl HostSet {
    /// Indexes `patterns`.
    pub fn new(patterns: impl IntoIterator<Item = HostPattern>) -> Self {
        let mut set = HostSet::default();
        for p in patterns {
            match p {
                HostPattern::Any => set.any = true,
                HostPattern::Exact(e) => {
                    set.exact.insert(e);
                }
                HostPattern::Subdomains(a) => {
                    set.subdomains.insert(a);
                }
                g @ HostPattern::Glob(_) => set.globs.push(g),
            }
        }
        set
    }

    /// True when `host` (normalized) matches any pattern.
    pub fn matches(&self, host: &str) -> bool {
        if self.any || self.exact.contains(host) {
            return true;
        }
        if !self.subdomains.is_empty() {
            let mut rest = host;
            loop {
                if self.subdomains.contains(rest) {
                    return true;
                }
                match rest.find('.') {
                    Some(i) => rest = &rest[i + 1..],
                    None => break,
                }
            }
        }
        self.globs.iter().any(|g| g.matches(host))
    }

    /// True when the set holds no pattern.
    pub fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.subdomains.is_empty() && self.globs.is_empty()
    }
}

/// The allowlist transform.
#[derive(Debug)]
pub struct Allowlist {
    domains: HostSet,
    cidrs: Vec<IpNet>,
    rules: Vec<Rule>,
    warn: bool,
}

impl Allowlist {
    /// An allowlist from its parsed config.
    pub fn new(domains: Vec<HostPattern>, cidrs: Vec<IpNet>, rules: Vec<Rule>, warn: bool) -> Self {
        Allowlist {
            domains: HostSet::new(domains),
            cidrs,
            rules,
            warn,
        }
    }

    /// The decision alone: true when the target is allowed. An IP literal is
    /// allowed by `cidrs` or by the catch-all `*` in `domains`; no other
    /// domain pattern matches one (as in `rules[].host`, see `HostPattern`).
    pub fn allows(&self, t: &Target<'_>) -> bool {
        if let Some(ip) = t.ip {
            let ip = canonical_ip(ip);
            if self.domains.any || self.cidrs.iter().any(|n| n.contains(&ip)) {
                return true;
            }
        } else if self.domains.matches(t.host) {
            return true;
        }
        self.rules.iter().any(|r| r.matches(t))
    }

    /// True when some entry could allow requests to this host, whatever their
    /// method and path (for tunnel targets whose inner requests are checked later).
    pub fn allows_host(&self, t: &Target<'_>) -> bool {
        self.allows(t) || self.rules.iter().any(|r| r.matches_host(t))
    }
}

#[async_trait]
impl Transform for Allowlist {
    fn name(&self) -> &str {
        "allowlist"
    }

    fn refuses_host(&self, t: &Target<'_>) -> bool {
        !self.warn && !self.allows_host(t)
    }

    async fn on_request(
        &self,
        _req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        if self.allows(&cx.target()) || (cx.precheck && self.allows_host(&cx.target())) {
            return Ok(Verdict::Continue);
        }
        let what = if cx.method.is_empty() {
            format!("host {} is not in the allowlist", cx.dest.host)
        } else {
            format!(
                "{} {}{} is not in the allowlist",
                cx.method, cx.dest.host, cx.path
            )
        };
        if self.warn {
            cx.annotate("action", "warn");
            cx.annotate("reason", what);
            return Ok(Verdict::Continue);
        }
        Ok(Verdict::Reject(Rejection::forbidden(
            "not_allowlisted",
            what,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::target as t;

    fn list(domains: &[&str], cidrs: &[&str], rules: &str, warn: bool) -> Allowlist {
        Allowlist::new(
            domains
                .iter()
                .map(|d| d.parse().expect("pattern"))
                .collect(),
            cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
            serde_yaml_ng::from_str(rules).expect("rules"),
            warn,
        )
    }

    #[test]
    fn domains_cidrs_and_rules() {
        let a = list(
            &["registry.npmjs.org", "*.github.com", "api-*.example.com"],
            &["10.0.0.0/8"],
            "[{host: api.openai.com, methods: [POST], paths: ['/v1/*']}, {cidr: '192.0.2.0/24', methods: [GET]}]",
            false,
        );
        assert!(a.allows(&t("registry.npmjs.org", "GET", "/x")));
        assert!(a.allows(&t("github.com", "GET", "/")));
        assert!(a.allows(&t("raw.objects.github.com", "GET", "/")));
        assert!(!a.allows(&t("notgithub.com", "GET", "/")));
        assert!(a.allows(&t("api-eu.example.com", "GET", "/")));
        assert!(a.allows(&t("10.2.3.4", "GET", "/")));
        assert!(a.allows(&t("::ffff:10.2.3.4", "GET", "/")));
        assert!(!a.allows(&t("11.2.3.4", "GET", "/")));
        assert!(a.allows(&t("api.openai.com", "POST", "/v1/chat")));
        assert!(!a.allows(&t("api.openai.com", "GET", "/v1/chat")));
        assert!(a.allows(&t("192.0.2.7", "GET", "/")));
        assert!(!a.allows(&t("192.0.2.7", "POST", "/")));
    }

    #[test]
    fn ip_literals_match_the_catch_all_and_no_other_domain_glob() {
        let any = list(&["*"], &[], "[]", false);
        assert!(any.allows(&t("anything.test", "GET", "/")));
        assert!(
            any.allows(&t("203.0.113.9", "GET", "/")),
            "a bare * is the catch-all"
        );
        assert!(any.allows(&t("::1", "GET", "/")));
        // Globs of addresses (`203.0.113.*`) are refused at load (rules.rs); a name glob
        // never matches an address, even one whose text it would.
        let globs = list(&["*.example.com", "*.9.example"], &[], "[]", false);
        assert!(globs.allows(&t("api.example.com", "GET", "/")));
        for ip in ["203.0.113.9", "::ffff:203.0.113.9"] {
            assert!(
                !globs.allows(&t(ip, "GET", "/")),
                "{ip}: IP literals need cidrs"
            );
        }
        // The same in rules[].host: `*` matches the address, other globs never do.
        let rules = list(
            &[],
            &[],
            "[{host: '*', methods: [PUT]}, {host: '*.example.com', methods: [POST]}]",
            false,
        );
        assert!(rules.allows(&t("203.0.113.9", "PUT", "/")));
        assert!(!rules.allows(&t("203.0.113.9", "POST", "/")));
    }

    #[test]
    fn refuses_the_hosts_no_entry_can_allow() {
        let a = list(
            &["*.example.com"],
            &["10.0.0.0/8"],
            "[{host: api.test, methods: [POST], paths: ['/v1/*']}]",
            false,
        );
        for host in ["made-up.example.com", "api.test", "10.1.2.3"] {
            assert!(!a.refuses_host(&t(host, "", "")), "{host} may be allowed");
        }
        for host in ["made-up.test", "example.org", "11.1.2.3"] {
            assert!(a.refuses_host(&t(host, "", "")), "{host} never is");
        }
        let warn = list(&["a.test"], &[], "[]", true);
        assert!(
            !warn.refuses_host(&t("b.test", "", "")),
            "warn mode refuses nothing"
        );
    }

    #[tokio::test]
    async fn warn_mode_annotates_and_continues() {
        use crate::pipeline::Dest;
        let a = list(&["a.test"], &[], "[]", true);
        let mut cx = Flow::new(
            Dest {
                host: "b.test".into(),
                ip: None,
                port: 80,
                tls: false,
            },
            "GET".into(),
            "/".into(),
        );
        let mut req = Request::new(crate::body::empty());
        let v = a.on_request(&mut req, &mut cx).await.expect("no error");
        assert!(matches!(v, Verdict::Continue));
        assert_eq!(cx.annotations_mut()["action"], "warn");
    }

    #[test]
    fn large_sets_index() {
        let many: Vec<HostPattern> = (0..100_000)
            .map(|i| format!("host{i}.example.com").parse().expect("p"))
            .collect();
        let a = Allowlist::new(many, vec![], vec![], false);
        assert!(a.allows(&t("host99999.example.com", "GET", "/")));
        assert!(!a.allows(&t("host100000.example.com", "GET", "/")));
    }
}
