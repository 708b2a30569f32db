//! Personal data in payloads: which fields hold it, and sealing them under the data subject's
//! key (crypto-shredding).
//!
//! A schema marks a top-level string field as personal with `"annals.personal": true`, and
//! names the field that identifies the data subject with the record property
//! `"annals.subject": "<field>"`. Such fields are never written in clear: [`Registry::encode_json`]
//! seals them with the [`Sealer`] the registry was given (AEAD under a key per tenant and
//! subject), and [`Registry::decode_json`] opens them — or, once the subject's key is erased,
//! shows [`ERASED`]. The log's hashes cover the sealed bytes, so erasure never breaks a chain,
//! a Merkle tree or a proof.
//!
//! [`Registry::encode_json`]: crate::Registry::encode_json
//! [`Registry::decode_json`]: crate::Registry::decode_json

/// What a personal field reads as after its subject was erased.
pub const ERASED: &str = "[erased]";
/// What a personal field reads as where no key store is at hand (e.g. an auditor's tool).
pub const SEALED: &str = "[sealed]";
/// Prefix of a sealed value as stored in the payload.
pub const SEALED_PREFIX: &str = "annals-sealed:v1:";

/// Seals and opens personal field values; implemented by the subject key store.
pub trait Sealer: Send + Sync + std::fmt::Debug {
    /// The sealed form of `plaintext` of `field` for `subject` of `tenant` (the subject's key is
    /// created on first use).
    fn seal(
        &self,
        tenant: &str,
        subject: &str,
        field: &str,
        plaintext: &str,
    ) -> Result<String, String>;
    /// The plaintext, or `None` when the subject's key has been erased.
    fn open(
        &self,
        tenant: &str,
        subject: &str,
        field: &str,
        sealed: &str,
    ) -> Result<Option<String>, String>;
}

/// The personal fields of a schema and the field naming their subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonalFields {
    pub subject: Option<String>,
    pub fields: Vec<String>,
}

impl PersonalFields {
    /// Reads the markers from a schema's JSON text; fails if they are not usable.
    pub fn from_schema_text(text: &str) -> Result<PersonalFields, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let fields = v["fields"].as_array().cloned().unwrap_or_default();
        let is_string = |f: &serde_json::Value| {
            f["type"] == "string" || f["type"] == serde_json::json!(["null", "string"])
        };
        let mut out = PersonalFields {
            subject: v["annals.subject"].as_str().map(str::to_owned),
            fields: Vec::new(),
        };
        for f in &fields {
            if f["annals.personal"] == serde_json::Value::Bool(true) {
                let name = f["name"].as_str().unwrap_or_default();
                if !is_string(f) {
                    return Err(format!(
                        "personal field `{name}` must be a string (or null/string): only strings are sealed"
                    ));
                }
                out.fields.push(name.to_owned());
            }
        }
        if !out.fields.is_empty() {
            let Some(subject) = &out.subject else {
                return Err(
                    "a schema with personal fields must name its subject field (\"annals.subject\")"
                        .into(),
                );
            };
            if !fields
                .iter()
                .any(|f| f["name"] == subject.as_str() && f["type"] == "string")
            {
                return Err(format!(
                    "\"annals.subject\" names `{subject}`, which is not a string field of the record"
                ));
            }
            if out.fields.contains(subject) {
                return Err(format!(
                    "the subject field `{subject}` cannot itself be personal: it names the key"
                ));
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn parties<'a>(&self, payload: &'a serde_json::Value) -> Option<(&'a str, &'a str)> {
        let subject = self.subject.as_deref()?;
        Some((payload["tenant"].as_str()?, payload[subject].as_str()?))
    }

    /// Replaces each personal value of `payload` by its sealed form.
    pub fn seal(
        &self,
        payload: &mut serde_json::Value,
        sealer: Option<&dyn Sealer>,
    ) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(sealer) = sealer else {
            return Err(
                "it holds personal data, and this process has no subject key store to seal it with"
                    .into(),
            );
        };
        let (tenant, subject) = self
            .parties(payload)
            .map(|(t, s)| (t.to_owned(), s.to_owned()))
            .ok_or("personal data needs `tenant` and the subject field set")?;
        for f in &self.fields {
            if let Some(plain) = payload[f.as_str()].as_str() {
                let sealed = sealer.seal(&tenant, &subject, f, plain)?;
                payload[f.as_str()] = serde_json::Value::String(sealed);
            }
        }
        Ok(())
    }

    /// Replaces each sealed value of `payload` by its plaintext, [`ERASED`] or [`SEALED`].
    pub fn open(
        &self,
        payload: &mut serde_json::Value,
        sealer: Option<&dyn Sealer>,
    ) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let Some((tenant, subject)) = self
            .parties(payload)
            .map(|(t, s)| (t.to_owned(), s.to_owned()))
        else {
            return Ok(());
        };
        for f in &self.fields {
            let Some(sealed) = payload[f.as_str()].as_str().map(str::to_owned) else {
                continue;
            };
            if !sealed.starts_with(SEALED_PREFIX) {
                continue;
            }
            let shown = match sealer {
                None => SEALED.to_owned(),
                Some(s) => s
                    .open(&tenant, &subject, f, &sealed)?
                    .unwrap_or_else(|| ERASED.to_owned()),
            };
            payload[f.as_str()] = serde_json::Value::String(shown);
        }
        Ok(())
    }
}
