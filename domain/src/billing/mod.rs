//! Billing: a tenant's invoices (draft → issued → paid, or voided) and its monthly budgets.
//!
//! Owns: the `Invoice` aggregate (lines priced flat or by volume tiers, service credits, tax and
//! totals computed at issue, payment of exactly the total), the `Budget` aggregate (one per tenant
//! and month: usage recorded once per `usage_id`, thresholds at 80 % and 95 % of the limit
//! announced once each), and the money arithmetic both use.
//!
//! Money is an integer amount of minor units (`i64`, e.g. cents) with an ISO-4217 currency code;
//! there is no floating point, and every sum or product is checked: an overflow refuses the
//! command (`amount_overflow`), it never panics or wraps.

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    Budget, BudgetCommand, BudgetEvent, BudgetServices, BudgetSet, BudgetThresholdReached,
    CreditApplied, Invoice, InvoiceCommand, InvoiceEvent, InvoiceIssued, InvoiceLineAdded,
    InvoiceOpened, InvoicePaid, InvoiceServices, InvoiceStatus, InvoiceVoided, RecordedUsage,
    UsageRecorded,
};

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, Kind};

/// The invoice aggregate type: streams are `billing.Invoice/<tenant>/<invoice_id>`.
pub const INVOICE_STREAM_TYPE: &str = "billing.Invoice";

pub fn invoice_stream(tenant: &str, invoice_id: &str) -> String {
    format!("{INVOICE_STREAM_TYPE}/{tenant}/{invoice_id}")
}

/// The budget aggregate type: streams are `billing.Budget/<tenant>/<month>` (month `YYYY-MM`).
pub const BUDGET_STREAM_TYPE: &str = "billing.Budget";

pub fn budget_stream(tenant: &str, month: &str) -> String {
    format!("{BUDGET_STREAM_TYPE}/{tenant}/{month}")
}

/// Budget thresholds, in percent of the limit, each announced once per budget.
pub const BUDGET_THRESHOLDS_PCT: [i32; 2] = [80, 95];

/// Largest tax rate in basis points (100 %).
pub const MAX_TAX_RATE_BP: i32 = 10_000;

/// One volume tier of a line's price: the units up to `up_to` (inclusive, counted from the
/// start of the line's quantity) beyond the previous tier cost `unit_price_minor` each. The last
/// tier has no bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTier {
    pub up_to: Option<i64>,
    pub unit_price_minor: i64,
}

/// The refusal of an amount that does not fit in an `i64` of minor units.
pub fn overflow(field: &str) -> DomainError {
    DomainError {
        kind: Kind::Invalid,
        code: "amount_overflow",
        field: Some(field.to_owned()),
        message: format!("`{field}`: the amount does not fit in 64-bit minor units"),
    }
}

/// Checks an ISO-4217 currency code: exactly three uppercase ASCII letters.
pub fn check_currency(field: &str, currency: &str) -> Result<(), DomainError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!(
                "`{field}` must be an ISO-4217 code of three uppercase letters, got {currency:?}"
            ),
        ))
    }
}

/// Checks a month key: `YYYY-MM` with a month 01 to 12.
pub fn check_month(field: &str, month: &str) -> Result<(), DomainError> {
    let b = month.as_bytes();
    let ok = b.len() == 7
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..].iter().all(u8::is_ascii_digit)
        && matches!(
            &month[5..],
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
        );
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!("`{field}` must be a month `YYYY-MM`, got {month:?}"),
        ))
    }
}

/// Checks a line's volume tiers: bounds strictly increasing and above 0, only the last one
/// unbounded, prices not negative. No tiers is valid (the line is priced flat).
pub fn validate_tiers(tiers: &[VolumeTier]) -> Result<(), DomainError> {
    let mut previous = 0;
    for (i, tier) in tiers.iter().enumerate() {
        let last = i + 1 == tiers.len();
        if tier.unit_price_minor < 0 {
            return Err(DomainError::invalid(
                &format!("tiers[{i}].unit_price_minor"),
                "a tier's price must not be negative",
            ));
        }
        match (tier.up_to, last) {
            (None, true) => {}
            (None, false) => {
                return Err(DomainError::invalid(
                    &format!("tiers[{i}].up_to"),
                    "only the last tier may be unbounded",
                ));
            }
            (Some(_), true) => {
                return Err(DomainError::invalid(
                    &format!("tiers[{i}].up_to"),
                    "the last tier must be unbounded (`up_to` null)",
                ));
            }
            (Some(up_to), false) if up_to <= previous => {
                return Err(DomainError::invalid(
                    &format!("tiers[{i}].up_to"),
                    format!("tier bounds must increase: {up_to} follows {previous}"),
                ));
            }
            (Some(up_to), false) => previous = up_to,
        }
    }
    Ok(())
}

/// The price of `quantity` units: `quantity × unit_price_minor` without tiers; with tiers, each
/// unit is priced by the tier it falls in (graduated pricing). Checked: `None` on overflow.
/// Assumes `quantity >= 0` and tiers that passed [`validate_tiers`].
pub fn price_minor(quantity: i64, unit_price_minor: i64, tiers: &[VolumeTier]) -> Option<i64> {
    if tiers.is_empty() {
        return quantity.checked_mul(unit_price_minor);
    }
    let mut total: i64 = 0;
    let mut priced: i64 = 0;
    for tier in tiers {
        if priced >= quantity {
            break;
        }
        let upper = tier.up_to.map_or(quantity, |u| u.min(quantity));
        let units = upper - priced;
        total = total.checked_add(units.checked_mul(tier.unit_price_minor)?)?;
        priced = upper;
    }
    Some(total)
}

/// Tax on a net amount at `rate_bp` basis points, rounded half up to a minor unit.
/// Checked: `None` if the tax does not fit. Assumes `net >= 0` and `0 <= rate_bp <= 10000`.
pub fn tax_minor(net_minor: i64, rate_bp: i32) -> Option<i64> {
    let scaled = i128::from(net_minor) * i128::from(rate_bp);
    i64::try_from((scaled + 5_000).div_euclid(10_000)).ok()
}

/// Digits after the decimal point of a currency's major unit (ISO 4217): 2 for most (EUR,
/// USD, INR: 1 unit = 100 minor), 0 for currencies without minor units (JPY, KRW, …), 3 for
/// the dinars and rials that have thousandths (BHD, KWD, OMR, …). Unknown codes count as 2.
pub fn currency_exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// Scale of money in major units as the read models show it: thousandths, enough for every
/// currency's minor unit (`currency_exponent` ≤ 3).
pub const MAJOR_UNIT_SCALE: u32 = 3;

/// An amount of minor units as thousandths of the major unit (e.g. 1234 EUR cents → 12340,
/// i.e. 12.340 EUR; 5 JPY → 5000), exact; `None` if it does not fit.
pub fn minor_to_thousandths(amount_minor: i64, currency: &str) -> Option<i64> {
    let exp = currency_exponent(currency).min(MAJOR_UNIT_SCALE);
    amount_minor.checked_mul(10_i64.pow(MAJOR_UNIT_SCALE - exp))
}
