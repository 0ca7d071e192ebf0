//! Paths as systemd reads them in the unit and drop-in `init` writes
//! (systemd.syntax(7), systemd.unit(5) "Specifiers", systemd.service(5)
//! "Command lines"): `%` starts a specifier everywhere and is written `%%`;
//! in a command line `$` starts a variable (`$$`), words are split at
//! whitespace and a word may be double-quoted, with C escapes inside.
//! A control character (a newline would end the setting and start another)
//! cannot be written at all, so such a path is refused.

use std::path::Path;

use super::InitError;

/// `path` as text that may go into a unit file; `what` names it in the
/// error (`-config-dir`, `the binary`).
pub fn unit_path<'a>(path: &'a Path, what: &str) -> Result<&'a str, InitError> {
    let refuse = |why: &str| {
        InitError::Usage(format!(
            "{what} {path:?}: {why}, which a systemd unit cannot hold; choose another directory"
        ))
    };
    let s = path.to_str().ok_or_else(|| refuse("not UTF-8"))?;
    if s.chars().any(char::is_control) {
        return Err(refuse(
            "it holds a control character (a newline, a tab, ...)",
        ));
    }
    Ok(s)
}

/// A value systemd takes whole, with specifiers expanded (`EnvironmentFile=`,
/// a comment-free single path): `%` doubled.
pub fn value(s: &str) -> String {
    s.replace('%', "%%")
}

/// One word of a command line (`ExecStart=`): `%` and `$` doubled, and
/// double-quoted with `\` and `"` escaped when it holds whitespace, a
/// quote, a backslash or a `;` (which alone separates commands).
pub fn exec_word(s: &str) -> String {
    let s = value(s).replace('$', "$$");
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        return s;
    }
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_values_are_escaped_as_systemd_reads_them() {
        assert_eq!(exec_word("/usr/bin/iron-proxy"), "/usr/bin/iron-proxy");
        assert_eq!(exec_word("/srv/a b/proxy.yaml"), "\"/srv/a b/proxy.yaml\"");
        assert_eq!(exec_word("/srv/100%/proxy.yaml"), "/srv/100%%/proxy.yaml");
        assert_eq!(exec_word("/srv/$HOME/p"), "/srv/$$HOME/p");
        assert_eq!(
            exec_word("/srv/it's \"x\" \\ 5%/p"),
            "\"/srv/it's \\\"x\\\" \\\\ 5%%/p\""
        );
        assert_eq!(exec_word(";"), "\";\"");
        assert_eq!(value("/srv/a b %h/x.env"), "/srv/a b %%h/x.env");
    }

    #[test]
    fn a_path_a_unit_cannot_hold_is_refused_by_name() {
        assert_eq!(
            unit_path(Path::new("/srv/a b%"), "-config-dir").expect("fine"),
            "/srv/a b%"
        );
        for bad in ["/srv/a\nExecStartPre=/bin/evil", "/srv/a\tb", "/srv/a\rb"] {
            let err = unit_path(Path::new(bad), "-config-dir").expect_err(bad);
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "-config-dir {bad:?}: it holds a control character"
                )),
                "{msg}"
            );
        }
        use std::os::unix::ffi::OsStrExt;
        let latin1 = Path::new(std::ffi::OsStr::from_bytes(b"/srv/caf\xe9"));
        let msg = unit_path(latin1, "-config-dir")
            .expect_err("latin-1")
            .to_string();
        assert!(msg.contains("not UTF-8"), "{msg}");
    }
}
