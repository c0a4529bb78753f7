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
)
