//! The English prompt of a [`Scene`]: content only (kinds, counts, sizes where they help,
//! spatial relations for two or three shapes), never colour or rendering. It is the text side
//! of the DiT's training pairs (arXiv 2511.10555 Sec. 3.2): style from one image, prompt of
//! the other.

use super::scene::{Scene, Shape, ShapeKind, SizeClass};

/// Counting words; scenes hold at most four shapes.
fn number_word(n: usize) -> &'static str {
    ["zero", "one", "two", "three", "four"]
        .get(n)
        .copied()
        .unwrap_or("several")
}

/// "a" or "an" for the word that follows.
fn article(next_word: &str) -> &'static str {
    match next_word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// "a star", "a large star", "an oval".
fn one(kind: ShapeKind, size: Option<SizeClass>) -> String {
    let words = match size.and_then(SizeClass::adjective) {
        Some(adjective) => format!("{adjective} {}", kind.name()),
        None => kind.name().to_string(),
    };
    format!("{} {words}", article(&words))
}

/// "a star", "two small stars": one phrase for all shapes of one kind. The size is named
/// only when the group shares one and the scene's shapes are not all that size.
fn group_phrase(kind: ShapeKind, members: &[&Shape], scene_sizes_vary: bool) -> String {
    let size = members[0].size;
    let uniform = members.iter().all(|s| s.size == size);
    let size = (uniform && scene_sizes_vary).then_some(size);
    if members.len() == 1 {
        return one(kind, size);
    }
    match size.and_then(SizeClass::adjective) {
        Some(adjective) => format!(
            "{} {adjective} {}",
            number_word(members.len()),
            kind.plural()
        ),
        None => format!("{} {}", number_word(members.len()), kind.plural()),
    }
}

/// "a, b and c".
fn join_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Where a lone small or medium shape sits: "in the top left corner", "on the right".
fn position_phrase(shape: &Shape) -> &'static str {
    let h = if shape.cx < 0.4 {
        0
    } else if shape.cx > 0.6 {
        2
    } else {
        1
    };
    let v = if shape.cy < 0.4 {
        0
    } else if shape.cy > 0.6 {
        2
    } else {
        1
    };
    match (v, h) {
        (0, 0) => "in the top left corner",
        (0, 1) => "at the top",
        (0, _) => "in the top right corner",
        (1, 0) => "on the left",
        (1, 1) => "in the centre",
        (1, _) => "on the right",
        (_, 0) => "in the bottom left corner",
        (_, 1) => "at the bottom",
        _ => "in the bottom right corner",
    }
}

/// Spread of the shapes' centres along x and y.
fn spread(shapes: &[&Shape]) -> (f32, f32) {
    let (mut x0, mut x1, mut y0, mut y1) = (1f32, 0f32, 1f32, 0f32);
    for s in shapes {
        (x0, x1, y0, y1) = (x0.min(s.cx), x1.max(s.cx), y0.min(s.cy), y1.max(s.cy));
    }
    (x1 - x0, y1 - y0)
}

impl Scene {
    /// An English prompt naming the content only (kinds, counts, sizes where they help,
    /// spatial relations for two or three shapes), never colour or rendering, e.g.
    /// "a large star", "two stars above a circle", "a small hexagon to the left of a ring".
    pub fn prompt(&self) -> String {
        let shapes: Vec<&Shape> = self.shapes.iter().collect();
        let sizes_vary = shapes.iter().any(|s| s.size != shapes[0].size);
        // Kinds grouped in left-to-right order of their leftmost member.
        let mut order = shapes.clone();
        order.sort_by(|a, b| a.cx.total_cmp(&b.cx));
        let mut groups: Vec<(ShapeKind, Vec<&Shape>)> = Vec::new();
        for s in &order {
            match groups.iter_mut().find(|(k, _)| *k == s.kind) {
                Some((_, members)) => members.push(s),
                None => groups.push((s.kind, vec![s])),
            }
        }
        match shapes.as_slice() {
            [] => "an empty background".to_string(),
            [s] => match s.size {
                SizeClass::Large => one(s.kind, Some(s.size)),
                _ => format!("{} {}", one(s.kind, Some(s.size)), position_phrase(s)),
            },
            [a, b] => two_shapes(a, b),
            [_, _, _] => three_shapes(&shapes, &groups, sizes_vary),
            _ => {
                let phrases: Vec<String> = groups
                    .iter()
                    .map(|(k, m)| group_phrase(*k, m, sizes_vary))
                    .collect();
                join_list(&phrases)
            }
        }
    }
}

fn two_shapes(a: &Shape, b: &Shape) -> String {
    let horizontal = (b.cx - a.cx).abs() >= (b.cy - a.cy).abs();
    if a.kind == b.kind && a.size == b.size {
        let pair = group_phrase(a.kind, &[a, b], true);
        let layout = if horizontal {
            "side by side"
        } else {
            "one above the other"
        };
        return format!("{pair} {layout}");
    }
    let name = |s: &Shape| one(s.kind, Some(s.size));
    if horizontal {
        let (left, right) = if a.cx <= b.cx { (a, b) } else { (b, a) };
        format!("{} to the left of {}", name(left), name(right))
    } else {
        let (top, bottom) = if a.cy <= b.cy { (a, b) } else { (b, a) };
        format!("{} above {}", name(top), name(bottom))
    }
}

