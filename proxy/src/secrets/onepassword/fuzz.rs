//! Property tests of what `1password_connect` reads from a Connect server:
//! vault and item listings and items of any shape give an id, a field's value
//! or a typed error, never a panic; the field chosen is the one the reference
//! names (label before id, within its section); an error holds no field's
//! value and no part of the Connect token, whatever the server echoed.

use proptest::prelude::*;

use super::{error_detail, field_value, listed_id};
use crate::backend_answers::{
    answer, bytes, has_control, holds_part_of, quoted, said, string, value,
};
use crate::config::OpRef;
use crate::secrets::{SecretError, SecretValue};

/// Names of fields, sections, vaults: few, so that they collide.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["password", "credential", "api key", "Prod", "sec1", "x"])
            .prop_map(str::to_string),
        1 => "[a-z]{1,3}",
    ]
}

/// One field of an item: its id, label, value and section (id, label).
#[derive(Debug, Clone)]
struct FieldSpec {
    id: String,
    label: String,
    value: Option<String>,
    section: Option<(String, Option<String>)>,
}

fn field() -> impl Strategy<Value = FieldSpec> {
    (
        name(),
        name(),
        prop::option::of("[A-Za-z0-9+/=_-]{12,30}"),
        prop::option::of((name(), prop::option::of(name()))),
    )
        .prop_map(|(id, label, value, section)| FieldSpec {
            id,
            label,
            value,
            section,
        })
}

fn item_json(fields: &[FieldSpec], sections: &[(String, String)]) -> String {
    let fields: Vec<serde_json::Value> = fields
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({"id": f.id, "label": f.label, "type": "CONCEALED"});
            if let Some(value) = &f.value {
                v["value"] = value.clone().into();
            }
            if let Some((id, label)) = &f.section {
                v["section"] = serde_json::json!({"id": id});
                if let Some(l) = label {
                    v["section"]["label"] = l.clone().into();
                }
            }
            v
        })
        .collect();
    let sections: Vec<serde_json::Value> = sections
        .iter()
        .map(|(id, label)| serde_json::json!({"id": id, "label": label}))
        .collect();
    serde_json::json!({"id": "itemid", "title": "OpenAI", "fields": fields, "sections": sections})
        .to_string()
}

fn reference(field: String, section: Option<String>) -> OpRef {
    OpRef {
        vault: "Engineering".into(),
        item: "OpenAI".into(),
        section,
        field,
    }
}

fn shown(e: &SecretError) -> String {
    format!("{e} {e:?}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_listing_or_item_reads_or_fails_cleanly(
        body in prop_oneof![
            bytes(),
            value().prop_map(String::into_bytes),
            answer(vec![
                ("id", string().boxed()),
                ("fields", value().boxed()),
                ("sections", value().boxed()),
            ]),
        ],
        name in name(),
        section in prop::option::of(name()),
    ) {
        let _ = listed_id(&body, "/v1/vaults", &name);
        let _ = field_value(&body, &reference(name, section));
    }

    #[test]
    fn the_field_the_reference_names_is_chosen_and_no_value_is_shown(
        fields in prop::collection::vec(field(), 0..8),
        sections in prop::collection::vec((name(), name()), 0..3),
        want in name(),
        want_section in prop::option::of(name()),
    ) {
        let body = item_json(&fields, &sections);
        let r = reference(want.clone(), want_section.clone());
        let section_label = |f: &FieldSpec| -> Option<String> {
            let (id, label) = f.section.as_ref()?;
            label.clone().or_else(|| sections.iter().find(|(s, _)| s == id).map(|(_, l)| l.clone()))
        };
        let in_section = |f: &FieldSpec| match (&want_section, &f.section) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(w), Some((id, _))) => id == w || section_label(f).as_deref() == Some(w.as_str()),
        };
        let expected = fields
            .iter()
            .find(|f| in_section(f) && f.label == want)
            .or_else(|| fields.iter().find(|f| in_section(f) && f.id == want));
        match (field_value(body.as_bytes(), &r), expected) {
            (Ok(v), Some(f)) => prop_assert_eq!(Some(v.expose()), f.value.as_deref()),
            (Err(SecretError::Empty), Some(f)) => prop_assert!(f.value.is_none()),
            (Err(e), None) => {
                for f in &fields {
                    if let Some(v) = &f.value {
                        prop_assert!(!holds_part_of(&shown(&e), v), "{}", e);
                    }
                }
            }
            (got, expected) => {
                return Err(TestCaseError::fail(format!("{:?} for {:?}", got.map(|_| "a value"), expected)));
            }
        }
    }

    #[test]
    fn a_listing_names_one_entry_or_says_why_not(
        ids in prop::collection::vec("[a-z0-9]{26}", 0..3),
        name in prop_oneof!["[a-z0-9]{26}", name()],
    ) {
        let listed: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "name": name, "title": name}))
            .collect();
        let body = serde_json::Value::from(listed).to_string();
        match (listed_id(body.as_bytes(), "/v1/vaults", &name), ids.as_slice()) {
            (Ok(id), [one]) => prop_assert_eq!(&id, one),
            (Ok(id), []) => prop_assert_eq!(id, name),
            (Err(e), []) => prop_assert!(name.len() != 26 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{}", e),
            (Err(_), _) => {}
            (Ok(id), many) => return Err(TestCaseError::fail(format!("{id} chosen of {many:?}"))),
        }
    }

    #[test]
    fn an_error_answer_shows_no_part_of_the_token_and_stays_one_bounded_line(
        token in "[A-Za-z0-9+/=_.-]{12,60}",
        said in said(),
        status in 400u16..600,
        other in value(),
    ) {
        let message = said.of(&token, &token);
        let body = format!(r#"{{"status":{status},"message":{},"other":{other}}}"#, quoted(&message));
        let status = http::StatusCode::from_u16(status).expect("status");
        let detail = error_detail("/v1/vaults?filter=x", status, body.as_bytes(), &SecretValue::new(token.clone()));
        prop_assert!(!holds_part_of(&detail, &token), "{:?}", detail);
        prop_assert!(!has_control(&detail), "{:?}", detail);
        prop_assert!(detail.chars().count() <= 512 * 10 + 100, "{} characters", detail.len());
    }
}
