"""models: the log-mel frontend layers, architectures, training, evaluation and export."""
