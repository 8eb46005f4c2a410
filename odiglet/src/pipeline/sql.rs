//! SQL statement text for spans: literals removed (`db.query.text` must not carry the data the
//! application queries with), and the operation and collection the span is named after.
//!
//! One bounded pass over at most [`MAX_QUERY`] bytes, no allocation beyond the output:
//! - string literals (`'..'` with `''` and backslash escapes, with an `E`/`N`/`X`/`B` prefix,
//!   Postgres dollar-quoted `$$..$$` / `$tag$..$tag$`) become `?`;
//! - numbers (`42`, `-` excluded, `3.14`, `1e-9`, `0xFF`) become `?`, but digits inside
//!   identifiers (`t1`) and placeholders (`$1`, `:name`, `@p1`) stay;
//! - comments (`-- ..`, `# ..` is left: MySQL only and ambiguous, `/* .. */`) are dropped, since
//!   they can carry data too;
//! - an `IN (...)` list of literals collapses to `IN (?)`, so statements differing only in the
//!   list length group together;
//! - runs of whitespace become one space. Double-quoted and backquoted identifiers stay.
//!
//! A statement cut by the probe's buffer ends wherever it was cut; an unterminated literal at
//! the end still becomes `?`.

/// Longest statement looked at (the probe's buffer is smaller).
pub const MAX_QUERY: usize = 4096;

/// `query` with its literals replaced by `?`.
pub fn sanitize(query: &str) -> String {
    let bytes = query.as_bytes();
    let bytes = bytes.get(..MAX_QUERY).unwrap_or(bytes);
    let mut out = Output {
        text: String::with_capacity(bytes.len()),
        in_list: InList::No,
    };
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'\'' => {
                i = skip_quoted(bytes, i + 1);
                out.literal();
            }
            b'$' if dollar_tag(bytes, i).is_some() => {
                let tag = dollar_tag(bytes, i).unwrap_or(1);
                i = skip_dollar_quoted(bytes, i, tag);
                out.literal();
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while bytes.get(i).is_some_and(|b| *b != b'\n') {
                    i += 1;
                }
                out.space();
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len()
                    && !(bytes.get(i) == Some(&b'*') && bytes.get(i + 1) == Some(&b'/'))
                {
                    i += 1;
                }
                i = (i + 2).min(bytes.len());
                out.space();
            }
            b'"' | b'`' => {
                let end = skip_identifier_quote(bytes, i + 1, c);
                out.word(bytes.get(i..end).unwrap_or_default());
                i = end;
            }
            b'0'..=b'9' => {
                i = skip_number(bytes, i);
                out.literal();
            }
            b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = skip_number(bytes, i);
                out.literal();
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                out.space();
            }
            c if is_word_byte(c) || c >= 0x80 => {
                let start = i;
                while bytes.get(i).is_some_and(|b| is_word_byte(*b) || *b >= 0x80) {
                    i += 1;
                }
                let word = bytes.get(start..i).unwrap_or_default();
                // A one-letter prefix glued to a string literal (E'..', N'..', X'..', B'..').
                if bytes.get(i) == Some(&b'\'')
                    && matches!(
                        word,
                        [b'e' | b'E' | b'n' | b'N' | b'x' | b'X' | b'b' | b'B']
                    )
                {
                    i = skip_quoted(bytes, i + 1);
                    out.literal();
                } else {
                    out.word(word);
                }
            }
            // Placeholders: `$1`, `:name`, `@p1`, `?`; the name or number that follows stays.
            b'$' | b':' | b'@' => {
                let start = i;
                i += 1;
                while bytes.get(i).is_some_and(|b| is_word_byte(*b)) {
                    i += 1;
                }
                out.word(bytes.get(start..i).unwrap_or_default());
            }
            _ => {
                out.punctuation(c);
                i += 1;
            }
        }
    }
    out.text.trim_end().to_owned()
}

