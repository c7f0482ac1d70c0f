//! The one netconf error: where (file, line, column, field path) and what.

use std::fmt;
use std::ops::Range;

/// A netconf file that cannot be used, located precisely enough to fix it.
///
/// Display is one line, `FILE:LINE:COLUMN: FIELD: REASON`, e.g.
/// `netconf/x.toml:7:7: group.md.ttl: must be 1..=255, got 0`. `line` and
/// `column` are 1-based (column counts characters); both are 0 when the
/// error has no position (the file cannot be read), and `field` is empty
/// when the error is not about one field (a TOML syntax error); the Display
/// then leaves those parts out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file path as given, or `<embedded default>`.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the key, e.g. `group.md.ttl` or `topic[1].group`.
    pub field: String,
    /// What is wrong and what is allowed, lowercase, no final period.
    pub reason: String,
}

impl Error {
    /// An error at a byte span of `text`.
    pub(crate) fn at(
        file: &str,
        text: &str,
        span: Range<usize>,
        field: &str,
        reason: String,
    ) -> Error {
        let (line, column) = line_column(text, span.start);
        Error {
            file: file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            reason,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for Error {}

/// 1-based line and character column of byte offset `at` in `text`; an
/// offset past the end or inside a character is clamped, never a panic.
pub(crate) fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = text.get(..at).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_column_field_and_reason() {
        let text = "[group.md]\nkind = \"multicast\"\n\n\n\n\nttl = 0\n";
        let at = text.find('0').unwrap();
        let e = Error::at(
            "netconf/x.toml",
            text,
            at..at + 1,
            "group.md.ttl",
            "must be 1..=255, got 0".into(),
        );
        assert_eq!(
            e.to_string(),
            "netconf/x.toml:7:7: group.md.ttl: must be 1..=255, got 0"
        );
    }

    #[test]
    fn display_leaves_out_missing_position_and_field() {
        let e = Error {
            file: "a.toml".into(),
            line: 0,
            column: 0,
            field: String::new(),
            reason: "cannot read: no such file".into(),
        };
        assert_eq!(e.to_string(), "a.toml: cannot read: no such file");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(line_column("é = 1\nab", 8), (2, 2));
        assert_eq!(line_column("éa", 1), (1, 1));
        assert_eq!(line_column("abc", 99), (1, 4));
    }
}
