# imagegraph: every step a fresh clone needs, from an empty machine with Python 3.11, Java 17,
# Maven and Go. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYSPARK_JARS = $(shell ls -d $(VENV)/lib/python3*/site-packages/pyspark/jars 2>/dev/null)

help: ## list the targets
	@awk -F':.*## ' '/^[a-z-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: help install jars yarn-jars toxiproxy package lock services-up services-down cluster-up \
	cluster-down yarn-up yarn-down \
	demo cluster-demo yarn-demo demo-finetune test lint unit integration mutation bench bench-train clean

install: $(VENV)/.installed ## the virtualenv with the pinned stack and the dev tools
$(VENV)/.installed: requirements.txt requirements-dev.txt setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else \
	    "imagegraph needs Python 3.11 (the pinned TensorFlow and EMR 7 nodes), found " + sys.version.split()[0])'
	@java -version 2>&1 | awk -F'"' '/version/ {split($$2, v, "."); if (v[1] < 17) {print "imagegraph needs Java 17, found " $$2; exit 1}}'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Gremlin Server's classpath, and the s3a connector copied into pyspark's own jars so that a
# plain `spark-submit` reads s3a:// (EMR ships its own connector). Maven's output goes to
# build/maven.log, shown only when it fails.
jars: build/.jars ## Gremlin Server's classpath and the s3a connector (Maven)
build/.jars: $(VENV)/.installed dev/maven/gremlin-server/pom.xml dev/maven/spark-s3a/pom.xml
	rm -rf build/gremlin-server build/spark-s3a
	mkdir -p build
	mvn --batch-mode -f dev/maven/gremlin-server/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/build/gremlin-server \
	    > build/maven.log 2>&1 || (cat build/maven.log; exit 1)
	mvn --batch-mode -f dev/maven/spark-s3a/pom.xml dependency:copy-dependencies \
	    -DoutputDirectory=$(CURDIR)/build/spark-s3a >> build/maven.log 2>&1 \
	    || (cat build/maven.log; exit 1)
	cp build/spark-s3a/*.jar $(PYSPARK_JARS)/
	touch $@

# The local YARN and HDFS cluster's Hadoop 3.3.4 jars (dev/yarn_cluster.py), into build/hadoop.
yarn-jars: build/.hadoop-jars ## Hadoop's daemons for the local YARN and HDFS cluster (Maven)
build/.hadoop-jars: dev/maven/hadoop-yarn/pom.xml
	rm -rf build/hadoop
	mkdir -p build
	mvn --batch-mode -f dev/maven/hadoop-yarn/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/build/hadoop \
	    >> build/maven.log 2>&1 || (cat build/maven.log; exit 1)
	touch $@

# Toxiproxy, the network-fault proxy of the integration tests and dev/services.py: built from its
# Go module with `go install` through the configured Go module proxy only (no direct VCS fetch);
# the module's command is named `server`, so it is copied to a name that says what it is.
TOXIPROXY_VERSION := v2.12.0
toxiproxy: build/bin/toxiproxy-server ## Toxiproxy, built from its Go module
build/bin/toxiproxy-server:
	GOBIN=$(CURDIR)/build/go-bin GOPROXY="$$(go env GOPROXY | sed -e 's/[,|]direct//g')" \
	    go install -ldflags=-X=github.com/Shopify/toxiproxy/v2.Version=$(TOXIPROXY_VERSION) \
	    github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)
	mkdir -p build/bin
	cp build/go-bin/server $@

# What an EMR run uploads (see emr/build_package.py and docs/EMR.md): the wheel, the
# job entry files, bootstrap.sh, constraints.txt and the packed environment for --archives
# (installed under constraints.txt), whose bin/python links to the settings'
# package.node_python, the interpreter on the EMR nodes. `make lock` rewrites constraints.txt.
package: build/package/.built ## what an EMR run uploads: wheel, jobs, packed environment
build/package/.built: $(VENV)/.installed requirements.txt constraints.txt setup.py \
		emr/build_package.py emr/bootstrap.sh emr/launcher.yaml $(wildcard jobs/*.py) \
		$(shell find lib -name '*.py' -o -name '*.xml')
	$(PY) emr/build_package.py --out build/package
	touch $@

lock: $(VENV)/.installed ## rewrite constraints.txt from requirements.txt
	$(PY) emr/build_package.py --lock

services-up: build/.jars build/bin/toxiproxy-server ## start the local S3, Gremlin Server and Toxiproxy
	@$(PY) dev/services.py up

services-down: ## stop them
	@$(PY) dev/services.py down

# A Spark standalone cluster on loopback (dev/spark_cluster.py): a master and two 1-core workers,
# each its own JVM, from the venv's pyspark; prints SPARK_MASTER=spark://... (docs/CLUSTERS.md).
# Logs, pids and the workers' directories in build/cluster.
cluster-up: build/.jars ## start a Spark standalone cluster on loopback
	@$(PY) dev/services.py cluster-up

cluster-down: ## stop it
	@$(PY) dev/services.py cluster-down

# YARN and HDFS on loopback (dev/yarn_cluster.py): a ResourceManager, two NodeManagers, a
# NameNode and a DataNode, each its own JVM; prints the HADOOP_CONF_DIR that
# `spark-submit --master yarn` reads (docs/CLUSTERS.md). Logs, pids, HDFS's storage and the
# containers' logs in build/yarn.
yarn-up: build/.hadoop-jars ## start YARN and HDFS on loopback
	@$(PY) dev/yarn_cluster.py up

yarn-down: ## stop them
	@$(PY) dev/yarn_cluster.py down

# `make demo PRECISION=int8` classifies with the int8 model (inference.precision)
PRECISION ?= float32
demo: build/.jars build/bin/toxiproxy-server ## train, classify and link sample images end to end (README)
	$(PY) dev/demo.py --precision $(PRECISION)

# The demo with train and infer submitted to the standalone cluster as the EMR launcher
# submits them (the packed environment from `make package`).
cluster-demo: build/.jars build/bin/toxiproxy-server build/package/.built ## the demo on the standalone cluster
	$(PY) dev/demo.py --cluster

# The demo with every job submitted to YARN in cluster mode as EMR steps run (train with two
# workers and petastorm's cache on HDFS); YARN and HDFS start and stop with it.
yarn-demo: build/.jars build/bin/toxiproxy-server build/package/.built build/.hadoop-jars ## the demo on YARN and HDFS
	$(PY) dev/demo.py --yarn

# Fine-tunes MobileNetV2 from a weights file in the local S3 on scikit-image photo crops
# (dev/demo_finetune.py; docs/TRAINING.md). Not part of `make test`. PRECISION=int8 then
# classifies the crops with the int8 model, whose summary compares it with float32.
demo-finetune: build/.jars ## fine-tune MobileNetV2 on photo crops
	$(PY) dev/demo_finetune.py --precision $(PRECISION)

# The packed environment first: tests/integration/test_cluster.py and test_yarn.py submit the
# jobs with it; test_yarn.py starts YARN and HDFS from build/hadoop.
test: build/.jars build/.hadoop-jars build/bin/toxiproxy-server build/package/.built ## the whole suite, as CI runs it (README)
	$(PY) -m pytest tests

# ruff (style, imports, likely bugs), mypy (types) and import-linter (the stages' import
# direction), all configured in pyproject.toml.
lint: $(VENV)/.installed ## ruff, mypy and the import contracts
	$(VENV)/bin/ruff check .
	PYTHONPATH=lib $(VENV)/bin/mypy
	PYTHONPATH=lib $(VENV)/bin/lint-imports

unit: $(VENV)/.installed ## the fast tier: unit tests only
	$(PY) -m pytest tests/unit

integration: build/.jars build/.hadoop-jars build/bin/toxiproxy-server build/package/.built ## the integration tests only
	$(PY) -m pytest tests/integration

# Mutation testing of the pure modules against the unit tests (dev/mutation.py): score and
# surviving mutants to build/mutation/results.txt and docs/TESTING.md. Not part of `make test`.
mutation: $(VENV)/.installed ## mutation testing of the pure modules
	$(PY) dev/mutation.py

bench: build/.jars build/bin/toxiproxy-server ## the benchmarks (docs/BENCHMARKS.md)
	$(PY) benchmarks/writer_bench.py
	$(PY) benchmarks/inference_bench.py
	$(PY) benchmarks/task_split.py
	$(PY) benchmarks/graph_projection.py
	$(PY) benchmarks/link_bench.py

# Training's feed (uint8 vs float32 pixels in petastorm's cache) and 1 vs 2 workers
# (benchmarks/training_bench.py): figures into bench-results.json, about 30 minutes here.
bench-train: build/.jars ## training's benchmarks, about 30 minutes
	$(PY) benchmarks/training_bench.py

clean: services-down cluster-down yarn-down ## stop everything and remove build/
	rm -rf build
