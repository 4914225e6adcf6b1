//! The label values of every labelled metric family, as enums: a call site
//! names a variant, never a string, so a typo cannot open a new series and
//! `ALL` pre-registers each value (dashboards show 0, not "no data").
//! Dashboards, docs/ARCHITECTURE.md and the tests depend on these strings.

/// Defines a label enum: its variants (with their doc comments), `ALL` in
/// declaration order and `label()`, the exposed string of each.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];

            /// The label value.
            pub const fn label(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }
        }
    };
}

label_enum! {
    /// Server frame types, `hubbub_frames_out_total{type}`; each has its own
    /// pre-resolved counter, indexed by declaration order.
    pub enum Out {
        Welcome => "welcome",
        History => "history",
        Chat => "chat",
        Private => "private",
        Receipt => "receipt",
        Typing => "typing",
        Presence => "presence",
        System => "system",
        /// A read position moved (to every connection of the user).
        Read => "read",
        Error => "error",
    }
}

label_enum! {
    /// Client frame types, `hubbub_frames_in_total{type}`.
    pub enum In {
        Chat => "chat",
        Private => "private",
        Typing => "typing",
        Ack => "ack",
        History => "history",
        /// Multi-room connections: join and leave a room.
        Subscribe => "subscribe",
        Unsubscribe => "unsubscribe",
        /// A read position moving forward.
        Read => "read",
        /// Text that does not parse as a client frame.
        Invalid => "invalid",
        /// A binary message (closed with 1003).
        Binary => "binary",
    }
}

label_enum! {
    /// Why the server closed a session, `hubbub_evictions_total{reason}`.
    pub enum Eviction {
        /// Its queue was full (4002).
        Slow => "slow",
        /// The same client id joined again (4001).
        Replaced => "replaced",
        /// Over the per-user session cap: the oldest went (4001).
        TooManySessions => "too_many_sessions",
        /// Its token family was revoked or its user disabled (1008).
        Revoked => "revoked",
        /// Cluster mode: its user's home moved to another node (1001).
        Moved => "moved",
    }
}

label_enum! {
    /// How a WebSocket upgrade ended, `hubbub_upgrades_total{result}`.
    pub enum Upgrade {
        Accepted => "accepted",
        /// Refused: an Origin outside the allow-list.
        Origin => "origin",
        /// Refused: over the per-address upgrade rate.
        Rate => "rate",
        /// Refused: no valid access token.
        Auth => "auth",
        /// Refused: an invalid room name.
        Room => "room",
        /// Refused: an invalid client id.
        Client => "client",
        /// Refused: not a WebSocket upgrade request.
        BadRequest => "bad_request",
        /// Refused: a connection cap is reached.
        Capacity => "capacity",
        /// Refused: cluster mode, and this node is not serving (no majority
        /// with a leader, or not caught up).
        NotServing => "not_serving",
        /// Answered 307: cluster mode, and the user's home is another node.
        Redirect => "redirect",
    }
}

label_enum! {
    /// A session's state, `hubbub_sessions{state}`.
    pub enum SessionState {
        /// Upgraded, not yet welcomed by the hub.
        Joining => "joining",
        /// Welcomed: in the room.
        Active => "active",
    }
}

label_enum! {
    /// Which history read, `hubbub_history_seconds{kind}`.
    pub enum HistoryKind {
        /// The page sent with `welcome`.
        Join => "join",
        /// A `history` frame's page.
        Page => "page",
    }
}

label_enum! {
    /// How a log-in or a refresh ended, `hubbub_logins_total{result}` and
    /// `hubbub_refreshes_total{result}`.
    pub enum AuthResult {
        Ok => "ok",
        /// Refused: wrong credentials, or an invalid, expired or reused token.
        Failed => "failed",
    }
}

label_enum! {
    /// A refresh-token table, `hubbub_refresh_tokens_purged_total{table}`
    /// and `hubbub_refresh_token_rows{table}`.
    pub enum RefreshTable {
        Tokens => "tokens",
        /// Token families (revocation markers).
        Families => "families",
    }
}

