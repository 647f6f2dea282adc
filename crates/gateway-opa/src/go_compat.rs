//! OPA's (Go's) semantics for the builtins where regorus (Rust) answers differently.
//!
//! Found by running the same Rego on OPA v1.20.2 and regorus 0.14 (gateway-opa's differential
//! tests); every one could make the embedded engine allow what OPA denies:
//!
//! - **Regular expressions** (`regex.match`, `regex.find_n`, `regex.split`, `regex.replace`,
//!   `regex.find_all_string_submatch_n`, `regex.is_valid`): Go's RE2 syntax makes `\b`, `\B`,
//!   `\d`, `\w`, `\s` ASCII-only, where Rust's `regex` makes them Unicode-aware
//!   (`SELECT DELETEé` has a word boundary after `DELETE` in Go, none in Rust). Rust also gives
//!   meaning to text Go reads literally (`\<`, `[a&&b]`, nested classes `[[a]]`, `(?x)`) and
//!   rejects what Go accepts (`\Q…\E`, octal escapes). Each pattern is translated into the Rust
//!   pattern that matches what Go's would ([`go_pattern`]); a pattern whose Go meaning the
//!   translation cannot reproduce makes the whole decision an evaluation error (a deny), never
//!   a silent non-match.
//! - **`upper` and `lower`**: Go maps each character with Unicode's simple (one-to-one) case
//!   mapping (`ß`, `ﬁ` unchanged); Rust uses the full mapping (`ß` → `SS`, `ﬁ` → `FI`, `İ` →
//!   `i̇`) and lower-cases a final `Σ` to `ς`. Replaced by a per-character simple mapping.
//! - **`time.parse_rfc3339_ns`**: Go's `time.Parse(time.RFC3339, …)` accepts a one-digit
//!   hour, a `,` fraction separator, offsets up to `+24:60`, and refuses a `:60` second,
//!   lower-case `t`/`z` and a space separator; regorus does the opposite on each. Replaced by a
//!   port of Go's parser, with OPA's range check (the nanoseconds must fit in an `i64`).
//!
//! The replacements are installed in both of regorus's evaluators: into the bytecode program's
//! resolved builtins ([`install_in_program`]) and as interpreter extensions, which regorus
//! consults before its builtins ([`install_in_engine`]). A policy that calls a builtin whose
//! regorus behaviour is known to differ and that has no replacement here is refused at load
//! time ([`refuse_divergent_builtins`]), and so is a negation the two engines evaluate
//! differently ([`refuse_negated_calls`]).

use regorus::unstable::{BUILTINS, Expr, Ref, Source, Span};
use regorus::{Engine, Value};
use std::cell::RefCell;
use std::collections::HashMap;

/// Builtins whose regorus behaviour differs from OPA's and that the embedded engine does not
/// replace: a policy calling one is refused at load time. (`regex.template_match` takes
/// patterns inside a template, which the translation does not parse; `time.parse_ns` takes a
/// Go layout, which regorus does not interpret as Go does.)
pub(crate) const REFUSED_BUILTINS: &[(&str, &str)] = &[
    (
        "regex.template_match",
        "its embedded patterns follow Rust regex semantics, not OPA's (Go RE2)",
    ),
    (
        "time.parse_ns",
        "regorus does not interpret Go time layouts as OPA does",
    ),
];

/// The builtins replaced, with their arity.
const REPLACED: &[(&str, u8)] = &[
    ("upper", 1),
    ("lower", 1),
    ("time.parse_rfc3339_ns", 1),
    ("regex.match", 2),
    ("regex.is_valid", 1),
    ("regex.find_n", 3),
    ("regex.split", 2),
    ("regex.replace", 3),
    ("regex.find_all_string_submatch_n", 3),
];

type Builtin = fn(&Span, &[Ref<Expr>], &[Value], bool) -> anyhow::Result<Value>;

fn replacement(name: &str) -> Option<Builtin> {
    Some(match name {
        "upper" => upper,
        "lower" => lower,
        "time.parse_rfc3339_ns" => parse_rfc3339_ns,
        "regex.match" => regex_match,
        "regex.is_valid" => regex_is_valid,
        "regex.find_n" => |s, p, a, st| with_go_pattern("regex.find_n", 0, s, p, a, st),
        "regex.split" => regex_split,
        "regex.replace" => |s, p, a, st| with_go_pattern("regex.replace", 1, s, p, a, st),
        "regex.find_all_string_submatch_n" => {
            |s, p, a, st| with_go_pattern("regex.find_all_string_submatch_n", 0, s, p, a, st)
        }
        _ => return None,
    })
}

/// Replaces the divergent builtins in a compiled bytecode program.
pub(crate) fn install_in_program(program: &mut regorus::rvm::program::Program) {
    let names: Vec<String> = program
        .builtin_info_table
        .iter()
        .map(|info| info.name.clone())
        .collect();
    for (index, name) in names.iter().enumerate() {
        if let (Some(f), Some(slot)) = (replacement(name), program.resolved_builtins.get_mut(index))
        {
            slot.0 = f;
        }
    }
}

/// Registers the replacements as extensions of an interpreter engine (regorus looks
/// extensions up before its builtins).
pub(crate) fn install_in_engine(engine: &mut Engine) -> anyhow::Result<()> {
    for &(name, arity) in REPLACED {
        let Some(f) = replacement(name) else { continue };
        engine.add_extension(
            name.to_owned(),
            arity,
            Box::new(move |args: Vec<Value>| {
                let (span, params) = dummy_call(args.len());
                // regorus treats an extension's error as fatal; a failing builtin in OPA's
                // default (non-strict) mode makes its expression undefined instead.
                Ok(f(&span, &params, &args, false).unwrap_or(Value::Undefined))
            }),
        )?;
    }
    Ok(())
}

