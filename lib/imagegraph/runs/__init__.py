"""What every run keeps about itself: its id, its lease on a shard, its progress and its report."""
