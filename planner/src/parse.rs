//! The only module that touches sqlparser, plus a small PostgreSQL lexer of our own.
//!
//! The lexer ([`lex`]) never fails: it knows PostgreSQL's quoting (`'…'`, `E'…'`, `"…"`,
//! `$tag$…$tag$`), comments (`--`, nested `/* */`) and `$n` placeholders, which is all the
//! planner needs to split a text into statements, read a routing hint, detect
//! `SHOW ROUTE FOR`, find the highest placeholder, renumber placeholders, and look for table
//! names in statements sqlparser rejects (the token-level fallback).

use std::ops::Range;

use sqlparser::ast::{SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::error::PlanError;
use crate::plan::InsertTemplate;

/// sqlparser's recursion limit (its default is 50); deeper texts are refused with 54001.
const RECURSION_LIMIT: usize = 64;

/// One lexical token: its kind and its byte range in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Space,
    Comment,
    /// A string constant of any quoting.
    Str,
    /// An unquoted word, lower-cased as PostgreSQL folds it (keywords included).
    Word(String),
    /// A double-quoted identifier, unescaped, case kept.
    QuotedIdent(String),
    /// `$n` (saturating at `usize::MAX`).
    Param(usize),
    Number,
    Semicolon,
    Punct,
}

impl TokenKind {
    fn is_trivia(&self) -> bool {
        matches!(self, TokenKind::Space | TokenKind::Comment)
    }
}

const IDENT_START: u8 = 1;
const IDENT_CHAR: u8 = 2;

/// Byte classes for the lexer's inner loops (one table load per byte instead of a chain of
/// comparisons): letters, `_` and every non-ASCII byte start an identifier; those, digits and
/// `$` continue one.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            t[i] = IDENT_START | IDENT_CHAR;
        } else if b.is_ascii_digit() || b == b'$' {
            t[i] = IDENT_CHAR;
        }
        i += 1;
    }
    t
};

fn is_ident_start(b: u8) -> bool {
    CLASS[usize::from(b)] & IDENT_START != 0
}

fn is_ident_char(b: u8) -> bool {
    CLASS[usize::from(b)] & IDENT_CHAR != 0
}

/// Tokenize PostgreSQL text. Never fails: an unterminated string or comment runs to the end.
pub(crate) fn lex(s: &str) -> Vec<Token> {
    Lexer::new(s, true).collect()
}

/// The tokens of a text, one at a time. Without `word_text` a word carries no lower-cased copy
/// (`Word("")`): for callers on the per-query path that only need kinds and spans.
struct Lexer<'a> {
    s: &'a str,
    i: usize,
    word_text: bool,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str, word_text: bool) -> Self {
        Self { s, i: 0, word_text }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let (s, b) = (self.s, self.s.as_bytes());
        let mut i = self.i;
        let start = i;
        let c = *b.get(i)?;
        let next = b.get(i + 1).copied();
        let kind = match c {
            c if c.is_ascii_whitespace() => {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                TokenKind::Space
            }
            b'-' if next == Some(b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                TokenKind::Comment
            }
            b'/' if next == Some(b'*') => {
                i = block_comment_end(b, i);
                TokenKind::Comment
            }
            b'\'' => {
                i = string_end(b, i + 1, false);
                TokenKind::Str
            }
            b'e' | b'E' if next == Some(b'\'') => {
                i = string_end(b, i + 2, true);
                TokenKind::Str
            }
            b'"' => {
                let (end, value) = quoted_ident(s, i + 1);
                i = end;
                TokenKind::QuotedIdent(value)
            }
            b'$' => {
                let (end, kind) = dollar(s, i);
                i = end;
                kind
            }
            c if is_ident_start(c) => {
                while i < b.len() && is_ident_char(b[i]) {
                    i += 1;
                }
                TokenKind::Word(if self.word_text { s[start..i].to_lowercase() } else { String::new() })
            }
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                    i += 1;
                }
                TokenKind::Number
            }
            b';' => {
                i += 1;
                TokenKind::Semicolon
            }
            _ => {
                i += 1;
                TokenKind::Punct
            }
        };
        self.i = i;
        Some(Token { kind, span: start..i })
    }
}