fn dummy_call(arity: usize) -> (Span, Vec<Ref<Expr>>) {
    let source = Source::from_contents("<builtin>".into(), String::new()).unwrap_or_else(|_| {
        // from_contents only fails on oversized input; an empty string never is.
        unreachable_source()
    });
    let span = Span {
        source,
        line: 1,
        col: 1,
        start: 0,
        end: 0,
    };
    let params = (0..arity)
        .map(|_| {
            Ref::new(Expr::Null {
                span: span.clone(),
                value: Value::Null,
                eidx: 0,
            })
        })
        .collect();
    (span, params)
}

#[allow(clippy::panic)]
fn unreachable_source() -> Source {
    // Documented above: Source::from_contents of an empty string cannot fail.
    panic!("regorus refused an empty source")
}

// ---------------------------------------------------------------------------------------------
// Decisions that met a construct the embedded engine cannot evaluate as OPA would.

thread_local! {
    static DIVERGENCE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records that this evaluation met a construct whose OPA meaning the embedded engine cannot
/// reproduce; [`take_divergence`] turns the decision into an error.
fn flag_divergence(message: String) {
    DIVERGENCE.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(message);
        }
    });
}

/// Clears the record before an evaluation.
pub(crate) fn reset_divergence() {
    DIVERGENCE.with(|d| d.borrow_mut().take());
}

/// The first divergence met since [`reset_divergence`], if any.
pub(crate) fn take_divergence() -> Option<String> {
    DIVERGENCE.with(|d| d.borrow_mut().take())
}

// ---------------------------------------------------------------------------------------------
// upper / lower: Unicode simple case mapping, one character at a time, as Go's
// strings.ToUpper / strings.ToLower (unicode.ToUpper / unicode.ToLower per rune).

fn string_arg<'a>(name: &str, args: &'a [Value], index: usize) -> anyhow::Result<&'a str> {
    match args.get(index) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => anyhow::bail!("{name}: operand {} must be string", index + 1),
        None => anyhow::bail!("{name}: expects {} arguments", index + 1),
    }
}

fn upper(_: &Span, _: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    let s = string_arg("upper", args, 0)?;
    Ok(Value::String(
        s.chars().map(go_to_upper).collect::<String>().into(),
    ))
}

fn lower(_: &Span, _: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    let s = string_arg("lower", args, 0)?;
    Ok(Value::String(
        s.chars().map(go_to_lower).collect::<String>().into(),
    ))
}

/// Unicode versions differ between Rust's standard library and the Go release OPA v1.20.2 is
/// built with: these letters got case mappings in Unicode 16.0 and 17.0, which Go does not know
/// (found by `tests/builtins_differential.rs`, which compares every code point with OPA).
fn unknown_to_go(c: char) -> bool {
    matches!(
        c as u32,
        // Unicode 16.0
        0x1C89..=0x1C8A | 0xA7CB..=0xA7CD | 0xA7DA..=0xA7DC | 0x10D50..=0x10D65 | 0x10D70..=0x10D85
        // Unicode 17.0
        | 0x019B | 0x0264 | 0xA7CE..=0xA7CF | 0xA7D2..=0xA7D5 | 0x16EA0..=0x16EB8
        | 0x16EBB..=0x16ED3
    )
}

/// `unicode.ToUpper`: the simple uppercase mapping.
pub(crate) fn go_to_upper(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    if unknown_to_go(c) {
        return c;
    }
    let mut full = c.to_uppercase();
    match (full.next(), full.next()) {
        (Some(u), None) => u,
        // A full mapping of several characters; the simple mapping is the character itself
        // except for the Greek letters with ypogegrammeni, whose simple uppercase is the
        // titlecase letter with prosgegrammeni.
        _ => match c as u32 {
            0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => shift(c, 8),
            0x1FB3 | 0x1FC3 | 0x1FF3 => shift(c, 9),
            _ => c,
        },
    }
}

/// `unicode.ToLower`: the simple lowercase mapping.
pub(crate) fn go_to_lower(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    if unknown_to_go(c) {
        return c;
    }
    let mut full = c.to_lowercase();
    match (full.next(), full.next()) {
        (Some(l), None) => l,
        // Only U+0130 (İ) lower-cases to several characters; its simple mapping is `i`.
        _ if c == '\u{130}' => 'i',
        _ => c,
    }
}

fn shift(c: char, by: u32) -> char {
    char::from_u32(c as u32 + by).unwrap_or(c)
}

// ---------------------------------------------------------------------------------------------
// time.parse_rfc3339_ns: Go's time.Parse(time.RFC3339, s), then OPA's range check.

fn parse_rfc3339_ns(_: &Span, _: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    let s = string_arg("time.parse_rfc3339_ns", args, 0)?;
    match go_parse_rfc3339_ns(s) {
        Ok(ns) => Ok(Value::from(ns)),
        Err(why) => anyhow::bail!("time.parse_rfc3339_ns: parsing time {s:?}: {why}"),
    }
}

