//! A token-level look at statement text: just enough to know what transaction pooling must do
//! with it. This is deliberately not a parser (the planner owns parsing); it reads the leading
//! keywords of each `;`-separated statement, skipping comments and quoted text.

/// What a statement means for transaction pooling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// No session state involved.
    None,
    /// `SET [SESSION] name = value`: replayed on whichever connection serves the client.
    Set { name: String, value: String },
    /// `RESET name`.
    Reset { name: String },
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL` or `DEALLOCATE ALL`: forget the client's prepared statements (and, for
    /// DISCARD, its settings); the connection is reset before reuse.
    Discard { settings: bool },
    /// Session state that cannot follow the client across connections but is harmless within
    /// one transaction (a temporary table, `LOAD`): the connection is reset before reuse.
    Dirty,
    /// Cannot work in transaction pooling mode; the reason is shown to the client.
    Unsupported(&'static str),
}

/// Statement kind, the `type` label of `pg_router_statements_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Transaction,
    Ddl,
    Other,
}

impl StatementKind {
    pub const ALL: [StatementKind; 7] =
        [Self::Select, Self::Insert, Self::Update, Self::Delete, Self::Transaction, Self::Ddl, Self::Other];

    pub fn label(self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Transaction => "transaction",
            Self::Ddl => "ddl",
            Self::Other => "other",
        }
    }
}

/// Where the text from `i` on stops being whitespace or comments.
fn skip_trivia(s: &[u8], mut i: usize) -> usize {
    while i < s.len() {
        match s[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if s.get(i + 1) == Some(&b'-') => {
                while i < s.len() && s[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if s.get(i + 1) == Some(&b'*') => {
                // PostgreSQL block comments nest.
                let mut depth = 0usize;
                while i < s.len() {
                    if s[i] == b'/' && s.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if s[i] == b'*' && s.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            _ => return i,
        }
    }
    i
}

/// Where a bare word starting at `i` ends.
fn word_end(s: &[u8], mut i: usize) -> usize {
    while i < s.len()
        && !matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | b';' | b'=' | b',' | b'(' | b')' | b'\'' | b'"')
    {
        i += 1;
    }
    i
}

/// Splits SQL into words, skipping whitespace, comments, and the contents of quoted strings and
/// identifiers; `;` is returned as its own token.
struct Tokens<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, i: 0 }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.text.as_bytes();
        self.i = skip_trivia(s, self.i);
        let start = self.i;
        let c = *s.get(start)?;
        match c {
            b';' | b'=' | b',' | b'(' | b')' => self.i += 1,
            b'\'' | b'"' => {
                self.i += 1;
                while self.i < s.len() {
                    if s[self.i] == c {
                        if s.get(self.i + 1) == Some(&c) {
                            self.i += 2;
                            continue;
                        }
                        self.i += 1;
                        break;
                    }
                    self.i += 1;
                }
            }
            b'$' => {
                // Dollar quoting: $tag$ ... $tag$ (or a positional parameter $1).
                let tag_end = s[start + 1..].iter().position(|&b| b == b'$').map(|p| start + 1 + p);
                match tag_end {
                    Some(end)
                        if s[start + 1..end].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') =>
                    {
                        let tag = &s[start..=end];
                        let body = end + 1;
                        let close = s[body..].windows(tag.len()).position(|w| w == tag);
                        self.i = close.map_or(s.len(), |p| body + p + tag.len());
                    }
                    _ => {
                        self.i += 1;
                        while self.i < s.len() && s[self.i].is_ascii_digit() {
                            self.i += 1;
                        }
                    }
                }
            }
            _ => self.i = word_end(s, self.i),
        }
        // Every token ends just after an ASCII byte or at the end, so this is a char boundary
        // (`get` checks it in constant time).
        self.text.get(start..self.i)
    }
}

/// Classifies every statement in `sql`; returns the statement kind of the first statement and
/// the session effects in order.
pub fn classify(sql: &str) -> (StatementKind, Vec<SessionEffect>) {
    shortcut(sql.as_bytes()).unwrap_or_else(|| classify_all(sql))
}

