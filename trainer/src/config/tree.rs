//! A YAML document as a tree whose every node remembers where it was written: a file, line and
//! column, or the `--set` argument that put it there. Config errors point at that origin
//! (DESIGN.md, "Rules of the house": a typo is an error naming the key and the file).
//!
//! The tree is parsed with serde-saphyr's `Spanned` wrapper and converted to `serde_json::Value`
//! for the typed deserialisation, so one code path serves files and overrides alike.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Where a config value came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Origin {
    /// A position in a YAML file (1-based line and column).
    File {
        path: Arc<str>,
        line: u64,
        column: u64,
    },
    /// A `--set key=value` command-line override (the whole argument).
    Override(String),
    /// Not written anywhere: the default in code.
    #[default]
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, column } => write!(f, "{path}:{line}:{column}"),
            Origin::Override(arg) => write!(f, "--set {arg}"),
            Origin::Default => write!(f, "(default)"),
        }
    }
}

/// One YAML value with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
}

/// A mapping key with its origin (errors about unknown keys point at the key, not the value).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// A short name of the kind of value, for error messages ("expected a number, found a string").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn empty_map(origin: Origin) -> Node {
        Node {
            value: Value::Map(Vec::new()),
            origin,
        }
    }

    /// Parses a YAML document; `source` names it in errors (a file path or `--set ...`).
    pub fn parse(text: &str, source: &str) -> Result<Node, String> {
        let raw: Spanned<RawValue> =
            serde_saphyr::from_str(text).map_err(|e| format!("{source}: {e}"))?;
        let path: Arc<str> = Arc::from(source);
        Ok(into_node(raw, &path))
    }

    /// Reads and parses a YAML file. An empty file is an empty mapping.
    pub fn from_file(path: &Path) -> Result<Node, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read config file: {e}", path.display()))?;
        let source = path.display().to_string();
        if text.trim().is_empty() {
            return Ok(Node::empty_map(Origin::File {
                path: Arc::from(source.as_str()),
                line: 1,
                column: 1,
            }));
        }
        Node::parse(&text, &source)
    }

    /// Finds the node at a dotted path (`train.lr`), for pointing errors at their origin.
    pub fn get_path(&self, path: &[&str]) -> Option<&Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == *first)
                .and_then(|(_, v)| v.get_path(rest)),
            Value::Seq(items) => first
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .and_then(|v| v.get_path(rest)),
            _ => None,
        }
    }

    /// Applies one `--set a.b.c=value` override: the value is parsed as YAML (so `1e-4` is a
    /// number and `true` a boolean), intermediate mappings are created as needed.
    pub fn apply_override(&mut self, arg: &str) -> Result<(), String> {
        let (path, raw) = arg
            .split_once('=')
            .ok_or_else(|| "expected KEY=VALUE, e.g. --set train.lr=1e-4".to_string())?;
        let keys: Vec<&str> = path.split('.').collect();
        if keys.iter().any(|k| k.trim().is_empty()) {
            return Err(format!("the key `{path}` has an empty part"));
        }
        let origin = Origin::Override(arg.to_string());
        let mut value = if raw.trim().is_empty() {
            Node {
                value: Value::Str(String::new()),
                origin: origin.clone(),
            }
        } else {
            Node::parse(raw, "the value")?
        };
        value.set_origin_recursive(&origin);
        let mut node = self;
        for (i, key) in keys.iter().enumerate() {
            if !matches!(node.value, Value::Map(_)) {
                let at = keys[..i].join(".");
                return Err(format!("`{at}` is {}, not a mapping", node.value.kind()));
            }
            let Value::Map(entries) = &mut node.value else {
                unreachable!("checked above")
            };
            let pos = match entries.iter().position(|(k, _)| k.name == *key) {
                Some(p) => p,
                None => {
                    let key = Key {
                        name: key.to_string(),
                        origin: origin.clone(),
                    };
                    entries.push((key, Node::empty_map(origin.clone())));
                    entries.len() - 1
                }
            };
            if i + 1 == keys.len() {
                entries[pos].1 = value;
                return Ok(());
            }
            node = &mut entries[pos].1;
        }
        unreachable!("keys is non-empty")
    }

    fn set_origin_recursive(&mut self, origin: &Origin) {
        self.origin = origin.clone();
        match &mut self.value {
            Value::Seq(items) => items
                .iter_mut()
                .for_each(|n| n.set_origin_recursive(origin)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, n)| {
                k.origin = origin.clone();
                n.set_origin_recursive(origin)
            }),
            _ => {}
        }
    }

    /// The plain JSON value, for typed deserialisation with serde_json.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// The value as serde-saphyr hands it over, before origins are attached.
enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawValue>>),
    Map(Vec<(Spanned<String>, Spanned<RawValue>)>),
}

fn origin_of<T>(s: &Spanned<T>, path: &Arc<str>) -> Origin {
    Origin::File {
        path: path.clone(),
        line: s.referenced.line(),
        column: s.referenced.column(),
    }
}

/// Attaches origins (in file `path`) to a parsed value and its children.
fn into_node(raw: Spanned<RawValue>, path: &Arc<str>) -> Node {
    let origin = origin_of(&raw, path);
    let value = match raw.value {
        RawValue::Null => Value::Null,
        RawValue::Bool(b) => Value::Bool(b),
        RawValue::Int(i) => Value::Int(i),
        RawValue::Float(f) => Value::Float(f),
        RawValue::Str(s) => Value::Str(s),
        RawValue::Seq(items) => Value::Seq(items.into_iter().map(|n| into_node(n, path)).collect()),
        RawValue::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = Key {
                        origin: origin_of(&k, path),
                        name: k.value,
                    };
                    (key, into_node(v, path))
                })
                .collect(),
        ),
    };
    Node { value, origin }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
        Ok(i64::try_from(v)
            .map(RawValue::Int)
            .unwrap_or(RawValue::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries: Vec<(Spanned<String>, Spanned<RawValue>)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            if entries.iter().any(|(k, _)| k.value == key.value) {
                return Err(de::Error::custom(format!("duplicate key `{}`", key.value)));
            }
            let value = map.next_value::<Spanned<RawValue>>()?;
            entries.push((key, value));
        }
        Ok(RawValue::Map(entries))
    }
}
