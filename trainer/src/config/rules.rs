//! `Rules`: how a config section reports the problems its types cannot express, as
//! `(dotted key, message)` pairs under the section's prefix (`train.batch_size`, ...), which
//! `check.rs` then points at the file, line and column they came from.

/// Problems of one config section.
pub struct Rules {
    prefix: String,
    out: Vec<(String, String)>,
}

impl Rules {
    /// `prefix` is the section's dotted key (`encoder.vision`), or empty at the top level.
    pub fn new(prefix: &str) -> Rules {
        Rules {
            prefix: prefix.to_string(),
            out: Vec::new(),
        }
    }

    /// Records `msg` at `key` (relative to the prefix) unless `ok`.
    pub fn need(&mut self, ok: bool, key: &str, msg: impl Into<String>) {
        if !ok {
            let key = if self.prefix.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", self.prefix)
            };
            self.out.push((key, msg.into()));
        }
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_only_failures_recorded() {
        let mut r = Rules::new("train");
        r.need(true, "lr", "fine");
        r.need(false, "steps", "must be at least 1");
        let mut top = Rules::new("");
        top.need(false, "bogus", format!("{} is wrong", 3));
        assert_eq!(
            r.into_vec(),
            [("train.steps".into(), "must be at least 1".into())]
        );
        assert_eq!(
            top.into_vec(),
            [("bogus".to_string(), "3 is wrong".to_string())]
        );
    }
}
