"""The graph model (docs/GRAPH.md) as plain records with deterministic ids.

Pure functions: prediction rows and model metadata in, vertex and edge records out. The ids make
every write an idempotent upsert.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from imagegraph.model.artifact import ModelMetadata


@dataclass(frozen=True)
class OwnedEdges:
    """The out-edges that a vertex's upsert replaces: those labelled `label` whose `model`
    property is `model`. The upsert drops every one whose id is not in `keep`, in the same
    request, so a rerun leaves exactly the edges it writes."""

    label: str
    model: str
    keep: tuple[str, ...]


@dataclass(frozen=True)
class VertexRecord:
    """A vertex to upsert: string id, label, single-cardinality properties, and the out-edges
    it owns (None: its upsert touches no edge)."""

    id: str
    label: str
    properties: dict = field(default_factory=dict)
    owned_edges: OwnedEdges | None = None


@dataclass(frozen=True)
class EdgeRecord:
    """An edge to upsert from vertex `out_id` to vertex `in_id`."""

    id: str
    label: str
    out_id: str
    in_id: str
    properties: dict = field(default_factory=dict)


CLASSIFIED_AS = "classified_as"
UNKNOWN = "unknown"
"""The class vertex (`class:unknown`) an image's one classified_as edge of a model goes to when
none of its top-k scores reaches its run's `inference.min_score`: no class is likely."""
ID_SEPARATOR = "|"
_ID_ESCAPES = str.maketrans({"%": "%25", ID_SEPARATOR: "%7C"})


def edge_id(*parts: str) -> str:
    """An edge id from its parts: each part with `%` and `|` percent-escaped (`%25`, `%7C`),
    joined by `|`. No escaped part holds a `|`, so two different parts tuples never give the
    same id (a key may hold `|`; joining the raw parts would make ("a|b", "c") and ("a", "b|c")
    one id). Parts without `%` or `|` read as before: `s3://b/x.png|m@1|cat`."""
    return ID_SEPARATOR.join(part.translate(_ID_ESCAPES) for part in parts)


def class_id(name: str) -> str:
    return f"class:{name}"


def classified_as_id(image_id: str, model_tag: str, class_name: str) -> str:
    """`<image id>|<model>@<version>|<class>` (`edge_id`)."""
    return edge_id(image_id, model_tag, class_name)


def has_class_id(model_id: str, class_name: str) -> str:
    """`<model id>|has_class|<class id>` (`edge_id`)."""
    return edge_id(model_id, "has_class", class_id(class_name))


MODEL_LINEAGE = ("training_input", "data_fingerprint", "imagegraph_version", "trained_at")
"""The keys of metadata.json's `lineage` copied onto the model vertex, those it holds."""


def model_elements(metadata: ModelMetadata, unknown: bool = False
                   ) -> tuple[list[VertexRecord], list[EdgeRecord]]:
    """The model vertex (with the `MODEL_LINEAGE` its metadata has), one vertex per class and
    the model's has_class edges; with `unknown` (a run with a score threshold) the `UNKNOWN`
    class vertex too, which is no class of the model's (no has_class edge)."""
    model = VertexRecord(metadata.model_id, "model", {
        "name": metadata.name, "version": metadata.version, "uri": metadata.uri,
        "input_size": f"{metadata.input_height}x{metadata.input_width}x{metadata.channels}",
        "num_classes": len(metadata.classes),
        **{key: metadata.lineage[key] for key in MODEL_LINEAGE if key in metadata.lineage},
    })
    classes = [VertexRecord(class_id(name), "class", {"name": name})
               for name in (*metadata.classes, *([UNKNOWN] if unknown else []))]
    edges = [EdgeRecord(has_class_id(metadata.model_id, name), "has_class", metadata.model_id,
                        class_id(name)) for name in metadata.classes]
    return [model, *classes], edges


def likely_classes(prediction: Mapping) -> list[tuple[str, float]]:
    """(class, score) of a prediction row's top-k classes (`labels`, `scores`, best first)
    scored at least the row's `min_score` (absent: 0, every one); when none is, the image is
    unknown: [(`UNKNOWN`, its best score)]."""
    threshold = prediction.get("min_score") or 0.0
    likely = [(label, float(score))
              for label, score in zip(prediction["labels"], prediction["scores"])
              if score >= threshold]
    return likely or [(UNKNOWN, float(prediction["scores"][0]))]


