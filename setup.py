"""Installs the `imagegraph` package from lib/. Runtime pins live in requirements.txt."""
from pathlib import Path

from setuptools import find_packages, setup

requirements = [line.strip() for line in Path(__file__).with_name("requirements.txt")
                .read_text().splitlines() if line.strip() and not line.startswith("#")]

setup(
    name="imagegraph",
    version="0.1.0",
    description="Classify images from S3 with a TensorFlow CNN in Spark; upsert into Neptune",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"imagegraph": ["fairscheduler.xml"]},
    python_requires=">=3.11,<3.12",
    install_requires=requirements,
    # the same main functions as `spark-submit jobs/<job>.py` and `python -m ...`
    entry_points={"console_scripts": [
        "imagegraph-train = imagegraph.train.command:main",
        "imagegraph-infer = imagegraph.infer.command:main",
        "imagegraph-link = imagegraph.link.command:main",
        "imagegraph-query = imagegraph.graph.query:main",
        "imagegraph-status = imagegraph.runs.status:main",
        "imagegraph-emr = imagegraph.emr.command:main",
    ]},
)
