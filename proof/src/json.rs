//! Strict reading of proof documents: every field is named in errors, unknown fields are
//! refused, and hex must be lowercase, so one document has one spelling and any changed byte is
//! either refused here or changes a value that a hash or signature covers.

use serde_json::{Map, Value};

use crate::VerifyError;
use crate::merkle::Hash;

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Lowercase hex only (`hex::decode` would also take uppercase).
pub(crate) fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        hex::decode(s).ok()
    } else {
        None
    }
}

/// The fields of one JSON object, taken one by one.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    at: String,
    seen: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    pub fn new(v: &'a Value, at: &str) -> Result<Fields<'a>, VerifyError> {
        let map = v
            .as_object()
            .ok_or_else(|| VerifyError::new("json", format!("`{at}` is not an object")))?;
        Ok(Fields {
            map,
            at: at.to_owned(),
            seen: Vec::new(),
        })
    }

    fn path(&self, name: &str) -> String {
        if self.at.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.at)
        }
    }

    fn bad(&self, name: &str, expected: &str) -> VerifyError {
        VerifyError::new(
            "json",
            format!("`{}`: expected {expected}", self.path(name)),
        )
    }

    pub fn value(&mut self, name: &'static str) -> Result<&'a Value, VerifyError> {
        self.seen.push(name);
        self.map
            .get(name)
            .ok_or_else(|| VerifyError::new("json", format!("`{}` is missing", self.path(name))))
    }

    pub fn string(&mut self, name: &'static str) -> Result<String, VerifyError> {
        self.value(name)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.bad(name, "a string"))
    }

    pub fn u64(&mut self, name: &'static str) -> Result<u64, VerifyError> {
        self.value(name)?
            .as_u64()
            .ok_or_else(|| self.bad(name, "a non-negative integer"))
    }

    pub fn u32(&mut self, name: &'static str) -> Result<u32, VerifyError> {
        let v = self.u64(name)?;
        u32::try_from(v).map_err(|_| self.bad(name, "an integer below 2^32"))
    }

    pub fn i64(&mut self, name: &'static str) -> Result<i64, VerifyError> {
        self.value(name)?
            .as_i64()
            .ok_or_else(|| self.bad(name, "an integer"))
    }

    pub fn bytes(&mut self, name: &'static str) -> Result<Vec<u8>, VerifyError> {
        let s = self.string(name)?;
        parse_hex(&s).ok_or_else(|| self.bad(name, "lowercase hex digits"))
    }

    pub fn array<const N: usize>(&mut self, name: &'static str) -> Result<[u8; N], VerifyError> {
        let b = self.bytes(name)?;
        b.try_into()
            .map_err(|_| self.bad(name, &format!("{} lowercase hex digits", 2 * N)))
    }

    pub fn hash(&mut self, name: &'static str) -> Result<Hash, VerifyError> {
        self.array::<32>(name)
    }

    pub fn hashes(&mut self, name: &'static str) -> Result<Vec<Hash>, VerifyError> {
        let list = self
            .value(name)?
            .as_array()
            .ok_or_else(|| self.bad(name, "an array of hashes"))?;
        list.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .and_then(parse_hex)
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        VerifyError::new(
                            "json",
                            format!(
                                "`{}[{i}]`: expected 64 lowercase hex digits",
                                self.path(name)
                            ),
                        )
                    })
            })
            .collect()
    }

    /// Refuses fields that were not read.
    pub fn finish(self) -> Result<(), VerifyError> {
        match self.map.keys().find(|k| !self.seen.contains(&k.as_str())) {
            Some(k) => Err(VerifyError::new(
                "json",
                format!("unknown field `{}`", self.path(k)),
            )),
            None => Ok(()),
        }
    }
}
