//! The `/command` parser on arbitrary text: never panics, and every error is
//! `bad_request` (usage) or `unknown_command`, as PROTOCOL.md's table says.
#![no_main]

use hubbub::protocol::ErrorCode;
use hubbub::session::commands::{Command, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The session passes trimmed content that starts with `/`.
    let input = format!("/{text}");
    let input = input.trim();
    if !input.starts_with('/') {
        return;
    }
    match parse(input) {
        Ok(Command::Chat { content, .. }) => assert!(!content.is_empty()),
        Ok(Command::Private { content, .. }) => assert!(!content.is_empty()),
        Ok(Command::Who | Command::Reply(_)) => {}
        Err((code, msg)) => {
            assert!(
                matches!(code, ErrorCode::BadRequest | ErrorCode::UnknownCommand),
                "{code:?}"
            );
            assert!(!msg.is_empty());
        }
    }
});
