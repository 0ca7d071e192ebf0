//! What a config that is not UTF-8 is told: its encoding when it has a
//! byte-order mark of another one (an editor's "Unicode" save on Windows
//! writes UTF-16), or the line and column of the first byte that is not
//! UTF-8 (a Latin-1 or Windows-1252 character pasted in).

use std::str::Utf8Error;

/// Where a config's text stops being UTF-8 and why, for its one error.
#[derive(Debug, PartialEq, Eq)]
pub struct NotUtf8 {
    /// 1-based line and column (in characters) of the first bad byte.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

/// Describes `bytes`, which `std::str::from_utf8` refused with `e`.
pub fn not_utf8(bytes: &[u8], e: &Utf8Error) -> NotUtf8 {
    const SAVE: &str = "save the file as UTF-8";
    let bom = match bytes {
        [0x00, 0x00, 0xfe, 0xff, ..] => Some("UTF-32 (big-endian)"),
        [0xff, 0xfe, 0x00, 0x00, ..] => Some("UTF-32 (little-endian)"),
        [0xff, 0xfe, ..] => Some("UTF-16 (little-endian)"),
        [0xfe, 0xff, ..] => Some("UTF-16 (big-endian)"),
        _ => None,
    };
    if let Some(encoding) = bom {
        return NotUtf8 {
            at: None,
            message: format!(
                "cannot read config: the config is {encoding}, by its byte-order mark, \
                 not UTF-8; {SAVE}"
            ),
        };
    }
    let good = &bytes[..e.valid_up_to()];
    // Up to `valid_up_to` the text is UTF-8, so it has lines and characters.
    let before = std::str::from_utf8(good).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
    let utf16 = bytes.len() >= 4 && bytes[1] == 0 && bytes[3] == 0 && bytes[0] != 0;
    let hint = if utf16 {
        format!("it looks like UTF-16 without a byte-order mark; {SAVE}")
    } else {
        format!("{SAVE} (Latin-1 and Windows-1252 text is not read)")
    };
    NotUtf8 {
        at: Some((line, column)),
        message: format!(
            "cannot read config: the config is not UTF-8: byte 0x{byte:02X} is not valid \
             UTF-8 here; {hint}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(bytes: &[u8]) -> NotUtf8 {
        let e = std::str::from_utf8(bytes).expect_err("not UTF-8");
        not_utf8(bytes, &e)
    }

    #[test]
    fn a_byte_order_mark_names_the_encoding() {
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain("tls: {}\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let n = of(&utf16);
        assert_eq!(n.at, None);
        assert_eq!(
            n.message,
            "cannot read config: the config is UTF-16 (little-endian), by its byte-order mark, \
             not UTF-8; save the file as UTF-8"
        );
        assert!(of(&[0xfe, 0xff, 0, b'a'])
            .message
            .contains("UTF-16 (big-endian)"));
        assert!(of(&[0xff, 0xfe, 0, 0])
            .message
            .contains("UTF-32 (little-endian)"));
    }

    #[test]
    fn a_stray_byte_is_placed_at_its_line_and_column() {
        // "caf\xe9" in Latin-1 on line 3, after a two-byte UTF-8 character on the line.
        let n = of(b"proxy:\n  http_listen: :80\n# \xc3\xa9t\xe9\n");
        assert_eq!(n.at, Some((3, 5)));
        assert!(
            n.message.starts_with(
                "cannot read config: the config is not UTF-8: byte 0xE9 is not valid UTF-8 here; \
                 save the file as UTF-8 (Latin-1"
            ),
            "{}",
            n.message
        );
        assert_eq!(of(b"\xe9").at, Some((1, 1)));
    }

    #[test]
    fn utf16_without_a_mark_is_recognized() {
        let bare: Vec<u8> = "tls: {}\n\u{e9}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        // NUL bytes are UTF-8: the first bad byte is the é's.
        let n = of(&bare);
        assert!(
            n.message.contains("UTF-16 without a byte-order mark"),
            "{}",
            n.message
        );
    }
}
