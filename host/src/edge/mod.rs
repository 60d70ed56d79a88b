//! An edge host: a host at an acquired hospital, behind its firewall, whose
//! embedded bus is a leaf node of the network's hub (`[bus].leaf`).
//!
//! - **Store here first.** The embedded server has a JetStream domain of its
//!   own (`[bus].domain`, by default the facility label). Sources publish
//!   into it, so an MLLP `AA` or a committed cursor waits on the local disk,
//!   never on the WAN.
//! - **Forward** (`forward`). For every stream its connectors publish to, the
//!   edge keeps a durable flow-controlled consumer here and a stream of the
//!   same name at the hub that sources from it. The hub's server pulls over
//!   the leaf link while it is up and resumes from the consumer's position
//!   when it comes back; records arrive with their own `Nats-Msg-Id`,
//!   `Plexus-Source`, `Plexus-Trace` and the `Plexus-Facility` the edge
//!   stamped on them, under the subjects they had here.
//! - **Controlled from the hub.** The host is a fleet host whose control
//!   plane is the hub's JetStream domain; while the link is down it runs the
//!   definitions it last read (kept in `data_dir`, so a restart during an
//!   outage runs them too).

pub mod forward;

pub use forward::{ForwardState, Forwarder};
