"""The linking stage: near-duplicate and similar images found among classified images and
written into the graph. `job.run_link` is the entry point."""