fn block_comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// End (exclusive) of a string body starting at `i` (after the opening quote).
fn string_end(b: &[u8], mut i: usize, backslash: bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if backslash => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn quoted_ident(s: &str, mut i: usize) -> (usize, String) {
    let b = s.as_bytes();
    let mut value = String::new();
    let mut seg = i;
    while i < b.len() {
        if b[i] == b'"' {
            value.push_str(&s[seg..i]);
            if b.get(i + 1) == Some(&b'"') {
                value.push('"');
                i += 2;
                seg = i;
                continue;
            }
            return (i + 1, value);
        }
        i += 1;
    }
    value.push_str(&s[seg..]);
    (b.len(), value)
}

/// `$n`, `$tag$…$tag$` or a lone `$`.
fn dollar(s: &str, i: usize) -> (usize, TokenKind) {
    let b = s.as_bytes();
    let mut j = i + 1;
    if b.get(j).is_some_and(u8::is_ascii_digit) {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let n = s[i + 1..j].parse::<usize>().unwrap_or(usize::MAX);
        return (j, TokenKind::Param(n));
    }
    if b.get(j).is_some_and(|&c| is_ident_start(c)) {
        while j < b.len() && (is_ident_start(b[j]) || b[j].is_ascii_digit()) {
            j += 1;
        }
    }
    if b.get(j) != Some(&b'$') {
        return (i + 1, TokenKind::Punct);
    }
    let delim = &s[i..=j];
    let body = j + 1;
    match s[body..].find(delim) {
        Some(k) => (body + k + delim.len(), TokenKind::Str),
        None => (b.len(), TokenKind::Str),
    }
}

/// The statements of a text: byte ranges without the separating semicolons, skipping pieces
/// that hold only whitespace and comments.
pub(crate) fn split_statements(sql: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut meaningful = false;
    for tok in lex(sql) {
        match tok.kind {
            TokenKind::Semicolon => {
                if meaningful {
                    out.push(start..tok.span.start);
                }
                start = tok.span.end;
                meaningful = false;
            }
            ref k if k.is_trivia() => {}
            _ => meaningful = true,
        }
    }
    if meaningful {
        out.push(start..sql.len());
    }
    out
}

/// Highest `$n` in the text (0 when none).
pub(crate) fn max_param(sql: &str) -> usize {
    lex(sql)
        .iter()
        .filter_map(|t| match t.kind {
            TokenKind::Param(n) => Some(n),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The shape of a statement for the shape cache: the text with every number and string
/// literal replaced by a placeholder numbered after the text's own (`$base+1`, ...), the
/// literals' source texts, and `base` (the highest placeholder already in the text). `None`
/// for texts the shape cache does not handle (routing hints and `SHOW ROUTE`, which plan by
/// exact text; several statements; no literals).
pub(crate) fn shape(sql: &str) -> Option<(String, Vec<&str>, usize)> {
    // One pass over the tokens, none of them kept: this runs for every statement with
    // literals that reaches the planner.
    let mut base = 0;
    let mut literals = Vec::new();
    let mut after_semicolon = false;
    let mut first_word = None;
    for t in Lexer::new(sql, false) {
        match &t.kind {
            // A trailing `;` (what psql and pgbench send) is fine; anything after one is a
            // second statement.
            TokenKind::Space | TokenKind::Semicolon => {}
            TokenKind::Comment if sql[t.span.clone()].contains("pg_router") => return None,
            TokenKind::Comment => {}
            _ if after_semicolon => return None,
            TokenKind::Param(n) => base = base.max(*n),
            TokenKind::Number | TokenKind::Str => literals.push(&sql[t.span.clone()]),
            _ => {}
        }
        if first_word.is_none() && !t.kind.is_trivia() {
            first_word = Some(t.span.clone());
        }
        after_semicolon |= t.kind == TokenKind::Semicolon;
    }
    if literals.is_empty() {
        return None;
    }
    // `SHOW ROUTE FOR ...` explains its statement with the literals in place.
    if first_word.is_some_and(|w| sql[w].eq_ignore_ascii_case("show")) && show_route(sql).is_some() {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 4 * literals.len());
    let mut last = 0;
    for (k, literal) in (base + 1..).zip(&literals) {
        // Each literal is a subslice of `sql`: its offset is where it starts.
        let at = literal.as_ptr() as usize - sql.as_ptr() as usize;
        out.push_str(&sql[last..at]);
        out.push('$');
        push_decimal(&mut out, k);
        last = at + literal.len();
    }
    out.push_str(&sql[last..]);
    Some((out, literals, base))
}

/// Appends `n` in decimal (what `write!(out, "{n}")` does, without the formatting machinery:
/// this runs for every literal of every statement planned by shape).
fn push_decimal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// Renumber placeholders `$1..$k` in order of first use; returns the text and, for each new
/// number, the original one.
pub(crate) fn renumber_params(sql: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(sql.len());
    let mut map: Vec<usize> = Vec::new();
    let mut last = 0;
    for tok in lex(sql) {
        if let TokenKind::Param(n) = tok.kind {
            let new = match map.iter().position(|&m| m == n) {
                Some(p) => p + 1,
                None => {
                    map.push(n);
                    map.len()
                }
            };
            out.push_str(&sql[last..tok.span.start]);
            out.push('$');
            out.push_str(&new.to_string());
            last = tok.span.end;
        }
    }
    out.push_str(&sql[last..]);
    (out, map)
}

/// The significant (non-trivia) tokens.
pub(crate) fn significant(sql: &str) -> Vec<Token> {
    lex(sql).into_iter().filter(|t| !t.kind.is_trivia()).collect()
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.kind) {
        Some(TokenKind::Word(w)) => Some(w),
        _ => None,
    }
}

/// `SHOW ROUTE FOR <statement>`: the byte offset where the inner statement starts.
pub(crate) fn show_route(sql: &str) -> Option<usize> {
    show_route_in(sql, Lexer::new(sql, false))
}

/// [`show_route`] over tokens already lexed from `sql` (word text not needed: the words are
/// compared in the source, case-insensitively).
fn show_route_in(sql: &str, tokens: impl Iterator<Item = Token>) -> Option<usize> {
    let mut words = tokens.filter(|t| !t.kind.is_trivia()).take(3);
    let mut end = None;
    for want in ["show", "route", "for"] {
        let t = words.next()?;
        if !matches!(t.kind, TokenKind::Word(_)) || !sql[t.span.clone()].eq_ignore_ascii_case(want) {
            return None;
        }
        end = Some(t.span.end);
    }
    end
}

/// A routing hint: a leading `/* pg_router: [keyspace=KS] shard=NAME */`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hint {
    pub keyspace: Option<String>,
    pub shard: String,
}

pub(crate) fn routing_hint(sql: &str) -> Result<Option<Hint>, PlanError> {
    let Some(tok) = lex(sql).into_iter().find(|t| t.kind != TokenKind::Space) else {
        return Ok(None);
    };
    let text = &sql[tok.span.clone()];
    let Some(body) = text.strip_prefix("/*").and_then(|t| t.strip_suffix("*/")) else {
        return Ok(None);
    };
    let body = body.trim();
    let Some(rest) = body.strip_prefix("pg_router:") else {
        return Ok(None);
    };
    let bad = || PlanError::Syntax {
        reason: "malformed routing hint: expected /* pg_router: [keyspace=KS] shard=NAME */".into(),
    };
    let (mut keyspace, mut shard) = (None, None);
    for pair in rest.split_whitespace() {
        match pair.split_once('=') {
            Some(("shard", v)) if !v.is_empty() && shard.is_none() => shard = Some(v.to_owned()),
            Some(("keyspace", v)) if !v.is_empty() && keyspace.is_none() => keyspace = Some(v.to_owned()),
            _ => return Err(bad()),
        }
    }
    Ok(Some(Hint { keyspace, shard: shard.ok_or_else(bad)? }))
}

/// Parse one statement (a piece from [`split_statements`]).
pub(crate) fn parse_one(sql: &str) -> Result<Statement, ParserError> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).with_recursion_limit(RECURSION_LIMIT).try_with_sql(sql)?;
    let mut stmts = parser.parse_statements()?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        n => Err(ParserError::ParserError(format!("expected one statement, found {n}"))),
    }
}

