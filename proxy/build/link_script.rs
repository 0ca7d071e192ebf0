//! The linker script that places the functions of `link-order.txt` first.
//!
//! The list names functions by their v0 mangled names, and each name carries
//! the hash of every crate it mentions (`Cs<hash>_`). Cargo derives those
//! hashes from the crate's metadata, which folds in every dependency's, so a
//! new dependency version or feature renames every function of the proxy
//! and of the crates above the change: lld's `--symbol-ordering-file`, which
//! matches names exactly, then orders almost nothing (docs/benchmarks.md,
//! round 40: 1,124 of 3,066 functions lost to one feature flag, peak RSS
//! +40%). The script matches section names instead, with each crate hash and
//! each back-reference (whose offsets move when a hash changes length) as a
//! wildcard, so the order survives such a change; only functions that were
//! really renamed, added or inlined away fall out.
//!
//! Shared by `proxy/build.rs`, which writes the script for release links,
//! and by `xtask` (`#[path]`), which uses [`key`] to tell how well a list
//! still fits a binary and runs the tests below.

/// The name of the output section the listed functions go to, placed just
/// before `.text`.
pub const OUTPUT_SECTION: &str = ".text.hot";

/// `name` with each crate hash (`Cs<base62>_`) and back-reference
/// (`B<base62>_`) of a v0 mangled name replaced by `*`; other names are
/// returned as they are. Two builds of the same function, before and after
/// a dependency change, have the same key.
///
/// The scan does not parse the mangling, so it may also loosen an
/// identifier that happens to contain `Cs` or `B`, a digit or letter and
/// `_`: the key then matches a little more, never less.
pub fn key(name: &str) -> String {
    if !name.starts_with("_R") {
        return name.to_string();
    }
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < bytes.len() {
        let marker = match (bytes[i], bytes.get(i + 1)) {
            (b'C', Some(b's')) => Some(2),
            (b'B', _) => Some(1),
            _ => None,
        };
        if let Some(len) = marker {
            let digits = bytes[i + len..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            let end = i + len + digits;
            // A crate hash has at least one digit; a back-reference may
            // have none (`B_`, offset 0).
            if bytes.get(end) == Some(&b'_') && (digits > 0 || len == 1) {
                out.push_str(&name[i..i + len]);
                out.push('*');
                out.push('_');
                i = end + 1;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// Whether `name` can be a glob pattern in a linker script as it is: lld
/// reads `*`, `?`, `[`, `]` and `\` specially, and whitespace, quotes,
/// parentheses and `;` would end the pattern. Mangled Rust and C names have
/// none of them; a line that does is skipped rather than written.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'))
}

/// The linker script for a link-order list (`#` lines are comments): one
/// output section, [`OUTPUT_SECTION`], inserted before `.text`, holding the
/// listed functions in the list's order. Each function is an input section
/// description of its own, so that lld keeps the order: `.text.<key>` and
/// `.text.unlikely.<key>` (LLVM's prefix for cold functions). Functions that
/// are not in a section of their own (assembly in a shared `.text`) match
/// nothing here; `--symbol-ordering-file` puts them first in `.text`.
///
/// Returns the script and how many names it holds.
pub fn script(list: &str) -> (String, usize) {
    let mut body = String::new();
    let mut count = 0;
    for line in list.lines().map(str::trim) {
        if line.starts_with('#') || !plain(line) {
            continue;
        }
        let k = key(line);
        body.push_str(&format!("    *(.text.{k} .text.unlikely.{k})\n"));
        count += 1;
    }
    let script = format!(
        "/* Written by proxy/build.rs from proxy/link-order.txt. */\n\
         SECTIONS\n{{\n  {OUTPUT_SECTION} :\n  {{\n{body}  }}\n}}\nINSERT BEFORE .text;\n"
    );
    (script, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_hashes_and_back_references_become_wildcards() {
        let before = "_RNvMs0_NtNtCsfux49NVHGxw_10iron_proxy8exchange5PhaseNtB5_4Step3run";
        let after = "_RNvMs0_NtNtCs2SUNZmhw5pw_10iron_proxy8exchange5PhaseNtB6_4Step3run";
        assert_eq!(
            key(before),
            "_RNvMs0_NtNtCs*_10iron_proxy8exchange5PhaseNtB*_4Step3run"
        );
        assert_eq!(key(before), key(after));
        // Another function of the same crate keeps its own key.
        let other = "_RNvMs0_NtNtCsfux49NVHGxw_10iron_proxy8exchange5PhaseNtB5_4Step4stop";
        assert_ne!(key(before), key(other));
    }

    #[test]
    fn an_offset_zero_back_reference_and_generic_instances_are_covered() {
        let a = "_RINvNtCsgEmfK2I1SDS_4core3ptr13drop_in_placeNtCs11iyf2rdVjh_10iron_proxy3FooEB_";
        let b = "_RINvNtCsgEmfK2I1SDS_4core3ptr13drop_in_placeNtCsAbCdEfGhIj_10iron_proxy3FooEB9_";
        assert_eq!(key(a), key(b));
        assert_eq!(
            key(a),
            "_RINvNtCs*_4core3ptr13drop_in_placeNtCs*_10iron_proxy3FooEB*_"
        );
    }

    #[test]
    fn other_names_are_kept_as_they_are() {
        assert_eq!(key("aws_lc_0_47_0_X25519"), "aws_lc_0_47_0_X25519");
        assert_eq!(key("ecdsa_sign_impl.part.0"), "ecdsa_sign_impl.part.0");
        // `Cs_` with no hash is not a crate root.
        assert_eq!(key("_RNvCs_3foo"), "_RNvCs_3foo");
    }

    #[test]
    fn the_script_keeps_the_order_and_skips_comments_and_odd_lines() {
        let list = "# heading\n_RNvCsabc_3foo3bar\n\naws_lc_0_47_0_X25519\n# Then\nbad name\nx*y\n";
        let (script, count) = script(list);
        assert_eq!(count, 2);
        let foo = script.find("*(.text._RNvCs*_3foo3bar .text.unlikely._RNvCs*_3foo3bar)");
        let aws = script.find("*(.text.aws_lc_0_47_0_X25519 .text.unlikely.aws_lc_0_47_0_X25519)");
        assert!(foo.is_some() && aws.is_some() && foo < aws, "{script}");
        assert!(
            !script.contains("bad") && !script.contains("x*y"),
            "{script}"
        );
        assert!(script.contains(".text.hot :") && script.ends_with("INSERT BEFORE .text;\n"));
    }
}
