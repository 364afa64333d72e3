//! The seeded generator of the food data set that `pipelines/food.toml` runs on: users' five favourite foods, as in the
//! ML Crash Course embedding example. It is synthetic, with structure planted for later stages to recover:
//!
//! * 8 cuisines × (savoury dishes, sweets, drinks) = 240 items;
//! * each user has a home cuisine and a second one, and a taste for savoury, sweet or drinks;
//! * a favourite comes from the home cuisine with probability 0.70, the second cuisine 0.20, any cuisine 0.10; its
//!   course follows the user's taste; within a cuisine and course, items have Zipf-like popularity.
//!
//! So items of one cuisine co-occur far more than items of different cuisines (neighbours should share a cuisine), and
//! courses co-occur within a user's taste (sweet / savoury / drinks is a second, weaker axis).

use crate::linalg::rng::SplitMix;

/// Courses of a dish.
pub const COURSES: [&str; 3] = ["savoury", "sweet", "drink"];

/// (cuisine, savoury dishes, sweets, drinks)
pub type Cuisine = (&'static str, &'static [&'static str], &'static [&'static str], &'static [&'static str]);

/// The menu, cuisine by cuisine.
pub const MENU: [Cuisine; 8] = [
    (
        "italian",
        &[
            "margherita pizza",
            "spaghetti carbonara",
            "lasagna",
            "risotto alla milanese",
            "penne arrabbiata",
            "osso buco",
            "gnocchi al pesto",
            "bruschetta",
            "minestrone",
            "fettuccine alfredo",
            "ravioli",
            "focaccia",
            "caprese salad",
            "arancini",
            "saltimbocca",
            "polenta",
            "calzone",
            "vitello tonnato",
        ],
        &["tiramisu", "panna cotta", "cannoli", "gelato", "zabaglione", "biscotti", "affogato"],
        &["espresso", "limoncello", "chianti", "aperol spritz", "negroni"],
    ),
    (
        "mexican",
        &[
            "tacos al pastor",
            "enchiladas",
            "guacamole",
            "chiles rellenos",
            "tamales",
            "pozole",
            "quesadilla",
            "burrito",
            "carnitas",
            "mole poblano",
            "ceviche",
            "elote",
            "huevos rancheros",
            "sopes",
            "chilaquiles",
            "fajitas",
            "barbacoa",
            "tortilla soup",
        ],
        &["churros", "flan", "tres leches cake", "pan dulce", "arroz con leche", "buñuelos", "paletas"],
        &["horchata", "margarita", "michelada", "agua de jamaica", "mexican hot chocolate"],
    ),
    (
        "japanese",
        &[
            "sushi",
            "sashimi",
            "ramen",
            "tempura",
            "tonkatsu",
            "okonomiyaki",
            "takoyaki",
            "udon",
            "soba",
            "yakitori",
            "gyoza",
            "miso soup",
            "katsu curry",
            "onigiri",
            "teriyaki salmon",
            "donburi",
            "shabu shabu",
            "karaage",
        ],
        &["mochi", "dorayaki", "matcha ice cream", "taiyaki", "dango", "castella", "anmitsu"],
        &["sake", "matcha latte", "genmaicha", "ramune", "japanese whisky"],
    ),
    (
        "indian",
        &[
            "butter chicken",
            "chicken tikka masala",
            "palak paneer",
            "biryani",
            "chana masala",
            "dal makhani",
            "samosa",
            "masala dosa",
            "rogan josh",
            "tandoori chicken",
            "aloo gobi",
            "vindaloo",
            "naan",
            "pav bhaji",
            "idli sambar",
            "korma",
            "pakora",
            "malai kofta",
        ],
        &["gulab jamun", "rasgulla", "kheer", "jalebi", "kulfi", "gajar halwa", "barfi"],
        &["masala chai", "mango lassi", "nimbu pani", "filter coffee", "thandai"],
    ),
    (
        "chinese",
        &[
            "peking duck",
            "kung pao chicken",
            "mapo tofu",
            "dim sum",
            "char siu",
            "sweet and sour pork",
            "hot pot",
            "xiaolongbao",
            "chow mein",
            "fried rice",
            "wonton soup",
            "dan dan noodles",
            "spring rolls",
            "general tso's chicken",
            "twice cooked pork",
            "zhajiangmian",
            "congee",
            "scallion pancake",
        ],
        &["egg tart", "mooncake", "tangyuan", "sesame balls", "mango pudding", "almond jelly", "nian gao"],
        &["jasmine tea", "oolong tea", "baijiu", "soy milk", "bubble tea"],
    ),
    (
        "french",
        &[
            "coq au vin",
            "boeuf bourguignon",
            "ratatouille",
            "bouillabaisse",
            "quiche lorraine",
            "croque monsieur",
            "cassoulet",
            "french onion soup",
            "steak frites",
            "duck confit",
            "salade niçoise",
            "escargots",
            "gratin dauphinois",
            "moules marinières",
            "tartiflette",
            "blanquette de veau",
            "pissaladière",
            "sole meunière",
        ],
        &["crème brûlée", "macarons", "tarte tatin", "éclair", "profiteroles", "mille-feuille", "madeleines"],
        &["bordeaux", "champagne", "café au lait", "pastis", "calvados"],
    ),
    (
        "american",
        &[
            "cheeseburger",
            "fried chicken",
            "bbq ribs",
            "mac and cheese",
            "hot dog",
            "clam chowder",
            "buffalo wings",
            "philly cheesesteak",
            "meatloaf",
            "cobb salad",
            "pulled pork sandwich",
            "chili con carne",
            "lobster roll",
            "biscuits and gravy",
            "corn dog",
            "reuben sandwich",
            "jambalaya",
            "buttermilk pancakes",
        ],
        &["apple pie", "chocolate chip cookies", "cheesecake", "brownies", "pecan pie", "banana split", "key lime pie"],
        &["root beer", "milkshake", "bourbon", "iced tea", "craft ipa"],
    ),
    (
        "middle eastern",
        &[
            "hummus",
            "falafel",
            "shawarma",
            "tabbouleh",
            "baba ganoush",
            "shakshuka",
            "kibbeh",
            "fattoush",
            "mansaf",
            "kofta",
            "dolma",
            "manakish",
            "mujaddara",
            "maqluba",
            "foul medames",
            "lahmacun",
            "stuffed grape leaves",
            "chicken kabsa",
        ],
        &["baklava", "kunafa", "halva", "basbousa", "ma'amoul", "turkish delight", "umm ali"],
        &["arabic coffee", "mint tea", "ayran", "jallab", "arak"],
    ),
];

/// One dish or drink with its planted labels.
#[derive(Debug, Clone, PartialEq)]
pub struct FoodItem {
    pub name: &'static str,
    pub cuisine: &'static str,
    pub course: &'static str,
}

/// Every item of the menu, cuisine by cuisine.
pub fn items() -> Vec<FoodItem> {
    let mut out = Vec::new();
    for (cuisine, savoury, sweet, drink) in MENU {
        for (course, names) in COURSES.iter().zip([savoury, sweet, drink]) {
            out.extend(names.iter().map(|&name| FoodItem { name, cuisine, course }));
        }
    }
    out
}

/// One favourite: `rank` 1 is the user's top favourite.
#[derive(Debug, Clone, PartialEq)]
pub struct Favourite {
    pub user_id: u32,
    pub item: &'static str,
    pub rank: u32,
}

/// `users` users with `per_user` distinct favourites each, from `seed`.
pub fn favourites(seed: u64, users: u32, per_user: u32) -> Vec<Favourite> {
    let menu = items();
    let n_cuisines = MENU.len();
    // Items of each (cuisine, course), in menu order, and their Zipf weights (1/rank^0.8).
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); n_cuisines * COURSES.len()];
    for (i, it) in menu.iter().enumerate() {
        let c = MENU.iter().position(|m| m.0 == it.cuisine).unwrap_or(0);
        let k = COURSES.iter().position(|&k| k == it.course).unwrap_or(0);
        groups[c * COURSES.len() + k].push(i);
    }
    let mut rng = SplitMix::new(seed);
    let mut out = Vec::with_capacity((users * per_user) as usize);
    for user_id in 1..=users {
        let home = rng.below(n_cuisines);
        let second = (home + 1 + rng.below(n_cuisines - 1)) % n_cuisines;
        // Taste: mostly savoury, some sweet tooths and drink lovers.
        let taste: [f64; 3] = match rng.weighted(&[0.6, 0.25, 0.15]) {
            0 => [0.75, 0.15, 0.10],
            1 => [0.25, 0.60, 0.15],
            _ => [0.30, 0.15, 0.55],
        };
        let mut chosen: Vec<usize> = Vec::new();
        let mut guard = 0;
        while chosen.len() < per_user as usize && guard < 10_000 {
            guard += 1;
            let cuisine = match rng.weighted(&[0.70, 0.20, 0.10]) {
                0 => home,
                1 => second,
                _ => rng.below(n_cuisines),
            };
            let course = rng.weighted(&taste);
            let group = &groups[cuisine * COURSES.len() + course];
            let weights: Vec<f64> = (0..group.len()).map(|r| 1.0 / ((r + 1) as f64).powf(0.8)).collect();
            let item = group[rng.weighted(&weights)];
            if !chosen.contains(&item) {
                chosen.push(item);
            }
        }
        for (r, &item) in chosen.iter().enumerate() {
            out.push(Favourite { user_id, item: menu[item].name, rank: r as u32 + 1 });
        }
    }
    out
}

/// The favourites as CSV text: `user_id,item,rank`.
pub fn favourites_csv(favs: &[Favourite]) -> String {
    let mut s = String::from("user_id,item,rank\n");
    for f in favs {
        s.push_str(&format!("{},{},{}\n", f.user_id, csv_field(f.item), f.rank));
    }
    s
}

/// The item labels as CSV text: `item,cuisine,course`.
pub fn items_csv() -> String {
    let mut s = String::from("item,cuisine,course\n");
    for it in items() {
        s.push_str(&format!("{},{},{}\n", csv_field(it.name), it.cuisine, it.course));
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The shipped data set's parameters.
pub const SEED: u64 = 20_261_126;
pub const USERS: u32 = 4_000;
pub const PER_USER: u32 = 5;

/// `count` seeded random item pairs with a planted similarity score: 3 for the same cuisine and course, 2 for the
/// same cuisine, 1 for the same course, else 0. A stand-in for human similarity judgements (`eval.pairs`).
pub fn pairs_csv(seed: u64, count: usize) -> String {
    let menu = items();
    let mut rng = SplitMix::new(seed ^ 0x0070_6169_7273);
    let mut s = String::from("item_a,item_b,score\n");
    for _ in 0..count {
        let a = rng.below(menu.len());
        let mut b = rng.below(menu.len() - 1);
        if b >= a {
            b += 1;
        }
        let (x, y) = (&menu[a], &menu[b]);
        let score = 2 * u32::from(x.cuisine == y.cuisine) + u32::from(x.course == y.course);
        s.push_str(&format!("{},{},{score}\n", csv_field(x.name), csv_field(y.name)));
    }
    s
}

/// Writes `food_favorites.csv`, `food_items.csv` and `food_pairs.csv` into `dir` (the shipped data set's seed and size).
pub fn write_files(dir: &std::path::Path) -> crate::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::output(dir, "cannot create", e))?;
    let favs = dir.join("food_favorites.csv");
    let labels = dir.join("food_items.csv");
    std::fs::write(&favs, favourites_csv(&favourites(SEED, USERS, PER_USER)))
        .map_err(|e| crate::Error::output(&favs, "cannot write", e))?;
    std::fs::write(&labels, items_csv()).map_err(|e| crate::Error::output(&labels, "cannot write", e))?;
    let pairs = dir.join("food_pairs.csv");
    std::fs::write(&pairs, pairs_csv(SEED, 600)).map_err(|e| crate::Error::output(&pairs, "cannot write", e))?;
    Ok(vec![favs, labels, pairs])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menu_items_are_unique() {
        let items = items();
        let mut names: Vec<_> = items.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), items.len());
        assert_eq!(items.len(), 240);
    }

    #[test]
    fn every_user_gets_distinct_favourites() {
        let favs = favourites(1, 50, 5);
        assert_eq!(favs.len(), 250);
        for u in 1..=50 {
            let mut mine: Vec<_> = favs.iter().filter(|f| f.user_id == u).map(|f| f.item).collect();
            mine.sort_unstable();
            mine.dedup();
            assert_eq!(mine.len(), 5);
        }
    }
}