pub(crate) fn is_recursion_error(e: &ParserError) -> bool {
    matches!(e, ParserError::RecursionLimitExceeded)
}

/// What the token-level fallback recognizes in a statement sqlparser rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED.
    TwoPhase,
    /// BEGIN / START TRANSACTION with options sqlparser does not know.
    Begin,
    /// ABORT.
    Rollback,
    /// Anything else: the identifiers it contains (names as PostgreSQL folds them).
    Other { identifiers: Vec<String> },
}

pub(crate) fn fallback(sql: &str) -> Fallback {
    let toks = significant(sql);
    let w0 = word(toks.first());
    let w1 = word(toks.get(1));
    match (w0, w1) {
        (Some("prepare"), Some("transaction"))
        | (Some("commit"), Some("prepared"))
        | (Some("rollback"), Some("prepared")) => Fallback::TwoPhase,
        (Some("begin"), _) | (Some("start"), Some("transaction")) => Fallback::Begin,
        (Some("abort"), _) => Fallback::Rollback,
        _ => Fallback::Other {
            identifiers: toks
                .into_iter()
                .filter_map(|t| match t.kind {
                    TokenKind::Word(w) | TokenKind::QuotedIdent(w) => Some(w),
                    _ => None,
                })
                .collect(),
        },
    }
}

