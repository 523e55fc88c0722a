//! One CSV line of a sensor log into a raw reading, by the header's column names.

use std::borrow::Cow;

use kaiabc_schemas::{RawReading, RawValues, Reason, Rejection};

use super::Peek;

/// Where each known field sits in the header.
#[derive(Clone, Debug)]
pub struct CsvColumns {
    len: usize,
    node_id: usize,
    timestamp: usize,
    temperature_kelvin: usize,
    seq: Option<usize>,
    humidity_percent: Option<usize>,
    pressure_pa: Option<usize>,
    light_lux: Option<usize>,
    sensor_type: Option<usize>,
    quality: Option<usize>,
    raw: [Option<usize>; 3],
}

impl CsvColumns {
    /// Reads the header; `Err` names a missing required column.
    pub fn from_header(header: &[u8]) -> Result<Self, &'static str> {
        let text = String::from_utf8_lossy(header);
        let names: Vec<String> = split(&text, 16)
            .map(|f| f.into_iter().map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        let find = |n: &str| names.iter().position(|h| h == n);
        let need = |n: &'static str| find(n).ok_or(n);
        Ok(Self {
            len: names.len(),
            node_id: need("node_id")?,
            timestamp: need("timestamp")?,
            temperature_kelvin: need("temperature_kelvin")?,
            seq: find("seq"),
            humidity_percent: find("humidity_percent"),
            pressure_pa: find("pressure_pa"),
            light_lux: find("light_lux"),
            sensor_type: find("sensor_type"),
            quality: find("quality"),
            raw: [
                find("raw_temperature"),
                find("raw_humidity"),
                find("raw_pressure"),
            ],
        })
    }

    /// Columns of a file with no header (an empty file): every line has the wrong width.
    pub(crate) fn empty() -> Self {
        Self {
            len: usize::MAX,
            node_id: 0,
            timestamp: 0,
            temperature_kelvin: 0,
            seq: None,
            humidity_percent: None,
            pressure_pa: None,
            light_lux: None,
            sensor_type: None,
            quality: None,
            raw: [None; 3],
        }
    }

    /// The node id and timestamp fields of a line (trimmed, as [`CsvColumns::parse`] reads
    /// them), splitting only as far as needed when nothing is quoted.
    pub fn peek<'a>(&self, line: &'a [u8]) -> Peek<'a> {
        let Ok(text) = std::str::from_utf8(line) else {
            return Peek::default();
        };
        let pick = |s: &'a str| Some(s.trim_ascii()).filter(|s| !s.is_empty());
        if memchr::memchr(b'"', line).is_none() {
            let last = self.node_id.max(self.timestamp);
            let mut peek = Peek::default();
            let mut start = 0;
            let ends = memchr::memchr_iter(b',', line).chain(std::iter::once(line.len()));
            for (i, end) in ends.enumerate().take(last + 1) {
                // Commas are ASCII, so these are char boundaries of the valid UTF-8 text.
                let field = &text[start..end];
                if i == self.node_id {
                    peek.node_id = pick(field).map(Cow::Borrowed);
                }
                if i == self.timestamp {
                    peek.timestamp = pick(field).map(Cow::Borrowed);
                }
                start = end + 1;
            }
            return peek;
        }
        let Some(fields) = split(text, self.len) else {
            return Peek::default();
        };
        let owned = |i: usize| {
            fields
                .get(i)
                .map(|f| f.trim_ascii())
                .filter(|s| !s.is_empty())
                .map(|s| Cow::Owned(s.to_string()))
        };
        Peek {
            node_id: owned(self.node_id),
            timestamp: owned(self.timestamp),
        }
    }

    /// Parses one data line.
    pub fn parse(&self, line: &[u8]) -> Result<RawReading, Rejection> {
        let text = std::str::from_utf8(line)
            .map_err(|_| Rejection::new(Reason::ParseError, "line is not valid UTF-8"))?;
        let fields = split(text, self.len.min(64))
            .ok_or_else(|| Rejection::new(Reason::ParseError, "unbalanced quotes in CSV line"))?;
        if fields.len() != self.len {
            return Err(Rejection::new(
                Reason::ParseError,
                format!("expected {} fields, found {}", self.len, fields.len()),
            ));
        }
        let get = |i: Option<usize>| -> Option<&str> {
            i.map(|i| fields[i].trim_ascii()).filter(|s| !s.is_empty())
        };
        let float = |i: Option<usize>, name: &str| -> Result<Option<f64>, Rejection> {
            get(i)
                .map(|s| {
                    s.parse::<f64>().map_err(|_| {
                        Rejection::new(Reason::ParseError, format!("{name}: {s:?} is not a number"))
                    })
                })
                .transpose()
        };
        let seq = get(self.seq)
            .map(|s| {
                s.parse::<i64>().map_err(|_| {
                    Rejection::new(Reason::ParseError, format!("seq: {s:?} is not an integer"))
                })
            })
            .transpose()?;
        let raw = [
            float(self.raw[0], "raw_temperature")?,
            float(self.raw[1], "raw_humidity")?,
            float(self.raw[2], "raw_pressure")?,
        ];
        Ok(RawReading {
            node_id: get(Some(self.node_id)).map(str::to_string),
            seq,
            timestamp: get(Some(self.timestamp)).map(str::to_string),
            temperature_kelvin: float(Some(self.temperature_kelvin), "temperature_kelvin")?,
            humidity_percent: float(self.humidity_percent, "humidity_percent")?,
            pressure_pa: float(self.pressure_pa, "pressure_pa")?,
            light_lux: float(self.light_lux, "light_lux")?,
            sensor_type: get(self.sensor_type).map(str::to_string),
            quality: get(self.quality).map(str::to_string),
            raw_values: raw.iter().any(Option::is_some).then_some(RawValues {
                temperature: raw[0],
                humidity: raw[1],
                pressure: raw[2],
            }),
            raw_value: None,
            firmware_version: None,
        })
    }
}

/// Splits a CSV line into fields; quoted fields (with `""` escapes) are unquoted. `None` for
/// an unterminated quote. The common unquoted case allocates nothing per field, and the
/// vector is sized for the `expected` field count once (growing it was 8 % of a replay).
fn split(line: &str, expected: usize) -> Option<Vec<std::borrow::Cow<'_, str>>> {
    let mut out = Vec::with_capacity(expected);
    if memchr::memchr(b'"', line.as_bytes()).is_none() {
        let mut start = 0;
        for end in memchr::memchr_iter(b',', line.as_bytes()) {
            // Commas are ASCII: `end` is a char boundary.
            out.push(std::borrow::Cow::Borrowed(&line[start..end]));
            start = end + 1;
        }
        out.push(std::borrow::Cow::Borrowed(&line[start..]));
        return Some(out);
    }
    let mut chars = line.char_indices().peekable();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    while let Some((_, c)) = chars.next() {
        match (c, in_quotes) {
            ('"', false) if field.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            ('"', true) => {
                if chars.peek().is_some_and(|(_, n)| *n == '"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            }
            (',', false) => {
                out.push(std::borrow::Cow::Owned(std::mem::take(&mut field)));
                quoted = false;
            }
            (c, _) => field.push(c),
        }
    }
    if in_quotes {
        return None;
    }
    out.push(std::borrow::Cow::Owned(field));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn quoted_fields_and_escapes() {
        let f = split(r#"a,"b,c","d""e",,"#, 0).unwrap();
        assert_eq!(f, vec!["a", "b,c", "d\"e", "", ""]);
        assert!(split(r#"a,"b"#, 1).is_none());
        assert_eq!(split("x", 8).unwrap(), vec!["x"]);
    }
}
