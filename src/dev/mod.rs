//! Development stand-ins: the local node that plays kubelet where no kubelet exists.
pub mod agents;
pub mod chat;
pub mod llm;
pub mod multipart;
pub mod node;
pub mod telegram;
