//! Parser for Debian control-file paragraphs (deb822): `Packages` indexes,
//! the body of `InRelease`, `Release`.
//!
//! A paragraph is a run of `Name: value` lines ended by a blank line (a
//! line of only spaces and tabs counts as blank). A line starting with a
//! space or tab continues the previous field. Lines starting with `#` are
//! comments. The parser borrows from the input: a [`Field`]'s value is the
//! slice from after the colon to the end of its last continuation line,
//! trimmed, with the continuation lines' newlines and indentation kept
//! (see [`Field::lines`] and [`Field::words`]).
//!
//! Every size is bounded by [`Limits`]; errors carry the source's name and
//! the 1-based line number.

use std::fmt;

/// Bounds on what the parser accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest single line, in bytes.
    pub max_line_len: usize,
    /// Longest field value including continuation lines, in bytes (a
    /// Release file's `SHA256` field is one field of thousands of lines).
    pub max_field_len: usize,
    /// Most fields in one paragraph.
    pub max_fields: usize,
    /// Most paragraphs in one input.
    pub max_paragraphs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // librust-winapi-dev's Provides is one 75 KB line in bookworm.
            max_line_len: 1 << 20,
            max_field_len: 64 << 20,
            max_fields: 512,
            max_paragraphs: 2_000_000,
        }
    }
}

/// What was wrong, without the location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deb822ErrorKind {
    NotUtf8,
    NoColon,
    ContinuationWithoutField,
    BadFieldName(String),
    DuplicateField(String),
    LineTooLong(usize),
    FieldTooLong { name: String, max: usize },
    TooManyFields(usize),
    TooManyParagraphs(usize),
}

impl fmt::Display for Deb822ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Deb822ErrorKind::NotUtf8 => f.write_str("not valid UTF-8"),
            Deb822ErrorKind::NoColon => {
                f.write_str("expected `Field: value` (no colon on the line)")
            }
            Deb822ErrorKind::ContinuationWithoutField => {
                f.write_str("continuation line (starts with a space) before any field")
            }
            Deb822ErrorKind::BadFieldName(n) => write!(f, "invalid field name {n:?}"),
            Deb822ErrorKind::DuplicateField(n) => {
                write!(f, "field {n:?} appears twice in one paragraph")
            }
            Deb822ErrorKind::LineTooLong(max) => write!(f, "line longer than {max} bytes"),
            Deb822ErrorKind::FieldTooLong { name, max } => {
                write!(f, "field {name:?} is longer than {max} bytes")
            }
            Deb822ErrorKind::TooManyFields(max) => {
                write!(f, "more than {max} fields in one paragraph")
            }
            Deb822ErrorKind::TooManyParagraphs(max) => write!(f, "more than {max} paragraphs"),
        }
    }
}

/// A syntax or size error in a control file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {kind}")]
pub struct Deb822Error {
    /// File name or URL the text came from.
    pub source_name: String,
    /// 1-based line number.
    pub line: usize,
    pub kind: Deb822ErrorKind,
}

/// One `Name: value` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a str,
    /// From after the colon to the end of the last continuation line,
    /// trimmed at both ends.
    pub value: &'a str,
    /// 1-based line of the field name.
    pub line: usize,
}

impl<'a> Field<'a> {
    /// The value's lines, each trimmed, empty ones skipped (the first line
    /// is often empty in multi-line fields such as `SHA256`).
    pub fn lines(&self) -> impl Iterator<Item = &'a str> {
        self.value
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
    }

    /// The value split at any whitespace, newlines included.
    pub fn words(&self) -> impl Iterator<Item = &'a str> {
        self.value.split_ascii_whitespace()
    }
}

/// One paragraph (stanza).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    /// 1-based line of the first field.
    pub line: usize,
    fields: Vec<Field<'a>>,
}

