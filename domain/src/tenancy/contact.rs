//! A tenant's contacts: people, and so data subjects. Their name and email are personal data
//! (sealed in the log under the contact's own key, see `annals_schemas::personal`), and
//! `EraseSubject` erases them for good: the `SubjectErased` event records the request, and the
//! caller then deletes the subject's key.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::TenantStatus;
use crate::error::{DomainError, check_id};
use crate::payload::{Payload, json_of, parse};

/// The aggregate type: streams are `tenancy.Contact/<tenant>/<contact_id>`.
pub const CONTACT_STREAM_TYPE: &str = "tenancy.Contact";

pub fn contact_stream(tenant: &str, contact_id: &str) -> String {
    format!("{CONTACT_STREAM_TYPE}/{tenant}/{contact_id}")
}

/// What a contact can be for.
pub const CONTACT_ROLES: [&str; 3] = ["billing", "security", "technical"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContactCommand {
    RegisterContact {
        tenant: String,
        contact_id: String,
        name: String,
        email: String,
        role: String,
    },
    /// Erase the subject's personal data (GDPR art. 17). Allowed whatever the tenant's status.
    EraseSubject { reason: String, erased_at: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRegistered {
    pub tenant: String,
    pub contact_id: String,
    pub name: String,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectErased {
    pub tenant: String,
    pub subject: String,
    pub reason: String,
    pub erased_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContactEvent {
    ContactRegistered(ContactRegistered),
    SubjectErased(SubjectErased),
}

impl DomainEvent for ContactEvent {
    fn event_type(&self) -> String {
        Payload::event_type(self).to_owned()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Payload for ContactEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ContactEvent::ContactRegistered(_) => "tenancy.ContactRegistered",
            ContactEvent::SubjectErased(_) => "tenancy.SubjectErased",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            ContactEvent::ContactRegistered(e) => json_of(e),
            ContactEvent::SubjectErased(e) => json_of(e),
        }
    }

    fn from_json(t: &str, v: serde_json::Value) -> Option<Result<Self, String>> {
        Some(match t {
            "tenancy.ContactRegistered" => parse(t, v).map(ContactEvent::ContactRegistered),
            "tenancy.SubjectErased" => parse(t, v).map(ContactEvent::SubjectErased),
            _ => return None,
        })
    }
}

/// What the contact aggregate needs to know besides its own events.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContactServices {
    pub tenant: TenantStatus,
}

/// One contact. After erasure it keeps only that it existed and was erased.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub tenant: Option<String>,
    pub contact_id: Option<String>,
    /// Shown as read from the log: `[erased]` after erasure (or `[sealed]` without keys).
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub erased: bool,
}

impl Contact {
    fn decide(
        &self,
        command: ContactCommand,
        services: &ContactServices,
    ) -> Result<Option<ContactEvent>, DomainError> {
        match command {
            ContactCommand::RegisterContact {
                tenant,
                contact_id,
                name,
                email,
                role,
            } => {
                services.tenant.require_active(&tenant)?;
                if self.erased {
                    return Err(DomainError::conflict(
                        "subject_erased",
                        format!(
                            "contact `{contact_id}` was erased; register the person under a new contact id"
                        ),
                    ));
                }
                if self.contact_id.is_some() {
                    return Err(DomainError::conflict(
                        "contact_exists",
                        format!("contact `{contact_id}` is already registered"),
                    ));
                }
                check_id("contact_id", &contact_id, 128)?;
                if name.trim().is_empty() || name.chars().count() > 200 {
                    return Err(DomainError::invalid(
                        "name",
                        "`name` must be 1 to 200 characters",
                    ));
                }
                let at = email.find('@');
                if email.len() > 254
                    || at.is_none_or(|i| i == 0 || i + 1 == email.len())
                    || email.contains(char::is_whitespace)
                {
                    return Err(DomainError::invalid(
                        "email",
                        format!("`email` must be an address like name@example.com, got {email:?}"),
                    ));
                }
                if !CONTACT_ROLES.contains(&role.as_str()) {
                    return Err(DomainError::invalid(
                        "role",
                        format!(
                            "`role` must be one of {}, got {role:?}",
                            CONTACT_ROLES.join(", ")
                        ),
                    ));
                }
                Ok(Some(ContactEvent::ContactRegistered(ContactRegistered {
                    tenant,
                    contact_id,
                    name,
                    email,
                    role,
                })))
            }
            ContactCommand::EraseSubject { reason, erased_at } => {
                let (Some(tenant), Some(subject)) = (&self.tenant, &self.contact_id) else {
                    return Err(DomainError::not_found(
                        "unknown_subject",
                        "no such contact: nothing to erase",
                    ));
                };
                if self.erased {
                    // Already recorded; the caller still makes sure the key is gone.
                    return Ok(None);
                }
                if reason.trim().is_empty() || reason.len() > 500 {
                    return Err(DomainError::invalid(
                        "reason",
                        "`reason` must be 1 to 500 characters (the request's reference)",
                    ));
                }
                Ok(Some(ContactEvent::SubjectErased(SubjectErased {
                    tenant: tenant.clone(),
                    subject: subject.clone(),
                    reason,
                    erased_at,
                })))
            }
        }
    }
}

impl Aggregate for Contact {
    const TYPE: &'static str = CONTACT_STREAM_TYPE;
    type Command = ContactCommand;
    type Event = ContactEvent;
    type Error = DomainError;
    type Services = ContactServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ContactEvent::ContactRegistered(c) => {
                self.tenant = Some(c.tenant);
                self.contact_id = Some(c.contact_id);
                self.name = Some(c.name);
                self.email = Some(c.email);
                self.role = Some(c.role);
            }
            ContactEvent::SubjectErased(_) => {
                self.erased = true;
                self.name = None;
                self.email = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::error::Kind;

    type Given = TestFramework<Contact>;

    fn active() -> ContactServices {
        ContactServices {
            tenant: TenantStatus::Active,
        }
    }

    fn register() -> ContactCommand {
        ContactCommand::RegisterContact {
            tenant: "acme".into(),
            contact_id: "c-1".into(),
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            role: "billing".into(),
        }
    }

    fn registered() -> ContactEvent {
        ContactEvent::ContactRegistered(ContactRegistered {
            tenant: "acme".into(),
            contact_id: "c-1".into(),
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            role: "billing".into(),
        })
    }

    fn erased() -> ContactEvent {
        ContactEvent::SubjectErased(SubjectErased {
            tenant: "acme".into(),
            subject: "c-1".into(),
            reason: "DSR-1".into(),
            erased_at: 7,
        })
    }

    fn erase() -> ContactCommand {
        ContactCommand::EraseSubject {
            reason: "DSR-1".into(),
            erased_at: 7,
        }
    }

    fn refused_with(result: Result<Vec<ContactEvent>, DomainError>, code: &str) {
        match result {
            Err(e) => assert_eq!(e.code, code, "{e:?}"),
            Ok(events) => panic!("expected {code}, got {events:?}"),
        }
    }

    #[test]
    fn a_contact_is_registered_once() {
        Given::with(active())
            .given_no_previous_events()
            .when(register())
            .then_expect_events(vec![registered()]);
        let r = Given::with(active())
            .given(vec![registered()])
            .when(register())
            .inspect_result();
        refused_with(r, "contact_exists");
    }

    #[test]
    fn bad_contacts_and_inactive_tenants_are_refused() {
        for (field, value) in [
            ("email", "not-an-address"),
            ("email", "@example.com"),
            ("name", " "),
            ("role", "ceo"),
            ("contact_id", "has space"),
        ] {
            let mut c = register();
            if let ContactCommand::RegisterContact {
                name,
                email,
                role,
                contact_id,
                ..
            } = &mut c
            {
                match field {
                    "email" => *email = value.into(),
                    "name" => *name = value.into(),
                    "role" => *role = value.into(),
                    _ => *contact_id = value.into(),
                }
            }
            let r = Given::with(active())
                .given_no_previous_events()
                .when(c)
                .inspect_result();
            match r {
                Err(e) => {
                    assert_eq!(e.kind, Kind::Invalid);
                    assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
                }
                Ok(_) => panic!("{field}={value} accepted"),
            }
        }
        let r = Given::with(ContactServices {
            tenant: TenantStatus::Suspended,
        })
        .given_no_previous_events()
        .when(register())
        .inspect_result();
        refused_with(r, "tenant_suspended");
    }

    #[test]
    fn erasure_is_recorded_once_and_ends_the_contact() {
        Given::with(ContactServices {
            tenant: TenantStatus::Suspended,
        })
        .given(vec![registered()])
        .when(erase())
        .then_expect_events(vec![erased()]);
        Given::with(active())
            .given(vec![registered(), erased()])
            .when(erase())
            .then_expect_events(vec![]);
        let r = Given::with(active())
            .given(vec![registered(), erased()])
            .when(register())
            .inspect_result();
        refused_with(r, "subject_erased");
        let r = Given::with(active())
            .given_no_previous_events()
            .when(erase())
            .inspect_result();
        refused_with(r, "unknown_subject");
    }
}
