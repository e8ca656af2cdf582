"""serving: inference handlers, model.tar.gz packaging, local endpoint, SageMaker deploy, client."""
