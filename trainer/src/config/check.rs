//! Checks a config tree against the shape of the defaults in code, collecting *every* problem
//! (unknown keys with a suggestion, wrong kinds of value) with the origin of each, before the
//! typed deserialisation runs. serde's `deny_unknown_fields` stops at the first error; a user
//! fixing a config wants the whole list at once.

use std::fmt;

use super::tree::{Node, Origin, Value};

/// One problem in a config, pointing at where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub origin: Origin,
    /// Dotted key path, e.g. `train.lr`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.origin == Origin::Default && self.key.is_empty() {
            write!(f, "{}", self.message)
        } else if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.origin, self.key, self.message)
        }
    }
}

/// All the problems found in one config; displayed one per line.
#[derive(Debug, Clone, PartialEq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the config:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Walks `node` against `schema` (the defaults serialised to JSON). A `null` in the schema (an
/// optional field left unset) accepts any value: the typed step checks it.
pub fn check_shape(schema: &serde_json::Value, node: &Node, path: &str, out: &mut Vec<Problem>) {
    use serde_json::Value as J;
    let mut wrong = |expected: &str| {
        out.push(Problem {
            origin: node.origin.clone(),
            key: path.to_string(),
            message: format!(
                "expected {expected}, found {}{}",
                node.value.kind(),
                show_scalar(&node.value)
            ),
        })
    };
    match (schema, &node.value) {
        (J::Null, _) => {}
        (J::Object(fields), Value::Map(entries)) => {
            for (key, child) in entries {
                match fields.get(&key.name) {
                    Some(sub) => check_shape(sub, child, &join(path, &key.name), out),
                    None => {
                        let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                        let hint = match closest(&key.name, &known) {
                            Some(s) => format!(" (did you mean `{s}`?)"),
                            None => format!(" (known keys: {})", known.join(", ")),
                        };
                        out.push(Problem {
                            origin: key.origin.clone(),
                            key: join(path, &key.name),
                            message: format!("unknown key{hint}"),
                        });
                    }
                }
            }
        }
        (J::Object(_), _) => wrong("a mapping"),
        (J::Bool(_), Value::Bool(_)) => {}
        (J::Bool(_), _) => wrong("true or false"),
        (J::Number(n), Value::Int(_)) if n.is_i64() || n.is_u64() || n.is_f64() => {}
        (J::Number(n), Value::Float(_)) if n.is_f64() => {}
        (J::Number(n), _) if !n.is_f64() => wrong("an integer"),
        (J::Number(_), _) => wrong("a number"),
        (J::String(_), Value::Str(_)) => {}
        (J::String(_), _) => wrong("a string (quote it if it looks like a number)"),
        (J::Array(items), Value::Seq(nodes)) => {
            if let Some(elem) = items.first() {
                for (i, n) in nodes.iter().enumerate() {
                    check_shape(elem, n, &join(path, &i.to_string()), out);
                }
            }
        }
        (J::Array(_), _) => wrong("a list"),
    }
}

fn show_scalar(v: &Value) -> String {
    match v {
        Value::Bool(b) => format!(" `{b}`"),
        Value::Int(i) => format!(" `{i}`"),
        Value::Float(x) => format!(" `{x}`"),
        Value::Str(s) => format!(" `{s}`"),
        _ => String::new(),
    }
}

/// The known key nearest to a typo, if it is near enough to be a plausible misspelling.
pub fn closest<'a>(typo: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(typo, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_keys_only() {
        assert_eq!(
            closest("lerning_rate", &["learning_rate", "steps"]),
            Some("learning_rate")
        );
        assert_eq!(closest("zzzz", &["learning_rate", "steps"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
