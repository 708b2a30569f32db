//! Given / when / then for every rule and refusal of the `Invoice` and `Budget` aggregates, and
//! the pure money arithmetic they use.

use cqrs_es::test::TestFramework;

use super::*;
use crate::error::Kind;
use crate::tenancy::TenantStatus;

type GivenInvoice = TestFramework<Invoice>;
type GivenBudget = TestFramework<Budget>;

fn services() -> InvoiceServices {
    InvoiceServices {
        tenant: TenantStatus::Active,
        tenant_currency: Some("EUR".into()),
    }
}

fn budget_services() -> BudgetServices {
    BudgetServices {
        tenant: TenantStatus::Active,
        tenant_currency: Some("EUR".into()),
    }
}

// --- pure money -------------------------------------------------------------------------------

fn tiers() -> Vec<VolumeTier> {
    vec![
        VolumeTier {
            up_to: Some(100),
            unit_price_minor: 10,
        },
        VolumeTier {
            up_to: Some(1000),
            unit_price_minor: 5,
        },
        VolumeTier {
            up_to: None,
            unit_price_minor: 1,
        },
    ]
}

#[test]
fn flat_and_tiered_prices() {
    assert_eq!(price_minor(7, 250, &[]), Some(1750));
    assert_eq!(price_minor(50, 0, &tiers()), Some(500));
    assert_eq!(price_minor(100, 0, &tiers()), Some(1000));
    assert_eq!(price_minor(101, 0, &tiers()), Some(1005));
    // 100 × 10 + 900 × 5 + 1000 × 1
    assert_eq!(price_minor(2000, 0, &tiers()), Some(6500));
    let one = [VolumeTier {
        up_to: None,
        unit_price_minor: 3,
    }];
    assert_eq!(price_minor(4, 0, &one), Some(12));
}

#[test]
fn prices_that_overflow_are_none_never_a_panic() {
    assert_eq!(price_minor(i64::MAX, 2, &[]), None);
    assert_eq!(price_minor(i64::MAX, 0, &tiers()), None);
    assert_eq!(price_minor(i64::MAX, 1, &[]), Some(i64::MAX));
}

#[test]
fn tax_rounds_half_up() {
    assert_eq!(tax_minor(1000, 1900), Some(190));
    // 1 × 5000 bp = 0.5 → 1; 1 × 4999 bp = 0.4999 → 0
    assert_eq!(tax_minor(1, 5000), Some(1));
    assert_eq!(tax_minor(1, 4999), Some(0));
    assert_eq!(tax_minor(333, 1000), Some(33)); // 33.3
    assert_eq!(tax_minor(335, 1000), Some(34)); // 33.5
    assert_eq!(tax_minor(0, 10_000), Some(0));
    assert_eq!(tax_minor(i64::MAX, 10_000), Some(i64::MAX));
}

#[test]
fn bad_tiers_are_refused_naming_the_tier() {
    let unbounded_first = vec![
        VolumeTier {
            up_to: None,
            unit_price_minor: 1,
        },
        VolumeTier {
            up_to: None,
            unit_price_minor: 1,
        },
    ];
    let bounded_last = vec![VolumeTier {
        up_to: Some(10),
        unit_price_minor: 1,
    }];
    let not_increasing = vec![
        VolumeTier {
            up_to: Some(10),
            unit_price_minor: 1,
        },
        VolumeTier {
            up_to: Some(10),
            unit_price_minor: 1,
        },
        VolumeTier {
            up_to: None,
            unit_price_minor: 1,
        },
    ];
    let zero_bound = vec![
        VolumeTier {
            up_to: Some(0),
            unit_price_minor: 1,
        },
        VolumeTier {
            up_to: None,
            unit_price_minor: 1,
        },
    ];
    let negative = vec![VolumeTier {
        up_to: None,
        unit_price_minor: -1,
    }];
    for (t, field) in [
        (unbounded_first, "tiers[0].up_to"),
        (bounded_last, "tiers[0].up_to"),
        (not_increasing, "tiers[1].up_to"),
        (zero_bound, "tiers[0].up_to"),
        (negative, "tiers[0].unit_price_minor"),
    ] {
        assert_eq!(
            validate_tiers(&t).unwrap_err().field.as_deref(),
            Some(field)
        );
    }
    assert!(validate_tiers(&tiers()).is_ok());
    assert!(validate_tiers(&[]).is_ok());
}

#[test]
fn currencies_and_months() {
    assert!(check_currency("c", "EUR").is_ok());
    for bad in ["eur", "EU", "EURO", "E1R", ""] {
        assert!(check_currency("c", bad).is_err(), "{bad}");
    }
    assert!(check_month("m", "2025-01").is_ok());
    assert!(check_month("m", "2025-12").is_ok());
    for bad in [
        "2025-13",
        "2025-00",
        "2025-1",
        "25-01",
        "2025/01",
        "2025-01-01",
    ] {
        assert!(check_month("m", bad).is_err(), "{bad}");
    }
}

