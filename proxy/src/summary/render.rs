//! Markdown rendering of a [`Summary`], safe for untrusted hosts and paths and
//! bounded in size.

use super::{Counts, HostStats, Summary};

/// Characters shown as-is; everything else is percent-encoded.
fn safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~/%!$'()*+,;=:@?&[]".contains(c)
}

/// Percent-encodes anything outside [`safe`] and wraps the result in a code span.
pub(super) fn code(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('`');
    for c in s.chars() {
        if safe(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out.push('`');
    out
}

/// A DNS name or wildcard fit for an egress-rules file.
pub(super) fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'*'
        })
        && !h.starts_with('.')
        && !h.ends_with('.')
}

fn row(name: &str, c: &Counts) -> String {
    format!(
        "| {} | {} | {} | {} | {} |\n",
        name, c.total, c.allowed, c.warned, c.denied
    )
}

const HEADER: &str = "| HOST | TOTAL | ALLOWED | WARNED | DENIED |\n|---|---:|---:|---:|---:|\n";

/// Renders the table, and the per-path details when asked for, within `budget` bytes.
pub(super) fn markdown(s: &Summary, hosts: &[(&String, &HostStats)], budget: usize) -> String {
    let mut totals = Counts::default();
    for (_, h) in hosts {
        totals.total += h.counts.total;
        totals.allowed += h.counts.allowed;
        totals.warned += h.counts.warned;
        totals.denied += h.counts.denied;
    }
    let mut out = String::from("## iron-proxy egress summary\n\n");
    if s.oversized > 0 {
        out.push_str(&format!(
            "_{} line(s) of the log were longer than {} MiB and were skipped unparsed: any \
             requests they recorded are not counted._\n\n",
            s.oversized,
            super::MAX_LINE_BYTES >> 20
        ));
    }
    if s.records == 0 {
        out.push_str("No requests were recorded.\n\n");
        return truncate_hard(out, budget);
    }
    out.push_str(&format!(
        "{} request(s) to {} host(s): {} allowed, {} warned, {} denied.\n\n",
        totals.total,
        hosts.len(),
        totals.allowed,
        totals.warned,
        totals.denied
    ));
    if totals.warned > 0 {
        out.push_str(
            "Warned requests went through only because the allowlist is in warn mode; \
             add the hosts you trust to your egress rules before switching to enforce mode.\n\n",
        );
    }
    // Reserve room for the closing notes so truncation never breaks the budget.
    let reserve = 256;
    let limit = budget.saturating_sub(reserve);
    out.push_str(HEADER);
    let mut shown = 0;
    for (host, h) in hosts {
        let r = row(&code(host), &h.counts);
        if out.len() + r.len() > limit {
            break;
        }
        out.push_str(&r);
        shown += 1;
    }
    if shown < hosts.len() {
        out.push_str(&format!(
            "\n_{} more host(s) not shown: the step summary is limited to 1 MiB._\n",
            hosts.len() - shown
        ));
        return truncate_hard(out, budget);
    }
    let failed = totals.total - totals.allowed - totals.warned - totals.denied;
    if failed > 0 {
        out.push_str(&format!(
            "\n{failed} request(s) failed upstream (DNS, connect, TLS or timeout) and are counted in TOTAL only.\n"
        ));
    }
    if !s.full_paths {
        out.push_str(
            "\n_Request paths are not listed: set `show-full-paths: true` (`iron-proxy summary \
             -show-full-paths`) to add them in a collapsible section._\n",
        );
        return truncate_hard(out, budget);
    }
    let mut details = String::from("\n<details><summary>Requests by path</summary>\n\n");
    details.push_str(
        "| HOST | PATH | TOTAL | ALLOWED | WARNED | DENIED |\n|---|---|---:|---:|---:|---:|\n",
    );
    let close = "\n</details>\n\n";
    let mut omitted = 0usize;
    for (host, h) in hosts {
        for (path, c) in &h.paths {
            let r = format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                code(host),
                code(path),
                c.total,
                c.allowed,
                c.warned,
                c.denied
            );
            if omitted > 0 || out.len() + details.len() + r.len() + close.len() > limit {
                omitted += 1;
                continue;
            }
            details.push_str(&r);
        }
    }
    if omitted > 0 {
        details.push_str(&format!(
            "\n_{omitted} more path row(s) not shown: the step summary is limited to 1 MiB._\n"
        ));
    }
    details.push_str(close);
    out.push_str(&details);
    truncate_hard(out, budget)
}

/// Last resort for absurdly small budgets: cut at a char boundary.
fn truncate_hard(mut s: String, budget: usize) -> String {
    if s.len() <= budget {
        return s;
    }
    let mut cut = budget;
    while cut > 0 && !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}
