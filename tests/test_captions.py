"""digits_captions: attributes measured from images, captions and their held-out
sets, phrasings chosen per visit that resume exactly, and caption tokens."""

import functools
import string

import grain
import ml_collections
import numpy as np
import pytest

from gen_jax import captions, data, text

DIGITS = functools.partial(
    data.make_source,
    ml_collections.ConfigDict({"name": "digits", "image_size": 8, "channels": 1}),
)


def _visits(split: str, visits: int = 1) -> dict[str, np.ndarray]:
    """Every example of `split` on each of its first `visits` visits, as arrays."""
    ds = captions.source(split, DIGITS)
    return ds.repeat(visits).batch(len(ds) * visits)[0]


def _image(*pixels) -> np.ndarray:
    """An 8x8x1 image in [-1, 1]: full ink at the (row, col) pixels."""
    ink = np.zeros((8, 8, 1), np.float32)
    for row, col in pixels:
        ink[row, col] = 1.0
    return ink * 2 - 1


def test_thick_strokes_weigh_more_than_thin_ones():
    thin = _image(*[(r, 3) for r in range(8)])
    thick = _image(*[(r, c) for r in range(8) for c in (2, 3, 4)])
    ids = captions.attributes(np.stack([thin, thick]), np.array([1, 1]))
    assert ids["weight"].tolist() == [0, 2]  # thin, thick


