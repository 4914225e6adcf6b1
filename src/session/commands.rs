//! `/commands`, parsed on the session's task (never in the hub).

use crate::protocol::ErrorCode;
use crate::protocol::Username;

/// What a command turns into.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// A chat message with this content (`action` for `/me`).
    Chat { content: String, action: bool },
    /// `/msg USER TEXT`: exactly a `private` with the same id.
    Private { target: Username, content: String },
    /// `/who`: a presence frame to the sender alone.
    Who,
    /// `/help`, `/ping`: a system line to the sender alone.
    Reply(String),
}

const FACES: &[(&str, &str)] = &[
    ("shrug", "¯\\_(ツ)_/¯"),
    ("lenny", "( ͡° ͜ʖ ͡°)"),
    ("tableflip", "(╯°□°）╯︵ ┻━┻"),
    ("unflip", "┬─┬ノ( º _ ºノ)"),
    ("bear", "ʕ •ᴥ•ʔ"),
    ("disapprove", "ಠ_ಠ"),
    ("hug", "(づ｡◕‿‿◕｡)づ"),
    ("dance", "└|∵|┐ ♪ ┌|∵|┘"),
    ("flex", "ᕦ(ò_ó)ᕤ"),
    ("cry", "(╥﹏╥)"),
    ("coffee", "☕"),
    ("fix", "🛠️"),
    ("deploy", "🚀"),
];

/// The list `/help` answers with.
pub fn help_text() -> String {
    let faces: Vec<String> = FACES.iter().map(|(w, _)| format!("/{w}")).collect();
    format!(
        "commands: {} [text]; /sparkles TEXT; /me TEXT; /msg USER TEXT; /who; /help; /ping",
        faces.join(" ")
    )
}

/// Parses trimmed content that starts with `/`. Errors carry the code to send.
pub fn parse(content: &str) -> Result<Command, (ErrorCode, String)> {
    let body = content.strip_prefix('/').unwrap_or(content);
    let (word, rest) = match body.find(char::is_whitespace) {
        Some(i) => (&body[..i], body[i..].trim()),
        None => (body, ""),
    };
    let need_text = |usage: &str| -> Result<(), (ErrorCode, String)> {
        if rest.is_empty() {
            Err((ErrorCode::BadRequest, format!("usage: {usage}")))
        } else {
            Ok(())
        }
    };
    if let Some((_, face)) = FACES.iter().find(|(w, _)| *w == word) {
        let content = if rest.is_empty() {
            (*face).to_owned()
        } else {
            format!("{rest} {face}")
        };
        return Ok(Command::Chat {
            content,
            action: false,
        });
    }
    match word {
        "sparkles" => {
            need_text("/sparkles TEXT")?;
            Ok(Command::Chat {
                content: format!("✨ {rest} ✨"),
                action: false,
            })
        }
        "me" => {
            need_text("/me TEXT")?;
            Ok(Command::Chat {
                content: rest.to_owned(),
                action: true,
            })
        }
        "msg" => {
            let (user, text) = match rest.find(char::is_whitespace) {
                Some(i) => (&rest[..i], rest[i..].trim()),
                None => (rest, ""),
            };
            let target = Username::parse(user)
                .ok_or((ErrorCode::BadRequest, "usage: /msg USER TEXT".to_owned()))?;
            if text.is_empty() {
                return Err((ErrorCode::BadRequest, "usage: /msg USER TEXT".to_owned()));
            }
            Ok(Command::Private {
                target,
                content: text.to_owned(),
            })
        }
        "who" => Ok(Command::Who),
        "help" => Ok(Command::Reply(help_text())),
        "ping" => Ok(Command::Reply("pong".to_owned())),
        _ => Err((
            ErrorCode::UnknownCommand,
            format!(
                "unknown command /{}; try /help",
                word.chars().take(32).collect::<String>()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(s: &str) -> (String, bool) {
        match parse(s) {
            Ok(Command::Chat { content, action }) => (content, action),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn faces() {
        assert_eq!(chat("/shrug"), ("¯\\_(ツ)_/¯".into(), false));
        assert_eq!(
            chat("/shrug   oh well "),
            ("oh well ¯\\_(ツ)_/¯".into(), false)
        );
        assert_eq!(chat("/tableflip"), ("(╯°□°）╯︵ ┻━┻".into(), false));
        assert_eq!(chat("/deploy ship it"), ("ship it 🚀".into(), false));
        for (w, f) in FACES {
            assert_eq!(chat(&format!("/{w}")).0, *f);
        }
    }

    #[test]
    fn text_commands() {
        assert_eq!(chat("/sparkles wow"), ("✨ wow ✨".into(), false));
        assert_eq!(chat("/me waves"), ("waves".into(), true));
        assert_eq!(
            parse("/msg bob  hi there"),
            Ok(Command::Private {
                target: Username::parse("bob").unwrap(),
                content: "hi there".into()
            })
        );
        assert_eq!(parse("/who"), Ok(Command::Who));
        assert_eq!(parse("/ping"), Ok(Command::Reply("pong".into())));
        assert!(
            matches!(parse("/help"), Ok(Command::Reply(t)) if t.contains("/shrug") && t.contains("/msg"))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(parse("/nope").unwrap_err().0, ErrorCode::UnknownCommand);
        assert_eq!(parse("/").unwrap_err().0, ErrorCode::UnknownCommand);
        assert_eq!(parse("/me").unwrap_err().0, ErrorCode::BadRequest);
        assert_eq!(parse("/sparkles").unwrap_err().0, ErrorCode::BadRequest);
        assert_eq!(parse("/msg bob").unwrap_err().0, ErrorCode::BadRequest);
        assert_eq!(parse("/msg B@d hi").unwrap_err().0, ErrorCode::BadRequest);
    }
}
