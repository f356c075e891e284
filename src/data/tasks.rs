//! Generated tasks with rule-based judges: the small-scale analogue of the paper's LLM experiments (its math and
//! poem/slogan instruction tasks). Everything is deterministic from a seed, plain text, and scored by a judge written
//! in Rust, so a study can sample a model's answers, judge them, and build on-policy and off-policy preference pairs
//! without any external model.
//!
//! **Math** ([`MathProblem`]): short multi-step integer word problems ("Ann has 7 pens. She buys 5 more, then gives
//! 3 away. How many pens does Ann have now?") with a worked solution in a fixed format, one step per line and an
//! answer line:
//!
//! ```text
//! 7 + 5 = 12
//! 12 - 3 = 9
//! Answer: 9
//! ```
//!
//! [`judge_math`] scores a sampled solution 1-5 the way the paper's judge does: 5 = right answer and every step
//! right; 4 = right answer with a flawed or missing step or a format fault; 3 = wrong answer but at least half of the
//! reference steps present and right; 2 = wrong answer with some right step; 1 = nothing right.
//!
//! **Poems** ([`PoemTask`]): instructions asking for N rows of K words, with or without a title, the last word
//! starting with a given letter; [`judge_poem`] checks each rule separately (the paper's Table 2 reports per-rule
//! compliance) and [`PoemScore::full`] says whether all hold.

use crate::rng::Rng;

const NAMES: [&str; 8] = ["Ann", "Bob", "Cy", "Dee", "Eve", "Finn", "Gus", "Hal"];
const ITEMS: [&str; 8] = ["pens", "apples", "coins", "books", "cards", "eggs", "cups", "stones"];

/// One arithmetic step of a worked solution: `a op b = c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub a: i64,
    pub op: char,
    pub b: i64,
    pub c: i64,
}

impl Step {
    fn new(a: i64, op: char, b: i64) -> Step {
        let c = match op {
            '+' => a + b,
            '-' => a - b,
            _ => a * b,
        };
        Step { a, op, b, c }
    }

    /// Whether `c` is `a op b`.
    pub fn is_right(&self) -> bool {
        Step::new(self.a, self.op, self.b).c == self.c
    }

    pub fn line(&self) -> String {
        format!("{} {} {} = {}", self.a, self.op, self.b, self.c)
    }
}

/// A word problem, its reference steps and answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MathProblem {
    pub question: String,
    pub steps: Vec<Step>,
    pub answer: i64,
}

impl MathProblem {
    /// A problem of 2 or 3 steps (additions, subtractions that stay non-negative, doublings); the starting amount
    /// and every change are below 20.
    pub fn generate(rng: &mut Rng) -> MathProblem {
        let name = NAMES[rng.below(NAMES.len() as u32) as usize];
        let item = ITEMS[rng.below(ITEMS.len() as u32) as usize];
        let start = 2 + rng.below(18) as i64;
        let mut text = format!("{name} has {start} {item}.");
        let mut steps = Vec::new();
        let mut have = start;
        let n_steps = 2 + rng.below(2) as usize;
        for i in 0..n_steps {
            let then = if i == 0 { "" } else { "Then " };
            let who = if i == 0 { "She" } else { "she" };
            let kind = rng.below(3);
            let step = if kind == 2 && have <= 20 {
                text.push_str(&format!(" {then}{who} doubles them."));
                Step::new(have, '*', 2)
            } else if kind == 1 && have > 1 {
                let n = 1 + rng.below(have.min(19) as u32) as i64;
                text.push_str(&format!(" {then}{who} gives {n} away."));
                Step::new(have, '-', n)
            } else {
                let n = 1 + rng.below(19) as i64;
                text.push_str(&format!(" {then}{who} buys {n} more."));
                Step::new(have, '+', n)
            };
            have = step.c;
            steps.push(step);
        }
        text.push_str(&format!(" How many {item} does {name} have now?"));
        MathProblem { question: text, steps, answer: have }
    }

    /// `n` problems from `seed`.
    pub fn set(seed: u64, n: usize) -> Vec<MathProblem> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| MathProblem::generate(&mut rng)).collect()
    }

    /// The reference worked solution.
    pub fn solution(&self) -> String {
        let mut s: String = self.steps.iter().map(|st| st.line() + "\n").collect();
        s.push_str(&format!("Answer: {}", self.answer));
        s
    }
}

