//! The train / test split and the training examples, exactly as the PyTorch peer's protocol defines them
//! (`shared/peers/README.md`), so that results compare one to one:
//!
//! ```text
//! s0 = splitmix64(split_seed); hu(u) = splitmix64(s0 ^ u); hi(u,i) = splitmix64(hu(u) ^ (i+1));
//! key(u,i,j) = splitmix64(hi(u,i) ^ (j+1))
//! ```
//! * test users: the `max(1, floor(test_fraction · users + 0.5))` users with the smallest `hu(u)` (ties: smaller id);
//! * train examples: for each train user (ascending id) and each position i, target `L[i]`, inputs the `min(k, n−1)`
//!   other positions j with the smallest `key(u,i,j)` (ties: smaller j), in ascending j; sampled once;
//! * test, protocol "last": target the last favourite, inputs the k before it, all other favourites masked;
//! * test, protocol "loo": every favourite of a test user is a target once, inputs drawn like train examples.
//!
//! `u` is the user id as an unsigned 64-bit integer; string user ids are hashed (FNV-1a) first.

use crate::linalg::rng::splitmix64;

/// One example: input items (ascending position order) and the target item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Index of the user (into the interactions' user list).
    pub user: u32,
    pub inputs: Vec<u32>,
    pub target: u32,
}

/// The split of one data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Test users, as user indices, ascending.
    pub test_users: Vec<u32>,
    pub train: Vec<Example>,
    /// Protocol "last": one example per test user.
    pub test_last: Vec<Example>,
    /// Protocol "loo": one example per favourite of each test user.
    pub test_loo: Vec<Example>,
    /// Users skipped because they have fewer than 2 favourites.
    pub users_too_short: usize,
}

/// The 64-bit key of a user for the protocol: the integer id, or FNV-1a of the label.
pub fn user_key(label: &str, number: Option<i64>) -> u64 {
    match number {
        Some(n) => n as u64,
        None => label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)),
    }
}

/// Inputs for target position `i` of a list of length `n`: the `min(k, n−1)` other positions with the smallest keys,
/// in ascending position order.
fn sampled_inputs(hu: u64, i: usize, n: usize, k: usize) -> Vec<usize> {
    let hi = splitmix64(hu ^ (i as u64 + 1));
    let mut others: Vec<(u64, usize)> =
        (0..n).filter(|&j| j != i).map(|j| (splitmix64(hi ^ (j as u64 + 1)), j)).collect();
    others.sort_unstable();
    let mut chosen: Vec<usize> = others.into_iter().take(k.min(n - 1)).map(|(_, j)| j).collect();
    chosen.sort_unstable();
    chosen
}

/// Splits users and builds the examples. `lists` are each user's distinct items in order; `keys` the users'
/// protocol keys (see [`user_key`]); `k` the inputs per example.
pub fn split(lists: &[Vec<u32>], keys: &[u64], k: usize, test_fraction: f64, seed: u64) -> Split {
    let n_users = lists.len();
    let s0 = splitmix64(seed);
    let hu: Vec<u64> = keys.iter().map(|&u| splitmix64(s0 ^ u)).collect();
    let n_test = ((test_fraction * n_users as f64 + 0.5).floor() as usize).max(1).min(n_users);
    let mut order: Vec<usize> = (0..n_users).collect();
    order.sort_by_key(|&u| (hu[u], keys[u]));
    let mut is_test = vec![false; n_users];
    for &u in &order[..n_test] {
        is_test[u] = true;
    }
    // Users in ascending id order (the protocol's order for train examples).
    let mut by_id: Vec<usize> = (0..n_users).collect();
    by_id.sort_by_key(|&u| keys[u] as i64);
    let mut s = Split {
        test_users: Vec::new(),
        train: Vec::new(),
        test_last: Vec::new(),
        test_loo: Vec::new(),
        users_too_short: 0,
    };
    for &u in &by_id {
        let list = &lists[u];
        let n = list.len();
        if n < 2 {
            s.users_too_short += 1;
            continue;
        }
        let loo = |i: usize| Example {
            user: u as u32,
            inputs: sampled_inputs(hu[u], i, n, k).into_iter().map(|j| list[j]).collect(),
            target: list[i],
        };
        if is_test[u] {
            s.test_users.push(u as u32);
            s.test_last.push(Example {
                user: u as u32,
                inputs: list[n - 1 - k.min(n - 1)..n - 1].to_vec(),
                target: list[n - 1],
            });
            s.test_loo.extend((0..n).map(loo));
        } else {
            s.train.extend((0..n).map(loo));
        }
    }
    s.test_users.sort_unstable();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_never_include_the_target_and_ascend() {
        for i in 0..7 {
            let inputs = sampled_inputs(12345, i, 7, 4);
            assert_eq!(inputs.len(), 4);
            assert!(!inputs.contains(&i));
            assert!(inputs.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(sampled_inputs(1, 0, 3, 4), vec![1, 2], "min(k, n-1) inputs");
    }
}
