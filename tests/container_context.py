"""The request context the SageMaker TensorFlow Serving container hands its handlers, and the
handlers' round trip the container makes (input_handler → TF Serving → output_handler).

`Context` has the fields of the container's tfs_utils.Context (sagemaker-tensorflow-serving-container).
Standard library only: the isolated interpreter of tests/test_container_handler.py loads this file
too (by path), beside the unpacked package and nothing else."""
from __future__ import annotations

import collections
import io
import json

Context = collections.namedtuple(
    "Context", "model_name model_version method rest_uri grpc_port channel custom_attributes "
               "request_content_type accept_header content_length")


def context(content_type: str | None, attributes: str | None = None) -> Context:
    """The context of one invocation with this content type and X-Amzn-SageMaker-Custom-Attributes."""
    return Context("model", None, "predict", "http://localhost:8501/v1/models/model:predict", 9000, None,
                   attributes, content_type, "application/json", None)


class Response:
    """What the container's `requests.post(context.rest_uri, data=...)` hands output_handler."""

    def __init__(self, status_code: int, content: bytes):
        self.status_code, self.content = status_code, content


def round_trip(inference, loaded, body: bytes, content_type: str, attributes: str | None = None) -> dict:
    """The container's answer (parsed JSON) to one request: `inference`'s input_handler, TF Serving's
    REST predict on the SavedModel `loaded` (tests/tf_serving_rest.py), then its output_handler."""
    import tf_serving_rest

    ctx = context(content_type, attributes)
    response = tf_serving_rest.predict(loaded, inference.input_handler(io.BytesIO(body), ctx))
    answer, _ = inference.output_handler(response, ctx)
    return json.loads(answer)
