//! The Slack channel: a Socket Mode client as Slack speaks it (hello, envelopes, acks,
//! disconnect warnings answered by opening the new socket first), transport-level liveness,
//! sleep detection, catch-up from history after any gap, and the Web API methods flotilla uses.
//!
//! This crate knows nothing about providers or storage: messages go to an [`channel::Inbox`]
//! (the agent runtime's journal), replies are posted with [`web::SlackWeb`].

pub mod channel;
pub mod socket;
pub mod web;

pub use channel::{ChannelConfig, ChannelStatus, Inbox, SlackInbound, Source, StatusHandle};
pub use web::{SLACK_API_BASE, SlackError, SlackWeb};
