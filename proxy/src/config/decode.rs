//! The decoding machinery: typed values are built from [`Node`]s while every
//! error is recorded with its position and field path, and decoding goes on
//! past it, so one run reports every problem in the file. A value that is
//! valid but probably not what was meant is recorded as a finding (see
//! `lint`), placed the same way.

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;

use super::error::ConfigError;
use super::lint::Lint;
use super::lookalike;
use super::positions;
use super::yaml::{self, Kind, Node, Number, Pos};

mod misplaced;

/// Marks a value that could not be decoded; its error is already recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failed;

/// The result of decoding one value.
pub(crate) type Res<T> = Result<T, Failed>;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A field path as errors show it: `transforms[1].config.secrets[0]`.
fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Decoding context: the file name, the current field path, and the errors
/// and findings so far.
pub(crate) struct Cx {
    file: String,
    path: Vec<Seg>,
    pub errors: Vec<ConfigError>,
    /// Findings about single values, in the order they were decoded ([`Cx::warn`]).
    pub findings: Vec<Lint>,
    /// Where keys are known: for [`Cx::explain_misplaced`].
    places: misplaced::Places,
}

impl Cx {
    pub fn new(file: &str) -> Cx {
        Cx {
            file: file.to_string(),
            path: Vec::new(),
            errors: Vec::new(),
            findings: Vec::new(),
            places: misplaced::Places::default(),
        }
    }

    /// Records that the mapping at `path` (a top-level section the file may
    /// leave out) takes `fields`, so that a key of it found elsewhere is
    /// said to belong there.
    pub fn known_section(&mut self, path: &str, fields: &[&'static str]) {
        self.places.section(path, fields);
    }

    /// Rewrites each "unknown field" error whose key is a known key of exactly
    /// one nearby mapping (the parent, a sibling, a mapping inside) to say where
    /// it belongs: most often an indentation mistake. Called once, after decoding.
    pub fn explain_misplaced(&mut self) {
        self.places.explain(&mut self.errors);
    }

    /// The config file being decoded, as errors name it.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The current field path, e.g. `transforms[1].config.secrets[0]`.
    pub fn path(&self) -> String {
        render(&self.path)
    }

    /// Records an error at `pos` for the current path.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) -> Failed {
        let path = self.path();
        self.error_at_path(pos, path, message)
    }

    /// Records an error at `pos` for an explicit path.
    pub fn error_at_path(&mut self, pos: Pos, path: String, message: impl Into<String>) -> Failed {
        let (file, line, column) = match pos {
            Pos::File { line, column } => (self.file.clone(), Some(line), Some(column)),
            Pos::Env(var) => (var.to_string(), None, None),
        };
        self.errors.push(ConfigError {
            file,
            line,
            column,
            path,
            message: message.into(),
        });
        Failed
    }

    /// Records a finding at `pos` for the current path: the value is valid
    /// (decoding uses it) but probably not what its author meant.
    pub fn warn(&mut self, pos: Pos, message: impl Into<String>) {
        self.findings.push(Lint {
            location: positions::location(&self.file, pos),
            path: self.path(),
            message: message.into(),
        });
    }

    /// Runs `f` with `key` appended to the path.
    pub fn key<T>(&mut self, key: &str, f: impl FnOnce(&mut Cx) -> T) -> T {
        self.path.push(Seg::Key(key.to_string()));
        let out = f(self);
        self.path.pop();
        out
    }

    /// Runs `f` with `[index]` appended to the path.
    pub fn index<T>(&mut self, index: usize, f: impl FnOnce(&mut Cx) -> T) -> T {
        self.path.push(Seg::Index(index));
        let out = f(self);
        self.path.pop();
        out
    }

