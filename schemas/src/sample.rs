//! Deterministic sample values for any schema, used to exercise real encode/resolve round trips.

use std::collections::HashMap;

use apache_avro::{
    BigDecimal, Days, Decimal, Duration, Millis, Months, Schema, Uuid,
    schema::{Name, NamespaceRef, ResolvedSchema},
    types::Value,
};

type Names<'s> = HashMap<Name, &'s Schema>;

/// Past this nesting depth, unions take their null (or first) branch and arrays and maps are
/// empty, so that recursive schemas yield finite samples.
const MAX_DEPTH: usize = 8;

/// A deterministic sample value valid for `schema`: records with every field, unions on their first
/// non-null branch, one-entry arrays and maps, the first enum symbol, patterned fixed bytes, and
/// fixed values for logical types.
///
/// A schema whose references cannot be resolved yields `Value::Null`.
pub fn sample_datum(schema: &Schema) -> Value {
    match ResolvedSchema::new(schema) {
        Ok(resolved) => sample(schema, resolved.get_names(), None, 0),
        Err(_) => Value::Null,
    }
}

fn sample(schema: &Schema, names: &Names<'_>, ns: NamespaceRef, depth: usize) -> Value {
    let deep = depth >= MAX_DEPTH;
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(true),
        Schema::Int => Value::Int(42),
        Schema::Long => Value::Long(4_200_000_000),
        Schema::Float => Value::Float(1.5),
        Schema::Double => Value::Double(2.25),
        Schema::Bytes => Value::Bytes(b"sample".to_vec()),
        Schema::String => Value::String("sample".to_string()),
        Schema::Array(array) => Value::Array(if deep {
            Vec::new()
        } else {
            vec![sample(&array.items, names, ns, depth + 1)]
        }),
        Schema::Map(map) => Value::Map(if deep {
            HashMap::new()
        } else {
            HashMap::from([("key".to_string(), sample(&map.types, names, ns, depth + 1))])
        }),
        Schema::Union(union) => {
            let variants = union.variants();
            let null = variants.iter().position(|v| matches!(v, Schema::Null));
            let pick = match null {
                Some(i) if deep => i,
                _ => variants
                    .iter()
                    .position(|v| !matches!(v, Schema::Null))
                    .unwrap_or(0),
            };
            match variants.get(pick) {
                Some(v) => Value::Union(pick as u32, Box::new(sample(v, names, ns, depth + 1))),
                None => Value::Null,
            }
        }
        Schema::Record(record) => {
            let record_ns = record.name.namespace().or(ns);
            Value::Record(
                record
                    .fields
                    .iter()
                    .map(|f| {
                        (
                            f.name.clone(),
                            sample(&f.schema, names, record_ns, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
        Schema::Enum(e) => match e.symbols.first() {
            Some(s) => Value::Enum(0, s.clone()),
            None => Value::Null,
        },
        Schema::Fixed(fixed) => Value::Fixed(fixed.size, patterned(fixed.size)),
        Schema::Decimal(decimal) => {
            // 1.00 at scale 2 is unscaled 100; fits any precision >= 3 and any size >= 1.
            let size = match &decimal.inner {
                apache_avro::schema::InnerDecimalSchema::Fixed(f) => f.size,
                apache_avro::schema::InnerDecimalSchema::Bytes => 1,
            };
            let mut bytes = vec![0u8; size.max(1)];
            if let Some(last) = bytes.last_mut() {
                *last = 100;
            }
            Value::Decimal(Decimal::from(bytes))
        }
        Schema::BigDecimal => Value::BigDecimal(BigDecimal::from(12345)),
        Schema::Uuid(_) => Value::Uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)),
        Schema::Date => Value::Date(19_700),
        Schema::TimeMillis => Value::TimeMillis(45_296_789),
        Schema::TimeMicros => Value::TimeMicros(45_296_789_012),
        Schema::TimestampMillis => Value::TimestampMillis(1_700_000_000_123),
        Schema::TimestampMicros => Value::TimestampMicros(1_700_000_000_123_456),
        Schema::TimestampNanos => Value::TimestampNanos(1_700_000_000_123_456_789),
        Schema::LocalTimestampMillis => Value::LocalTimestampMillis(1_700_000_000_123),
        Schema::LocalTimestampMicros => Value::LocalTimestampMicros(1_700_000_000_123_456),
        Schema::LocalTimestampNanos => Value::LocalTimestampNanos(1_700_000_000_123_456_789),
        Schema::Duration(_) => {
            Value::Duration(Duration::new(Months::new(1), Days::new(2), Millis::new(3)))
        }
        Schema::Ref { name } => {
            let full = name.fully_qualified_name(ns);
            match names.get(full.as_ref()) {
                Some(target) => sample(target, names, full.namespace(), depth + 1),
                None => Value::Null,
            }
        }
    }
}

/// `size` bytes 0xA0, 0xA1, ... (wrapping): recognisable in dumps.
fn patterned(size: usize) -> Vec<u8> {
    (0..size).map(|i| 0xA0u8.wrapping_add(i as u8)).collect()
}