impl InsertTemplate {
    /// Keep the parsed INSERT (must be `INSERT … VALUES`).
    pub(crate) fn new(statement: Statement) -> Self {
        InsertTemplate { statement: Box::new(statement) }
    }

    /// The INSERT carrying only `rows` (indexes into the client's VALUES rows, in that order),
    /// with placeholders renumbered `$1..$k` in order of first use, and for each new
    /// placeholder the client's original number. Out-of-range indexes are ignored.
    #[must_use]
    pub fn sql_for_rows(&self, rows: &[usize]) -> (String, Vec<usize>) {
        let mut stmt = (*self.statement).clone();
        if let Statement::Insert(insert) = &mut stmt {
            if let Some(SetExpr::Values(values)) = insert.source.as_mut().map(|q| q.body.as_mut()) {
                let all = std::mem::take(&mut values.rows);
                values.rows = rows.iter().filter_map(|&r| all.get(r).cloned()).collect();
            }
        }
        renumber_params(&stmt.to_string())
    }

    /// Like [`InsertTemplate::sql_for_rows`], with `column` added to the column list and
    /// `values[i]` (an integer) appended to row `rows[i]`.
    #[must_use]
    pub fn sql_for_rows_filled(&self, rows: &[usize], column: &str, values: &[i64]) -> (String, Vec<usize>) {
        let mut stmt = (*self.statement).clone();
        if let Statement::Insert(insert) = &mut stmt {
            insert.columns.push(sqlparser::ast::ObjectName::from(vec![sqlparser::ast::Ident::new(column)]));
            if let Some(SetExpr::Values(v)) = insert.source.as_mut().map(|q| q.body.as_mut()) {
                let all = std::mem::take(&mut v.rows);
                v.rows = rows
                    .iter()
                    .zip(values)
                    .filter_map(|(&r, id)| {
                        let mut row = all.get(r).cloned()?;
                        row.content.push(sqlparser::ast::Expr::value(sqlparser::ast::Value::Number(
                            id.to_string(),
                            false,
                        )));
                        Some(row)
                    })
                    .collect();
            }
        }
        renumber_params(&stmt.to_string())
    }