    /// Checks that `node` is a mapping (null counts as empty) whose keys are all in
    /// `fields`; records unknown and duplicate keys and goes on without them.
    pub fn map<'n>(&mut self, node: &'n Node, fields: &[&'static str]) -> Res<MapDe<'n>> {
        let entries: &[(Node, Node)] = match &node.kind {
            Kind::Map(entries) => entries,
            _ if node.is_null() => &[],
            _ => {
                let hint = glued_key(node).map_or(String::new(), |(k, v)| {
                    format!(" (a key needs a space after its ':': write '{k}: {v}')")
                });
                return Err(self.error(
                    node.pos,
                    format!("expected a mapping, found {}{hint}", node.type_name()),
                ));
            }
        };
        self.places.mapping(&self.path, fields);
        // A hash set: a mapping of many (unknown) keys must not cost their square.
        let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
        let mut known = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(name) = k.scalar() else {
                self.error(k.pos, "keys must be plain strings");
                continue;
            };
            if !seen.insert(name) {
                self.error(k.pos, format!("duplicate field '{name}'"));
                continue;
            }
            if fields.contains(&name) {
                known.push((name, k, v));
            } else {
                let index = self.errors.len();
                self.error(k.pos, unknown("field", name, fields));
                self.places
                    .unknown(&self.path, name, lookalike::odd(name), index);
            }
        }
        Ok(MapDe {
            pos: node.pos,
            entries: known,
        })
    }
}

/// A plain scalar that is a key glued to its value (`mode:mitm`,
/// `http_listen:":80"`): YAML reads it as one string, where a mapping was
/// meant. Not a URL (`http://x`) or an address (`[::1]:80`, `:80`).
fn glued_key(node: &Node) -> Option<(&str, &str)> {
    let Kind::Scalar { text, plain: true } = &node.kind else {
        return None;
    };
    let (key, value) = text.split_once(':')?;
    let is_key = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    (is_key && !value.is_empty() && !value.starts_with("//")).then_some((key, value))
}

/// "unknown field 'x', did you mean 'y'?" or the list of valid names when nothing is close.
/// A name written with lookalike or invisible characters is shown with them escaped and
/// named (`unknown field '\u{430}llowed': U+0430 CYRILLIC SMALL LETTER A looks like 'a';
/// did you mean 'allowed'?`).
pub(crate) fn unknown(what: &str, name: &str, valid: &[&str]) -> String {
    if let Some(m) = odd_name(what, name, valid) {
        return format!("unknown {m}");
    }
    match suggest(name, valid) {
        Some(s) => format!("unknown {what} '{name}', did you mean '{s}'?"),
        None => format!(
            "unknown {what} '{name}' (expected one of: {})",
            valid.join(", ")
        ),
    }
}

/// "{what} '\u{430}llowed': U+0430 CYRILLIC SMALL LETTER A looks like 'a'; did you mean
/// 'allowed'?" for a `name` with lookalike or invisible characters ([`lookalike::odd`]),
/// with the valid name it reads as, or the closest one; `None` for any other name.
pub(crate) fn odd_name(what: &str, name: &str, valid: &[&str]) -> Option<String> {
    let odd = lookalike::odd(name)?;
    let (shown, note) = (&odd.shown, &odd.note);
    let meant = lookalike::resembles(name, &odd, valid).or_else(|| suggest(&odd.folded, valid));
    Some(match meant {
        Some(s) => format!("{what} '{shown}': {note}; did you mean '{s}'?"),
        None => format!(
            "{what} '{shown}': {note} (expected one of: {})",
            valid.join(", ")
        ),
    })
}

/// The valid name closest to `name`, when it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    valid
        .iter()
        .map(|v| (strsim::damerau_levenshtein(&lower, v), *v))
        .filter(|(d, v)| *d <= (v.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
        .or_else(|| {
            valid
                .iter()
                .map(|v| (strsim::jaro_winkler(&lower, v), *v))
                .filter(|(s, _)| *s >= 0.88)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, v)| v)
        })
}

