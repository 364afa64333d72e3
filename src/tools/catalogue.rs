//! Seeded synthetic catalogues for the cost-versus-catalogue benchmark: `users` users, each with `per_user`
//! distinct favourites drawn from a Zipf popularity over `items` items (the item of rank r has weight 1/r^exponent),
//! so that anyone can repeat the benchmark with `embjob gen-catalogue` and the same seed.

use crate::data::dataset::Interactions;
use crate::data::table::{ColumnData, Table};
use crate::linalg::rng::SplitMix;
use crate::recommend::sampling::AliasTable;

/// A generated catalogue's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatalogueSpec {
    pub items: usize,
    pub users: usize,
    pub per_user: usize,
    /// Zipf exponent of item popularity.
    pub exponent: f64,
    pub seed: u64,
}

impl CatalogueSpec {
    /// A catalogue needs at least 2 items, 1 user and 1 favourite each, and a finite exponent.
    pub fn check(&self) -> crate::error::Result<()> {
        if self.items < 2 || self.users == 0 || self.per_user == 0 || !self.exponent.is_finite() {
            return Err(crate::error::Error::Stage {
                stage: "catalogue",
                message: format!(
                    "--items must be at least 2, --users and --per-user at least 1 (got {} items, {} users, {} per user)",
                    self.items, self.users, self.per_user
                ),
            });
        }
        Ok(())
    }
}

/// The users' favourites: per user, `per_user` distinct item indices in draw order (items are numbered by rank,
/// 0 the most popular).
pub fn favourites(spec: &CatalogueSpec) -> Vec<Vec<u32>> {
    let weights: Vec<f64> = (1..=spec.items).map(|r| (r as f64).powf(-spec.exponent)).collect();
    let table = AliasTable::new(&weights);
    let mut rng = SplitMix::new(spec.seed);
    let per_user = spec.per_user.min(spec.items);
    (0..spec.users)
        .map(|_| {
            let mut list: Vec<u32> = Vec::with_capacity(per_user);
            while list.len() < per_user {
                let i = table.draw(&mut rng);
                if !list.contains(&i) {
                    list.push(i);
                }
            }
            list
        })
        .collect()
}

/// The catalogue as the interactions ingest would read from its file (items sorted numerically as their ids).
pub fn interactions(spec: &CatalogueSpec) -> Interactions {
    let lists = favourites(spec);
    Interactions {
        users: (0..spec.users).map(|u| u.to_string()).collect(),
        user_numbers: Some((0..spec.users as i64).collect()),
        items: (0..spec.items).map(|i| i.to_string()).collect(),
        lists,
        weights: None,
    }
}

/// The long-layout table `embjob gen-catalogue` writes: `user_id`, `item`, `rank` (the favourite's position).
pub fn table(spec: &CatalogueSpec) -> Table {
    let lists = favourites(spec);
    let (mut users, mut items, mut ranks) = (Vec::new(), Vec::new(), Vec::new());
    for (u, list) in lists.iter().enumerate() {
        for (r, &i) in list.iter().enumerate() {
            users.push(u as i64);
            items.push(i64::from(i));
            ranks.push(r as i64);
        }
    }
    Table::new(vec![
        ("user_id", ColumnData::I64(users)),
        ("item", ColumnData::I64(items)),
        ("rank", ColumnData::I64(ranks)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn favourites_are_distinct_seeded_and_zipf_shaped() {
        let spec = CatalogueSpec { items: 1000, users: 2000, per_user: 8, exponent: 1.0, seed: 5 };
        let a = favourites(&spec);
        assert_eq!(a, favourites(&spec));
        assert!(a.iter().all(|l| l.len() == 8 && l.iter().all(|&i| i < 1000)));
        assert!(a.iter().all(|l| (1..l.len()).all(|j| !l[..j].contains(&l[j]))));
        let mut count = vec![0usize; 1000];
        a.iter().flatten().for_each(|&i| count[i as usize] += 1);
        // The most popular item is far more frequent than the 100th.
        assert!(count[0] > 20 * count[99].max(1) / 2, "{} vs {}", count[0], count[99]);
    }
}
