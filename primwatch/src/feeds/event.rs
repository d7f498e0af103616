//! What a feed's task hands the controller: one batch's bytes, or why its source gave
//! none.

use tokio::sync::oneshot;

/// What a feed's task hands the controller.
#[derive(Debug)]
pub struct FeedEvent {
    /// The feed's name.
    pub feed: String,
    /// Which start of the feed tasks sent it: events of tasks a reload stopped are dropped.
    pub generation: u64,
    /// The batch's bytes, or why the source gave none (a command failed, a file vanished).
    pub data: Result<Vec<u8>, String>,
    /// For a push: where the controller says applied (Ok) or refused (Err), with why.
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}