def test_a_sheared_stroke_leans_the_way_it_is_sheared():
    # Rows count downwards: a stroke whose top is right of its foot leans right.
    right = _image(*[(r, 6 - r * 5 // 7) for r in range(8)])
    left = _image(*[(r, 1 + r * 5 // 7) for r in range(8)])
    upright = _image(*[(r, 3) for r in range(8)])
    raw = captions.measure(np.stack([left, upright, right]))
    assert raw["slant"][0] < 0 < raw["slant"][2] and abs(raw["slant"][1]) < 1e-9
    ids = captions.attributes(np.stack([left, upright, right]), np.ones(3, int))
    assert ids["slant"].tolist() == [0, 1, 2]


def test_real_digits_sheared_right_measure_more_slanted():
    images = _visits("test")["image"]
    sheared = images.copy()
    for row, shift in enumerate((2, 2, 1, 1, 0, 0, -1, -1)):
        sheared[:, row] = np.roll(images[:, row], shift, axis=1)
    more = captions.measure(sheared)["slant"] > captions.measure(images)["slant"]
    assert more.mean() > 0.95


def test_size_and_a_blank_image():
    small = _image(*[(r, c) for r in range(2, 6) for c in range(3, 5)])
    large = _image(*[(r, c) for r in range(8) for c in range(1, 7)])
    blank = -np.ones((8, 8, 1), np.float32)
    raw = captions.measure(np.stack([small, large, blank]))
    assert all(np.isfinite(v).all() for v in raw.values())
    ids = captions.attributes(np.stack([small, large, blank]), np.zeros(3, int))
    assert ids["size"][:2].tolist() == [0, 1]
    assert ids["weight"][2] == 0 and raw["slant"][2] == 0  # blank: thin, unslanted


def _cut(values: np.ndarray, quantile: float) -> float:
    """The cut between neighbouring distinct values nearest rank n * quantile."""
    distinct = np.unique(np.round(values, 9))  # ink mass ties up to float noise
    cuts = (distinct[1:] + distinct[:-1]) / 2
    below = np.searchsorted(np.sort(values), cuts, side="right")
    return cuts[np.argmin(np.abs(below - quantile * len(values)))]


def test_thresholds_are_the_train_splits_per_digit_quantiles():
    train = DIGITS("train")
    full = train.batch(len(train))[0]
    raw, labels = captions.measure(full["image"]), full["label"]
    quantiles = {"weight": (1 / 3, 2 / 3), "slant": (1 / 3, 2 / 3), "size": (0.5,)}
    for name, qs in quantiles.items():
        want = [[_cut(raw[name][labels == d], q) for q in qs] for d in range(10)]
        np.testing.assert_allclose(captions.THRESHOLDS[name], want, atol=1e-5)
    ids = captions.attributes(full["image"], labels)
    for name, classes in captions.CLASSES.items():
        for digit in range(10):
            counts = np.bincount(ids[name][labels == digit], minlength=len(classes))
            share = counts / counts.sum()
            assert np.all(np.abs(share - 1 / len(classes)) < 0.03), (name, digit)


def test_every_template_renders_for_every_digit_and_class():
    assert len(captions.TEMPLATES) >= 6 and len(captions.HELDOUT_TEMPLATES) == 2
    fields = [
        {f for _, f, _, _ in string.Formatter().parse(t) if f}
        for t in captions.TEMPLATES
    ]
    assert any("word" in f for f in fields) and any("digit" in f for f in fields)
    counts = {int(captions.stated(t).sum()) for t in captions.TEMPLATES}
    assert {0, 1, 2, 3} <= counts  # some state every attribute, some a subset
    combos = np.stack(np.meshgrid(range(3), range(3), range(2))).reshape(3, -1).T
    for template in captions.TEMPLATES:
        states = captions.stated(template)
        for digit in range(10):
            for combo in combos:
                caption = captions.render(
                    template, digit, dict(zip(captions.ATTRIBUTES, combo))
                )
                words = (captions.DIGIT_WORDS[digit], str(digit))
                assert "{" not in caption and any(w in caption for w in words)
                for name, says, value in zip(captions.ATTRIBUTES, states, combo):
                    named = captions.CLASSES[name][value] in caption
                    assert named == bool(says), (caption, name)


def test_rendering_takes_attribute_names():
    classes = {"weight": 2, "slant": 2, "size": 0}
    assert captions.render(captions.TEMPLATES[0], 7, classes) == (
        "a thick seven leaning right"
    )
    assert captions.render(captions.TEMPLATES[2], 7, classes) == "number seven, small"


def _states_a_heldout_combo(batch: dict) -> np.ndarray:
    out = np.zeros(len(batch["label"]), bool)
    for digit, name, value in captions.HELDOUT_COMBOS:
        says = batch["stated"][:, captions.ATTRIBUTES.index(name)] == 1
        out |= (batch["label"] == digit) & (batch[name] == value) & says
    return out


@pytest.mark.parametrize("split", ["train", "test"])
def test_training_phrasings_never_state_a_heldout_combo(split):
    batch = _visits(split, 4)
    assert not np.isin(batch["template"], captions.HELDOUT_TEMPLATES).any()
    assert not _states_a_heldout_combo(batch).any()
    # Images with a held-out combo stay, captioned without its attribute.
    image_split = DIGITS(split)
    assert len(batch["label"]) == 4 * len(image_split)
    with_combo = np.zeros(len(batch["label"]), bool)
    for digit, name, value in captions.HELDOUT_COMBOS:
        with_combo |= (batch["label"] == digit) & (batch[name] == value)
    assert with_combo.sum() >= 4 * 10


def test_heldout_splits_hold_only_what_they_hold_out():
    phrasings = _visits("heldout_phrasings", 2)
    assert np.isin(phrasings["template"], captions.HELDOUT_TEMPLATES).all()
    assert not _states_a_heldout_combo(phrasings).any()
    combos = _visits("heldout_combos", 2)
    assert not np.isin(combos["template"], captions.HELDOUT_TEMPLATES).any()
    assert _states_a_heldout_combo(combos).all()
    assert set(combos["label"]) == {d for d, _, _ in captions.HELDOUT_COMBOS}
    test_images = len(DIGITS("test"))
    assert len(phrasings["label"]) + len(combos["label"]) == 2 * test_images


def test_unknown_split_names_the_splits():
    with pytest.raises(ValueError, match="heldout_combos"):
        captions.source("validation", DIGITS)


def test_phrasing_is_a_function_of_index_and_visit():
    a, b = captions.source("train", DIGITS), captions.source("train", DIGITS)
    n = len(a)
    for i in (0, 5, n - 1):
        assert a[i]["caption"] == b[i]["caption"]
        assert a[i]["template"] != a[i + n]["template"]  # the next visit
        np.testing.assert_array_equal(a[i]["image"], a[i + n]["image"])
    # Shuffled and repeated as data.py's train pipeline is: epoch 1 visits the
    # same images as epoch 0, each in another phrasing.
    shuffled = a.seed(0).shuffle().repeat()
    epochs = [shuffled[e * n : (e + 1) * n].batch(n)[0] for e in (0, 1)]
    keys = [np.lexsort(e["image"].reshape(n, -1).T) for e in epochs]
    images = [e["image"][k] for e, k in zip(epochs, keys)]
    np.testing.assert_array_equal(images[0], images[1])
    templates = [e["template"][k] for e, k in zip(epochs, keys)]
    assert (templates[0] != templates[1]).mean() > 0.95


def test_train_iterator_resumes_exactly():
    def batches():
        ds = captions.source("train", DIGITS).seed(0).shuffle().repeat()
        options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)
        return iter(ds.batch(16, drop_remainder=True).to_iter_dataset(options))

    a = batches()
    for _ in range(95):  # past the end of the first epoch (1497 / 16)
        next(a)
    state = a.get_state()
    want = [next(a) for _ in range(3)]
    b = batches()
    b.set_state(state)
    for got, expected in zip([next(b) for _ in range(3)], want):
        assert got.keys() == expected.keys()
        for key in got:
            np.testing.assert_array_equal(got[key], expected[key])


@pytest.fixture(scope="module")
def byte_tokenizer():
    from configs import lm_pydoc

    return text.make_tokenizer(lm_pydoc.get_config("smoke").data)


def test_tokenize_pads_masks_and_truncates(byte_tokenizer):
    out = text.fixed_length(["ab", "a thick seven"], byte_tokenizer, max_len=8)
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
        "text_tokens": ((2, 8), np.int32),
        "text_mask": ((2, 8), np.int32),
    }
    assert out["text_tokens"][0].tolist() == [97, 98, 0, 0, 0, 0, 0, 0]
    assert out["text_mask"].tolist() == [[1, 1] + [0] * 6, [1] * 8]
    assert byte_tokenizer.decode(out["text_tokens"][1]) == "a thick "  # truncated


def test_tokenize_encodes_a_caption_as_a_prompt():
    bos = text.Tokenizer(
        "stub",
        300,
        encode=lambda s: np.array([ord(c) for c in s], np.int32),
        decode=lambda ids: "",
        encode_prompt=lambda s: np.array([299] + [ord(c) for c in s], np.int32),
    )
    out = text.fixed_length(["abc"], bos, max_len=3)
    assert out["text_tokens"].tolist() == [[299, 97, 98]]  # BOS kept, tail cut


def test_tokenized_source_batches_into_arrays(byte_tokenizer):
    ds = captions.source("heldout_combos", DIGITS)
    ds = ds.map(captions.tokenize_fn(byte_tokenizer, max_len=64))
    batch = ds.batch(8)[0]
    assert "caption" not in batch
    assert batch["text_tokens"].shape == batch["text_mask"].shape == (8, 64)
    assert batch["stated"].shape == (8, 3) and batch["image"].shape == (8, 8, 8, 1)
    assert all(v.dtype in (np.int32, np.float32) for v in batch.values())
    caption = captions.source("heldout_combos", DIGITS)[0]["caption"]
    row = batch["text_tokens"][0][batch["text_mask"][0] == 1]
    assert byte_tokenizer.decode(row) == caption


def test_coco_captions_under_mock_data():
    """tfds coco_captions: center-cropped, resized images in [-1, 1], one of
    an image's captions per visit, tokenized by the config's tokenizer."""
    import tensorflow_datasets as tfds

    from configs import t2i_coco

    config = t2i_coco.get_config()
    config.data.update(image_size=32, tokenizer="byte")
    with tfds.testing.mock_data(num_examples=3):
        ds = data.make_source(config.data, "train")
        raw = tfds.data_source("coco_captions", split="train")[1]
        first, second = ds[1], ds[1 + len(ds)]  # the same image, the next visit
    assert first["image"].shape == (32, 32, 3) and first["image"].dtype == np.float32
    assert -1 <= first["image"].min() and first["image"].max() <= 1
    np.testing.assert_array_equal(first["image"], second["image"])
    texts = [str(t) for t in raw["captions"]["text"]]
    for element, want in ((first, texts[0]), (second, texts[1 % len(texts)])):
        ids = element["text_tokens"][element["text_mask"] == 1]
        assert bytes(ids.astype(np.uint8)).decode() == want[:120]
    # The central square of the image, resized.
    crop = captions.center_crop(np.full((9, 33, 3), 255, np.uint8), 4)
    np.testing.assert_allclose(crop, 1.0, atol=1e-6)