/// Go's layout `2006-01-02T15:04:05Z07:00` as `time.Parse` reads it: year, month, day, minute
/// and second of fixed width, an hour of one or two digits, an optional fraction (`.` or `,`
/// and digits, truncated to nanoseconds), then `Z` or `±hh:mm` (hours up to 24, minutes up to
/// 60). The result must fit in an `i64` of nanoseconds (OPA: "time outside of valid range").
pub(crate) fn go_parse_rfc3339_ns(s: &str) -> Result<i64, &'static str> {
    let b = s.as_bytes();
    let mut i = 0;
    let year = fixed(b, &mut i, 4).ok_or("cannot parse year")?;
    literal(b, &mut i, b'-')?;
    let month = fixed(b, &mut i, 2).ok_or("cannot parse month")?;
    literal(b, &mut i, b'-')?;
    let day = fixed(b, &mut i, 2).ok_or("cannot parse day")?;
    literal(b, &mut i, b'T')?;
    // getnum(value, false): one digit, or two when the second is a digit.
    let hour = if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        fixed(b, &mut i, 2)
    } else {
        fixed(b, &mut i, 1)
    }
    .ok_or("cannot parse hour")?;
    literal(b, &mut i, b':')?;
    let minute = fixed(b, &mut i, 2).ok_or("cannot parse minute")?;
    literal(b, &mut i, b':')?;
    let second = fixed(b, &mut i, 2).ok_or("cannot parse second")?;
    let mut nanos: i64 = 0;
    if matches!(b.get(i), Some(b'.' | b',')) && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        let mut digits = 0;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if digits < 9 {
                nanos = nanos * 10 + i64::from(d - b'0');
            }
            digits += 1;
            i += 1;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_seconds: i64 = match b.get(i) {
        Some(b'Z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            if b.len() < i + 6 || b[i + 3] != b':' {
                return Err("cannot parse time zone");
            }
            i += 1;
            let hh = fixed(b, &mut i, 2).ok_or("cannot parse time zone")?;
            i += 1;
            let mm = fixed(b, &mut i, 2).ok_or("cannot parse time zone")?;
            if hh > 24 {
                return Err("time zone offset hour out of range");
            }
            if mm > 60 {
                return Err("time zone offset minute out of range");
            }
            let offset = hh * 3600 + mm * 60;
            if sign == b'-' { -offset } else { offset }
        }
        _ => return Err("cannot parse time zone"),
    };
    if i != b.len() {
        return Err("extra text");
    }
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if hour >= 24 {
        return Err("hour out of range");
    }
    if minute >= 60 {
        return Err("minute out of range");
    }
    if second >= 60 {
        return Err("second out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let ns = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    i64::try_from(ns).map_err(|_| "time outside of valid range")
}

fn fixed(b: &[u8], i: &mut usize, width: usize) -> Option<i64> {
    let digits = b.get(*i..*i + width)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    *i += width;
    Some(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

fn literal(b: &[u8], i: &mut usize, expected: u8) -> Result<(), &'static str> {
    if b.get(*i) == Some(&expected) {
        *i += 1;
        Ok(())
    } else {
        Err("cannot parse")
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------------
// Regular expressions: Go RE2 patterns translated into Rust patterns with the same meaning.

/// Translated patterns, per thread (evaluation is synchronous): `Ok(rust pattern)` (a shared
/// string value, so a hit costs no allocation) or `Err(why the pattern cannot be evaluated as
/// Go would)`.
const MAX_CACHED_PATTERNS: usize = 256;

thread_local! {
    static PATTERNS: RefCell<HashMap<String, Result<Value, Refusal>>> = RefCell::new(HashMap::new());
}

fn translated(pattern: &str) -> Result<Value, Refusal> {
    if let Some(hit) = PATTERNS.with(|p| p.borrow().get(pattern).cloned()) {
        return hit;
    }
    let result = go_pattern(pattern).and_then(|rust| {
        let rust = Value::String(rust.into());
        // A translation Rust does not compile: Go's meaning is not reproduced.
        match call_builtin("regex.is_valid", std::slice::from_ref(&rust)) {
            Ok(Value::Bool(true)) => Ok(rust),
            _ => Err(Refusal::Unsupported(
                "the translated pattern does not compile in Rust".to_owned(),
            )),
        }
    });
    PATTERNS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= MAX_CACHED_PATTERNS {
            p.clear();
        }
        p.insert(pattern.to_owned(), result.clone());
    });
    result
}

fn call_builtin(name: &str, args: &[Value]) -> anyhow::Result<Value> {
    let Some((f, _)) = BUILTINS.get(name) else {
        anyhow::bail!("regorus has no builtin {name}");
    };
    let (span, params) = dummy_call(args.len());
    f(&span, &params, args, false)
}

fn with_go_pattern(
    name: &str,
    pattern_index: usize,
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    strict: bool,
) -> anyhow::Result<Value> {
    let Some((original, _)) = BUILTINS.get(name) else {
        anyhow::bail!("regorus has no builtin {name}");
    };
    let Some(Value::String(pattern)) = args.get(pattern_index) else {
        // Not a string: regorus's own type error.
        return original(span, params, args, strict);
    };
    match translated(pattern) {
        Ok(rust) => {
            let mut args = args.to_vec();
            args[pattern_index] = rust;
            original(span, params, &args, strict)
        }
        // OPA fails on this pattern too: the same error (undefined in non-strict mode).
        Err(Refusal::GoRejects(why)) => anyhow::bail!("{name}: invalid pattern: {why}"),
        Err(Refusal::Unsupported(why)) => {
            let shown: String = pattern.chars().take(80).collect();
            flag_divergence(format!(
                "{name}: the pattern {shown:?} cannot be evaluated as OPA (Go RE2) would: {why}"
            ));
            anyhow::bail!("{name}: unsupported pattern")
        }
    }
}

/// regorus's size limit on a compiled pattern (its `REGEX_SIZE_LIMIT`).
const REGEX_SIZE_LIMIT: usize = 100 * 1024;

thread_local! {
    /// Compiled translations for `regex.match`, the builtin on every decision's path, per
    /// thread: regorus shares compiled patterns across threads and clones one per call, and a
    /// clone allocates fresh matching state (measured at ~7 µs a call); a pattern kept here
    /// reuses its state.
    static COMPILED: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
}

/// `regex.match` with the Go pattern's meaning (see [`go_pattern`]).
fn regex_match(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    strict: bool,
) -> anyhow::Result<Value> {
    let (Some(Value::String(pattern)), Some(Value::String(subject))) = (args.first(), args.get(1))
    else {
        return with_go_pattern("regex.match", 0, span, params, args, strict);
    };
    let hit = COMPILED.with(|c| {
        c.borrow()
            .get(pattern.as_ref())
            .map(|re| re.is_match(subject))
    });
    if let Some(matched) = hit {
        return Ok(Value::Bool(matched));
    }
    let Ok(Value::String(rust)) = translated(pattern) else {
        // Refused: the same error or divergence as the other regex builtins.
        return with_go_pattern("regex.match", 0, span, params, args, strict);
    };
    match regex::RegexBuilder::new(&rust)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(re) => {
            let matched = re.is_match(subject);
            COMPILED.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() >= MAX_CACHED_PATTERNS {
                    c.clear();
                }
                c.insert(pattern.to_string(), re);
            });
            Ok(Value::Bool(matched))
        }
        // regorus reports its own error (a size limit, which always propagates).
        Err(_) => with_go_pattern("regex.match", 0, span, params, args, strict),
    }
}

