//! Generated bindings, one private `bindgen!` per WIT world. The rest of the host
//! uses them through `plugin` and `capability`; nothing here is hand-written.

/// The imports every world shares: log, config, kv.
pub(crate) mod host {
    wasmtime::component::bindgen!({
        world: "imports",
        path: "../wit",
        imports: { "plexus:connector/kv": async },
    });
}

/// `world transform`; owns the shared `types` interface.
pub(crate) mod transform {
    wasmtime::component::bindgen!({
        world: "transform",
        path: "../wit",
        exports: { default: async },
        with: {
            "plexus:connector/log": crate::bindings::host::plexus::connector::log,
            "plexus:connector/config": crate::bindings::host::plexus::connector::config,
            "plexus:connector/kv": crate::bindings::host::plexus::connector::kv,
            "plexus:connector/secrets": crate::bindings::host::plexus::connector::secrets,
        },
    });
}

/// `world source`.
pub(crate) mod source {
    wasmtime::component::bindgen!({
        world: "source",
        path: "../wit",
        exports: { default: async },
        with: {
            "plexus:connector/log": crate::bindings::host::plexus::connector::log,
            "plexus:connector/config": crate::bindings::host::plexus::connector::config,
            "plexus:connector/kv": crate::bindings::host::plexus::connector::kv,
            "plexus:connector/secrets": crate::bindings::host::plexus::connector::secrets,
            "plexus:connector/types": crate::bindings::transform::plexus::connector::types,
        },
    });
}

/// `world webhook`.
pub(crate) mod webhook {
    wasmtime::component::bindgen!({
        world: "webhook",
        path: "../wit",
        exports: { default: async },
        with: {
            "plexus:connector/log": crate::bindings::host::plexus::connector::log,
            "plexus:connector/config": crate::bindings::host::plexus::connector::config,
            "plexus:connector/kv": crate::bindings::host::plexus::connector::kv,
            "plexus:connector/secrets": crate::bindings::host::plexus::connector::secrets,
            "plexus:connector/types": crate::bindings::transform::plexus::connector::types,
        },
    });
}

/// `world sink`.
pub(crate) mod sink {
    wasmtime::component::bindgen!({
        world: "sink",
        path: "../wit",
        exports: { default: async },
        with: {
            "plexus:connector/log": crate::bindings::host::plexus::connector::log,
            "plexus:connector/config": crate::bindings::host::plexus::connector::config,
            "plexus:connector/kv": crate::bindings::host::plexus::connector::kv,
            "plexus:connector/secrets": crate::bindings::host::plexus::connector::secrets,
            "plexus:connector/types": crate::bindings::transform::plexus::connector::types,
        },
    });
}

pub(crate) use webhook::exports::plexus::connector::webhook_api::{
    Refusal as WebhookRefusal, Request as WebhookRequest,
};

pub(crate) use transform::plexus::connector::types::{
    Error as PluginError, Record as PluginRecord,
};