#[test]
fn stream_names() {
    assert_eq!(
        invoice_stream("acme", "inv-1"),
        "billing.Invoice/acme/inv-1"
    );
    assert_eq!(
        budget_stream("acme", "2025-03"),
        "billing.Budget/acme/2025-03"
    );
}

// --- Invoice ----------------------------------------------------------------------------------

fn open() -> InvoiceCommand {
    InvoiceCommand::OpenInvoice {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        currency: "EUR".into(),
        purchase_order: Some("PO-77".into()),
        opened_at: 1_000,
    }
}

fn opened() -> InvoiceEvent {
    InvoiceEvent::InvoiceOpened(InvoiceOpened {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        currency: "EUR".into(),
        purchase_order: Some("PO-77".into()),
        opened_at: 1_000,
    })
}

fn add_line(line_id: &str, quantity: i64, unit_price_minor: i64) -> InvoiceCommand {
    InvoiceCommand::AddLine {
        line_id: line_id.into(),
        description: "Signals ingested".into(),
        meter: "signals".into(),
        quantity,
        unit_price_minor,
        tiers: vec![],
    }
}

fn line_added(line_id: &str, quantity: i64, unit_price_minor: i64) -> InvoiceEvent {
    InvoiceEvent::InvoiceLineAdded(InvoiceLineAdded {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        line_id: line_id.into(),
        description: "Signals ingested".into(),
        meter: "signals".into(),
        quantity,
        unit_price_minor,
        tiers: vec![],
        amount_minor: quantity * unit_price_minor,
        currency: "EUR".into(),
    })
}

fn credit(credit_id: &str, amount_minor: i64) -> InvoiceCommand {
    InvoiceCommand::ApplyCredit {
        credit_id: credit_id.into(),
        reason: "SLA service credit".into(),
        amount_minor,
    }
}

fn credited(credit_id: &str, amount_minor: i64) -> InvoiceEvent {
    InvoiceEvent::CreditApplied(CreditApplied {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        credit_id: credit_id.into(),
        reason: "SLA service credit".into(),
        amount_minor,
        currency: "EUR".into(),
    })
}

fn issue() -> InvoiceCommand {
    InvoiceCommand::IssueInvoice {
        tax_jurisdiction: "DE".into(),
        tax_rate_bp: 1900,
        issued_at: 2_000,
    }
}

/// Issued after lines of 1000 + 335 and a credit of 100: net 1235, tax 19 % = 234.65 → 235.
fn issued() -> InvoiceEvent {
    InvoiceEvent::InvoiceIssued(InvoiceIssued {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        currency: "EUR".into(),
        subtotal_minor: 1335,
        credits_minor: 100,
        tax_jurisdiction: "DE".into(),
        tax_rate_bp: 1900,
        tax_minor: 235,
        total_minor: 1470,
        issued_at: 2_000,
    })
}

fn draft() -> Vec<InvoiceEvent> {
    vec![
        opened(),
        line_added("l1", 10, 100),
        line_added("l2", 1, 335),
        credited("c1", 100),
    ]
}

fn issued_history() -> Vec<InvoiceEvent> {
    let mut events = draft();
    events.push(issued());
    events
}

fn paid() -> InvoiceEvent {
    InvoiceEvent::InvoicePaid(InvoicePaid {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        amount_minor: 1470,
        currency: "EUR".into(),
        paid_at: 3_000,
    })
}

fn voided() -> InvoiceEvent {
    InvoiceEvent::InvoiceVoided(InvoiceVoided {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        reason: "duplicate".into(),
    })
}

fn invoice_err(given: Vec<InvoiceEvent>, cmd: InvoiceCommand) -> crate::DomainError {
    GivenInvoice::with(services())
        .given(given)
        .when(cmd)
        .inspect_result()
        .unwrap_err()
}

#[test]
fn opening_an_invoice() {
    GivenInvoice::with(services())
        .given_no_previous_events()
        .when(open())
        .then_expect_events(vec![opened()]);
    // Without a tenant currency any valid currency is accepted.
    GivenInvoice::with(InvoiceServices {
        tenant: TenantStatus::Active,
        tenant_currency: None,
    })
    .given_no_previous_events()
    .when(InvoiceCommand::OpenInvoice {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        currency: "USD".into(),
        purchase_order: None,
        opened_at: 5,
    })
    .then_expect_events(vec![InvoiceEvent::InvoiceOpened(InvoiceOpened {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        currency: "USD".into(),
        purchase_order: None,
        opened_at: 5,
    })]);
}

