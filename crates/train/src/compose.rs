//! Text-to-image data in miniature, where the words matter: Fashion-MNIST garments composed on
//! a 64×32 canvas (two 32×32 cells: the 28×28 garments with their 2-pixel border), one garment
//! in the middle or one in each cell, with a caption from templates with synonyms and both
//! word orders ("a sneaker", "a bag left of a dress", "a dress to the right of a bag", "two
//! shirts"). Deterministic from the random stream it is given; built on the fly.
//!
//! Held-out combinations: some ordered pairs (left class, right class) never appear in
//! training ([`ComposedData::training_scene`] avoids them), so that a model's fidelity can be
//! measured on prompts it has never seen ([`held_out_pairs`]).

use std::collections::BTreeSet;

use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor};

use crate::data::{DataError, Dataset};
use crate::error::Result;

pub const CANVAS_HEIGHT: usize = 32;
pub const CANVAS_WIDTH: usize = 64;
/// The side of one garment's cell (a Fashion-MNIST image as ember loads it).
pub const CELL: usize = 32;

/// The words for each Fashion-MNIST class, by class index: the singular synonyms (the first is
/// the class's own name) and the plural for "two …".
pub const GARMENT_WORDS: [(&[&str], &str); 10] = [
    (&["t-shirt", "top", "tee"], "t-shirts"),
    (&["pair of trousers", "pair of pants"], "pairs of trousers"),
    (&["pullover", "sweater"], "pullovers"),
    (&["dress"], "dresses"),
    (&["coat", "jacket"], "coats"),
    (&["sandal"], "sandals"),
    (&["shirt"], "shirts"),
    (&["sneaker", "trainer"], "sneakers"),
    (&["bag", "handbag"], "bags"),
    (&["ankle boot", "boot"], "ankle boots"),
];

/// What a canvas shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scene {
    /// One garment of this class, in the middle.
    One(usize),
    /// A garment in the left cell and one in the right cell.
    Pair { left: usize, right: usize },
}

impl Scene {
    /// Every scene: one garment of each class, then every ordered pair (equal classes too).
    pub fn all() -> Vec<Scene> {
        let ones = (0..10).map(Scene::One);
        ones.chain((0..10).flat_map(|left| (0..10).map(move |right| Scene::Pair { left, right }))).collect()
    }
}

/// A uniform index in `0..n` from the stream.
fn pick(rng: &mut Rng, n: usize) -> usize {
    ((rng.uniform_values(1)[0] * n as f64) as usize).min(n - 1)
}

/// "a" or "an" before `word`.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// A caption of `scene` drawn from the templates: a synonym per garment, and for two different
/// garments either word order ("X left of Y", "X to the left of Y", "Y right of X", "Y to the
/// right of X"). Classes must be < 10 (Fashion-MNIST's).
pub fn caption(scene: Scene, rng: &mut Rng) -> String {
    let mut name = |class: usize| {
        let synonyms = GARMENT_WORDS[class].0;
        let word = synonyms[pick(rng, synonyms.len())];
        format!("{} {word}", article(word))
    };
    match scene {
        Scene::One(class) => name(class),
        Scene::Pair { left, right } if left == right => format!("two {}", GARMENT_WORDS[left].1),
        Scene::Pair { left, right } => {
            let (left, right) = (name(left), name(right));
            match pick(rng, 4) {
                0 => format!("{left} left of {right}"),
                1 => format!("{left} to the left of {right}"),
                2 => format!("{right} right of {left}"),
                _ => format!("{right} to the right of {left}"),
            }
        }
    }
}

/// Every word the captions use, sorted (the tokenizer's vocabulary).
pub fn caption_words() -> Vec<String> {
    let mut words: BTreeSet<String> = ["a", "an", "two", "left", "right", "of", "to", "the"].iter().map(|w| w.to_string()).collect();
    for (synonyms, plural) in GARMENT_WORDS {
        for phrase in synonyms.iter().chain([&plural]) {
            words.extend(phrase.split(' ').map(str::to_string));
        }
    }
    words.into_iter().collect()
}

/// `count` ordered pairs of different classes (of 10) held out of training, drawn from `seed`
/// without repeats; with them, each class still appears on both sides in training.
pub fn held_out_pairs(count: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut rng = Rng::new(seed);
    let mut pairs = BTreeSet::new();
    while pairs.len() < count.min(90) {
        let (left, right) = (pick(&mut rng, 10), pick(&mut rng, 10));
        if left != right {
            pairs.insert((left, right));
        }
    }
    pairs.into_iter().collect()
}

/// Labelled garments and the pairs held out of training.
pub struct ComposedData {
    garments: Dataset,
    by_class: Vec<Vec<usize>>,
    held_out: BTreeSet<(usize, usize)>,
}

