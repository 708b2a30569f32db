//! Plain JSON -> Avro value, guided by the schema, with errors that name the offending field.
//!
//! Unions are plain JSON: `null` or the value itself (the first branch that accepts it wins).
//! Record fields with a default may be omitted; fields the schema does not know are refused.

use std::collections::HashMap;

use apache_avro::{
    Decimal, Duration, Schema, Uuid,
    schema::{Name, NamespaceRef, ResolvedSchema, UuidSchema},
    types::Value,
};
use serde_json::Value as Json;

type Names<'s> = HashMap<Name, &'s Schema>;

/// Converts `json` to an Avro value valid for `schema`. The error names the field (a path such as
/// `limits.max_sources` or `attributes["k"]`) and what is wrong with it.
pub(crate) fn json_to_avro(schema: &Schema, json: &Json) -> Result<Value, String> {
    let resolved = ResolvedSchema::new(schema).map_err(|e| e.to_string())?;
    convert(schema, json, "", resolved.get_names(), None)
}

fn describe(json: &Json) -> String {
    let kind = match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    };
    let mut text = json.to_string();
    if text.len() > 40 {
        let mut cut = 40;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    if matches!(json, Json::Object(_) | Json::Array(_)) {
        kind.to_string()
    } else {
        format!("{kind} ({text})")
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the payload".to_string()
    } else {
        format!("field `{path}`")
    }
}

fn wrong(path: &str, expected: &str, json: &Json) -> String {
    format!("{} must be {expected}, got {}", at(path), describe(json))
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn bytes_of(json: &Json, path: &str) -> Result<Vec<u8>, String> {
    match json {
        // Avro's JSON encoding of bytes: each code point 0..=255 is one byte.
        Json::String(s) => s
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| wrong(path, "bytes (a string of code points 0-255)", json)),
        Json::Array(items) => items
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| wrong(path, "bytes (an array of integers 0-255)", json)),
        _ => Err(wrong(
            path,
            "bytes (a string or an array of integers 0-255)",
            json,
        )),
    }
}

fn long_of(json: &Json, path: &str, what: &str) -> Result<i64, String> {
    json.as_i64().ok_or_else(|| wrong(path, what, json))
}

fn int_of(json: &Json, path: &str, what: &str) -> Result<i32, String> {
    json.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| wrong(path, what, json))
}