#[test]
fn opening_again_is_a_no_op_and_with_other_content_a_conflict() {
    GivenInvoice::with(services())
        .given(vec![opened()])
        .when(open())
        .then_expect_events(vec![]);
    let err = invoice_err(
        vec![opened()],
        InvoiceCommand::OpenInvoice {
            tenant: "acme".into(),
            invoice_id: "inv-1".into(),
            currency: "EUR".into(),
            purchase_order: None,
            opened_at: 1_000,
        },
    );
    assert_eq!((err.kind, err.code), (Kind::Conflict, "invoice_exists"));
}

#[test]
fn opening_refuses_bad_fields_naming_them() {
    let with = |f: &dyn Fn(&mut InvoiceCommand)| {
        let mut cmd = open();
        f(&mut cmd);
        cmd
    };
    let cases: Vec<(InvoiceCommand, &str)> = vec![
        (
            with(&|c| {
                if let InvoiceCommand::OpenInvoice { tenant, .. } = c {
                    *tenant = "a b".into()
                }
            }),
            "tenant",
        ),
        (
            with(&|c| {
                if let InvoiceCommand::OpenInvoice { invoice_id, .. } = c {
                    *invoice_id = "".into()
                }
            }),
            "invoice_id",
        ),
        (
            with(&|c| {
                if let InvoiceCommand::OpenInvoice { currency, .. } = c {
                    *currency = "eur".into()
                }
            }),
            "currency",
        ),
        // Not the tenant's currency.
        (
            with(&|c| {
                if let InvoiceCommand::OpenInvoice { currency, .. } = c {
                    *currency = "USD".into()
                }
            }),
            "currency",
        ),
        (
            with(&|c| {
                if let InvoiceCommand::OpenInvoice { purchase_order, .. } = c {
                    *purchase_order = Some(" ".into())
                }
            }),
            "purchase_order",
        ),
        (
            with(&|c| {
                if let InvoiceCommand::OpenInvoice { opened_at, .. } = c {
                    *opened_at = 0
                }
            }),
            "opened_at",
        ),
    ];
    for (cmd, field) in cases {
        let err = invoice_err(vec![], cmd);
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
        assert_eq!(err.kind, Kind::Invalid);
    }
}

#[test]
fn commands_of_an_inactive_tenant_are_refused() {
    for (status, code) in [
        (TenantStatus::Unknown, "unknown_tenant"),
        (TenantStatus::Suspended, "tenant_suspended"),
        (TenantStatus::Archived, "tenant_archived"),
    ] {
        let s = InvoiceServices {
            tenant: status,
            tenant_currency: None,
        };
        let err = GivenInvoice::with(s.clone())
            .given_no_previous_events()
            .when(open())
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, code);
        let err = GivenInvoice::with(s)
            .given(vec![opened()])
            .when(add_line("l1", 1, 1))
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, code);
    }
}

#[test]
fn commands_for_an_unopened_invoice_are_refused() {
    for cmd in [
        add_line("l1", 1, 1),
        credit("c1", 1),
        issue(),
        InvoiceCommand::PayInvoice {
            amount_minor: 1,
            paid_at: 1,
        },
        InvoiceCommand::VoidInvoice { reason: "x".into() },
    ] {
        let err = invoice_err(vec![], cmd);
        assert_eq!((err.kind, err.code), (Kind::NotFound, "unknown_invoice"));
    }
}

#[test]
fn adding_lines_flat_and_tiered() {
    GivenInvoice::with(services())
        .given(vec![opened()])
        .when(add_line("l1", 10, 100))
        .then_expect_events(vec![line_added("l1", 10, 100)]);
    GivenInvoice::with(services())
        .given(vec![opened()])
        .when(InvoiceCommand::AddLine {
            line_id: "l2".into(),
            description: "Signals ingested".into(),
            meter: "signals".into(),
            quantity: 2000,
            unit_price_minor: 0,
            tiers: tiers(),
        })
        .then_expect_events(vec![InvoiceEvent::InvoiceLineAdded(InvoiceLineAdded {
            tenant: "acme".into(),
            invoice_id: "inv-1".into(),
            line_id: "l2".into(),
            description: "Signals ingested".into(),
            meter: "signals".into(),
            quantity: 2000,
            unit_price_minor: 0,
            tiers: tiers(),
            amount_minor: 6500,
            currency: "EUR".into(),
        })]);
}

#[test]
fn a_retried_line_is_a_no_op_and_another_under_its_id_a_conflict() {
    GivenInvoice::with(services())
        .given(vec![opened(), line_added("l1", 10, 100)])
        .when(add_line("l1", 10, 100))
        .then_expect_events(vec![]);
    // Even once the invoice is issued, a retry is acknowledged.
    GivenInvoice::with(services())
        .given(issued_history())
        .when(add_line("l1", 10, 100))
        .then_expect_events(vec![]);
    let err = invoice_err(
        vec![opened(), line_added("l1", 10, 100)],
        add_line("l1", 11, 100),
    );
    assert_eq!((err.kind, err.code), (Kind::Conflict, "line_exists"));
}