/// [`classify`] for text that is not known to be UTF-8: a simple Query forwarded as it came
/// (its bytes are in the client's encoding). Only text the shortcut cannot settle is checked,
/// and read with invalid bytes replaced; the keywords classification looks at are ASCII. A
/// setting whose name or value held such bytes is refused: the router replays settings as
/// UTF-8 text and could not send them again as the client wrote them.
pub fn classify_bytes(sql: &[u8]) -> (StatementKind, Vec<SessionEffect>) {
    if let Some(settled) = shortcut(sql) {
        return settled;
    }
    match String::from_utf8_lossy(sql) {
        std::borrow::Cow::Borrowed(text) => classify_all(text),
        std::borrow::Cow::Owned(text) => {
            let (kind, mut effects) = classify_all(&text);
            for e in &mut effects {
                let lossy = match e {
                    SessionEffect::Set { name, value } => {
                        name.contains('\u{FFFD}') || value.contains('\u{FFFD}')
                    }
                    SessionEffect::Reset { name } => name.contains('\u{FFFD}'),
                    _ => false,
                };
                if lossy {
                    *e = SessionEffect::Unsupported(
                        "SET or RESET with text that is not UTF-8 cannot be replayed across connections in transaction pooling mode; write the value in ASCII or use client_encoding UTF8",
                    );
                }
            }
            (kind, effects)
        }
    }
}

/// Most statements are one plain DML or transaction statement: its first word says all there
/// is to say, unless it takes a session-level advisory lock. One pass over the bytes checks
/// both, cheaper than lexing the whole text; `None` sends the text down the full path.
fn shortcut(sql: &[u8]) -> Option<(StatementKind, Vec<SessionEffect>)> {
    if !plain_single_statement(sql) {
        return None;
    }
    let start = skip_trivia(sql, 0);
    match statement_kind(&sql[start..word_end(sql, start)]) {
        // No statement of these kinds changes session state by its leading words.
        kind @ (StatementKind::Select
        | StatementKind::Insert
        | StatementKind::Update
        | StatementKind::Delete
        | StatementKind::Transaction) => Some((kind, Vec::new())),
        _ => None,
    }
}
/// True when `sql` is certainly one statement (its only `;`, if any, ends it) and does not
/// contain `advisory_lock` in any case, quoted or not (every session-level advisory lock
/// function does). A `;` or the word inside quotes or comments sends the text down the full
/// path, which is merely slower.
fn plain_single_statement(sql: &[u8]) -> bool {
    // A vectorised search visits only the positions of `;` and `_`.
    for i in memchr::memchr2_iter(b';', b'_', sql) {
        match sql[i] {
            b';' => return sql[i + 1..].iter().all(u8::is_ascii_whitespace),
            _ if names_advisory_lock(sql, i) => return false,
            _ => {}
        }
    }
    true
}

/// Whether the `_` at `at` is the one in `advisory_lock`, in any case.
fn names_advisory_lock(sql: &[u8], at: usize) -> bool {
    const ADVISORY: &[u8] = b"advisory";
    const LOCK: &[u8] = b"_lock";
    sql.get(at..at + LOCK.len()).is_some_and(|w| w.eq_ignore_ascii_case(LOCK))
        && at >= ADVISORY.len()
        && sql[at - ADVISORY.len()..at].eq_ignore_ascii_case(ADVISORY)
}

fn classify_all(sql: &str) -> (StatementKind, Vec<SessionEffect>) {
    let mut effects = Vec::new();
    let mut kind = None;
    let mut tokens = Tokens::new(sql).peekable();
    while tokens.peek().is_some() {
        let mut stmt: Vec<&str> = Vec::new();
        for t in tokens.by_ref() {
            if t == ";" {
                break;
            }
            stmt.push(t);
        }
        if stmt.is_empty() {
            continue;
        }
        kind.get_or_insert_with(|| statement_kind(stmt[0].as_bytes()));
        let effect = session_effect(&stmt);
        if effect != SessionEffect::None {
            effects.push(effect);
        }
    }
    (kind.unwrap_or(StatementKind::Other), effects)
}