fn three_shapes(
    shapes: &[&Shape],
    groups: &[(ShapeKind, Vec<&Shape>)],
    sizes_vary: bool,
) -> String {
    let (dx, dy) = spread(shapes);
    let in_row = dy < 0.15 && dx > 0.3;
    let in_column = dx < 0.15 && dy > 0.3;
    let phrases: Vec<String> = groups
        .iter()
        .map(|(k, m)| group_phrase(*k, m, sizes_vary))
        .collect();
    match groups {
        [_] if in_row => format!("{} in a row", phrases[0]),
        [_] if in_column => format!("{} in a column", phrases[0]),
        [_] => phrases[0].clone(),
        [first, second] => {
            let (pair, single) = if first.1.len() == 2 {
                (first, second)
            } else {
                (second, first)
            };
            let pair_text = group_phrase(pair.0, &pair.1, sizes_vary);
            let single_text = group_phrase(single.0, &single.1, sizes_vary);
            let s = single.1[0];
            // A relation holds when every member of the pair is clearly off along that axis
            // and not further off along the other one.
            let clearly = |along: f32, across: f32| along > 0.05 && along > 0.6 * across.abs();
            let all = |f: &dyn Fn(&Shape) -> bool| pair.1.iter().all(|p| f(p));
            let relation = if all(&|p| clearly(s.cy - p.cy, s.cx - p.cx)) {
                "above"
            } else if all(&|p| clearly(p.cy - s.cy, s.cx - p.cx)) {
                "below"
            } else if all(&|p| clearly(s.cx - p.cx, s.cy - p.cy)) {
                "to the left of"
            } else if all(&|p| clearly(p.cx - s.cx, s.cy - p.cy)) {
                "to the right of"
            } else {
                return format!("{pair_text} and {single_text}");
            };
            format!("{pair_text} {relation} {single_text}")
        }
        _ if in_row => format!("{} in a row", join_list(&phrases)),
        _ if in_column => {
            let mut top_down = shapes.to_vec();
            top_down.sort_by(|a, b| a.cy.total_cmp(&b.cy));
            let names: Vec<String> = top_down
                .iter()
                .map(|s| group_phrase(s.kind, &[s], sizes_vary))
                .collect();
            format!("{} from top to bottom", join_list(&names))
        }
        _ => join_list(&phrases),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_pinned_for_fixed_seeds() {
        let pinned = [
            (0, "a large heart"),
            (3, "an oval at the bottom"),
            (7, "a large hexagon to the left of a small hexagon"),
            (13, "a ring, a heart and a crescent"),
            (28, "three crosses in a row"),
            (34, "two small ovals and two stars"),
            (46, "two small hearts below a large pentagon"),
            (58, "a ring, an oval, a hexagon and a large pentagon"),
        ];
        for (seed, prompt) in pinned {
            assert_eq!(Scene::from_seed(seed).prompt(), prompt, "seed {seed}");
        }
    }

    #[test]
    fn prompt_names_every_kind_with_the_right_count() {
        let colour_words = [
            "red", "blue", "green", "colour", "color", "gradient", "outline",
        ];
        for seed in 0..2000 {
            let scene = Scene::from_seed(seed);
            let prompt = scene.prompt();
            let words: Vec<&str> = prompt.split(|c: char| !c.is_alphabetic()).collect();
            for kind in ShapeKind::ALL {
                let n = scene.shapes.iter().filter(|s| s.kind == kind).count();
                let plural = kind.plural();
                let singular_at = words.iter().position(|w| *w == kind.name());
                let plural_at = words.iter().position(|w| *w == plural);
                match n {
                    0 => assert!(
                        singular_at.is_none() && plural_at.is_none(),
                        "{seed}: {prompt}"
                    ),
                    1 => assert!(
                        singular_at.is_some() && plural_at.is_none(),
                        "{seed}: {prompt}"
                    ),
                    _ => match plural_at {
                        // "two stars" or "two small stars".
                        Some(at) => {
                            let count = number_word(n);
                            let before = words[..at].iter().rev().take(2);
                            assert!(before.clone().any(|w| *w == count), "{prompt}");
                        }
                        // "a large star to the left of a small star".
                        None => {
                            let named = words.iter().filter(|w| **w == kind.name()).count();
                            assert_eq!(named, n, "{seed}: {prompt}");
                        }
                    },
                }
            }
            assert!(!colour_words.iter().any(|w| words.contains(w)), "{prompt}");
            assert!(
                !prompt.contains("a a") && !prompt.contains(" a o"),
                "{prompt}"
            );
        }
    }

    #[test]
    fn prompt_grammar_helpers() {
        assert_eq!(one(ShapeKind::Oval, None), "an oval");
        assert_eq!(one(ShapeKind::Oval, Some(SizeClass::Large)), "a large oval");
        assert_eq!(one(ShapeKind::Star, Some(SizeClass::Medium)), "a star");
        assert_eq!(
            join_list(&["a".into(), "b".into(), "c".into()]),
            "a, b and c"
        );
        assert_eq!(Scene { shapes: vec![] }.prompt(), "an empty background");
    }
}
