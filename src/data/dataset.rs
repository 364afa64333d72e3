//! What ingest produces: plain Rust data, no polars types, so the compute core never sees a DataFrame.

/// The rows of an input, by layout.
#[derive(Debug, Clone)]
pub enum Dataset {
    /// Users and their items (long and list layouts).
    Interactions(Interactions),
    /// One document per row (text layout).
    Text(TextCorpus),
    /// Numeric feature columns (numeric layout).
    Numeric(NumericTable),
}

/// Users with their items in order. Items are indices into `items`, which is sorted (numerically when the item column
/// holds integers, else by code point, as Python's `sorted`).
#[derive(Debug, Clone, PartialEq)]
pub struct Interactions {
    /// User labels, sorted the same way as items.
    pub users: Vec<String>,
    /// The integer user ids when the user column holds integers (the split protocol hashes them).
    pub user_numbers: Option<Vec<i64>>,
    /// Item labels: the item vocabulary, sorted.
    pub items: Vec<String>,
    /// Per user, the item indices in order (by the order column, else by file order). May repeat an item.
    pub lists: Vec<Vec<u32>>,
    /// Per user, a positive weight for each entry of `lists` (the long layout's `input.weight` column).
    pub weights: Option<Vec<Vec<f32>>>,
}

/// Free-text documents.
#[derive(Debug, Clone, PartialEq)]
pub struct TextCorpus {
    /// Row ids (the id column as text, or the row number).
    pub ids: Vec<String>,
    pub texts: Vec<String>,
}

/// A dense numeric table, row-major, all values finite.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericTable {
    pub ids: Vec<String>,
    pub columns: Vec<String>,
    pub rows: usize,
    /// `rows × columns.len()`, row-major.
    pub values: Vec<f64>,
}

impl Dataset {
    /// Number of rows (users, documents or table rows).
    pub fn rows(&self) -> usize {
        match self {
            Dataset::Interactions(i) => i.users.len(),
            Dataset::Text(t) => t.texts.len(),
            Dataset::Numeric(n) => n.rows,
        }
    }

    /// Row labels, in row order.
    pub fn row_ids(&self) -> &[String] {
        match self {
            Dataset::Interactions(i) => &i.users,
            Dataset::Text(t) => &t.ids,
            Dataset::Numeric(n) => &n.ids,
        }
    }
}
