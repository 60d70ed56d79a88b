//! Conveniences on [`Record`] for building outputs.

use crate::Record;

impl Record {
    /// A record with a business key and a payload; no schema, topic or headers.
    pub fn new(key: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Record {
            key: key.into(),
            payload: payload.into(),
            headers: Vec::new(),
            schema: None,
            content_type: None,
            topic: None,
        }
    }

    /// Set the schema id carried as `Plexus-Schema` (e.g. `purchase-order/1`).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Set the MIME type of the payload.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Publish to `<to>.<topic>` instead of the connector's `to`.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Add a header to carry on the bus.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
