//! Matching a round's answers against what its cases expect.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::Value;

use super::raw::{RawReader, ServerFrame};
use super::tally::Tally;
use super::{Case, Expect};

/// The session the answers belong to.
pub(super) struct Me<'a> {
    pub user: &'a str,
    pub room: String,
}

/// The answers a round still waits for.
#[derive(Default)]
pub(super) struct Pending {
    /// Errors and echoes that name an id.
    by_id: HashMap<String, Vec<(&'static str, Expect)>>,
    /// Errors without an id, in the order their frames were sent.
    no_id: VecDeque<(&'static str, &'static str)>,
    systems: VecDeque<(&'static str, String)>,
    histories: HashMap<String, &'static str>,
    pongs: Vec<(&'static str, Vec<u8>)>,
    close: Option<(&'static str, u16)>,
    left: usize,
}

impl Pending {
    pub fn add(&mut self, c: &Case) {
        for e in &c.expect {
            self.left += 1;
            match e {
                Expect::Error { code, id: None } => self.no_id.push_back((c.class, code)),
                Expect::Error { id: Some(id), .. } | Expect::Echo { id, .. } => self
                    .by_id
                    .entry(id.clone())
                    .or_default()
                    .push((c.class, e.clone())),
                Expect::System(s) => self.systems.push_back((c.class, s.clone())),
                Expect::History(r) => {
                    self.histories.insert(r.clone(), c.class);
                }
                Expect::Pong(p) => self.pongs.push((c.class, p.clone())),
                Expect::Close(code) => self.close = Some((c.class, *code)),
                Expect::Silent => self.left -= 1,
            }
        }
    }

    /// Reads until every answer came (true: the connection stays open), the
    /// expected close came, or something went wrong (false: reconnect).
    pub async fn answer(
        &mut self,
        rd: &mut RawReader,
        me: &Me<'_>,
        t: &mut Tally,
        limit: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.left > 0 {
            let f = match tokio::time::timeout_at(deadline, rd.next()).await {
                Ok(Ok(Some(f))) => f,
                // The server race the fuzz found (a writer failing right
                // after the client's Close dropped the reply; fixed in the
                // reader): counted on its own so a recurrence is named.
                Ok(Ok(None))
                    if self.left == 1 && matches!(self.close, Some(("client_close", _))) =>
                {
                    t.lost_close_replies += 1;
                    return false;
                }
                other => {
                    t.miss(format!(
                        "{} answers missing ({other:?}): {}",
                        self.left,
                        self.describe()
                    ));
                    return false;
                }
            };
            match f {
                ServerFrame::Text(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(v) => self.text(&v, me, t),
                    Err(e) => t.miss(format!("server sent non-JSON ({e}): {text:.200}")),
                },
                ServerFrame::Pong(p) => match self.pongs.iter().position(|(_, q)| *q == p) {
                    Some(i) => {
                        self.pongs.swap_remove(i);
                        self.done(t, "pong");
                    }
                    None => t.miss(format!("unexpected pong {p:?}")),
                },
                ServerFrame::Close(code, reason) => {
                    match self.close.take() {
                        Some((_, want)) if want == code && self.left == 1 => self.done(t, format!("close:{code}")),
                        Some((class, want)) => {
                            t.miss(format!("{class}: close {code} ({reason}), expected {want} with {} other answers pending", self.left - 1))
                        }
                        None => t.miss(format!("unexpected close {code} ({reason}): {}", self.describe())),
                    }
                    return false;
                }
                ServerFrame::Ping(_) => {}
                ServerFrame::Binary(b) => t.miss(format!("server sent binary ({} bytes)", b.len())),
            }
        }
        self.close.is_none()
    }

    fn done(&mut self, t: &mut Tally, kind: impl Into<String>) {
        self.left -= 1;
        t.answer(kind);
    }

    fn text(&mut self, v: &Value, me: &Me<'_>, t: &mut Tally) {
        let ty = v["type"].as_str().unwrap_or("");
        let id = v["id"].as_str();
        match ty {
            "error" => {
                let code = v["code"].as_str().unwrap_or("");
                let found = match id {
                    Some(id) => self.take_id(
                        id,
                        |e| matches!(e, Expect::Error { code: c, .. } if *c == code),
                    ),
                    None => match self.no_id.front() {
                        Some((_, c)) if *c == code => self.no_id.pop_front().is_some(),
                        _ => false,
                    },
                };
                if found {
                    self.done(t, format!("error:{code}"));
                } else {
                    t.miss(format!("unexpected {v}; waiting for {}", self.describe()));
                }
            }
            "chat" | "private" => {
                let want = id.and_then(|id| {
                    let mut got = None;
                    self.take_id(id, |e| match e {
                        Expect::Echo { content, .. } => {
                            got = Some(content.clone());
                            true
                        }
                        _ => false,
                    });
                    got
                });
                match want {
                    Some(content)
                        if v["content"] == content.as_str()
                            && v["sender"] == me.user
                            && v["room"] == me.room.as_str()
                            && v.get("action").is_none() =>
                    {
                        self.done(t, "echo")
                    }
                    Some(content) => t.miss(format!(
                        "echo differs: want {content:?} from {} in {}: {v}",
                        me.user, me.room
                    )),
                    None => t.miss(format!("unexpected message {v}")),
                }
            }
            "system" => match self.systems.front() {
                Some((_, s)) if v["content"] == s.as_str() => {
                    self.systems.pop_front();
                    self.done(t, "system");
                }
                _ => t.miss(format!("unexpected {v}")),
            },
            "history" => match v["req"].as_str().and_then(|r| self.histories.remove(r)) {
                Some(_) => self.done(t, "history"),
                None => t.miss(format!("unexpected history page (req {:?})", v["req"])),
            },
            // Receipts for earlier chats, presence and typing of the room: not answers.
            "receipt" | "presence" | "typing" => {}
            _ => t.miss(format!("unexpected {v:.300}")),
        }
    }

    /// Removes the first expectation for `id` that `pred` accepts.
    fn take_id(&mut self, id: &str, mut pred: impl FnMut(&Expect) -> bool) -> bool {
        let Some(list) = self.by_id.get_mut(id) else {
            return false;
        };
        let Some(i) = list.iter().position(|(_, e)| pred(e)) else {
            return false;
        };
        list.remove(i);
        if list.is_empty() {
            self.by_id.remove(id);
        }
        true
    }

    /// A short list of what is still missing.
    fn describe(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        out.extend(self.no_id.iter().map(|(c, code)| format!("{c}:{code}")));
        out.extend(
            self.by_id
                .values()
                .flatten()
                .map(|(c, e)| format!("{c}:{e:?}")),
        );
        out.extend(self.systems.iter().map(|(c, s)| format!("{c}:system {s}")));
        out.extend(self.histories.values().map(|c| format!("{c}:history")));
        out.extend(self.pongs.iter().map(|(c, _)| format!("{c}:pong")));
        out.extend(
            self.close
                .iter()
                .map(|(c, code)| format!("{c}:close {code}")),
        );
        out.truncate(6);
        out.join(", ")
    }
}