#[test]
fn lines_refuse_bad_fields_naming_them() {
    let line = |quantity, unit_price_minor, tiers: Vec<VolumeTier>| InvoiceCommand::AddLine {
        line_id: "l9".into(),
        description: "x".into(),
        meter: "signals".into(),
        quantity,
        unit_price_minor,
        tiers,
    };
    let cases = [
        (line(0, 1, vec![]), "quantity"),
        (line(-3, 1, vec![]), "quantity"),
        (line(1, -1, vec![]), "unit_price_minor"),
        (line(1, 5, tiers()), "unit_price_minor"),
        (
            line(
                1,
                0,
                vec![VolumeTier {
                    up_to: Some(3),
                    unit_price_minor: 1,
                }],
            ),
            "tiers[0].up_to",
        ),
        (
            InvoiceCommand::AddLine {
                line_id: "l9".into(),
                description: " ".into(),
                meter: "signals".into(),
                quantity: 1,
                unit_price_minor: 1,
                tiers: vec![],
            },
            "description",
        ),
        (
            InvoiceCommand::AddLine {
                line_id: "l9".into(),
                description: "x".into(),
                meter: "".into(),
                quantity: 1,
                unit_price_minor: 1,
                tiers: vec![],
            },
            "meter",
        ),
        (
            InvoiceCommand::AddLine {
                line_id: "no spaces".into(),
                description: "x".into(),
                meter: "m".into(),
                quantity: 1,
                unit_price_minor: 1,
                tiers: vec![],
            },
            "line_id",
        ),
    ];
    for (cmd, field) in cases {
        let err = invoice_err(vec![opened()], cmd);
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
}

#[test]
fn amounts_that_overflow_are_refused_not_wrapped() {
    let err = invoice_err(vec![opened()], add_line("big", i64::MAX, 2));
    assert_eq!((err.kind, err.code), (Kind::Invalid, "amount_overflow"));
    // Each line fits, the subtotal would not.
    let err = invoice_err(
        vec![opened(), line_added("l1", i64::MAX, 1)],
        add_line("l2", 1, 1),
    );
    assert_eq!(err.code, "amount_overflow");
    // Subtotal fits, subtotal + tax would not.
    let err = invoice_err(vec![opened(), line_added("l1", i64::MAX, 1)], issue());
    assert_eq!(err.code, "amount_overflow");
}

#[test]
fn credits_up_to_what_is_left() {
    GivenInvoice::with(services())
        .given(vec![opened(), line_added("l1", 10, 100)])
        .when(credit("c1", 1000))
        .then_expect_events(vec![credited("c1", 1000)]);
    let err = invoice_err(
        vec![opened(), line_added("l1", 10, 100), credited("c1", 600)],
        credit("c2", 401),
    );
    assert_eq!(err.field.as_deref(), Some("amount_minor"));
    GivenInvoice::with(services())
        .given(vec![
            opened(),
            line_added("l1", 10, 100),
            credited("c1", 600),
        ])
        .when(credit("c2", 400))
        .then_expect_events(vec![credited("c2", 400)]);
    // Nothing to credit on an empty draft.
    let err = invoice_err(vec![opened()], credit("c1", 1));
    assert_eq!(err.field.as_deref(), Some("amount_minor"));
    for (amount, field) in [(0, "amount_minor"), (-5, "amount_minor")] {
        let err = invoice_err(draft(), credit("c9", amount));
        assert_eq!(err.field.as_deref(), Some(field));
    }
    let err = invoice_err(
        draft(),
        InvoiceCommand::ApplyCredit {
            credit_id: "c9".into(),
            reason: "".into(),
            amount_minor: 1,
        },
    );
    assert_eq!(err.field.as_deref(), Some("reason"));
}

#[test]
fn a_retried_credit_is_a_no_op_and_another_under_its_id_a_conflict() {
    GivenInvoice::with(services())
        .given(draft())
        .when(credit("c1", 100))
        .then_expect_events(vec![]);
    let err = invoice_err(draft(), credit("c1", 50));
    assert_eq!((err.kind, err.code), (Kind::Conflict, "credit_exists"));
}

#[test]
fn issuing_computes_tax_and_total() {
    GivenInvoice::with(services())
        .given(draft())
        .when(issue())
        .then_expect_events(vec![issued()]);
    // Zero tax, no credits.
    GivenInvoice::with(services())
        .given(vec![opened(), line_added("l1", 3, 333)])
        .when(InvoiceCommand::IssueInvoice {
            tax_jurisdiction: "US-OR".into(),
            tax_rate_bp: 0,
            issued_at: 2_000,
        })
        .then_expect_events(vec![InvoiceEvent::InvoiceIssued(InvoiceIssued {
            tenant: "acme".into(),
            invoice_id: "inv-1".into(),
            currency: "EUR".into(),
            subtotal_minor: 999,
            credits_minor: 0,
            tax_jurisdiction: "US-OR".into(),
            tax_rate_bp: 0,
            tax_minor: 0,
            total_minor: 999,
            issued_at: 2_000,
        })]);
}

#[test]
fn issuing_again_is_a_no_op_and_otherwise_a_conflict() {
    GivenInvoice::with(services())
        .given(issued_history())
        .when(issue())
        .then_expect_events(vec![]);
    let err = invoice_err(
        issued_history(),
        InvoiceCommand::IssueInvoice {
            tax_jurisdiction: "DE".into(),
            tax_rate_bp: 700,
            issued_at: 2_000,
        },
    );
    assert_eq!(
        (err.kind, err.code),
        (Kind::Conflict, "invoice_already_issued")
    );
}

#[test]
fn issuing_refusals() {
    let err = invoice_err(vec![opened()], issue());
    assert_eq!((err.kind, err.code), (Kind::Conflict, "invoice_empty"));
    let err = invoice_err(vec![opened(), line_added("l1", 1, 1), voided()], issue());
    assert_eq!(err.code, "invoice_not_draft");
    for (cmd, field) in [
        (
            InvoiceCommand::IssueInvoice {
                tax_jurisdiction: "DE".into(),
                tax_rate_bp: 10_001,
                issued_at: 2_000,
            },
            "tax_rate_bp",
        ),
        (
            InvoiceCommand::IssueInvoice {
                tax_jurisdiction: "DE".into(),
                tax_rate_bp: -1,
                issued_at: 2_000,
            },
            "tax_rate_bp",
        ),
        (
            InvoiceCommand::IssueInvoice {
                tax_jurisdiction: "".into(),
                tax_rate_bp: 0,
                issued_at: 2_000,
            },
            "tax_jurisdiction",
        ),
        (
            InvoiceCommand::IssueInvoice {
                tax_jurisdiction: "DE".into(),
                tax_rate_bp: 0,
                issued_at: 999,
            },
            "issued_at",
        ),
        (
            InvoiceCommand::IssueInvoice {
                tax_jurisdiction: "DE".into(),
                tax_rate_bp: 0,
                issued_at: 0,
            },
            "issued_at",
        ),
    ] {
        let err = invoice_err(draft(), cmd);
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
    // 100 % is a valid rate.
    let events = GivenInvoice::with(services())
        .given(vec![opened(), line_added("l1", 1, 10)])
        .when(InvoiceCommand::IssueInvoice {
            tax_jurisdiction: "X".into(),
            tax_rate_bp: 10_000,
            issued_at: 2_000,
        })
        .inspect_result()
        .unwrap();
    let [InvoiceEvent::InvoiceIssued(i)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!((i.tax_minor, i.total_minor), (10, 20));
}

#[test]
fn lines_and_credits_only_on_a_draft() {
    for given in [
        issued_history(),
        [issued_history(), vec![paid()]].concat(),
        [draft(), vec![voided()]].concat(),
    ] {
        let err = invoice_err(given.clone(), add_line("l9", 1, 1));
        assert_eq!((err.kind, err.code), (Kind::Conflict, "invoice_not_draft"));
        let err = invoice_err(given, credit("c9", 1));
        assert_eq!(err.code, "invoice_not_draft");
    }
}

#[test]
fn paying_exactly_the_total() {
    GivenInvoice::with(services())
        .given(issued_history())
        .when(InvoiceCommand::PayInvoice {
            amount_minor: 1470,
            paid_at: 3_000,
        })
        .then_expect_events(vec![paid()]);
    for amount in [1469, 1471] {
        let err = invoice_err(
            issued_history(),
            InvoiceCommand::PayInvoice {
                amount_minor: amount,
                paid_at: 3_000,
            },
        );
        assert_eq!(err.field.as_deref(), Some("amount_minor"));
    }
    let err = invoice_err(
        issued_history(),
        InvoiceCommand::PayInvoice {
            amount_minor: 1470,
            paid_at: 1_999,
        },
    );
    assert_eq!(err.field.as_deref(), Some("paid_at"));
}

#[test]
fn paying_refusals_and_retries() {
    let pay = InvoiceCommand::PayInvoice {
        amount_minor: 1470,
        paid_at: 3_000,
    };
    let err = invoice_err(draft(), pay.clone());
    assert_eq!((err.kind, err.code), (Kind::Conflict, "invoice_not_issued"));
    let err = invoice_err([issued_history(), vec![voided()]].concat(), pay.clone());
    assert_eq!(err.code, "invoice_voided");
    GivenInvoice::with(services())
        .given([issued_history(), vec![paid()]].concat())
        .when(pay)
        .then_expect_events(vec![]);
    let err = invoice_err(
        [issued_history(), vec![paid()]].concat(),
        InvoiceCommand::PayInvoice {
            amount_minor: 1470,
            paid_at: 4_000,
        },
    );
    assert_eq!(err.code, "invoice_paid");
}

#[test]
fn voiding_a_draft_or_an_issued_invoice_but_not_a_paid_one() {
    let void = InvoiceCommand::VoidInvoice {
        reason: "duplicate".into(),
    };
    for given in [vec![opened()], draft(), issued_history()] {
        GivenInvoice::with(services())
            .given(given)
            .when(void.clone())
            .then_expect_events(vec![voided()]);
    }
    GivenInvoice::with(services())
        .given([draft(), vec![voided()]].concat())
        .when(void.clone())
        .then_expect_events(vec![]);
    let err = invoice_err([issued_history(), vec![paid()]].concat(), void);
    assert_eq!((err.kind, err.code), (Kind::Conflict, "invoice_paid"));
    let err = invoice_err(draft(), InvoiceCommand::VoidInvoice { reason: "".into() });
    assert_eq!(err.field.as_deref(), Some("reason"));
}

// --- Budget -----------------------------------------------------------------------------------

fn set_budget(limit_minor: i64) -> BudgetCommand {
    BudgetCommand::SetBudget {
        tenant: "acme".into(),
        month: "2025-03".into(),
        currency: "EUR".into(),
        limit_minor,
    }
}

fn budget_set(limit_minor: i64) -> BudgetEvent {
    BudgetEvent::BudgetSet(BudgetSet {
        tenant: "acme".into(),
        month: "2025-03".into(),
        currency: "EUR".into(),
        limit_minor,
    })
}

fn usage(usage_id: &str, cost_minor: i64) -> BudgetCommand {
    BudgetCommand::RecordUsage {
        usage_id: usage_id.into(),
        meter: "signals".into(),
        quantity: 10,
        cost_minor,
    }
}

fn recorded(usage_id: &str, cost_minor: i64, spent_minor: i64) -> BudgetEvent {
    BudgetEvent::UsageRecorded(UsageRecorded {
        tenant: "acme".into(),
        month: "2025-03".into(),
        usage_id: usage_id.into(),
        meter: "signals".into(),
        quantity: 10,
        cost_minor,
        currency: "EUR".into(),
        spent_minor,
    })
}

fn reached(threshold_pct: i32, spent_minor: i64, limit_minor: i64) -> BudgetEvent {
    BudgetEvent::BudgetThresholdReached(BudgetThresholdReached {
        tenant: "acme".into(),
        month: "2025-03".into(),
        threshold_pct,
        spent_minor,
        limit_minor,
        currency: "EUR".into(),
    })
}

fn budget_err(given: Vec<BudgetEvent>, cmd: BudgetCommand) -> crate::DomainError {
    GivenBudget::with(budget_services())
        .given(given)
        .when(cmd)
        .inspect_result()
        .unwrap_err()
}

#[test]
fn setting_and_changing_a_budget() {
    GivenBudget::with(budget_services())
        .given_no_previous_events()
        .when(set_budget(10_000))
        .then_expect_events(vec![budget_set(10_000)]);
    GivenBudget::with(budget_services())
        .given(vec![budget_set(10_000)])
        .when(set_budget(10_000))
        .then_expect_events(vec![]);
    GivenBudget::with(budget_services())
        .given(vec![budget_set(10_000)])
        .when(set_budget(20_000))
        .then_expect_events(vec![budget_set(20_000)]);
    let err = budget_err(
        vec![budget_set(10_000)],
        BudgetCommand::SetBudget {
            tenant: "acme".into(),
            month: "2025-03".into(),
            currency: "USD".into(),
            limit_minor: 10_000,
        },
    );
    // USD is not the tenant's currency: refused as a bad field before anything else.
    assert_eq!(err.field.as_deref(), Some("currency"));
    let err = GivenBudget::with(BudgetServices {
        tenant: TenantStatus::Active,
        tenant_currency: None,
    })
    .given(vec![budget_set(10_000)])
    .when(BudgetCommand::SetBudget {
        tenant: "acme".into(),
        month: "2025-03".into(),
        currency: "USD".into(),
        limit_minor: 10_000,
    })
    .inspect_result()
    .unwrap_err();
    assert_eq!(
        (err.kind, err.code),
        (Kind::Conflict, "budget_currency_fixed")
    );
    let err = budget_err(
        vec![budget_set(10_000)],
        BudgetCommand::SetBudget {
            tenant: "acme".into(),
            month: "2025-04".into(),
            currency: "EUR".into(),
            limit_minor: 10_000,
        },
    );
    assert_eq!(err.code, "budget_mismatch");
}

#[test]
fn budgets_refuse_bad_fields_naming_them() {
    let cmd = |tenant: &str, month: &str, currency: &str, limit_minor| BudgetCommand::SetBudget {
        tenant: tenant.into(),
        month: month.into(),
        currency: currency.into(),
        limit_minor,
    };
    for (c, field) in [
        (cmd("", "2025-03", "EUR", 1), "tenant"),
        (cmd("acme", "2025-3", "EUR", 1), "month"),
        (cmd("acme", "2025-03", "Eur", 1), "currency"),
        (cmd("acme", "2025-03", "EUR", 0), "limit_minor"),
        (cmd("acme", "2025-03", "EUR", -1), "limit_minor"),
    ] {
        let err = budget_err(vec![], c);
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
    for (c, field) in [
        (usage("", 1), "usage_id"),
        (usage("u1", -1), "cost_minor"),
        (
            BudgetCommand::RecordUsage {
                usage_id: "u1".into(),
                meter: "signals".into(),
                quantity: 0,
                cost_minor: 1,
            },
            "quantity",
        ),
        (
            BudgetCommand::RecordUsage {
                usage_id: "u1".into(),
                meter: "".into(),
                quantity: 1,
                cost_minor: 1,
            },
            "meter",
        ),
    ] {
        let err = budget_err(vec![budget_set(100)], c);
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
}

#[test]
fn budget_commands_of_an_inactive_tenant_are_refused() {
    for (status, code) in [
        (TenantStatus::Unknown, "unknown_tenant"),
        (TenantStatus::Suspended, "tenant_suspended"),
        (TenantStatus::Archived, "tenant_archived"),
    ] {
        let s = BudgetServices {
            tenant: status,
            tenant_currency: None,
        };
        for (given, cmd) in [
            (vec![], set_budget(100)),
            (vec![budget_set(100)], usage("u1", 1)),
        ] {
            let err = GivenBudget::with(s.clone())
                .given(given)
                .when(cmd)
                .inspect_result()
                .unwrap_err();
            assert_eq!(err.code, code);
        }
    }
}

#[test]
fn usage_without_a_budget_is_refused() {
    let err = budget_err(vec![], usage("u1", 1));
    assert_eq!((err.kind, err.code), (Kind::NotFound, "unknown_budget"));
}

#[test]
fn usage_below_the_thresholds_is_only_recorded() {
    GivenBudget::with(budget_services())
        .given(vec![budget_set(1000)])
        .when(usage("u1", 799))
        .then_expect_events(vec![recorded("u1", 799, 799)]);
    GivenBudget::with(budget_services())
        .given(vec![budget_set(1000)])
        .when(usage("u0", 0))
        .then_expect_events(vec![recorded("u0", 0, 0)]);
}

#[test]
fn crossing_80_then_95_announces_each_once() {
    GivenBudget::with(budget_services())
        .given(vec![budget_set(1000), recorded("u1", 700, 700)])
        .when(usage("u2", 100))
        .then_expect_events(vec![recorded("u2", 100, 800), reached(80, 800, 1000)]);
    GivenBudget::with(budget_services())
        .given(vec![
            budget_set(1000),
            recorded("u1", 800, 800),
            reached(80, 800, 1000),
        ])
        .when(usage("u2", 100))
        .then_expect_events(vec![recorded("u2", 100, 900)]);
    GivenBudget::with(budget_services())
        .given(vec![
            budget_set(1000),
            recorded("u1", 800, 800),
            reached(80, 800, 1000),
        ])
        .when(usage("u2", 150))
        .then_expect_events(vec![recorded("u2", 150, 950), reached(95, 950, 1000)]);
    GivenBudget::with(budget_services())
        .given(vec![
            budget_set(1000),
            recorded("u1", 960, 960),
            reached(80, 960, 1000),
            reached(95, 960, 1000),
        ])
        .when(usage("u2", 500))
        .then_expect_events(vec![recorded("u2", 500, 1460)]);
}

#[test]
fn one_usage_crossing_both_thresholds_announces_both_in_order() {
    GivenBudget::with(budget_services())
        .given(vec![budget_set(1000)])
        .when(usage("u1", 2000))
        .then_expect_events(vec![
            recorded("u1", 2000, 2000),
            reached(80, 2000, 1000),
            reached(95, 2000, 1000),
        ]);
}

#[test]
fn thresholds_use_the_current_limit() {
    // Raised from 1000 to 2000: 900 spent is 45 %, nothing to announce.
    GivenBudget::with(budget_services())
        .given(vec![
            budget_set(1000),
            budget_set(2000),
            recorded("u1", 800, 800),
        ])
        .when(usage("u2", 100))
        .then_expect_events(vec![recorded("u2", 100, 900)]);
}

#[test]
fn a_retried_usage_is_a_no_op_and_another_under_its_id_a_conflict() {
    let given = vec![
        budget_set(1000),
        recorded("u1", 900, 900),
        reached(80, 900, 1000),
    ];
    GivenBudget::with(budget_services())
        .given(given.clone())
        .when(usage("u1", 900))
        .then_expect_events(vec![]);
    let err = budget_err(given, usage("u1", 901));
    assert_eq!((err.kind, err.code), (Kind::Conflict, "usage_exists"));
}

#[test]
fn spending_that_overflows_is_refused() {
    let err = budget_err(
        vec![budget_set(1000), recorded("u1", i64::MAX, i64::MAX)],
        usage("u2", 1),
    );
    assert_eq!(err.code, "amount_overflow");
    // A huge limit and huge spending compare without overflow.
    GivenBudget::with(budget_services())
        .given(vec![budget_set(i64::MAX)])
        .when(usage("u1", i64::MAX / 10 * 8 + 7))
        .then_expect_events(vec![
            recorded("u1", i64::MAX / 10 * 8 + 7, i64::MAX / 10 * 8 + 7),
            reached(80, i64::MAX / 10 * 8 + 7, i64::MAX),
        ]);
}

// --- schemas ----------------------------------------------------------------------------------

#[test]
fn every_event_round_trips_through_its_published_schema() {
    use crate::payload::Payload;
    let registry = annals_schemas::Registry::builtin().unwrap();
    let mut tiered = line_added("l3", 2000, 0);
    if let InvoiceEvent::InvoiceLineAdded(l) = &mut tiered {
        l.tiers = tiers();
        l.amount_minor = 6500;
    }
    let mut no_po = opened();
    if let InvoiceEvent::InvoiceOpened(o) = &mut no_po {
        o.purchase_order = None;
    }
    let invoices = vec![
        opened(),
        no_po,
        line_added("l1", 10, 100),
        tiered,
        credited("c1", 100),
        issued(),
        paid(),
        voided(),
    ];
    for e in invoices {
        let (id, bytes) = e.encode(&registry).unwrap();
        assert_eq!(registry.get(id).unwrap().event_type, e.event_type());
        let back =
            InvoiceEvent::from_json(e.event_type(), registry.decode_json(id, &bytes).unwrap())
                .unwrap()
                .unwrap();
        assert_eq!(back, e);
    }
    for e in [
        budget_set(1000),
        recorded("u1", 800, 800),
        reached(80, 800, 1000),
    ] {
        let (id, bytes) = e.encode(&registry).unwrap();
        assert_eq!(registry.get(id).unwrap().event_type, e.event_type());
        let back =
            BudgetEvent::from_json(e.event_type(), registry.decode_json(id, &bytes).unwrap())
                .unwrap()
                .unwrap();
        assert_eq!(back, e);
    }
    assert!(InvoiceEvent::from_json("billing.BudgetSet", serde_json::json!({})).is_none());
    assert!(BudgetEvent::from_json("billing.InvoicePaid", serde_json::json!({})).is_none());
}

/// Usage records are written and read straight from Avro binary: the bytes are the generic
/// encoder's, the registry reads them back, and damage is an error, never a panic.
#[test]
fn usage_records_take_the_fast_codec_byte_for_byte() {
    use crate::payload::Payload;
    let registry = annals_schemas::Registry::builtin().unwrap();
    let u = UsageRecorded {
        tenant: "acme".into(),
        month: "2026-11".into(),
        usage_id: "u-ä-1".into(),
        meter: "signals".into(),
        quantity: 1_000_000_007,
        cost_minor: 0,
        currency: "EUR".into(),
        spent_minor: i64::MAX,
    };
    let e = BudgetEvent::UsageRecorded(u.clone());
    let (id, bytes) = e.encode(&registry).unwrap();
    let generic = registry
        .encode_json("billing.UsageRecorded", &e.to_json())
        .unwrap();
    assert_eq!(
        (id, &bytes),
        (generic.0, &generic.1),
        "same schema id and bytes"
    );
    assert_eq!(
        BudgetEvent::from_json(
            "billing.UsageRecorded",
            registry.decode_json(id, &bytes).unwrap()
        )
        .unwrap()
        .unwrap(),
        e
    );
    assert_eq!(UsageRecorded::decode(&registry, id, &bytes).unwrap(), u);
    for cut in 0..bytes.len() {
        assert!(UsageRecorded::decode(&registry, id, &bytes[..cut]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(UsageRecorded::decode(&registry, id, &longer).is_err());
}