label_enum! {
    /// Which cap a refused connection hit,
    /// `hubbub_http_connections_refused_total{reason}`.
    pub enum CapHit {
        /// `--max-http-connections`, over all addresses.
        Total => "total",
        /// The per-address cap.
        PerAddress => "per_address",
    }
}

label_enum! {
    /// Where `--request-timeout-secs` cut a connection,
    /// `hubbub_http_timeouts_total{phase}`.
    pub enum TimeoutPhase {
        /// The TLS handshake, the first or a keep-alive request head.
        Head => "head",
        /// A request body (answered 408).
        Body => "body",
    }
}

label_enum! {
    /// A failed accept, `hubbub_accept_errors_total{kind}`.
    pub enum AcceptError {
        /// EMFILE, ENFILE or no memory: the accept loop backs off.
        FdLimit => "fd_limit",
        Other => "other",
    }
}

label_enum! {
    /// An HTTP route, the `route` of `hubbub_http_requests_total`.
    pub enum Route {
        Signup => "signup",
        Login => "login",
        Refresh => "refresh",
        Logout => "logout",
        Me => "me",
        /// `/api/rooms/{room}/messages`.
        History => "history",
        Ws => "ws",
        Healthz => "healthz",
        Readyz => "readyz",
        Metrics => "metrics",
        /// `/api/admin/*`.
        Admin => "admin",
        /// Any other `/api/*` path.
        ApiOther => "api_other",
        /// Everything else: the web UI's files.
        Static => "static",
    }
}

label_enum! {
    /// An HTTP status class, the `class` of `hubbub_http_requests_total`.
    pub enum StatusClass {
        Informational => "1xx",
        Success => "2xx",
        Redirection => "3xx",
        ClientError => "4xx",
        ServerError => "5xx",
    }
}

impl StatusClass {
    /// The class of a status code; anything outside 100..=499 counts as 5xx.
    pub fn of(status: u16) -> Self {
        match status / 100 {
            1 => StatusClass::Informational,
            2 => StatusClass::Success,
            3 => StatusClass::Redirection,
            4 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_variant_once_in_order() {
        // `Out` indexes its counters by discriminant.
        for (i, o) in Out::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i);
        }
        let labels = Route::ALL.map(Route::label);
        let mut unique = labels.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), labels.len());
        assert_eq!(Eviction::TooManySessions.label(), "too_many_sessions");
    }

    /// Each row of docs/ARCHITECTURE.md's metric table that lists its label
    /// values (`label` = a, b) names exactly the values a fresh registry
    /// shows, at 0: the docs, the dashboards and the enums agree.
    #[test]
    fn architecture_md_lists_the_exposed_label_values() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"),
        )
        .unwrap();
        let metrics = super::super::Metrics::new();
        let _cluster = metrics.register_cluster();
        let text = metrics.render();
        let mut checked = 0;
        for row in doc.lines().filter(|l| l.starts_with("| `hubbub_")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`');
            let Some((label, values)) = cells[3].split_once(" = ") else {
                continue;
            };
            if name == "hubbub_storage_decode_errors_total" {
                continue; // storage's own counter, registered when a server starts
            }
            let label = label.trim_matches('`');
            let mut documented: Vec<&str> = values.split(", ").collect();
            documented.sort_unstable();
            let mut exposed: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name}_count{{"))
                })
                .filter_map(|l| l.split_once(&format!("{label}=\"")))
                .filter_map(|(_, rest)| rest.split_once('"').map(|(v, _)| v))
                .collect();
            exposed.sort_unstable();
            exposed.dedup();
            assert_eq!(exposed, documented, "{name}{{{label}}}");
            checked += 1;
        }
        assert!(checked >= 13, "only {checked} rows checked");
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(101).label(), "1xx");
        assert_eq!(StatusClass::of(204).label(), "2xx");
        assert_eq!(StatusClass::of(304).label(), "3xx");
        assert_eq!(StatusClass::of(429).label(), "4xx");
        assert_eq!(StatusClass::of(503).label(), "5xx");
    }
}