fn kw(t: Option<&&str>, word: &str) -> bool {
    t.is_some_and(|t| t.eq_ignore_ascii_case(word))
}

/// The kind of a statement by its first word.
fn statement_kind(first: &[u8]) -> StatementKind {
    use StatementKind::*;
    // Words of up to eight bytes compare as one number: the bytes, zero-padded, with 0x20 or-ed
    // into each, which lowercases ASCII letters and maps no other byte onto a lowercase letter.
    // The length is compared too, so padding cannot stand for a byte of the word.
    const fn key(word: &[u8]) -> u64 {
        let mut k = 0;
        let mut i = 0;
        while i < word.len() {
            k |= (word[i] as u64) << (8 * i);
            i += 1;
        }
        k | 0x2020_2020_2020_2020
    }
    if first.len() > 8 {
        let kind = if first.eq_ignore_ascii_case(b"savepoint") { Transaction } else { Other };
        return kind;
    }
    let mut padded = [0u8; 8];
    padded[..first.len()].copy_from_slice(first);
    let k = u64::from_le_bytes(padded) | 0x2020_2020_2020_2020;
    macro_rules! words {
        ($($w:literal => $kind:expr),* $(,)?) => {
            $(if first.len() == $w.len() && k == const { key($w) } {
                return $kind;
            })*
        };
    }
    words! {
        b"select" => Select, b"with" => Select, b"values" => Select, b"table" => Select,
        b"insert" => Insert, b"copy" => Insert, b"update" => Update,
        b"delete" => Delete, b"truncate" => Delete,
        b"begin" => Transaction, b"start" => Transaction, b"commit" => Transaction,
        b"end" => Transaction, b"rollback" => Transaction, b"abort" => Transaction,
        b"release" => Transaction,
        b"create" => Ddl, b"alter" => Ddl, b"drop" => Ddl, b"comment" => Ddl, b"grant" => Ddl,
        b"revoke" => Ddl,
    }
    Other
}

fn unquote_ident(t: &str) -> String {
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        t[1..t.len() - 1].replace("\"\"", "\"")
    } else {
        t.to_ascii_lowercase()
    }
}