def image_vertex(prediction: Mapping, model_tag: str) -> VertexRecord:
    """The image vertex of one prediction row (keys as in the predictions Parquet): the content
    hash of the object's bytes as last read, a fact of the object whatever the model, and
    nothing the id (the URI) or predictions/ already says. What a model's run wrote is on
    that model's classified_as edges (`classified_as_edges`), never on the vertex every model
    shares. It owns the image's classified_as edges of `model_tag`: its upsert drops those
    that are not among the row's likely classes (a rerun with a lower top-k or a higher
    threshold, an overwritten object)."""
    keep = tuple(classified_as_id(prediction["uri"], model_tag, label)
                 for label, _ in likely_classes(prediction))
    return VertexRecord(prediction["uri"], "image", {"sha256": prediction["sha256"]},
                        OwnedEdges(CLASSIFIED_AS, model_tag, keep))


def classified_as_edges(prediction: Mapping, model_tag: str,
                        run_id: str) -> list[EdgeRecord]:
    """One classified_as edge per likely class of a prediction row (`likely_classes`: its
    top-k at or above its threshold, else one to `UNKNOWN` scored with its best score), with its
    score (an image's classes ranked are its edges ordered by score), its model (what
    `OwnedEdges` selects by) and the run that wrote it: the image's facts of one model, which
    another model's runs never overwrite."""
    image_id = prediction["uri"]
    return [
        EdgeRecord(classified_as_id(image_id, model_tag, label), CLASSIFIED_AS, image_id,
                   class_id(label), {"score": score, "model": model_tag, "run_id": run_id})
        for label, score in likely_classes(prediction)
    ]


CONTENT = "content"
HAS_CONTENT = "has_content"
NEAR_DUPLICATE = "near_duplicate"
SIMILAR_TO = "similar_to"
MODEL_LINK_EDGE_LABELS = (NEAR_DUPLICATE, SIMILAR_TO)
"""The edges the link job writes between images, each with the `model` it was found with; it
replaces an image's edges of the model it links (and its has_content edge, the same for every
model) when it links the image again."""


def content_id(sha256: str) -> str:
    """`content:<sha256 of the bytes, hex>`."""
    return f"{CONTENT}:{sha256}"


def content_elements(image_id: str, sha256: str) -> tuple[VertexRecord, EdgeRecord]:
    """The content vertex of bytes hashing to `sha256` and the image's has_content edge to it,
    `<image id>|has_content|content:<sha256>`: every image with the same bytes points to one
    vertex, so a group of n copies costs n edges, not n(n-1)/2."""
    content = VertexRecord(content_id(sha256), CONTENT)
    return content, EdgeRecord(edge_id(image_id, HAS_CONTENT, content.id), HAS_CONTENT,
                               image_id, content.id)


def near_duplicate_edge(image_a: str, image_b: str, distance: int,
                        model_tag: str) -> EdgeRecord:
    """`<image>|near_duplicate|<image>|<name>@<version>`, from the lesser id to the greater (one
    edge per pair and model whichever image found the other), with the Hamming `distance` of
    their perceptual hashes in bits and the model (the hash is computed on model `model_tag`'s
    resized input, so each model's link run finds its own near duplicates)."""
    low, high = sorted((image_a, image_b))
    return EdgeRecord(edge_id(low, NEAR_DUPLICATE, high, model_tag), NEAR_DUPLICATE, low, high,
                      {"distance": int(distance), "model": model_tag})


def similar_to_edge(image_a: str, image_b: str, distance: float,
                    model_tag: str) -> EdgeRecord:
    """`<image>|similar_to|<image>|<name>@<version>`, from the lesser id to the greater, with
    the Euclidean `distance` of the two images' unit-length embeddings of model `model_tag`
    (0: same direction, 2: opposite) and the model (embeddings of different models are not
    comparable; a query selects one)."""
    low, high = sorted((image_a, image_b))
    return EdgeRecord(edge_id(low, SIMILAR_TO, high, model_tag), SIMILAR_TO, low, high,
                      {"distance": float(distance), "model": model_tag})
