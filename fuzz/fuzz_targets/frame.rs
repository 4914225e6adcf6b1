//! The frame parser on arbitrary input: it must never panic, must reject with
//! a code PROTOCOL.md lists for frames, and may echo only the id the client
//! sent as a string.
#![no_main]

use hubbub::protocol::ErrorCode;
use hubbub::protocol::frames::parse_client;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // tungstenite hands the reader only valid UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse_client(text) {
        assert!(
            matches!(e.code, ErrorCode::BadRequest | ErrorCode::TooLarge),
            "{text:?} -> {:?}",
            e.code
        );
        assert!(!e.message.is_empty());
        if let Some(id) = &e.id {
            assert!(
                text.trim_start_matches([' ', '\t', '\n', '\r'])
                    .starts_with('{'),
                "echoed an id from a non-object: {text:?}"
            );
            // serde_json::Value refuses numbers like 1e999 that the parser
            // skips (the frame is still answered, with its id): check the id
            // wherever Value can read the frame.
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
                assert_eq!(v.get("id").and_then(|i| i.as_str()), Some(id.as_str()));
            }
        }
    }
});
