//! Errors of the evaluation crate (DESIGN.md, "Rules of the house": errors name the file,
//! row, column or key at fault; user input never panics).

/// Everything that can go wrong while computing a metric.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Inputs a metric cannot use: sizes that disagree, an empty set, a non-finite value.
    /// `at` names the input and, where one is at fault, its row and column (e.g.
    /// `"retrieval embeddings row 3 column 17"`).
    #[error("{at}: {detail}")]
    Input { at: String, detail: String },
}

impl EvalError {
    pub(crate) fn input(at: impl Into<String>, detail: impl Into<String>) -> EvalError {
        EvalError::Input {
            at: at.into(),
            detail: detail.into(),
        }
    }
}