/// Go's `Regexp.Split(s, -1)`: like Rust's split, except that an empty match at the start
/// does not produce a leading `""`, an empty match at the end does not produce a trailing
/// `""`, and an empty subject gives `[""]` for a non-empty pattern.
fn regex_split(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    strict: bool,
) -> anyhow::Result<Value> {
    let pieces = with_go_pattern("regex.split", 0, span, params, args, strict)?;
    let (Some(Value::String(pattern)), Some(Value::String(subject))) = (args.first(), args.get(1))
    else {
        return Ok(pieces);
    };
    if subject.is_empty() {
        return Ok(Value::from(if pattern.is_empty() {
            Vec::new()
        } else {
            vec![Value::String("".into())]
        }));
    }
    // regorus's find_n reads its three parameter expressions.
    let (span3, params3) = dummy_call(3);
    let matches = with_go_pattern(
        "regex.find_n",
        0,
        &span3,
        &params3,
        &[args[0].clone(), args[1].clone(), Value::from(-1i64)],
        strict,
    )?;
    let (Value::Array(pieces), Value::Array(matches)) = (&pieces, &matches) else {
        return Ok(pieces);
    };
    let empty = |v: Option<&Value>| matches!(v, Some(Value::String(s)) if s.is_empty());
    let mut pieces: Vec<Value> = pieces.to_vec();
    if empty(matches.last()) && empty(pieces.last()) {
        pieces.pop();
    }
    if empty(matches.first()) && empty(pieces.first()) {
        pieces.remove(0);
    }
    Ok(Value::from(pieces))
}

fn regex_is_valid(_: &Span, _: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    let Some(Value::String(pattern)) = args.first() else {
        return Ok(Value::Bool(false));
    };
    match translated(pattern) {
        Ok(_) => Ok(Value::Bool(true)),
        Err(Refusal::GoRejects(_)) => Ok(Value::Bool(false)),
        // Go accepts what the translation cannot reproduce: true would promise a meaning the
        // embedded engine does not give it.
        Err(Refusal::Unsupported(why)) => {
            flag_divergence(format!(
                "regex.is_valid: {:?} is valid in OPA but cannot be evaluated as OPA would: {why}",
                pattern.chars().take(80).collect::<String>()
            ));
            anyhow::bail!("regex.is_valid: unsupported pattern")
        }
    }
}

/// Why a Go pattern has no Rust translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Go refuses the pattern too (OPA's builtin fails): the same failure here.
    GoRejects(String),
    /// Go accepts the pattern but the translation cannot reproduce its meaning.
    Unsupported(String),
}

impl From<&str> for Refusal {
    fn from(why: &str) -> Self {
        Self::GoRejects(why.to_owned())
    }
}

impl From<String> for Refusal {
    fn from(why: String) -> Self {
        Self::GoRejects(why)
    }
}

const ASCII_DIGIT: &str = "0-9";
const ASCII_WORD: &str = "0-9A-Za-z_";
const ASCII_SPACE: &str = "\\t\\n\\x0C\\r ";

/// Translates a Go RE2 pattern into a Rust `regex` pattern that matches the same strings, or
/// says why it cannot. Refused: Rust-only or Go-only syntax whose meaning differs (flags other
/// than `imsU`, lookaround, `\C`, unknown escapes, set operations and nested classes, nested
/// repetitions, repetition counts over 1000).
pub(crate) fn go_pattern(pattern: &str) -> Result<String, Refusal> {
    /// What the previous item was, for Go's refusal of nested repetitions (`a**`, `a{2}*`;
    /// one `?` after a repetition makes it lazy).
    #[derive(PartialEq)]
    enum Last {
        Other,
        Repeat,
        LazyRepeat,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut last = Last::Other;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let (text, next, item) = match c {
            '\\' => {
                let (text, next) = escape(&chars, i, false)?;
                (text, next, Last::Other)
            }
            '[' => {
                let (text, next) = class(&chars, i)?;
                (text, next, Last::Other)
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                let (text, next) = group_start(&chars, i)?;
                (text, next, Last::Other)
            }
            '?' if last == Last::Repeat => ("?".to_owned(), i + 1, Last::LazyRepeat),
            '*' | '+' | '?' if last != Last::Other => {
                return Err("invalid nested repetition operator".into());
            }
            '*' | '+' | '?' => (c.to_string(), i + 1, Last::Repeat),
            '{' => match repetition(&chars, i)? {
                Some(_) if last != Last::Other => {
                    return Err("invalid nested repetition operator".into());
                }
                Some((text, next)) => (text, next, Last::Repeat),
                // Go reads a brace that does not start a repetition literally.
                None => ("\\{".to_owned(), i + 1, Last::Other),
            },
            '}' => ("\\}".to_owned(), i + 1, Last::Other),
            // Literal in both (Rust's verbose mode, where spaces and `#` differ, is refused).
            _ => (c.to_string(), i + 1, Last::Other),
        };
        out.push_str(&text);
        last = item;
        i = next;
    }
    Ok(out)
}

