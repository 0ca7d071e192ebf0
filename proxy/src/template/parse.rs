//! The parser for the inside of one `{{ ... }}` action: a pipeline of
//! commands, each a single operand or a function call.

use super::{Command, Operand, FUNCS};

type ParseErr = (usize, String);

/// Parses the inside of one action into a pipeline.
pub(super) fn parse_action(inner: &str) -> Result<Vec<Command>, ParseErr> {
    let mut cmds = Vec::new();
    for (stage, (start, text)) in split_pipes(inner)?.into_iter().enumerate() {
        let ops = tokenize(text).map_err(|(c, m)| (start + c, m))?;
        let Some((first_col, first)) = ops.first() else {
            return Err((start, "missing value in action".into()));
        };
        let cmd = match first {
            Tok::Ident(name) => {
                let func = FUNCS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| (start + first_col, unknown(name)))?;
                let args: Vec<Operand> = ops[1..]
                    .iter()
                    .map(|(c, t)| match t {
                        Tok::Op(op) => Ok(op.clone()),
                        Tok::Ident(n) => {
                            Err((start + c, format!("function {n:?} cannot be an argument")))
                        }
                    })
                    .collect::<Result<_, _>>()?;
                if args.is_empty() && stage == 0 {
                    return Err((
                        start + first_col,
                        format!("{name} needs at least one argument"),
                    ));
                }
                Command::Call(func, args)
            }
            Tok::Op(op) => {
                if stage > 0 {
                    return Err((start + first_col, "only a function can follow '|'".into()));
                }
                if let Some((c, _)) = ops.get(1) {
                    return Err((
                        start + c,
                        "unexpected operand after a value (call a function to combine values)"
                            .into(),
                    ));
                }
                Command::Operand(op.clone())
            }
        };
        cmds.push(cmd);
    }
    Ok(cmds)
}

/// Splits on `|` outside string literals, keeping each stage's start column.
fn split_pipes(inner: &str) -> Result<Vec<(usize, &str)>, ParseErr> {
    let mut stages = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == '|' => {
                stages.push((inner[..start].chars().count(), &inner[start..i]));
                start = i + 1;
            }
            None => {}
        }
    }
    if quote.is_some() {
        return Err((inner.chars().count(), "unterminated string".into()));
    }
    stages.push((inner[..start].chars().count(), &inner[start..]));
    Ok(stages)
}

enum Tok {
    Ident(String),
    Op(Operand),
}

/// Splits one pipeline stage into operands, each with its column (0-based, chars).
fn tokenize(text: &str) -> Result<Vec<(usize, Tok)>, ParseErr> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
        } else if c == '.' {
            let mut path = Vec::new();
            while i < chars.len() && chars[i] == '.' {
                let s = i + 1;
                i = s;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                if i == s {
                    return Err((
                        start,
                        "'.' must be followed by a field name such as .Value".into(),
                    ));
                }
                path.push(chars[s..i].iter().collect());
            }
            out.push((start, Tok::Op(Operand::Field(path))));
        } else if c == '"' || c == '`' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err((start, "unterminated string".into()));
                };
                i += 1;
                match ch {
                    _ if ch == c => break,
                    '\\' if c == '"' => {
                        let esc = chars
                            .get(i)
                            .copied()
                            .ok_or((start, "unterminated string".to_string()))?;
                        i += 1;
                        s.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            '\\' => '\\',
                            '"' => '"',
                            _ => return Err((i - 2, format!("unsupported escape \\{esc}"))),
                        });
                    }
                    _ => s.push(ch),
                }
            }
            out.push((start, Tok::Op(Operand::Literal(s))));
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
        } else {
            return Err((start, format!("unsupported syntax at {c:?}")));
        }
    }
    Ok(out)
}

/// Go's template keywords and built-in functions: not in the subset these
/// fields take (see the module documentation), which is said as such.
const GO_ONLY: [&str; 29] = [
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
    "and", "or", "not", "call", "html", "index", "slice", "js", "len", "print", "printf",
    "println", "urlquery", "eq", "ne", "lt", "le", "gt", "ge",
];

/// The error for an identifier in function position that is not ours.
fn unknown(name: &str) -> String {
    if GO_ONLY.contains(&name) {
        format!(
            "{name:?} is Go template syntax these templates do not support (they take fields \
             such as .Value, string literals, pipelines and the function base64)"
        )
    } else {
        format!("unknown function {name:?} (available: base64)")
    }
}
