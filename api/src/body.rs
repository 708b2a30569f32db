//! Request bodies: JSON and NDJSON parsing with errors that name the field or line at fault.
//!
//! Malformed JSON is a 400 `malformed_json` carrying serde's line and column; well-formed JSON
//! that does not match the expected shape is a 422 `invalid_field` naming the field's path.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The format of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
}

/// The body's format from `Content-Type`: NDJSON (`application/x-ndjson`, also
/// `application/ndjson` and `application/jsonl`) where `ndjson_ok`, otherwise JSON. Any other
/// type is read as JSON too (curl's `-d` sends `application/x-www-form-urlencoded`), and a body
/// that is not JSON is a 400 `malformed_json` that says so.
pub fn format(headers: &HeaderMap, ndjson_ok: bool) -> Result<Format, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Json);
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ndjson = matches!(
        mime.as_str(),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl"
    );
    match (ndjson, ndjson_ok) {
        (false, _) => Ok(Format::Json),
        (true, true) => Ok(Format::Ndjson),
        (true, false) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type {mime:?} is not accepted here: send one JSON document (application/json)"),
        )
        .with_field("Content-Type")),
    }
}

/// The buffered body, or 413 when it is over `max` (the router's body limit).
pub fn bytes(body: Result<Bytes, BytesRejection>, max: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(max)
        } else {
            ApiError::bad_request(
                "unreadable_body",
                format!("the request body could not be read: {e}"),
            )
        }
    })
}

/// Parses one JSON document. `prefix` is put before field paths (e.g. `signals`, `line 4`).
pub fn json<T: DeserializeOwned>(bytes: &[u8], prefix: &str) -> Result<T, ApiError> {
    let at = |what: &str| {
        if prefix.is_empty() {
            what.to_owned()
        } else {
            format!("{prefix}: {what}")
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "malformed_json",
            at("the body is empty: send a JSON document"),
        ));
    }
    // No text annals stores may hold a NUL character (PostgreSQL cannot store one): refuse it
    // here, before it becomes an event no read model can take.
    if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            at("text values may not contain the NUL character (\\u0000); remove it"),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(if inner.is_data() {
                let message = inner.to_string();
                let field = field_path(prefix, &path, &message);
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    match &field {
                        Some(f) => format!("`{f}`: {message}"),
                        None => at(&message),
                    },
                );
                err.field = field;
                err
            } else {
                malformed(&at(&inner.to_string()), prefix)
            });
        }
    };
    de.end()
        .map_err(|e| malformed(&at(&e.to_string()), prefix))?;
    Ok(value)
}

fn malformed(message: &str, prefix: &str) -> ApiError {
    let e = ApiError::bad_request(
        "malformed_json",
        format!("{message}; the body must be valid JSON"),
    );
    if prefix.is_empty() {
        e
    } else {
        e.with_field(prefix)
    }
}

/// Parses NDJSON: one document per line, blank lines skipped. Errors name the line; each
/// document comes with its line number (1-based).
pub fn ndjson<T: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<(usize, T)>, ApiError> {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push((i + 1, json(line, &format!("line {}", i + 1))?));
    }
    Ok(out)
}

/// The full path of the field a serde data error is about: the path where it happened plus,
/// for a missing field, its name (an unknown field is already the last part of the path).
fn field_path(prefix: &str, path: &str, message: &str) -> Option<String> {
    let mut p = if path == "." {
        String::new()
    } else {
        path.to_owned()
    };
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    if let Some(name) = named {
        if p.is_empty() {
            p = name.to_owned();
        } else {
            p = format!("{p}.{name}");
        }
    }
    let full = match (prefix.is_empty(), p.is_empty()) {
        (true, _) => p,
        (false, true) => prefix.to_owned(),
        (false, false) if p.starts_with('[') => format!("{prefix}{p}"),
        (false, false) => format!("{prefix}.{p}"),
    };
    (!full.is_empty()).then_some(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dto::{ProvisionTenantRequest, SignalDto};

    #[test]
    fn syntax_errors_are_400_with_line_and_column() {
        let e = json::<ProvisionTenantRequest>(b"{\"tenant\": ", "").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "malformed_json"));
        assert!(e.message.contains("line 1"), "{}", e.message);
        let e = json::<ProvisionTenantRequest>(b"  ", "").unwrap_err();
        assert_eq!(e.code, "malformed_json");
    }

    #[test]
    fn shape_errors_are_422_naming_the_field() {
        let e = json::<Vec<SignalDto>>(
            br#"[{"source":"s","signal_id":"a","ts":1},{"source":"s","signal_id":"b","ts":"x"}]"#,
            "signals",
        )
        .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_field"));
        assert_eq!(e.field.as_deref(), Some("signals[1].ts"));
        let e = json::<Vec<SignalDto>>(br#"[{"source":"s","ts":1}]"#, "signals").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("signals[0].signal_id"));
        let e = json::<ProvisionTenantRequest>(
            br#"{"tenant":"a","name":"n","plan":"growth","region":"r","limits":{"max_signals_per_day":1,"max_sources":"many","rate_per_second":1}}"#,
            "",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limits.max_sources"));
        let e = json::<ProvisionTenantRequest>(br#"{"tenantt":"a"}"#, "").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("tenantt"));
    }

    #[test]
    fn ndjson_errors_name_the_line() {
        let body = b"{\"source\":\"s\",\"signal_id\":\"a\",\"ts\":1}\n\n{\"source\":\"s\",\"signal_id\":\"b\",\"ts\":2}\n{\"source\":\"s\",\"signal_id\":\"c\",\"ts\":true}\n";
        let e = ndjson::<SignalDto>(body).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("line 4.ts"));
        let e = ndjson::<SignalDto>(b"{\"source\":\n").unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("malformed_json", Some("line 1"))
        );
        let ok = ndjson::<SignalDto>(
            b"{\"source\":\"s\",\"signal_id\":\"a\",\"ts\":1}\r\n\n{\"source\":\"s\",\"signal_id\":\"b\",\"ts\":2}",
        )
        .unwrap();
        assert_eq!(ok.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 3]);
    }
}
