//! `@username` mentions, parsed on the session's task like `/commands`.
//!
//! A mention is `@` and a valid username, not preceded by a username
//! character (so `ann@example` is an address, not a mention) and not followed
//! by one (the name is the whole run: `@bobby` never mentions `bob`). Names
//! compare exactly, as usernames do everywhere (they are lowercase by rule).

use crate::protocol::Username;

/// Distinct mentions per message at most; more are just text.
pub const MAX_MENTIONS: usize = 20;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

/// The distinct usernames `content` mentions, in order of first appearance,
/// at most [`MAX_MENTIONS`]. Who they are (room members) the caller checks.
pub fn candidates(content: &str) -> Vec<Username> {
    let b = content.as_bytes();
    let mut out: Vec<Username> = Vec::new();
    let mut i = 0;
    while i < b.len() && out.len() < MAX_MENTIONS {
        if b[i] != b'@' || (i > 0 && is_name_byte(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i + 1;
        let end = start + b[start..].iter().take_while(|&&c| is_name_byte(c)).count();
        // A run of ASCII name bytes: always a char boundary, so the slice is valid.
        if let Some(u) = content.get(start..end).and_then(Username::parse)
            && !out.contains(&u)
        {
            out.push(u);
        }
        i = end.max(start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        candidates(s).iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn mentions_are_whole_names_after_a_free_at() {
        assert_eq!(names("hi @bob and @carol_2!"), ["bob", "carol_2"]);
        assert_eq!(names("@bob,@bob @bob"), ["bob"]);
        assert_eq!(names("mail ann@example.com"), Vec::<String>::new());
        assert_eq!(names("@bo @Bob @@bob"), ["bob"]);
        assert_eq!(names("(@dave) é@erin"), ["dave", "erin"]);
        assert_eq!(names(&format!("@{}", "a".repeat(33))), Vec::<String>::new());
        assert_eq!(names("@bobby"), ["bobby"]);
        assert_eq!(names("trailing @"), Vec::<String>::new());
    }

    #[test]
    fn at_most_twenty_distinct() {
        let text: Vec<String> = (0..30).map(|i| format!("@user{i:02}")).collect();
        let got = candidates(&text.join(" "));
        assert_eq!(got.len(), MAX_MENTIONS);
        assert_eq!(got[19].as_str(), "user19");
    }
}