/// `{n}`, `{n,}` or `{n,m}` at `i`: the text and the index after it; `None` when the brace is
/// a literal (Go reads a brace that does not start a valid repetition literally).
fn repetition(chars: &[char], i: usize) -> Result<Option<(String, usize)>, Refusal> {
    let mut j = i + 1;
    let number = |j: &mut usize| -> Option<u32> {
        let start = *j;
        while chars.get(*j).is_some_and(char::is_ascii_digit) {
            *j += 1;
        }
        if *j == start {
            return None;
        }
        chars[start..*j]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
            .or(Some(u32::MAX))
    };
    let Some(min) = number(&mut j) else {
        return Ok(None);
    };
    let mut max = Some(min);
    if chars.get(j) == Some(&',') {
        j += 1;
        max = number(&mut j);
    }
    if chars.get(j) != Some(&'}') {
        return Ok(None);
    }
    if min > 1000 || max.is_some_and(|m| m > 1000) || max.is_some_and(|m| m < min) {
        return Err("invalid repeat count (Go allows at most 1000)".into());
    }
    let text: String = chars[i..=j].iter().collect();
    Ok(Some((text, j + 1)))
}

/// `(?flags)`, `(?flags:`, `(?P<name>` or `(?<name>` at `i`.
fn group_start(chars: &[char], i: usize) -> Result<(String, usize), Refusal> {
    let mut j = i + 2;
    let named = match chars.get(j) {
        Some('P') if chars.get(j + 1) == Some(&'<') => {
            j += 2;
            true
        }
        Some('<') if !matches!(chars.get(j + 1), Some('=' | '!')) => {
            j += 1;
            true
        }
        _ => false,
    };
    if named {
        let start = j;
        while chars
            .get(j)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            j += 1;
        }
        if j == start || chars.get(j) != Some(&'>') {
            return Err("invalid capture group name".into());
        }
        if chars[start].is_ascii_digit() {
            return Err(Refusal::Unsupported(
                "a capture group name starting with a digit".into(),
            ));
        }
        let name: String = chars[start..j].iter().collect();
        return Ok((format!("(?P<{name}>"), j + 1));
    }
    let start = j;
    while chars
        .get(j)
        .is_some_and(|c| matches!(c, 'i' | 'm' | 's' | 'U' | '-'))
    {
        j += 1;
    }
    match chars.get(j) {
        Some(')') | Some(':') if j > start || chars.get(j) == Some(&':') => {
            let flags: String = chars[start..j].iter().collect();
            if flags.matches('-').count() > 1 || flags.ends_with('-') && chars[j] == ')' {
                return Err("invalid flags".into());
            }
            Ok((format!("(?{flags}{}", chars[j]), j + 1))
        }
        _ => {
            Err("unsupported group (Go supports only the flags i, m, s, U and named groups)".into())
        }
    }
}

/// A class `[...]` at `i`.
fn class(chars: &[char], i: usize) -> Result<(String, usize), Refusal> {
    let mut out = String::from("[");
    let mut j = i + 1;
    if chars.get(j) == Some(&'^') {
        out.push('^');
        j += 1;
    }
    // A `]` first is a literal in both.
    if chars.get(j) == Some(&']') {
        out.push_str("\\]");
        j += 1;
    }
    loop {
        let Some(&c) = chars.get(j) else {
            return Err("missing closing ]".into());
        };
        match c {
            ']' => {
                out.push(']');
                return Ok((out, j + 1));
            }
            '[' if chars.get(j + 1) == Some(&':') => {
                // [:name:] or [:^name:], ASCII in both engines.
                let end = (j + 2..chars.len().saturating_sub(1))
                    .find(|&k| chars[k] == ':' && chars[k + 1] == ']')
                    .ok_or("unterminated [: :] class")?;
                let name: String = chars[j + 2..end].iter().collect();
                let bare = name.strip_prefix('^').unwrap_or(&name);
                if !matches!(
                    bare,
                    "alnum"
                        | "alpha"
                        | "ascii"
                        | "blank"
                        | "cntrl"
                        | "digit"
                        | "graph"
                        | "lower"
                        | "print"
                        | "punct"
                        | "space"
                        | "upper"
                        | "word"
                        | "xdigit"
                ) {
                    return Err(format!("unknown class [:{name}:]").into());
                }
                out.push_str(&format!("[:{name}:]"));
                j = end + 2;
            }
            // Literal in Go; nested classes and set operations in Rust.
            '[' => {
                out.push_str("\\[");
                j += 1;
            }
            '&' | '~' if chars.get(j + 1) == Some(&c) => {
                out.push('\\');
                out.push(c);
                out.push('\\');
                out.push(c);
                j += 2;
            }
            '&' | '~' => {
                out.push('\\');
                out.push(c);
                j += 1;
            }
            '-' if chars.get(j + 1) == Some(&'-') => {
                return Err(Refusal::Unsupported("`--` in a class".into()));
            }
            '\\' => {
                let (text, next) = escape(chars, j, true)?;
                out.push_str(&text);
                j = next;
            }
            _ => {
                out.push(c);
                j += 1;
            }
        }
    }
}

