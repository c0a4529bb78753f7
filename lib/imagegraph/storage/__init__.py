"""Where objects and outputs live: Hadoop file systems, object URIs, reading objects, selecting
a run's objects (prefix listing, manifest, S3 Inventory, shards) and committing outputs."""