/// Parse "a op b = c" (integers, op one of + - *); None if the line is not a step.
fn parse_step(line: &str) -> Option<Step> {
    let mut it = line.split_whitespace();
    let a = it.next()?.parse().ok()?;
    let op = it.next()?;
    let b = it.next()?.parse().ok()?;
    if it.next()? != "=" {
        return None;
    }
    let c = it.next()?.parse().ok()?;
    if it.next().is_some() || !matches!(op, "+" | "-" | "*") {
        return None;
    }
    Some(Step { a, op: op.chars().next()?, b, c })
}

/// The judge's verdict on one sampled solution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MathScore {
    /// 1-5 (see the module docs).
    pub score: u8,
    /// The answer line's value equals the reference answer.
    pub answer_right: bool,
    /// Reference steps found, in order, with right arithmetic.
    pub steps_right: usize,
}

/// Score `sample` against `problem` (1-5, as the paper's judge).
pub fn judge_math(problem: &MathProblem, sample: &str) -> MathScore {
    let lines: Vec<&str> = sample.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let answer = lines.last().and_then(|l| l.strip_prefix("Answer:")).and_then(|a| a.trim().parse::<i64>().ok());
    let steps: Vec<Option<Step>> = lines.iter().take(lines.len().saturating_sub(1)).map(|l| parse_step(l)).collect();
    let format_ok = answer.is_some() && steps.iter().all(Option::is_some) && steps.len() == problem.steps.len();
    // Reference steps matched in order by a right step with the same operands.
    let mut steps_right = 0;
    let mut from = 0;
    for r in &problem.steps {
        if let Some(k) = steps[from..].iter().position(|s| matches!(s, Some(s) if s == r)) {
            steps_right += 1;
            from += k + 1;
        }
    }
    let wrong_arith = steps.iter().flatten().any(|s| !s.is_right());
    let answer_right = answer == Some(problem.answer);
    let all_steps = steps_right == problem.steps.len();
    let score = if answer_right && all_steps && format_ok && !wrong_arith {
        5
    } else if answer_right {
        4
    } else if 2 * steps_right >= problem.steps.len() {
        3
    } else if steps_right > 0 || steps.iter().flatten().any(Step::is_right) {
        2
    } else {
        1
    };
    MathScore { score, answer_right, steps_right }
}

const WORDS: [&str; 24] = [
    "moon", "sun", "rain", "wind", "tree", "leaf", "sea", "sky", "stone", "fire", "snow", "light", "bird", "song",
    "road", "night", "star", "field", "river", "cloud", "home", "dream", "gold", "hill",
];

/// A poem instruction: `rows` rows of `words` words, a title or not, and the last word's first letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoemTask {
    pub rows: usize,
    pub words: usize,
    pub title: bool,
    pub last_letter: char,
}

impl PoemTask {
    pub fn generate(rng: &mut Rng) -> PoemTask {
        let last = WORDS[rng.below(WORDS.len() as u32) as usize];
        PoemTask {
            rows: 2 + rng.below(3) as usize,
            words: 2 + rng.below(3) as usize,
            title: rng.below(2) == 1,
            last_letter: last.chars().next().unwrap_or('s'),
        }
    }

    pub fn set(seed: u64, n: usize) -> Vec<PoemTask> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| PoemTask::generate(&mut rng)).collect()
    }

    pub fn instruction(&self) -> String {
        format!(
            "Write a poem of {} rows with {} words each, {}, ending with a word that starts with '{}'.",
            self.rows,
            self.words,
            if self.title { "with a title" } else { "without a title" },
            self.last_letter
        )
    }

    /// A poem that follows every rule: words drawn from `rng`, the last one starting with the letter.
    pub fn reference(&self, rng: &mut Rng) -> String {
        let mut out = String::new();
        if self.title {
            out.push_str(&format!("Title: {}\n", WORDS[rng.below(WORDS.len() as u32) as usize]));
        }
        let enders: Vec<&str> = WORDS.iter().copied().filter(|w| w.starts_with(self.last_letter)).collect();
        for r in 0..self.rows {
            let mut row: Vec<&str> = (0..self.words).map(|_| WORDS[rng.below(WORDS.len() as u32) as usize]).collect();
            if r + 1 == self.rows {
                row[self.words - 1] = enders[rng.below(enders.len() as u32) as usize];
            }
            out.push_str(&row.join(" "));
            if r + 1 < self.rows {
                out.push('\n');
            }
        }
        out
    }
}