/// The operation (`SELECT`, upper case) and, for simple statements, the table it names.
pub fn summarize(query: &str) -> (Option<String>, Option<String>) {
    let mut words = query
        .split(|c: char| c.is_ascii_whitespace() || c == '(' || c == ')' || c == ',' || c == ';')
        .filter(|w| !w.is_empty());
    let Some(first) = words.next() else {
        return (None, None);
    };
    if first.len() > 32 || !first.bytes().all(|b| b.is_ascii_alphabetic()) {
        return (None, None);
    }
    let operation = first.to_ascii_uppercase();
    let before_table = match operation.as_str() {
        "SELECT" | "DELETE" => Some("FROM"),
        "INSERT" | "REPLACE" => Some("INTO"),
        "UPDATE" => None,
        _ => return (Some(operation), None),
    };
    let table = match before_table {
        Some(keyword) => words
            .by_ref()
            .take(64)
            .skip_while(|w| !w.eq_ignore_ascii_case(keyword))
            .nth(1),
        None => words.next(),
    };
    let table = table.filter(|t| {
        t.len() <= 128
            && t.bytes()
                .all(|b| is_word_byte(b) || matches!(b, b'.' | b'"' | b'`'))
    });
    (Some(operation), table.map(str::to_owned))
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Past the closing quote of a `'..'` literal whose body starts at `i`.
fn skip_quoted(bytes: &[u8], mut i: usize) -> usize {
    while let Some(&c) = bytes.get(i) {
        match c {
            b'\\' => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Past the closing quote of a `"..."` or `` `..` `` identifier whose body starts at `i`.
fn skip_identifier_quote(bytes: &[u8], mut i: usize, quote: u8) -> usize {
    while let Some(&c) = bytes.get(i) {
        i += 1;
        if c == quote {
            if bytes.get(i) == Some(&quote) {
                i += 1;
                continue;
            }
            return i;
        }
    }
    bytes.len()
}

/// The length of the dollar-quote tag (`$$` = 2, `$tag$` = 5) starting at `i`, if one does.
fn dollar_tag(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    // A tag does not start with a digit: `$1` is a placeholder.
    if bytes.get(j).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    while bytes.get(j).is_some_and(|b| is_word_byte(*b)) {
        j += 1;
    }
    (bytes.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

/// Past the closing tag of the dollar-quoted string at `i` whose tag is `tag` bytes.
fn skip_dollar_quoted(bytes: &[u8], i: usize, tag: usize) -> usize {
    let Some(delimiter) = bytes.get(i..i + tag) else {
        return bytes.len();
    };
    let body = i + tag;
    bytes
        .get(body..)
        .and_then(|rest| rest.windows(tag).position(|w| w == delimiter))
        .map_or(bytes.len(), |at| body + at + tag)
}

/// Past the number at `i`: digits, one fraction, an exponent, or `0x` hex digits.
fn skip_number(bytes: &[u8], mut i: usize) -> usize {
    if bytes.get(i) == Some(&b'0') && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while bytes.get(i).is_some_and(u8::is_ascii_hexdigit) {
            i += 1;
        }
        return i;
    }
    while bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
    {
        i += 1;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
    }
    // `1abc` is not a number but an identifier some dialects allow: keep eating it.
    while bytes.get(i).is_some_and(|b| is_word_byte(*b)) {
        i += 1;
    }
    i
}

/// Where an `IN` list stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum InList {
    No,
    /// `IN` seen, `(` expected.
    Keyword,
    /// Inside `IN (`; whether a `?` was written already.
    Open {
        literal: bool,
    },
}

struct Output {
    text: String,
    in_list: InList,
}

impl Output {
    fn space(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with(' ') {
            self.text.push(' ');
        }
    }

    fn literal(&mut self) {
        match self.in_list {
            InList::Open { literal: true } => {}
            InList::Open { literal: false } => {
                self.text.push('?');
                self.in_list = InList::Open { literal: true };
            }
            _ => {
                self.text.push('?');
                self.in_list = InList::No;
            }
        }
    }

    fn word(&mut self, word: &[u8]) {
        let in_keyword = word.eq_ignore_ascii_case(b"in");
        match self.in_list {
            // A column or expression inside the list: not a literal list after all.
            InList::Open { .. } => self.in_list = InList::No,
            _ => {
                self.in_list = if in_keyword {
                    InList::Keyword
                } else {
                    InList::No
                }
            }
        }
        self.text.push_str(&String::from_utf8_lossy(word));
    }

    fn punctuation(&mut self, c: u8) {
        match (self.in_list, c) {
            (InList::Keyword, b'(') => self.in_list = InList::Open { literal: false },
            (InList::Open { literal: true }, b',') => {
                // `?, ?, ?` → `?`: drop the separator and the space before it.
                while self.text.ends_with(' ') {
                    self.text.pop();
                }
                return;
            }
            (InList::Open { .. }, b')') => self.in_list = InList::No,
            (InList::Open { .. }, _) => self.in_list = InList::No,
            _ => self.in_list = InList::No,
        }
        if c == b',' || c == b')' {
            while self.text.ends_with(' ') {
                self.text.pop();
            }
        }
        self.text.push(char::from(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals_with_quotes_and_escapes_become_placeholders() {
        assert_eq!(
            sanitize("SELECT * FROM users WHERE name = 'O''Brien' AND note = 'a\\'b'"),
            "SELECT * FROM users WHERE name = ? AND note = ?"
        );
        assert_eq!(sanitize("select E'\\x41', N'x', X'0F'"), "select ?, ?, ?");
        assert_eq!(
            sanitize("SELECT $$it's $1$$, $fn$ body $$ $fn$ FROM t WHERE id = $1"),
            "SELECT ?, ? FROM t WHERE id = $1"
        );
        // Cut by the probe's buffer mid-literal: the rest is the literal.
        assert_eq!(
            sanitize("INSERT INTO t VALUES ('secret"),
            "INSERT INTO t VALUES (?"
        );
    }

    #[test]
    fn numbers_go_but_identifiers_and_placeholders_stay() {
        assert_eq!(
            sanitize("SELECT a1, t2.b FROM t3 WHERE x > 42 AND y = -3.5e-2 AND z = 0xFF LIMIT 10"),
            "SELECT a1, t2.b FROM t3 WHERE x > ? AND y = -? AND z = ? LIMIT ?"
        );
        assert_eq!(
            sanitize("UPDATE t SET v = ? WHERE id = :id OR id = @p1 OR id = $2"),
            "UPDATE t SET v = ? WHERE id = :id OR id = @p1 OR id = $2"
        );
        assert_eq!(sanitize("SELECT .5, 1."), "SELECT ?, ?");
    }

    #[test]
    fn in_lists_collapse_and_comments_and_whitespace_go() {
        assert_eq!(
            sanitize("SELECT *\n  FROM t  WHERE id IN (1, 2,3 , 'x') AND k in(?, ?)"),
            "SELECT * FROM t WHERE id IN (?) AND k in(?, ?)"
        );
        assert_eq!(
            sanitize("SELECT 1 -- user 'bob'\n/* token 'abc' */ FROM \"My Table\" WHERE `c` = 2"),
            "SELECT ? FROM \"My Table\" WHERE `c` = ?"
        );
        // A subquery or column in the list is not a literal list.
        assert_eq!(
            sanitize("DELETE FROM t WHERE id IN (SELECT id FROM u WHERE n = 5)"),
            "DELETE FROM t WHERE id IN (SELECT id FROM u WHERE n = ?)"
        );
        assert_eq!(sanitize(""), "");
        let long = format!("SELECT '{}'", "x".repeat(10 * MAX_QUERY));
        assert_eq!(sanitize(&long), "SELECT ?");
    }

    #[test]
    fn operation_and_collection() {
        let summary = |q: &str| {
            let (op, table) = summarize(q);
            (op.unwrap_or_default(), table.unwrap_or_default())
        };
        assert_eq!(
            summary("select a from users where x = ?"),
            ("SELECT".into(), "users".into())
        );
        assert_eq!(
            summary("INSERT INTO orders(a) VALUES (?)"),
            ("INSERT".into(), "orders".into())
        );
        assert_eq!(
            summary(" UPDATE public.items SET a = ?"),
            ("UPDATE".into(), "public.items".into())
        );
        assert_eq!(summary("DELETE FROM t"), ("DELETE".into(), "t".into()));
        assert_eq!(
            summary("CREATE TABLE t (a int)"),
            ("CREATE".into(), String::new())
        );
        assert_eq!(summary("SELECT 1"), ("SELECT".into(), String::new()));
        assert_eq!(summary("(SELECT 1)"), ("SELECT".into(), String::new()));
        assert_eq!(summarize("  "), (None, None));
        assert_eq!(summarize("?"), (None, None));
    }

    #[test]
    fn no_literal_survives_any_short_mix_of_quotes_escapes_and_comments() {
        // Every string of up to 5 symbols from the characters that drive the scanner.
        const ALPHABET: &[char] = &[
            '\'', '\\', '$', '-', '/', '*', 'a', 'E', '1', '.', '(', ' ', 'x',
        ];
        let mut query = String::new();
        let mut stack = vec![0usize; 0];
        loop {
            query.clear();
            query.extend(stack.iter().map(|i| ALPHABET[*i]));
            let clean = sanitize(&query);
            assert!(!clean.contains('\''), "{query:?} -> {clean:?}");
            assert!(clean.len() <= query.len() + 1, "{query:?} -> {clean:?}");
            // Next string: odometer over the alphabet, then one symbol longer.
            match stack.iter().rposition(|i| *i + 1 < ALPHABET.len()) {
                Some(at) => {
                    stack[at] += 1;
                    stack[at + 1..].iter_mut().for_each(|i| *i = 0);
                }
                None if stack.len() < 5 => stack = vec![0; stack.len() + 1],
                None => break,
            }
        }
    }
}