    /// Number of VALUES rows.
    #[must_use]
    pub fn row_count(&self) -> usize {
        match &*self.statement {
            Statement::Insert(insert) => match insert.source.as_ref().map(|q| q.body.as_ref()) {
                Some(SetExpr::Values(values)) => values.rows.len(),
                _ => 0,
            },
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_quotes_and_params() {
        let sql = "SELECT 'a;$1', E'x\\';', \"We;ird\", $$ ; $2 $$, $tag$;$tag$ FROM t WHERE x = $3 -- $4;\n/* $5 /* ; */ */";
        assert_eq!(max_param(sql), 3);
        assert_eq!(split_statements(sql).len(), 1);
        let ids: Vec<_> = lex(sql)
            .into_iter()
            .filter_map(|t| match t.kind {
                TokenKind::QuotedIdent(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["We;ird"]);
    }

    #[test]
    fn splits_statements() {
        let sql = "BEGIN; UPDATE t SET a = ';' ; ; -- x\n COMMIT;  ";
        let parts: Vec<&str> = split_statements(sql).into_iter().map(|r| sql[r].trim()).collect();
        assert_eq!(parts, ["BEGIN", "UPDATE t SET a = ';'", "-- x\n COMMIT"]);
    }

    #[test]
    fn renumbers() {
        assert_eq!(renumber_params("VALUES ($3, $1), ($3)"), ("VALUES ($1, $2), ($1)".into(), vec![3, 1]));
    }

    #[test]
    fn hints() {
        let h = routing_hint("/* pg_router: keyspace=commerce shard=-80 */ SELECT 1").unwrap().unwrap();
        assert_eq!((h.keyspace.as_deref(), h.shard.as_str()), (Some("commerce"), "-80"));
        assert!(routing_hint("/* hello */ SELECT 1").unwrap().is_none());
        assert!(routing_hint("/* pg_router: shard= */ SELECT 1").is_err());
    }

    #[test]
    fn show_route_detection() {
        assert_eq!(show_route("show Route FOR select 1"), Some(14));
        assert_eq!(show_route("SHOW search_path"), None);
        assert_eq!(show_route("show \"route\" for select 1"), None);
        assert_eq!(show_route("/* c */ SHOW route\n for select 1"), Some(23));
    }

    #[test]
    fn identifier_byte_classes() {
        for b in 0..=255u8 {
            let start = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
            assert_eq!(is_ident_start(b), start, "{b}");
            assert_eq!(is_ident_char(b), start || b.is_ascii_digit() || b == b'$', "{b}");
        }
    }

    #[test]
    fn shapes() {
        let shaped = |sql: &str| shape(sql).map(|(text, literals, base)| (text, literals.join("|"), base));
        assert_eq!(
            shaped("SELECT a FROM t WHERE id = 42 AND s = 'x''y';"),
            Some(("SELECT a FROM t WHERE id = $1 AND s = $2;".into(), "42|'x''y'".into(), 0))
        );
        assert_eq!(
            shaped("select $2 from t where id = 7 and k = $1"),
            Some(("select $2 from t where id = $3 and k = $1".into(), "7".into(), 2))
        );
        assert_eq!(shaped("select 1 ; -- done\n;"), Some(("select $1 ; -- done\n;".into(), "1".into(), 0)));
        assert_eq!(shaped("select 1; select 2"), None);
        assert_eq!(shaped("select a from t"), None);
        assert_eq!(shaped("/* pg_router: shard=s1 */ select 1"), None);
        assert_eq!(shaped("select 1 -- pg_router: shard=s1"), None);
        assert_eq!(shaped("SHOW ROUTE FOR select 1"), None);
        assert_eq!(shaped("/* x */ show route for select 1"), None);
        assert_eq!(shaped("show x = 1"), Some(("show x = $1".into(), "1".into(), 0)));
        // Placeholder numbers past one digit.
        assert_eq!(
            shaped("select $9, 1, 2, 3"),
            Some(("select $9, $10, $11, $12".into(), "1|2|3".into(), 9))
        );
        for n in [0, 7, 10, 99, 100, 12345, usize::MAX] {
            let mut out = String::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        for sql in ["'abc", "select $$x", "select 1 /* open", "select e'\\'"] {
            let _ = shape(sql);
        }
    }

    #[test]
    fn fallback_classes() {
        assert_eq!(fallback("PREPARE TRANSACTION 'x'"), Fallback::TwoPhase);
        assert_eq!(fallback("commit prepared 'x'"), Fallback::TwoPhase);
        match fallback("VACUUM ANALYZE \"Users\", orders") {
            Fallback::Other { identifiers } => {
                assert_eq!(identifiers, ["vacuum", "analyze", "Users", "orders"])
            }
            other => panic!("{other:?}"),
        }
    }
}
