# Set-up and the common jobs. Every target creates .venv on first use and reinstalls only when a
# requirements file changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DATA := datasets/synthetic_daub
WARMUP_DATA := datasets/synthetic_daub_warmup
DEMO_OUT := demo_out
DEMO_CONF := 0.3
# The demo recipe (README, "The demo"): a small model trained from scratch on the CPU in two stages, first on
# brighter targets (SNR 10-20) to get past the all-background plateau, then on the bundled dataset.
DEMO_MODEL := --input-size 256 --phi nano
DEMO_TRAIN := $(DEMO_MODEL) --lstm-hidden 16 --optimizer adam --lr 1e-3 --no-scale-lr --min-lr-ratio 0.1 \
	--prior-prob 0.01 --batch-size 4 --workers 1 --val-fraction 0.2 --exist-ok

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
	@start=$$(date +%s); set -e; \
	$(PY) utils_coco/make_synthetic.py --out $(WARMUP_DATA) --seed 2024 --target-snr 10 20 --quiet; \
	rm -rf $(DEMO_OUT); \
	$(PY) train_daub.py --data-root $(WARMUP_DATA) $(DEMO_TRAIN) --epochs 3 --epoch-fraction 0.45 \
		--eval-period 0 --save-dir $(DEMO_OUT)/warmup; \
	$(PY) train_daub.py --data-root $(DEMO_DATA) $(DEMO_TRAIN) --epochs 6 --epoch-fraction 0.55 \
		--eval-period 3 --pretrained $(DEMO_OUT)/warmup/last_epoch_weights.pth --save-dir $(DEMO_OUT)/train; \
	$(PY) vid_map_coco.py --weights $(DEMO_OUT)/train/best_epoch_weights.pth --data-root $(DEMO_DATA) \
		--out-dir $(DEMO_OUT)/map --quiet; \
	$(PY) vid_predict.py --mode video --weights $(DEMO_OUT)/train/best_epoch_weights.pth \
		--source $(DEMO_DATA)/images/test/data10 --gt $(DEMO_DATA)/annotations/instances_test2017.json \
		--conf $(DEMO_CONF) --out $(DEMO_OUT)/data10.mp4 --quiet; \
	$(PY) vid_predict.py --weights $(DEMO_OUT)/train/best_epoch_weights.pth \
		--source $(DEMO_DATA)/images/test/data10/75.bmp --gt $(DEMO_DATA)/annotations/instances_test2017.json \
		--conf $(DEMO_CONF) --out readme/demo_frame.png --quiet; \
	cp $(DEMO_OUT)/map/pr_curve.png readme/demo_pr_curve.png; \
	echo; echo "demo test split: $$(tail -n 1 $(DEMO_OUT)/map/summary.txt)"; \
	echo "demo wall time: $$(( $$(date +%s) - start )) s; outputs in $(DEMO_OUT)/"

test: $(STAMP)
	$(PY) -m pytest -q tests

# Released computation against ours on this machine; writes readme/benchmarks.md and readme/benchmarks.json.
bench: $(STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

clean-demo:
	rm -rf $(DEMO_DATA) $(WARMUP_DATA) $(DEMO_OUT)
