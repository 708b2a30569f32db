//! The few Avro binary primitives the envelope needs (zigzag varints, length-prefixed bytes).
//!
//! The envelope is encoded by hand rather than through a generic Avro `Value`: it is on the
//! hot path of every append and every verify. A test decodes it with `apache-avro` and the
//! published `Envelope.v1.avsc`, so the bytes stay real Avro.

/// Appends an Avro `long` (zigzag varint).
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends Avro `bytes` or `string`: a long length then the bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Appends an Avro `["null","string"]` union.
pub fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_long(out, 0),
        Some(s) => {
            put_long(out, 1);
            put_bytes(out, s.as_bytes());
        }
    }
}

/// Why a byte string is not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct DecodeError {
    pub field: &'static str,
    pub problem: &'static str,
}

/// A cursor that reads Avro primitives from a byte slice without copying.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub fn long(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self.buf.get(self.pos).ok_or(DecodeError {
                field,
                problem: "truncated varint",
            })?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(DecodeError {
                    field,
                    problem: "varint overflows 64 bits",
                });
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeError {
                    field,
                    problem: "varint too long",
                });
            }
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    pub fn int(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        i32::try_from(self.long(field)?).map_err(|_| DecodeError {
            field,
            problem: "int out of range",
        })
    }

    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.long(field)?;
        let len = usize::try_from(len).map_err(|_| DecodeError {
            field,
            problem: "negative length",
        })?;
        self.fixed(field, len)
    }

    /// Skips `bytes` or `string` without looking at its content.
    pub fn skip_bytes(&mut self, field: &'static str) -> Result<(), DecodeError> {
        self.bytes(field).map(|_| ())
    }

    pub fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| DecodeError {
            field,
            problem: "not UTF-8",
        })
    }

    pub fn opt_str(&mut self, field: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self.long(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.str(field)?)),
            _ => Err(DecodeError {
                field,
                problem: "bad union branch",
            }),
        }
    }

    pub fn fixed(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError {
                field,
                problem: "truncated",
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip_at_the_edges() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_long(&mut out, v);
            let mut c = Cursor::new(&out);
            assert_eq!(c.long("x").unwrap(), v);
            assert!(c.is_empty());
        }
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"hello");
        for cut in 0..out.len() {
            assert!(Cursor::new(&out[..cut]).bytes("f").is_err());
        }
    }
}
