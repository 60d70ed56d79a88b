//! An edge host: a host at an acquired hospital, behind its firewall, whose
//! embedded bus is a leaf node of the network's hub (`[bus].leaf`).
//!
//! - **Store here first.** The embedded server has a JetStream domain of its
//!   own (`[bus].domain`, by default the facility label). Sources publish
//!   into it, so an MLLP `AA` or a committed cursor waits on the local disk,
//!   never on the WAN.
//! - **Forward** (`forward`). For every stream its connectors publish to, a
//!   pump reads it through a durable consumer here and republishes each
//!   record to the hub, in order, each publish expecting the hub's last
//!   sequence; a stream of the same name at the hub stores them under the
//!   subjects they had here, with their own `Nats-Msg-Id`, `Plexus-Source`,
//!   `Plexus-Trace` and the `Plexus-Facility` the edge stamped on them.
//!   After any outage or restart the pump resumes right after the last
//!   record the hub holds.
//! - **Controlled from the hub.** The host is a fleet host whose control
//!   plane is the hub's JetStream domain; while the link is down it runs the
//!   definitions it last read (kept in `data_dir`, so a restart during an
//!   outage runs them too).

pub mod forward;

pub use forward::{ForwardState, Forwarder};
