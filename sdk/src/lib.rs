//! Write Plexus plugins in Rust.
//!
//! A plugin is a WebAssembly component that the Plexus host loads, sandboxes and
//! wires to NATS JetStream. You write one trait impl and one export macro; the
//! host owns delivery, retries, dead letters, limits and metrics.
//!
//! A complete transform that upper-cases every payload and drops empty ones:
//!
//! ```no_run
//! use plexus_sdk::{Error, Record, Transform};
//!
//! struct Shout;
//!
//! impl Transform for Shout {
//!     fn transform(input: Record) -> Result<Vec<Record>, Error> {
//!         if input.payload.is_empty() {
//!             return Ok(vec![]); // dropped
//!         }
//!         let text = std::str::from_utf8(&input.payload)
//!             .map_err(|e| Error::Permanent(format!("payload is not UTF-8: {e}")))?;
//!         plexus_sdk::log::debug(&format!("shouting record {}", input.key));
//!         Ok(vec![Record::new(input.key.clone(), text.to_uppercase())])
//!     }
//! }
//!
//! plexus_sdk::export_transform!(Shout);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and point a
//! `[[connector]]` with `kind = "transform"` at the `.wasm` file.
//!
//! Errors decide what the host does with the input: [`Error::Retryable`] redelivers
//! it after the connector's backoff, [`Error::Permanent`] sends it to the
//! dead-letter subject with your message. A panic or trap is treated as permanent,
//! and the host replaces the instance.
#![deny(missing_docs)]

extern crate self as plexus_sdk;

/// The bindings generator, re-exported so plugins need no direct dependency on it.
pub use wit_bindgen;

/// Generated bindings for the `plexus:connector` worlds. Use the re-exports at the
/// crate root instead; this module is public only for the export macros.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod wit {
    /// Host imports every world shares: log, config, kv.
    pub mod host {
        wit_bindgen::generate!({
            world: "imports",
            path: "../wit",
            runtime_path: "plexus_sdk::wit_bindgen::rt",
        });
    }

    /// The `transform` world; also owns the shared `types` interface.
    pub mod transform {
        wit_bindgen::generate!({
            world: "transform",
            path: "../wit",
            runtime_path: "plexus_sdk::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "export_transform_world",
            default_bindings_module: "plexus_sdk::wit::transform",
            with: {
                "plexus:connector/log@0.1.0": crate::wit::host::plexus::connector::log,
                "plexus:connector/config@0.1.0": crate::wit::host::plexus::connector::config,
                "plexus:connector/kv@0.1.0": crate::wit::host::plexus::connector::kv,
                "plexus:connector/secrets@0.1.0": crate::wit::host::plexus::connector::secrets,
                "plexus:connector/types@0.1.0": generate,
            },
        });
    }

    /// The `source` world.
    pub mod source {
        wit_bindgen::generate!({
            world: "source",
            path: "../wit",
            runtime_path: "plexus_sdk::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "export_source_world",
            default_bindings_module: "plexus_sdk::wit::source",
            with: {
                "plexus:connector/log@0.1.0": crate::wit::host::plexus::connector::log,
                "plexus:connector/config@0.1.0": crate::wit::host::plexus::connector::config,
                "plexus:connector/kv@0.1.0": crate::wit::host::plexus::connector::kv,
                "plexus:connector/secrets@0.1.0": crate::wit::host::plexus::connector::secrets,
                "plexus:connector/types@0.1.0": crate::wit::transform::plexus::connector::types,
            },
        });
    }

    /// The `webhook` world.
    pub mod webhook {
        wit_bindgen::generate!({
            world: "webhook",
            path: "../wit",
            runtime_path: "plexus_sdk::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "export_webhook_world",
            default_bindings_module: "plexus_sdk::wit::webhook",
            with: {
                "plexus:connector/log@0.1.0": crate::wit::host::plexus::connector::log,
                "plexus:connector/config@0.1.0": crate::wit::host::plexus::connector::config,
                "plexus:connector/kv@0.1.0": crate::wit::host::plexus::connector::kv,
                "plexus:connector/secrets@0.1.0": crate::wit::host::plexus::connector::secrets,
                "plexus:connector/types@0.1.0": crate::wit::transform::plexus::connector::types,
            },
        });
    }

    /// The `sink` world.
    pub mod sink {
        wit_bindgen::generate!({
            world: "sink",
            path: "../wit",
            runtime_path: "plexus_sdk::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "export_sink_world",
            default_bindings_module: "plexus_sdk::wit::sink",
            with: {
                "plexus:connector/log@0.1.0": crate::wit::host::plexus::connector::log,
                "plexus:connector/config@0.1.0": crate::wit::host::plexus::connector::config,
                "plexus:connector/kv@0.1.0": crate::wit::host::plexus::connector::kv,
                "plexus:connector/secrets@0.1.0": crate::wit::host::plexus::connector::secrets,
                "plexus:connector/types@0.1.0": crate::wit::transform::plexus::connector::types,
            },
        });
    }
}

