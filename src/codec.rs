//! Compact binary encoding helpers shared by the causality types and the on-disk records:
//! LEB128 varints, length-prefixed byte strings and a bounds-checked reader.
//!
//! Invariant: decoding never panics and never reads past its input; every malformed
//! input becomes a [`DecodeError`] that says what was being read and where.

use thiserror::Error;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot decode {what}: {reason} (at byte {offset})")]
pub struct DecodeError {
    /// What was being decoded, e.g. "context".
    pub what: &'static str,
    /// What went wrong.
    pub reason: String,
    /// Byte offset in the input where it went wrong.
    pub offset: usize,
}

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a varint length followed by the bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over an input that turns every overrun into a [`DecodeError`].
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `input`; `what` names the thing being decoded in errors.
    pub fn new(input: &'a [u8], what: &'static str) -> Self {
        Self {
            input,
            pos: 0,
            what,
        }
    }

    /// An error at the current position.
    pub fn error(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            what: self.what,
            reason: reason.into(),
            offset: self.pos,
        }
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .input
            .get(self.pos)
            .ok_or_else(|| self.error("unexpected end of input"))?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or_else(|| {
                self.error(format!(
                    "needs {n} more bytes but only {} remain",
                    self.input.len() - self.pos
                ))
            })?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads an unsigned LEB128 varint; rejects encodings longer than 10 bytes or
    /// overflowing 64 bits.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if i == 9 && low > 1 {
                return Err(self.error("varint overflows 64 bits"));
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    /// Reads a varint that must fit `max` (a count or a length), so a corrupt length
    /// cannot make the caller allocate without bound.
    pub fn bounded(&mut self, max: u64, name: &str) -> Result<usize, DecodeError> {
        let v = self.varint()?;
        if v > max {
            return Err(self.error(format!("{name} {v} exceeds the limit {max}")));
        }
        usize::try_from(v).map_err(|_| self.error(format!("{name} {v} does not fit memory")))
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: u64, name: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.bounded(max, name)?;
        self.take(n)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Fails unless the whole input was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.pos == self.input.len() {
            Ok(())
        } else {
            Err(self.error(format!("{} trailing bytes", self.input.len() - self.pos)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out, "test");
            assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn malformed_varints_are_errors() {
        let mut r = Reader::new(&[0x80, 0x80], "test");
        assert!(r.varint().unwrap_err().reason.contains("end of input"));
        let eleven = [0xffu8; 11];
        assert!(Reader::new(&eleven, "test").varint().is_err());
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        let e = Reader::new(&overflow, "test").varint().unwrap_err();
        assert!(e.reason.contains("overflows"), "{e}");
    }

    #[test]
    fn lengths_are_bounded() {
        let mut out = Vec::new();
        put_varint(&mut out, 1 << 40);
        let e = Reader::new(&out, "record")
            .bytes(1024, "value length")
            .unwrap_err();
        assert_eq!(e.what, "record");
        assert!(e.to_string().contains("value length"), "{e}");
    }
}
