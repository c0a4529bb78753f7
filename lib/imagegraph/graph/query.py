"""`python -m imagegraph.graph.query`: what the graph holds about an image, a class or a run, for
people who check results without writing Gremlin.

    python -m imagegraph.graph.query --config conf/local.yaml image s3://bucket/key [--top 10]
    python -m imagegraph.graph.query --config conf/local.yaml class NAME [--model NAME@VERSION] \
        [--top 20]
    python -m imagegraph.graph.query --config conf/local.yaml run RUN_ID [--top 20]

arguments -> the jobs' configuration file, `--set` overrides and `--gremlin-endpoint` (so the
same endpoint, and the same SigV4 signing of the handshake when `graph.iam_auth` asks for it)
-> one `remote_traversal` -> the reads of the docs/GRAPH.md "Graph model", each bounded by `--top`
on the server -> plain lines on stdout.

Exit codes: 0 found; 1 the graph holds no such image, class or run; 2 bad arguments or
configuration, or a graph that cannot be read (one line on stderr).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence
from urllib.parse import urlparse

from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from gremlin_python.process.traversal import Order

from imagegraph import __version__
from imagegraph.cli import config_from_args, run_command
from imagegraph.errors import JobError
from imagegraph.graph.connection import remote_traversal
from imagegraph.graph.elements import (
    CLASSIFIED_AS,
    HAS_CONTENT,
    NEAR_DUPLICATE,
    SIMILAR_TO,
    class_id,
)
from imagegraph.graph.reads import READS
from imagegraph.graph.retry import Recovery, classify, stop_line

PROG = "python -m imagegraph.graph.query"


class NotInGraph(Exception):
    """The graph holds no such image, class or run; the message says which, on one line."""


def query_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of `python -m imagegraph.graph.query` (`imagegraph-query`)."""
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, parents=[_connection_options()],
        description="Read what the graph (Amazon Neptune or Gremlin Server) holds about an "
                    "image, a class or a run, with the jobs' configuration and signing.",
        epilog="exit codes: 0 found; 1 not in the graph; 2 bad arguments, configuration, or "
               "the graph cannot be read; 4 crashed")
    parser.set_defaults(config=None, overrides=[], gremlin_endpoint=None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # the connection options are taken before or after the command
    connection = [_connection_options()]
    image = commands.add_parser(
        "image", help="an image's classes with scores, the images with the same content, its "
                      "near duplicates and its most similar images",
        parents=connection, allow_abbrev=False)
    image.add_argument("uri", help="the image's id, its canonical URI s3://bucket/key")
    image.add_argument("--model", metavar="NAME@VERSION",
                       help="only this model's classes and similar images (default: all)")
    image.add_argument("--top", type=_positive, default=10, metavar="N",
                       help="at most N images per section (default 10)")
    by_class = commands.add_parser("class", help="a class's images, best score first",
                                   parents=connection, allow_abbrev=False)
    by_class.add_argument("name", help="the class name, as in labels.json")
    by_class.add_argument("--model", metavar="NAME@VERSION",
                          help="only this model's classifications (default: all)")
    by_class.add_argument("--top", type=_positive, default=20, metavar="N",
                          help="at most N images (default 20)")
    run = commands.add_parser("run", help="what an inference run wrote: its images and edges",
                              parents=connection, allow_abbrev=False)
    run.add_argument("run_id", help="the run id, as the run summary prints it")
    run.add_argument("--top", type=_positive, default=20, metavar="N",
                     help="list at most N of its images (default 20)")
    return parser


def _connection_options() -> argparse.ArgumentParser:
    """--config, --set and --gremlin-endpoint, absent from the namespace unless given, so that
    the same option after the command does not reset one given before it."""
    options = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    options.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                         help="the jobs' YAML configuration file (see conf/local.yaml); "
                              "default: built-in defaults only")
    options.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append",
                         default=argparse.SUPPRESS, dest="overrides",
                         help="override a configuration key, e.g. --set graph.iam_auth=off")
    options.add_argument("--gremlin-endpoint", metavar="URL", default=argparse.SUPPRESS,
                         help="ws://HOST:PORT/gremlin or wss://... (config: graph.endpoint)")
    return options


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number greater than 0, got {value}")
    return value


