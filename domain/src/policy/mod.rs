//! Policy: a tenant's attribute-based access policies, versioned, and the decisions they make.
//!
//! Owns: the `Policy` aggregate (one per tenant and policy id: every change of its rules is a new
//! numbered version; one version at a time is active; an earlier version can be made active
//! again by a rollback; decisions taken by the active version are recorded), and the pure
//! decision logic: [`evaluate`] (highest priority matching rule wins, deny wins a tie, no match
//! denies) and [`dry_run`] (which recorded decisions a candidate rule set would flip).

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    Policy, PolicyCommand, PolicyDecisionRecorded, PolicyEvent, PolicyRolledBack, PolicyServices,
    PolicyVersionActivated, PolicyVersionCreated,
};

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, check_id};

/// The aggregate type: streams are `policy.Policy/<tenant>/<policy_id>`.
pub const STREAM_TYPE: &str = "policy.Policy";

pub fn stream(tenant: &str, policy_id: &str) -> String {
    format!("{STREAM_TYPE}/{tenant}/{policy_id}")
}

/// Most rules one policy version may have.
pub const MAX_RULES: usize = 1000;
/// Most values in one list condition (`scopes_any`, `classification_in`).
pub const MAX_LIST: usize = 64;

/// What a rule, or a decision, says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// Conditions on the subject; every one given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectCondition {
    /// The subject has exactly this role.
    pub role: Option<String>,
    /// The subject has at least one of these scopes (no condition if empty).
    pub scopes_any: Vec<String>,
}

/// Conditions on the resource; every one given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceCondition {
    /// The resource belongs to this tenant.
    pub tenant: Option<String>,
    /// The resource's classification is one of these (no condition if empty).
    pub classification_in: Vec<String>,
}

/// One rule of a policy: if the subject, resource and action conditions all hold, `effect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub rule_id: String,
    pub effect: Effect,
    pub priority: i32,
    pub subject: SubjectCondition,
    pub resource: ResourceCondition,
    /// The action is exactly this (any action if `None`).
    pub action: Option<String>,
}

/// The subject asking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub role: Option<String>,
    pub scopes: Vec<String>,
}

/// The resource asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub tenant: String,
    pub classification: String,
}

/// An access request: may `subject` do `action` on `resource`?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub subject: Subject,
    pub resource: Resource,
    pub action: String,
}

/// The answer to a request, and the rule that gave it (`None`: no rule matched, default deny).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub decision: Effect,
    pub matched_rule: Option<String>,
}

/// A recorded decision that a candidate rule set would decide the other way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    /// Position of the decision in the recorded list.
    pub index: usize,
    pub request: Request,
    pub recorded: Effect,
    pub candidate: Decision,
}

impl Rule {
    /// Whether every condition of the rule holds for `request`.
    pub fn matches(&self, request: &Request) -> bool {
        let s = &self.subject;
        let r = &self.resource;
        s.role
            .as_ref()
            .is_none_or(|role| request.subject.role.as_ref() == Some(role))
            && (s.scopes_any.is_empty()
                || s.scopes_any
                    .iter()
                    .any(|x| request.subject.scopes.contains(x)))
            && r.tenant
                .as_ref()
                .is_none_or(|t| *t == request.resource.tenant)
            && (r.classification_in.is_empty()
                || r.classification_in
                    .contains(&request.resource.classification))
            && self.action.as_ref().is_none_or(|a| *a == request.action)
    }
}

/// Decides `request` by `rules`: of the matching rules the highest priority wins; at equal
/// priority a deny wins over an allow (and the first in rule order names the decision); if no
/// rule matches, the request is denied.
pub fn evaluate(rules: &[Rule], request: &Request) -> Decision {
    let mut best: Option<&Rule> = None;
    for rule in rules.iter().filter(|r| r.matches(request)) {
        let better = best.is_none_or(|b| {
            rule.priority > b.priority
                || (rule.priority == b.priority
                    && rule.effect == Effect::Deny
                    && b.effect == Effect::Allow)
        });
        if better {
            best = Some(rule);
        }
    }
    match best {
        Some(rule) => Decision {
            decision: rule.effect,
            matched_rule: Some(rule.rule_id.clone()),
        },
        None => Decision {
            decision: Effect::Deny,
            matched_rule: None,
        },
    }
}

/// Every recorded decision that `candidate` rules would decide the other way, in order: what a
/// policy change would flip, before it is made.
pub fn dry_run(candidate: &[Rule], recorded: &[(Request, Effect)]) -> Vec<Flip> {
    recorded
        .iter()
        .enumerate()
        .filter_map(|(index, (request, was))| {
            let now = evaluate(candidate, request);
            (now.decision != *was).then(|| Flip {
                index,
                request: request.clone(),
                recorded: *was,
                candidate: now,
            })
        })
        .collect()
}

fn check_list(field: &str, values: &[String]) -> Result<(), DomainError> {
    if values.len() > MAX_LIST {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_LIST} values"),
        ));
    }
    for (i, v) in values.iter().enumerate() {
        check_value(&format!("{field}[{i}]"), v)?;
    }
    Ok(())
}

fn check_value(field: &str, value: &str) -> Result<(), DomainError> {
    if value.trim().is_empty() || value.len() > 128 {
        return Err(DomainError::invalid(
            field,
            format!("`{field}` must be 1 to 128 characters, not blank"),
        ));
    }
    Ok(())
}

/// Checks a rule set: at most [`MAX_RULES`], unique well-formed rule ids, bounded conditions.
pub fn validate_rules(rules: &[Rule]) -> Result<(), DomainError> {
    if rules.len() > MAX_RULES {
        return Err(DomainError::invalid(
            "rules",
            format!("at most {MAX_RULES} rules"),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        check_id(&at("rule_id"), &rule.rule_id, 64)?;
        if rules[..i].iter().any(|r| r.rule_id == rule.rule_id) {
            return Err(DomainError::invalid(
                &at("rule_id"),
                format!("rule id {:?} is used twice", rule.rule_id),
            ));
        }
        if let Some(role) = &rule.subject.role {
            check_value(&at("subject.role"), role)?;
        }
        check_list(&at("subject.scopes_any"), &rule.subject.scopes_any)?;
        if let Some(tenant) = &rule.resource.tenant {
            check_value(&at("resource.tenant"), tenant)?;
        }
        check_list(
            &at("resource.classification_in"),
            &rule.resource.classification_in,
        )?;
        if let Some(action) = &rule.action {
            check_value(&at("action"), action)?;
        }
    }
    Ok(())
}

/// Checks a request's attributes are well formed (a request may leave the role out).
pub fn validate_request(request: &Request) -> Result<(), DomainError> {
    if let Some(role) = &request.subject.role {
        check_value("request.subject.role", role)?;
    }
    check_list("request.subject.scopes", &request.subject.scopes)?;
    check_value("request.resource.tenant", &request.resource.tenant)?;
    check_value(
        "request.resource.classification",
        &request.resource.classification,
    )?;
    check_value("request.action", &request.action)?;
    Ok(())
}
