//! Domain events as stored: each variant is one published event type whose payload is the JSON
//! form of its Avro schema, encoded and decoded by the schema registry.

use annals_schemas::{Registry, SchemaError, SchemaId};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An event enum whose variants map one-to-one to published event types.
pub trait Payload: Sized {
    /// The event type, e.g. `tenancy.TenantProvisioned`.
    fn event_type(&self) -> &'static str;
    /// The payload as the JSON form of the event type's latest schema.
    fn to_json(&self) -> serde_json::Value;
    /// The event from a payload decoded (and upcast) by the registry; `None` if the type is not
    /// one of this enum's.
    fn from_json(event_type: &str, payload: serde_json::Value) -> Option<Result<Self, String>>;

    /// Encodes with the latest schema of the type.
    fn encode(&self, registry: &Registry) -> Result<(SchemaId, Vec<u8>), SchemaError> {
        registry.encode_json(self.event_type(), &self.to_json())
    }
}

/// Serialises a variant's fields.
pub fn json_of<T: Serialize>(fields: &T) -> serde_json::Value {
    serde_json::to_value(fields).expect("event fields serialise to JSON")
}

/// Deserialises a variant's fields, naming the type on failure.
pub fn parse<T: DeserializeOwned>(
    event_type: &str,
    payload: serde_json::Value,
) -> Result<T, String> {
    serde_json::from_value(payload)
        .map_err(|e| format!("{event_type} payload does not match its type: {e}"))
}
