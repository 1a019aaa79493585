//! A view of a JSON body as Docker's Go decoder (`encoding/json`) reads it into Docker's
//! structs. Pure; tested below.
//!
//! Two stages. [`parse`] turns bytes into a [`Raw`] tree that keeps every member of every
//! object, in order, duplicates included, and refuses anything that is not strict JSON
//! (invalid UTF-8, data after the value, nesting deeper than [`MAX_DEPTH`]). [`decode`] then
//! walks that tree along a [`Ty`] schema with Go's rules:
//! - a struct field matches a key exactly, else case-insensitively with Unicode simple
//!   folding (so `ſ` U+017F reads as `s` and the Kelvin sign U+212A as `k`);
//! - members are applied in order, so for a repeated key the last one wins, but an object
//!   decoded into a struct or map that is already there merges into it, and an array
//!   decoded into a slice reuses the elements already there (Go keeps the backing array);
//! - `null` resets a pointer, map, slice or interface, and leaves a bool, number, string or
//!   struct as it was (`"Privileged": true, "Privileged": null` is privileged).
//!
//! Unlike Go, a struct key that matches no field is an error: the proxy lets through only
//! fields it understands. A value of the wrong type is an error, as it is for Docker.

use std::collections::BTreeMap;

/// How deep objects and arrays may nest. Docker's bodies need about 6.
pub const MAX_DEPTH: usize = 64;

/// A parsed JSON value, every object member kept in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Null,
    Bool(bool),
    /// The literal, as written (Go parses it for the target type).
    Number(String),
    String(String),
    Array(Vec<Raw>),
    Object(Vec<(String, Raw)>),
}

