"""Captioned image sources for text-to-image: `digits_captions`, the embedded
8x8 digits, each captioned from its label and attributes measured from the
image (stroke weight, slant, size) in one of several phrasings, with held-out
phrasings and digit x attribute combinations for evaluation; and
`coco_captions` (tfds), center-cropped and resized, one of an image's captions
per visit. data.py tokenizes the captions (`tokenize_fn`).
"""

import functools
import string
from collections.abc import Callable

import grain
import numpy as np

from gen_jax import text

ATTRIBUTES = ("weight", "slant", "size")
CLASSES = {
    "weight": ("thin", "regular", "thick"),
    "slant": ("leaning left", "upright", "leaning right"),
    "size": ("small", "large"),
}
DIGIT_WORDS = ("zero", "one", "two", "three", "four")
DIGIT_WORDS += ("five", "six", "seven", "eight", "nine")

# Per digit (row = label), over the 1497 images of the digits train split: the
# cut between neighbouring distinct measures nearest rank n/3 and 2n/3 (weight,
# slant) or n/2 (size), rounded to 5 decimals, so each digit's classes are equal
# (up to ties: ink mass lies on a 1/16 grid). Per digit because each raw
# measure mixes the digit's shape with the hand that wrote it (a 7's ink leans
# right, a 1's box is narrow); against its own digit it measures the hand, and
# every digit x class pair is well populated. tests/test_captions.py recomputes
# them.
THRESHOLDS = {
    "weight": np.array(
        [(18.4375, 21.15625), (18.34375, 20.40625), (18.59375, 20.53125)]
        + [(17.71875, 20.53125), (19.03125, 20.46875), (18.15625, 19.90625)]
        + [(18.125, 20.5), (18.15625, 19.8125), (19.90625, 21.65625)]
        + [(17.9375, 20.4375)]
    ),
    "slant": np.array(
        [(-0.05122, -0.00032), (-0.0389, 0.02785), (-0.16674, -0.0872)]
        + [(-0.10651, -0.03843), (-0.02012, 0.03387), (-0.04942, 0.03221)]
        + [(-0.23392, -0.16898), (0.10774, 0.16792), (-0.04056, 0.03757)]
        + [(-0.12234, -0.06114)]
    ),
    "size": np.array(
        [(32.2879,), (24.13528,), (30.78606,), (29.39599,), (28.61951,)]
        + [(29.98009,), (30.03847,), (27.8593,), (26.83581,), (30.52238,)]
    ),
}

# {word}: the digit in words, {digit}: as a numeral; an attribute's field
# present means the caption states that attribute, absent says nothing of it.
TEMPLATES = (
    "a {weight} {word} {slant}",
    "the digit {digit}, {weight} and {slant}",
    "number {word}, {size}",
    "a {size}, {weight} {digit} {slant}",
    "a handwritten {word}",
    "{word} in {weight} strokes, {size}",
    # Held out: never in "train" or "test", only in "heldout_phrasings".
    "a {size} {digit} written in {weight} strokes, {slant}",
    "the number {digit}, {size} and {slant}",
)
HELDOUT_TEMPLATES = (6, 7)
# (digit, attribute, class) never stated together in "train" or "test": one
# extreme class of each attribute, each on its own digit, so the words are seen
# with the nine other digits and the digit with the other classes. Such images
# stay, captioned only by templates that omit that attribute: the images are
# every digits config's, "number three" still covers threes of every weight,
# and only the words "thick" and "three" never meet.
HELDOUT_COMBOS = ((3, "weight", 2), (8, "slant", 0), (5, "size", 0))
# The digits image split each captioned split draws from.
IMAGE_SPLITS = {
    "train": "train",
    "test": "test",
    "heldout_phrasings": "test",
    "heldout_combos": "test",
}


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """Raw measures of images (NHWC in [-1, 1]), float64 [N] each: "weight" the
    ink mass (in full-ink pixels), "slant" the shear of the ink from its second
    moments (x shift per row up; > 0 leans right), "size" the area in pixels of
    the box holding the central 90% of the ink along each axis."""
    ink = np.clip((np.asarray(images, np.float64).mean(-1) + 1) / 2, 0, 1)
    weight = ink.sum((1, 2))
    # A tiny floor keeps a blank image's moments finite (its shear is 0).
    ink = ink + 1e-6
    mass = ink.sum((1, 2))
    ys, xs = np.mgrid[: ink.shape[1], : ink.shape[2]]
    cy = (ink * ys).sum((1, 2)) / mass
    cx = (ink * xs).sum((1, 2)) / mass
    dy, dx = ys - cy[:, None, None], xs - cx[:, None, None]
    # Rows count downwards, so ink leaning right has x falling as y grows.
    shear = -(ink * dx * dy).sum((1, 2)) / (ink * dy * dy).sum((1, 2))
    box = _extent(ink.sum(1)) * _extent(ink.sum(2))
    return {"weight": weight, "slant": shear, "size": box}


