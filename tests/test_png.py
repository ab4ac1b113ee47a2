"""The one PNG encoder: pixels rounded (not truncated), and one image the same
bytes in TensorBoard, a sample file and the server's image response."""

import base64
import io

import numpy as np

from gen_jax import metrics, png, sample


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def _served(images: np.ndarray) -> bytes:
    """The first image of a POST /v1/images/generations answered with `images`
    by a stand-in batcher."""
    from fastapi.testclient import TestClient

    from gen_jax.deploy import app, image_routes, prometheus

    class Batcher:
        ready, metrics, max_batch, shape = True, prometheus.serving(), 1, (8, 8, 1)
        num_classes, steps, guidance, default_guidance = 0, None, None, 1.0
        tokenizer = None  # no text conditioning

        def submit(self, job):
            job.done(images[: job.count])

    client = TestClient(app.make_app(Batcher(), image_routes.add, model_name="m"))
    response = client.post("/v1/images/generations", json={"prompt": ""})
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def test_pixels_round_to_the_nearest_level():
    # (x + 1) * 127.5 = 0.6, 127.4, 127.6, 254.6 and the clipped ends.
    x = np.asarray([0.6, 127.4, 127.6, 254.6, -10.0, 300.0]) / 127.5 - 1
    np.testing.assert_array_equal(png.to_uint8(x), [1, 127, 128, 255, 0, 255])


def test_one_image_is_the_same_bytes_in_tensorboard_a_sample_file_and_http(
    tmp_path,
):
    from tensorboard.backend.event_processing import event_accumulator

    # Every level's midpoint above and below, where truncation would differ.
    levels = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1) * 4 + 0.6
    images = levels / 127.5 - 1
    grid = metrics.image_grid(images)  # what the samples evaluator logs

    writer = metrics.Writer(str(tmp_path))
    writer.write_images(3, {"eval/samples/samples": grid})
    writer.close()
    events = event_accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    (event,) = events.Images("eval/samples/samples")
    logged = (tmp_path / "eval_samples_samples_3.png").read_bytes()
    prefix = sample.write_images(str(tmp_path), images, "s")
    with open(prefix + ".png", "rb") as f:
        sampled = f.read()
    assert event.encoded_image_string == logged == sampled == png.encode(grid)

    served = _served(images)
    assert served == png.encode(images[0]) == png.encode(png.to_uint8(images[0]))
    pixels = _decode(served)
    np.testing.assert_array_equal(pixels, levels[0, ..., 0].round())
    # The grid enlarges each pixel 4x inside a 1-pixel border: the same levels.
    np.testing.assert_array_equal(_decode(sampled)[1:33:4, 1:33:4], pixels)
