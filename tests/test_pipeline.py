"""The tf.data pipeline: eager == tf.data preprocessing, landmarks that follow augmentation,
determinism, and file sharding under tf.distribute."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from kerasface.config import AugmentConfig, DataConfig
from kerasface.data.augment import augment_batch, inverse_transforms, random_params
from kerasface.data.convert import convert
from kerasface.data.pipeline import build_dataset, preprocess_image
from mtfl_fixture import write_tiny_mtfl


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtfl")
    write_tiny_mtfl(root, n_train=40, n_test=6)
    out = root / "records"
    convert("mtfl", str(root), out, crop="nose_centred_150", shards=4, workers=1, progress=False)
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_preprocessing_is_identical_eagerly_and_inside_tf_data(channels):
    rng = np.random.default_rng(0)
    encoded = [tf.io.encode_png(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)) for _ in range(3)]
    eager = [preprocess_image(e, (24, 20), channels).numpy() for e in encoded]
    ds = tf.data.Dataset.from_tensor_slices(tf.stack(encoded)).map(lambda e: preprocess_image(e, (24, 20), channels))
    for a, b in zip(eager, ds):
        assert a.shape == (24, 20, channels)
        np.testing.assert_array_equal(a, b.numpy())


def blob_image(points, size):
    """An image with one bright Gaussian blob per landmark, each in its own colour channel mix."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    image = np.zeros((size, size, 3), np.float32)
    for i, (x, y) in enumerate(points):
        image[..., i % 3] += 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    return np.clip(image, 0, 255)


@pytest.mark.parametrize("rotation", [20, 0])  # the projective warp, and crop_and_resize without rotation
def test_landmarks_follow_the_pixels_through_augmentation(rotation):
    size = 64
    points = np.array([[20, 22], [44, 22], [32, 34], [24, 46], [40, 46]], np.float32)
    images = tf.constant(np.stack([blob_image(points, size)] * 16))
    targets = {"landmarks": tf.constant(np.tile((points / size).reshape(1, 10), (16, 1))),
               "pose": tf.constant([1] * 16, tf.int32)}
    cfg = AugmentConfig(max_rotation=rotation, max_shift=0.08, min_scale=0.85, max_scale=1.15, brightness=0,
                        contrast=0)
    out, moved = augment_batch(images, targets, tf.constant([3, 4], tf.int64), cfg, {"pose": (4, 3, 2, 1, 0)})
    flipped = 0
    for image, lm, pose in zip(out.numpy(), moved["landmarks"].numpy(), moved["pose"].numpy()):
        pts = lm.reshape(5, 2) * size
        for x, y in pts:  # each moved landmark sits on a blob peak
            patch = image[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].max()
            assert patch > 150, (x, y, patch)
        is_flipped = pose == 3
        flipped += is_flipped
        # left eye stays on the image's left after a flip, because the identities swap
        assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]
    assert 0 < flipped < 16


def test_rotation_free_augmentation_samples_the_pixels_the_projective_warp_does():
    height, width, batch = 40, 48, 16
    cfg = AugmentConfig(max_rotation=0, max_shift=0.08, min_scale=0.85, max_scale=1.15, brightness=0, contrast=0)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, height, width, 3)), tf.float32)
    seed = tf.constant([5, 6], tf.int64)
    cropped, _ = augment_batch(images, {}, seed, cfg)
    transforms = inverse_transforms(random_params(batch, cfg, seed), height, width)
    warped = tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms,
                                                   output_shape=tf.constant([height, width]), fill_value=0.0,
                                                   interpolation="BILINEAR", fill_mode="CONSTANT")
    # where the sample lies inside the image both read the same four pixels; they differ only at
    # samples less than a pixel outside it (the warp blends them with the fill value, see augment_batch)
    t = transforms.numpy()
    x = t[:, 0, None] * np.arange(width) + t[:, 2, None]
    y = t[:, 4, None] * np.arange(height) + t[:, 5, None]
    inside = (((y >= 0) & (y <= height - 1))[:, :, None] & ((x >= 0) & (x <= width - 1))[:, None, :])
    assert inside.mean() > 0.7 and (t[:, 0] < 0).any() and (t[:, 0] > 0).any()  # flipped and not
    np.testing.assert_allclose(cropped.numpy()[inside], warped.numpy()[inside], atol=0.01)  # of 255
    assert np.abs(cropped.numpy()[~inside]).max() < 1e-3  # the fill value