impl Raw {
    fn kind(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Bool(_) => "a boolean",
            Raw::Number(_) => "a number",
            Raw::String(_) => "a string",
            Raw::Array(_) => "an array",
            Raw::Object(_) => "an object",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON at byte {offset}: {what}")]
    Syntax { offset: usize, what: &'static str },
    #[error("the JSON nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("{path} is {found}, Docker expects {expected}")]
    Type {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("unknown field {path:?}")]
    Unknown { path: String },
}

/// Parses a whole body: one JSON value, whitespace around it, nothing else.
pub fn parse(input: &[u8]) -> Result<Raw, JsonError> {
    let mut p = Parser { s: input, i: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("data after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError::Syntax {
            offset: self.i,
            what,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Raw, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        match self.peek() {
            None => Err(self.err("unexpected end of the body")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Raw::String(self.string()?)),
            Some(b't') => self.literal("true", Raw::Bool(true)),
            Some(b'f') => self.literal("false", Raw::Bool(false)),
            Some(b'n') => self.literal("null", Raw::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn literal(&mut self, word: &'static str, v: Raw) -> Result<Raw, JsonError> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<Raw, JsonError> {
        self.i += 1;
        self.ws();
        let mut members = Vec::new();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Raw::Object(members));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a key"));
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth + 1)?;
            members.push((key, v));
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Raw::Object(members));
                }
                _ => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Raw, JsonError> {
        self.i += 1;
        self.ws();
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Raw::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(Raw::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    fn number(&mut self) -> Result<Raw, JsonError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        // Only ASCII digits, signs, '.', 'e' were taken.
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        Ok(Raw::Number(text))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let Some(h) = self.s.get(self.i..self.i + 4) else {
            return Err(self.err("short \\u escape"));
        };
        let mut v = 0u32;
        for &c in h {
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    /// A string starting at the opening quote; escapes resolved the way Go does (a lone
    /// or broken surrogate becomes U+FFFD).
    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // The run ends at an ASCII byte (or the end), so it holds whole sequences.
            match std::str::from_utf8(&self.s[start..self.i]) {
                Ok(run) => out.push_str(run),
                Err(e) => {
                    return Err(JsonError::Syntax {
                        offset: start + e.valid_up_to(),
                        what: "invalid UTF-8 in a string",
                    });
                }
            }
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(c) = self.peek() else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let cp = self.hex4()?;
                            out.push(self.code_point(cp)?);
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in a string")),
            }
        }
    }

    fn code_point(&mut self, cp: u32) -> Result<char, JsonError> {
        if (0xD800..0xDC00).contains(&cp) && self.s[self.i..].starts_with(b"\\u") {
            let save = self.i;
            self.i += 2;
            let lo = self.hex4()?;
            if (0xDC00..0xE000).contains(&lo) {
                let c = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
            }
            // Not a pair: the second escape is read on its own.
            self.i = save;
        }
        Ok(char::from_u32(cp).unwrap_or('\u{FFFD}'))
    }
}

/// Go's case folding of a key against struct field names (`bytes.EqualFold`): ASCII
/// letters fold to upper case; `ſ` (U+017F) and the Kelvin sign (U+212A), the only
/// non-ASCII runes whose fold orbit holds an ASCII letter, become `S` and `K`. Other runes
/// stay: Docker's field names are ASCII, so a key holding one matches no field.
pub fn fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{17F}' => 'S',
            '\u{212A}' => 'K',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// The Go type a JSON value is decoded into.
#[derive(Debug)]
pub enum Ty {
    /// Not looked at: any JSON value (Docker checks its own types).
    Any,
    Bool,
    /// A signed integer (Go's `strconv.ParseInt`: no fraction, no exponent).
    Int,
    Str,
    /// Docker's `strslice.StrSlice`: a string, or an array of strings; replaced whole.
    StrSlice,
    Ptr(&'static Ty),
    Slice(&'static Ty),
    /// A map with string keys: keys are exact (never folded).
    Map(&'static Ty),
    Struct(&'static Schema),
}

/// A Go struct: its JSON field names and types, in groups (a group per embedded struct).
#[derive(Debug)]
pub struct Schema {
    pub groups: &'static [&'static [(&'static str, Ty)]],
}

impl Schema {
    fn fields(&self) -> impl Iterator<Item = &'static (&'static str, Ty)> {
        self.groups.iter().flat_map(|g| g.iter())
    }

    /// The field a key decodes into: an exact match first, else a folded one.
    pub fn lookup(&self, key: &str) -> Option<&'static (&'static str, Ty)> {
        self.fields().find(|(n, _)| *n == key).or_else(|| {
            let k = fold(key);
            self.fields().find(|(n, _)| fold(n) == k)
        })
    }
}

/// A decoded Go value. Absent struct fields read as [`Go::Nil`], which every check
/// treats as the zero value of the field's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Go {
    /// A nil pointer, map, slice or interface; also an absent field.
    Nil,
    /// A non-null value of type [`Ty::Any`].
    Opaque,
    Bool(bool),
    Int(i64),
    Str(String),
    /// `items` is the backing array (Go's capacity); the slice is `items[..len]`.
    Slice {
        items: Vec<Go>,
        len: usize,
    },
    Map(BTreeMap<String, Go>),
    Struct(BTreeMap<&'static str, Go>),
}

static NIL: Go = Go::Nil;

impl Go {
    /// A struct's field (Nil when absent or when this is not a struct).
    pub fn get(&self, name: &str) -> &Go {
        match self {
            Go::Struct(m) => m.get(name).unwrap_or(&NIL),
            _ => &NIL,
        }
    }

    /// A map's entry.
    pub fn entry(&self, key: &str) -> Option<&Go> {
        match self {
            Go::Map(m) => m.get(key),
            _ => None,
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Go::Nil)
    }

    pub fn is_true(&self) -> bool {
        matches!(self, Go::Bool(true))
    }

    pub fn str(&self) -> &str {
        match self {
            Go::Str(s) => s,
            _ => "",
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Go::Int(i) => *i,
            _ => 0,
        }
    }

    /// The elements of a slice (empty for nil).
    pub fn items(&self) -> &[Go] {
        match self {
            Go::Slice { items, len } => &items[..*len],
            _ => &[],
        }
    }

    /// Elements of a slice, or entries of a map.
    pub fn len(&self) -> usize {
        match self {
            Go::Slice { len, .. } => *len,
            Go::Map(m) => m.len(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn zero(ty: &Ty) -> Go {
    match ty {
        Ty::Bool => Go::Bool(false),
        Ty::Int => Go::Int(0),
        Ty::Str => Go::Str(String::new()),
        Ty::Struct(_) => Go::Struct(BTreeMap::new()),
        Ty::Any | Ty::StrSlice | Ty::Ptr(_) | Ty::Slice(_) | Ty::Map(_) => Go::Nil,
    }
}

/// Decodes `raw` into a fresh value of type `ty`, as Go's `json.Unmarshal` would.
pub fn decode(raw: &Raw, ty: &Ty) -> Result<Go, JsonError> {
    let mut v = zero(ty);
    store(&mut v, raw, ty, "")?;
    Ok(v)
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn type_err(path: &str, expected: &'static str, raw: &Raw) -> JsonError {
    JsonError::Type {
        path: if path.is_empty() {
            "the body".into()
        } else {
            path.to_string()
        },
        expected,
        found: raw.kind(),
    }
}

/// Decodes `raw` into `slot` (which holds what earlier members put there).
fn store(slot: &mut Go, raw: &Raw, ty: &Ty, path: &str) -> Result<(), JsonError> {
    match ty {
        Ty::Any => {
            *slot = if matches!(raw, Raw::Null) {
                Go::Nil
            } else {
                Go::Opaque
            };
        }
        Ty::Bool => match raw {
            Raw::Null => {}
            Raw::Bool(b) => *slot = Go::Bool(*b),
            _ => return Err(type_err(path, "a boolean", raw)),
        },
        Ty::Int => match raw {
            Raw::Null => {}
            Raw::Number(n) => match n.parse::<i64>() {
                Ok(i) => *slot = Go::Int(i),
                Err(_) => return Err(type_err(path, "an integer", raw)),
            },
            _ => return Err(type_err(path, "an integer", raw)),
        },
        Ty::Str => match raw {
            Raw::Null => {}
            Raw::String(s) => *slot = Go::Str(s.clone()),
            _ => return Err(type_err(path, "a string", raw)),
        },
        Ty::StrSlice => {
            let expected = "a string or an array of strings";
            *slot = match raw {
                Raw::Null => Go::Nil,
                Raw::String(s) => Go::Slice {
                    items: vec![Go::Str(s.clone())],
                    len: 1,
                },
                Raw::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            Raw::String(s) => out.push(Go::Str(s.clone())),
                            Raw::Null => out.push(Go::Str(String::new())),
                            _ => return Err(type_err(path, expected, raw)),
                        }
                    }
                    let len = out.len();
                    Go::Slice { items: out, len }
                }
                _ => return Err(type_err(path, expected, raw)),
            };
        }
        Ty::Ptr(inner) => {
            if matches!(raw, Raw::Null) {
                *slot = Go::Nil;
            } else {
                if slot.is_nil() {
                    *slot = zero(inner);
                }
                store(slot, raw, inner, path)?;
            }
        }
        Ty::Slice(elem) => match raw {
            Raw::Null => *slot = Go::Nil,
            Raw::Array(items) => {
                let (mut backing, mut len) = match std::mem::replace(slot, Go::Nil) {
                    Go::Slice { items, len } => (items, len),
                    _ => (Vec::new(), 0),
                };
                let mut i = 0;
                for item in items {
                    if i >= backing.len() {
                        backing.push(zero(elem));
                    }
                    if i >= len {
                        len = i + 1;
                    }
                    store(&mut backing[i], item, elem, &format!("{path}[{i}]"))?;
                    i += 1;
                }
                if i < len {
                    len = i;
                }
                if i == 0 {
                    backing.clear();
                }
                *slot = Go::Slice {
                    items: backing,
                    len,
                };
            }
            _ => return Err(type_err(path, "an array", raw)),
        },
        Ty::Map(elem) => match raw {
            Raw::Null => *slot = Go::Nil,
            Raw::Object(members) => {
                let mut map = match std::mem::replace(slot, Go::Nil) {
                    Go::Map(m) => m,
                    _ => BTreeMap::new(),
                };
                for (k, v) in members {
                    let mut e = zero(elem);
                    store(&mut e, v, elem, &format!("{path}[{k:?}]"))?;
                    map.insert(k.clone(), e);
                }
                *slot = Go::Map(map);
            }
            _ => return Err(type_err(path, "an object", raw)),
        },
        Ty::Struct(schema) => match raw {
            Raw::Null => {}
            Raw::Object(members) => {
                let mut fields = match std::mem::replace(slot, Go::Nil) {
                    Go::Struct(f) => f,
                    _ => BTreeMap::new(),
                };
                for (k, v) in members {
                    let Some((name, fty)) = schema.lookup(k) else {
                        return Err(JsonError::Unknown {
                            path: join(path, k),
                        });
                    };
                    let f = fields.entry(name).or_insert_with(|| zero(fty));
                    store(f, v, fty, &join(path, name))?;
                }
                *slot = Go::Struct(fields);
            }
            _ => return Err(type_err(path, "an object", raw)),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Raw, JsonError> {
        parse(s.as_bytes())
    }

    #[test]
    fn strict_json_parses_and_keeps_duplicates_in_order() {
        let v = p(r#" {"a": 1, "A": [true, null, "x"], "a": {"b": -0.5e3}} "#).unwrap();
        let Raw::Object(m) = v else { panic!() };
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].0, "a");
        assert_eq!(m[1].0, "A");
        assert_eq!(
            m[2].1,
            Raw::Object(vec![("b".into(), Raw::Number("-0.5e3".into()))])
        );
    }

    #[test]
    fn what_is_not_strict_json_is_refused() {
        for bad in [
            "",
            "{",
            "{\"a\":1,}",
            "[1,]",
            "{\"a\" 1}",
            "{'a':1}",
            "01",
            "1.",
            "-",
            "tru",
            "{\"a\":1} x",
            "{\"a\":1}{}",
            "\u{feff}{}",
            "\"\t\"",
            "\"\\x\"",
            "\"\\u12\"",
            "NaN",
            "{\"a\":+1}",
        ] {
            assert!(p(bad).is_err(), "accepted {bad:?}");
        }
        assert!(
            parse(b"{\"a\":\"\xff\"}").is_err(),
            "invalid UTF-8 accepted"
        );
        assert!(
            parse(b"{\"\xc3\":1}").is_err(),
            "a cut UTF-8 sequence accepted"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        assert_eq!(p(&deep), Err(JsonError::TooDeep));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(p(&ok).is_ok());
    }

    #[test]
    fn escapes_and_surrogates_read_like_go() {
        assert_eq!(
            p(r#""\u0050rivileged\n\/""#).unwrap(),
            Raw::String("Privileged\n/".into())
        );
        assert_eq!(p(r#""\ud83d\ude00""#).unwrap(), Raw::String("😀".into()));
        assert_eq!(p(r#""\ud800x""#).unwrap(), Raw::String("\u{FFFD}x".into()));
        assert_eq!(
            p(r#""\ud800\u0041""#).unwrap(),
            Raw::String("\u{FFFD}A".into())
        );
        assert_eq!(p(r#""\udc00""#).unwrap(), Raw::String("\u{FFFD}".into()));
    }

    #[test]
    fn folding_matches_gos_equal_fold() {
        assert_eq!(fold("privileged"), fold("PRIVILEGED"));
        assert_eq!(fold("Binds"), fold("bind\u{17F}"));
        assert_eq!(fold("NetworkMode"), fold("networ\u{212A}mode"));
        assert_ne!(fold("Privileged"), fold("Privıleged")); // dotless i does not fold to i
        assert_ne!(fold("Privileged"), fold("Privİleged"));
    }

    static INNER: Schema = Schema {
        groups: &[&[
            ("Flag", Ty::Bool),
            ("Name", Ty::Str),
            ("Opt", Ty::Ptr(&Ty::Bool)),
        ]],
    };
    static OUTER: Schema = Schema {
        groups: &[
            &[("Inner", Ty::Ptr(&Ty::Struct(&INNER)))],
            &[
                ("List", Ty::Slice(&Ty::Struct(&INNER))),
                ("Strs", Ty::Slice(&Ty::Str)),
                ("Labels", Ty::Map(&Ty::Str)),
                ("Caps", Ty::StrSlice),
                ("Num", Ty::Int),
                ("Free", Ty::Any),
            ],
        ],
    };

    fn d(s: &str) -> Result<Go, JsonError> {
        decode(&p(s).unwrap(), &Ty::Struct(&OUTER))
    }

    #[test]
    fn the_last_key_wins_in_any_case() {
        let v = d(r#"{"inner":{"flag":true},"INNER":{"FLAG":false}}"#).unwrap();
        assert!(!v.get("Inner").get("Flag").is_true());
        let v = d(r#"{"Inner":{"Flag":false,"fLaG":true}}"#).unwrap();
        assert!(v.get("Inner").get("Flag").is_true());
    }

    #[test]
    fn null_leaves_a_bool_and_resets_a_pointer() {
        let v = d(r#"{"Inner":{"Flag":true,"Flag":null,"Opt":true,"Opt":null}}"#).unwrap();
        assert!(v.get("Inner").get("Flag").is_true());
        assert!(v.get("Inner").get("Opt").is_nil());
        let v = d(r#"{"Inner":{"Flag":true},"Inner":null}"#).unwrap();
        assert!(v.get("Inner").is_nil());
    }

    #[test]
    fn repeated_objects_merge_into_the_struct_already_there() {
        let v = d(r#"{"Inner":{"Flag":true},"Inner":{"Name":"x"}}"#).unwrap();
        assert!(v.get("Inner").get("Flag").is_true());
        assert_eq!(v.get("Inner").get("Name").str(), "x");
    }

    #[test]
    fn repeated_arrays_reuse_the_elements_already_there() {
        let v = d(r#"{"List":[{"Name":"bind","Flag":true}],"List":[{"Name":"volume"}]}"#).unwrap();
        let items = v.get("List").items();
        assert_eq!(items.len(), 1);
        assert!(items[0].get("Flag").is_true(), "Go keeps the old element");
        // Shrink then grow within the old capacity: the old second element comes back.
        let v = d(r#"{"List":[{"Name":"a"},{"Flag":true}],"List":[{}],"List":[{},{}]}"#).unwrap();
        let items = v.get("List").items();
        assert_eq!(items.len(), 2);
        assert!(items[1].get("Flag").is_true());
        // An empty array is a new, empty, non-nil slice.
        let v = d(r#"{"Strs":["a"],"Strs":[]}"#).unwrap();
        assert!(v.get("Strs").is_empty() && !v.get("Strs").is_nil());
        let v = d(r#"{"Strs":["/:/h"],"Strs":[null]}"#).unwrap();
        assert_eq!(v.get("Strs").items(), &[Go::Str("/:/h".into())]);
    }

    #[test]
    fn maps_merge_with_exact_keys_and_fresh_elements() {
        let v = d(r#"{"Labels":{"a":"1"},"labels":{"B":"2","a":null}}"#).unwrap();
        let l = v.get("Labels");
        assert_eq!(l.entry("a"), Some(&Go::Str(String::new())));
        assert_eq!(l.entry("B"), Some(&Go::Str("2".into())));
        assert_eq!(l.entry("b"), None);
    }

    #[test]
    fn strslices_take_a_string_or_an_array() {
        let v = d(r#"{"Caps":"SYS_ADMIN"}"#).unwrap();
        assert_eq!(v.get("Caps").len(), 1);
        let v = d(r#"{"Caps":["A","B"],"Caps":["C"]}"#).unwrap();
        assert_eq!(v.get("Caps").items(), &[Go::Str("C".into())]);
        assert!(d(r#"{"Caps":[1]}"#).is_err());
    }

    #[test]
    fn wrong_types_and_unknown_fields_are_errors() {
        assert!(matches!(
            d(r#"{"Inner":{"Flag":"true"}}"#),
            Err(JsonError::Type { .. })
        ));
        assert!(d(r#"{"Num":1.0}"#).is_err());
        assert!(d(r#"{"Num":1e3}"#).is_err());
        assert_eq!(d(r#"{"Num":-7}"#).unwrap().get("Num").int(), -7);
        assert!(d(r#"{"Labels":{"a":1}}"#).is_err());
        assert_eq!(
            d(r#"{"Inner":{"Other":1}}"#),
            Err(JsonError::Unknown {
                path: "Inner.Other".into()
            })
        );
        assert!(d(r#"{"Free":{"anything":[1,2]}}"#).is_ok());
        assert!(d("[]").is_err());
    }

    #[test]
    fn an_exact_match_is_taken_before_a_folded_one() {
        static TWO: Schema = Schema {
            groups: &[&[("ab", Ty::Bool), ("AB", Ty::Str)]],
        };
        let v = decode(&p(r#"{"AB":"x","ab":true}"#).unwrap(), &Ty::Struct(&TWO)).unwrap();
        assert_eq!(v.get("AB").str(), "x");
        assert!(v.get("ab").is_true());
    }
}