/// The known fields of one mapping, for field-by-field decoding.
pub(crate) struct MapDe<'n> {
    /// Position of the mapping, for "missing field" errors.
    pub pos: Pos,
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> MapDe<'n> {
    /// The value of `key`, if present and not null.
    pub fn node(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
            .filter(|v| !v.is_null())
    }

    /// The position of `key` itself, if present.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| k.pos)
    }

    /// True when `key` is present with a non-null value.
    pub fn has(&self, key: &str) -> bool {
        self.node(key).is_some()
    }

    /// A required field.
    pub fn req<T: Decode>(&self, cx: &mut Cx, key: &str) -> Res<T> {
        self.req_with(cx, key, T::decode)
    }

    /// A required field decoded by `f`.
    pub fn req_with<T>(
        &self,
        cx: &mut Cx,
        key: &str,
        f: impl FnOnce(&Node, &mut Cx) -> Res<T>,
    ) -> Res<T> {
        match self.node(key) {
            Some(n) => cx.key(key, |cx| f(n, cx)),
            None => Err(cx.error(self.pos, format!("missing required field '{key}'"))),
        }
    }

    /// An optional field.
    pub fn opt<T: Decode>(&self, cx: &mut Cx, key: &str) -> Res<Option<T>> {
        self.opt_with(cx, key, T::decode)
    }

    /// An optional field decoded by `f`.
    pub fn opt_with<T>(
        &self,
        cx: &mut Cx,
        key: &str,
        f: impl FnOnce(&Node, &mut Cx) -> Res<T>,
    ) -> Res<Option<T>> {
        self.node(key)
            .map(|n| cx.key(key, |cx| f(n, cx)))
            .transpose()
    }

    /// An optional field with a default.
    pub fn or<T: Decode>(&self, cx: &mut Cx, key: &str, default: T) -> Res<T> {
        Ok(self.opt(cx, key)?.unwrap_or(default))
    }

    /// An optional field defaulting to `T::default()`.
    pub fn or_default<T: Decode + Default>(&self, cx: &mut Cx, key: &str) -> Res<T> {
        Ok(self.opt(cx, key)?.unwrap_or_default())
    }

    /// A required list that must not be empty ("at least one ... is required").
    pub fn non_empty<T: Decode>(&self, cx: &mut Cx, key: &str, what: &str) -> Res<Vec<T>> {
        let list: Vec<T> = self.req(cx, key)?;
        if list.is_empty() {
            let pos = self.node(key).map_or(self.pos, |n| n.pos);
            return Err(cx.key(key, |cx| {
                cx.error(pos, format!("at least one {what} is required"))
            }));
        }
        Ok(list)
    }
}

/// A type that can be decoded from a node.
pub(crate) trait Decode: Sized {
    /// Decodes `node`, recording errors in `cx`.
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self>;
}

/// The text of a scalar node; lists and mappings are refused.
pub(crate) fn scalar<'n>(node: &'n Node, cx: &mut Cx, expected: &str) -> Res<&'n str> {
    match &node.kind {
        Kind::Scalar { text, .. } if !node.is_null() => Ok(text),
        _ => Err(cx.error(
            node.pos,
            format!("expected {expected}, found {}", node.type_name()),
        )),
    }
}

/// Decodes a string and parses it with `FromStr`, reporting the parse error at the node.
pub(crate) fn parse_str<T>(node: &Node, cx: &mut Cx) -> Res<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text = scalar(node, cx, "a string")?;
    text.parse::<T>()
        .map_err(|e| cx.error(node.pos, e.to_string()))
}

/// Decodes a string and checks it with `f`.
pub(crate) fn str_with<T>(
    node: &Node,
    cx: &mut Cx,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Res<T> {
    let text = scalar(node, cx, "a string")?;
    f(text).map_err(|e| cx.error(node.pos, e))
}

/// An optional environment variable name (see [`env_var_name`]) with a default.
pub(crate) fn env_or(m: &MapDe<'_>, cx: &mut Cx, key: &str, default: &str) -> Res<String> {
    Ok(m.opt_with(cx, key, env_var_name)?
        .unwrap_or_else(|| default.to_string()))
}

/// The name of an environment variable: letters, digits and `_` (the names
/// systemd's `Environment=`, a shell and container env files can set). Anything else is most likely a
/// value pasted where its name goes: refused without echoing it, so a
/// credential put there by mistake does not reach a terminal or a log.
pub(crate) fn env_var_name(node: &Node, cx: &mut Cx) -> Res<String> {
    str_with(node, cx, |s| check_env_var_name(s).map(str::to_string))
}

/// See [`env_var_name`].
fn check_env_var_name(s: &str) -> Result<&str, String> {
    // A leading digit is allowed: `env` sets such a name, and yaml.v3 reads
    // `var: 1_000` as the string it is.
    let portable =
        |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if s.is_empty() {
        return Err("environment variable name must not be empty".into());
    }
    if portable(s) {
        return Ok(s);
    }
    let bare = s
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .or_else(|| s.strip_prefix('$'));
    match bare {
        Some(n) if portable(n) => Err(format!(
            "write the variable's name without '$': {n} (the config names the variable; \
             the proxy reads it)"
        )),
        _ => Err(format!(
            "this is not an environment variable name (letters, digits and '_'); the {} \
             characters written are not shown, in case they are the value itself",
            s.chars().count()
        )),
    }
}

/// Refuses what is plainly not a path but a file's contents pasted in its
/// place (PEM key material, a JSON key file): without echoing it.
fn check_path(s: &str) -> Result<PathBuf, String> {
    let t = s.trim_start();
    let what = if t.starts_with("-----BEGIN") {
        Some("PEM text (a key or a certificate)")
    } else if t.starts_with('{') {
        Some("JSON (a key file's contents?)")
    } else if s.contains(['\n', '\r']) {
        Some("several lines of text")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(format!(
            "this is {what}, not a file path; write it to a file and give that file's path \
             (the {} characters written are not shown)",
            s.chars().count()
        ));
    }
    if s.is_empty() {
        return Err("path must not be empty".into());
    }
    if s.len() > 4096 {
        return Err(format!(
            "path is {} bytes long; a path is at most 4096 (PATH_MAX)",
            s.len()
        ));
    }
    Ok(PathBuf::from(s))
}

impl Decode for String {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        scalar(node, cx, "a string").map(str::to_string)
    }
}