pub use wit::sink::{Delivery, Outcome};
pub use wit::source::exports::plexus::connector::source_api::PollResult;
pub use wit::transform::plexus::connector::types::{Error, Record};
pub use wit::webhook::exports::plexus::connector::webhook_api::{Refusal, Request};

mod record;

/// The canonical model's serde types (feature `canonical`).
#[cfg(feature = "canonical")]
pub use plexus_canonical as canonical;

pub mod clock;
pub mod config;
pub mod kv;
pub mod log;
pub mod secrets;

/// A transform plugin: one record in, zero or more records out.
pub trait Transform {
    /// Map one input record. Return an empty list to drop it.
    fn transform(input: Record) -> Result<Vec<Record>, Error>;
}

/// A source plugin: polled on a schedule, or fed by a host-owned listener.
pub trait Source {
    /// Fetch what is new since `cursor` (none on the first poll).
    fn poll(cursor: Option<String>) -> Result<PollResult, Error>;

    /// Split one message received by an inbound listener into records.
    /// The default refuses, for sources that only poll.
    fn decode(input: Vec<u8>) -> Result<Vec<Record>, Error> {
        let _ = input;
        Err(Error::Permanent(
            "this source does not decode inbound messages".into(),
        ))
    }
}

/// A webhook source: checks who sent each HTTP request, then maps its body
/// to records. Exported with [`export_webhook!`]; its connector has
/// `kind = "source"` and `listen = "http"`.
pub trait Webhook {
    /// Verify and decode one request. [`Refusal::Unauthenticated`] answers
    /// 401 and publishes nothing.
    fn receive(request: Request) -> Result<Vec<Record>, Refusal>;
}

/// A sink plugin: delivers records to an outside system.
pub trait Sink {
    /// Deliver a batch; return exactly one outcome per delivery, in order.
    fn deliver(deliveries: Vec<Delivery>) -> Vec<Outcome>;
}

/// Export a type implementing [`Webhook`] as this component's `webhook` world.
#[macro_export]
macro_rules! export_webhook {
    ($plugin:ident) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            #[allow(dead_code)]
            fn native() {
                let _ = <$plugin as $crate::Webhook>::receive;
            }
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            impl $crate::wit::webhook::exports::plexus::connector::webhook_api::Guest for $plugin {
                fn receive(
                    request: $crate::Request,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::Record>, $crate::Refusal>
                {
                    <$plugin as $crate::Webhook>::receive(request)
                }
            }
    $crate::wit::webhook::export_webhook_world!($plugin with_types_in $crate::wit::webhook);
        };
    };
}

/// Export a type implementing [`Transform`] as this component's `transform` world.
#[macro_export]
macro_rules! export_transform {
    ($plugin:ident) => {
        // Natively there is nothing to export: plugin crates then link side
        // by side as plain libraries (the benchmarks' native ceiling).
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            #[allow(dead_code)]
            fn native() {
                let _ = <$plugin as $crate::Transform>::transform;
            }
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            impl $crate::wit::transform::Guest for $plugin {
                fn transform(input: $crate::Record) -> ::core::result::Result<::std::vec::Vec<$crate::Record>, $crate::Error> {
                    <$plugin as $crate::Transform>::transform(input)
                }
            }
            $crate::wit::transform::export_transform_world!($plugin with_types_in $crate::wit::transform);
        };
    };
}

/// Export a type implementing [`Source`] as this component's `source` world.
#[macro_export]
macro_rules! export_source {
    ($plugin:ident) => {
        // Natively there is nothing to export: plugin crates then link side
        // by side as plain libraries (the benchmarks' native ceiling).
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            #[allow(dead_code)]
            fn native() {
                let _ = <$plugin as $crate::Source>::poll;
            }
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            impl $crate::wit::source::exports::plexus::connector::source_api::Guest for $plugin {
                fn poll(
                    cursor: ::core::option::Option<::std::string::String>,
                ) -> ::core::result::Result<$crate::PollResult, $crate::Error> {
                    <$plugin as $crate::Source>::poll(cursor)
                }
                fn decode(
                    input: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::Record>, $crate::Error>
                {
                    <$plugin as $crate::Source>::decode(input)
                }
            }
    $crate::wit::source::export_source_world!($plugin with_types_in $crate::wit::source);
        };
    };
}

/// Export a type implementing [`Sink`] as this component's `sink` world.
#[macro_export]
macro_rules! export_sink {
    ($plugin:ident) => {
        // Natively there is nothing to export: plugin crates then link side
        // by side as plain libraries (the benchmarks' native ceiling).
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            #[allow(dead_code)]
            fn native() {
                let _ = <$plugin as $crate::Sink>::deliver;
            }
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            impl $crate::wit::sink::Guest for $plugin {
                fn deliver(
                    deliveries: ::std::vec::Vec<$crate::Delivery>,
                ) -> ::std::vec::Vec<$crate::Outcome> {
                    <$plugin as $crate::Sink>::deliver(deliveries)
                }
            }
    $crate::wit::sink::export_sink_world!($plugin with_types_in $crate::wit::sink);
        };
    };
}