@pytest.mark.parametrize("cache", [True, False])  # uncached streams shuffle the encoded records
def test_training_pipeline_shapes_ranges_and_determinism(records, cache):
    data = DataConfig(deterministic=True, shuffle_buffer=64, cache=cache)
    kwargs = dict(image_size=(48, 48), channels=3, batch_size=8, training=True, folder=records, seed=1)
    a = [b for b in build_dataset(data, "train", **kwargs).take(3)]
    b = [b for b in build_dataset(data, "train", **kwargs).take(3)]
    images, targets = a[0]
    assert images.shape == (8, 48, 48, 3) and images.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    assert set(targets) == {"gender", "smile", "glasses", "pose", "landmarks"} and targets["landmarks"].shape == (8, 10)
    for (ia, ta), (ib, tb) in zip(a, b):
        np.testing.assert_array_equal(ia.numpy(), ib.numpy())
        np.testing.assert_array_equal(ta["landmarks"].numpy(), tb["landmarks"].numpy())
    c = next(iter(build_dataset(data, "train", **{**kwargs, "seed": 2})))
    assert not np.array_equal(c[0].numpy(), a[0][0].numpy())


def test_evaluation_pipeline_reads_each_record_once_in_order(records):
    data = DataConfig(augment=AugmentConfig())
    ds = build_dataset(data, "test", image_size=(32, 32), channels=1, batch_size=4, training=False, folder=records)
    batches = list(ds)
    assert [int(b[0].shape[0]) for b in batches] == [4, 2] and batches[0][0].shape[-1] == 1


def test_distributed_file_sharding_splits_files_between_workers(records):
    data = DataConfig(cache=False)

    def sources(pipeline_id):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2)
        ds = build_dataset(data, "test", image_size=(16, 16), channels=3, batch_size=64, training=False,
                           folder=records, input_context=ctx)
        return sum(int(b[0].shape[0]) for b in ds)

    assert sources(0) + sources(1) == 6 and sources(0) > 0 and sources(1) > 0


def test_usable_with_distribute_datasets_from_function(records):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    data = dataclasses.replace(DataConfig(), shuffle_buffer=16)

    def fn(ctx):
        return build_dataset(data, "train", image_size=(16, 16), channels=3, training=True, folder=records,
                             batch_size=ctx.get_per_replica_batch_size(8), input_context=ctx)

    batch = next(iter(strategy.distribute_datasets_from_function(fn)))
    images = strategy.experimental_local_results(batch[0])
    assert len(images) == 2 and all(x.shape == (4, 16, 16, 3) for x in images)


@pytest.mark.parametrize("training", [True, False])
def test_no_pipeline_starts_an_autotuning_thread(records, training):
    # TF 2.21: deleting an iterator whose autotuner sleeps can block for up to 60 s (pipeline_options)
    ds = build_dataset(DataConfig(), "train", image_size=(16, 16), channels=3, batch_size=4, training=training,
                       folder=records)
    assert ds.options().autotune.enabled is False
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF


def test_jpeg_decoding_matches_pillow_so_crops_decoded_elsewhere_agree():
    import io

    from PIL import Image

    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=85)
    pil = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), np.float32)
    np.testing.assert_array_equal(preprocess_image(tf.constant(buffer.getvalue()), (40, 56), 3).numpy(), pil)


@pytest.mark.parametrize("channels,size", [(3, (48, 48)), (1, (60, 60)), (3, (112, 96)), (3, (150, 150))])
def test_training_export_and_predict_preprocess_a_crop_to_identical_pixels(channels, size):
    # the training pipeline (decode + to_model_input), the export graph's float input (per head)
    # and predict's model_inputs all go through one function: same crop, same pixels
    from kerasface.export.graph import ServingGraph
    from kerasface.predict.geometry import model_inputs

    crop = np.random.default_rng(3).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    trained = preprocess_image(tf.io.encode_png(crop), size, channels).numpy()
    predicted = model_inputs([crop], size, channels)[0]

    class Head:  # what ServingGraph._to_head reads of a head
        pass

    head = Head()
    head.size, head.channels = size, channels
    served = ServingGraph._to_head(tf.constant(crop[None].astype(np.float32)), head).numpy()[0]
    assert trained.shape == predicted.shape == served.shape == (*size, channels)
    np.testing.assert_array_equal(trained, predicted)
    np.testing.assert_array_equal(trained, served)
