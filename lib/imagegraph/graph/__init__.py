"""Writing results into a Gremlin graph (Amazon Neptune, or Gremlin Server locally)."""