impl ComposedData {
    /// From a labelled one-channel dataset of 32×32 images with 10 classes (Fashion-MNIST as
    /// ember loads it); every class needs at least one image.
    pub fn new(garments: Dataset, held_out: &[(usize, usize)]) -> Result<ComposedData> {
        let invalid = |msg: String| DataError::InvalidArgument { op: "ComposedData::new", msg };
        let labels = garments.labels().ok_or_else(|| invalid(format!("{} has no labels", garments.name())))?;
        if garments.channels() != 1 || garments.size() != CELL || labels.names().len() != GARMENT_WORDS.len() {
            return Err(
                invalid(format!("expected one-channel {CELL}×{CELL} images of {} classes (Fashion-MNIST), got {:?}", GARMENT_WORDS.len(), garments)).into()
            );
        }
        let mut by_class = vec![Vec::new(); GARMENT_WORDS.len()];
        for (i, &class) in labels.classes().iter().enumerate() {
            by_class[class].push(i);
        }
        if let Some(class) = by_class.iter().position(Vec::is_empty) {
            return Err(invalid(format!("no image of class {class} ({})", labels.names()[class])).into());
        }
        if let Some(&(l, r)) = held_out.iter().find(|(l, r)| l == r || *l >= 10 || *r >= 10) {
            return Err(invalid(format!("held-out pair ({l}, {r}) is not a pair of two different classes of 10")).into());
        }
        Ok(ComposedData { garments, by_class, held_out: held_out.iter().copied().collect() })
    }

    pub fn held_out(&self) -> &BTreeSet<(usize, usize)> {
        &self.held_out
    }

    /// A scene as training sees them: one garment (30%), two of one class (10%) or two
    /// different classes in an order not held out (60%).
    pub fn training_scene(&self, rng: &mut Rng) -> Scene {
        let kind = rng.uniform_values(1)[0];
        if kind < 0.3 {
            return Scene::One(pick(rng, 10));
        }
        if kind < 0.4 {
            let class = pick(rng, 10);
            return Scene::Pair { left: class, right: class };
        }
        loop {
            let (left, right) = (pick(rng, 10), pick(rng, 10));
            if left != right && !self.held_out.contains(&(left, right)) {
                return Scene::Pair { left, right };
            }
        }
    }

    /// The canvas `[1, 32, 64]` (values in [−1, 1], background −1) of `scene` with garments
    /// drawn from the stream: one garment's cell in the middle, or a cell on each side.
    pub fn render(&self, scene: Scene, rng: &mut Rng) -> Vec<f32> {
        let mut canvas = vec![-1.0f32; CANVAS_HEIGHT * CANVAS_WIDTH];
        let mut paste = |class: usize, column: usize, rng: &mut Rng| {
            let images = &self.by_class[class];
            let image = self.garments.image(images[pick(rng, images.len())]);
            for (y, row) in image.chunks_exact(CELL).enumerate() {
                canvas[y * CANVAS_WIDTH + column..][..CELL].copy_from_slice(row);
            }
        };
        match scene {
            Scene::One(class) => paste(class, (CANVAS_WIDTH - CELL) / 2, rng),
            Scene::Pair { left, right } => {
                paste(left, 0, rng);
                paste(right, CELL, rng);
            }
        }
        canvas
    }

    /// The canvases `[n, 1, 32, 64]` (f32) of `scenes`, garments drawn from `rng` in order.
    pub fn render_batch(&self, scenes: &[Scene], rng: &mut Rng) -> Result<Tensor> {
        let values: Vec<f32> = scenes.iter().flat_map(|&scene| self.render(scene, rng)).collect();
        Ok(Tensor::from_vec(values, &[scenes.len(), 1, CANVAS_HEIGHT, CANVAS_WIDTH], ember_tensor::Device::Cpu)?)
    }

    /// A training batch: `n` canvases `[n, 1, 32, 64]` in `dtype`, a caption of each, and the
    /// scenes. Each canvas draws its scene, its garments, then its caption from `rng`.
    pub fn training_batch(&self, n: usize, dtype: DType, rng: &mut Rng) -> Result<(Tensor, Vec<String>, Vec<Scene>)> {
        let (mut values, mut captions, mut scenes) = (Vec::with_capacity(n * CANVAS_HEIGHT * CANVAS_WIDTH), Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let scene = self.training_scene(rng);
            values.extend(self.render(scene, rng).into_iter().map(f64::from));
            captions.push(caption(scene, rng));
            scenes.push(scene);
        }
        Ok((Tensor::from_f64(&values, &[n, 1, CANVAS_HEIGHT, CANVAS_WIDTH], dtype)?, captions, scenes))
    }
}