/// An escape at `i` (a backslash), inside a class or not.
fn escape(chars: &[char], i: usize, in_class: bool) -> Result<(String, usize), Refusal> {
    let Some(&c) = chars.get(i + 1) else {
        return Err("trailing backslash".into());
    };
    let next = i + 2;
    let simple = |s: &str| Ok((s.to_owned(), next));
    match (c, in_class) {
        ('b', false) => simple("(?-u:\\b)"),
        ('B', false) => simple("(?-u:\\B)"),
        ('d', false) => simple(&format!("[{ASCII_DIGIT}]")),
        ('D', false) => simple(&format!("[^{ASCII_DIGIT}]")),
        ('w', false) => simple(&format!("[{ASCII_WORD}]")),
        ('W', false) => simple(&format!("[^{ASCII_WORD}]")),
        ('s', false) => simple(&format!("[{ASCII_SPACE}]")),
        ('S', false) => simple(&format!("[^{ASCII_SPACE}]")),
        ('d', true) => simple(ASCII_DIGIT),
        ('w', true) => simple(ASCII_WORD),
        ('s', true) => simple(ASCII_SPACE),
        ('D', true) => simple(&format!("[^{ASCII_DIGIT}]")),
        ('W', true) => simple(&format!("[^{ASCII_WORD}]")),
        ('S', true) => simple(&format!("[^{ASCII_SPACE}]")),
        ('A' | 'z', false) => simple(&format!("\\{c}")),
        ('a' | 'f' | 't' | 'n' | 'r' | 'v', _) => simple(&format!("\\{c}")),
        ('p' | 'P', _) => {
            // \pL or \p{Name}; Unicode classes in both engines.
            if chars.get(next) == Some(&'{') {
                let end = (next..chars.len())
                    .find(|&k| chars[k] == '}')
                    .ok_or("unterminated \\p{")?;
                let name: String = chars[next + 1..end].iter().collect();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '^')
                {
                    return Err(Refusal::Unsupported(format!("Unicode class name {name:?}")));
                }
                Ok((format!("\\{c}{{{name}}}"), end + 1))
            } else {
                match chars.get(next) {
                    Some(l) if l.is_ascii_alphabetic() => Ok((format!("\\{c}{l}"), next + 1)),
                    _ => Err("invalid \\p".into()),
                }
            }
        }
        ('x', _) => {
            if chars.get(next) == Some(&'{') {
                let end = (next..chars.len())
                    .find(|&k| chars[k] == '}')
                    .ok_or("unterminated \\x{")?;
                let hex: String = chars[next + 1..end].iter().collect();
                let value = u32::from_str_radix(&hex, 16).map_err(|_| "invalid \\x{}")?;
                char::from_u32(value).ok_or("invalid \\x{} code point")?;
                Ok((format!("\\x{{{hex}}}"), end + 1))
            } else {
                let hex: String = chars
                    .get(next..next + 2)
                    .ok_or("invalid \\x")?
                    .iter()
                    .collect();
                u8::from_str_radix(&hex, 16).map_err(|_| "invalid \\x")?;
                Ok((format!("\\x{hex}"), next + 2))
            }
        }
        // Octal: \0 plus up to two octal digits, or \1-\7 followed by an octal digit (a lone
        // \1-\9 is a backreference, refused by both).
        ('0'..='7', _) => {
            let mut j = i + 1;
            let mut value = 0u32;
            let max_len = 3;
            let first = c;
            if first != '0' && !chars.get(j + 1).is_some_and(|d| ('0'..='7').contains(d)) {
                return Err("backreferences are not supported".into());
            }
            while j < chars.len() && j < i + 1 + max_len && ('0'..='7').contains(&chars[j]) {
                value = value * 8 + (chars[j] as u32 - '0' as u32);
                j += 1;
            }
            Ok((format!("\\x{{{value:X}}}"), j))
        }
        ('Q', false) => {
            let mut j = next;
            let mut out = String::new();
            while j < chars.len() {
                if chars[j] == '\\' && chars.get(j + 1) == Some(&'E') {
                    return Ok((out, j + 2));
                }
                out.push_str(&literal_char(chars[j]));
                j += 1;
            }
            Ok((out, j))
        }
        // Escaped ASCII punctuation is that character in both; `<` and `>` are word-boundary
        // assertions in Rust, so they are written unescaped.
        ('<' | '>', _) => simple(&c.to_string()),
        (c, _) if c.is_ascii_punctuation() => simple(&format!("\\{c}")),
        ('C', _) => Err(Refusal::Unsupported("\\C (any byte)".into())),
        (c, _) => Err(format!("invalid escape sequence \\{c}").into()),
    }
}

