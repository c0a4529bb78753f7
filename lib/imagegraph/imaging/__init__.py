"""Bytes to pixels: decoding the formats users upload within safety limits, perceptual hashes."""
