"""`us8k train --mixed-precision`, proven on a trained and exported model.

Under the mixed_float16 policy the hidden layers compute in float16 with float32 weights (the
master copies the optimiser updates), while the log-mel frontend and the softmax stay float32.
The run's checkpoint keeps each layer's policy, so `us8k export` serves the same float16 layers:
the SavedModel's graph convolves in half precision and still answers float32 probabilities that
sum to 1 and agree with a float32 copy of the same weights to float16's precision.
"""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from trained_run import records_once

import us8k
from models.architectures import build_model
from tfdata import contract as c
from tfdata.layout import SERVING_SIGNATURE, serving_inputs

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    records, run, export = records_once(tmp_path_factory, {1: 8, 2: 4, 3: 4}), root / "run", root / "export"
    assert us8k.main(["train", "--records", str(records), "--output", str(run), "--val-fold", "2", "--test-fold", "3",
                      "--models", "tiny", "--epochs", "1", "--batch-size", "4", "--mixed-precision",
                      "--skip-evaluate", "--verbose", "0"]) == 0
    assert keras.mixed_precision.global_policy().name == "float32"  # training restored the global policy
    assert us8k.main(["export", str(run), "--output", str(export)]) == 0
    model = keras.models.load_model(run / "checkpoints" / "tiny" / "best.keras", compile=False)
    return {"run": run, "export": export, "model": model}


def clips():
    rng = np.random.default_rng(0)
    t = np.arange(c.CLIP_SAMPLES) / c.SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    return np.stack([tone, 0.05 * rng.standard_normal(c.CLIP_SAMPLES)]).astype(np.float32)


def test_the_run_records_mixed_precision(mixed_run):
    selection = json.loads((mixed_run["run"] / "selection.json").read_text())
    config = json.loads((mixed_run["run"] / "config.json").read_text())["config"]
    assert selection["mixed_precision"] is True and config["mixed_precision"] is True


def test_hidden_layers_compute_in_float16_with_float32_weights(mixed_run):
    model = mixed_run["model"]
    hidden = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
              and layer.name != "probabilities"]
    assert hidden and all(layer.compute_dtype == "float16" for layer in hidden)
    assert all(layer.variable_dtype == "float32" for layer in hidden)
    assert all(weight.dtype == "float32" for weight in model.weights)
    assert model.get_layer("frontend").compute_dtype == "float32"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    conv = next(layer for layer in hidden if isinstance(layer, keras.layers.Conv2D))
    inside = keras.Model(model.inputs, [model.get_layer("frontend").output, conv.output, model.outputs[0]])
    features, feature_map, probabilities = inside([clips()], training=False)
    assert features.dtype == tf.float32  # the log-mel frontend
    assert feature_map.dtype == tf.float16  # what the first convolution computed
    assert probabilities.dtype == tf.float32
    assert model.predict(clips(), verbose=0).dtype == np.float32  # Keras's predict too


def half_precision_ops(function):
    """Op types in `function`'s graph and every function it calls that compute in float16."""
    graph = function.graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return {n.op for n in nodes if "T" in n.attr and n.attr["T"].type == tf.float16.as_datatype_enum}


def test_the_export_serves_float32_answers_from_float16_layers(mixed_run):
    loaded = tf.saved_model.load(str(mixed_run["export"] / "model" / "1"))
    serve = loaded.signatures[SERVING_SIGNATURE]
    assert {"Conv2D", "BiasAdd", "Relu", "MaxPool"} <= half_precision_ops(serve)  # the served network: float16
    waveforms = clips()
    out = serve(**serving_inputs(tf.constant(waveforms), tf.constant([c.CLIP_SAMPLES] * 2, tf.int32)))
    probabilities = out["probabilities"]
    assert probabilities.dtype == tf.float32
    probabilities = probabilities.numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    trained = mixed_run["model"]  # the same weights in a float32 model
    reference = build_model("tiny", np.zeros(c.FRONTEND.n_mels), np.ones(c.FRONTEND.n_mels),
                            num_classes=len(c.URBANSOUND8K_CLASSES))  # records without a manifest
    assert all(layer.compute_dtype == "float32" for layer in reference.layers)
    reference.set_weights(trained.get_weights())
    expected = keras.ops.convert_to_numpy(reference(waveforms, training=False))
    np.testing.assert_allclose(probabilities, expected, atol=1e-2)  # float16's ~3 significant digits