impl Decode for PathBuf {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        str_with(node, cx, check_path)
    }
}

impl Decode for bool {
    /// `true`/`false` (plain), and the YAML 1.1 spellings yaml.v3 takes into
    /// a bool field, quoted or not: `yes`/`no`, `on`/`off`, `y`/`n`.
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        match &node.kind {
            Kind::Scalar { text, plain } => match text.as_str() {
                "true" | "True" | "TRUE" if *plain => return Ok(true),
                "false" | "False" | "FALSE" if *plain => return Ok(false),
                other => {
                    if let Some(b) = yaml::yaml11_bool(other) {
                        return Ok(b);
                    }
                }
            },
            Kind::Seq(_) | Kind::Map(_) => {}
        }
        Err(cx.error(
            node.pos,
            format!(
                "expected a boolean (true or false), found {}",
                describe(node)
            ),
        ))
    }
}

/// Describes a node for type errors: short plain scalars are quoted, the rest named by type.
fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Scalar { text, plain: true } if !node.is_null() && text.len() <= 40 => {
            format!("'{text}'")
        }
        _ => node.type_name().to_string(),
    }
}

/// Decodes an integer in a range. A plain scalar in the file is read as
/// yaml.v3 reads one into an integer field ([`yaml::number`]): `0x1F`,
/// `0o17`, `0b101`, `1_000`, `+80`, and a float that is a whole number
/// (`1e3`). A fraction is refused where yaml.v3 would truncate it. An
/// `IRON_*` variable's value is a plain decimal, as before.
pub(crate) fn int(node: &Node, cx: &mut Cx, min: i64, max: i64) -> Res<i64> {
    let parsed = match (&node.kind, node.pos) {
        (Kind::Scalar { text, plain: true }, Pos::Env(_)) => {
            text.parse::<i64>().map(Number::Int).map_err(|_| "")
        }
        (Kind::Scalar { text, plain: true }, Pos::File { .. }) if !node.is_null() => {
            yaml::number(text)
        }
        _ => Err(""),
    };
    let out_of_range = |cx: &mut Cx, v: &dyn std::fmt::Display| {
        cx.error(node.pos, format!("{v} is out of range ({min}..={max})"))
    };
    match parsed {
        Ok(Number::Int(v)) if (min..=max).contains(&v) => Ok(v),
        Ok(Number::Int(v)) => Err(out_of_range(cx, &v)),
        // Whole: `as` is exact below 2^53 and saturates above, where the range check already failed.
        Ok(Number::Float(f)) if f.is_finite() && f.fract() == 0.0 => {
            if f < min as f64 || f > max as f64 {
                Err(out_of_range(cx, &describe_text(node)))
            } else {
                Ok(f as i64)
            }
        }
        Ok(Number::Float(_)) => Err(cx.error(
            node.pos,
            format!(
                "expected an integer, found {} (a fraction: yaml.v3 would drop it silently; \
                 write a whole number)",
                describe(node)
            ),
        )),
        Err(why) => Err(cx.error(
            node.pos,
            format!("expected an integer, found {}{why}", describe(node)),
        )),
    }
}

/// The scalar's text, for "out of range" messages about a number written as a float.
fn describe_text(node: &Node) -> String {
    node.scalar().unwrap_or_default().to_string()
}

macro_rules! decode_uint {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
                let max = i64::try_from(<$t>::MAX).unwrap_or(i64::MAX);
                int(node, cx, 0, max).map(|v| <$t>::try_from(v).unwrap_or(<$t>::MAX))
            }
        }
    )*};
}
decode_uint!(u16, u32, u64, usize);

