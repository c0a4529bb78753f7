"""imagegraph: classify images from S3 with a TensorFlow CNN in Spark and upsert the results
into Amazon Neptune."""

__version__ = "0.1.0"
