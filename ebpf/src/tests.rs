//! Checks that the embedded objects parse and hold the expected programs and
//! maps.
use std::collections::BTreeSet;

use super::*;

fn parse(name: &str) -> aya_obj::Object {
    let obj = object(name).unwrap_or_else(|| panic!("object {name} is missing"));
    aya_obj::Object::parse(obj.bytes).unwrap_or_else(|e| panic!("parsing {name}: {e}"))
}

#[test]
fn objects_hold_every_program() {
    let expected: [(&str, &[&str]); 5] = [
        ("connect", &["iron_connect4", "iron_connect6"]),
        (
            "udp",
            &[
                "iron_sendmsg4",
                "iron_sendmsg6",
                "iron_recvmsg4",
                "iron_recvmsg6",
                "iron_getpeername4",
                "iron_getpeername6",
            ],
        ),
        ("getsockopt", &["iron_getsockopt"]),
        (
            "sock_create",
            &["iron_sock_create", "iron_setsockopt", "iron_sock_release"],
        ),
        ("skb", &["iron_skb_egress"]),
    ];
    assert_eq!(OBJECTS.len(), expected.len(), "unexpected object count");
    for (name, programs) in expected {
        let obj = parse(name);
        let got: BTreeSet<String> = obj.programs.keys().cloned().collect();
        let want: BTreeSet<String> = programs.iter().map(|p| p.to_string()).collect();
        assert_eq!(got, want, "programs of {name}");
    }
}

#[test]
fn every_object_pins_every_shared_map() {
    for obj in OBJECTS {
        let parsed = parse(obj.name);
        for map in ebpf_common::map::ALL {
            let def = parsed
                .maps
                .get(map)
                .unwrap_or_else(|| panic!("{} lacks map {map}", obj.name));
            assert_eq!(
                def.pinning(),
                aya_obj::maps::PinningType::ByName,
                "{map} in {} must be pinned by name",
                obj.name
            );
        }
    }
}