/// A character matched literally (inside `\Q…\E`).
fn literal_char(c: char) -> String {
    if "\\.+*?()|[]{}^$".contains(c) {
        format!("\\{c}")
    } else {
        c.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Load-time refusal.

/// The first call (file, 1-based line, builtin, reason) of a builtin in [`REFUSED_BUILTINS`]
/// outside comments.
pub(crate) fn refuse_divergent_builtins(
    modules: &[(String, String)],
) -> Option<(String, u32, &'static str, &'static str)> {
    for (file, text) in modules {
        for (n, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or("");
            for &(name, reason) in REFUSED_BUILTINS {
                let mut rest = code;
                while let Some(at) = rest.find(name) {
                    let before = rest[..at].chars().last();
                    let after = rest[at + name.len()..].trim_start();
                    let boundary =
                        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
                    if boundary && after.starts_with('(') {
                        return Some((
                            file.clone(),
                            u32::try_from(n + 1).unwrap_or(u32::MAX),
                            name,
                            reason,
                        ));
                    }
                    rest = &rest[at + name.len()..];
                }
            }
        }
    }
    None
}

/// A negated expression whose value OPA and regorus compute differently: `not` over a function
/// call (or a lookup with a computed key) whose argument may be undefined. OPA's compiler moves
/// such arguments out of the negation, so an undefined argument fails the whole rule body;
/// regorus evaluates the negation to true. (`not startswith(input.missing, "a")`: undefined on
/// OPA, true embedded.) Returns (file, line, reason) of the first one.
pub(crate) fn refuse_negated_calls(
    modules: &[(String, String)],
) -> Result<Option<(String, u32, String)>, anyhow::Error> {
    use regorus::unstable::{Expr, Literal, Parser, Query, Rule, RuleHead};
    for (file, text) in modules {
        let source = Source::from_contents(file.clone(), text.clone())?;
        let mut parser = Parser::new(&source)?;
        parser.enable_rego_v1()?;
        let module = parser.parse()?;
        // Names that are not local variables: rules of the module, imports, input and data.
        let mut globals: Vec<String> = vec!["input".into(), "data".into()];
        let head_name = |refr: &Expr| -> Option<String> {
            let mut e = refr;
            loop {
                match e {
                    Expr::Var { span, .. } => return Some(span.text().to_owned()),
                    Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } => e = refr,
                    _ => return None,
                }
            }
        };
        for rule in &module.policy {
            let refr = match rule.as_ref() {
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. }
                    | RuleHead::Set { refr, .. }
                    | RuleHead::Func { refr, .. } => refr,
                },
                Rule::Default { refr, .. } => refr,
            };
            globals.extend(head_name(refr));
        }
        for import in &module.imports {
            match (&import.r#as, import.refr.as_ref()) {
                (Some(alias), _) => globals.push(alias.text().to_owned()),
                (None, Expr::RefDot { field, .. }) => globals.push(field.0.text().to_owned()),
                _ => {}
            }
        }
        let may_be_undefined = |e: &Expr| match e {
            Expr::RefDot { .. } | Expr::RefBrack { .. } | Expr::Call { .. } => true,
            Expr::Var { span, .. } => globals.iter().any(|g| g == span.text()),
            _ => false,
        };
        // The first divergent sub-expression of a negated expression.
        fn divergent<'e>(e: &'e Expr, undefined: &dyn Fn(&Expr) -> bool) -> Option<&'e Expr> {
            let children: Vec<&Expr> = match e {
                Expr::Call { params, .. } => {
                    if params.iter().any(|p| undefined(p)) {
                        return Some(e);
                    }
                    params.iter().map(|p| p.as_ref()).collect()
                }
                Expr::RefBrack { refr, index, .. } => {
                    if undefined(index) {
                        return Some(e);
                    }
                    vec![refr.as_ref(), index.as_ref()]
                }
                Expr::RefDot { refr, .. } => vec![refr.as_ref()],
                Expr::UnaryExpr { expr, .. } => vec![expr.as_ref()],
                Expr::BinExpr { lhs, rhs, .. }
                | Expr::BoolExpr { lhs, rhs, .. }
                | Expr::ArithExpr { lhs, rhs, .. }
                | Expr::AssignExpr { lhs, rhs, .. } => vec![lhs.as_ref(), rhs.as_ref()],
                Expr::Membership {
                    key,
                    value,
                    collection,
                    ..
                } => key
                    .iter()
                    .map(|k| k.as_ref())
                    .chain([value.as_ref(), collection.as_ref()])
                    .collect(),
                Expr::Array { items, .. } | Expr::Set { items, .. } => {
                    items.iter().map(|i| i.as_ref()).collect()
                }
                Expr::Object { fields, .. } => fields
                    .iter()
                    .flat_map(|(_, k, v)| [k.as_ref(), v.as_ref()])
                    .collect(),
                _ => Vec::new(),
            };
            children.into_iter().find_map(|c| divergent(c, undefined))
        }
        fn walk(q: &Query, undefined: &dyn Fn(&Expr) -> bool, found: &mut Option<(u32, String)>) {
            for stmt in &q.stmts {
                if found.is_some() {
                    return;
                }
                if let Literal::NotExpr { expr, .. } = &stmt.literal
                    && let Some(e) = divergent(expr, undefined)
                {
                    *found = Some((e.span().line, e.span().text().to_owned()));
                    return;
                }
                // Negations inside comprehensions and `every` bodies.
                let mut nested: Vec<&Query> = Vec::new();
                let mut exprs: Vec<&Expr> = Vec::new();
                match &stmt.literal {
                    Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => exprs.push(expr),
                    Literal::SomeIn { collection, .. } => exprs.push(collection),
                    Literal::Every { query, domain, .. } => {
                        nested.push(query);
                        exprs.push(domain);
                    }
                    Literal::SomeVars { .. } => {}
                }
                while let Some(e) = exprs.pop() {
                    match e {
                        Expr::ArrayCompr { query, .. }
                        | Expr::SetCompr { query, .. }
                        | Expr::ObjectCompr { query, .. } => nested.push(query),
                        Expr::Call { params, .. } => {
                            exprs.extend(params.iter().map(|p| p.as_ref()))
                        }
                        Expr::BinExpr { lhs, rhs, .. }
                        | Expr::BoolExpr { lhs, rhs, .. }
                        | Expr::ArithExpr { lhs, rhs, .. }
                        | Expr::AssignExpr { lhs, rhs, .. } => {
                            exprs.extend([lhs.as_ref(), rhs.as_ref()])
                        }
                        Expr::Array { items, .. } | Expr::Set { items, .. } => {
                            exprs.extend(items.iter().map(|i| i.as_ref()))
                        }
                        _ => {}
                    }
                }
                for q in nested {
                    walk(q, undefined, found);
                }
            }
        }
        let mut found = None;
        for rule in &module.policy {
            if let Rule::Spec { bodies, .. } = rule.as_ref() {
                for body in bodies {
                    walk(&body.query, &may_be_undefined, &mut found);
                }
            }
        }
        if let Some((line, text)) = found {
            let shown: String = text.chars().take(80).collect();
            return Ok(Some((
                file.clone(),
                line,
                format!(
                    "`not` over `{shown}`, whose argument may be undefined: OPA then fails the whole rule body, the embedded engine (regorus) makes the negation true; name the condition as a rule (`ok if {shown}`) and negate that (`not ok`)"
                ),
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_classes_become_ascii() {
        assert_eq!(go_pattern(r"\bA\b").unwrap(), r"(?-u:\b)A(?-u:\b)");
        assert_eq!(go_pattern(r"[\w-]+").unwrap(), r"[0-9A-Za-z_-]+");
        assert_eq!(go_pattern(r"[^\d\s]").unwrap(), "[^0-9\\t\\n\\x0C\\r ]");
        assert_eq!(go_pattern(r"\D").unwrap(), "[^0-9]");
    }

    #[test]
    fn go_literals_stay_literal() {
        assert_eq!(go_pattern(r"a{,5}").unwrap(), r"a\{,5\}");
        assert_eq!(go_pattern(r"\<a\>").unwrap(), "<a>");
        assert_eq!(go_pattern(r"[[a]").unwrap(), r"[\[a]");
        assert_eq!(go_pattern(r"[a&&b]").unwrap(), r"[a\&\&b]");
        assert_eq!(go_pattern(r"\Qa.b\E+").unwrap(), r"a\.b+");
        assert_eq!(go_pattern(r"\012").unwrap(), r"\x{A}");
        assert_eq!(go_pattern("a{2}").unwrap(), "a{2}");
        assert_eq!(go_pattern("a*?b+?").unwrap(), "a*?b+?");
        assert_eq!(
            go_pattern("(?i)a(?P<n>b)(?<m>c)(?s:.)").unwrap(),
            "(?i)a(?P<n>b)(?P<m>c)(?s:.)"
        );
    }

    #[test]
    fn divergent_syntax_is_refused() {
        for bad in [
            "(?x)a b", "(?R)a", "(?u)a", "(?=a)", "(?<=a)", r"\1", "a**", "a{2}{3}", "a{1001}",
            r"\e", r"\u0041", r"\é", "a***", "a??? ", "[a", r"a\",
        ] {
            assert!(
                matches!(go_pattern(bad), Err(Refusal::GoRejects(_))),
                "{bad}: {:?}",
                go_pattern(bad)
            );
        }
        for unsupported in [r"\C", "[a--b]", "(?P<1a>x)"] {
            assert!(
                matches!(go_pattern(unsupported), Err(Refusal::Unsupported(_))),
                "{unsupported}: {:?}",
                go_pattern(unsupported)
            );
        }
    }

    #[test]
    fn simple_case_mapping() {
        let up = |s: &str| s.chars().map(go_to_upper).collect::<String>();
        let low = |s: &str| s.chars().map(go_to_lower).collect::<String>();
        assert_eq!(up("deleteß ﬁ straße"), "DELETEß ﬁ STRAßE");
        assert_eq!(up("ᾀ ᾳ"), "ᾈ ᾼ");
        assert_eq!(low("İΣΑΣ"), "iσασ");
        assert_eq!(up("ǆ"), "Ǆ");
    }

    #[test]
    fn go_rfc3339() {
        assert_eq!(
            go_parse_rfc3339_ns("2025-01-06T10:30:00Z"),
            Ok(1_736_159_400_000_000_000)
        );
        assert_eq!(
            go_parse_rfc3339_ns("2025-01-06T9:30:00Z"),
            Ok(1_736_155_800_000_000_000)
        );
        assert_eq!(
            go_parse_rfc3339_ns("2025-01-06T10:30:00,5Z"),
            Ok(1_736_159_400_500_000_000)
        );
        assert_eq!(
            go_parse_rfc3339_ns("2025-01-06T10:30:00+24:00"),
            Ok(1_736_073_000_000_000_000)
        );
        assert_eq!(
            go_parse_rfc3339_ns("1677-09-21T00:12:43.145224192Z"),
            Ok(i64::MIN)
        );
        for bad in [
            "2025-01-06T10:30:60Z",
            "2025-01-06t10:30:00Z",
            "2025-01-06T10:30:00z",
            "2025-01-06 10:30:00Z",
            "2025-02-30T10:30:00Z",
            "2025-01-06T10:30:00+25:00",
            "2025-01-06T10:30:00+10:61",
            "1677-09-21T00:12:43.145224191Z",
            "9999-12-31T23:59:59Z",
            "2025-01-06T10:30:00.Z",
            "2025-01-06T010:30:00Z",
            "2025-01-06T10:30:00",
        ] {
            assert!(go_parse_rfc3339_ns(bad).is_err(), "{bad}");
        }
    }
}