def image_lines(g: GraphTraversalSource, uri: str, model: str | None, top: int) -> list[str]:
    """What the graph holds about the image vertex `uri`: its content hash and each model's
    last run (its classified_as edges' run ids), its classes (best first), the images with
    the same bytes, its near duplicates (nearest first) and its most similar images; at most
    `top` per section."""
    found = g.V(uri).has_label("image").element_map("sha256").to_list()
    if not found:
        raise NotInGraph(f"no image vertex {uri}")
    edges = g.V(uri).out_e(CLASSIFIED_AS)
    if model:
        edges = edges.has("model", model)
    runs = edges.clone().group().by("model").by(__.values("run_id").dedup().fold()).next()
    written = ", ".join(f"run {run} ({name})" for name, ids in sorted(runs.items())
                        for run in sorted(ids))
    lines = [f"image {uri}", f"  sha256 {found[0].get('sha256', '-')}, "
                             f"last written by {written or '-'}"]
    classes = (edges.order().by("score", Order.desc).limit(top)
               .project("class", "score", "model")
               .by(__.in_v().values("name")).by("score").by("model").to_list())
    lines.append(f"  classes ({len(classes)}):")
    lines += [f"    {c['score']:.3f}  {c['class']}  ({c['model']})" for c in classes]
    same = sorted(set(g.V(uri).out(HAS_CONTENT).in_(HAS_CONTENT).id_().to_list()) - {uri})
    lines.append(f"  same content ({len(same)}):")
    lines += [f"    {other}" for other in same[:top]]
    near = _neighbours(g, uri, NEAR_DUPLICATE, None, top)
    lines.append(f"  near duplicates ({len(near)}, perceptual-hash distance in bits of 64):")
    lines += [f"    {int(distance):>5}  {other}" for distance, other, _ in near]
    similar = _neighbours(g, uri, SIMILAR_TO, model, top)
    lines.append(f"  most similar ({len(similar)}, embedding distance 0..2):")
    lines += [f"    {distance:.3f}  {other}  ({edge_model})"
              for distance, other, edge_model in similar]
    return lines


def _neighbours(g: GraphTraversalSource, uri: str, label: str, model: str | None,
                top: int) -> list[tuple[float, str, str | None]]:
    """(distance, other image, model or None) over the image's `label` edges in either
    direction, nearest first, at most `top`."""
    edges = g.V(uri).both_e(label)
    if model:
        edges = edges.has("model", model)
    found = (edges.order().by("distance").limit(top)
             .project("out", "in", "distance", "model")
             .by(__.out_v().id_()).by(__.in_v().id_()).by("distance")
             .by(__.coalesce(__.values("model"), __.constant(""))).to_list())
    return sorted((e["distance"], e["in"] if e["out"] == uri else e["out"], e["model"] or None)
                  for e in found)


def class_lines(g: GraphTraversalSource, name: str, model: str | None, top: int) -> list[str]:
    """The images classified as `name` (of `model`, or of every model), best score first, at
    most `top`."""
    vertex = class_id(name)
    if not g.V(vertex).has_label("class").has_next():
        raise NotInGraph(f"no class vertex {vertex}")
    edges = g.V(vertex).in_e(CLASSIFIED_AS)
    if model:
        edges = edges.has("model", model)
    images = (edges.order().by("score", Order.desc).limit(top)
              .project("image", "score", "model")
              .by(__.out_v().id_()).by("score").by("model").to_list())
    lines = [f"class {name}{f' ({model})' if model else ''}: "
             f"{len(images)} image(s), best score first{f' (at most {top})' if images else ''}"]
    lines += [f"  {i['score']:.3f}  {i['image']}  ({i['model']})" for i in images]
    return lines


def run_lines(g: GraphTraversalSource, run_id: str, top: int) -> list[str]:
    """What run `run_id` wrote and the graph still holds: the images with its classified_as
    edges, those edges by model, and up to `top` of the images."""
    images = g.E().has(CLASSIFIED_AS, "run_id", run_id).out_v().dedup().count().next()
    if not images:
        raise NotInGraph(f"no classified_as edge of run {run_id}")
    edges = (g.E().has(CLASSIFIED_AS, "run_id", run_id).group_count().by("model")
             .next())
    sample = sorted(g.E().has(CLASSIFIED_AS, "run_id", run_id).out_v().dedup().limit(top)
                    .id_().to_list())
    lines = [f"run {run_id}: {images} image(s), "
             + ", ".join(f"{count} classified_as edge(s) of {model}"
                         for model, count in sorted(edges.items()))]
    lines.append(f"  images ({len(sample)} of {images}):")
    lines += [f"    {uri}" for uri in sample]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Answer the query in the arguments `argv` (default: the process's); the exit code."""
    return run_command(PROG, query_parser, _query, argv)


def _query(args: argparse.Namespace, prog: str) -> int:
    config = config_from_args(args)
    try:
        with remote_traversal(config.graph) as g:
            if args.command == "image":
                lines = image_lines(g, args.uri, args.model, args.top)
            elif args.command == "class":
                lines = class_lines(g, args.name, args.model, args.top)
            else:
                lines = run_lines(g, args.run_id, args.top)
    except NotInGraph as missing:
        print(f"{prog}: {missing}", file=sys.stderr)
        return 1
    except JobError:
        raise
    except Exception as exc:  # connection, handshake, server errors: one line
        failure = classify(exc)
        if failure.recovery is Recovery.STOP:  # permissions: the writers' line
            raise JobError(stop_line(failure, config.graph, activity=READS)) from None
        local = urlparse(config.graph.endpoint).hostname in ("127.0.0.1", "localhost")
        raise JobError(f"cannot read the graph at {config.graph.endpoint}: {failure.message}"
                       + ("; `make services-up` starts the local one" if local else "")) from None
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