fn session_effect(stmt: &[&str]) -> SessionEffect {
    let t = |i: usize| stmt.get(i);
    let first = stmt[0];
    let is = |w: &str| first.eq_ignore_ascii_case(w);
    const SESSION_LOCKS: [&str; 4] = [
        "pg_advisory_lock",
        "pg_try_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock_shared",
    ];
    if stmt.iter().any(|w| SESSION_LOCKS.iter().any(|l| w.eq_ignore_ascii_case(l))) {
        return SessionEffect::Unsupported(
            "session-level advisory locks cannot be held across transactions in transaction pooling mode; use pg_advisory_xact_lock",
        );
    }
    if is("set") {
        let mut i = 1;
        if kw(t(1), "local")
            || kw(t(1), "transaction")
            || (kw(t(1), "session") && kw(t(2), "characteristics"))
        {
            return SessionEffect::None;
        }
        if kw(t(1), "session") {
            i = 2;
        }
        if kw(t(i), "role")
            || kw(t(i), "session") && kw(t(i + 1), "authorization")
            || kw(t(i), "authorization")
        {
            return SessionEffect::Unsupported(
                "SET ROLE and SET SESSION AUTHORIZATION are not supported in transaction pooling mode",
            );
        }
        let (name, value_at) = if kw(t(i), "time") && kw(t(i + 1), "zone") {
            ("timezone".to_string(), i + 2)
        } else if kw(t(i), "names") {
            ("client_encoding".to_string(), i + 1)
        } else if kw(t(i), "schema") {
            ("search_path".to_string(), i + 1)
        } else if let Some(n) = t(i) {
            let at = if matches!(t(i + 1), Some(&"=")) || kw(t(i + 1), "to") { i + 2 } else { i + 1 };
            (unquote_ident(n), at)
        } else {
            return SessionEffect::None;
        };
        let value = stmt[value_at.min(stmt.len())..].join(" ");
        if value.is_empty() {
            return SessionEffect::None;
        }
        if value.eq_ignore_ascii_case("default") {
            return SessionEffect::Reset { name };
        }
        return SessionEffect::Set { name, value };
    }
    if is("reset") {
        return match t(1) {
            Some(n) if n.eq_ignore_ascii_case("all") => SessionEffect::ResetAll,
            Some(n) if n.eq_ignore_ascii_case("role") || n.eq_ignore_ascii_case("session") => {
                SessionEffect::Unsupported("RESET ROLE and RESET SESSION AUTHORIZATION are not supported in transaction pooling mode")
            }
            Some(n) if n.eq_ignore_ascii_case("time") => SessionEffect::Reset { name: "timezone".into() },
            Some(n) => SessionEffect::Reset { name: unquote_ident(n) },
            None => SessionEffect::None,
        };
    }
    if is("listen") {
        return SessionEffect::Unsupported("LISTEN needs a dedicated connection: use session pooling mode");
    }
    // UNLISTEN is left alone: LISTEN being refused, the client listens on nothing, and neither
    // do the pool's backends, so it changes nothing anywhere. Drivers send it when they reset a
    // connection (asyncpg's pool: `... UNLISTEN *; RESET ALL;`), which must not fail.
    if is("prepare") && !kw(t(1), "transaction") {
        return SessionEffect::Unsupported(
            "SQL PREPARE is not supported in transaction pooling mode; use protocol-level prepared statements (Parse/Bind)",
        );
    }
    if is("deallocate") {
        let all = kw(t(1), "all") || kw(t(1), "prepare") && kw(t(2), "all");
        return if all {
            SessionEffect::Discard { settings: false }
        } else {
            SessionEffect::Unsupported("DEALLOCATE of a single statement is not supported in transaction pooling mode; use the protocol-level Close message or DEALLOCATE ALL")
        };
    }
    if is("discard") {
        return if kw(t(1), "all") {
            SessionEffect::Discard { settings: true }
        } else {
            SessionEffect::Dirty
        };
    }
    if is("declare")
        && stmt.windows(2).any(|w| w[0].eq_ignore_ascii_case("with") && w[1].eq_ignore_ascii_case("hold"))
    {
        return SessionEffect::Unsupported(
            "cursors WITH HOLD outlive their transaction and are not supported in transaction pooling mode",
        );
    }
    if is("create")
        && (kw(t(1), "temp") || kw(t(1), "temporary") || kw(t(2), "temp") || kw(t(2), "temporary"))
    {
        return SessionEffect::Dirty;
    }
    if is("load") {
        return SessionEffect::Dirty;
    }
    SessionEffect::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effects(sql: &str) -> Vec<SessionEffect> {
        classify(sql).1
    }

    #[test]
    fn kinds() {
        assert_eq!(classify("  /* x */ SELECT 1").0, StatementKind::Select);
        assert_eq!(classify("-- c\nupdate t set a=1").0, StatementKind::Update);
        assert_eq!(classify("BEGIN; select 1").0, StatementKind::Transaction);
        assert_eq!(classify("").0, StatementKind::Other);
    }

    #[test]
    fn set_forms() {
        let set = |n: &str, v: &str| SessionEffect::Set { name: n.into(), value: v.into() };
        assert_eq!(effects("SET search_path TO a, b"), vec![set("search_path", "a , b")]);
        assert_eq!(effects("set SESSION statement_timeout = '5s'"), vec![set("statement_timeout", "'5s'")]);
        assert_eq!(effects("SET TIME ZONE 'UTC'"), vec![set("timezone", "'UTC'")]);
        assert_eq!(effects("SET \"DateStyle\" = ISO"), vec![set("DateStyle", "ISO")]);
        assert_eq!(
            effects("set work_mem to default"),
            vec![SessionEffect::Reset { name: "work_mem".into() }]
        );
        assert_eq!(effects("SET LOCAL work_mem = '1MB'"), vec![]);
        assert_eq!(effects("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), vec![]);
        assert!(matches!(effects("SET ROLE admin")[0], SessionEffect::Unsupported(_)));
        assert_eq!(effects("RESET ALL"), vec![SessionEffect::ResetAll]);
    }

    #[test]
    fn unsupported_and_dirty() {
        assert!(matches!(effects("LISTEN ch")[0], SessionEffect::Unsupported(_)));
        assert_eq!(effects("UNLISTEN *"), vec![]);
        assert_eq!(
            effects("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;"),
            vec![SessionEffect::ResetAll]
        );
        assert!(matches!(effects("select pg_advisory_lock(1)")[0], SessionEffect::Unsupported(_)));
        assert_eq!(effects("select pg_advisory_xact_lock(1)"), vec![]);
        assert!(matches!(effects("PREPARE p AS select 1")[0], SessionEffect::Unsupported(_)));
        assert_eq!(effects("PREPARE TRANSACTION 'x'"), vec![]);
        assert_eq!(effects("DEALLOCATE ALL"), vec![SessionEffect::Discard { settings: false }]);
        assert_eq!(effects("CREATE TEMP TABLE t (a int)"), vec![SessionEffect::Dirty]);
        assert_eq!(effects("create global temporary table t (a int)"), vec![SessionEffect::Dirty]);
        assert!(matches!(
            effects("declare c cursor with hold for select 1")[0],
            SessionEffect::Unsupported(_)
        ));
    }

    #[test]
    fn the_first_word_shortcut_agrees_with_the_full_lexer() {
        for sql in [
            "SELECT 1",
            "  /* c */ update t set a = 1",
            "insert into t values (1)",
            "select pg_advisory_lock(1)",
            "SELECT PG_TRY_ADVISORY_LOCK_SHARED(1)",
            "select 'pg_advisory_lock'",
            "select pg_advisory_xact_lock(1)",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "set a = 1",
            "listen x",
            "with x as (select 1) select * from x",
            "select 1; listen x",
            "select 1;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;\n",
            "select ';' ; listen x",
            "select 1 -- ;\n; set a = 1",
            "select 12345678; set a = 1",
            "select x from t where y = 1234567;",
            "SELECT PG_ADVISORY_LOCK(1) FROM some_long_table_name",
            "select 1 from tbl_advisory_locks_view",
            "",
            "-- only a comment",
        ] {
            assert_eq!(classify(sql), classify_all(sql), "{sql}");
            assert_eq!(classify_bytes(sql.as_bytes()), classify_all(sql), "{sql}");
        }
    }

    #[test]
    fn first_words_are_matched_exactly_in_any_case() {
        // The reference: lowercase the word and compare it as text.
        fn reference(word: &[u8]) -> StatementKind {
            let lower = word.to_ascii_lowercase();
            match &lower[..] {
                b"select" | b"with" | b"values" | b"table" => StatementKind::Select,
                b"insert" | b"copy" => StatementKind::Insert,
                b"update" => StatementKind::Update,
                b"delete" | b"truncate" => StatementKind::Delete,
                b"begin" | b"start" | b"commit" | b"end" | b"rollback" | b"abort" | b"savepoint"
                | b"release" => StatementKind::Transaction,
                b"create" | b"alter" | b"drop" | b"comment" | b"grant" | b"revoke" => StatementKind::Ddl,
                _ => StatementKind::Other,
            }
        }
        let words: &[&[u8]] = &[
            b"select",
            b"SELECT",
            b"SeLeCt",
            b"with",
            b"values",
            b"table",
            b"insert",
            b"copy",
            b"update",
            b"delete",
            b"truncate",
            b"TRUNCATE",
            b"begin",
            b"start",
            b"commit",
            b"end",
            b"rollback",
            b"abort",
            b"savepoint",
            b"SAVEPOINT",
            b"release",
            b"create",
            b"alter",
            b"drop",
            b"comment",
            b"grant",
            b"revoke",
            b"",
            b"e",
            b"en",
            b"ends",
            b"selec",
            b"selects",
            b"savepoints",
            b"savepoin",
            b"select\0",
            b"s\xc5lect",
            b"sel@ct",
            b"SEL\x7fCT",
            b"end\0\0",
            b"\xff\xff\xff",
            b"rollbacks",
            b"listen",
            b"set",
        ];
        for w in words {
            assert_eq!(statement_kind(w), reference(w), "{:?}", String::from_utf8_lossy(w));
        }
        // Every byte in every position of a keyword: only its two cases keep the kind.
        for kw in [&b"select"[..], b"rollback", b"end", b"savepoint"] {
            for at in 0..kw.len() {
                for b in 0..=255u8 {
                    let mut w = kw.to_vec();
                    w[at] = b;
                    assert_eq!(statement_kind(&w), reference(&w), "{:?}", String::from_utf8_lossy(&w));
                }
            }
        }
    }

    proptest::proptest! {
        /// Whatever the shortcut settles, the full lexer settles the same way.
        #[test]
        fn the_shortcut_agrees_with_the_full_lexer_on_sql_like_text(parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just("select"), proptest::strategy::Just("UPDATE"),
                proptest::strategy::Just("set"), proptest::strategy::Just(";"), proptest::strategy::Just(" "),
                proptest::strategy::Just("_"), proptest::strategy::Just("advisory"), proptest::strategy::Just("_lock"),
                proptest::strategy::Just("pg_advisory_lock(1)"), proptest::strategy::Just("pg_try_"),
                proptest::strategy::Just("'"), proptest::strategy::Just("--"), proptest::strategy::Just("\n"),
                proptest::strategy::Just("x_y"), proptest::strategy::Just("listen"), proptest::strategy::Just("begin"),
            ], 0..24)) {
            let sql = parts.concat();
            if let Some(settled) = shortcut(sql.as_bytes()) {
                proptest::prop_assert_eq!(settled, classify_all(&sql), "{}", sql);
            }
        }
    }

    #[test]
    fn text_in_another_encoding_is_classified_by_its_ascii_keywords() {
        // LATIN1 bytes: not UTF-8.
        assert_eq!(classify_bytes(b"select 'caf\xe9'"), (StatementKind::Select, vec![]));
        assert_eq!(classify_bytes(b"update t set a = '\xe9' where k = 1;"), (StatementKind::Update, vec![]));
        let (kind, effects) =
            classify_bytes(b"set search_path = a; listen x; set application_name = 'caf\xe9'");
        assert_eq!(kind, StatementKind::Other);
        assert!(
            matches!(
                effects[..],
                [SessionEffect::Set { .. }, SessionEffect::Unsupported(_), SessionEffect::Unsupported(m)]
                    if m.contains("not UTF-8")
            ),
            "{effects:?}"
        );
        // A replacement character the client really wrote (valid UTF-8) is a value like any other.
        let (_, effects) = classify_bytes("set application_name = '\u{FFFD}'; select 1".as_bytes());
        assert!(matches!(effects[..], [SessionEffect::Set { .. }]), "{effects:?}");
        assert_eq!(classify_bytes(b"\xff\xfe"), (StatementKind::Other, vec![]));
    }

    #[test]
    fn quoted_text_and_comments_are_not_statements() {
        assert_eq!(effects("select 'a; LISTEN x'"), vec![]);
        assert_eq!(effects("select $$ ; set x = 1 $$"), vec![]);
        assert_eq!(effects("select 1 /* ; listen /* nested */ x */"), vec![]);
        assert_eq!(effects("select 1; -- ; listen x\n select 2"), vec![]);
        assert_eq!(effects("select 1; set a = 1").len(), 1);
        // Unterminated quotes and comments must not panic.
        for s in ["'abc", "\"x", "$a$ b", "/* x", "$1", "--"] {
            let _ = classify(s);
        }
    }
}