impl<'a> Paragraph<'a> {
    /// The field named `name` (case-insensitive, as in deb822).
    pub fn field(&self, name: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The value of the field named `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.field(name).map(|f| f.value)
    }

    /// All fields in input order.
    pub fn fields(&self) -> &[Field<'a>] {
        &self.fields
    }
}

/// Checks that `bytes` is UTF-8, naming the line of the first bad byte.
pub fn utf8<'a>(bytes: &'a [u8], source_name: &str) -> Result<&'a str, Deb822Error> {
    std::str::from_utf8(bytes).map_err(|e| Deb822Error {
        source_name: source_name.to_string(),
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        kind: Deb822ErrorKind::NotUtf8,
    })
}

/// Parses every paragraph of `text`.
pub fn parse<'a>(text: &'a str, source_name: &str) -> Result<Vec<Paragraph<'a>>, Deb822Error> {
    Parser::new(text, source_name, Limits::default()).collect()
}

/// Streaming parser: yields one paragraph at a time, so a 50 MB Packages
/// file never exists as a vector of paragraphs.
#[derive(Debug)]
pub struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Line number of the line starting at `pos` (1-based).
    line: usize,
    paragraphs: usize,
    limits: Limits,
    source_name: String,
    failed: bool,
}

impl<'a> Parser<'a> {
    pub fn new(text: &'a str, source_name: &str, limits: Limits) -> Parser<'a> {
        Parser {
            text,
            pos: 0,
            line: 1,
            paragraphs: 0,
            limits,
            source_name: source_name.to_string(),
            failed: false,
        }
    }

    fn err(&self, line: usize, kind: Deb822ErrorKind) -> Deb822Error {
        Deb822Error {
            source_name: self.source_name.clone(),
            line,
            kind,
        }
    }

    /// The next line without its line ending: (start, end-of-content).
    /// Advances past the line.
    fn next_line(&mut self) -> Result<Option<(usize, usize)>, Deb822Error> {
        if self.pos >= self.text.len() {
            return Ok(None);
        }
        let start = self.pos;
        let rest = &self.text.as_bytes()[start..];
        let (len, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (i, start + i + 1),
            None => (rest.len(), self.text.len()),
        };
        if len > self.limits.max_line_len {
            return Err(self.err(
                self.line,
                Deb822ErrorKind::LineTooLong(self.limits.max_line_len),
            ));
        }
        let mut end = start + len;
        if end > start && self.text.as_bytes()[end - 1] == b'\r' {
            end -= 1;
        }
        self.pos = next;
        self.line += 1;
        Ok(Some((start, end)))
    }

    fn is_blank(s: &str) -> bool {
        s.bytes().all(|b| b == b' ' || b == b'\t')
    }

    fn paragraph(&mut self) -> Result<Option<Paragraph<'a>>, Deb822Error> {
        let text = self.text;
        // Skip blank and comment lines before the paragraph.
        let (first_start, first_end, first_line) = loop {
            let line_no = self.line;
            let Some((s, e)) = self.next_line()? else {
                return Ok(None);
            };
            let l = &text[s..e];
            if Self::is_blank(l) || l.starts_with('#') {
                continue;
            }
            break (s, e, line_no);
        };
        self.paragraphs += 1;
        if self.paragraphs > self.limits.max_paragraphs {
            return Err(self.err(
                first_line,
                Deb822ErrorKind::TooManyParagraphs(self.limits.max_paragraphs),
            ));
        }
        let mut fields: Vec<Field<'a>> = Vec::new();
        // (name, value start, value end, line) of the field being read.
        let mut cur: Option<(&'a str, usize, usize, usize)> = None;
        let mut line = Some((first_start, first_end, first_line));
        while let Some((s, e, line_no)) = line {
            let l = &text[s..e];
            if Self::is_blank(l) {
                break;
            }
            if l.starts_with('#') {
                // Comment line: ignored, does not end the paragraph.
            } else if l.starts_with(' ') || l.starts_with('\t') {
                let Some(c) = cur.as_mut() else {
                    return Err(self.err(line_no, Deb822ErrorKind::ContinuationWithoutField));
                };
                c.2 = e;
                if c.2 - c.1 > self.limits.max_field_len {
                    return Err(self.err(
                        c.3,
                        Deb822ErrorKind::FieldTooLong {
                            name: c.0.to_string(),
                            max: self.limits.max_field_len,
                        },
                    ));
                }
            } else {
                if let Some(c) = cur.take() {
                    self.push(&mut fields, c)?;
                }
                let Some(colon) = l.find(':') else {
                    return Err(self.err(line_no, Deb822ErrorKind::NoColon));
                };
                let name = &l[..colon];
                let name_ok = !name.is_empty()
                    && !name.starts_with('-')
                    && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
                if !name_ok {
                    return Err(self.err(line_no, Deb822ErrorKind::BadFieldName(name.to_string())));
                }
                let mut vs = s + colon + 1;
                while vs < e && matches!(text.as_bytes()[vs], b' ' | b'\t') {
                    vs += 1;
                }
                cur = Some((name, vs, e, line_no));
            }
            let line_no = self.line;
            line = self.next_line()?.map(|(s, e)| (s, e, line_no));
        }
        if let Some(c) = cur.take() {
            self.push(&mut fields, c)?;
        }
        Ok(Some(Paragraph {
            line: first_line,
            fields,
        }))
    }

    fn push(
        &self,
        fields: &mut Vec<Field<'a>>,
        (name, start, end, line): (&'a str, usize, usize, usize),
    ) -> Result<(), Deb822Error> {
        if fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
            return Err(self.err(line, Deb822ErrorKind::DuplicateField(name.to_string())));
        }
        if fields.len() >= self.limits.max_fields {
            return Err(self.err(line, Deb822ErrorKind::TooManyFields(self.limits.max_fields)));
        }
        fields.push(Field {
            name,
            value: self.text[start..end.max(start)].trim(),
            line,
        });
        Ok(())
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Paragraph<'a>, Deb822Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.paragraph() {
            Ok(p) => p.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_and_continuations() {
        let text = "Package: a\nVersion: 1.0\nDescription: short\n long line\n .\n more\n\n\n# comment\nPackage: b\r\nDepends: x,\r\n y\r\n  \t\nPackage: c\n";
        let ps = parse(text, "t").unwrap();
        assert_eq!(ps.len(), 3);
        assert_eq!(ps[0].get("package"), Some("a"));
        assert_eq!(ps[0].line, 1);
        let d = ps[0].field("Description").unwrap();
        assert_eq!(
            d.lines().collect::<Vec<_>>(),
            ["short", "long line", ".", "more"]
        );
        assert_eq!(ps[1].line, 10);
        assert_eq!(
            ps[1].field("Depends").unwrap().words().collect::<Vec<_>>(),
            ["x,", "y"]
        );
        assert_eq!(ps[2].get("Package"), Some("c"));
        assert_eq!(ps[2].get("Version"), None);
    }

    #[test]
    fn multiline_first_line_empty() {
        let text = "SHA256:\n aaa 1 x\n bbb 2 y\nOther: z\n";
        let ps = parse(text, "t").unwrap();
        let f = ps[0].field("SHA256").unwrap();
        assert_eq!(f.lines().collect::<Vec<_>>(), ["aaa 1 x", "bbb 2 y"]);
        assert_eq!(ps[0].get("other"), Some("z"));
    }

    #[test]
    fn empty_value() {
        let ps = parse("A:\nB: x\n", "t").unwrap();
        assert_eq!(ps[0].get("A"), Some(""));
    }

    fn err(text: &str, limits: Limits) -> Deb822Error {
        Parser::new(text, "f", limits)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err()
    }

    #[test]
    fn errors_name_the_line() {
        let e = err("A: 1\nB 2\n", Limits::default());
        assert_eq!((e.line, &e.kind), (2, &Deb822ErrorKind::NoColon));
        assert_eq!(
            e.to_string(),
            "f:2: expected `Field: value` (no colon on the line)"
        );
        let e = err("\n\n continuation\n", Limits::default());
        assert_eq!(
            (e.line, e.kind),
            (3, Deb822ErrorKind::ContinuationWithoutField)
        );
        let e = err("A: 1\n\nA: 1\nB: 2\na: 3\n", Limits::default());
        assert_eq!(e.line, 5);
        assert!(matches!(e.kind, Deb822ErrorKind::DuplicateField(_)));
        let e = err("A: 1\n: x\n", Limits::default());
        assert!(matches!(e.kind, Deb822ErrorKind::BadFieldName(_)));
        let e = utf8(b"A: 1\nB: \xff\n", "f").unwrap_err();
        assert_eq!((e.line, e.kind), (2, Deb822ErrorKind::NotUtf8));
    }

    #[test]
    fn limits() {
        let small = Limits {
            max_line_len: 10,
            max_field_len: 20,
            max_fields: 2,
            max_paragraphs: 2,
        };
        assert_eq!(
            err("A: 1\nB: 0123456789\n", small).kind,
            Deb822ErrorKind::LineTooLong(10)
        );
        assert!(matches!(
            err("A: 1\n 2345678\n 2345678\n 2345678\n", small).kind,
            Deb822ErrorKind::FieldTooLong { .. }
        ));
        assert_eq!(
            err("A: 1\nB: 2\nC: 3\n", small).kind,
            Deb822ErrorKind::TooManyFields(2)
        );
        assert_eq!(
            err("A: 1\n\nA: 1\n\nA: 1\n", small).kind,
            Deb822ErrorKind::TooManyParagraphs(2)
        );
    }

    #[test]
    fn stops_after_error() {
        let mut p = Parser::new("A 1\n\nB: 2\n", "f", Limits::default());
        assert!(p.next().unwrap().is_err());
        assert!(p.next().is_none());
    }
}