def _extent(profile: np.ndarray) -> np.ndarray:
    """The width of the central 90% of each profile's mass (pixels as unit bins)."""
    mass = profile / profile.sum(1, keepdims=True)
    cdf = np.cumsum(mass, 1)

    def position(q):
        i = np.minimum((cdf < q).sum(1), profile.shape[1] - 1)[:, None]
        before = np.take_along_axis(cdf - mass, i, 1)[:, 0]
        return i[:, 0] + (q - before) / np.take_along_axis(mass, i, 1)[:, 0]

    return position(0.95) - position(0.05)


def attributes(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Class ids (int32 [N], indices into CLASSES) of images of digits `labels`,
    measured against that digit's THRESHOLDS; generated images are scored with
    the digit their prompt asked for."""
    labels = np.asarray(labels)
    raw = measure(images)
    return {
        name: (raw[name][:, None] > THRESHOLDS[name][labels]).sum(1).astype(np.int32)
        for name in ATTRIBUTES
    }


def stated(template: str) -> np.ndarray:
    """int32 [len(ATTRIBUTES)]: 1 where the template states the attribute."""
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    return np.array([a in fields for a in ATTRIBUTES], np.int32)


def render(template: str, label: int, classes: dict[str, int]) -> str:
    """The caption of a `label` digit with attribute class ids `classes`."""
    words = {a: CLASSES[a][int(classes[a])] for a in ATTRIBUTES}
    return template.format(word=DIGIT_WORDS[label], digit=label, **words)


def _allowed(split: str, labels: np.ndarray, ids: dict) -> tuple:
    """(kept rows, bool [rows, templates]) of the split: which images it
    captions and with which templates."""
    held = np.zeros((len(labels), len(ATTRIBUTES)), bool)  # [N, attributes]
    for digit, name, value in HELDOUT_COMBOS:
        held[:, ATTRIBUTES.index(name)] |= (labels == digit) & (ids[name] == value)
    states = np.stack([stated(t) for t in TEMPLATES]).astype(bool)  # [T, A]
    trained = ~np.isin(np.arange(len(TEMPLATES)), HELDOUT_TEMPLATES)
    says_held = (held[:, None, :] & states[None]).any(-1)  # [N, T]
    says_all_held = (~held[:, None, :] | states[None]).all(-1)
    any_held = held.any(1)
    everyone = np.ones_like(any_held)
    rules = {
        "train": (everyone, trained[None] & ~says_held),
        "test": (everyone, trained[None] & ~says_held),
        "heldout_phrasings": (~any_held, np.broadcast_to(~trained, says_held.shape)),
        "heldout_combos": (any_held, trained[None] & says_all_held),
    }
    return rules[split]


@functools.cache
def _table(split: str, digits: Callable[[str], grain.MapDataset]) -> dict:
    images = digits(IMAGE_SPLITS[split])
    full = images.batch(len(images))[0]  # the whole split as arrays
    ids = attributes(full["image"], full["label"])
    keep, allowed = _allowed(split, full["label"], ids)
    table = {"image": full["image"], "label": full["label"], **ids}
    table = {k: np.asarray(v)[keep] for k, v in table.items()}
    table["allowed"] = [np.flatnonzero(row) for row in allowed[keep]]
    # Each example walks its allowed templates from a fixed random start, one
    # per visit: every phrasing comes round, and consecutive visits differ.
    rng = np.random.default_rng(list(IMAGE_SPLITS).index(split))
    table["start"] = rng.integers(0, [len(a) for a in table["allowed"]])
    return table


def source(split: str, digits: Callable[[str], grain.MapDataset]) -> grain.MapDataset:
    """The split ("train", "test", "heldout_phrasings", "heldout_combos") as a
    random-access dataset of {"image", "label", "caption", "weight", "slant",
    "size", "stated", "template"} over `digits(image_split)`, data.py's digits
    source by split (so the images are every digits config's): passed in, not
    imported, so that data.py can dispatch to this module.

    The phrasing of index i is a function of i alone: example i % n on visit
    i // n. Grain's shuffle and repeat pass the epoch on in the index they ask
    for, so each visit may read a new phrasing, and a restored iterator (its
    state is a position) repeats the same captions.
    """
    if split not in IMAGE_SPLITS:
        raise ValueError(
            f"digits_captions has splits {list(IMAGE_SPLITS)}, not {split!r}"
        )
    table = _table(split, digits)
    size = len(table["label"])

    def element(index: int, _) -> dict:
        i, visit = index % size, index // size
        allowed = table["allowed"][i]
        template = allowed[(table["start"][i] + visit) % len(allowed)]
        classes = {a: table[a][i] for a in ATTRIBUTES}
        label = int(table["label"][i])
        return {
            "image": table["image"][i],
            "label": np.int32(label),
            "caption": render(TEMPLATES[template], label, classes),
            **{a: np.int32(c) for a, c in classes.items()},
            "stated": stated(TEMPLATES[template]),
            "template": np.int32(template),
        }

    return grain.MapDataset.range(size).map_with_index(element)


def tokenize_fn(tokenizer: text.Tokenizer, max_len: int) -> Callable[[dict], dict]:
    """An element map for `source`: "caption" replaced by "text_tokens" and
    "text_mask" (int32 [max_len]), so every value batches into an array."""

    def tokenize_element(element: dict) -> dict:
        out = {k: v for k, v in element.items() if k != "caption"}
        encoded = text.fixed_length([element["caption"]], tokenizer, max_len)
        return out | {k: v[0] for k, v in encoded.items()}

    return tokenize_element


def coco_source(source, image_size: int) -> grain.MapDataset:
    """tfds coco_captions' random-access `source` as {"image": float32
    [image_size, image_size, 3] in [-1, 1], "caption": str}: each image
    center-cropped to a square and resized (PIL's antialiased bicubic), its
    captions taken in turn, one per visit (index i: example i % n, caption
    (i // n) mod its count), so a restored iterator repeats them exactly."""
    size = len(source)

    def element(index: int, _) -> dict:
        example = source[index % size]
        texts = example["captions"]["text"]
        text = texts[(index // size) % len(texts)]
        return {
            "image": center_crop(example["image"], image_size),
            "caption": text.decode() if isinstance(text, bytes) else str(text),
        }

    return grain.MapDataset.range(size).map_with_index(element)


def center_crop(image: np.ndarray, side: int) -> np.ndarray:
    """uint8 HWC -> float32 [side, side, C] in [-1, 1]: the central square,
    resized."""
    from PIL import Image  # a dependency of tfds and of the server's tests

    h, w = image.shape[:2]
    edge = min(h, w)
    top, left = (h - edge) // 2, (w - edge) // 2
    square = np.ascontiguousarray(image[top : top + edge, left : left + edge])
    resized = Image.fromarray(square.squeeze(-1) if square.shape[-1] == 1 else square)
    out = np.asarray(resized.resize((side, side), Image.BICUBIC), np.float32)
    return (out.reshape(side, side, -1) / 127.5 - 1.0).astype(np.float32)
