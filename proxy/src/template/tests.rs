use super::*;

fn ctx() -> TemplateContext {
    let mut c = TemplateContext::new();
    c.set("Value", "ghp_abc123").set("Timestamp", "1700000000");
    c.set_map("Credentials", [("key", "k1"), ("passphrase", "p w")]);
    c
}

fn render(src: &str) -> String {
    Template::parse(src)
        .expect("parses")
        .render(&ctx())
        .expect("renders")
}

#[test]
fn text_and_fields() {
    assert_eq!(render("Bearer {{ .Value }}"), "Bearer ghp_abc123");
    assert_eq!(
        render("{{.Timestamp}}{{.Credentials.key}}!"),
        "1700000000k1!"
    );
    assert_eq!(render("no actions"), "no actions");
    assert_eq!(render(""), "");
}

#[test]
fn base64_concatenates_its_arguments() {
    // The spec's GitHub example: base64("x-access-token:" + token).
    assert_eq!(
        render(r#"Basic {{ base64 "x-access-token:" .Value }}"#),
        "Basic eC1hY2Nlc3MtdG9rZW46Z2hwX2FiYzEyMw=="
    );
    assert_eq!(
        render("{{ .Value | base64 }}"),
        render("{{ base64 .Value }}")
    );
    assert_eq!(render(r#"{{ base64 "a" "b" }}"#), "YWI=");
    assert_eq!(render(r#"{{ base64 `x"y` }}"#), "eCJ5");
}

#[test]
fn trim_markers_and_comments() {
    assert_eq!(render("a  {{- .Value -}}  b"), "aghp_abc123b");
    assert_eq!(render("a{{/* note */}}b"), "ab");
}

#[test]
fn fields_are_listed() {
    let t = Template::parse(r#"{{.Timestamp}}{{ base64 "x" .Credentials.key }}"#).expect("parses");
    let fields: Vec<String> = t.fields().iter().map(|p| p.join(".")).collect();
    assert_eq!(fields, ["Timestamp", "Credentials.key"]);
}

#[test]
fn parse_errors() {
    let err = |src: &str| Template::parse(src).expect_err(src).to_string();
    assert_eq!(
        err("Bearer {{ .Value "),
        "template column 8: unclosed action"
    );
    assert!(err("{{ b64 .Value }}").contains("unknown function \"b64\""));
    assert!(err("{{ . }}").contains("field name"));
    assert!(err("{{ if .Value }}x{{ end }}")
        .contains("\"if\" is Go template syntax these templates do not support"));
    assert!(err("{{ printf \"%s\" .Value }}")
        .contains("\"printf\" is Go template syntax these templates do not support"));
    assert!(err("{{ .Value .Value }}").contains("unexpected operand"));
    assert!(err("{{ \"x }}").contains("unterminated string"));
    assert!(err("{{ base64 }}").contains("at least one argument"));
    assert!(err("{{ 3 }}").contains("unsupported syntax"));
}

#[test]
fn render_errors_never_show_values() {
    let t = Template::parse("{{ .Credentials.missing }}").expect("parses");
    let e = t.render(&ctx()).expect_err("missing");
    assert_eq!(
        e,
        TemplateError::MissingField(".Credentials.missing".into())
    );
    let e = Template::parse("{{ .Credentials }}")
        .expect("parses")
        .render(&ctx())
        .expect_err("map");
    assert_eq!(e, TemplateError::NotAValue(".Credentials".into()));
    let e = Template::parse("{{ .Value.x }}")
        .expect("parses")
        .render(&ctx())
        .expect_err("scalar");
    assert!(!e.to_string().contains("ghp_"), "{e}");
    assert!(!format!("{:?}", ctx()).contains("ghp_"));
}

#[test]
fn values_are_bytes_and_text_output_must_be_utf8() {
    let mut c = TemplateContext::new();
    c.set_bytes("Body", b"a\xffb").set("Value", "v");
    let t = Template::parse("{{.Value}}:{{.Body}}").expect("parses");
    assert_eq!(t.render_bytes(&c).expect("renders").as_slice(), b"v:a\xffb");
    assert_eq!(t.render(&c), Err(TemplateError::NotText));
    let b64 = Template::parse("{{ base64 .Body }}").expect("parses");
    assert_eq!(b64.render(&c).expect("renders"), "Yf9i");
}

/// What a template writes whatever its values: its text and the string
/// literals it writes as they are; not a field, not a function's output.
#[test]
fn fixed_text_is_the_text_and_the_literals_written() {
    let t = Template::parse("Bearer {{ .Value }}\n{{ \"x\\r\" }}{{ base64 \"\\n\" .Value }}")
        .expect("valid template");
    assert_eq!(t.fixed_text(), ["Bearer ", "\n", "x\r"]);
}
