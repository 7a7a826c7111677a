# Set-up and the common jobs. Every target creates .venv on first use and reinstalls only when a
# requirements file changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DATA := datasets/synthetic_daub

.PHONY: demo test bench data clean-demo

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# The bundled demo dataset (synthetic, DAUB layout, default seed) and its index files.
data: $(STAMP)
	$(PY) utils_coco/make_synthetic.py --out $(DEMO_DATA) --preview readme/synthetic_frames.png
	$(PY) utils_coco/coco_to_txt.py --json $(DEMO_DATA)/annotations/instances_train2017.json --out coco_train.txt
	$(PY) utils_coco/coco_to_txt.py --json $(DEMO_DATA)/annotations/instances_test2017.json --out coco_val.txt
	cp $(DEMO_DATA)/annotations/instances_train2017.json $(DEMO_DATA)/annotations/instances_test2017.json json/

demo: data

test: $(STAMP)
	$(PY) -m pytest -q tests

clean-demo:
	rm -rf $(DEMO_DATA)
