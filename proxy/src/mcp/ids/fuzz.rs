//! [`correlates`] against the real readers it over-approximates: Python's
//! `int(s)` (the Python SDK's id normalisation) and JavaScript's
//! `Number(s)` (the TypeScript SDK's answer lookup), run by `python3` and
//! `node` over a few thousand id strings made of the characters that
//! matter (digits of several scripts, signs, `_`, radix prefixes,
//! exponents, whitespace of every kind, `Infinity`). Every string either
//! reads as a number must correlate with a request of that number: an
//! answer the filter does not recognise would reach the client unfiltered.

use std::io::Write as _;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};

use super::correlates;

/// One reader's value for each of `ids`, one JSON line each on stdin and stdout.
fn read_by(program: &str, args: &[&str], ids: &[String]) -> Vec<Value> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} (a test tool: scripts/setup-test-env.sh): {e}"));
    let input: String = ids
        .iter()
        .map(|s| format!("{}\n", Value::from(s.as_str())))
        .collect();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write ids");
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(values.len(), ids.len(), "{program}: one line per id");
    values
}

const PYTHON: &str = r#"
import json, sys
for line in sys.stdin:
    try:
        print(json.dumps(str(int(json.loads(line)))))
    except ValueError:
        print("null")
"#;

const NODE: &str = r#"
const lines = require("fs").readFileSync(0, "utf8").split("\n").filter((l) => l.length > 0);
for (const l of lines) {
  const n = Number(JSON.parse(l));
  console.log(Number.isFinite(n) ? JSON.stringify(n) : "null");
}
"#;

fn id_string() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "0",
        "1",
        "7",
        "9",
        "10",
        "\u{661}",
        "\u{ff11}",
        "\u{1d7cf}",
        "\u{b2}",
        "+",
        "-",
        "_",
        ".",
        "e",
        "E",
        "x",
        "X",
        "o",
        "O",
        "b",
        "B",
        "a",
        "f",
        "0x",
        "0o",
        "0b",
        " ",
        "\t",
        "\n",
        "\r",
        "\u{b}",
        "\u{c}",
        "\u{1c}",
        "\u{1f}",
        "\u{85}",
        "\u{a0}",
        "\u{1680}",
        "\u{2000}",
        "\u{2028}",
        "\u{202f}",
        "\u{3000}",
        "\u{feff}",
        "\u{180e}",
        "\u{200b}",
        "Infinity",
        "inf",
        "NaN",
    ]);
    prop::collection::vec(piece, 0..7).prop_map(|p| p.concat())
}

#[test]
fn every_string_a_python_or_node_client_reads_as_a_number_correlates() {
    let mut runner = TestRunner::default();
    let ids: Vec<String> = (0..4000)
        .map(|_| {
            id_string()
                .new_tree(&mut runner)
                .expect("a value")
                .current()
        })
        .collect();
    let python = read_by("python3", &["-c", PYTHON], &ids);
    let node = read_by("node", &["-e", NODE], &ids);
    let mut missed = Vec::new();
    for ((id, py), js) in ids.iter().zip(&python).zip(&node) {
        // Python's integer, exactly, where an f64 holds it (request ids are small).
        let py = py
            .as_str()
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| v.unsigned_abs() <= 1 << 53);
        if let Some(v) = py {
            if !correlates(&json!(v), &json!(id)) {
                missed.push(format!("python int({id:?}) = {v}"));
            }
        }
        if let Some(n) = js.as_f64() {
            if !correlates(&json!(n), &json!(id)) {
                missed.push(format!("node Number({id:?}) = {n}"));
            }
        }
    }
    assert!(
        missed.is_empty(),
        "answer ids a client files under a request that the filter would not:\n{}",
        missed.join("\n")
    );
}