/// Per-rule compliance of one poem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoemScore {
    pub rows: bool,
    pub words: bool,
    pub title: bool,
    pub last_letter: bool,
}

impl PoemScore {
    pub fn full(&self) -> bool {
        self.rows && self.words && self.title && self.last_letter
    }

    /// Rules followed, 0-4.
    pub fn count(&self) -> usize {
        [self.rows, self.words, self.title, self.last_letter].iter().filter(|b| **b).count()
    }
}

/// Check `poem` against each of `task`'s rules.
pub fn judge_poem(task: &PoemTask, poem: &str) -> PoemScore {
    let lines: Vec<&str> = poem.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let has_title = lines.first().is_some_and(|l| l.starts_with("Title:"));
    let body: Vec<&str> = if has_title { lines[1..].to_vec() } else { lines.clone() };
    let last_word = body.last().and_then(|l| l.split_whitespace().last());
    PoemScore {
        rows: body.len() == task.rows,
        words: !body.is_empty() && body.iter().all(|l| l.split_whitespace().count() == task.words),
        title: has_title == task.title,
        last_letter: last_word.is_some_and(|w| w.starts_with(task.last_letter)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_generate_the_same_problems_from_the_same_seed_and_solve_them() {
        let a = MathProblem::set(7, 50);
        assert_eq!(a, MathProblem::set(7, 50));
        assert_ne!(a, MathProblem::set(8, 50));
        for p in &a {
            assert!((2..=3).contains(&p.steps.len()), "{p:?}");
            assert!(p.steps.iter().all(Step::is_right) && p.answer >= 0, "{p:?}");
            assert_eq!(p.steps.last().unwrap().c, p.answer);
            assert_eq!(judge_math(p, &p.solution()).score, 5, "the reference solution of {p:?}");
        }
    }

    #[test]
    fn should_score_flawed_solutions_like_the_papers_judge() {
        let p = MathProblem {
            question: "Ann has 7 pens. She buys 5 more. Then she gives 3 away. How many pens does Ann have now?".into(),
            steps: vec![Step::new(7, '+', 5), Step::new(12, '-', 3)],
            answer: 9,
        };
        let s = |text: &str| judge_math(&p, text).score;
        assert_eq!(s("7 + 5 = 12\n12 - 3 = 9\nAnswer: 9"), 5);
        assert_eq!(s("12 - 3 = 9\nAnswer: 9"), 4, "right answer, a step missing");
        assert_eq!(s("7 + 5 = 13\n12 - 3 = 9\nAnswer: 9"), 4, "right answer, a wrong step");
        assert_eq!(s("7 + 5 = 12\n12 - 3 = 9\nthe answer is 9"), 3, "no answer line: the answer is not read");
        assert_eq!(s("7 + 5 = 12\n12 - 3 = 8\nAnswer: 8"), 3, "wrong answer, half the steps right");
        assert_eq!(s("7 * 2 = 14\nAnswer: 14"), 2, "wrong answer, a right but irrelevant step");
        assert_eq!(s("seven and five\nAnswer: 4"), 1);
        assert_eq!(s(""), 1);
    }

    #[test]
    fn should_judge_every_poem_rule_separately() {
        let tasks = PoemTask::set(3, 40);
        assert_eq!(tasks, PoemTask::set(3, 40));
        let mut rng = Rng::new(4);
        for t in &tasks {
            let poem = t.reference(&mut rng);
            assert!(judge_poem(t, &poem).full(), "{t:?}: {poem:?}");
        }
        let t = PoemTask { rows: 2, words: 3, title: true, last_letter: 'm' };
        let j = |p: &str| judge_poem(&t, p);
        assert!(j("Title: sea\nsun rain wind\nstar tree moon").full());
        let no_title = j("sun rain wind\nstar tree moon");
        assert!(!no_title.title && no_title.rows && no_title.words && no_title.last_letter);
        let short_row = j("Title: sea\nsun rain\nstar tree moon");
        assert!(!short_row.words && short_row.rows && short_row.count() == 3);
        let extra_row = j("Title: sea\nsun rain wind\nstar tree moon\nsky sea home");
        assert!(!extra_row.rows && !extra_row.last_letter);
    }
}
