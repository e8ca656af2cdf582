"""beam: the ingestion job (Apache Beam): UrbanSound8K audio + CSV → per-fold TFRecord shards."""
