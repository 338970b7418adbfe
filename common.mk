# The variables and targets Makefile.pip and Makefile.poetry share; each includes this file after
# setting MAKEFILE_NAME, INIT_HELP, STAMP (the install step's stamp, whose rule it writes after
# the include), PACKAGE_PYTHON and CLEAN_EXTRA. Every variable can be overridden:
#   make -f Makefile.pip test MOTO_PORT=5055

PYTHON          ?= python3
VENV            ?= .venv
LAMBDA_NAME     ?= CloudTrail_to_Elasticsearch
ARTIFACT        ?= build/cloudtrail_to_elasticsearch.zip
LAMBDA_PYTHON   ?= 3.12
LAMBDA_PLATFORM ?= manylinux2014_x86_64
OPENSEARCH_PORT ?= 9200
MOTO_PORT       ?= 5000
ENGINE          ?= opensearch-2.19.6
# NODES=3: a three-node cluster on OPENSEARCH_PORT, +1, +2 (scripts/services.sh).
NODES           ?= 1
# checkov pins its own boto3/packaging, which clash with the project's: it gets a venv of its own.
TOOLS_VENV      ?= .venv-tools
CHECKOV_VERSION ?= 3.3.30

export OPENSEARCH_PORT MOTO_PORT ENGINE NODES

BIN   := $(VENV)/bin
RIE   := build/lambda-tools/bin/aws-lambda-rie

.DEFAULT_GOAL := help
.PHONY: help init services services-stop test lint quicktest demo bench package deploy clean

help:
	@echo "Targets (make -f $(MAKEFILE_NAME) TARGET):"
	@echo "  init           $(INIT_HELP)"
	@echo "  services       start OpenSearch ($(OPENSEARCH_PORT)) and moto server ($(MOTO_PORT))"
	@echo "                 (NODES=3: three OpenSearch nodes, HTTP ports $(OPENSEARCH_PORT) and the next two)"
	@echo "  services-stop  stop them"
	@echo "  test           all tests against the services, then cfn-lint and checkov"
	@echo "  lint           ruff over src, tests, scripts and benchmarks; mypy over src and the typed test support"
	@echo "  quicktest      unit tests only, no services"
	@echo "  demo           run scripts/demo.py against the services"
	@echo "  lambda-local   the Lambda handler fed SQS messages for the files in moto's bucket"
	@echo "                 (BUCKET=cloudtrail-demo, from demo; scripts/local_lambda.py)"
	@echo "  bench          benchmark: CPU per event and hostile files (benchmarks/bench_cpu.py), then against the services (benchmarks/bench.py,"
	@echo "                 bench_scale.py, bench_detect.py, bench_memory.py: peak RSS by share rejected), the package's cold start"
	@echo "                 and peak memory under the Lambda runtime emulator (benchmarks/bench_lambda.py); tables in build/"
	@echo "  package        build the Lambda zip at $(ARTIFACT)"
	@echo "  deploy         upload $(ARTIFACT) as the code of Lambda $(LAMBDA_NAME)"
	@echo "  clean          stop the services and remove everything this Makefile made"

init: $(STAMP) $(TOOLS_VENV)/bin/checkov $(RIE)

# The demo's light install: the project with the demo extra only, unless init has run.
DEMO_STAMP = $(VENV)/.installed-demo
$(DEMO_STAMP): pyproject.toml
	if [ ! -f $(STAMP) ]; then $(PYTHON) -m venv $(VENV) && $(BIN)/pip install -e '.[demo]'; fi
	touch $@

# The Lambda Runtime Interface Emulator, built with Go (scripts/lambda_emulator.py pins it):
# the tests and `make bench` run the package under it, driven by awslambdaric (the dev extra).
$(RIE): $(STAMP)
	$(BIN)/python scripts/lambda_emulator.py install

$(TOOLS_VENV)/bin/checkov:
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install 'checkov==$(CHECKOV_VERSION)'

services: $(DEMO_STAMP)
	MOTO_SERVER=$(abspath $(BIN))/moto_server bash scripts/services.sh start

services-stop:
	MOTO_SERVER=$(abspath $(BIN))/moto_server bash scripts/services.sh stop

test: init services
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/mypy --ignore-missing-imports src tests/fakes.py tests/cfn_template.py
	$(BIN)/python -m pytest
	$(BIN)/cfn-lint cloudformation.yml cloudformation-trail-bucket.yml
	BC_SKIP_MAPPING=TRUE $(TOOLS_VENV)/bin/checkov --quiet --compact --skip-download \
	    --framework cloudformation -f cloudformation.yml -f cloudformation-trail-bucket.yml

lint: init
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/mypy --ignore-missing-imports src tests/fakes.py tests/cfn_template.py

quicktest: init
	$(BIN)/python -m pytest -m "not integration"

demo: $(DEMO_STAMP) services
	$(BIN)/python scripts/demo.py

.PHONY: lambda-local
BUCKET ?= cloudtrail-demo
lambda-local: init services
	$(BIN)/python scripts/local_lambda.py $(BUCKET)

bench: init services
	$(BIN)/python benchmarks/bench_cpu.py
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench_lambda.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_detect.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/storage.py

package: init
	$(PACKAGE_PYTHON) scripts/package.py --output $(ARTIFACT) \
	    --python-version $(LAMBDA_PYTHON) --platform $(LAMBDA_PLATFORM)

deploy: package
	$(BIN)/aws lambda update-function-code --function-name $(LAMBDA_NAME) \
	    --zip-file fileb://$(ARTIFACT)

clean:
	-if [ -f scripts/services.sh ]; then MOTO_SERVER=$(abspath $(BIN))/moto_server bash scripts/services.sh stop; fi
	$(CLEAN_EXTRA)
	rm -rf build dist .pytest_cache .services $(VENV) $(TOOLS_VENV)
	rm -f $(ARTIFACT)
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune \
	    -exec rm -rf {} +