fn convert(
    schema: &Schema,
    json: &Json,
    path: &str,
    names: &Names<'_>,
    ns: NamespaceRef,
) -> Result<Value, String> {
    Ok(match schema {
        Schema::Null => match json {
            Json::Null => Value::Null,
            _ => return Err(wrong(path, "null", json)),
        },
        Schema::Boolean => Value::Boolean(
            json.as_bool()
                .ok_or_else(|| wrong(path, "a boolean", json))?,
        ),
        Schema::Int => Value::Int(int_of(json, path, "an int (32-bit integer)")?),
        Schema::Long => Value::Long(long_of(json, path, "a long (64-bit integer)")?),
        Schema::Float => {
            Value::Float(json.as_f64().ok_or_else(|| wrong(path, "a number", json))? as f32)
        }
        Schema::Double => {
            Value::Double(json.as_f64().ok_or_else(|| wrong(path, "a number", json))?)
        }
        Schema::Bytes => Value::Bytes(bytes_of(json, path)?),
        Schema::String => match json {
            Json::String(s) => Value::String(s.clone()),
            _ => return Err(wrong(path, "a string", json)),
        },
        Schema::Array(array) => match json {
            Json::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        convert(&array.items, item, &format!("{path}[{i}]"), names, ns)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(wrong(path, "an array", json)),
        },
        Schema::Map(map) => match json {
            Json::Object(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        convert(&map.types, v, &format!("{path}[{k:?}]"), names, ns)
                            .map(|v| (k.clone(), v))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(wrong(path, "an object (a map)", json)),
        },
        Schema::Union(union) => {
            let variants = union.variants();
            if json.is_null()
                && let Some(i) = variants.iter().position(|v| matches!(v, Schema::Null))
            {
                return Ok(Value::Union(i as u32, Box::new(Value::Null)));
            }
            let mut errors = Vec::new();
            for (i, variant) in variants.iter().enumerate() {
                if matches!(variant, Schema::Null) {
                    continue;
                }
                match convert(variant, json, path, names, ns) {
                    Ok(v) => return Ok(Value::Union(i as u32, Box::new(v))),
                    Err(e) => errors.push(e),
                }
            }
            let nullable = variants.iter().any(|v| matches!(v, Schema::Null));
            return Err(match (errors.len(), nullable) {
                (1, false) => errors.remove(0),
                (1, true) => {
                    let error = errors.remove(0);
                    let prefix = format!("{} must be ", at(path));
                    match error.strip_prefix(&prefix) {
                        Some(rest) => format!("{prefix}null or {rest}"),
                        None => format!("{error} (or null)"),
                    }
                }
                _ => format!(
                    "{} matches no branch of its union: {}",
                    at(path),
                    errors.join("; ")
                ),
            });
        }
        Schema::Record(record) => {
            let Json::Object(object) = json else {
                return Err(wrong(path, "an object (a record)", json));
            };
            if let Some(unknown) = object.keys().find(|k| !record.lookup.contains_key(*k)) {
                return Err(format!(
                    "unknown field `{}`: `{}` has no such field",
                    join(path, unknown),
                    record.name.fullname(None)
                ));
            }
            let record_ns = record.name.namespace().or(ns);
            let mut fields = Vec::with_capacity(record.fields.len());
            for field in &record.fields {
                let field_path = join(path, &field.name);
                let value = match (object.get(&field.name), &field.default) {
                    (Some(v), _) => convert(&field.schema, v, &field_path, names, record_ns)?,
                    (None, Some(default)) => {
                        convert(&field.schema, default, &field_path, names, record_ns)
                            .map_err(|e| format!("default of {e}"))?
                    }
                    (None, None) => {
                        return Err(format!("missing required field `{field_path}`"));
                    }
                };
                fields.push((field.name.clone(), value));
            }
            Value::Record(fields)
        }
        Schema::Enum(e) => match json
            .as_str()
            .and_then(|s| e.symbols.iter().position(|x| x == s))
        {
            Some(i) => Value::Enum(i as u32, e.symbols[i].clone()),
            None => {
                return Err(wrong(
                    path,
                    &format!("one of {}", e.symbols.join(", ")),
                    json,
                ));
            }
        },
        Schema::Fixed(fixed) => {
            let bytes = bytes_of(json, path)?;
            if bytes.len() != fixed.size {
                return Err(format!(
                    "{} must be exactly {} bytes, got {}",
                    at(path),
                    fixed.size,
                    bytes.len()
                ));
            }
            Value::Fixed(fixed.size, bytes)
        }
        Schema::Decimal(_) => Value::Decimal(Decimal::from(bytes_of(json, path)?)),
        Schema::BigDecimal => {
            return Err(format!(
                "{}: big-decimal values cannot be given as JSON; use Registry::encode",
                at(path)
            ));
        }
        Schema::Uuid(inner) => match json.as_str().and_then(|s| Uuid::parse_str(s).ok()) {
            Some(uuid) => Value::Uuid(uuid),
            None if matches!(inner, UuidSchema::Bytes | UuidSchema::Fixed(_)) => {
                let bytes = bytes_of(json, path)?;
                Value::Uuid(
                    Uuid::from_slice(&bytes).map_err(|_| wrong(path, "a UUID (16 bytes)", json))?,
                )
            }
            None => return Err(wrong(path, "a UUID string", json)),
        },
        Schema::Date => Value::Date(int_of(json, path, "a date (days since the Unix epoch)")?),
        Schema::TimeMillis => {
            Value::TimeMillis(int_of(json, path, "a time of day in milliseconds")?)
        }
        Schema::TimeMicros => {
            Value::TimeMicros(long_of(json, path, "a time of day in microseconds")?)
        }
        Schema::TimestampMillis => Value::TimestampMillis(long_of(
            json,
            path,
            "a timestamp (milliseconds since the Unix epoch)",
        )?),
        Schema::TimestampMicros => Value::TimestampMicros(long_of(
            json,
            path,
            "a timestamp (microseconds since the Unix epoch)",
        )?),
        Schema::TimestampNanos => Value::TimestampNanos(long_of(
            json,
            path,
            "a timestamp (nanoseconds since the Unix epoch)",
        )?),
        Schema::LocalTimestampMillis => {
            Value::LocalTimestampMillis(long_of(json, path, "a local timestamp in milliseconds")?)
        }
        Schema::LocalTimestampMicros => {
            Value::LocalTimestampMicros(long_of(json, path, "a local timestamp in microseconds")?)
        }
        Schema::LocalTimestampNanos => {
            Value::LocalTimestampNanos(long_of(json, path, "a local timestamp in nanoseconds")?)
        }
        Schema::Duration(_) => {
            let bytes = bytes_of(json, path)?;
            let bytes: [u8; 12] = bytes
                .try_into()
                .map_err(|_| wrong(path, "a duration (12 bytes)", json))?;
            Value::Duration(Duration::from(bytes))
        }
        Schema::Ref { name } => {
            let full = name.fully_qualified_name(ns);
            let target = names.get(full.as_ref()).ok_or_else(|| {
                format!(
                    "{}: unresolved schema reference {}",
                    at(path),
                    full.fullname(None)
                )
            })?;
            convert(target, json, path, names, full.namespace())?
        }
    })
}
