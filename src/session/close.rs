//! How sessions end: [`Close`], every Close the server itself starts
//! (each a code and a reason text, with its frame built here and nowhere
//! else), and [`Ending`], how a connection ended as its reader saw it.
//!
//! The README's close-code table is checked against [`Close::documented`]
//! by a test, so the two cannot drift apart.
//!
//! May touch: nothing (values only).

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// A Close the server starts: its code and reason text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Close {
    /// 1001: the server stops (shutdown, drain over, hub gone).
    ShuttingDown,
    /// 1001: the writer's queue is gone with the server.
    GoingAway,
    /// 1001: nothing (data or pong) came for the pong timeout.
    PingTimeout,
    /// 1013: no thread could be started for the session.
    Overloaded,
    /// 1008: the client's token expired.
    TokenExpired,
    /// 1008: the client sent faster than `--max-messages-per-second`.
    RateLimit,
    /// 1008: the client's send queue was full (it does not read).
    QueueFull,
    /// 1008: the client's queue was among the largest when buffered
    /// bytes passed the memory budget's eviction mark.
    MemoryBudget,
    /// 1008: a started message was not completed in `--message-timeout`.
    MessageTimeout,
    /// 1013: the message would take the server past its memory budget.
    OverBudget(String),
    /// 1009: a message over `--max-message-bytes`.
    TooBig(String),
    /// 1007: text that is not UTF-8 (or corrupt compressed text).
    InvalidData(String),
    /// 1002: any other protocol violation.
    Protocol(String),
    /// 1011: an error of the server's own.
    Internal(String),
    /// 1008: removed by the host program or the server API, with its reason.
    Removed(String),
    /// The host's message hook closed the client with this code and reason.
    Hook(CloseCode, String),
    /// 1011: the host's message hook panicked.
    HookFailed,
}

/// The longest prefix of `reason`, at a character boundary, that fits a
/// Close frame (123 bytes).
fn fit_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl Close {
    /// The close code.
    pub(crate) fn code(&self) -> CloseCode {
        match self {
            Close::ShuttingDown | Close::GoingAway | Close::PingTimeout => CloseCode::Away,
            Close::Overloaded | Close::OverBudget(_) => CloseCode::Again,
            Close::TokenExpired
            | Close::RateLimit
            | Close::QueueFull
            | Close::MemoryBudget
            | Close::MessageTimeout
            | Close::Removed(_) => CloseCode::Policy,
            Close::Hook(code, _) => *code,
            Close::HookFailed => CloseCode::Error,
            Close::TooBig(_) => CloseCode::Size,
            Close::InvalidData(_) => CloseCode::Invalid,
            Close::Protocol(_) => CloseCode::Protocol,
            Close::Internal(_) => CloseCode::Error,
        }
    }

    /// The reason text sent with the code.
    pub(crate) fn reason(&self) -> &str {
        match self {
            Close::ShuttingDown => "server shutting down",
            Close::GoingAway => "going away",
            Close::PingTimeout => "ping timeout",
            Close::Overloaded => "server overloaded",
            Close::TokenExpired => "token expired",
            Close::RateLimit => "rate limit",
            Close::QueueFull => "send queue full",
            Close::MemoryBudget => "send queue over the memory budget",
            Close::MessageTimeout => "message timeout",
            Close::HookFailed => "message hook failed",
            Close::Removed(why) | Close::Hook(_, why) => fit_reason(why),
            Close::OverBudget(why)
            | Close::TooBig(why)
            | Close::InvalidData(why)
            | Close::Protocol(why)
            | Close::Internal(why) => why,
        }
    }

    /// The Close frame's code and reason.
    pub(crate) fn frame(&self) -> CloseFrame {
        frame(self.code(), self.reason())
    }

    /// Every close the README's table lists, in its order, with what
    /// causes it (the variants whose reason varies are shown with a
    /// typical one).
    #[cfg(test)]
    pub(crate) fn documented() -> Vec<(Close, &'static str)> {
        vec![
            (
                Close::TooBig("Message too long: N > LIMIT".into()),
                "a message over `--max-message-bytes`",
            ),
            (
                Close::InvalidData("invalid UTF-8 in text".into()),
                "invalid UTF-8 in a text message",
            ),
            (
                Close::Protocol("what was violated".into()),
                "any other protocol violation",
            ),
            (
                Close::OverBudget("server memory budget exhausted (N bytes held)".into()),
                "a message that would take the server past its memory budget",
            ),
            (
                Close::Overloaded,
                "no thread could be started for the session",
            ),
            (
                Close::MessageTimeout,
                "a message not completed within `--message-timeout`",
            ),
            (Close::QueueFull, "a client whose send queue is full"),
            (
                Close::MemoryBudget,
                "a client among the furthest behind when buffered bytes pass the budget's eviction mark",
            ),
            (
                Close::RateLimit,
                "a client over `--max-messages-per-second`",
            ),
            (
                Close::TokenExpired,
                "a client whose token's `exp` has passed",
            ),
            (
                Close::Removed("removed".into()),
                "a client removed by the host program or the server API (the reason is the caller's)",
            ),
            (
                Close::Hook(CloseCode::Policy, "the hook's reason".into()),
                "the host's message hook closed the sender (with the code it chose)",
            ),
            (Close::HookFailed, "the host's message hook panicked"),
            (Close::PingTimeout, "a client silent for `--pong-timeout`"),
            (
                Close::ShuttingDown,
                "shutdown (after any `--drain-timeout`)",
            ),
        ]
    }
}

/// A Close frame with `code` and `reason` (a peer's, echoed, or a
/// [`Close`]'s).
pub(crate) fn frame(code: CloseCode, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.to_string().into(),
    }
}

/// How a connection ended, as the reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The peer sent Close (code and reason, if any).
    PeerClosed(Option<CloseFrame>),
    /// We closed with this code and reason.
    WeClosed(CloseCode, String),
    /// The connection dropped without a close handshake.
    Dropped(String),
}

impl Ending {
    /// We closed with `close`.
    pub(crate) fn closed(close: &Close) -> Ending {
        Ending::WeClosed(close.code(), close.reason().to_string())
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::PeerClosed(Some(c)) => write!(
                f,
                "peer closed with {} {:?}",
                u16::from(c.code),
                c.reason.as_str()
            ),
            Ending::PeerClosed(None) => write!(f, "peer closed with no code"),
            Ending::WeClosed(code, reason) => {
                write!(f, "closed with {} {reason:?}", u16::from(*code))
            }
            Ending::Dropped(why) => write!(f, "dropped: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Close;

    /// The README's close-code table: `| code | reason | when |` rows.
    fn readme_rows() -> Vec<(u16, String, String)> {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("| close code | reason | when |")
            .expect("the README has the close-code table");
        readme[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
                let code = cells[0].parse().expect("a code");
                let reason = cells[1].trim_matches('"').to_string();
                (code, reason, cells[2].to_string())
            })
            .collect()
    }

    #[test]
    fn the_readmes_close_table_is_the_close_vocabulary() {
        let want: Vec<(u16, String, String)> = Close::documented()
            .into_iter()
            .map(|(c, when)| {
                (
                    u16::from(c.code()),
                    c.reason().to_string(),
                    when.to_string(),
                )
            })
            .collect();
        assert_eq!(readme_rows(), want);
    }

    #[test]
    fn reasons_fit_a_control_frame() {
        for (close, _) in Close::documented() {
            assert!(close.reason().len() <= 123, "{close:?}");
        }
    }
}