impl<T: Decode> Decode for Vec<T> {
    /// Every element is decoded, so each bad element reports its own error.
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let items: &[Node] = match &node.kind {
            Kind::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                // `-name: x` is a key named "-name", not a list item.
                let dash = match &node.kind {
                    Kind::Map(entries) => entries
                        .first()
                        .and_then(|(k, _)| k.scalar())
                        .filter(|k| k.len() > 1 && k.starts_with('-')),
                    _ => None,
                };
                let hint = dash.map_or(String::new(), |k| {
                    format!(
                        " (a list item needs a space after its '-': write '- {}')",
                        &k[1..]
                    )
                });
                return Err(cx.error(
                    node.pos,
                    format!("expected a list, found {}{hint}", node.type_name()),
                ));
            }
        };
        let mut out = Vec::with_capacity(items.len());
        let mut failed = false;
        for (i, item) in items.iter().enumerate() {
            match cx.index(i, |cx| T::decode(item, cx)) {
                Ok(v) => out.push(v),
                Err(Failed) => failed = true,
            }
        }
        if failed {
            Err(Failed)
        } else {
            Ok(out)
        }
    }
}

/// A mapping with user-chosen keys (credential names, header names), in document order.
pub(crate) fn entries<T: Decode>(node: &Node, cx: &mut Cx) -> Res<Vec<(String, T)>> {
    let list: &[(Node, Node)] = match &node.kind {
        Kind::Map(list) => list,
        _ if node.is_null() => &[],
        _ => {
            return Err(cx.error(
                node.pos,
                format!("expected a mapping, found {}", node.type_name()),
            ))
        }
    };
    let mut out: Vec<(String, T)> = Vec::with_capacity(list.len());
    // A hash set: 50,000 credentials must not cost 50,000 squared comparisons.
    let mut seen: HashSet<&str> = HashSet::with_capacity(list.len());
    let mut failed = false;
    for (k, v) in list {
        let Ok(name) = scalar(k, cx, "a string key") else {
            failed = true;
            continue;
        };
        // Only decoded entries count, so a key repeated after a bad first one
        // is decoded (and reported) in its own right.
        if seen.contains(name) {
            cx.error(k.pos, format!("duplicate key '{name}'"));
            failed = true;
            continue;
        }
        match cx.key(name, |cx| T::decode(v, cx)) {
            Ok(value) => {
                seen.insert(name);
                out.push((name.to_string(), value));
            }
            Err(Failed) => failed = true,
        }
    }
    if failed {
        Err(Failed)
    } else {
        Ok(out)
    }
}

/// Decodes one of a fixed set of names, listing the valid ones (with a suggestion) otherwise.
pub(crate) fn one_of<T: Copy>(node: &Node, cx: &mut Cx, what: &str, table: &[(&str, T)]) -> Res<T> {
    one_of_by(node, cx, what, table, |name, text| name == text)
}

/// [`one_of`] ignoring ASCII case (`DEBUG`, `Info`), for values Go reads that
/// way (`slog.Level.UnmarshalText`) and DNS record types (`a`, `CNAME`).
pub(crate) fn one_of_any_case<T: Copy>(
    node: &Node,
    cx: &mut Cx,
    what: &str,
    table: &[(&str, T)],
) -> Res<T> {
    one_of_by(node, cx, what, table, |name, text| {
        name.eq_ignore_ascii_case(text)
    })
}

fn one_of_by<T: Copy>(
    node: &Node,
    cx: &mut Cx,
    what: &str,
    table: &[(&str, T)],
    same: impl Fn(&str, &str) -> bool,
) -> Res<T> {
    let text = scalar(node, cx, what)?;
    if let Some((_, v)) = table.iter().find(|(name, _)| same(name, text)) {
        return Ok(*v);
    }
    let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    if let Some(m) = odd_name(what, text, &names) {
        return Err(cx.error(node.pos, format!("invalid {m}")));
    }
    let msg = match suggest(text, &names) {
        Some(s) => format!(
            "invalid {what} '{text}', did you mean '{s}'? (expected one of: {})",
            names.join(", ")
        ),
        None => format!(
            "invalid {what} '{text}' (expected one of: {})",
            names.join(", ")
        ),
    };
    Err(cx.error(node.pos, msg))
}
