//! Validated names: usernames, rooms, client ids. Each newtype can only be built
//! from a string that matches PROTOCOL.md, so code past the edge never re-checks.

use std::fmt;

use serde::{Deserialize, Serialize};

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// `^[a-z0-9_]{3,32}$`
    Username
);
name_type!(
    /// `^[a-z0-9][a-z0-9_-]{0,31}$`; the empty string means `general`.
    RoomName
);
name_type!(
    /// `^[A-Za-z0-9_-]{1,64}$`, chosen by the client, stable per tab or device.
    ClientId
);

impl Username {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (3..=32).contains(&s.len()) && s.bytes().all(|b| is_lower_alnum(b) || b == b'_');
        ok.then(|| Self(s.to_owned()))
    }
}

impl RoomName {
    pub const DEFAULT: &'static str = "general";

    /// `None` and `""` both mean the default room.
    pub fn parse_or_default(s: Option<&str>) -> Option<Self> {
        match s {
            None | Some("") => Some(Self(Self::DEFAULT.to_owned())),
            Some(s) => Self::parse(s),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let ok = (1..=32).contains(&b.len())
            && is_lower_alnum(b[0])
            && b[1..]
                .iter()
                .all(|&c| is_lower_alnum(c) || c == b'_' || c == b'-');
        ok.then(|| Self(s.to_owned()))
    }
}

impl ClientId {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| Self(s.to_owned()))
    }

    /// A fresh random id for a connection that did not bring one.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(Username::parse("bob").is_some());
        assert!(Username::parse("a_b_9").is_some());
        assert!(Username::parse(&"x".repeat(32)).is_some());
        for bad in [
            "ab",
            "Bob",
            "bo b",
            "bob\n",
            "bøb",
            "",
            &"x".repeat(33),
            "bob-x",
        ] {
            assert!(Username::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn rooms() {
        assert_eq!(
            RoomName::parse_or_default(None).unwrap().as_str(),
            "general"
        );
        assert_eq!(
            RoomName::parse_or_default(Some("")).unwrap().as_str(),
            "general"
        );
        assert!(RoomName::parse("a").is_some());
        assert!(RoomName::parse("rust-lang_2").is_some());
        for bad in ["-a", "_a", "A", "a b", "a/b", "..", &"r".repeat(33), "rооm"] {
            assert!(RoomName::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn client_ids() {
        assert!(ClientId::parse("Tab-1_x").is_some());
        assert!(ClientId::parse(&"c".repeat(64)).is_some());
        assert!(ClientId::parse(&"c".repeat(65)).is_none());
        assert!(ClientId::parse("").is_none());
        assert!(ClientId::parse("a.b").is_none());
        assert!(ClientId::parse(ClientId::random().as_str()).is_some());
    }
}
