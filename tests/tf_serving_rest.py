"""TF Serving's REST predict layer, run in the test process on the real SavedModel.

What the SageMaker container's TF Serving (2.19) does with the body `input_handler` returns:
parse the JSON, take the columnar "inputs" by name, turn {"b64": …} into bytes (accepted only for
DT_STRING inputs), call the signature named by "signature_name", and answer {"outputs": {name:
value}} (status 200) or {"error": message} (400 for a bad input). `batch` does what its batching
does with concurrent requests of one signature: concatenate the same-named inputs along dim 0
(refused unless they match in every later dim: TF Serving would ask for pad_variable_length_inputs,
which the container never sets), run once, and give each request its own rows back. The answers
come back as `Response` objects: `.status_code` and `.content`, what output_handler gets from the
container's requests.post."""
from __future__ import annotations

import base64
import json

import numpy as np
from container_context import Response  # what `requests.post(context.rest_uri, data=...)` hands output_handler


def _inputs(loaded, request: dict):
    import tensorflow as tf

    signature = loaded.signatures[request.get("signature_name", "serving_default")]
    specs = signature.structured_input_signature[1]
    if set(request["inputs"]) != set(specs):
        raise ValueError(f"inputs {sorted(request['inputs'])} do not match the signature's {sorted(specs)}")
    arrays = {}
    for name, spec in specs.items():
        value = request["inputs"][name]
        if spec.dtype == tf.string:
            arrays[name] = np.array([base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode()
                                     for v in value], dtype=object)
        else:
            if any(isinstance(v, dict) for v in np.ravel(np.array(value, dtype=object))):
                raise ValueError(f"b64 values are accepted only for DT_STRING inputs, not {name!r}")
            arrays[name] = np.array(value, dtype=spec.dtype.as_numpy_dtype)
    sizes = {a.shape[0] for a in arrays.values()}
    if len(sizes) != 1:
        raise ValueError("all inputs of one request need the same size in dim 0")
    return signature, arrays


def _run(signature, arrays: dict) -> dict[str, np.ndarray]:
    import tensorflow as tf

    outputs = signature(**{name: tf.constant(a) for name, a in arrays.items()})
    return {name: value.numpy() for name, value in outputs.items()}


def _json_outputs(outputs: dict[str, np.ndarray]) -> bytes:
    def as_json(value: np.ndarray):  # DT_STRING outputs come back as text
        return np.vectorize(bytes.decode, otypes=[object])(value).tolist() if value.dtype == object else value.tolist()

    return json.dumps({"outputs": {name: as_json(value) for name, value in outputs.items()}}).encode()


def predict(loaded, body: str | bytes) -> Response:
    """One request, as TF Serving's REST predict answers it."""
    import tensorflow as tf

    try:
        signature, arrays = _inputs(loaded, json.loads(body))
        return Response(200, _json_outputs(_run(signature, arrays)))
    except (ValueError, KeyError, tf.errors.InvalidArgumentError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        return Response(400, json.dumps({"error": message}).encode())


def batch(loaded, bodies: list[str | bytes]) -> list[Response]:
    """Concurrent requests merged into one signature call along dim 0, then split back."""
    requests = [json.loads(body) for body in bodies]
    names = {r.get("signature_name", "serving_default") for r in requests}
    if len(names) != 1:
        raise ValueError(f"only requests of one signature batch together, got {sorted(names)}")
    parsed = [_inputs(loaded, r) for r in requests]
    signature = parsed[0][0]
    merged = {}
    for name in parsed[0][1]:
        parts = [arrays[name] for _, arrays in parsed]
        if len({p.shape[1:] for p in parts}) != 1:
            raise ValueError(f"input {name!r} has shapes {[p.shape for p in parts]}: tensors of different "
                             "shapes beyond dim 0 cannot be batched without pad_variable_length_inputs")
        merged[name] = np.concatenate(parts)
    outputs = _run(signature, merged)
    sizes = [next(iter(arrays.values())).shape[0] for _, arrays in parsed]
    bounds = np.cumsum([0] + sizes)
    return [Response(200, _json_outputs({name: value[start:end] for name, value in outputs.items()}))
            for start, end in zip(bounds[:-1], bounds[1:])]
