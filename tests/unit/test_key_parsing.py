"""Object keys taken from canonical URIs exactly, and which listed keys a prefix listing keeps:
pure functions, over keys from every class of S3's object key naming guidelines."""
import unicodedata

import pytest

from imagegraph.storage.s3_listing import PrefixListing, prefix_listing
from imagegraph.storage.sources import bucket_and_key, scheme_of

# S3's object key naming guidelines: safe characters, characters that need special handling,
# characters to avoid; plus the shapes URL parsers and Hadoop's Path reinterpret.
SAFE_KEYS = ["photos/Abc-123_x.y*z'(1)!.jpg"]
SPECIAL_KEYS = ["a&b$c@d=e;f:g+h i,j?k.jpg", "img?v=2.jpg", "q?x=1&y=2#frag.jpg",
                "tab\there.jpg", "ctl\x01\x1f\x7f.jpg", "nul\x00.jpg", "cr\rlf\n.jpg"]
AVOID_KEYS = ["back\\slash{}^%`[]\"<>~#|.jpg", "a#b.jpg", "pct%2Fnot-decoded%zz.jpg",
              "high\x80\xff.jpg"]
SHAPED_KEYS = ["odd//double.jpg", "/leading.jpg", "//", "x/../y.jpg", "../up.jpg", "./here.jpg",
               "ünïcödé/日本語 ✓.jpg", "emoji😀.jpg", "trailing-dot.", " spaced ", "img", "a"]
# keys that look the same: NFC and NFD of "café.jpg" (S3 compares bytes, not characters),
# and one with a trailing space
LOOKALIKE_KEYS = [unicodedata.normalize("NFC", "café.jpg"),
                  unicodedata.normalize("NFD", "café.jpg"), "café.jpg "]
KEYS = SAFE_KEYS + SPECIAL_KEYS + AVOID_KEYS + SHAPED_KEYS + LOOKALIKE_KEYS


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("scheme", ["s3", "s3a", "s3n"])
def test_bucket_and_key_keeps_every_key_exactly(scheme, key):
    assert bucket_and_key(f"{scheme}://bucket/{key}") == ("bucket", key)


def test_lookalike_keys_stay_distinct():
    assert len(set(LOOKALIKE_KEYS)) == 3
    assert [bucket_and_key(f"s3://b/{key}")[1] for key in LOOKALIKE_KEYS] == LOOKALIKE_KEYS


def test_bucket_and_key_does_not_url_parse():
    # what urlsplit made of these: 'img', 'a', 'x.jpg', and a key with '%2F' decoded
    assert bucket_and_key("s3://b/img?v=2.jpg") == ("b", "img?v=2.jpg")
    assert bucket_and_key("s3://b/a#b.jpg") == ("b", "a#b.jpg")
    assert bucket_and_key("s3://b//x.jpg") == ("b", "/x.jpg")
    assert bucket_and_key("s3://b/a%20b.jpg") == ("b", "a%20b.jpg")
    assert bucket_and_key("s3://b") == ("b", "")
    assert bucket_and_key("s3://b/") == ("b", "")


def test_bucket_and_key_of_other_schemes():
    assert bucket_and_key("file:///tmp/x.png") == ("", "/tmp/x.png")
    assert bucket_and_key("file:///tmp/a?b#c.png") == ("", "/tmp/a?b#c.png")
    assert bucket_and_key("http://host/x") == ("", "http://host/x")
    assert bucket_and_key("no-scheme/x") == ("", "no-scheme/x")


@pytest.mark.parametrize("uri, scheme", [
    ("s3://b/k", "s3"), ("S3A://b/k", "s3a"), ("file:///x", "file"), ("key/with://inside", ""),
    ("plain", ""), ("s3://b[/k?#", "s3"),
])
def test_scheme_of(uri, scheme):
    assert scheme_of(uri) == scheme


@pytest.mark.parametrize("uri, bucket, prefix", [
    ("s3a://b/photos/", "b", "photos/"), ("s3a://b/photos", "b", "photos/"),
    ("s3a://b", "b", ""), ("s3a://b/", "b", ""), ("s3://b//", "b", "/"),
    ("s3://b/a?b#c/", "b", "a?b#c/"),
])
def test_prefix_listing_names_the_folder(uri, bucket, prefix):
    listing = prefix_listing(uri, "*", True)
    assert (listing.bucket, listing.prefix) == (bucket, prefix)


@pytest.mark.parametrize("key", KEYS)
def test_every_key_is_kept_and_named_exactly(key):
    listing = PrefixListing("bucket", "", "*", True)
    assert listing.keeps(key, 10)
    assert listing.uri(key) == f"s3://bucket/{key}"
    assert bucket_and_key(listing.uri(key)) == ("bucket", key)


def test_glob_matches_the_file_name_case_sensitively():
    listing = PrefixListing("b", "in/", "*.jpg", True)
    assert listing.keeps("in/x.jpg", 1)
    assert listing.keeps("in/deep/img?v=2.jpg", 1)
    assert listing.keeps("in/odd//a#b.jpg", 1)
    assert not listing.keeps("in/x.JPG", 1)
    assert not listing.keeps("in/x.jpg/readme", 1)  # the name is after the last '/'
    assert PrefixListing("b", "", "[!.]*", True).keeps("a/b", 1)
    assert not PrefixListing("b", "", "[!.]*", True).keeps("a/.hidden", 1)


def test_folder_markers_are_not_objects_but_keys_ending_in_slash_with_bytes_are():
    listing = PrefixListing("b", "", "*", True)
    assert not listing.keeps("photos/", 0)
    assert listing.keeps("photos/", 5)
    assert listing.keeps("empty.jpg", 0)  # zero bytes: listed, then dead-lettered as empty


def test_the_scheme_is_only_what_precedes_the_first_separator():
    assert scheme_of("s3://b/a://b.jpg") == "s3"
    assert scheme_of("S3A://b/k") == "s3a"
    assert scheme_of("/local/a://b") == ""
